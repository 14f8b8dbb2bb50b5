"""Train a grid of configurations as ONE compiled program: the training step ``vmap``-ped over it.

A grid such as ``{"gamma": [0.1, 0.5], "sigma": [0.05, 0.1]}`` over a base :class:`TrainConfig`
gives the Cartesian product of its values: G configurations (the last key varies fastest), each
the :class:`TrainConfig` its own run would have (:func:`expand_grid`). Every configuration's model
is built exactly as that run builds it; the models share one static structure, so they stack along
a leading axis of length G (their scalars γ, τ, λ become arrays of G values) and one compiled step
``vmap``-s :func:`step_body` -- the body of the single run's step -- over them. Per configuration:

* the data: the noise level scales one standard-normal draw (:class:`NoisyParts`), and the seed
  chooses the training set, the noise and the data order, exactly as in its own run;
* the learning rate: a factor on Adam's update, which is linear in it (the schedule scales as a
  whole: ``lr_final`` by the same factor);
* the parameters, optimiser state, step count and warm-start buffer.

Grid keys (:func:`grid_keys`): ``sigma`` (the task's noise level), ``lr``, ``seed``, and the
architecture's real-valued options (dense: ``gamma``, ``tau``, ``lam``, ``init_scale``, ...).
Anything that changes shapes or the compiled program (the architecture, filter counts, solvers,
tolerances, the batch size; ``tau="safe"`` next to numbers) is refused before the step compiles.

Failure isolation: a configuration is frozen -- its state stops changing, the reason and the step
are recorded -- where its own run would stop with an error (a non-finite loss; steps skipped
:data:`MAX_SKIPS_IN_A_ROW` times in a row with ``skip_unconverged``), one step before it would
(an update that makes the parameters non-finite; the state before it is kept), or when its
forward solves keep failing (fewer than half converged in :data:`MAX_SKIPS_IN_A_ROW` steps in a
row). The others train on unaffected (``vmap`` lanes do not interact). A frozen lane is still
computed, and a ``vmap``-ped ``while_loop`` iterates until its slowest lane converges: one slow
configuration slows the whole step.

With ``devices > 1`` the configurations are split over the devices of
:func:`jaxinv.distributed.data_mesh` (each device trains its share whole, with its own
``while_loop`` s); the grid is padded to a multiple of the device count with inactive copies.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from jaxtyping import Array, Bool, PyTree

from .. import distributed
from ..metrics import psnr, ssim
from ..models import ARCHITECTURES, AbstractModel
from ._checkpoint import (
    CHECKPOINT,
    METRICS,
    CheckpointError,
    RunExistsError,
    atomic_write_text,
    load_checkpoint,
    read_header,
    remove_leftover_temp_files,
    save_checkpoint,
)
from ._config import MAX_SKIPS_IN_A_ROW, TrainConfig, setting_names
from ._data import NoisyParts, batch_indices, make_dataset_parts
from ._loop import _pooled_psnr, _truncate_metrics, build_instance, read_metrics
from ._step import TrainState, _step_key, init_state, reconstruct_body, step_body

#: The sweep's description inside its directory (base configuration, grid, configurations).
SWEEP = "sweep.json"
#: Grid keys that are not architecture options.
RUN_KEYS = ("sigma", "lr", "seed")
_ALIASES = {"task_options.sigma": "sigma", "optim.lr": "lr"}


# ---- the grid --------------------------------------------------------------------------------


class GridError(ValueError):
    """A grid that cannot be swept in one compiled program; the message names the key and the
    fix."""


def grid_keys(base: TrainConfig) -> tuple[str, ...]:
    """The keys a grid over ``base`` may vary: ``sigma``, ``lr``, ``seed`` and the real-valued
    options of ``base.arch`` (also accepted as ``arch_options.NAME``)."""
    fields = dataclasses.fields(ARCHITECTURES[base.arch])  # type: ignore[arg-type]
    return RUN_KEYS + tuple(f.name for f in fields if "float" in str(f.type))


def _key(name: Any) -> str:
    if not isinstance(name, str):
        raise GridError(f"grid keys must be strings, got {name!r}")
    name = _ALIASES.get(name, name)
    return name.removeprefix("arch_options.")


def _check_grid(base: TrainConfig, grid: Mapping[str, Sequence[float]]) -> dict[str, tuple]:
    """The grid with its keys normalised and its values checked (before anything is built)."""
    if not isinstance(base, TrainConfig):
        raise TypeError(f"base must be a TrainConfig, got {type(base).__name__}")
    if base.arch == "tv":
        raise GridError("arch 'tv' is tuned on the validation set, not trained: nothing to sweep")
    if base.throw:
        raise GridError(
            "throw=True would stop the whole sweep at the first unconverged solve of any "
            "configuration; a sweep isolates failures instead: use throw=False"
        )
    if not isinstance(grid, Mapping) or not grid:
        raise GridError(
            f"grid must be a non-empty dict of key -> values, e.g. {{'gamma': [0.1, 0.5]}}; got "
            f"{grid!r}"
        )
    allowed = grid_keys(base)
    arch_fields = {f.name for f in dataclasses.fields(ARCHITECTURES[base.arch])}  # type: ignore[arg-type]
    config_fields = set(setting_names())
    out: dict[str, tuple] = {}
    for name, values in grid.items():
        key = _key(name)
        if key not in allowed:
            if key in arch_fields:
                raise GridError(
                    f"grid key {name!r}: the {base.arch!r} option {key!r} sets shapes or a static "
                    "setting of the model, which the configurations of one compiled sweep share; "
                    f"run one sweep per value. Grid keys: {list(allowed)}"
                )
            if key in config_fields:
                raise GridError(
                    f"grid key {name!r}: {key!r} is a setting of the compiled step or of the "
                    "data's shapes (architecture, solver, tolerances, batch, steps, ...), which "
                    "the configurations of one sweep share; run one sweep per value. Grid keys: "
                    f"{list(allowed)}"
                )
            raise GridError(f"unknown grid key {name!r}; choose from {list(allowed)}")
        if key in out:
            raise GridError(f"grid key {key!r} is given twice")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise GridError(f"grid {key!r}: expected a list of numbers, got {values!r}")
        vals = list(values)
        if not vals:
            raise GridError(f"grid {key!r} has no values; give at least one")
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise GridError(f"grid {key!r}: values must be finite numbers, got {v!r}")
            if key == "seed" and (v != int(v) or v < 0):
                raise GridError(f"grid 'seed': seeds are non-negative integers, got {v!r}")
        vals = [int(v) if key == "seed" else float(v) for v in vals]
        if len(set(vals)) != len(vals):
            raise GridError(f"grid {key!r} repeats a value: {vals}")
        out[key] = tuple(vals)
    return out


def _configure(base: TrainConfig, settings: Mapping[str, float | int]) -> TrainConfig:
    arch, task, kw = dict(base.arch_options), dict(base.task_options), {}
    for key, value in settings.items():
        if key == "sigma":
            task["sigma"] = value
        elif key == "lr":
            kw["lr"] = value
            kw["lr_final"] = min(value, base.optim.lr_final * (value / base.optim.lr))
        elif key == "seed":
            kw["seed"] = value
        else:
            arch[key] = value
    return base.replace(task_options=task, arch_options=arch, **kw)


def expand_grid(
    base: TrainConfig, grid: Mapping[str, Sequence[float]]
) -> list[tuple[dict[str, float | int], TrainConfig]]:
    """The configurations of a grid, in order: ``(settings, config)`` with ``settings`` the grid
    values (``{"gamma": 0.5, "sigma": 0.1}``) and ``config`` the :class:`TrainConfig` a separate
    run of that configuration would use (``lr`` scales ``lr_final`` alike). ``ValueError`` names
    an unknown or shape-changing key, an empty list, a non-finite value or an invalid
    configuration."""
    spec = _check_grid(base, grid)
    out = []
    for combo in itertools.product(*spec.values()):
        settings = dict(zip(spec, combo, strict=True))
        try:
            config = _configure(base, settings)
        except ValueError as err:
            raise GridError(f"grid configuration {settings}: {err}") from None
        out.append((settings, config))
    return out


# ---- stacking --------------------------------------------------------------------------------


def stack(trees: Sequence[PyTree]) -> PyTree:
    """Pytrees of one structure stacked along a new leading axis (their arrays; everything else
    is taken from the first)."""
    dyn = [eqx.filter(t, eqx.is_array) for t in trees]
    rest = eqx.filter(trees[0], eqx.is_array, inverse=True)
    return eqx.combine(jax.tree.map(lambda *a: jnp.stack(a), *dyn), rest)


def unstack(tree: PyTree, index: int) -> PyTree:
    """Entry ``index`` of a :func:`stack`-ed pytree."""
    return jax.tree.map(lambda a: a[index] if eqx.is_array(a) else a, tree)


def _difference(a: AbstractModel, b: AbstractModel) -> str:
    """How two models differ in static structure or shapes ('' if they stack)."""
    if type(a) is not type(b):
        return f"the model type ({type(a).__name__} vs {type(b).__name__})"
    for f in dataclasses.fields(a):
        u, v = getattr(a, f.name), getattr(b, f.name)
        if f.metadata.get("static", False):
            if u != v:
                return f"the static setting {f.name!r} ({u!r} vs {v!r})"
            continue
        if jax.tree.structure(u) != jax.tree.structure(v):
            return f"the structure of {f.name!r}"
        for p, q in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
            if eqx.is_array(p) and eqx.is_array(q):
                if p.shape != q.shape or p.dtype != q.dtype:
                    return f"the shape of {f.name!r} ({p.shape} vs {q.shape})"
            elif eqx.is_array(p) or eqx.is_array(q) or p != q:
                return f"{f.name!r}"
    return ""


def _check_models(models: Sequence[AbstractModel], settings: Sequence[dict]) -> None:
    for i in range(1, len(models)):
        why = _difference(models[0], models[i])
        if why:
            changed = [k for k in settings[0] if settings[0][k] != settings[i][k]]
            raise GridError(
                f"grid: the configurations {settings[0]} and {settings[i]} build models that "
                f"differ in {why}, so they cannot share one compiled step; the grid key(s) "
                f"{changed} change the model's static form. Run one sweep per value (or give "
                "every tau as a number, not 'safe')."
            )


# ---- the compiled step -----------------------------------------------------------------------


class SweepState(eqx.Module):
    """The state of a sweep: the :class:`TrainState` of every configuration stacked along a
    leading axis (length G, or more with padding lanes) and which configurations still train."""

    state: TrainState
    active: Bool[Array, " G"]


#: Traces of the sweep step per (step configuration, devices).
_SWEEP_TRACES: collections.Counter[tuple[str, int]] = collections.Counter()


class SweepStep:
    """The compiled step of a sweep, ``step(sweep, batch, factors) -> (sweep, metrics)``:
    :func:`step_body` ``vmap``-ped over the configurations (``batch`` has a leading axis G;
    ``factors``: the learning-rate factors ``(G,)`` or ``None``), a configuration's new state
    kept only where it is active and its loss and gradient are finite. ``metrics`` are those of
    :class:`TrainStep`, each of shape ``(G,)``. ``trace_count`` counts its compilations."""

    def __init__(self, config: TrainConfig, devices: int = 1):
        self.config = config
        self.devices = int(devices)
        self._key = _step_key(config.replace(devices=1))

    @property
    def trace_count(self) -> int:
        """Traces of this sweep's step so far (in this process)."""
        return _SWEEP_TRACES[(self._key, self.devices)]

    def __call__(
        self, sweep: SweepState, batch: dict[str, Any], factors: Array | None
    ) -> tuple[SweepState, dict[str, Array]]:
        return _sweep_step(sweep, batch, factors, self._key, self.devices)


