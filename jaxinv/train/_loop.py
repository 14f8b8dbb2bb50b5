"""The training loop: progress, metrics as JSON lines, validation, checkpoints, resuming."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..metrics import psnr, ssim
from ..models import AbstractModel, TVModel, as_dict, from_dict, partition, refreshed
from ..tasks import Task
from ..tuning import tune_tv
from ._checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    CheckpointError,
    RunExistsError,
    atomic_write_text,
    load_checkpoint,
    read_header,
    remove_leftover_temp_files,
    save_checkpoint,
)
from ._config import MAX_SKIPS_IN_A_ROW, TrainConfig
from ._data import Examples, batch_indices, data_fingerprints, make_datasets
from ._step import (
    TrainState,
    TrainStep,
    init_state,
    make_optimizer,
    make_train_step,
    reconstruct,
)


class AdjointFailureError(RuntimeError):
    """Training stopped because its adjoint solves kept failing (``on_adjoint_failure="stop"``):
    the gradients were no longer implicit gradients. The run's last checkpoint is intact."""


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        params: the trained model (:class:`jaxinv.models.AbstractModel`, ``state.params``; its
            array fields are the parameters); also available as ``model``.
        history: every record of ``metrics.jsonl`` in order (``{"kind": "train" | "val" |
            "tune", "step": ..., ...}``; see :func:`train`).
        config, state: the configuration and the final :class:`TrainState`.
        out_dir: the run directory.
        finished: ``True`` if ``config.steps`` were reached (``False`` when stopped by
            ``until``).
        step_fn: the :class:`TrainStep` (its compilation is shared by every run of the same
            configuration in this process; ``step_fn.trace_count`` counts its compilations).
    """

    params: AbstractModel
    history: list[dict[str, Any]]
    config: TrainConfig
    state: TrainState
    out_dir: Path
    finished: bool
    step_fn: TrainStep | None = None

    @property
    def model(self) -> AbstractModel:
        """The trained model (``params``)."""
        return self.params


def build_instance(
    config: TrainConfig, image_shape: tuple[int, int] | None = None
) -> tuple[Task, AbstractModel]:
    """The task and the initial model a configuration trains (``image_shape`` defaults to the
    training shape); the initialisation key is ``PRNGKey(config.seed)``. Models of the same
    configuration are equal in structure, so they share compilations."""
    shape = config.image_shape if image_shape is None else tuple(int(s) for s in image_shape)
    task = config.make_task()
    model = config.make_arch().build(jax.random.PRNGKey(config.seed), task, shape, config.tied)
    return task, model


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``out_dir/metrics.jsonl`` (a truncated last line is skipped)."""
    path = Path(out_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate_metrics(out_dir: Path, step: int) -> None:
    """Drop records written after the checkpoint being resumed from."""
    kept = [r for r in read_metrics(out_dir) if r.get("step", 0) <= step]
    atomic_write_text(out_dir / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def _meta(config: TrainConfig, model: AbstractModel, elapsed: float) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "data": data_fingerprints(config),
        "arch": model.arch,
        "tied": model.tied,
        "image_shape": list(model.image_shape),
        "num_params": model.num_params(),
        "params_layout": PARAMS_LAYOUT,
        "elapsed": elapsed,
    }


def _check_header(path: Path, header: dict[str, Any], config: TrainConfig) -> None:
    try:
        saved = TrainConfig.from_dict(header["config"])
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} holds a configuration this version cannot read ({err}); use "
            "another out_dir or pass overwrite=True"
        ) from err
    diff = saved.differences(config)
    if not diff and "data" in header and header["data"] != data_fingerprints(config):
        folders = ", ".join(k for k in data_fingerprints(config) if k in header["data"])
        raise CheckpointError(
            f"{path} was trained on image folders whose files have changed since ({folders}); "
            "restore the folder as it was to resume, use another out_dir, or pass "
            "overwrite=True to start afresh."
        )
    if diff:
        old, new = saved.dotted(), config.dotted()
        detail = ", ".join(f"{k}: {old[k]!r} -> {new.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"{path} belongs to a run with another configuration ({detail}). Resume it with its "
            f"own configuration (load_run or TrainConfig.from_json of {CONFIG}), use another "
            "out_dir, or pass overwrite=True to replace it."
        )


