"""The interface every forward fixed-point solver implements, and the one loop that drives them."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._solution import Stats

Map = Callable[[Array], Array]
Residual = Callable[[Array, Array], Array]


def check_tolerances(name: str, tol: float, max_iter: int) -> None:
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"{name}: max_iter must be a positive integer, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(
            f"{name}: tol must be positive, got {tol!r}; for a fixed number of iterations set "
            "max_iter and a tiny tol (e.g. 1e-30) and solve with throw=False"
        )


class AbstractFixedPointSolver(eqx.Module):
    """A forward solver for ``x = T(x)`` on a flat vector.

    Subclasses hold their hyperparameters as static fields (so a new instance with the same
    settings never recompiles) and implement ``init`` and ``step``; they never write loops: the
    single driver :func:`iterate` runs them in a ``jax.lax.while_loop``.
    """

    tol: eqx.AbstractVar[float]
    max_iter: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init(self, fn: Map, x: Array) -> Any:
        """Solver state before the first step."""

    @abc.abstractmethod
    def step(self, fn: Map, x: Array, state: Any, residual: Residual) -> tuple[Array, Any, Array]:
        """One iteration: evaluate ``fn`` once at ``x``; return the next iterate, the new state
        and ``residual(x, fn(x))``."""


def iterate(
    solver: AbstractFixedPointSolver,
    fn: Map,
    x0: Array,
    residual: Residual,
) -> tuple[Array, Stats]:
    """Run ``solver`` on ``fn`` from ``x0`` until ``residual <= tol``, ``max_iter`` or a non-finite
    residual, whichever comes first, in one ``while_loop``."""
    dtype = x0.dtype
    carry0 = (x0, solver.init(fn, x0), jnp.zeros((), jnp.int32), jnp.full((), jnp.inf, dtype))

    def cond(carry: tuple) -> Bool[Array, ""]:
        _, _, k, res = carry
        return (k < solver.max_iter) & (res > solver.tol)

    def body(carry: tuple) -> tuple:
        x, state, k, _ = carry
        x_new, state, res = solver.step(fn, x, state, residual)
        return x_new, state, k + 1, res.astype(dtype)

    x, _, k, res = jax.lax.while_loop(cond, body, carry0)
    return x, make_stats(k, res, solver.tol, x)


def iterate_fixed(
    solver: AbstractFixedPointSolver, fn: Map, x0: Array, residual: Residual
) -> tuple[Array, Stats]:
    """Exactly ``max_iter`` iterations in a differentiable ``fori_loop`` (unrolled gradients)."""
    dtype = x0.dtype

    def body(_: Int[Array, ""], carry: tuple) -> tuple:
        x, state, _ = carry
        x_new, state, res = solver.step(fn, x, state, residual)
        return x_new, state, jax.lax.stop_gradient(res).astype(dtype)

    carry0 = (x0, solver.init(fn, x0), jnp.full((), jnp.inf, dtype))
    x, _, res = jax.lax.fori_loop(0, solver.max_iter, body, carry0)
    k = jnp.asarray(solver.max_iter, jnp.int32)
    return x, make_stats(k, res, solver.tol, jax.lax.stop_gradient(x))


def make_stats(k: Int[Array, ""], res: Float[Array, ""], tol: float, x: Array) -> Stats:
    finite = jnp.isfinite(res) & jnp.all(jnp.isfinite(x))
    return Stats(iterations=k, residual=res, converged=finite & (res <= tol))