@eqx.filter_jit
def _sweep_step(sweep, batch, factors, key, devices):
    _SWEEP_TRACES[(key, devices)] += 1
    config = TrainConfig.from_json(key)

    def lane(state, active, batch, factor=None):
        new, m = step_body(state, batch, config, factor)
        leaves = jax.tree.leaves(new.params.params())
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))
        keep = active & jnp.isfinite(m["loss"]) & finite
        metrics = {k: jnp.asarray(v) for k, v in m.items()}  # e.g. a constant lr: one per lane
        return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state), {
            **metrics,
            "params_finite": finite,
        }

    lanes = eqx.filter_vmap(lane)
    extra = () if factors is None else (factors,)
    if devices == 1:
        new, m = lanes(sweep.state, sweep.active, batch, *extra)
    else:  # each device trains its share of the configurations
        dyn, rest = eqx.partition(sweep.state, eqx.is_array)

        def local(dyn, active, batch, *extra):
            new, m = lanes(eqx.combine(dyn, rest), active, batch, *extra)
            return eqx.filter(new, eqx.is_array), m

        spec = PartitionSpec(distributed.DATA_AXIS)
        run = jax.shard_map(
            local,
            mesh=distributed.data_mesh(devices),
            in_specs=(spec,) * (3 + len(extra)),
            out_specs=spec,
            check_vma=False,
        )
        new_dyn, m = run(dyn, sweep.active, batch, *extra)
        new = eqx.combine(new_dyn, rest)
    return SweepState(new, sweep.active), m


