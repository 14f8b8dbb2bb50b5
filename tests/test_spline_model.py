"""The spline ridge architecture: map = gradient step, contraction, hypergradient, training."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv import models
from jaxinv.diagnostics import empirical_lipschitz
from jaxinv.operators import bank_norm
from jaxinv.regularizers import LinearSpline, spline_ridge
from jaxinv.tasks import make_task
from jaxinv.train import TrainConfig, load_run, make_loss_fn, train

from helpers import patch_config, solves

SHAPE = (16, 16)
TINY = {"num_filters": 3, "size": 3, "num_knots": 9}
TASKS = {
    "denoise": make_task("denoise", sigma=0.1),
    "inpaint": make_task("inpaint", mask="pixels", sigma=0.05),
    "deblur": make_task("deblur", sigma=0.05),
}


def _image(seed=0):
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    x = 0.5 + 0.3 * np.sin(i / 3.0) * np.cos(j / 4.0) + 0.05 * rng.normal(size=SHAPE)
    x[4:10, 5:12] += 0.2
    return jnp.asarray(np.clip(x, 0, 1))


def _perturbed(model, seed=0, scale=0.5):
    """``model`` with random (generally infeasible) spline coefficients, random filters and
    another scale, refreshed: the projection and the step must cope with any parameters."""
    rng = np.random.default_rng(seed)
    p = models.as_dict(model)
    new = {
        "coeffs": p["coeffs"] + scale * jnp.asarray(rng.normal(size=p["coeffs"].shape)),
        "K": p["K"] + 0.3 * jnp.asarray(rng.normal(size=p["K"].shape)),
        "log_scale": p["log_scale"] + 0.3,
    }
    return models.refreshed(models.from_dict(model, new))


def _energy(model, y):
    """``E(x) = λ/2 ‖Ax − y‖² + α⁻² spline_ridge(x; α K/‖K‖)``, written from the regularizer's
    pure function (independent of the model's explicit gradient)."""
    alpha = jnp.exp(model.log_scale)
    reg = {"filters": alpha * model.K / model.K_norm, "coeffs": model.coeffs}
    op = model.operator

    def E(x):
        r = spline_ridge(x, reg, spline=model.spline, boundary=model.boundary)
        return 0.5 * model.lam * jnp.sum((op(x) - y) ** 2) + r / alpha**2

    return E


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_builds_for_every_task_with_derived_leaves_frozen(task_name):
    task = TASKS[task_name]
    m = models.build_model("spline", 0, task, SHAPE, **TINY)
    assert isinstance(m, models.SplineModel) and m.tied and m.image_shape == SHAPE
    p = models.as_dict(m)
    assert set(p) == {"lam", "tau", "K", "coeffs", "log_scale", "K_norm"}
    assert float(p["tau"]) > 0 and float(p["lam"]) == 1.0
    trainable = models.as_dict(m.trainable())
    assert not any(trainable[n] for n in ("lam", "tau", "K_norm"))
    assert all(trainable[n] for n in ("K", "coeffs", "log_scale"))
    assert m.num_params() == 3 * 9 + 3 * 9 + 1
    np.testing.assert_allclose(m.K_norm, bank_norm(m.K, SHAPE), rtol=1e-12)
    # the scale puts the responses of the unit-norm initial filters in units of sigma
    np.testing.assert_allclose(jnp.exp(m.log_scale), m.K_norm / task.sigma, rtol=1e-12)
    assert "spline" in m.learned()


@pytest.mark.parametrize(
    "task_name,boundary,kind",
    [
        ("denoise", "circular", "convex"),
        ("denoise", "reflect", "weakly_convex"),
        ("inpaint", "zero", "convex"),
        ("deblur", "circular", "weakly_convex"),
        ("deblur", "reflect", "convex"),
    ],
)
def test_map_is_a_gradient_step_on_the_energy(task_name, boundary, kind):
    task = TASKS[task_name]
    mu = 0.5 if kind == "weakly_convex" else 0.0
    m = models.build_model("spline", 1, task, SHAPE, **TINY, boundary=boundary, kind=kind, mu=mu)
    m = _perturbed(m)  # active kinks, clipped slopes, non-trivial scale
    y = task.degrade(_image(), 3)
    x = _image(5)
    expected = x - m.tau * jax.grad(_energy(m, y))(x)
    np.testing.assert_allclose(m(x, y), expected, atol=1e-12)
    data = 0.5 * jnp.sum((m.operator(x) - y) ** 2)
    np.testing.assert_allclose(m.regularizer(x), _energy(m, y)(x) - data, rtol=1e-12)
    # the projection keeps the slopes within the kind's bounds
    slopes = m.spline.slopes(m.coeffs)
    assert float(jnp.min(slopes)) >= -mu - 1e-12


@pytest.mark.parametrize("kind", ["convex", "weakly_convex"])
def test_refresh_makes_the_denoising_map_contract(kind):
    task = TASKS["denoise"]
    mu = 0.7 if kind == "weakly_convex" else 0.0
    m = models.build_model("spline", 0, task, SHAPE, **TINY, kind=kind, mu=mu)
    y = task.degrade(_image(), 1)
    assert empirical_lipschitz(m, y, num_pairs=6) < 1.0
    for seed in range(3):
        # stale derived leaves after an update, then refreshed
        p = _perturbed(m, seed, scale=2.0)
        assert float(p.K_norm) == pytest.approx(float(bank_norm(p.K, SHAPE)), rel=1e-12)
        # the energy is strongly convex: m >= lam - mu > 0, so the step contracts
        modulus = float(p.convexity_modulus(1.0))
        assert modulus >= 1.0 - mu - 1e-12 and modulus > 0
        lip = empirical_lipschitz(p, y, num_pairs=6, spread=0.3)
        assert lip < 1.0
        # the contraction factor bound 1 - m tau (gradient step on an m-convex, 1/tau-smooth E)
        assert lip <= 1.0 - modulus * float(p.tau) + 1e-9


def test_untied_map_has_a_second_bank_and_equals_the_tied_one_at_initialisation():
    task = TASKS["deblur"]
    tied = models.build_model("spline", 0, task, SHAPE, **TINY)
    untied = models.build_model("spline", 0, task, SHAPE, tied=False, **TINY)
    assert not untied.tied and untied.num_params() == tied.num_params() + 3 * 9
    assert "C_norm" in untied.frozen()
    y = task.degrade(_image(), 1)
    x = _image(3)
    both = eqx.filter_jit(lambda a, b: (a(x, y), b(x, y)))
    t_untied, t_tied = both(untied, tied)
    np.testing.assert_allclose(t_untied, t_tied, atol=1e-12)
    np.testing.assert_allclose(untied.tau, tied.tau, rtol=1e-12)
    # with its own bank the untied map is C̃ᵀψ'(αK̃x)/α, and its step bounds ‖∂T − I‖/τ
    rng = np.random.default_rng(0)
    C = untied.C + 0.3 * jnp.asarray(rng.normal(size=untied.C.shape))
    u = models.refreshed(models.from_dict(untied, {"C": C}))
    alpha = jnp.exp(u.log_scale)
    z = alpha * ji._conv.correlate(x, u.K / u.K_norm, "circular")
    g = ji._conv.correlate_adjoint(u.spline.activation(z, u.coeffs), C / u.C_norm, "circular")
    expected = x - u.tau * (u.lam * u.operator.adjoint(u.operator(x) - y) + g / alpha)
    np.testing.assert_allclose(u(x, y), expected, atol=1e-12)
    J = jax.jacfwd(lambda v: (v - u(v, y)) / u.tau)(x).reshape(256, 256)
    assert float(jnp.linalg.norm(J, 2)) <= 1.0 / float(u.tau) + 1e-9


def _config(**changes):
    return patch_config(
        **{
            "arch": "spline",
            "arch_options": {**TINY, "num_filters": 2},
            "num_train": 2,
            "batch_size": 2,
            "steps": 2,
            **solves(1e-12, 500),
            **changes,
        }
    )


@pytest.mark.parametrize("kind", ["convex", "weakly_convex"])
def test_bilevel_gradient_matches_finite_differences(kind):
    config = _config(
        arch_options={**TINY, "num_filters": 2, "kind": kind, "mu": 0.5 if kind != "convex" else 0}
    )
    assert config.adjoint_strategy().method == "cg"
    task = config.make_task()
    inst = models.build_model("spline", 3, task, SHAPE, **config.arch_options)
    # strictly feasible coefficients (no slope on a constraint, where the projection has a
    # kink) with curvature everywhere, so the loss is smooth in every parameter
    t = inst.spline.knots(inst.coeffs.shape[1], inst.coeffs.dtype)
    rng = np.random.default_rng(1)
    coeffs = inst.coeffs + 2.0 * t + 0.05 * jnp.asarray(rng.normal(size=inst.coeffs.shape))
    assert float(jnp.min(inst.spline.slopes(coeffs))) > -inst.spline.mu
    np.testing.assert_allclose(inst.spline.project(coeffs), coeffs - coeffs[:, 4:5], atol=1e-12)
    inst = models.refreshed(models.from_dict(inst, {"coeffs": coeffs}))
    loss_fn = make_loss_fn(config)
    x = jnp.stack([_image(0), _image(1)])
    batch = {"x": x, "y": task.degrade(x, 7), "ids": jnp.arange(2, dtype=jnp.int32)}
    x0 = jax.vmap(inst.init_x)(batch["y"])
    probes = ji.BackwardProbe.zeros(2)
    value_and_grad = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda m: loss_fn(m, probes, batch, x0)[0])
    )
    params = models.as_dict(inst)
    _, grad = value_and_grad(inst)
    grad = models.as_dict(grad)
    for name in ("K", "coeffs", "log_scale"):
        direction = jnp.asarray(rng.normal(size=np.shape(params[name])))
        h = 1e-6

        def shifted(s, name=name, direction=direction):
            return value_and_grad(models.from_dict(inst, {name: params[name] + s * direction}))[0]

        fd = (shifted(h) - shifted(-h)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(grad[name], direction), fd, rtol=1e-6)


