"""The Jacobian penalty of the training loss: keep the map contractive at its fixed points.

An untied (DEQ) map ``T(x; θ, y)`` is not a gradient step, so nothing keeps ``‖∂T/∂x‖`` below 1
while it trains; once an eigenvalue of ``J = ∂T/∂x(x*)`` leaves the unit disc the solves diverge.
With ``TrainConfig.penalty.weight = w > 0`` the step minimises

    mse(x*(θ)) + w · mean_batch P(J(x*; θ)),      x* held constant in P,

with ``P = ‖J‖_F² / n`` (``penalty.kind="frobenius"``, Hutchinson's estimate) or
``P = relu(σ̂ − target)²`` with ``σ̂ ≈ ‖J‖₂`` by power iteration (``"spectral"``); see
:mod:`jaxinv._jacobian`. The probes are Gaussian, drawn from ``(step, example id)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

from .._jacobian import frobenius_sq, spectral_norm
from ..models import AbstractModel
from ._config import TrainConfig

#: Base key of the probes (independent of the data's keys, which derive from ``seed``).
_PROBE_KEY = 0x1AC

#: The metric each kind logs: the per-example estimate, averaged over the batch.
METRIC = {"frobenius": "jac_frob", "spectral": "jac_norm"}

Penalty = Callable[..., tuple[Array, Array]]


def jacobian_probes(
    config: TrainConfig,
    step: Int[Array, ""],
    ids: Int[Array, " B"],
    image_shape: tuple[int, int],
    dtype: DTypeLike,
) -> Float[Array, "B k H W"]:
    """Standard Gaussian probes ``(B, penalty.probes, H, W)``: example ``ids[b]`` at step ``step``
    gets ``normal(fold_in(fold_in(key, step), ids[b]))``, the same whatever the batch order or
    the number of devices, and again when a run is resumed."""
    key = jax.random.fold_in(jax.random.PRNGKey(_PROBE_KEY), step)
    shape = (config.penalty.probes, *image_shape)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, dtype))(ids)


def make_jacobian_penalty(config: TrainConfig) -> Penalty | None:
    """``penalty(model, x_star, y, probes) -> (w · mean_b P_b, estimates)`` for
    ``config.penalty.weight = w > 0`` (``None`` when it is 0): ``x_star`` and ``y`` are
    ``(B, H, W)``, ``probes`` from :func:`jacobian_probes`, ``estimates`` the per-example
    ``‖J‖_F²/n`` (frobenius) or ``σ̂`` (spectral), differentiable w.r.t. the model's arrays."""
    if not config.penalty.weight:
        return None
    weight, kind = config.penalty.weight, config.penalty.kind
    target, iters = config.penalty.target, config.penalty.iters

    def one(model: AbstractModel, x: Array, y: Array, v: Array) -> tuple[Array, Array]:
        def fn(z: Array, m: AbstractModel) -> Array:
            return m(z, y)

        if kind == "frobenius":
            est = frobenius_sq(fn, x, model, v)
            return est, est
        est = spectral_norm(fn, x, model, v, iters)
        return jnp.square(jax.nn.relu(est - target)), est

    def penalty(model, x_star, y, probes):
        per, est = jax.vmap(one, in_axes=(None, 0, 0, 0))(model.solve_form(), x_star, y, probes)
        return weight * jnp.mean(per), est

    return penalty