@eqx.filter_jit
def reconstruct_stacked(models: AbstractModel, y: Array, solver: Any) -> Any:
    """The fixed points of stacked models (leading axis G) for stacked measurements
    ``(G, N, H, W)``: :func:`jaxinv.train.reconstruct`'s solve ``vmap``-ped over the models."""
    return eqx.filter_vmap(lambda m, y_: reconstruct_body(m, y_, None, solver, False))(models, y)


# ---- data ------------------------------------------------------------------------------------


class _GridData:
    """The training and validation data of every lane: one set of clean images, ``A x`` and
    noise per seed; a lane's measurements are ``A x + σ n`` at its own noise level."""

    def __init__(self, lanes: Sequence[TrainConfig]):
        self.lanes = list(lanes)
        task = lanes[0].make_task()  # the operator is shared; sigma is per lane
        parts: dict[int, tuple[NoisyParts, NoisyParts]] = {}
        for c in self.lanes:
            if c.seed not in parts:
                parts[c.seed] = make_dataset_parts(c, task)
        self.train = {seed: p[0] for seed, p in parts.items()}
        self.val = parts[lanes[0].seed][1]  # drawn from a fixed seed, the same for every run
        self.sigmas = [c.make_task().sigma for c in self.lanes]
        self.num_train = lanes[0].data.num_train
        self.batch_size = lanes[0].batch_size

    def batch(self, step: int) -> dict[str, np.ndarray]:
        ids = {
            seed: batch_indices(seed, step, self.num_train, self.batch_size) for seed in self.train
        }
        xs, ys, idx = [], [], []
        for c, sigma in zip(self.lanes, self.sigmas, strict=True):
            part, i = self.train[c.seed], ids[c.seed]
            xs.append(part.x[i])
            ys.append(part.measurements(sigma, i))
            idx.append(i)
        return {"x": np.stack(xs), "y": np.stack(ys), "ids": np.stack(idx)}

    def val_measurements(self) -> np.ndarray:
        return np.stack([self.val.measurements(s) for s in self.sigmas])


