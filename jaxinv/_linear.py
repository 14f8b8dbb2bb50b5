"""Krylov solvers for the adjoint system ``(I − J)ᵀ u = g``, stopped on their true residual.

Both return ``(u, Stats)`` where ``Stats.iterations`` counts applications of the operator and
``Stats.residual`` is the final *true* relative residual ``‖g − A u‖ / ‖g‖`` (recomputed once at
the end, so recurrence drift cannot hide). Written for flat vectors; ``vmap`` gives per-sample
solves.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array

from ._solution import Stats
from ._tree import EXACT

LinearOperator = Callable[[Array], Array]


def _finish(op: LinearOperator, g: Array, u: Array, k: Array, tol: float, ok: Array):
    gnorm = jnp.linalg.norm(g)
    res = jnp.linalg.norm(g - op(u)) / jnp.where(gnorm > 0, gnorm, 1)
    converged = ok & jnp.isfinite(res) & jnp.all(jnp.isfinite(u)) & (res <= tol)
    return u, Stats(iterations=k + 1, residual=res, converged=converged)


def cg(op: LinearOperator, g: Array, *, tol: float, max_iter: int) -> tuple[Array, Stats]:
    """Conjugate gradients for a symmetric positive definite ``op`` (Hestenes & Stiefel, 1952).

    Stops when ``‖r‖ <= tol ‖g‖``, after ``max_iter`` products, or on a non-positive curvature
    ``pᵀAp <= 0`` (then ``op`` is not SPD: the solve reports failure; use GMRES).
    """
    gnorm2 = jnp.vdot(g, g, precision=EXACT)
    stop2 = (tol**2) * gnorm2

    def cond(c):
        _, _, _, rs, k, ok = c
        return ok & (k < max_iter) & (rs > stop2)

    def body(c):
        u, r, p, rs, k, _ = c
        ap = op(p)
        pap = jnp.vdot(p, ap, precision=EXACT)
        ok = pap > 0
        alpha = jnp.where(ok, rs / jnp.where(ok, pap, 1), 0)
        u = u + alpha * p
        r = r - alpha * ap
        rs_new = jnp.vdot(r, r, precision=EXACT)
        p = r + (rs_new / jnp.where(rs > 0, rs, 1)) * p
        return u, r, p, rs_new, k + 1, ok & jnp.isfinite(rs_new)

    init = (jnp.zeros_like(g), g, g, gnorm2, jnp.zeros((), jnp.int32), jnp.array(True))
    u, _, _, _, k, ok = jax.lax.while_loop(cond, body, init)
    return _finish(op, g, u, k, tol, ok)


def gmres(
    op: LinearOperator, g: Array, *, tol: float, max_iter: int, restart: int = 20
) -> tuple[Array, Stats]:
    """Restarted GMRES(``restart``) for any nonsingular ``op`` (Saad & Schultz, 1986).

    Arnoldi with re-orthogonalised classical Gram–Schmidt, Givens rotations for the least-squares
    residual, and a stop on ``‖r‖ <= tol ‖g‖`` checked after *every* product (not per cycle).
    ``max_iter`` counts operator applications in total, across restarts.
    """
    # The Arnoldi basis keeps the vectors' own shape (no flattening: that would make XLA
    # relayout images around every application of the operator).
    axes = g.ndim
    m = min(restart, max_iter)
    dtype = g.dtype
    gnorm = jnp.linalg.norm(g)
    stop = tol * gnorm

    def arnoldi_cycle(u):
        r = g - op(u)
        beta = jnp.linalg.norm(r)
        basis = jnp.zeros((m + 1,) + g.shape, dtype).at[0].set(r / jnp.where(beta > 0, beta, 1))
        hess = jnp.zeros((m + 1, m), dtype)
        cs = jnp.zeros((m,), dtype)
        sn = jnp.zeros((m,), dtype)
        e = jnp.zeros((m + 1,), dtype).at[0].set(beta)
        return basis, hess, cs, sn, e, beta

    def inner_cond(c):
        _, _, _, _, e, j, k, ok = c
        return ok & (j < m) & (k < max_iter) & (jnp.abs(e[j]) > stop)

    def inner_body(c):
        basis, hess, cs, sn, e, j, k, ok = c
        w = op(basis[j])
        mask = (jnp.arange(m + 1) <= j).astype(dtype)
        col = jnp.zeros((m + 1,), dtype)
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

        col = jax.lax.fori_loop(0, m, rotate, col)
        a, b = col[j], col[j + 1]
        denom = jnp.hypot(a, b)
        c_j = jnp.where(denom > 0, a / jnp.where(denom > 0, denom, 1), 1)
        s_j = jnp.where(denom > 0, b / jnp.where(denom > 0, denom, 1), 0)
        col = col.at[j].set(denom).at[j + 1].set(0)
        hess = hess.at[:, j].set(col)
        cs, sn = cs.at[j].set(c_j), sn.at[j].set(s_j)
        e = e.at[j + 1].set(-s_j * e[j]).at[j].set(c_j * e[j])
        ok = jnp.isfinite(e[j + 1]) & (denom > 0)
        return basis, hess, cs, sn, e, j + 1, k + 1, ok

    def outer_cond(c):
        _, k, res, ok = c
        return ok & (k < max_iter) & (res > stop)

    def outer_body(c):
        u, k, _, _ = c
        basis, hess, cs, sn, e, beta = arnoldi_cycle(u)
        k = k + 1  # the residual product at the start of the cycle
        init = (basis, hess, cs, sn, e, jnp.zeros((), jnp.int32), k, jnp.isfinite(beta))
        basis, hess, _, _, e, j, k, ok = jax.lax.while_loop(inner_cond, inner_body, init)
        active = jnp.arange(m) < j
        tri = jnp.where(active[:, None] & active[None, :], hess[:m], 0)
        tri = tri + jnp.diag(jnp.where(active, 0, 1).astype(dtype))
        coef = solve_triangular(tri, jnp.where(active, e[:m], 0), lower=False)
        u = u + jnp.tensordot(coef, basis[:m], axes=1, precision=EXACT)
        return u, k, jnp.abs(e[j]), ok

    init = (jnp.zeros_like(g), jnp.zeros((), jnp.int32), gnorm, jnp.array(True))
    u, k, _, ok = jax.lax.while_loop(outer_cond, outer_body, init)
    return _finish(op, g, u, k, tol, ok | (k > 0))
