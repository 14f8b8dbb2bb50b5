"""Tasks and architectures: operators, degradation, building, contraction, counts, TV tuning."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv import models, operators
from jaxinv.diagnostics import empirical_lipschitz
from jaxinv.tasks import Task, make_task
from jaxinv.tuning import tune_tv

SHAPE = (16, 16)
# small where it saves time; the paper's step for conv2x11, so its contraction is checked too
SMALL = {
    "foe": {"num_filters": 3, "size": 5, "init_scale": 10.0},
    "conv2x11": {"step": "paper"},
    "conv30x3": {"num_filters": 4},
}


def _image(seed=0, shape=SHAPE):
    """A smooth-ish test image on [0, 1]."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    x = 0.5 + 0.3 * np.sin(i / 3.0) * np.cos(j / 4.0) + 0.05 * rng.normal(size=shape)
    x[4:10, 5:12] += 0.2
    return jnp.asarray(np.clip(x, 0, 1))


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------


def test_make_task_defaults_and_errors():
    assert make_task("denoise").sigma == pytest.approx(25 / 255)
    assert make_task("denoise", dataset="mnist").sigma == pytest.approx(0.1)
    assert make_task("inpaint", dataset="mnist").mask == "rows"
    assert make_task("inpaint").mask == "pixels"
    blur = make_task("deblur")
    assert (blur.kernel, blur.boundary) == ("motion5", "circular")
    assert make_task("denoise", sigma="10/255").sigma == pytest.approx(10 / 255)
    with pytest.raises(ValueError, match="denoise.*inpaint.*deblur"):
        make_task("superres")
    with pytest.raises(ValueError, match="unknown options"):
        make_task("denoise", sigmaa=0.1)
    with pytest.raises(ValueError, match="mask"):
        make_task("inpaint", mask="circle")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_task("denoise", sigma=25)
    t = make_task("inpaint", mask="block", fraction=0.3)
    assert Task.from_dict(t.to_dict()) == t


def test_operators_of_tasks():
    x = _image()
    assert isinstance(make_task("denoise").operator(SHAPE), operators.Identity)
    rows = make_task("inpaint", dataset="mnist").operator((27, 9))
    assert int(jnp.sum(~rows.mask[:, 0])) == 9 and not bool(jnp.any(rows.mask[:9]))
    px = make_task("inpaint", mask="pixels", fraction=0.3).operator((64, 64))
    assert abs(float(jnp.mean(px.mask)) - 0.7) < 0.05
    again = make_task("inpaint", mask="pixels", fraction=0.3).operator((64, 64))
    assert bool(jnp.all(px.mask == again.mask))  # deterministic per shape
    block = make_task("inpaint", mask="block").operator((16, 16))
    assert int(jnp.sum(~block.mask)) == 64
    blur = make_task("deblur").operator(SHAPE)
    assert isinstance(blur, operators.Blur)
    np.testing.assert_allclose(blur.kernel, np.eye(5) / 5)
    # the blur is normalised: constants pass unchanged
    np.testing.assert_allclose(blur(jnp.ones(SHAPE)), 1.0, atol=1e-12)
    for kernel in ("motion11", "gaussian"):
        op = make_task("deblur", kernel=kernel, boundary="zero").operator(SHAPE)
        assert float(jnp.sum(op.kernel)) == pytest.approx(1.0)
        assert op(x).shape == SHAPE


