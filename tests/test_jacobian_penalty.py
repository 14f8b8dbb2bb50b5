"""The Jacobian penalty: its estimators against dense Jacobians, its gradient against finite
differences, the unchanged step without it, determinism, and its options."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv import cli, models
from jaxinv._jacobian import frobenius_sq, spectral_norm
from jaxinv.train import (
    TrainConfig,
    init_state,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    train,
)
from jaxinv.train._penalty import jacobian_probes
from jaxinv.train._step import _step_key, make_objective

from helpers import TINY_FOE, patch_config

SIDE = 6  # 6x6 images: dense Jacobians of 36x36
N = SIDE * SIDE


def _dense(task_name="denoise", spread=3.0, seed=0):
    """A tiny untied dense model whose V is pulled away from Wᵀ (as training does), so that its
    Jacobian's top singular value is simple (σ₂/σ₁ = 0.94 for the denoiser)."""
    task = ji.tasks.make_task(task_name, dataset="mnist")
    m = models.build_model("dense", seed, task, (SIDE, SIDE), tied=False)
    rng = np.random.default_rng(seed)
    noise = spread * float(jnp.std(m.V)) * rng.normal(size=m.V.shape)
    return task, eqx.tree_at(lambda q: q.V, m, m.V + jnp.asarray(noise))


def _point(task, n=1, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-1, 1, (n, SIDE, SIDE)))
    return x, task.degrade(x, seed + 1)


def _jacobian(model, x, y):
    return np.asarray(jax.jacfwd(lambda z: model(z, y))(x)).reshape(N, N)


def _fn(y):
    return lambda z, m: m(z, y)


def test_hutchinson_is_exact_on_the_scaled_identity_and_unbiased_with_gaussian_probes():
    task, m = _dense("deblur")
    x, y = (a[0] for a in _point(task))
    J = _jacobian(m, x, y)
    exact = np.sum(J**2) / N
    basis = np.sqrt(N) * jnp.eye(N).reshape(N, SIDE, SIDE)  # E[v vᵀ] = I over the columns
    np.testing.assert_allclose(frobenius_sq(_fn(y), x, m, basis), exact, rtol=1e-12)
    # Gaussian probes: the mean of k draws of ‖Jv‖²/n has standard deviation
    # sqrt(2 ‖JᵀJ‖_F² / k) / n; a fixed draw must land within 4 of them
    k = 400
    probes = jax.random.normal(jax.random.PRNGKey(1), (k, SIDE, SIDE), jnp.float64)
    sd = np.sqrt(2 * np.sum((J.T @ J) ** 2) / k) / N
    est = float(frobenius_sq(_fn(y), x, m, probes))
    assert abs(est - exact) < 4 * sd and sd < 0.05 * exact


def test_power_iteration_reaches_the_spectral_norm_from_below():
    for task_name in ("denoise", "deblur"):
        task, m = _dense(task_name)
        x, y = (a[0] for a in _point(task))
        exact = np.linalg.norm(_jacobian(m, x, y), 2)
        starts = jax.random.normal(jax.random.PRNGKey(2), (2, SIDE, SIDE), jnp.float64)
        few = float(spectral_norm(_fn(y), x, m, starts, 3))
        assert 0.8 * exact < few <= exact * (1 + 1e-12)
        if task_name == "denoise":  # σ₂/σ₁ = 0.94: 300 iterations converge to 1e-16
            np.testing.assert_allclose(spectral_norm(_fn(y), x, m, starts, 300), exact, rtol=1e-10)
    with pytest.raises(ValueError, match=r"= \(k, 6, 6\) with k >= 1, got \(6, 6\)"):
        spectral_norm(_fn(y), x, m, starts[0], 3)


def _untied_foe():
    """A tiny untied fields-of-experts map (tanh experts, so its Jacobian varies with x) whose
    second filter bank C is pulled away from K: ‖J‖₂ ≈ 1.09 with σ₂/σ₁ ≈ 0.98."""
    task = ji.tasks.make_task("denoise", sigma=0.1)
    m = models.build_model("foe", 0, task, (SIDE, SIDE), tied=False, **TINY_FOE)
    rng = np.random.default_rng(0)
    noise = 2.0 * float(jnp.std(m.C)) * rng.normal(size=m.C.shape)
    return task, eqx.tree_at(lambda q: q.C, m, m.C + jnp.asarray(noise))


