"""One jitted training step, the optimiser, and batched reconstruction.

The parameters are the model itself (an :class:`jaxinv.models.AbstractModel`): the step
differentiates its parameter leaves (:func:`jaxinv.models.partition`), the optimiser updates the
trainable ones, and ``model.refresh()`` recomputes the derived ones. Everything is compiled with
``eqx.filter_jit``, so equal models (same settings and shapes) share one compilation.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from .. import distributed
from .._fixed_point import fixed_point
from .._solution import BackwardProbe, Solution
from ..metrics import psnr, ssim
from ..models import AbstractModel, apply_model, partition
from ..models._base import _name
from ..solvers import AbstractFixedPointSolver, reconstruction_solver
from ..tasks import Task
from ._config import PenaltyConfig, TrainConfig
from ._penalty import METRIC, jacobian_probes, make_jacobian_penalty


class TrainState(eqx.Module):
    """Everything that changes during training (and is checkpointed).

    Attributes:
        step: optimiser steps taken.
        params: the model (an :class:`jaxinv.models.AbstractModel`; its array fields are the
            parameters).
        opt_state: optax state of the model's parameters (:func:`jaxinv.models.partition`).
        buffer: warm-start buffer ``(num_train, H, W)``: each example's last fixed point
            (``None`` without warm starts).
        seen: ``(num_train,)`` whether ``buffer`` holds a fixed point for the example.
    """

    step: Int[Array, ""]
    params: PyTree
    opt_state: PyTree
    buffer: Float[Array, "n H W"] | None = None
    seen: Array | None = None


def make_schedule(config: TrainConfig) -> optax.Schedule:
    """Learning-rate schedule: cosine or linear decay from ``optim.lr`` to ``optim.lr_final``
    over ``steps``, or constant ``optim.lr`` (:meth:`OptimConfig.make_schedule`)."""
    return config.optim.make_schedule(config.steps)


def make_optimizer(config: TrainConfig, trainable: PyTree) -> optax.GradientTransformation:
    """Adam with :func:`make_schedule` (after optional global-norm clipping) on the trainable
    leaves; frozen leaves (``trainable`` False) get zero updates; the parameters named in
    ``config.optim.lr_scale`` get their updates multiplied by the given factor. With
    ``optim.optimizer="lbfgs"``: full-batch L-BFGS with a zoom line search instead, whose
    ``update`` also takes ``value=`` and ``value_fn=`` (:func:`_lbfgs`).

    ``trainable`` is ``model.trainable()`` (a pytree of bools with the structure of
    ``model.params()``; a dict of them by name works the same), and the optimiser acts on
    ``model.params()``; parameters are named by their top-level field (or key)."""
    optim = config.optim
    if optim.optimizer == "lbfgs":
        return _lbfgs(config, trainable)
    parts = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []
    parts.append(optax.adam(make_schedule(config)))
    labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
    # labels as functions: a model (callable) would otherwise be taken for one
    opt = optax.multi_transform(
        {"train": optax.chain(*parts), "frozen": optax.set_to_zero()}, lambda _: labels
    )
    if not optim.lr_scale:
        return opt
    flags: dict[str, bool] = {}
    for path, t in jax.tree_util.tree_flatten_with_path(trainable)[0]:
        name = _name(path[0])
        flags[name] = flags.get(name, False) or bool(t)
    names = sorted(k for k, t in flags.items() if t)
    unknown = sorted(set(optim.lr_scale) - set(names))
    if unknown:
        raise ValueError(
            f"TrainConfig: optim.lr_scale {unknown} are not trainable parameters of this model; "
            f"choose from {names}"
        )
    # each leaf labelled by its top-level parameter name, or "" where no factor is set
    groups = jax.tree_util.tree_map_with_path(
        lambda path, _: _name(path[0]) if _name(path[0]) in optim.lr_scale else "", trainable
    )
    scales = {name: optax.scale(f) for name, f in optim.lr_scale.items()}
    return optax.chain(
        opt, optax.multi_transform({"": optax.identity(), **scales}, lambda _: groups)
    )


def _lbfgs(config: TrainConfig, trainable: PyTree) -> optax.GradientTransformationExtraArgs:
    """``optax.lbfgs`` with a zoom line search on the trainable leaves only (frozen leaves get
    zero updates and never enter its curvature pairs). ``update`` takes ``value`` (the
    objective at ``params``) and ``value_fn`` (the objective of the whole parameter pytree),
    as optax's line searches do; the gradient is clipped first if ``optim.clip_norm``."""
    optim = config.optim
    inner = optax.lbfgs(
        memory_size=optim.lbfgs_memory,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=optim.linesearch_steps, initial_guess_strategy="one"
        ),
    )
    # optimizer.init sees model.params(); eqx.filter keeps the trainable leaves, None elsewhere
    keep = jax.tree.map(bool, trainable)

    def init(params):
        return inner.init(eqx.filter(params, keep))

    def update(updates, state, params=None, **extra):
        value, value_fn = extra.pop("value"), extra.pop("value_fn")
        train, frozen = eqx.partition(params, keep)
        g = eqx.filter(updates, keep)
        if optim.clip_norm:
            g = optax.clip_by_global_norm(optim.clip_norm).update(g, optax.EmptyState())[0]
        step, state = inner.update(
            g,
            state,
            train,
            value=value,
            grad=g,
            value_fn=lambda p: value_fn(eqx.combine(p, frozen)),
            **extra,
        )
        return eqx.combine(step, jax.tree.map(jnp.zeros_like, frozen)), state

    return optax.GradientTransformationExtraArgs(init, update)


