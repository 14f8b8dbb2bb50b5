"""Conjugate gradients for the symmetric positive definite adjoint systems of tied maps."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._results import RESULTS, status
from .._solution import Stats
from .._tree import EXACT
from ._base import AbstractLinearSolver, LinearMap, check_tolerances


class CG(AbstractLinearSolver):
    """Conjugate gradients on ``A u = g``, ``A = I − M`` symmetric positive definite.

    Valid for a tied map ``T = x − τ∇E(x)`` with convex ``E`` and ``τ < 2/L``, where
    ``I − ∂ₓT = τ∇²E`` (bilevel learning). Each iteration applies ``A`` once and stops when
    ``‖r‖ <= tol ‖g‖``; a non-positive curvature ``pᵀAp <= 0`` proves ``A`` is not SPD and
    ends the solve with ``RESULTS.nonpositive_curvature`` (use :class:`GMRES`). The reported
    residual is the *true* ``‖g − A u‖ / ‖g‖``, recomputed once at the end so that recurrence
    drift cannot hide.

    Args:
        tol: relative residual to reach.
        max_iter: at most this many products with ``A``.

    Reference: Hestenes & Stiefel, *Methods of conjugate gradients for solving linear systems*,
    J. Res. Nat. Bur. Standards 49 (1952).
    """

    tol: float = eqx.field(static=True, default=1e-6)
    max_iter: int = eqx.field(static=True, default=300)

    def __check_init__(self) -> None:
        check_tolerances("CG", self.tol, self.max_iter)

    def solve_linear(self, m: LinearMap, g: Array) -> tuple[Array, Stats]:
        def op(u: Array) -> Array:
            return u - m(u)

        gnorm2 = jnp.vdot(g, g, precision=EXACT)
        stop2 = (self.tol**2) * gnorm2
        ok = status(RESULTS.successful)

        def cond(c):
            _, _, _, rs, k, result = c
            return (result == ok) & (k < self.max_iter) & (rs > stop2)

        def body(c):
            u, r, p, rs, k, _ = c
            ap = op(p)
            pap = jnp.vdot(p, ap, precision=EXACT)
            positive = pap > 0
            alpha = jnp.where(positive, rs / jnp.where(positive, pap, 1), 0)
            u = u + alpha * p
            r = r - alpha * ap
            rs_new = jnp.vdot(r, r, precision=EXACT)
            p = r + (rs_new / jnp.where(rs > 0, rs, 1)) * p
            result = jnp.where(positive, ok, status(RESULTS.nonpositive_curvature))
            finite = jnp.isfinite(pap) & jnp.isfinite(rs_new)
            result = jnp.where(finite, result, status(RESULTS.nonfinite))
            return u, r, p, rs_new, k + 1, result

        init = (jnp.zeros_like(g), g, g, gnorm2, jnp.zeros((), jnp.int32), ok)
        u, _, _, _, k, result = jax.lax.while_loop(cond, body, init)
        return u, krylov_stats(op, g, u, k, self.tol, self.max_iter, result)


def krylov_stats(
    op: LinearMap, g: Array, u: Array, k: Array, tol: float, max_iter: int, result: Array
) -> Stats:
    """Stats from the true residual ``‖g − A u‖ / ‖g‖`` (one more product) and the loop's status:
    a loop that ended without failing but short of ``tol`` either ran out of iterations or
    stopped on a recurrence residual that drifted from the true one."""
    gnorm = jnp.linalg.norm(g)
    res = jnp.linalg.norm(g - op(u)) / jnp.where(gnorm > 0, gnorm, 1)
    short = jnp.where(
        k >= max_iter, status(RESULTS.max_iterations_reached), status(RESULTS.stagnated)
    )
    result = jnp.where((result == RESULTS.successful) & ~(res <= tol), short, result)
    finite = jnp.isfinite(res) & jnp.all(jnp.isfinite(u))
    result = jnp.where(finite, result, status(RESULTS.nonfinite))
    return Stats(iterations=k + 1, residual=res, result=result)