def test_two_step_training_saves_loads_and_resumes(tmp_path):
    config = _config(tol=1e-6, adjoint_tol=1e-6, steps=2, checkpoint_every=1)
    half = train(config, tmp_path, progress=False, until=1)
    assert not half.finished and int(half.state.step) == 1
    resumed = train(config, tmp_path, progress=False)
    assert resumed.finished and int(resumed.state.step) == 2
    full = train(config, tmp_path / "full", progress=False)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state), strict=True):
        np.testing.assert_array_equal(a, b)
    hist = [r for r in full.history if r["kind"] == "train"]
    assert all(r["fwd_converged"] == 1.0 and r["bwd_converged"] == 1.0 for r in hist)
    loaded_config, model = load_run(tmp_path)
    assert loaded_config == config and isinstance(model, models.SplineModel)
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # re-targeted to another image shape: same trained parameters, norms and step refreshed
    _, big = load_run(tmp_path, image_shape=(24, 20))
    assert big.image_shape == (24, 20)
    np.testing.assert_array_equal(big.coeffs, model.coeffs)
    np.testing.assert_allclose(big.K_norm, bank_norm(big.K, (24, 20)), rtol=1e-12)


def test_options_round_trip_through_json():
    arch = models.get_model(
        "spline", num_filters=5, size=5, num_knots=11, spacing=0.5, kind="weakly_convex", mu=0.3,
        lam=2.0, init="random", init_threshold=0.5, init_strength=2.0, boundary="reflect",
    )  # fmt: skip
    options = json.loads(json.dumps(arch.options()))
    assert models.get_model("spline", **options) == arch
    config = _config(arch_options=options)
    assert TrainConfig.from_json(config.to_json()) == config
    assert arch.linear_spline() == LinearSpline(spacing=0.5, kind="weakly_convex", mu=0.3)
    m = arch.build(jax.random.PRNGKey(0), TASKS["denoise"], SHAPE)
    assert m.K.shape == (5, 5, 5) and m.coeffs.shape == (5, 11) and m.boundary == "reflect"
    # random filters: zero-mean, unit norm, not the DCT ones
    np.testing.assert_allclose(jnp.sum(m.K, axis=(1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(jnp.sum(m.K**2, axis=(1, 2)), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"kind": "concave"}, "unknown kind"),
        ({"kind": "weakly_convex"}, "needs mu > 0"),
        ({"mu": 0.5}, "only applies to kind='weakly_convex'"),
        ({"boundary": "mirror"}, "unknown boundary"),
        ({"init": "zeros"}, "unknown init"),
        ({"num_knots": 2}, "num_knots >= 3"),
        ({"num_filters": 0}, "num_filters >= 1"),
        ({"size": 2.5}, "size must be an integer"),
        ({"spacing": 0.0}, "spacing must be a positive number"),
        ({"lam": -1.0}, "lam must be a positive number"),
        ({"init_strength": float("nan")}, "init_strength must be a positive number"),
        ({"threshold": 1.0}, "unknown options"),
    ],
)
@pytest.mark.unchecked  # passes ill-typed values on purpose
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        models.get_model("spline", **options)


def test_weakly_convex_denoising_needs_mu_below_lam():
    with pytest.raises(ValueError, match="mu < lam"):
        models.build_model("spline", 0, TASKS["denoise"], SHAPE, kind="weakly_convex", mu=1.0)
    # other tasks: only weak convexity is promised, so mu >= lam is allowed there
    m = models.build_model(
        "spline", 0, TASKS["deblur"], SHAPE, **TINY, kind="weakly_convex", mu=2.0
    )
    assert float(m.tau) > 0