def init_state(model: AbstractModel, config: TrainConfig, num_train: int) -> TrainState:
    """The state before the first step: the model, fresh optimiser state for its parameters,
    and an empty warm-start buffer if ``config.warm_start``."""
    params = model.params()
    optimizer = make_optimizer(config, model.trainable())
    opt_state = optimizer.init(params)  # pyright: ignore[reportArgumentType]  # optax takes pytrees
    buffer = seen = None
    if config.warm_start:
        dtype = jax.tree.leaves(params)[0].dtype
        buffer = jnp.zeros((num_train,) + model.image_shape, dtype)
        seen = jnp.zeros((num_train,), bool)
    return TrainState(jnp.zeros((), jnp.int32), model, opt_state, buffer, seen)


def solve_batch(
    model: AbstractModel,
    y: Float[Array, "B H W"],
    x0: Float[Array, "B H W"],
    *,
    solver: AbstractFixedPointSolver,
    adjoint: Any = None,
    throw: bool = False,
    probes: BackwardProbe | None = None,
) -> Solution:
    """``vmap`` of :func:`jaxinv.fixed_point` of ``model`` over a batch (per-sample
    convergence), differentiable w.r.t. the model's arrays; ``probes``
    (``BackwardProbe.zeros(B)``) collects per-sample adjoint statistics in its gradient."""
    probes = BackwardProbe.zeros(y.shape[0]) if probes is None else probes
    model = model.solve_form()

    def one(x0_, y_, probe):
        return fixed_point(
            apply_model, x0_, model, y_, solver=solver, adjoint=adjoint, throw=throw, probe=probe
        )

    return jax.vmap(one)(x0, y, probes)


def make_loss_fn(config: TrainConfig) -> Callable:
    """``loss(model, probes, batch, x0) -> (mse, solution)``: the mean squared error of the
    batch's fixed points against the ground truth ``batch["x"]``, solved from ``x0``; its
    gradient w.r.t. ``probes`` holds the adjoint statistics (differentiate w.r.t. the model's
    parameters with ``eqx.filter_value_and_grad`` or :func:`jaxinv.models.partition`)."""
    solver, adjoint = config.forward_solver(), config.adjoint_strategy()

    def loss(model, probes, batch, x0):
        sol = solve_batch(
            model,
            batch["y"],
            x0,
            solver=solver,
            adjoint=adjoint,
            throw=config.throw,
            probes=probes,
        )
        return jnp.mean(jnp.square(sol.value - batch["x"])), sol

    return loss


def make_objective(config: TrainConfig) -> Callable:
    """``objective(model, probes, batch, x0, jac_probes) -> (value, (solution, jac))``: the
    step's training objective. Without a Jacobian penalty (``config.penalty.weight == 0``) it is
    :func:`make_loss_fn`'s MSE and ``jac`` is ``{}`` (``jac_probes`` unused); with one it is
    ``mse + w · mean_b P_b`` (:func:`jaxinv.train._penalty.make_jacobian_penalty`, at the
    fixed points held constant) and ``jac`` holds per-example arrays: ``mse`` and ``jac_loss``
    (the batch's values, repeated) and the estimates (``jac_frob`` or ``jac_norm``)."""
    loss_fn = make_loss_fn(config)
    penalty = make_jacobian_penalty(config)
    if penalty is None:

        def mse_only(model, probes, batch, x0, jac_probes=None):
            mse, sol = loss_fn(model, probes, batch, x0)
            return mse, (sol, {})

        return mse_only
    est_name = METRIC[config.penalty.kind]

    def penalised(model, probes, batch, x0, jac_probes):
        mse, sol = loss_fn(model, probes, batch, x0)
        jac, est = penalty(model, jax.lax.stop_gradient(sol.value), batch["y"], jac_probes)
        n = est.shape[0]
        per_example = {"mse": jnp.full(n, mse), "jac_loss": jnp.full(n, jac), est_name: est}
        return mse + jac, (sol, per_example)

    return penalised