def _val_record(
    task: Task, model: AbstractModel, val: Examples, config: TrainConfig, step: int
) -> dict[str, Any]:
    sol = reconstruct(model, task, val.y, solver=config.forward_solver())
    x = jnp.asarray(val.x, sol.value.dtype)
    mse = float(jnp.mean(jnp.square(sol.value - x)))
    return {
        "kind": "val",
        "step": step,
        "psnr": float(jnp.mean(psnr(sol.value, x, config.data_range))),
        "psnr_pooled": _pooled_psnr(mse, config.data_range),
        "ssim": float(jnp.mean(ssim(sol.value, x, config.data_range))),
        "mse": mse,
        "fwd_iters": float(np.mean(np.asarray(sol.stats.iterations))),
        "fwd_converged": float(np.mean(np.asarray(sol.stats.converged))),
    }


def _pooled_psnr(mse: float, data_range: float) -> float:
    """``10 log10(range² / MSE)`` of the whole validation set: the PSNR of the mean squared error
    the training minimises. ``psnr`` is the mean of the per-patch PSNRs, which weights flat
    patches (high PSNR) as much as textured ones and can fall while the MSE falls."""
    return 10.0 * math.log10(data_range**2 / mse) if mse > 0 else math.inf


def _input_record(val: Examples, config: TrainConfig) -> dict[str, Any]:
    x = jnp.asarray(val.x)
    xin = jnp.asarray(val.y, x.dtype)  # the measurements: every operator keeps the image shape
    return {
        "kind": "val_input",
        "step": 0,
        "psnr": float(jnp.mean(psnr(xin, x, config.data_range))),
        "psnr_pooled": _pooled_psnr(float(jnp.mean(jnp.square(xin - x))), config.data_range),
        "ssim": float(jnp.mean(ssim(xin, x, config.data_range))),
    }


def _prepare_dir(out: Path, config: TrainConfig, resume: bool, overwrite: bool):
    """Returns the checkpoint header to resume from, or ``None`` to start afresh."""
    out.mkdir(parents=True, exist_ok=True)
    remove_leftover_temp_files(out, stacklevel=3)
    ckpt = out / CHECKPOINT
    if not ckpt.exists():
        # A run killed before its first checkpoint left only config.json/metrics.jsonl: start
        # it afresh if it is this configuration; refuse to mix with another run's output.
        if (out / METRICS).exists() and not overwrite:
            try:
                saved = TrainConfig.from_json((out / CONFIG).read_text())
            except (OSError, ValueError, TypeError):
                saved = None
            if saved is None or saved.differences(config):
                raise RunExistsError(
                    f"{out} holds {METRICS} of another run (and no {CHECKPOINT}). Use another "
                    "out_dir or pass overwrite=True."
                )
        return None
    if overwrite:
        return None
    header, _ = read_header(ckpt)  # CheckpointError if truncated/corrupt
    if header.get("finished"):
        raise RunExistsError(
            f"{out} already holds a finished run ({header.get('step')} steps). Load it with "
            "jaxinv.train.load_run, use another out_dir, or pass overwrite=True to train again."
        )
    _check_header(ckpt, header, config)
    if not resume:
        raise RunExistsError(
            f"{out} holds an unfinished run at step {header.get('step')}; pass resume=True to "
            "continue it or overwrite=True to start afresh."
        )
    return header


def _clear(out: Path) -> None:
    for name in (CHECKPOINT, METRICS, CONFIG):
        (out / name).unlink(missing_ok=True)