@pytest.mark.parametrize("kind", ["frobenius", "spectral"])
def test_penalised_objective_gradient_matches_finite_differences(kind):
    """∇(mse(x*(θ)) + w·P(θ; x*)) against central differences of the same objective with the
    fixed points x* of θ₀ held constant in P, P evaluated from dense Jacobians (jacfwd):
    frobenius with the step's own probes, spectral as relu(‖J‖₂ − target)² (numpy's norm;
    1000 power iterations make the step's estimate exact)."""
    config = TrainConfig.of(
        model="deq",
        arch="foe",
        arch_options=TINY_FOE,
        task_options={"sigma": 0.1},
        tol=1e-13,
        max_iter=400,
        adjoint_tol=1e-13,
        adjoint_max_iter=400,
        jac_penalty=0.7,
        jac_kind=kind,
        jac_probes=3,
        jac_iters=1000,
        jac_target=0.5,
    )
    task, m = _untied_foe()
    rng = np.random.default_rng(1)
    x = jnp.asarray(0.5 + 0.3 * rng.uniform(-1, 1, (2, SIDE, SIDE)))
    y = task.degrade(x, 2)
    batch = {"x": x, "y": y, "ids": jnp.arange(2)}
    x0 = jax.vmap(m.init_x)(y)
    v = jacobian_probes(config, jnp.asarray(4), batch["ids"], (SIDE, SIDE), jnp.float64)
    objective = make_objective(config)
    probes = ji.BackwardProbe.zeros(2)
    value, grad = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda q: objective(q, probes, batch, x0, v)[0])
    )(m)
    loss_fn = eqx.filter_jit(make_loss_fn(config))
    sol = loss_fn(m, probes, batch, x0)[1]
    assert bool(jnp.all(sol.stats.converged))
    x_star = sol.value

    def reference(q):
        mse = float(loss_fn(q, probes, batch, x0)[0])
        per = []
        for b in range(2):
            J = _jacobian(q, x_star[b], y[b])
            if kind == "frobenius":
                jv = np.asarray(v[b]).reshape(-1, N) @ J.T
                per.append(np.sum(jv**2) / (jv.shape[0] * N))
            else:
                per.append(max(np.linalg.norm(J, 2) - 0.5, 0.0) ** 2)
        assert kind == "frobenius" or min(per) > 0.01  # the hinge is active
        return mse + 0.7 * np.mean(per)

    np.testing.assert_allclose(float(value), reference(m), rtol=1e-9)
    params, grads = models.as_dict(m), models.as_dict(grad)
    h = 1e-6
    for name in ("K", "C", "log_weights"):
        d = jnp.asarray(rng.normal(size=np.shape(params[name])))
        plus = reference(models.from_dict(m, {name: params[name] + h * d}))
        minus = reference(models.from_dict(m, {name: params[name] - h * d}))
        fd = (plus - minus) / (2 * h)
        np.testing.assert_allclose(float(jnp.vdot(grads[name], d)), fd, rtol=1e-6)


def _foe_config(**changes):
    return patch_config(**{"model": "deq", "batch_size": 2, "steps": 4, **changes})


def _foe_setup(config):
    task = config.make_task()
    m = models.build_model("foe", 0, task, (16, 16), tied=False, **TINY_FOE)
    rng = np.random.default_rng(0)
    x = jnp.asarray(0.5 + 0.2 * rng.uniform(-1, 1, (2, 16, 16)))
    batch = {"x": x, "y": task.degrade(x, 5), "ids": jnp.asarray([3, 1], jnp.int32)}
    return task, m, batch


OLD_METRICS = {
    "loss", "psnr", "fwd_iters", "fwd_iters_max", "fwd_residual", "fwd_converged", "bwd_iters",
    "bwd_iters_max", "bwd_residual", "bwd_converged", "grad_norm", "lr", "tau", "warm", "skipped",
}  # fmt: skip


