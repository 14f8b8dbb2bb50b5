"""Training: the jitted step, hypergradient accuracy, warm starts, checkpoints and resuming."""

import dataclasses
import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv import models
from jaxinv.metrics import psnr
from jaxinv.train import (
    CheckpointError,
    RunExistsError,
    TrainConfig,
    batch_indices,
    init_state,
    load_run,
    make_datasets,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    read_metrics,
    reconstruct,
    train,
)
from jaxinv.train._checkpoint import read_header

from helpers import TINY_FOE, patch_config

SHAPE = (16, 16)


def _images(n, seed=0):
    """Piecewise-smooth 16x16 images on [0, 1]."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    out = []
    for _ in range(n):
        a, b = rng.uniform(2, 5, size=2)
        x = 0.5 + 0.25 * np.sin(i / a) * np.cos(j / b)
        r, c = rng.integers(2, 9, size=2)
        x[r : r + 6, c : c + 5] += 0.2
        out.append(x)
    return jnp.asarray(np.stack(out))


_config = patch_config


def _batch(task, n=4):
    x = _images(n)
    return {"x": x, "y": task.degrade(x, 7), "ids": jnp.arange(n, dtype=jnp.int32)}


def _run_steps(config, steps):
    task = config.make_task()
    inst = models.build_model(config.arch, 0, task, SHAPE, tied=config.tied, **config.arch_options)
    step = make_train_step(inst, task, config)
    state = init_state(inst, config, config.data.num_train)
    batch = _batch(task)
    history = []
    for _ in range(steps):
        state, m = step(state, batch)
        history.append({k: float(v) for k, v in m.items()})
    return step, state, history


@pytest.fixture(scope="module")
def loop_config():
    """Bilevel training of a tiny FoE on two natural 16x16 patches, seen at every step (so
    warm starts apply from the second step)."""
    return _config(
        num_train=2,
        batch_size=2,
        steps=4,
        lr=0.02,
        lr_final=0.02,
        tol=1e-6,
        adjoint_tol=1e-6,
        warm_start=True,
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, loop_config):
    out = tmp_path_factory.mktemp("full")
    return out, train(loop_config, out, progress=False)


def _train_records(result):
    return [r for r in result.history if r["kind"] == "train"]


def _check_steps(hist):
    assert hist[-1]["loss"] < 0.97 * hist[0]["loss"]
    assert hist[-1]["psnr"] > hist[0]["psnr"]
    for m in hist:
        assert m["fwd_iters"] >= 1 and m["bwd_iters"] >= 1
        assert m["fwd_converged"] == 1.0 and m["bwd_converged"] == 1.0
        assert m["grad_norm"] > 0


def test_bilevel_steps_reduce_the_loss_report_both_solves_and_compile_once(full_run):
    _, result = full_run
    assert result.step_fn.trace_count == 1  # no recompiles across steps
    assert result.step_fn.config.adjoint_strategy().method == "cg"
    hist = _train_records(result)
    assert len(hist) == 4
    _check_steps(hist)
    assert all(m["fwd_residual"] <= 1e-6 and m["bwd_residual"] <= 1e-6 for m in hist)


def test_deq_steps_reduce_the_loss_report_both_solves_and_compile_once():
    step, state, hist = _run_steps(_config(model="deq"), 5)
    assert step.trace_count == 1
    assert step.config.adjoint_strategy().method == "gmres"
    assert int(state.step) == 5
    _check_steps(hist)
    assert all(m["fwd_residual"] <= 1e-8 and m["bwd_residual"] <= 1e-8 for m in hist)
    assert all(m["warm"] == 0.0 for m in hist)


def test_bilevel_gradient_matches_finite_differences():
    config = _config(model="bilevel", tol=1e-12, adjoint_tol=1e-12, max_iter=500)
    task = config.make_task()
    inst = models.build_model("foe", 3, task, SHAPE, **TINY_FOE)
    loss_fn = make_loss_fn(config)
    batch = _batch(task, n=2)
    x0 = jax.vmap(inst.init_x)(batch["y"])
    probes = ji.BackwardProbe.zeros(2)
    # one compilation: the loss values for the differences come from value_and_grad too
    value_and_grad = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda m: loss_fn(m, probes, batch, x0)[0])
    )
    params = models.as_dict(inst)
    _, grad = value_and_grad(inst)
    grad = models.as_dict(grad)
    rng = np.random.default_rng(0)
    for name in ("K", "log_weights", "log_scale"):
        direction = jnp.asarray(rng.normal(size=np.shape(params[name])))
        h = 1e-5

        def shifted(t, name=name, direction=direction):
            return value_and_grad(models.from_dict(inst, {name: params[name] + t * direction}))[0]

        fd = (shifted(h) - shifted(-h)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(grad[name], direction), fd, rtol=1e-6)


def test_warm_start_saves_forward_iterations_on_repeated_examples(full_run):
    _, result = full_run
    hist = _train_records(result)
    assert hist[0]["warm"] == 0.0 and all(m["warm"] == 1.0 for m in hist[1:])
    assert all(m["fwd_iters"] < hist[0]["fwd_iters"] for m in hist[1:])
    # same parameters, same examples: a cold and a warm solve, by the same compiled step
    state = result.state
    ids = np.arange(2, dtype=np.int32)
    train_set, _ = make_datasets(result.config)
    batch = train_set.batch(ids)
    _, warm = result.step_fn(state, batch)
    cold_state = dataclasses.replace(state, seen=jnp.zeros_like(state.seen))
    _, cold = result.step_fn(cold_state, batch)
    assert float(warm["warm"]) == 1.0 and float(cold["warm"]) == 0.0
    assert float(warm["fwd_iters"]) < 0.8 * float(cold["fwd_iters"])
    assert float(warm["loss"]) == pytest.approx(float(cold["loss"]), rel=1e-5)
    assert result.step_fn.trace_count == 1


def test_config_round_trip_and_validation():
    c = _config(model="deq", adjoint="fixed_point", warm_start=True)
    assert TrainConfig.from_json(c.to_json()) == c
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.adjoint_strategy().method == "fixed_point"
    r = _config(restart=3.0)
    assert TrainConfig.from_json(r.to_json()) == r and r.forward_solver().restart == 3.0
    with pytest.raises(ValueError, match="restart must exceed 1"):
        _config(restart=1.0)
    assert (
        TrainConfig().adjoint_method == "cg"
        and TrainConfig.of(model="deq").adjoint_method == "gmres"
    )
    with pytest.raises(ValueError, match="bilevel"):
        TrainConfig.of(model="unrolled")
    with pytest.raises(ValueError, match="conv2x11"):
        TrainConfig.of(arch="unet")
    with pytest.raises(ValueError, match="untied"):
        TrainConfig.of(arch="tv", model="deq")
    with pytest.raises(ValueError, match="unknown options"):
        TrainConfig.of(arch_options={"nfilters": 3})
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"stepz": 3})


def test_lr_scale_multiplies_the_updates_of_the_named_parameters():
    task = _config().make_task()
    inst = models.build_model("foe", 0, task, SHAPE, **TINY_FOE)
    params = inst.params()
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, params)

    def first_update(config):
        opt = make_optimizer(config, inst.trainable())
        return models.as_dict(opt.update(grads, opt.init(params), params)[0])

    plain = first_update(_config())
    scaled = first_update(_config(lr_scale={"log_weights": 4.0, "log_scale": 0.5}))
    for name, factor in {"log_weights": 4.0, "log_scale": 0.5, "K": 1.0}.items():
        assert float(jnp.max(jnp.abs(plain[name]))) > 0
        np.testing.assert_allclose(scaled[name], factor * plain[name], rtol=1e-6)
    assert float(scaled["tau"]) == 0.0  # frozen stays frozen
    c = _config(lr_scale={"log_weights": 30})
    assert TrainConfig.from_json(c.to_json()) == c and c.optim.lr_scale == {"log_weights": 30.0}
    with pytest.raises(ValueError, match="positive number"):
        _config(lr_scale={"log_weights": 0.0})
    with pytest.raises(ValueError, match=r"not trainable parameters.*choose from"):
        make_optimizer(_config(lr_scale={"tau": 2.0}), inst.trainable())


def test_skip_unconverged_keeps_the_state_and_stops_a_run_that_never_converges(tmp_path):
    task = _config().make_task()
    inst = models.build_model("foe", 0, task, SHAPE, **TINY_FOE)
    state = init_state(inst, _config(skip_unconverged=True), 4)
    batch = _batch(task)
    for max_iter, skipped in ((2, True), (200, False)):
        config = _config(skip_unconverged=True, max_iter=max_iter)
        new, m = make_train_step(inst, task, config)(state, batch)
        assert float(m["skipped"]) == float(skipped)
        assert (float(m["fwd_converged"]) < 1.0) == skipped
        same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), new.params, state.params)
        assert all(jax.tree.leaves(same)) == skipped
        if skipped:
            assert int(new.step) == 1
            equal = jax.tree.map(jnp.array_equal, new.opt_state, state.opt_state)
            assert all(bool(v) for v in jax.tree.leaves(equal))
    with pytest.raises(FloatingPointError, match="10 steps in a row skipped"):
        train(_config(skip_unconverged=True, max_iter=2, steps=12), tmp_path / "r", progress=False)


def test_data_order_is_a_pure_function_of_seed_and_step():
    a = [batch_indices(3, s, 10, 4) for s in range(5)]
    b = [batch_indices(3, s, 10, 4) for s in (4, 2, 0, 1, 3)]
    np.testing.assert_array_equal(a[4], b[0])
    np.testing.assert_array_equal(a[0], b[2])
    first_epoch = np.concatenate(a)[:10]
    assert sorted(first_epoch) == list(range(10))  # every example once per epoch
    assert not np.array_equal(batch_indices(4, 0, 10, 4), a[0])


# ---------------------------------------------------------------------------------------------
# the loop: checkpoints and resuming
# ---------------------------------------------------------------------------------------------


def test_resumed_run_equals_uninterrupted_run(tmp_path, loop_config, full_run):
    _, full = full_run
    assert full.finished and int(full.state.step) == 4
    half = train(loop_config.replace(checkpoint_every=2), tmp_path, progress=False, until=2)
    assert not half.finished and int(half.state.step) == 2
    # the killed run wrote metrics after its checkpoint: they are dropped on resume
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 3, "loss": -1.0}) + "\n")
    resumed = train(loop_config, tmp_path, progress=False)
    assert resumed.finished
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state), strict=True):
        np.testing.assert_array_equal(a, b)  # params, optimiser state, warm-start buffer
    steps = [r["step"] for r in resumed.history if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.history if r["kind"] == "train"] == [
        r["loss"] for r in full.history if r["kind"] == "train"
    ]
    kinds = {r["kind"] for r in read_metrics(tmp_path)}
    assert kinds == {"train", "val", "val_input"}


def test_finished_runs_are_not_overwritten_and_can_be_loaded(full_run, loop_config):
    out, full = full_run
    with pytest.raises(RunExistsError, match="overwrite=True"):
        train(loop_config, out, progress=False)
    config, inst = load_run(out)
    params = inst
    assert config == loop_config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # the validation solve's shape and solver: served by the compiled evaluation of the run
    y = config.make_task().degrade(_images(2), 1)
    sol = reconstruct(inst, config.make_task(), y, solver=config.forward_solver())
    assert sol.value.shape == (2, 16, 16) and bool(jnp.all(sol.stats.converged))
    assert float(jnp.mean(psnr(sol.value, _images(2)))) > float(jnp.mean(psnr(y, _images(2))))
    saved = json.loads((out / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == loop_config


def _write_checkpoint(path, header, payload):
    """Write a checkpoint file with a given header (the format of jaxinv.train._checkpoint)."""
    head = json.dumps(header).encode()
    path.write_bytes(b"JAXINV-CHECKPOINT\n" + len(head).to_bytes(8, "big") + head + payload)


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path, full_run, loop_config):
    out, _ = full_run
    data = (out / "checkpoint.eqx").read_bytes()
    # a checkpoint from another configuration
    header, payload = read_header(out / "checkpoint.eqx")
    _write_checkpoint(tmp_path / "checkpoint.eqx", {**header, "finished": False}, payload)
    other = loop_config.replace(arch_options={"num_filters": 3, "size": 3})
    with pytest.raises(CheckpointError, match="arch_options"):
        train(other, tmp_path, progress=False)
    # a truncated checkpoint (the previous one is what a killed atomic write leaves, never this)
    (tmp_path / "checkpoint.eqx").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        train(loop_config, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="truncated"):
        load_run(tmp_path)
    (tmp_path / "checkpoint.eqx").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="overwrite=True"):
        load_run(tmp_path)
    # a leftover temporary file from an interrupted write is reported and removed
    (tmp_path / "checkpoint.eqx").write_bytes(data)
    leftover = tmp_path / ".tmp-checkpoint.eqx.abc123"
    leftover.write_bytes(data[:50])
    with pytest.warns(UserWarning, match="interrupted"), pytest.raises(RunExistsError):
        train(loop_config, tmp_path, progress=False)
    assert not leftover.exists()
    # overwrite=True replaces the finished run
    again = train(loop_config, tmp_path, progress=False, overwrite=True)
    assert again.finished
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.eqx", "config.json", "metrics.jsonl"]
    # killed before its first checkpoint: the same configuration starts afresh, another refuses
    (tmp_path / "checkpoint.eqx").unlink()
    with pytest.raises(RunExistsError, match="another run"):
        train(other, tmp_path, progress=False)
    fresh = train(loop_config, tmp_path, progress=False)
    assert fresh.finished and len(_train_records(fresh)) == 4


def test_separately_built_models_of_one_configuration_share_the_compiled_step():
    config = _config(lr=0.0123, lr_final=0.0123)  # a configuration no other test compiles
    task = config.make_task()
    batch = _batch(task)
    a = models.build_model("foe", 0, task, SHAPE, **TINY_FOE)
    b = models.build_model("foe", 1, task, SHAPE, init="random", **TINY_FOE)
    assert not np.array_equal(a.K, b.K)  # other values, the same settings and shapes
    step_a = make_train_step(a, task, config)
    _, ma = step_a(init_state(a, config, 4), batch)
    assert step_a.trace_count == 1
    step_b = make_train_step(b, task, config)  # a new step object for a new model
    state_b, mb = step_b(init_state(b, config, 4), batch)
    assert step_b.trace_count == 1 and step_a.trace_count == 1  # not traced again
    assert float(ma["loss"]) != float(mb["loss"])  # it really ran b's parameters
    # the step updated b: its filters moved, its frozen step was refreshed from them
    assert not np.array_equal(state_b.params.K, b.K)
    assert float(state_b.params.tau) == pytest.approx(float(models.refreshed(state_b.params).tau))


def _dict_layout(model):
    """The old layout of the FoE parameters: a dict by name."""
    return {
        "lam": model.lam,
        "tau": model.tau,
        "K": model.K,
        "log_weights": model.log_weights,
        "log_scale": model.log_scale,
    }


def test_checkpoints_with_parameters_in_a_dict_load_and_resume(tmp_path, loop_config, full_run):
    """Checkpoints written before models were modules hold ``TrainState.params`` as a dict by
    name and the optimiser moments in the same layout; they load and resume exactly."""
    _, full = full_run
    half = train(loop_config.replace(checkpoint_every=2), tmp_path / "new", progress=False, until=2)
    state = half.state
    is_model = lambda n: isinstance(n, models.FoEModel)  # noqa: E731
    opt_state = jax.tree.map(
        lambda n: _dict_layout(n) if is_model(n) else n, state.opt_state, is_leaf=is_model
    )
    params = _dict_layout(state.params)
    old = ji.train.TrainState(state.step, params, opt_state, state.buffer, state.seen)
    assert not any(is_model(n) for n in jax.tree.leaves(old, is_leaf=is_model))
    out = tmp_path / "old"
    out.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (out / name).write_bytes((tmp_path / "new" / name).read_bytes())
    meta = {"config": loop_config.to_dict(), "elapsed": 1.0}  # no "params_layout": the old header
    ji.train.save_checkpoint(out / "checkpoint.eqx", old, step=2, finished=False, meta=meta)
    assert "params_layout" not in read_header(out / "checkpoint.eqx")[0]

    config, model = load_run(out)
    assert config == loop_config and isinstance(model, models.FoEModel)
    for name, value in _dict_layout(state.params).items():
        np.testing.assert_array_equal(getattr(model, name), value)
    resumed = train(loop_config, out, progress=False)
    assert resumed.finished
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state), strict=True):
        np.testing.assert_array_equal(a, b)  # params, optimiser state, warm-start buffer
    assert read_header(out / "checkpoint.eqx")[0]["params_layout"] == "model"