#: Traces of the training step per configuration (:func:`_step_key`).
_TRACES: collections.Counter[str] = collections.Counter()

#: Fields the step never reads (they choose the data, the model's initial values and the
#: bookkeeping), reset in its compilation key so that they do not cause a recompile.
_NOT_IN_STEP = {
    "checkpoint_every": 0,
    "eval_every": 0,
    "seed": 0,
    "data.num_val": 1,
    "on_adjoint_failure": "stop",
}


def _step_key(config: TrainConfig) -> str:
    """The configuration the compiled step depends on, as JSON (a static argument)."""
    unused: dict[str, Any] = dict(_NOT_IN_STEP)
    if not config.penalty.enabled:  # the penalty's options are ignored while it is off
        unused["penalty"] = PenaltyConfig()
    return config.replace(**unused).to_json()


class TrainStep:
    """The compiled training step ``step(state, batch) -> (state, metrics)``.

    ``batch`` is ``{"x": (B, H, W), "y": (B, H, W), "ids": (B,) int}`` (``ids`` index the fixed
    training set, used by warm starts). ``metrics`` is a dict of scalars: ``loss``, ``psnr``
    (batch mean), forward ``fwd_iters`` (mean), ``fwd_iters_max``, ``fwd_residual`` (max),
    ``fwd_converged`` (fraction), the same four ``bwd_*`` for the adjoint solve, ``grad_norm``
    (trainable leaves), ``lr`` (used for this step), ``tau``, ``warm`` (fraction of the batch
    warm-started) and ``skipped`` (1 where ``skip_unconverged`` kept the old state). With a
    Jacobian penalty (``config.penalty.weight > 0``) ``loss`` stays the MSE and three more are
    logged: ``jac_loss`` (the weighted penalty added to it) and the estimate's batch mean and
    max, ``jac_frob`` / ``jac_frob_max`` (``‖J‖_F²/n``) or ``jac_norm`` / ``jac_norm_max``
    (``‖J‖₂``); with ``skip_unconverged`` a non-finite penalty also skips the step.

    The step is one ``eqx.filter_jit`` function of the state, the batch and the configuration:
    every :class:`TrainStep` of the same configuration, for any model with the same settings and
    shapes, shares one compilation. ``trace_count`` counts the traces of this configuration's
    step in this process (one unless shapes change); ``loss_fn`` is :func:`make_loss_fn`'s
    function.
    """

    def __init__(self, config: TrainConfig):
        self.config = config
        self.schedule = make_schedule(config)
        self.loss_fn = make_loss_fn(config)
        self._key = _step_key(config)

    @property
    def trace_count(self) -> int:
        """Traces of this configuration's step so far (in this process)."""
        return _TRACES[self._key]

    def optimizer(self, model: AbstractModel) -> optax.GradientTransformation:
        """The optimiser of ``model``'s parameters (:func:`make_optimizer`)."""
        return make_optimizer(self.config, model.trainable())

    def __call__(self, state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict]:
        return _train_step(state, batch, self._key)


@eqx.filter_jit
def _train_step(
    state: TrainState, batch: dict[str, Array], key: str
) -> tuple[TrainState, dict[str, Array]]:
    _TRACES[key] += 1
    return step_body(state, batch, TrainConfig.from_json(key))