def test_zero_penalty_is_the_plain_mse_step_whatever_the_other_options():
    config = _foe_config()
    task, m, batch = _foe_setup(config)
    state = init_state(m, config, config.data.num_train)
    step = make_train_step(m, task, config)
    new, metrics = step(state, batch)
    assert set(metrics) == OLD_METRICS
    # the step's update is Adam's on the gradient of make_loss_fn's MSE
    params, rest = models.partition(m)
    x0 = jax.vmap(m.init_x)(batch["y"])
    loss_fn = make_loss_fn(config)
    grads = eqx.filter_jit(
        jax.grad(lambda p: loss_fn(eqx.combine(p, rest), ji.BackwardProbe.zeros(2), batch, x0)[0])
    )(params)
    opt = make_optimizer(config, m.trainable())
    updates, _ = opt.update(grads, state.opt_state, params)
    expected = eqx.combine(eqx.apply_updates(params, updates), rest).refresh()
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # the penalty's other options do not enter a step that is off: same compilation
    other = config.replace(jac_kind="spectral", jac_probes=4, jac_iters=2, jac_target=0.3)
    assert _step_key(other) == _step_key(config)
    same, m2 = make_train_step(m, task, other)(state, batch)
    assert step.trace_count == 1
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(new), strict=True):
        np.testing.assert_array_equal(a, b)
    assert {k: float(v) for k, v in m2.items()} == {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("kind, metric", [("frobenius", "jac_frob"), ("spectral", "jac_norm")])
def test_penalised_step_logs_its_estimate_and_is_a_function_of_the_step(kind, metric):
    plain = _foe_config()
    config = _foe_config(jac_penalty=0.5, jac_kind=kind, jac_iters=3, jac_target=0.2)
    task, m, batch = _foe_setup(config)
    state = init_state(m, config, config.data.num_train)
    step = make_train_step(m, task, config)
    new, metrics = step(state, batch)
    assert set(metrics) == OLD_METRICS | {"jac_loss", metric, f"{metric}_max"}
    _, plain_metrics = make_train_step(m, task, plain)(state, batch)
    # loss stays the MSE; the penalty is reported apart
    assert float(metrics["loss"]) == pytest.approx(float(plain_metrics["loss"]), rel=1e-12)
    est, top = float(metrics[metric]), float(metrics[f"{metric}_max"])
    assert 0 < est <= top
    if kind == "frobenius":
        assert float(metrics["jac_loss"]) == pytest.approx(0.5 * est, rel=1e-12)
    else:
        assert 0 < float(metrics["jac_loss"]) <= 0.5 * (top - 0.2) ** 2
    # the probes depend on (step, example id) only: the same step gives the same update,
    # a reordered batch the same probes per example, the next step new ones
    again, _ = step(state, batch)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(new), strict=True):
        np.testing.assert_array_equal(a, b)
    ids, shape = batch["ids"], (16, 16)
    v0 = jacobian_probes(config, jnp.asarray(0), ids, shape, jnp.float64)
    v0r = jacobian_probes(config, jnp.asarray(0), ids[::-1], shape, jnp.float64)
    v1 = jacobian_probes(config, jnp.asarray(1), ids, shape, jnp.float64)
    np.testing.assert_array_equal(v0r, v0[::-1])
    assert not np.allclose(v0, v1)
    assert step.trace_count == 1


def test_resumed_penalised_run_equals_uninterrupted_run(tmp_path):
    config = _foe_config(jac_penalty=0.5, jac_kind="spectral", jac_iters=3, jac_target=0.2)
    full = train(config, tmp_path / "full", progress=False)
    train(config.replace(checkpoint_every=2), tmp_path / "half", progress=False, until=2)
    with pytest.raises(ji.train.CheckpointError, match=r"penalty.weight: 0.5 -> 0.1"):
        train(config.replace(jac_penalty=0.1), tmp_path / "half", progress=False)
    resumed = train(config, tmp_path / "half", progress=False)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state), strict=True):
        np.testing.assert_array_equal(a, b)
    norms = [r["jac_norm"] for r in full.history if r["kind"] == "train"]
    assert len(norms) == 4 and all(n > 0 for n in norms)


@pytest.mark.unchecked  # wrong types on purpose: the config's own errors are tested
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"jac_kind": "nuclear"}, r"unknown penalty.kind \(jac_kind\) 'nuclear'"),
        ({"jac_penalty": -0.1}, r"penalty.weight \(jac_penalty\) must be >= 0"),
        ({"jac_penalty": float("nan")}, r"penalty.weight \(jac_penalty\) must be a finite number"),
        ({"jac_penalty": True}, r"penalty.weight \(jac_penalty\) must be a finite number"),
        ({"jac_probes": 0}, r"penalty.probes \(jac_probes\) must be an integer >= 1"),
        ({"jac_iters": 0}, r"penalty.iters \(jac_iters\) must be an integer >= 1"),
        ({"jac_probes": 1.5}, r"penalty.probes \(jac_probes\) must be an integer >= 1"),
        ({"jac_target": 0.0}, r"penalty.target \(jac_target\) must be positive"),
        ({"arch": "tv", "model": "bilevel", "jac_penalty": 1.0}, "arch 'tv' is tuned"),
    ],
)
def test_bad_penalty_options_raise_before_anything_compiles(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.of(**{"model": "deq", **changes})


def test_penalty_options_round_trip_and_reach_the_command_line():
    c = TrainConfig.of(model="deq", jac_penalty=1, jac_kind="spectral", jac_probes=2)
    assert c.penalty.weight == 1.0 and isinstance(c.penalty.weight, float)
    assert TrainConfig.from_json(c.to_json()) == c
    assert TrainConfig.of(model="bilevel", jac_penalty=0.1).penalty.weight == 0.1  # tied maps too
    argv = ["train", "--task", "deblur", "--model", "deq", "--arch", "dense", "--out", "x"]
    sets = ["--set", "jac_penalty=0.3", "--set", "jac_kind=spectral", "--set", "jac_iters=7"]
    args = cli.make_parser().parse_args(argv + sets)
    config = cli.build_train_config(args)
    assert (config.penalty.weight, config.penalty.kind, config.penalty.iters) == (
        0.3,
        "spectral",
        7,
    )
    with pytest.raises(cli.CLIError, match="jac_kind"):
        cli.build_train_config(cli.make_parser().parse_args(argv + ["--set", "jac_kind=l1"]))