class _Loop:
    """Per-step bookkeeping of :func:`train`: metrics, timing, checkpoints."""

    def __init__(self, config, out, task, step_fn, val, metrics_file, elapsed):
        self.config, self.out, self.task = config, out, task
        self.step_fn, self.val, self.file, self.elapsed = step_fn, val, metrics_file, elapsed
        self.skips_in_a_row = 0
        self.failing_in_a_row = 0  # steps whose adjoint solves mostly failed
        self.warned = False

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")

    def step(self, state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict]:
        t0 = time.perf_counter()
        new, m = self.step_fn(state, batch)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        self.elapsed += time.perf_counter() - t0
        done = int(new.step)
        self.skips_in_a_row = self.skips_in_a_row + 1 if m["skipped"] else 0
        if self.skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
            raise FloatingPointError(
                f"{self.skips_in_a_row} steps in a row skipped up to step {done}: the solves do "
                f"not converge (forward residual {m['fwd_residual']:.3g}, backward residual "
                f"{m['bwd_residual']:.3g}, converged {m['fwd_converged']:.0%} / "
                f"{m['bwd_converged']:.0%}). Raise max_iter / adjoint_max_iter, loosen tol, or "
                "train again with a lower lr."
            )
        if not m["skipped"] and not math.isfinite(m["loss"]):
            raise FloatingPointError(
                f"the training loss became {m['loss']} at step {done} (forward residual "
                f"{m['fwd_residual']:.3g}, backward residual {m['bwd_residual']:.3g}). Lower lr, "
                "set clip_norm, tighten tol or raise max_iter; the last checkpoint is intact."
            )
        self.log({"kind": "train", "step": done, "time": self.elapsed, **m})
        self.failing_in_a_row = self.failing_in_a_row + 1 if m["bwd_converged"] < 0.5 else 0
        if self.failing_in_a_row >= MAX_SKIPS_IN_A_ROW and not self.warned:
            self._adjoints_keep_failing(done, m)
        return new, m

    def _adjoints_keep_failing(self, done: int, m: dict[str, float]) -> None:
        what = (
            f"in {self.failing_in_a_row} steps in a row up to step {done} fewer than half of the "
            f"adjoint solves converged (backward residual {m['bwd_residual']:.3g} after "
            f"{m['bwd_iters_max']:.0f} iterations), so these gradients are not implicit "
            "gradients. Raise adjoint_max_iter, use adjoint='gmres' (any map; a larger "
            "adjoint_restart for ill-conditioned ones) or 'cg' (tied maps), loosen adjoint_tol, "
            "or set skip_unconverged=True to keep only converged steps"
        )
        if self.config.on_adjoint_failure == "stop":
            self.file.flush()
            raise AdjointFailureError(
                f"training stopped: {what}. The last checkpoint is intact; train again with "
                "those settings, or resume with on_adjoint_failure='warn' to train on with "
                "these gradients."
            )
        self.warned = True
        warnings.warn(
            f"{what} (training then stops when they keep failing).", RuntimeWarning, stacklevel=4
        )

    def save(self, state: TrainState) -> None:
        self.file.flush()
        step = int(state.step)
        save_checkpoint(
            self.out / CHECKPOINT,
            state,
            step=step,
            finished=step == self.config.steps,
            meta=_meta(self.config, state.params, self.elapsed),
        )


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
    until: int | None = None,
) -> TrainResult:
    """Train ``config`` and write the run to ``out_dir``.

    Files: ``config.json`` (the configuration), ``metrics.jsonl`` (one JSON record per line:
    ``kind="train"`` per step with :class:`TrainStep`'s metrics plus ``step`` (steps done) and
    ``time`` (training seconds so far); ``kind="val"`` every ``eval_every`` steps, at the start
    and at the end, with ``psnr`` (mean over the patches), ``psnr_pooled`` (of the set's MSE),
    ``ssim``, ``mse``, ``fwd_iters``, ``fwd_converged``;
    ``kind="val_input"`` once, the PSNR/SSIM of the measurements ``y``) and ``checkpoint.eqx`` (see
    :mod:`jaxinv.train._checkpoint`), written atomically every ``checkpoint_every`` steps and at
    the end, holding the :class:`TrainState` (parameters, optimiser state, step, warm-start
    buffer) and the configuration. The data order and the noise are pure functions of
    ``(seed, step)``, so a killed run resumed from its checkpoint ends with exactly the
    parameters of an uninterrupted run.

    Args:
        config: the configuration.
        out_dir: run directory (created).
        progress: show a tqdm progress bar (loss, PSNR, forward/backward iterations).
        resume: continue an unfinished run found in ``out_dir`` (its configuration must match,
            except ``checkpoint_every``/``eval_every``); ``False`` refuses to touch it.
        overwrite: discard whatever run ``out_dir`` holds (finished or not) and start afresh.
        until: stop after this many steps (checkpointing there) without finishing the run, as
            if it had been killed; a later call resumes it.

    ``arch="tv"`` is not trained by gradients: its weight is tuned on the validation set by
    :func:`jaxinv.tuning.tune_tv` (records ``kind="tune"``) and saved as a finished run.

    Raises:
        RunExistsError: ``out_dir`` holds a finished run, or an unfinished one with
            ``resume=False`` (pass ``overwrite=True``).
        CheckpointError: the checkpoint is corrupt or from another configuration.
        FloatingPointError: the loss became non-finite.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if until is not None and (not isinstance(until, int) or until < 1):
        raise ValueError(f"until must be a positive integer or None, got {until!r}")
    out = Path(out_dir)
    header = _prepare_dir(out, config, resume, overwrite)
    if header is None:
        _clear(out)
    atomic_write_text(out / CONFIG, config.to_json() + "\n")

    task, model = build_instance(config)
    train_set, val_set = make_datasets(config, task)
    if config.arch == "tv":
        return _tune_tv_run(config, out, task, model, val_set)

    step_fn = make_train_step(model, task, config)
    state = init_state(model, config, len(train_set))
    elapsed = 0.0
    if header is not None:
        header, state = _load_state(out / CHECKPOINT, state, config)
        elapsed = float(header.get("elapsed", 0.0))
        _truncate_metrics(out, int(header["step"]))
    start = int(state.step)
    stop = config.steps if until is None else min(until, config.steps)

    with open(out / METRICS, "a") as metrics_file:
        run = _Loop(config, out, task, step_fn, val_set, metrics_file, elapsed)
        if start == 0:
            run.log(_input_record(val_set, config))
            if config.eval_every:
                run.log(_val_record(task, state.params, val_set, config, 0))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, initial=start, desc=f"{config.model}/{config.arch}")
        saved = start
        try:
            for s in range(start, stop):
                ids = batch_indices(config.seed, s, len(train_set), config.batch_size)
                new_state, m = run.step(state, train_set.batch(ids))
                state = new_state  # only once its metrics are logged: a consistent state
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{m['loss']:.3g}",
                        psnr=f"{m['psnr']:.2f}",
                        fwd=f"{m['fwd_iters']:.0f}",
                        bwd=f"{m['bwd_iters']:.0f}",
                        refresh=False,
                    )
                done = s + 1
                if (config.eval_every and done % config.eval_every == 0) or done == config.steps:
                    run.log(_val_record(task, state.params, val_set, config, done))
                if (
                    config.checkpoint_every and done % config.checkpoint_every == 0
                ) or done == stop:
                    run.save(state)
                    saved = done
        except KeyboardInterrupt:
            if int(state.step) > saved:  # Ctrl-C keeps the progress made
                run.save(state)
            raise
        finally:
            if bar is not None:
                bar.close()
    return TrainResult(
        params=state.params,
        history=read_metrics(out),
        config=config,
        state=state,
        out_dir=out,
        finished=int(state.step) == config.steps,
        step_fn=step_fn,
    )


def _tune_tv_run(
    config: TrainConfig, out: Path, task: Task, model: AbstractModel, val: Examples
) -> TrainResult:
    assert isinstance(model, TVModel)  # the "tv" architecture builds one
    tuning = tune_tv(
        task,
        val.x,
        y=val.y,
        eps=float(model.eps),
        data_range=config.data_range,
        solver=config.forward_solver(),
    )
    recs: list[dict[str, Any]] = [
        {"kind": "val_input", "step": 0, "psnr": tuning.input_psnr},
    ]
    recs += [{"kind": "tune", "step": 0, "weight": w, "psnr": p} for w, p in tuning.trials]
    recs.append({"kind": "val", "step": config.steps, "psnr": tuning.psnr, "weight": tuning.weight})
    atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in recs))
    state = init_state(model, config, config.data.num_train)
    state = TrainState(
        jnp.asarray(config.steps, jnp.int32),
        tuning.model,
        state.opt_state,
        state.buffer,
        state.seen,
    )
    save_checkpoint(
        out / CHECKPOINT, state, step=config.steps, finished=True, meta=_meta(config, model, 0.0)
    )
    return TrainResult(tuning.model, read_metrics(out), config, state, out, True)


#: ``TrainState.params`` in checkpoints: the model's pytree. Checkpoints without this header
#: entry hold the older layout, a dict of the parameters by name (:func:`jaxinv.models.as_dict`).
PARAMS_LAYOUT = "model"


def _load_state(
    path: Path, like: TrainState, config: TrainConfig, *, need_opt_state: bool = True
) -> tuple[dict, TrainState]:
    """:func:`load_checkpoint` of either layout into the structure of ``like``."""
    header, _ = read_header(path)
    if header.get("params_layout") == PARAMS_LAYOUT:
        return load_checkpoint(path, like)
    return header, _from_dict_layout(path, like, config, need_opt_state)


def _from_dict_layout(
    path: Path, like: TrainState, config: TrainConfig, need_opt_state: bool
) -> TrainState:
    """Read a checkpoint whose ``params`` are a dict by parameter name (written before models
    were modules) and map the names onto the model's fields, in the parameters and in the
    optimiser state's moments alike (without ``need_opt_state``, an optimiser state that cannot
    be mapped is replaced by ``like``'s)."""
    model = like.params
    names = as_dict(model)
    old_params = dict(names)
    flags = as_dict(model.trainable())
    old_opt = make_optimizer(config, flags).init(old_params)
    old_like = TrainState(like.step, old_params, old_opt, like.buffer, like.seen)
    _, old = load_checkpoint(path, old_like)
    template = model.params()

    def is_params_dict(node: Any) -> bool:
        return isinstance(node, dict) and set(node) == set(names)

    def to_fields(node: Any) -> Any:
        return from_dict(template, node) if is_params_dict(node) else node

    opt_state = jax.tree.map(to_fields, old.opt_state, is_leaf=is_params_dict)
    loaded = eqx.combine(from_dict(template, old.params), partition(model)[1])
    if jax.tree.structure(opt_state) != jax.tree.structure(like.opt_state):
        if need_opt_state:
            raise CheckpointError(
                f"checkpoint {path} holds parameters by name (the layout before models were "
                "modules) and its optimiser state could not be mapped onto this model's fields, "
                "so the run cannot be resumed. Load its parameters with jaxinv.train.load_run "
                "(which needs no optimiser state), or train the run again with overwrite=True."
            )
        opt_state = like.opt_state
    return TrainState(old.step, loaded, opt_state, old.buffer, old.seen)