# ---- results ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """What :func:`train_sweep` and :func:`load_sweep` return.

    Attributes:
        base, grid: the base configuration and the grid (keys normalised).
        settings, configs: per configuration, its grid values and its :class:`TrainConfig`.
        state: the stacked :class:`TrainState` (leading axis G; ``state.params`` is the stacked
            model, see :meth:`model`).
        failures: ``{index: {"step", "reason"}}`` of the frozen configurations.
        history: the records of ``metrics.jsonl`` (each with ``config``, the index, and
            ``settings``).
        out_dir, finished: the sweep directory; whether ``base.steps`` were reached.
        step_fn: the :class:`SweepStep` (``None`` when loaded).
    """

    base: TrainConfig
    grid: dict[str, tuple]
    settings: list[dict[str, float | int]]
    configs: list[TrainConfig]
    state: TrainState
    failures: dict[int, dict[str, Any]]
    history: list[dict[str, Any]]
    out_dir: Path
    finished: bool
    step_fn: SweepStep | None = None

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def models(self) -> AbstractModel:
        """The stacked model (leading axis G)."""
        return self.state.params

    def model(self, index: int) -> AbstractModel:
        """The trained model of configuration ``index``."""
        return unstack(self.state.params, index)

    def records(self, index: int, kind: str = "train") -> list[dict[str, Any]]:
        """The metric records of one configuration."""
        return [r for r in self.history if r.get("config") == index and r.get("kind") == kind]


def _spec_dict(base: TrainConfig, grid: Mapping[str, tuple]) -> dict[str, Any]:
    return {"base": base.to_dict(), "grid": {k: list(v) for k, v in grid.items()}}


def _lanes(configs: list[TrainConfig], devices: int) -> list[TrainConfig]:
    """The configurations padded with copies of the last to a multiple of ``devices``."""
    return configs + [configs[-1]] * (-len(configs) % devices)


def _initial(lanes: Sequence[TrainConfig], settings: Sequence[dict], num: int) -> SweepState:
    models = [build_instance(c)[1] for c in lanes]
    _check_models(models, list(settings) + [settings[-1]] * (len(lanes) - len(settings)))
    states = [init_state(m, c, c.data.num_train) for m, c in zip(models, lanes, strict=True)]
    active = jnp.arange(len(lanes)) < num
    return SweepState(stack(states), active)


def _prepare(out: Path, spec: dict, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint header to resume from, or ``None`` to start afresh."""
    out.mkdir(parents=True, exist_ok=True)
    remove_leftover_temp_files(out, stacklevel=3)
    ckpt = out / CHECKPOINT
    if not ckpt.exists() or overwrite:
        if not overwrite and (out / METRICS).exists():
            try:
                saved = json.loads((out / SWEEP).read_text())
            except (OSError, ValueError):
                saved = None
            if saved is None or not _same_spec(saved, spec):
                raise RunExistsError(
                    f"{out} holds {METRICS} of another run or sweep (and no {CHECKPOINT}). Use "
                    "another out_dir or pass overwrite=True."
                )
        return None
    header, _ = read_header(ckpt)
    if "sweep" not in header:
        raise CheckpointError(
            f"{ckpt} is a single run's checkpoint, not a sweep's; use another out_dir or pass "
            "overwrite=True"
        )
    if not _same_spec(header["sweep"], spec):
        raise CheckpointError(
            f"{ckpt} belongs to a sweep with another base configuration or grid ("
            f"{header['sweep']['grid']}); resume it with its own, use another out_dir, or pass "
            "overwrite=True to replace it."
        )
    if header.get("finished"):
        raise RunExistsError(
            f"{out} already holds a finished sweep ({header.get('step')} steps). Load it with "
            "jaxinv.train.load_sweep, use another out_dir, or pass overwrite=True to train again."
        )
    if not resume:
        raise RunExistsError(
            f"{out} holds an unfinished sweep at step {header.get('step')}; pass resume=True to "
            "continue it or overwrite=True to start afresh."
        )
    return header


