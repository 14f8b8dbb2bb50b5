"""How gradients flow through a fixed point: strategy objects for :func:`jaxinv.fixed_point`.

At ``x* = T(x*, θ)`` the implicit function theorem gives ``∇_θ L = (∂_θ T)ᵀ u`` with

    (I − ∂ₓT)ᵀ u = ∇L(x*).

Each strategy owns its whole gradient path through :meth:`AbstractAdjoint.apply`. The implicit
rule (one ``custom_vjp``) is written once, in :class:`AbstractImplicitAdjoint`; its backward pass
calls the strategy's :meth:`~AbstractImplicitAdjoint.backward`: :class:`Implicit` solves the
adjoint system with a linear solver, :class:`JacobianFree` replaces it by ``u = ∇L(x*)``.
:class:`Unrolled` differentiates through the iterations instead (reference only: memory O(K)).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._iterate import Residual, iterate, iterate_fixed
from ._results import RESULTS, raise_if_failed, status
from ._solution import BackwardProbe, Stats
from .solvers import CG, GMRES, AbstractFixedPointSolver, AbstractLinearSolver, Anderson, Picard

#: A map of the flat iterate and the differentiable arguments, ``fn(x, args) -> x``.
ArgsMap = Callable[[Array, Any], Array]

#: The short spellings of :class:`Implicit` and the linear solver each builds.
METHODS: dict[str, type[AbstractLinearSolver]] = {
    "fixed_point": Picard,
    "anderson": Anderson,
    "cg": CG,
    "gmres": GMRES,
}


class AbstractAdjoint(eqx.Module):
    """A gradient strategy: runs the forward solve and defines how it is differentiated."""

    @abc.abstractmethod
    def apply(
        self,
        solver: AbstractFixedPointSolver,
        fn: ArgsMap,
        x0: Array,
        args: Any,
        residual: Residual,
        probe: BackwardProbe,
        throw: bool,
    ) -> tuple[Array, Stats]:
        """Solve ``x = fn(x, args)`` from ``x0`` with ``solver``; return ``x`` (differentiable
        w.r.t. ``args`` as this strategy defines) and the forward :class:`Stats`."""


class AbstractImplicitAdjoint(AbstractAdjoint):
    """The implicit rule: the forward solve is not differentiated; the backward pass maps the
    cotangent ``g`` of ``x*`` to ``u`` (:meth:`backward`) and returns ``(∂_args fn)ᵀ u``.

    The adjoint solve's :class:`Stats` travel as the gradient of the :class:`BackwardProbe`.
    """

    @abc.abstractmethod
    def backward(self, m: Callable[[Array], Array], g: Array, throw: bool) -> tuple[Array, Stats]:
        """``u`` for the cotangent ``g``, given ``m(u) = (∂ₓT)ᵀ u`` at the fixed point; raise at
        run time on failure when ``throw``."""

    def apply(
        self,
        solver: AbstractFixedPointSolver,
        fn: ArgsMap,
        x0: Array,
        args: Any,
        residual: Residual,
        probe: BackwardProbe,
        throw: bool,
    ) -> tuple[Array, Stats]:
        @jax.custom_vjp
        def solve(x0, args, probe):
            return iterate(solver, lambda v: fn(v, args), x0, residual)

        def solve_fwd(x0, args, probe):
            x, stats = solve(x0, args, probe)
            return (x, stats), (x, args, probe)

        def solve_bwd(saved, cotangents):
            x, args, probe = saved
            g = cotangents[0]
            _, vjp_x = jax.vjp(lambda v: fn(v, args), x)
            u, stats = self.backward(lambda v: vjp_x(v)[0], g, throw)
            _, vjp_args = jax.vjp(lambda a: fn(x, a), args)
            (g_args,) = vjp_args(u)
            return jnp.zeros_like(x), g_args, probe.gradient(stats)

        solve.defvjp(solve_fwd, solve_bwd)
        return solve(x0, args, probe)


class Implicit(AbstractImplicitAdjoint):
    """Implicit differentiation: solve ``(I − ∂ₓT)ᵀ u = g`` at the fixed point.

    ``Implicit(linear_solver=CG(tol=1e-6, max_iter=300))`` (the default) names the linear solver
    (any :class:`AbstractLinearSolver`); each stops on the relative residual
    ``‖g − (I − Jᵀ)u‖ / ‖g‖ <= tol`` and counts applications of ``Jᵀ`` (one VJP of ``T`` each):

    - :class:`Picard` (``"fixed_point"``): ``u ← Jᵀu + g`` (the paper's choice; converges when
      ``T`` contracts).
    - :class:`Anderson` (``"anderson"``): the same iteration with Anderson acceleration.
    - :class:`CG` (``"cg"``): valid when ``I − J`` is symmetric positive definite, as for a tied
      map ``x − τ∇E(x)`` with convex ``E`` and ``τ < 2/L`` (bilevel learning).
    - :class:`GMRES` (``"gmres"``): valid for any ``T`` (deep equilibrium models).

    The short spelling ``Implicit(method, tol=1e-6, max_iter=300, restart=20, memory=5)`` builds
    the same object (``Implicit("cg", tol=1e-8) == Implicit(linear_solver=CG(tol=1e-8))``, one
    compiled program for both); ``restart`` is used by ``"gmres"`` only and ``memory`` by
    ``"anderson"`` only.
    """

    linear_solver: AbstractLinearSolver

    def __init__(
        self,
        method: str | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        restart: int | None = None,
        memory: int | None = None,
        *,
        linear_solver: AbstractLinearSolver | None = None,
    ):
        settings = {"tol": tol, "max_iter": max_iter, "restart": restart, "memory": memory}
        if linear_solver is not None:
            given = [k for k, v in {"method": method, **settings}.items() if v is not None]
            if given:
                raise ValueError(
                    f"Implicit: pass either linear_solver or the short spelling, not both (got "
                    f"linear_solver and {given}); put the settings in the solver, e.g. "
                    "Implicit(linear_solver=CG(tol=1e-6, max_iter=300))"
                )
            self.linear_solver = linear_solver
            return
        method = "cg" if method is None else method
        if method not in METHODS:
            raise ValueError(
                f"Implicit: unknown method {method!r}; expected one of {tuple(METHODS)}, or "
                "linear_solver=..."
            )
        kwargs = {
            "tol": 1e-6 if tol is None else tol,
            "max_iter": 300 if max_iter is None else max_iter,
        }
        if method == "gmres" and restart is not None:
            kwargs["restart"] = restart
        if method == "anderson" and memory is not None:
            kwargs["memory"] = memory
        self.linear_solver = METHODS[method](**kwargs)

    def __check_init__(self) -> None:
        if not isinstance(self.linear_solver, AbstractLinearSolver):
            raise TypeError(
                "Implicit: linear_solver must be ji.CG(...), ji.GMRES(...), ji.Picard(...) or "
                f"ji.Anderson(...), got {self.linear_solver!r}"
            )

    @property
    def method(self) -> str:
        """The short name of the linear solver (its class name if it has none)."""
        kind = type(self.linear_solver)
        return next((k for k, v in METHODS.items() if v is kind), kind.__name__)

    def backward(self, m: Callable[[Array], Array], g: Array, throw: bool) -> tuple[Array, Stats]:
        u, stats = self.linear_solver.solve_linear(m, g)
        if throw:
            u = self._raise_if_failed(u, stats)
        return u, stats

    def _raise_if_failed(self, u: Array, stats: Stats) -> Array:
        method = self.method
        sym = (
            " CG needs a symmetric positive definite I − ∂T/∂x (a tied gradient-step map with a "
            "safe step); for untied maps use method='gmres'."
        )
        fixes = {
            RESULTS.max_iterations_reached: "Increase max_iter, try method='gmres', or pass "
            "throw=False." + (sym if method == "cg" else ""),
            RESULTS.stagnated: "Loosen tol, solve in float64, or try method='gmres'.",
            RESULTS.nonpositive_curvature: sym.strip(),
            RESULTS.breakdown: "1 is an eigenvalue of ∂T/∂x at the fixed point, so the gradient "
            "is not defined there: reduce the step so the map contracts.",
            RESULTS.nonfinite: "For an untied (DEQ) map use method='gmres'; otherwise reduce the "
            "step so the map contracts.",
        }
        solver = self.linear_solver
        limit = f"max_iter={solver.max_iter} to tol={solver.tol:g}"
        who = f"the adjoint solve (Implicit(method={method!r}))"
        return raise_if_failed(u, stats.result, who, limit, fixes)


class JacobianFree(AbstractImplicitAdjoint):
    """Jacobian-free backpropagation: ``u = g`` (Fung et al., AAAI 2022).

    Cheap and approximate: exact only when ``∂ₓT = 0``. The reported residual is that of the
    approximation, ``‖Jᵀg‖ / ‖g‖``, so its error is visible; ``converged`` only says it is finite.
    It never raises.
    """

    def backward(self, m: Callable[[Array], Array], g: Array, throw: bool) -> tuple[Array, Stats]:
        gnorm = jnp.linalg.norm(g)
        res = jnp.linalg.norm(m(g)) / jnp.where(gnorm > 0, gnorm, 1)
        result = jnp.where(jnp.isfinite(res), status(RESULTS.successful), status(RESULTS.nonfinite))
        return g, Stats(jnp.zeros((), jnp.int32), res, result)


class Unrolled(AbstractAdjoint):
    """Reverse-mode differentiation through exactly ``solver.max_iter`` iterations.

    For reference and testing: memory grows linearly with the iteration count, and the gradient
    is that of the truncated iteration (equal to the implicit one only at convergence).
    """

    def apply(
        self,
        solver: AbstractFixedPointSolver,
        fn: ArgsMap,
        x0: Array,
        args: Any,
        residual: Residual,
        probe: BackwardProbe,
        throw: bool,
    ) -> tuple[Array, Stats]:
        x, stats = iterate_fixed(solver, lambda v: fn(v, args), x0, residual)
        return x, jax.lax.stop_gradient(stats)
