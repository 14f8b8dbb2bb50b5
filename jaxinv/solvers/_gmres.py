"""Restarted GMRES for the general (non-symmetric) adjoint systems of untied maps."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array

from .._results import RESULTS, status
from .._solution import Stats
from .._tree import EXACT
from ._base import AbstractLinearSolver, LinearMap, check_tolerances
from ._cg import krylov_stats


class GMRES(AbstractLinearSolver):
    """Restarted GMRES(``restart``) on ``A u = g``, ``A = I − M`` any nonsingular operator.

    Valid for any ``T`` (deep equilibrium models). Arnoldi with re-orthogonalised classical
    Gram–Schmidt, Givens rotations for the least-squares residual, and a stop on
    ``‖r‖ <= tol ‖g‖`` checked after *every* product (not per cycle). A zero pivot of the
    rotated Hessenberg matrix means ``A`` is singular on the Krylov space: the solve ends with
    ``RESULTS.breakdown``, keeping the solution from the columns before it. The reported
    residual is the true ``‖g − A u‖ / ‖g‖``, recomputed once at the end.

    Args:
        tol: relative residual to reach.
        max_iter: at most this many products with ``A`` in total, across restarts (each cycle
            spends one on its starting residual).
        restart: Krylov dimension of a cycle.

    Reference: Saad & Schultz, *GMRES: a generalized minimal residual algorithm for solving
    nonsymmetric linear systems*, SIAM J. Sci. Stat. Comput. 7 (1986).
    """

    tol: float = eqx.field(static=True, default=1e-6)
    max_iter: int = eqx.field(static=True, default=300)
    restart: int = eqx.field(static=True, default=20)

    def __check_init__(self) -> None:
        check_tolerances("GMRES", self.tol, self.max_iter)
        if not isinstance(self.restart, int) or isinstance(self.restart, bool) or self.restart < 1:
            raise ValueError(f"GMRES: restart must be a positive integer, got {self.restart!r}")

    def solve_linear(self, m: LinearMap, g: Array) -> tuple[Array, Stats]:
        def op(u: Array) -> Array:
            return u - m(u)

        # The Arnoldi basis keeps the vectors' own shape (no flattening: that would make XLA
        # relayout images around every application of the operator).
        axes = g.ndim
        max_iter = self.max_iter
        size = min(self.restart, max_iter)
        dtype = g.dtype
        gnorm = jnp.linalg.norm(g)
        stop = self.tol * gnorm
        ok = status(RESULTS.successful)

        def arnoldi_cycle(u):
            r = g - op(u)
            beta = jnp.linalg.norm(r)
            first = r / jnp.where(beta > 0, beta, 1)
            basis = jnp.zeros((size + 1,) + g.shape, dtype).at[0].set(first)
            hess = jnp.zeros((size + 1, size), dtype)
            cs = jnp.zeros((size,), dtype)
            sn = jnp.zeros((size,), dtype)
            e = jnp.zeros((size + 1,), dtype).at[0].set(beta)
            return basis, hess, cs, sn, e, beta

        def inner_cond(c):
            _, _, _, _, e, j, k, result = c
            return (result == ok) & (j < size) & (k < max_iter) & (jnp.abs(e[j]) > stop)

        def inner_body(c):
            basis, hess, cs, sn, e, j, k, _ = c
            w = op(basis[j])
            mask = (jnp.arange(size + 1) <= j).astype(dtype)
            col = jnp.zeros((size + 1,), dtype)
            for _ in range(2):  # CGS2: two passes keep the basis orthogonal to working precision
                h = jnp.tensordot(basis, w, axes=axes, precision=EXACT) * mask
                w = w - jnp.tensordot(h, basis, axes=1, precision=EXACT)
                col = col + h
            hnext = jnp.linalg.norm(w)
            basis = basis.at[j + 1].set(w / jnp.where(hnext > 0, hnext, 1))
            col = col.at[j + 1].set(hnext)

            def rotate(i, col):
                a, b = col[i], col[i + 1]
                keep = i < j
                new_a = jnp.where(keep, cs[i] * a + sn[i] * b, a)
                new_b = jnp.where(keep, -sn[i] * a + cs[i] * b, b)
                return col.at[i].set(new_a).at[i + 1].set(new_b)

            col = jax.lax.fori_loop(0, size, rotate, col)
            a, b = col[j], col[j + 1]
            denom = jnp.hypot(a, b)
            c_j = jnp.where(denom > 0, a / jnp.where(denom > 0, denom, 1), 1)
            s_j = jnp.where(denom > 0, b / jnp.where(denom > 0, denom, 1), 0)
            col = col.at[j].set(denom).at[j + 1].set(0)
            hess = hess.at[:, j].set(col)
            cs, sn = cs.at[j].set(c_j), sn.at[j].set(s_j)
            e = e.at[j + 1].set(-s_j * e[j]).at[j].set(c_j * e[j])
            # A zero pivot: column j is left out of the least-squares solve (the cycle keeps the
            # solution of the first j columns), and the solve reports the breakdown.
            broken = denom == 0
            result = jnp.where(broken, status(RESULTS.breakdown), ok)
            finite = jnp.isfinite(denom) & jnp.isfinite(e[j + 1])
            result = jnp.where(finite, result, status(RESULTS.nonfinite))
            return basis, hess, cs, sn, e, jnp.where(broken, j, j + 1), k + 1, result

        def outer_cond(c):
            _, k, res, result = c
            return (result == ok) & (k < max_iter) & (res > stop)

        def outer_body(c):
            u, k, _, _ = c
            basis, hess, cs, sn, e, beta = arnoldi_cycle(u)
            k = k + 1  # the residual product at the start of the cycle
            result = jnp.where(jnp.isfinite(beta), ok, status(RESULTS.nonfinite))
            init = (basis, hess, cs, sn, e, jnp.zeros((), jnp.int32), k, result)
            basis, hess, _, _, e, j, k, result = jax.lax.while_loop(inner_cond, inner_body, init)
            active = jnp.arange(size) < j
            tri = jnp.where(active[:, None] & active[None, :], hess[:size], 0)
            tri = tri + jnp.diag(jnp.where(active, 0, 1).astype(dtype))
            coef = solve_triangular(tri, jnp.where(active, e[:size], 0), lower=False)
            u = u + jnp.tensordot(coef, basis[:size], axes=1, precision=EXACT)
            return u, k, jnp.abs(e[j]), result

        init = (jnp.zeros_like(g), jnp.zeros((), jnp.int32), gnorm, ok)
        u, k, _, result = jax.lax.while_loop(outer_cond, outer_body, init)
        return u, krylov_stats(op, g, u, k, self.tol, max_iter, result)