def _same_spec(saved: dict, spec: dict) -> bool:
    try:
        a, b = TrainConfig.from_dict(saved["base"]), TrainConfig.from_dict(spec["base"])
    except (KeyError, TypeError, ValueError):
        return False
    return not a.differences(b) and saved.get("grid") == spec["grid"]


class _Book:
    """Host bookkeeping of a sweep (saved in the checkpoint header): failures and the skipped
    steps in a row of every configuration."""

    def __init__(self, num: int, saved: dict | None = None):
        saved = saved or {}
        self.failures = {int(k): v for k, v in saved.get("failures", {}).items()}
        self.skips = list(saved.get("skips", [0] * num))
        self.diverging = list(saved.get("diverging", [0] * num))
        self.bwd_failing = list(saved.get("bwd_failing", [0] * num))
        self.warned = {int(k) for k in saved.get("warned", [])}

    def to_dict(self) -> dict[str, Any]:
        return {
            "failures": {str(k): v for k, v in self.failures.items()},
            "skips": self.skips,
            "diverging": self.diverging,
            "bwd_failing": self.bwd_failing,
            "warned": sorted(self.warned),
        }

    def warning(self, g: int, m: dict[str, float], done: int) -> str | None:
        """The single run's warning, once per configuration: the adjoint solves of
        :data:`MAX_SKIPS_IN_A_ROW` steps in a row mostly failed."""
        self.bwd_failing[g] = self.bwd_failing[g] + 1 if m["bwd_converged"] < 0.5 else 0
        if self.bwd_failing[g] < MAX_SKIPS_IN_A_ROW or g in self.warned:
            return None
        self.warned.add(g)
        return (
            f"in {self.bwd_failing[g]} steps in a row up to step {done} fewer than half of the "
            f"adjoint solves converged (backward residual {m['bwd_residual']:.3g}), so these "
            "gradients are not implicit gradients"
        )

    def check(self, g: int, m: dict[str, float], done: int) -> str | None:
        """Why configuration ``g`` is frozen at step ``done``: where its own run stops with an
        error (a non-finite loss; too many skipped steps in a row), one step before it would
        (an update that makes the parameters non-finite), or when the forward solves keep
        failing (fewer than half converged in :data:`MAX_SKIPS_IN_A_ROW` steps in a row)."""
        self.skips[g] = self.skips[g] + 1 if m["skipped"] else 0
        self.diverging[g] = self.diverging[g] + 1 if m["fwd_converged"] < 0.5 else 0
        solves = (
            f"forward residual {m['fwd_residual']:.3g}, backward residual "
            f"{m['bwd_residual']:.3g}, converged {m['fwd_converged']:.0%} / "
            f"{m['bwd_converged']:.0%}"
        )
        if self.skips[g] >= MAX_SKIPS_IN_A_ROW:
            return (
                f"{self.skips[g]} steps in a row skipped up to step {done}: the solves do not "
                f"converge ({solves})"
            )
        if m["skipped"]:
            return None
        if not math.isfinite(m["loss"]):
            return f"the training loss became {m['loss']} at step {done} ({solves})"
        if not m["params_finite"]:
            return (
                f"the update of step {done} made the parameters non-finite (loss "
                f"{m['loss']:.4g}, gradient norm {m['grad_norm']:.3g})"
            )
        if self.diverging[g] >= MAX_SKIPS_IN_A_ROW:
            return (
                f"in {self.diverging[g]} steps in a row up to step {done} fewer than half of the "
                f"forward solves converged ({solves})"
            )
        return None


