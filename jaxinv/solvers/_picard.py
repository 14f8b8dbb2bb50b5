"""Picard / Krasnosel'skii–Mann iteration."""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array

from ._base import AbstractFixedPointSolver, Map, Residual, check_tolerances


class Picard(AbstractFixedPointSolver):
    """Fixed-point iteration ``x ← (1 − α) x + α T(x)``.

    With ``relaxation`` α = 1 this is plain Picard iteration (linear convergence at the contraction
    rate of ``T``); with 0 < α < 1 it is the Krasnosel'skii–Mann iteration, which also converges for
    merely non-expansive (averaged) maps.

    Args:
        tol: stop once the relative residual ``‖T(x) − x‖ / max(‖T(x)‖, 1)`` is at most ``tol``.
        max_iter: at most this many evaluations of ``T``.
        relaxation: α in (0, 1].

    Reference: Krasnosel'skii (1955), Mann (1953); Bauschke & Combettes, *Convex Analysis and
    Monotone Operator Theory in Hilbert Spaces*, §5.2.
    """

    tol: float = eqx.field(static=True, default=1e-6)
    max_iter: int = eqx.field(static=True, default=1000)
    relaxation: float = eqx.field(static=True, default=1.0)

    def __check_init__(self) -> None:
        check_tolerances("Picard", self.tol, self.max_iter)
        if not 0 < self.relaxation <= 1:
            raise ValueError(f"Picard: relaxation must lie in (0, 1], got {self.relaxation!r}")

    def init(self, fn: Map, x: Array) -> None:
        return None

    def step(self, fn: Map, x: Array, state: None, residual: Residual) -> tuple[Array, None, Array]:
        fx = fn(x)
        res = residual(x, fx)
        x_new = fx if self.relaxation == 1.0 else x + self.relaxation * (fx - x)
        return x_new, None, res
