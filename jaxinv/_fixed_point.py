"""``fixed_point``: one while-loop solve wrapped in one custom VJP."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from ._adjoint import AbstractAdjoint, Implicit
from ._results import RESULTS, raise_if_failed
from ._solution import BackwardProbe, Solution, Stats
from ._tree import same_structure, tree_norm
from .solvers import AbstractFixedPointSolver, Anderson

Map = Callable[[PyTree, PyTree, PyTree], PyTree]


def fixed_point(
    T: Map,
    x0: PyTree[Array],
    params: PyTree,
    y: PyTree,
    *,
    solver: AbstractFixedPointSolver | None = None,
    adjoint: AbstractAdjoint | None = None,
    throw: bool = True,
    probe: BackwardProbe | None = None,
) -> Solution:
    """Solve ``x = T(x, params, y)`` and differentiate the solution implicitly.

    Args:
        T: the map, ``T(x, params, y) -> x`` over pytrees; a contraction (or averaged operator)
            in ``x`` for the solve and the implicit gradient to be well defined. Arrays it closes
            over that are being differentiated receive their gradients too.
        x0: initial guess (a pytree of floating arrays of one dtype); its gradient is zero.
        params: parameters (any pytree; array leaves are differentiable).
        y: data (any pytree; array leaves are differentiable).
        solver: forward solver, :class:`Anderson` (default) or :class:`Picard`.
        adjoint: gradient strategy, :class:`Implicit` (default ``linear_solver=CG()``),
            :class:`JacobianFree` or :class:`Unrolled`.
        throw: raise at run time (naming the cause and the fix) if the forward or the adjoint solve
            does not converge or produces non-finite values. With ``throw=False`` failures are
            only reported in ``stats`` (and in the probe's gradient).
        probe: a :class:`BackwardProbe`; the gradient w.r.t. it reports the adjoint solve.

    Returns:
        :class:`Solution` with ``value`` (``x*``, same structure as ``x0``) and ``stats``
        (``stats.result`` a :class:`RESULTS` code).

    The forward residual is ``‖T(x) − x‖ / max(‖T(x)‖, 1)`` (relative for images, absolute near
    zero); under ``vmap`` every sample has its own iteration count, residual and flag.
    """
    solver = Anderson() if solver is None else solver
    adjoint = Implicit() if adjoint is None else adjoint
    _validate(T, x0, params, y, solver, adjoint, probe)
    probe = BackwardProbe() if probe is None else probe
    return _fixed_point_jit(T, x0, params, y, solver, adjoint, throw, probe)


@eqx.filter_jit
def _fixed_point_jit(T, x0, params, y, solver, adjoint, throw, probe) -> Solution:
    """The solve itself, compiled once per map, settings and shapes (also when called eagerly)."""
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(x0)):
        # A single array keeps its shape: flattening it would force XLA to relayout the image
        # around every convolution (measured 3.5x slower per iteration on CPU).
        x0_flat, unravel, ravel = x0, _identity, _identity
    else:
        x0_flat, unravel = ravel_pytree(x0)
        ravel = _ravel
    (params_dyn, y_dyn), static = eqx.partition((params, y), eqx.is_array)

    def T_pytree(x, dyn):
        p, yy = eqx.combine(dyn, static)
        return T(x, p, yy)

    # Hoist closed-over arrays that are being differentiated into explicit arguments, so that
    # they receive gradients instead of being silently treated as constants.
    converted, consts = jax.closure_convert(T_pytree, x0, (params_dyn, y_dyn))

    def fn(x_flat: Array, args: tuple) -> Array:
        dyn, cs = args
        return ravel(converted(unravel(x_flat), dyn, *cs))

    def residual(x: Array, fx: Array) -> Array:
        scale = tree_norm(jax.lax.stop_gradient(fx))
        return tree_norm(jax.lax.stop_gradient(fx - x)) / jnp.maximum(scale, 1)

    args = ((params_dyn, y_dyn), tuple(consts))
    x, stats = adjoint.apply(solver, fn, x0_flat, args, residual, probe, throw)
    if throw:
        x = _raise_if_failed(x, stats, solver)
    return Solution(value=unravel(x), stats=stats)


def _identity(x):
    return x


def _ravel(tree):
    return ravel_pytree(tree)[0]


def _raise_if_failed(x: Array, stats: Stats, solver: AbstractFixedPointSolver) -> Array:
    fixes = {
        RESULTS.max_iterations_reached: "Increase max_iter, use Anderson, reduce the step so the "
        "map contracts faster, or pass throw=False and inspect solution.stats.",
        RESULTS.nonfinite: "The map is probably not a contraction: reduce the step (e.g. "
        "ji.energies.safe_step), check the inputs for NaN/inf, or use Picard(relaxation<1).",
    }
    limit = f"max_iter={solver.max_iter} iterations to tol={solver.tol:g}"
    who = f"the forward {type(solver).__name__} solve"
    return raise_if_failed(x, stats.result, who, limit, fixes)


def _validate(T, x0, params, y, solver, adjoint, probe) -> None:
    if not callable(T):
        raise TypeError(f"fixed_point: T must be callable T(x, params, y) -> x, got {type(T)}")
    if not isinstance(solver, AbstractFixedPointSolver):
        raise TypeError(
            f"fixed_point: solver must be ji.Picard(...) or ji.Anderson(...), got {solver!r}"
        )
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            "fixed_point: adjoint must be ji.Implicit(...), ji.JacobianFree() or ji.Unrolled(), "
            f"got {adjoint!r}"
        )
    if probe is not None and not isinstance(probe, BackwardProbe):
        raise TypeError(f"fixed_point: probe must be a ji.BackwardProbe, got {type(probe)}")
    leaves = jax.tree.leaves(x0)
    if not leaves:
        raise ValueError("fixed_point: x0 has no array leaves")
    for leaf in leaves:
        if not isinstance(leaf, (jax.Array, np.ndarray)) and not hasattr(leaf, "dtype"):
            raise ValueError(f"fixed_point: x0 leaves must be arrays, got {type(leaf)}")
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"fixed_point: x0 must be floating point, got dtype {leaf.dtype}")
    dtypes = {jnp.dtype(leaf.dtype) for leaf in leaves}
    if len(dtypes) > 1:
        raise ValueError(
            f"fixed_point: x0 leaves must share one dtype, got {sorted(map(str, dtypes))}"
        )
    try:
        out = jax.eval_shape(T, x0, params, y)
    except Exception as err:  # re-raised with context; the original is chained
        raise ValueError(f"fixed_point: evaluating T(x0, params, y) failed: {err}") from err
    ok, why = same_structure(jax.eval_shape(lambda a: a, x0), out)
    if not ok:
        raise ValueError(
            "fixed_point: T(x0, params, y) must return the same structure, shapes and dtypes as "
            f"x0, but {why}. Check that T returns x (not a tuple) and keeps x0's dtype."
        )
    for name, tree in (("x0", x0), ("y", y), ("params", params)):
        for leaf in jax.tree.leaves(tree):
            if isinstance(leaf, (np.ndarray, jax.Array)) and not isinstance(leaf, Tracer):
                arr = np.asarray(leaf)
                if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                    raise ValueError(
                        f"fixed_point: {name} contains NaN or inf; clean the data first"
                    )
