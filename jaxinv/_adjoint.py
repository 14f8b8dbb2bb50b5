"""How gradients flow through a fixed point: strategy objects for :func:`jaxinv.fixed_point`.

At ``x* = T(x*, θ)`` the implicit function theorem gives ``∇_θ L = (∂_θ T)ᵀ u`` with

    (I − ∂ₓT)ᵀ u = ∇L(x*).

:class:`Implicit` solves this adjoint system; :class:`JacobianFree` replaces it by ``u = ∇L(x*)``;
:class:`Unrolled` differentiates through the iterations instead (reference only: memory O(K)).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from . import _linear
from ._solution import Stats
from .solvers import Anderson, Picard, iterate
from .solvers._base import check_tolerances

METHODS = ("fixed_point", "anderson", "cg", "gmres")


class AbstractAdjoint(eqx.Module):
    """Base of the gradient strategies."""


class Implicit(AbstractAdjoint):
    """Implicit differentiation: solve ``(I − ∂ₓT)ᵀ u = g`` at the fixed point.

    Methods (each stops on the relative residual ``‖g − (I − Jᵀ)u‖ / ‖g‖ <= tol``):

    - ``"fixed_point"``: ``u ← Jᵀu + g`` (the paper's choice; converges when ``T`` contracts).
    - ``"anderson"``: the same iteration with Anderson acceleration (``memory``).
    - ``"cg"``: conjugate gradients; valid when ``I − J`` is symmetric positive definite, as for a
      tied map ``x − τ∇E(x)`` with convex ``E`` and ``τ < 2/L`` (bilevel learning).
    - ``"gmres"``: restarted GMRES(``restart``); valid for any ``T`` (deep equilibrium models).

    ``max_iter`` counts applications of ``Jᵀ`` (one VJP of ``T`` each).
    """

    method: str = eqx.field(static=True, default="cg")
    tol: float = eqx.field(static=True, default=1e-6)
    max_iter: int = eqx.field(static=True, default=300)
    restart: int = eqx.field(static=True, default=20)
    memory: int = eqx.field(static=True, default=5)

    def __check_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Implicit: unknown method {self.method!r}; expected one of {METHODS}")
        check_tolerances("Implicit", self.tol, self.max_iter)
        if not isinstance(self.restart, int) or self.restart < 1:
            raise ValueError(f"Implicit: restart must be a positive integer, got {self.restart!r}")

    def solve(self, vjp_x: Callable[[Array], Array], g: Array) -> tuple[Array, Stats]:
        """Solve ``u − vjp_x(u) = g`` for flat ``g``."""

        def op(u: Array) -> Array:
            return u - vjp_x(u)

        if self.method == "cg":
            return _linear.cg(op, g, tol=self.tol, max_iter=self.max_iter)
        if self.method == "gmres":
            return _linear.gmres(op, g, tol=self.tol, max_iter=self.max_iter, restart=self.restart)
        gnorm = jnp.linalg.norm(g)
        gnorm = jnp.where(gnorm > 0, gnorm, 1)

        def residual(u: Array, fu: Array) -> Array:
            return jnp.linalg.norm(fu - u) / gnorm

        if self.method == "fixed_point":
            solver = Picard(tol=self.tol, max_iter=self.max_iter)
        else:
            solver = Anderson(tol=self.tol, max_iter=self.max_iter, memory=self.memory)
        # The residual is measured at the iterate before the last update; return that iterate's
        # successor, which is at least as accurate for a contraction.
        return iterate(solver, lambda u: vjp_x(u) + g, g, residual)


class JacobianFree(AbstractAdjoint):
    """Jacobian-free backpropagation: ``u = g`` (Fung et al., AAAI 2022).

    Cheap and approximate: exact only when ``∂ₓT = 0``. The reported residual is that of the
    approximation, ``‖Jᵀg‖ / ‖g‖``, so its error is visible; ``converged`` only says it is finite.
    """

    def solve(self, vjp_x: Callable[[Array], Array], g: Array) -> tuple[Array, Stats]:
        gnorm = jnp.linalg.norm(g)
        res = jnp.linalg.norm(vjp_x(g)) / jnp.where(gnorm > 0, gnorm, 1)
        stats = Stats(jnp.zeros((), jnp.int32), res, jnp.isfinite(res))
        return g, stats


class Unrolled(AbstractAdjoint):
    """Reverse-mode differentiation through exactly ``solver.max_iter`` iterations.

    For reference and testing: memory grows linearly with the iteration count, and the gradient
    is that of the truncated iteration (equal to the implicit one only at convergence).
    """
