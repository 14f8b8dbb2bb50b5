"""The interfaces every solver implements: linear solvers for ``(I − M) u = g`` and forward
fixed-point solvers for ``x = T(x)`` (which solve the linear systems too, as ``u ← M u + g``)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._iterate import Map, Residual, iterate
from .._results import RESULTS, status
from .._solution import Stats

LinearMap = Callable[[Array], Array]


def check_tolerances(name: str, tol: float, max_iter: int) -> None:
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"{name}: max_iter must be a positive integer, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(
            f"{name}: tol must be positive, got {tol!r}; for a fixed number of iterations set "
            "max_iter and a tiny tol (e.g. 1e-30) and solve with throw=False"
        )


class AbstractLinearSolver(eqx.Module):
    """A solver for ``(I − M) u = g`` given only the product ``u ↦ M u``.

    These are the systems of implicit differentiation, ``M = (∂ₓT)ᵀ`` at the fixed point. Each
    stops on the relative residual ``‖g − (I − M) u‖ / ‖g‖ <= tol`` and counts applications of
    ``M`` in ``Stats.iterations``. Hyperparameters are static fields, so a new instance with the
    same settings never recompiles.
    """

    tol: eqx.AbstractVar[float]
    max_iter: eqx.AbstractVar[int]

    @abc.abstractmethod
    def solve_linear(self, m: LinearMap, g: Array) -> tuple[Array, Stats]:
        """Solve ``u − m(u) = g``; return ``u`` and its :class:`Stats`."""


class AbstractFixedPointSolver(AbstractLinearSolver):
    """A forward solver for ``x = T(x)``: ``init``, ``step`` and ``terminate``.

    Solvers never write loops: the single driver :func:`jaxinv._iterate.iterate` runs them in a
    ``jax.lax.while_loop``. Applied to the affine map ``u ↦ M u + g`` the same solver solves the
    linear system ``(I − M) u = g`` (:meth:`solve_linear`; Picard's is Richardson iteration).
    """

    @abc.abstractmethod
    def init(self, fn: Map, x: Array) -> Any:
        """Solver state before the first step."""

    @abc.abstractmethod
    def step(self, fn: Map, x: Array, state: Any, residual: Residual) -> tuple[Array, Any, Array]:
        """One iteration: evaluate ``fn`` once at ``x``; return the next iterate, the new state
        and ``residual(x, fn(x))``."""

    def terminate(
        self, x: Array, state: Any, residual: Float[Array, ""]
    ) -> tuple[Bool[Array, ""], Int[Array, ""]]:
        """Whether to stop after a step that measured ``residual``, and with which status:
        once ``residual <= tol`` (successful) or it is NaN (non-finite)."""
        done = ~(residual > self.tol)
        result = jnp.where(
            jnp.isnan(residual), status(RESULTS.nonfinite), status(RESULTS.successful)
        )
        return done, result

    def solve_linear(self, m: LinearMap, g: Array) -> tuple[Array, Stats]:
        """Iterate ``u ← m(u) + g`` from ``u = g``; the residual ``‖m(u) + g − u‖ / ‖g‖`` is the
        true relative residual of ``(I − M) u = g``, measured at the iterate before the last
        update (whose successor, returned, is at least as accurate for a contraction)."""
        gnorm = jnp.linalg.norm(g)
        gnorm = jnp.where(gnorm > 0, gnorm, 1)

        def residual(u: Array, fu: Array) -> Array:
            return jnp.linalg.norm(fu - u) / gnorm

        return iterate(self, lambda u: m(u) + g, g, residual)
