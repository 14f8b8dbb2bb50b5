"""What a solve returns: the fixed point and an honest account of how it was reached."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree


class Stats(eqx.Module):
    """Convergence report of one solve (per sample under ``vmap``).

    Attributes:
        iterations: iterations (forward) or operator applications (adjoint) performed.
        residual: final relative residual (see the solver's documentation for its definition).
        converged: ``residual <= tol`` and every value finite.
    """

    iterations: Int[Array, "*batch"]
    residual: Float[Array, "*batch"]
    converged: Bool[Array, "*batch"]


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
    loss w.r.t. the probe as well, and read ``iterations``, ``residual`` and ``converged`` from its
    gradient (as floats; ``converged`` is 1.0 or 0.0). Under ``vmap`` with an unbatched probe the
    gradient sums over the batch (iterations summed, converged counted); vmap the probe too
    (``BackwardProbe.zeros(batch)``) for per-sample statistics.
    """

    iterations: Float[Array, "*batch"]
    residual: Float[Array, "*batch"]
    converged: Float[Array, "*batch"]

    def __init__(self, iterations=None, residual=None, converged=None):
        zero = jnp.zeros((), jnp.float32)
        self.iterations = zero if iterations is None else jnp.asarray(iterations)
        self.residual = zero if residual is None else jnp.asarray(residual)
        self.converged = zero if converged is None else jnp.asarray(converged)

    @classmethod
    def zeros(cls, batch: int | tuple[int, ...] = ()) -> BackwardProbe:
        """A probe with one entry per sample, to be vmapped along with the data."""
        shape = (batch,) if isinstance(batch, int) else tuple(batch)
        z = jnp.zeros(shape, jnp.float32)
        return cls(z, z, z)

    def as_stats(self) -> Stats:
        """Read a probe *gradient* back as :class:`Stats`."""
        return Stats(
            iterations=jnp.round(self.iterations).astype(jnp.int32),
            residual=self.residual,
            converged=self.converged > 0.5,
        )