def test_degrade_is_seeded_batched_and_has_the_right_noise():
    task = make_task("denoise", sigma=0.1)
    x = jnp.stack([_image(0, (64, 64)), _image(1, (64, 64))])
    y1, y2 = task.degrade(x, 3), task.degrade(x, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(task.degrade(x, 4), y1)
    assert y1.shape == x.shape
    assert float(jnp.std(y1 - x)) == pytest.approx(0.1, rel=0.05)
    blur = make_task("deblur", sigma=0.0)
    np.testing.assert_allclose(blur.degrade(x, 0), blur.operator((64, 64))(x))


# ---------------------------------------------------------------------------------------------
# architectures
# ---------------------------------------------------------------------------------------------

# Each architecture is checked on a different task, so every operator is exercised once.
ARCH_TASKS = {
    "foe": make_task("deblur", sigma=0.05),
    "conv2x11": make_task("inpaint", mask="pixels", sigma=0.05),
    "conv30x3": make_task("denoise", sigma=0.1),
    "dense": make_task("inpaint", mask="rows", sigma=0.1),
    "tv": make_task("deblur", kernel="gaussian", boundary="zero", sigma=0.05),
}


@functools.cache
def _build(arch, tied, **options):
    task = ARCH_TASKS[arch]
    return models.build_model(arch, 0, task, SHAPE, tied=tied, **{**SMALL.get(arch, {}), **options})


@pytest.mark.parametrize("arch", sorted(ARCH_TASKS))
def test_architecture_builds_contracts_and_unties(arch):
    task = ARCH_TASKS[arch]
    inst = _build(arch, True)
    params = models.as_dict(inst)
    assert inst.tied and inst.image_shape == SHAPE
    # every scalar is an array leaf; lam and tau present and positive; tau is derived (frozen)
    for name in ("lam", "tau"):
        assert isinstance(params[name], jax.Array) and float(params[name]) > 0
    assert jax.tree.structure(inst.trainable()) == jax.tree.structure(inst.params())
    assert not models.as_dict(inst.trainable())["tau"]
    assert inst.num_params() > 0
    y = task.degrade(_image(), 1)
    # the tied map contracts at the computed step
    assert empirical_lipschitz(inst, y, num_pairs=6) < 1.0
    if arch == "tv":
        return
    # the untied (DEQ) map has a second weight set and equals the tied map at initialisation
    untied = _build(arch, False)
    assert not untied.tied and untied.num_params() > inst.num_params()
    x = _image(3)
    both = eqx.filter_jit(lambda a, b: (a(x, y), b(x, y)))  # one compilation
    t_untied, t_tied = both(untied, inst)
    np.testing.assert_allclose(t_untied, t_tied, atol=1e-9)
    np.testing.assert_allclose(untied.tau, inst.tau, rtol=1e-12)


def test_tied_foe_map_is_a_gradient_step_on_its_energy():
    task = make_task("inpaint", mask="rows", sigma=0.05)
    inst = models.build_model("foe", 0, task, SHAPE, num_filters=3, size=3, bias=True)
    p = models.as_dict(inst)
    energy = ji.energies.variational_energy(
        inst.operator, lambda x, r: ji.regularizers.fields_of_experts(x, r)
    )
    reg = {
        "filters": jnp.exp(p["log_scale"]) * p["K"],
        "weights": jnp.exp(p["log_weights"]),
        "bias": p["b"] + 0.1,
    }
    q = models.from_dict(inst, {"b": p["b"] + 0.1})
    x, y = _image(1), task.degrade(_image(2), 0)
    both = jax.jit(lambda: (q(x, y), jax.grad(energy)(x, {"lam": p["lam"], "reg": reg}, y)))
    t, grad = both()
    np.testing.assert_allclose(t, x - p["tau"] * grad, atol=1e-12)


def test_foe_initial_scale_and_weight_depend_on_the_potential():
    task = make_task("denoise", sigma=0.1)
    f = 6
    for potential, scale, gain in (("logcosh", 300.0, 1.4), ("student_t", 40.0, 2.0)):
        p = models.as_dict(
            models.build_model("foe", 0, task, SHAPE, num_filters=f, potential=potential)
        )
        np.testing.assert_allclose(jnp.exp(p["log_scale"]), scale, rtol=1e-12)
        np.testing.assert_allclose(jnp.exp(p["log_weights"]), gain * 0.1 / (f * scale), rtol=1e-12)
    # explicit values win
    p = models.as_dict(
        models.build_model(
            "foe",
            0,
            task,
            SHAPE,
            num_filters=f,
            potential="student_t",
            init_scale=7.0,
            init_weight=0.5,
        )
    )
    np.testing.assert_allclose(jnp.exp(p["log_scale"]), 7.0, rtol=1e-12)
    np.testing.assert_allclose(jnp.exp(p["log_weights"]), 0.5, rtol=1e-12)


def test_dense_parameter_counts_match_the_paper():
    task = make_task("denoise", dataset="mnist")
    tied = models.build_model("dense", 0, task, (28, 28), tied=True)
    untied = models.build_model("dense", 0, task, (28, 28), tied=False)
    assert tied.num_params() == 784 * 784 + 784  # 0.62 M
    assert untied.num_params() == 2 * 784 * 784 + 784  # 1.23 M
    assert round(tied.num_params() / 1e6, 2) == 0.62
    assert round(untied.num_params() / 1e6, 2) == 1.23
    assert models.count_params(tied) == tied.num_params() + 3  # + lam, tau, gamma


def test_dense_center_and_bias_reparametrise_the_pre_activation():
    # T(u) = u − τ (λ (u − y) + γ Wᵀ σ(W (u − c) + b)), by hand, with σ = ReLU and identity
    task = make_task("denoise", dataset="mnist")
    rng = np.random.default_rng(0)
    u, y = (jnp.asarray(rng.uniform(-1, 1, (8, 8))) for _ in range(2))
    for activation, sigma in (("relu", lambda z: np.maximum(z, 0)), ("identity", lambda z: z)):
        m = models.build_model(
            "dense", 0, task, (8, 8), activation=activation, center=-1.0, bias=0.3
        )
        W, b = np.asarray(m.W), np.asarray(m.b)
        np.testing.assert_array_equal(b, np.full(64, 0.3))
        z = W @ (np.asarray(u).ravel() + 1.0) + b
        g = float(m.lam) * (np.asarray(u) - np.asarray(y)).ravel() + float(m.gamma) * W.T @ sigma(z)
        expected = np.asarray(u).ravel() - float(m.tau) * g
        np.testing.assert_allclose(np.asarray(m(u, y)).ravel(), expected, rtol=1e-6, atol=1e-6)


def test_tied_dense_solve_form_is_the_same_map_with_the_same_batch_gradient():
    """The tied dense model solves with ``V = Wᵀ`` as its own leaf (so that a batch's two
    cotangents of ``W`` are each summed over the batch before they are added); its map, its
    fixed points and the gradient of a batch loss w.r.t. the model equal the plain model's."""
    task = make_task("denoise", dataset="mnist")
    m = models.build_model("dense", 0, task, (8, 8), activation="identity", center=-1.0)
    s = m.solve_form()
    assert m.V is None and s.V is not None and s.solve_form() is s
    np.testing.assert_array_equal(np.asarray(s.V), np.asarray(m.W).T)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8)))
    y = x + 0.1 * jnp.asarray(rng.normal(size=x.shape))
    np.testing.assert_allclose(jax.vmap(s)(y, y), jax.vmap(m)(y, y), rtol=1e-12, atol=1e-12)
    solver, adjoint = ji.Anderson(tol=1e-12, max_iter=500), ji.Implicit("cg", tol=1e-12)

    def loss(model, solve_form):  # what solve_batch does, with or without the solve form
        mm = model.solve_form() if solve_form else model

        def one(y_):
            return ji.fixed_point(models.apply_model, y_, mm, y_, solver=solver, adjoint=adjoint)

        return jnp.mean((jax.vmap(one)(y).value - x) ** 2)

    params, rest = models.partition(m)
    grads = [jax.grad(lambda p, f=f: loss(eqx.combine(p, rest), f))(params) for f in (True, False)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
    assert float(jnp.max(jnp.abs(grads[0].W))) > 0


def test_paper_conv_counts_and_initialisation():
    conv = _build("conv2x11", True)
    p = models.as_dict(conv)
    assert conv.num_params() == 2 * 121 + 2
    np.testing.assert_allclose(p["K"], ji.regularizers.tv_like_filters(1, 11))
    assert _build("conv2x11", False).num_params() == 4 * 121 + 2
    full = models.build_model("conv30x3", 0, make_task("denoise"), SHAPE)
    assert full.num_params() == 30 * 9 + 30
    assert float(p["tau"]) == pytest.approx(1 / 800)  # step="paper": 1/(8χ)
    # the normalisation: ‖χ c / ‖K‖ · K‖ = χ c (‖K‖ by power iteration, so to about 1 %)
    k_eff = p["chi"] * p["c"] / p["K_norm"] * p["K"]
    exact = 100 * 2.73 * np.sqrt(8) / float(p["K_norm"])  # ‖∇‖ = √8 on the torus
    assert exact == pytest.approx(100 * 2.73, rel=1e-2)
    assert float(jnp.sum(jnp.abs(k_eff))) > 0


def test_registry_errors():
    with pytest.raises(ValueError, match="conv2x11"):
        models.get_model("resnet")
    with pytest.raises(ValueError, match="unknown options"):
        models.get_model("foe", filters=3)
    with pytest.raises(ValueError, match="untied"):
        models.build_model("tv", 0, make_task("denoise"), SHAPE, tied=False)
    assert models.get_model("foe", num_filters=3).options()["num_filters"] == 3


def test_tune_tv_beats_the_degraded_input():
    task = make_task("denoise", sigma=0.1)
    images = jnp.stack([_image(s) for s in range(2)])
    res = tune_tv(task, images, key=0, grid=5, refine=3, solver=ji.Anderson(1e-4, 300))
    assert res.psnr > res.input_psnr + 2.0
    assert 1e-3 <= res.weight <= 1.0
    assert len(res.trials) >= 5
    assert res.psnr == max(p for _, p in res.trials)
    assert float(models.as_dict(res.model)["weight"]) == pytest.approx(res.weight)