def _val_records(
    sweep: SweepState, data: _GridData, y: np.ndarray, config: TrainConfig, num: int, step: int
) -> list[dict[str, Any]]:
    models = sweep.state.params
    dtype = jax.tree.leaves(models.params())[0].dtype
    sol = reconstruct_stacked(models, jnp.asarray(y, dtype), config.forward_solver())
    x = jnp.broadcast_to(jnp.asarray(data.val.x, dtype), sol.value.shape)
    dr = config.data_range
    mse = np.asarray(jnp.mean(jnp.square(sol.value - x), axis=(1, 2, 3)))
    p = np.asarray(jnp.mean(psnr(sol.value, x, dr), axis=1))
    s = np.asarray(jnp.mean(ssim(sol.value, x, dr), axis=1))
    iters = np.asarray(jnp.mean(sol.stats.iterations.astype(jnp.float32), axis=1))
    conv = np.asarray(jnp.mean(sol.stats.converged.astype(jnp.float32), axis=1))
    return [
        {
            "kind": "val",
            "step": step,
            "psnr": float(p[g]),
            "psnr_pooled": _pooled_psnr(float(mse[g]), dr),
            "ssim": float(s[g]),
            "mse": float(mse[g]),
            "fwd_iters": float(iters[g]),
            "fwd_converged": float(conv[g]),
        }
        for g in range(num)
    ]


def _input_records(data: _GridData, y: np.ndarray, config: TrainConfig, num: int) -> list[dict]:
    x = jnp.asarray(data.val.x)
    out = []
    for g in range(num):
        xin = jnp.asarray(y[g], x.dtype)
        out.append(
            {
                "kind": "val_input",
                "step": 0,
                "psnr": float(jnp.mean(psnr(xin, x, config.data_range))),
                "psnr_pooled": _pooled_psnr(
                    float(jnp.mean(jnp.square(xin - x))), config.data_range
                ),
                "ssim": float(jnp.mean(ssim(xin, x, config.data_range))),
            }
        )
    return out


def _unpad(state: TrainState, num: int) -> TrainState:
    return jax.tree.map(lambda a: a[:num] if eqx.is_array(a) else a, state)


def _relane(sweep: SweepState, num: int, lanes: int) -> SweepState:
    """The ``num`` configurations of ``sweep`` padded to ``lanes`` lanes with inactive copies of
    the last (a sweep resumed on another number of devices)."""
    if sweep.active.shape[0] == lanes:
        return sweep

    def pad(a: Any) -> Any:
        if not eqx.is_array(a):
            return a
        return jnp.concatenate([a[:num]] + [a[num - 1 : num]] * (lanes - num))

    state = jax.tree.map(pad, sweep.state)
    return SweepState(state, (jnp.arange(lanes) < num) & pad(sweep.active))


