"""Smoothed total variation: the variational baseline."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._conv import BOUNDARIES
from ..regularizers import smoothed_tv
from ._base import AbstractModel, Architecture, _check_common, _choose, _float, _stop, refreshed


class TVModel(AbstractModel):
    """``T(x; y) = x − τ (λ Aᵀ(Ax − y) + weight ∇ Σ sqrt(|∇x|² + ε²))``. Built by :class:`TV`.

    Attributes:
        lam: λ = 1; tau: the step τ (derived); weight: the TV weight (the one parameter);
        eps: ε (fixed); boundary: the finite differences' boundary.
    """

    lam: Float[Array, ""]
    tau: Float[Array, ""]
    weight: Float[Array, ""]
    eps: Float[Array, ""]
    boundary: str = eqx.field(static=True, default="circular")

    def frozen(self) -> tuple[str, ...]:
        return ("lam", "tau", "eps")

    def learned(self) -> str:
        return "one weight (tuned by tune_tv)"

    def __call__(self, x: Float[Array, "H W"], y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        boundary = self.boundary
        grad_tv = jax.grad(
            lambda x, w, e: smoothed_tv(x, {"weight": w, "eps": e}, boundary=boundary)
        )
        op = self.operator
        g = self.lam * op.adjoint(op(x) - y) + grad_tv(x, self.weight, self.eps)
        return x - self.tau * g

    def refresh(self) -> TVModel:
        """``τ = 1/(λ‖A‖² + 8·weight/ε)``."""
        q = _stop(self)
        tau = 1.0 / (q.lam * self.op_norm**2 + 8.0 * jnp.abs(q.weight) / q.eps)
        return eqx.tree_at(lambda m: m.tau, self, jax.lax.stop_gradient(tau).astype(self.tau.dtype))

    def with_weight(self, weight: Float[Array, ""] | float) -> TVModel:
        """This model with another ``weight`` (τ refreshed)."""
        return eqx.tree_at(
            lambda m: m.weight, self, jnp.asarray(weight, self.weight.dtype)
        ).refresh()


@dataclasses.dataclass(frozen=True)
class TV(Architecture):
    """Smoothed TV ``E(x) = λ/2‖Ax − y‖² + weight Σ sqrt(|∇x|² + ε²)``, ``λ = 1``; builds a
    :class:`TVModel`.

    The one parameter ``weight`` is tuned on a validation set by :func:`jaxinv.tuning.tune_tv`
    (a 1-D search), not trained by gradients (it is still an array leaf, marked trainable).
    ``tau`` is derived: ``τ = 1/(λ‖A‖² + 8·weight/ε)`` (``‖∇‖² ≤ 8``, ``sqrt`` has curvature
    ≤ 1/ε), so the map contracts. Tied only.
    """

    name: ClassVar[str] = "tv"
    untied_ok: ClassVar[bool] = False
    weight: float = 0.05
    eps: float = 0.02
    boundary: str = "circular"

    def __post_init__(self) -> None:
        _choose("boundary", self.boundary, BOUNDARIES)
        if not (self.weight > 0 and self.eps > 0):
            raise ValueError("tv: weight and eps must be positive")

    def build(self, key, task, image_shape, tied=True) -> TVModel:
        shape = _check_common(self.name, task, image_shape)
        if not tied:
            raise ValueError(
                "tv: smoothed TV is a variational baseline; it has no untied (DEQ) map"
            )
        model = TVModel(
            **self.common_fields(task, shape, True),
            lam=_float(1.0),
            tau=_float(1.0),
            weight=_float(self.weight),
            eps=_float(self.eps),
            boundary=self.boundary,
        )
        return refreshed(model)
