"""The comparison's per-cell settings: each one fixes a measured failure of the cell it names.

Short training runs (a handful of steps on a few examples) check the mechanism each setting
addresses: the dense denoiser leaves the identity, the untied dense
deblurring map stays a contraction, the conv30x3 denoiser starts below over-smoothing, the
conv2x11 inpainting adjoint converges at the cell's χ, and a run whose solves failed is flagged
with advice.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.metrics import psnr
from jaxinv.reproduce import (
    ARCHS,
    MODELS,
    cell_settings,
    cell_warnings,
    experiment_config,
    format_markdown,
)
from jaxinv.solvers import Anderson
from jaxinv.tasks import TASKS
from jaxinv.train import (
    batch_indices,
    build_instance,
    init_state,
    make_datasets,
    make_train_step,
    reconstruct,
)


def _train(config, steps):
    """``steps`` training steps; returns the instance, the final state, the metrics per step and
    the training examples."""
    task, inst = build_instance(config)
    train, _ = make_datasets(config, task)
    state = init_state(inst, config, config.data.num_train)
    step = make_train_step(inst, task, config)
    history = []
    for s in range(steps):
        ids = batch_indices(config.seed, s, config.data.num_train, config.batch_size)
        batch = {"x": jnp.asarray(train.x[ids]), "y": jnp.asarray(train.y[ids]), "ids": ids}
        state, metrics = step(state, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    return inst, state, history, train


def _small(config, **changes):
    return config.replace(num_train=32, num_val=4, batch_size=16, **changes)


def _active_fraction(model, y):
    z = y.reshape(y.shape[0], -1) @ model.W.T + model.b
    return float(jnp.mean(z > 0))


def test_cells_keep_bilevel_and_deq_identical():
    for task in TASKS:
        for arch in ARCHS:
            for quick in (False, True):
                b, d = (experiment_config(task, arch, m, quick=quick) for m in MODELS)
                assert b.differences(d) == ["model"]
                for key, value in cell_settings(task, arch).items():
                    assert b.setting(key) == value


def test_cell_settings_are_copies():
    cell_settings("denoise", "conv30x3")["arch_options"]["gamma"] = 7.0
    assert experiment_config("denoise", "conv30x3", "bilevel").arch_options["gamma"] == 0.25


def test_unknown_cell_raises():
    with pytest.raises(ValueError, match="unknown task"):
        experiment_config("segment", "dense", "bilevel")
    with pytest.raises(ValueError, match="unknown architecture"):
        experiment_config("denoise", "unet", "bilevel")


def test_dense_denoiser_leaves_the_identity_and_fits_its_training_digits():
    """With ReLU units the dense denoiser switches its units off to undo its harmful random
    start (at lr 1e-3 within a dozen steps), and dead units get no gradient. The cell's
    quadratic potential, centred on the background, keeps learning: the reconstructions of the
    training digits beat their input."""
    config = _small(experiment_config("denoise", "dense", "bilevel"))
    assert config.arch_options == {"activation": "identity", "center": -1.0}
    _, state, history, train = _train(config, 12)
    assert history[-1]["loss"] < history[0]["loss"]
    y, x = jnp.asarray(train.y), jnp.asarray(train.x)
    sol = reconstruct(state.params, config.make_task(), y)
    assert float(jnp.mean((sol.value - x) ** 2)) < float(jnp.mean((y - x) ** 2))

    relu = config.replace(arch_options={})  # the failure the cell's potential avoids
    inst, relu_state, _, _ = _train(relu, 12)
    assert _active_fraction(relu_state.params, y) < 0.25 * _active_fraction(inst, y)


def _spectral_radius(model, x, y, iters=200):
    """|λ_max| of ∂T/∂x at ``x`` by power iteration."""

    @jax.jit
    def jvp(v):
        return jax.jvp(lambda z: model(z, y), (x,), (v,))[1]

    v = jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype)
    v = v / jnp.linalg.norm(v)
    r = 0.0
    for _ in range(iters):
        w = jvp(v)
        r = float(jnp.linalg.norm(w))
        v = w / r
    return r


def test_dense_deq_deblurring_stays_a_contraction():
    """The untied map's step bounds nothing once V ≠ Wᵀ while AᵀA is singular: at lr 1e-3 ten
    steps push the Jacobian's spectral radius above 1 and the solves diverge. With the cell's
    settings it stays below 1 and every forward and adjoint solve converges."""
    config = _small(experiment_config("deblur", "dense", "deq"))
    inst, state, history, train = _train(config, 10)
    x, y = jnp.asarray(train.x[0]), jnp.asarray(train.y[0])
    assert _spectral_radius(state.params, x, y) < 1.0
    assert all(h["fwd_converged"] == 1.0 for h in history)
    assert np.mean([h["bwd_converged"] for h in history]) > 0.9
    assert history[-1]["loss"] < history[0]["loss"]

    old = config.replace(lr=1e-3, lr_final=1e-6)
    _, old_state, _, _ = _train(old, 10)
    assert _spectral_radius(old_state.params, x, y) > 1.0  # the failure the lr fixes


def test_dense_inverse_cells_solve_to_the_fixed_point():
    """For inpainting and deblurring the tied map barely contracts (radius ≈ 0.995), so a 1e-3
    residual stops far from the fixed point; the cell's tolerance lands next to it."""
    for task in ("inpaint", "deblur"):
        config = _small(experiment_config(task, "dense", "bilevel"))
        t, inst = build_instance(config)
        train, _ = make_datasets(config, t)
        x, y = jnp.asarray(train.x[:8]), jnp.asarray(train.y[:8])

        def mse(tol, max_iter, inst=inst, t=t, x=x, y=y, memory=config.forward.memory):
            solver = Anderson(tol=tol, max_iter=max_iter, memory=memory)
            sol = reconstruct(inst, t, y, solver=solver)
            assert bool(jnp.all(sol.stats.converged))
            return float(jnp.mean((sol.value - x) ** 2))

        exact = mse(1e-7, 3000)
        # measured: within 3% (inpainting) and 1% (deblurring); 1e-3 was 24% and 13% off
        assert abs(mse(config.forward.tol, config.forward.max_iter) - exact) < 0.05 * exact
        assert abs(mse(1e-3, 50) - exact) > 0.1 * exact  # the former tolerance