def step_body(
    state: TrainState,
    batch: dict[str, Array],
    config: TrainConfig,
    lr_factor: Array | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One training step of one configuration, traceable and not compiled: the body that
    :class:`TrainStep` jits and :func:`jaxinv.train.train_sweep` maps over a grid with ``vmap``.

    ``lr_factor`` (a scalar, possibly traced) multiplies the final update and the logged ``lr``:
    Adam's update ``−lr·s(t)·m̂/(√v̂ + ε)`` is linear in the learning rate, so a factor ``f`` trains
    exactly as the schedule ``f·lr`` would (with ``lr_final`` scaled alike)."""
    model = state.params
    optimizer = make_optimizer(config, model.trainable())
    objective_fn = make_objective(config)
    y = batch["y"]
    params, rest = partition(model)
    dtype = jax.tree.leaves(params)[0].dtype
    batch = {**batch, "x": batch["x"].astype(dtype), "y": y.astype(dtype)}
    x0 = jax.vmap(model.init_x)(batch["y"])
    if state.buffer is not None:
        assert state.seen is not None  # the buffer and its flags exist together
        warm = state.seen[batch["ids"]]
        x0 = jnp.where(warm[:, None, None], state.buffer[batch["ids"]], x0)
    else:
        warm = jnp.zeros(y.shape[0], bool)
    probes = BackwardProbe.zeros(y.shape[0])
    jac_v = None
    if config.penalty.weight:  # drawn here, so every device gets its own examples' probes
        jac_v = jacobian_probes(config, state.step, batch["ids"], model.image_shape, dtype)

    def value_and_grad(split, shard):
        params, rest = split
        probes, b, x0, v = shard

        def objective(p, pr):
            return objective_fn(eqx.combine(p, rest), pr, b, x0, v)

        (value, aux), (grads, gprobe) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            params, probes
        )
        return (value, (*aux, gprobe)), grads

    if config.devices > 1:  # each device solves its slice of the batch; grads are averaged
        value_and_grad = distributed.data_parallel(
            value_and_grad, distributed.data_mesh(config.devices)
        )
    (value, (sol, jac, gprobe)), grads = value_and_grad((params, rest), (probes, batch, x0, jac_v))
    loss = jnp.mean(jac["mse"]) if jac else value
    lbfgs = config.optim.optimizer == "lbfgs"
    extra: dict[str, Any] = {}
    if lbfgs:  # the line search re-solves the same batch from the same starts at trial points
        if lr_factor is not None:
            raise ValueError(
                "optimizer 'lbfgs' has no learning rate to sweep (its line search sets the "
                "step); take 'lr' off the grid or use optimizer='adam'"
            )

        def value_fn(p):
            return objective_fn(eqx.combine(p, rest), probes, batch, x0, jac_v)[0]

        extra = {"value": value, "value_fn": value_fn}
    # optax.Params names arrays and their containers, not every pytree (here an eqx.Module)
    updates, opt_state = optimizer.update(
        grads,
        state.opt_state,
        params,  # pyright: ignore[reportArgumentType]  # optax takes pytrees
        **extra,
    )
    if lr_factor is not None:
        updates = jax.tree.map(lambda u: u * lr_factor.astype(u.dtype), updates)
    updated = optax.apply_updates(params, updates)  # pyright: ignore[reportArgumentType]  # idem
    new_model = cast(AbstractModel, eqx.combine(updated, rest)).refresh()
    fs = sol.stats
    skip = jnp.zeros((), bool)
    if config.skip_unconverged:  # keep the old state: this gradient is not the implicit one
        ok = jnp.all(fs.converged) & jnp.all(gprobe.converged > 0.5) & jnp.isfinite(value)
        skip = ~ok
        new_params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old),
            (new_model.params(), opt_state),
            (params, state.opt_state),
        )
        new_model = eqx.combine(new_params, rest)
    buffer, seen = state.buffer, state.seen
    if buffer is not None:
        assert seen is not None
        buffer = buffer.at[batch["ids"]].set(jax.lax.stop_gradient(sol.value))
        seen = seen.at[batch["ids"]].set(True)
    masked = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, model.trainable())
    metrics = {
        "loss": loss,
        "psnr": jnp.mean(psnr(sol.value, batch["x"], config.data_range)),
        "fwd_iters": jnp.mean(fs.iterations.astype(jnp.float32)),
        "fwd_iters_max": jnp.max(fs.iterations),
        "fwd_residual": jnp.max(fs.residual),
        "fwd_converged": jnp.mean(fs.converged.astype(jnp.float32)),
        "bwd_iters": jnp.mean(gprobe.iterations),
        "bwd_iters_max": jnp.max(gprobe.iterations),
        "bwd_residual": jnp.max(gprobe.residual),
        "bwd_converged": jnp.mean((gprobe.converged > 0.5).astype(jnp.float32)),
        "grad_norm": optax.tree.norm(masked),
        "lr": (
            optax.tree.get(opt_state, "learning_rate")  # the step the line search accepted
            if lbfgs
            else make_schedule(config)(state.step) * (1.0 if lr_factor is None else lr_factor)
        ),
        "tau": model.tau,
        "warm": jnp.mean(warm.astype(jnp.float32)),
        "skipped": skip.astype(jnp.float32),
    }
    if jac:
        est = METRIC[config.penalty.kind]
        metrics.update(
            {
                "jac_loss": jnp.mean(jac["jac_loss"]),
                est: jnp.mean(jac[est]),
                f"{est}_max": jnp.max(jac[est]),
            }
        )
    new = TrainState(state.step + 1, new_model, opt_state, buffer, seen)
    return new, metrics


def make_train_step(model: AbstractModel, task: Task, config: TrainConfig) -> TrainStep:
    """ONE jit-compiled step ``step(state, batch) -> (state, metrics)``: ``vmap`` of
    :func:`jaxinv.fixed_point` over the batch (the map and adjoint of ``config.model``), the MSE
    loss, ``jax.value_and_grad`` w.r.t. the model's parameters with a
    :class:`jaxinv.BackwardProbe` for the adjoint statistics, the optax update and
    ``model.refresh()``. See :class:`TrainStep` for the metrics. ``model`` and ``task`` are
    checked to belong together (the step itself takes the model from ``state.params``)."""
    _check_task(model, task)
    return TrainStep(config)


def _check_task(model: AbstractModel, task: Task) -> None:
    if not isinstance(model, AbstractModel):
        raise ValueError(
            "expected a model built by jaxinv.models (an AbstractModel), got "
            f"{type(model).__name__}; build one with jaxinv.models.build_model"
        )
    if not isinstance(task, Task):
        raise ValueError(f"task must be a jaxinv.tasks.Task, got {type(task).__name__}")
    op = task.operator(model.image_shape)
    if type(op) is not type(model.operator):
        raise ValueError(
            f"the model was built for a {type(model.operator).__name__} operator but the task "
            f"{task.name!r} uses {type(op).__name__}; build the model for this task"
        )


def reconstruct_body(model, y, x0, solver, throw):
    """The fixed points of ``model`` for a batch ``y`` from ``x0`` (``None``: ``Aᵀy``),
    traceable and not compiled (:func:`reconstruct` jits it; sweeps ``vmap`` it over a grid)."""

    def one(x0_, y_):
        return fixed_point(apply_model, x0_, model, y_, solver=solver, throw=throw)

    x0 = jax.vmap(model.init_x)(y) if x0 is None else x0
    return jax.vmap(one)(x0, y)


_reconstruct_jit = eqx.filter_jit(reconstruct_body)


def reconstruct(
    model: AbstractModel,
    task: Task,
    y: Float[ArrayLike, "*B H W"],
    *,
    solver: AbstractFixedPointSolver | None = None,
    x0: Float[ArrayLike, "*B H W"] | None = None,
    throw: bool = False,
) -> Solution:
    """Reconstruct measurements ``y`` (a batch ``(B, H, W)`` or one image ``(H, W)``) as the
    fixed points of ``model``; ``solver`` defaults to ``Anderson(tol=1e-5, max_iter=500)``,
    ``x0`` to ``model.init_x(y)``. Returns a :class:`jaxinv.Solution` with per-sample
    ``stats``; with ``throw=False`` (default) non-convergence is only reported there. Compiled
    once per model structure, solver and shape."""
    _check_task(model, task)
    y = jnp.asarray(y)
    single = y.ndim == 2
    if single:
        y = y[None]
        x0 = None if x0 is None else jnp.asarray(x0)[None]
    if y.ndim != 3 or y.shape[-2:] != model.image_shape:
        raise ValueError(
            f"reconstruct: the model was built for {model.image_shape} images, got y of shape "
            f"{y.shape}; rebuild it for this shape (load_run(..., image_shape=...))"
        )
    dtype = jax.tree.leaves(model.params())[0].dtype
    y = y.astype(dtype)
    x0 = None if x0 is None else jnp.asarray(x0, dtype)
    solver = reconstruction_solver() if solver is None else solver
    sol = _reconstruct_jit(model, y, x0, solver, throw)
    if single:
        return Solution(sol.value[0], jax.tree.map(lambda a: a[0], sol.stats))
    return sol


def evaluate(
    model: AbstractModel,
    task: Task,
    x: Float[Array, "B H W"],
    y: Float[Array, "B H W"],
    *,
    solver: AbstractFixedPointSolver | None = None,
    data_range: float = 1.0,
) -> dict[str, float]:
    """Mean PSNR, SSIM and MSE of the reconstructions of ``y`` against ``x``, with the solves'
    mean and max iterations and the fraction converged."""
    sol = reconstruct(model, task, y, solver=solver)
    x = jnp.asarray(x, sol.value.dtype)
    s = sol.stats
    return {
        "psnr": float(jnp.mean(psnr(sol.value, x, data_range))),
        "ssim": float(jnp.mean(ssim(sol.value, x, data_range))),
        "mse": float(jnp.mean(jnp.square(sol.value - x))),
        "iters": float(np.mean(np.asarray(s.iterations))),
        "iters_max": int(np.max(np.asarray(s.iterations))),
        "converged": float(np.mean(np.asarray(s.converged))),
    }
