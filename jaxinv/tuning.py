"""Tuning the smoothed-TV baseline: a 1-D search of its weight on validation images."""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._fixed_point import fixed_point
from .metrics import psnr
from .models import TV, TVModel, apply_model
from .solvers import AbstractFixedPointSolver, reconstruction_solver
from .tasks import Task


@dataclasses.dataclass(frozen=True)
class TVTuning:
    """Result of :func:`tune_tv`: the best ``weight``, its mean ``psnr``, the tuned ``model`` (a
    :class:`jaxinv.models.TVModel`) and every ``(weight, psnr)`` trial in the order evaluated;
    ``input_psnr`` is the PSNR of the measurements ``y`` (the degraded input)."""

    weight: float
    psnr: float
    model: TVModel
    trials: list[tuple[float, float]]
    input_psnr: float


@eqx.filter_jit
def with_weight(model: TVModel, weight: Float[Array, ""] | float) -> TVModel:
    """``model`` with another TV ``weight`` and its step refreshed (compiled once)."""
    return model.with_weight(weight)


@eqx.filter_jit
def _score(model, log_w, y, images, solver, data_range):
    m = model.with_weight(jnp.exp(log_w))

    def one(yy):
        return fixed_point(apply_model, m.init_x(yy), m, yy, solver=solver, throw=False).value

    return jnp.mean(psnr(jax.vmap(one)(y), images, data_range))


def tune_tv(
    task: Task,
    images: Float[ArrayLike, "n H W"],
    *,
    key: PRNGKeyArray | int = 0,
    y: Float[ArrayLike, "n H W"] | None = None,
    weight_range: tuple[float, float] = (1e-3, 1.0),
    grid: int = 7,
    refine: int = 6,
    eps: float = 0.02,
    data_range: float = 1.0,
    solver: AbstractFixedPointSolver | None = None,
) -> TVTuning:
    """Tune the smoothed-TV weight on clean ``images`` ``(n, H, W)`` by maximising mean PSNR.

    The measurements are ``task.degrade(images, key)`` (or ``y`` if given). The search is 1-D in
    ``log(weight)``: a ``grid`` of log-spaced weights over ``weight_range``, then ``refine``
    golden-section steps in the bracket around the best grid point. The weight is an array leaf,
    so all trials share one compiled solve. ``solver`` defaults to ``Anderson(tol=1e-5,
    max_iter=500)``; unconverged solves are used as they are.
    """
    images = jnp.asarray(images, dtype=jnp.result_type(float))
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"tune_tv: images must be (n, H, W), got {images.shape}")
    lo, hi = weight_range
    if not 0 < lo < hi:
        raise ValueError(f"tune_tv: need 0 < weight_range[0] < weight_range[1], got {weight_range}")
    if grid < 3:
        raise ValueError("tune_tv: grid must be at least 3")
    y = task.degrade(images, key) if y is None else jnp.asarray(y, images.dtype)
    model = TV(eps=eps).build(jax.random.PRNGKey(0), task, images.shape[-2:])
    solver = reconstruction_solver() if solver is None else solver

    cache: dict[float, float] = {}

    def f(t: float) -> float:
        if t not in cache:
            log_w = jnp.asarray(t, images.dtype)
            cache[t] = float(_score(model, log_w, y, images, solver, data_range))
        return cache[t]

    ts = np.linspace(math.log(lo), math.log(hi), grid)
    vals = [f(float(t)) for t in ts]
    i = int(np.nanargmax(vals))
    a, b = float(ts[max(i - 1, 0)]), float(ts[min(i + 1, grid - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(refine):
        if f(c) >= f(d):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    best_t = max(cache, key=lambda t: cache[t] if np.isfinite(cache[t]) else -np.inf)
    best_w = math.exp(best_t)
    tuned = with_weight(model, jnp.asarray(best_w, images.dtype))
    x_in = y if y.shape == images.shape else jax.vmap(model.init_x)(y)  # the measurements
    return TVTuning(
        weight=best_w,
        psnr=cache[best_t],
        model=tuned,
        trials=[(math.exp(t), v) for t, v in cache.items()],
        input_psnr=float(jnp.mean(psnr(x_in, images, data_range))),
    )