def train_sweep(
    base: TrainConfig,
    grid: Mapping[str, Sequence[float]],
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
    until: int | None = None,
) -> SweepResult:
    """Train every configuration of ``grid`` over ``base`` in one compiled program (see the module
    docstring) and write the sweep to ``out_dir``.

    Each configuration trains as its own :func:`train` run of ``expand_grid(base, grid)``'s
    config would (same initial model, data, order, noise and updates; equal to float rounding),
    unless it fails, in which case it is frozen and recorded in ``failures``.

    Files: ``sweep.json`` (the base configuration, the grid and every configuration's settings
    and config), ``metrics.jsonl`` (the records of :func:`train`, each with ``config`` (the
    index) and ``settings``; ``kind="failed"`` with ``reason`` where a configuration was frozen)
    and ``checkpoint.eqx`` (the stacked :class:`SweepState` and the bookkeeping, written
    atomically every ``checkpoint_every`` steps and at the end). A killed sweep resumes from its
    checkpoint to exactly the result of an uninterrupted one.

    Args:
        base: the configuration the grid varies.
        grid: ``{key: values}``, keys from :func:`grid_keys` (e.g. ``{"gamma": [0.1, 1.0],
            "tau": [0.1, 0.9], "sigma": [0.05, 0.1]}``).
        out_dir: the sweep directory (created).
        progress, resume, overwrite, until: as for :func:`train`.

    Raises:
        ValueError: a bad grid (unknown or shape-changing key, empty or non-finite values),
            before anything compiles.
        RunExistsError, CheckpointError: as for :func:`train`.
    """
    if until is not None and (not isinstance(until, int) or until < 1):
        raise ValueError(f"until must be a positive integer or None, got {until!r}")
    expand_grid(base, grid)  # a bad grid is refused before any file is touched
    spec = _check_grid(base, grid)
    out = Path(out_dir)
    header = _prepare(out, _spec_dict(base, spec), resume, overwrite)
    if header is not None:  # the saved lanes follow the saved key order, not the caller's
        spec = _check_grid(base, _ordered_grid(header, out))
    pairs = expand_grid(base, spec)
    settings = [p[0] for p in pairs]
    configs = [p[1] for p in pairs]
    num = len(configs)
    lanes = _lanes(configs, base.devices)
    spec_dict = _spec_dict(base, spec)
    if header is None:
        for name in (CHECKPOINT, METRICS):
            (out / name).unlink(missing_ok=True)
    description = {
        **spec_dict,
        "configurations": [
            {"index": g, "settings": s, "config": c.to_dict()} for g, (s, c) in enumerate(pairs)
        ],
    }
    atomic_write_text(out / SWEEP, json.dumps(description, indent=2) + "\n")

    sweep = _initial(lanes, settings, num)
    data = _GridData(lanes)
    val_y = data.val_measurements()
    factors = None
    if "lr" in spec:
        factors = jnp.asarray([c.optim.lr / base.optim.lr for c in lanes], _float_dtype(sweep))
    step_fn = SweepStep(base, base.devices)
    place = _placer(base.devices)
    elapsed = 0.0
    book = _Book(num)
    if header is not None:  # its lanes were padded for the devices it ran on
        saved = configs + [configs[-1]] * (int(header.get("lanes", len(lanes))) - num)
        like = sweep if len(saved) == len(lanes) else _initial(saved, settings, num)
        header, loaded = load_checkpoint(out / CHECKPOINT, like)
        sweep = _relane(loaded, num, len(lanes))
        elapsed = float(header.get("elapsed", 0.0))
        book = _Book(num, header.get("book"))
        _truncate_metrics(out, int(header["step"]))
    sweep, factors = place(sweep), place(factors)
    start = int(header["step"]) if header is not None else 0
    stop = base.steps if until is None else min(until, base.steps)

    def log(record: dict[str, Any], g: int) -> None:
        file.write(json.dumps({"config": g, "settings": settings[g], **record}) + "\n")

    def save(step: int) -> None:
        file.flush()
        meta = {
            "sweep": spec_dict,
            "book": book.to_dict(),
            "num_configs": num,
            "lanes": len(lanes),
            "elapsed": elapsed,
            "grid_order": list(spec),  # the header's JSON sorts its keys; lanes follow this order
        }
        save_checkpoint(out / CHECKPOINT, sweep, step=step, finished=step == base.steps, meta=meta)

    def validate(step: int) -> None:
        for g, rec in enumerate(_val_records(sweep, data, val_y, base, num, step)):
            if g not in book.failures:
                log(rec, g)

    with open(out / METRICS, "a") as file:
        if start == 0:
            for g, rec in enumerate(_input_records(data, val_y, base, num)):
                log(rec, g)
            if base.eval_every:
                validate(0)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=base.steps, initial=start, desc=f"sweep {base.model}/{base.arch} x{num}"
            )
        saved = current = start
        try:
            for s in range(start, stop):
                batch = place(data.batch(s))
                t0 = time.perf_counter()
                new, m = step_fn(sweep, batch, factors)
                m = {k: np.asarray(v) for k, v in jax.device_get(m).items()}
                elapsed += time.perf_counter() - t0
                done = s + 1
                was_active = np.asarray(sweep.active)
                frozen = []
                for g in range(num):
                    if not was_active[g]:
                        continue
                    mg = {k: float(v[g]) for k, v in m.items()}
                    reason = book.check(g, mg, done)
                    del mg["params_finite"]
                    if reason is None:
                        log({"kind": "train", "step": done, "time": elapsed, **mg}, g)
                        warning = book.warning(g, mg, done)
                        if warning is not None:
                            log({"kind": "warning", "step": done, "message": warning}, g)
                    else:
                        book.failures[g] = {"step": done, "reason": reason}
                        log({"kind": "failed", "step": done, "reason": reason}, g)
                        frozen.append(g)
                active = new.active
                if frozen:
                    active = active.at[jnp.asarray(frozen)].set(False)
                sweep, current = SweepState(new.state, place(active)), done
                if bar is not None:
                    live = [g for g in range(num) if g not in book.failures]
                    loss = float(np.mean(m["loss"][live])) if live else math.nan
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3g}", failed=len(book.failures), refresh=False)
                if (base.eval_every and done % base.eval_every == 0) or done == base.steps:
                    validate(done)
                if (base.checkpoint_every and done % base.checkpoint_every == 0) or done == stop:
                    save(done)
                    saved = done
        except KeyboardInterrupt:
            if current > saved:  # Ctrl-C keeps the progress made
                save(current)
            raise
        finally:
            if bar is not None:
                bar.close()
    return SweepResult(
        base=base,
        grid=spec,
        settings=settings,
        configs=configs,
        state=_unpad(sweep.state, num),
        failures=dict(sorted(book.failures.items())),
        history=read_metrics(out),
        out_dir=out,
        finished=current == base.steps,
        step_fn=step_fn,
    )


