"""The one loop: drives any :class:`~jaxinv.AbstractFixedPointSolver` by ``init / step /
terminate`` until it terminates or reaches ``max_iter``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._results import RESULTS, status
from ._solution import Stats

if TYPE_CHECKING:  # jaxinv.solvers imports this module: a cycle at run time
    from .solvers import AbstractFixedPointSolver

Map = Callable[[Array], Array]
Residual = Callable[[Array, Array], Array]


def iterate(
    solver: AbstractFixedPointSolver, fn: Map, x0: Array, residual: Residual
) -> tuple[Array, Stats]:
    """Run ``solver`` on ``x = fn(x)`` from ``x0`` in one ``while_loop``, until
    ``solver.terminate`` says so or after ``max_iter`` steps.

    Each step evaluates ``fn`` once and measures ``residual(x, fn(x))`` at the iterate it
    started from; the iterate returned is that step's successor.
    """
    dtype = x0.dtype
    carry0 = (x0, solver.init(fn, x0), jnp.zeros((), jnp.int32), jnp.full((), jnp.inf, dtype))

    def cond(carry: tuple) -> Bool[Array, ""]:
        x, state, k, res = carry
        done, _ = solver.terminate(x, state, res)
        return (k < solver.max_iter) & ~done

    def body(carry: tuple) -> tuple:
        x, state, k, _ = carry
        x_new, state, res = solver.step(fn, x, state, residual)
        return x_new, state, k + 1, res.astype(dtype)

    x, state, k, res = jax.lax.while_loop(cond, body, carry0)
    return x, _stats(solver, x, state, k, res)


def iterate_fixed(
    solver: AbstractFixedPointSolver, fn: Map, x0: Array, residual: Residual
) -> tuple[Array, Stats]:
    """Exactly ``max_iter`` steps in a differentiable ``fori_loop`` (unrolled gradients)."""
    dtype = x0.dtype

    def body(_: Int[Array, ""], carry: tuple) -> tuple:
        x, state, _ = carry
        x_new, state, res = solver.step(fn, x, state, residual)
        return x_new, state, jax.lax.stop_gradient(res).astype(dtype)

    carry0 = (x0, solver.init(fn, x0), jnp.full((), jnp.inf, dtype))
    x, state, res = jax.lax.fori_loop(0, solver.max_iter, body, carry0)
    k = jnp.asarray(solver.max_iter, jnp.int32)
    return x, _stats(solver, jax.lax.stop_gradient(x), state, k, res)


def _stats(
    solver: AbstractFixedPointSolver,
    x: Array,
    state: object,
    k: Int[Array, ""],
    res: Float[Array, ""],
) -> Stats:
    done, result = solver.terminate(x, state, res)
    result = jnp.where(done, result, status(RESULTS.max_iterations_reached))
    finite = jnp.isfinite(res) & jnp.all(jnp.isfinite(x))
    result = jnp.where(finite, result, status(RESULTS.nonfinite))
    return Stats(iterations=k, residual=res, result=result)