def load_run(
    out_dir: str | os.PathLike, *, image_shape: tuple[int, int] | None = None
) -> tuple[TrainConfig, AbstractModel]:
    """Load a run written by :func:`train` (finished or not): ``(config, model)`` from its last
    checkpoint, the model holding the trained parameters.

    The model is built for the training image shape, or for ``image_shape`` (e.g. whole test
    images; not possible for ``"dense"``, whose size is fixed); the loaded parameters are then
    refreshed for that shape (operator norms and step). Use :func:`reconstruct` to evaluate:
    ``reconstruct(model, config.make_task(), y)``. Checkpoints of either parameter layout load
    (see :data:`PARAMS_LAYOUT`).
    """
    out = Path(out_dir)
    path = out / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no {CHECKPOINT} in {out}: not a finished or started jaxinv run")
    header, _ = read_header(path)
    config = TrainConfig.from_dict(header["config"])
    task, model = build_instance(config)
    like = init_state(model, config, config.data.num_train)
    _, state = _load_state(path, like, config, need_opt_state=False)
    model = state.params
    if image_shape is not None:
        model = retarget(config, model, image_shape)
    return config, model


def retarget(
    config: TrainConfig, model: AbstractModel, image_shape: tuple[int, int]
) -> AbstractModel:
    """``model``'s parameters on the model of ``config`` built for ``image_shape`` images (its
    operator and derived leaves refreshed for that shape); ``model`` itself if the shape is its
    own. ``ValueError`` if the parameters do not fit (``"dense"``'s size is fixed)."""
    if tuple(image_shape) == model.image_shape:
        return model
    _, other = build_instance(config, image_shape)
    trained, fresh = as_dict(model), as_dict(other)
    same = list(trained) == list(fresh) and all(
        np.shape(trained[k]) == np.shape(fresh[k]) for k in trained
    )
    if not same:
        raise ValueError(
            f"the {config.arch!r} parameters were trained for {config.image_shape} images and "
            f"do not fit {tuple(image_shape)} images (the architecture's size is fixed)"
        )
    return refreshed(from_dict(other, trained))