_T = TypeVar("_T")


def _placer(devices: int) -> Callable[[_T], _T]:
    """Put arrays with a leading configuration axis on the devices that train them (split over
    the mesh when ``devices > 1``), so that every step sees the same placement (one trace)."""
    sharding = distributed.batch_sharding(distributed.data_mesh(devices)) if devices > 1 else None

    def place(tree: _T) -> _T:
        if sharding is None or tree is None:
            return tree
        return cast(_T, jax.device_put(tree, sharding))

    return place


def _float_dtype(sweep: SweepState) -> Any:
    return jax.tree.leaves(sweep.state.params.params())[0].dtype


def _ordered_grid(header: dict[str, Any], out: Path) -> dict[str, Any]:
    """The grid in the key order its lanes were expanded in: the checkpoint header's JSON
    sorts its keys, so the order comes from ``grid_order`` or, for older checkpoints, from
    ``sweep.json`` (written in that order)."""
    grid = header["sweep"]["grid"]
    order = header.get("grid_order")
    if order is None and (out / SWEEP).exists():
        order = list(json.loads((out / SWEEP).read_text()).get("grid", {}))
    if order is not None and sorted(order) == sorted(grid):
        grid = {k: grid[k] for k in order}
    return grid


def load_sweep(out_dir: str | os.PathLike) -> SweepResult:
    """Load a sweep written by :func:`train_sweep` (finished or not) from its checkpoint."""
    out = Path(out_dir)
    path = out / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no {CHECKPOINT} in {out}: not a started jaxinv sweep")
    header, _ = read_header(path)
    if "sweep" not in header:
        raise CheckpointError(f"{path} is a single run's checkpoint; load it with load_run")
    base = TrainConfig.from_dict(header["sweep"]["base"])
    grid = _ordered_grid(header, out)
    pairs = expand_grid(base, grid)
    settings, configs = [p[0] for p in pairs], [p[1] for p in pairs]
    lanes = configs + [configs[-1]] * (int(header.get("lanes", len(configs))) - len(configs))
    like = _initial(lanes, settings, len(configs))
    header, sweep = load_checkpoint(path, like)
    book = _Book(len(configs), header.get("book"))
    return SweepResult(
        base=base,
        grid=_check_grid(base, grid),
        settings=settings,
        configs=configs,
        state=_unpad(sweep.state, len(configs)),
        failures=dict(sorted(book.failures.items())),
        history=read_metrics(out),
        out_dir=out,
        finished=bool(header.get("finished")),
    )
