"""What a solve returns: the fixed point and an honest account of how it was reached."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._results import RESULTS


class Stats(eqx.Module):
    """Convergence report of one solve (per sample under ``vmap``).

    Attributes:
        iterations: iterations (forward) or operator applications (adjoint) performed.
        residual: final relative residual (see the solver's documentation for its definition).
        result: how the solve ended, a :class:`RESULTS` code (``int32``).
    """

    iterations: Int[Array, "*batch"]
    residual: Float[Array, "*batch"]
    result: Int[Array, "*batch"]

    @property
    def converged(self) -> Bool[Array, "*batch"]:
        """``residual <= tol`` and every value finite (``result == RESULTS.successful``)."""
        return self.result == RESULTS.successful


class Solution(eqx.Module):
    """Result of :func:`jaxinv.fixed_point`.

    Attributes:
        value: the fixed point ``x*``; differentiable w.r.t. ``params`` and ``y``.
        stats: :class:`Stats` of the forward solve (not differentiated).
    """

    value: PyTree[Array]
    stats: Stats


class BackwardProbe(eqx.Module):
    """Reads the adjoint solve's statistics out of a backward pass.

    A custom VJP cannot return extra outputs, so the adjoint statistics travel as the *gradient*
    of this probe: pass ``probe=BackwardProbe()`` to :func:`jaxinv.fixed_point`, differentiate the
    loss w.r.t. the probe as well, and read ``iterations``, ``residual``, ``converged`` and
    ``result`` from its gradient (as floats; ``converged`` is 1.0 or 0.0, ``result`` the
    :class:`RESULTS` code). Under ``vmap`` with an unbatched probe the gradient sums over the
    batch (iterations summed, converged counted, codes meaningless); vmap the probe too
    (``BackwardProbe.zeros(batch)``) for per-sample statistics.
    """

    iterations: Float[Array, "*batch"]
    residual: Float[Array, "*batch"]
    converged: Float[Array, "*batch"]
    result: Float[Array, "*batch"]

    def __init__(self, iterations=None, residual=None, converged=None, result=None):
        zero = jnp.zeros((), jnp.float32)
        self.iterations = zero if iterations is None else jnp.asarray(iterations)
        self.residual = zero if residual is None else jnp.asarray(residual)
        self.converged = zero if converged is None else jnp.asarray(converged)
        self.result = zero if result is None else jnp.asarray(result)

    @classmethod
    def zeros(cls, batch: int | tuple[int, ...] = ()) -> BackwardProbe:
        """A probe with one entry per sample, to be vmapped along with the data."""
        shape = (batch,) if isinstance(batch, int) else tuple(batch)
        z = jnp.zeros(shape, jnp.float32)
        return cls(z, z, z, z)

    def gradient(self, stats: Stats) -> BackwardProbe:
        """The probe's cotangent that carries ``stats`` (dtypes and shapes of this probe)."""

        def like(value: Array, field: Array) -> Array:
            return value.astype(field.dtype) + jnp.zeros_like(field)

        return BackwardProbe(
            like(stats.iterations, self.iterations),
            like(stats.residual, self.residual),
            like(stats.converged, self.converged),
            like(stats.result, self.result),
        )

    def as_stats(self) -> Stats:
        """Read a probe *gradient* back as :class:`Stats`."""
        return Stats(
            iterations=jnp.round(self.iterations).astype(jnp.int32),
            residual=self.residual,
            result=jnp.round(self.result).astype(jnp.int32),
        )