def test_conv30x3_denoiser_does_not_start_over_smoothing():
    """With γ = 1 the 30 normalised random filters over-smooth and training cannot weaken them
    (γ fixed, the filters' scale normalised away); the cell's γ starts well above the input
    and well above γ = 1."""
    config = experiment_config("denoise", "conv30x3", "bilevel", quick=True)
    assert "gamma" in config.arch_options["learn"]
    t, inst = build_instance(config)
    train, _ = make_datasets(config, t)
    x, y = jnp.asarray(train.x), jnp.asarray(train.y)
    strong = config.replace(arch_options={})
    _, inst_strong = build_instance(strong)

    def score(inst):
        sol = reconstruct(inst, t, y, solver=Anderson(tol=1e-5, max_iter=500))
        return float(jnp.mean(psnr(sol.value, x, 1.0)))

    base = float(jnp.mean(psnr(y, x, 1.0)))
    assert score(inst) > base + 3.0
    assert score(inst) > score(inst_strong) + 1.0


def _row(**changes):
    row = {
        "task": "inpaint",
        "arch": "dense",
        "model": "bilevel",
        "dataset": "mnist",
        "adjoint": "anderson",
        "adjoint_tol": 1e-3,
        "adjoint_max_iter": 50,
        "tol": 1e-3,
        "max_iter": 50,
        "test_loss": 0.05,
        "psnr": 18.6,
        "ssim": 0.7,
        "input_psnr": 11.1,
        "fwd_iters_test": 16.0,
        "converged_test": 1.0,
        "fwd_iters_train": 16.0,
        "bwd_iters_train": 50.0,
        "fwd_converged_train": 1.0,
        "bwd_converged_train": 1.0,
        "time_per_step_s": 1.0,
        "time_per_epoch_s": 40.0,
        "num_params": 10,
    }
    row.update(changes)
    return row


def test_cell_warnings_name_the_failure_and_the_fix():
    assert cell_warnings(_row()) == []
    (adj,) = cell_warnings(_row(bwd_converged_train=0.0))
    assert "0% of the adjoint solves" in adj and "adjoint_max_iter=50" in adj
    assert "not implicit gradients" in adj
    div = cell_warnings(
        _row(fwd_converged_train=0.0, converged_test=0.0, psnr=6.3, input_psnr=14.3)
    )
    assert len(div) == 3
    assert "in training" in div[0] and "on the test set" in div[1] and "contraction" in div[0]
    assert "did not learn" in div[2]
    (ident,) = cell_warnings(_row(task="denoise", psnr=26.02, input_psnr=26.02))
    assert "26.02 dB against 26.02" in ident


def test_markdown_lists_cell_settings_and_warnings():
    settings = {
        "quick": False,
        "date": "d",
        "device": "cpu",
        "duration_s": 1.0,
        "command": "jaxinv reproduce",
        "train_settings": {"mnist": {"lr": 1e-4}},
        "cell_settings": {"inpaint-dense": cell_settings("inpaint", "dense")},
    }
    text = format_markdown([_row(bwd_converged_train=0.0)], settings)
    assert "## Warnings" in text and "0% of the adjoint solves" in text
    assert "inpaint-dense: tol=0.0001" in text and "adjoint=gmres" in text
    assert "## Warnings" not in format_markdown([_row()], settings)


def _adjoint_converged(config):
    """Fraction of the 8 training examples whose adjoint solve converged in a first training
    step (at the initial model): its ``bwd_converged``."""
    return _train(config.replace(batch_size=8), 1)[2][0]["bwd_converged"]


def test_conv2x11_inpainting_adjoint_converges_at_the_cells_chi():
    """At χ = 100 the saturated tanh units leave the energy almost no curvature at the missing
    pixels: most adjoint solves do not converge in 300 iterations, by Anderson or GMRES(60).
    At the cell's χ = 10 every one converges within the quick cap of 100, tied and untied."""
    for model in MODELS:
        config = experiment_config("inpaint", "conv2x11", model, quick=True)
        assert config.arch_options["chi"] == 10.0 and config.adjoint.method == "gmres"
        assert _adjoint_converged(config) == 1.0
    cell = experiment_config("inpaint", "conv2x11", "bilevel", quick=True)
    for adjoint in ("anderson", "gmres"):
        paper = cell.replace(arch_options={}, max_iter=300, adjoint_max_iter=300, adjoint=adjoint)
        assert _adjoint_converged(paper) < 0.5, adjoint
