"""Anderson acceleration (type II), with relative Tikhonov regularisation and a Picard fallback."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._tree import EXACT
from ._base import AbstractFixedPointSolver, Map, Residual, check_tolerances


class AndersonState(eqx.Module):
    images: Float[Array, "m ..."]  # T(x_i) for the last m iterates
    residuals: Float[Array, "m ..."]  # f_i = T(x_i) − x_i
    gram: Float[Array, "m m"]  # <f_i, f_j>
    count: Int[Array, ""]  # iterations taken so far
    best: Float[Array, ""]  # smallest residual seen since the last restart


class Anderson(AbstractFixedPointSolver):
    """Anderson acceleration of ``x = T(x)`` with memory ``m``.

    Each step evaluates ``T`` once, then mixes the last ``m`` images ``g_i = T(x_i)``:

        α = argmin ‖Σ α_i f_i‖² + λ‖α‖²   subject to  Σ α_i = 1,   f_i = g_i − x_i,
        x⁺ = β Σ α_i g_i + (1 − β) Σ α_i x_i.

    The small bordered system is solved from the Gram matrix of the ``f_i`` with a regularisation
    λ = ``regularization`` · mean diag(Gram) that is *relative* to the residual scale (an absolute
    ridge, as in other libraries, swamps the system once residuals are small and stalls the
    acceleration). If the mixing weights are not finite the step falls back to ``x + β f``, and the
    history is cleared when the residual grows above ``restart`` times the best residual seen, so a
    bad extrapolation cannot derail the iteration.

    Args:
        tol: stop once ``‖T(x) − x‖ / max(‖T(x)‖, 1) <= tol``.
        max_iter: at most this many evaluations of ``T``.
        memory: ``m``, the number of past iterates mixed.
        mixing: β in (0, 1].
        regularization: relative Tikhonov weight; ``None`` picks 1e-10 (float64) or 1e-6 (float32).
        restart: clear the history when the residual exceeds ``restart`` × the best so far.

    Reference: Anderson (1965); Walker & Ni, *Anderson acceleration for fixed-point iterations*,
    SIAM J. Numer. Anal. 49 (2011).
    """

    tol: float = eqx.field(static=True, default=1e-6)
    max_iter: int = eqx.field(static=True, default=300)
    memory: int = eqx.field(static=True, default=5)
    mixing: float = eqx.field(static=True, default=1.0)
    regularization: float | None = eqx.field(static=True, default=None)
    restart: float = eqx.field(static=True, default=1e4)

    def __check_init__(self) -> None:
        check_tolerances("Anderson", self.tol, self.max_iter)
        if not isinstance(self.memory, int) or self.memory < 1:
            raise ValueError(f"Anderson: memory must be a positive integer, got {self.memory!r}")
        if not 0 < self.mixing <= 1:
            raise ValueError(f"Anderson: mixing must lie in (0, 1], got {self.mixing!r}")
        if self.regularization is not None and not self.regularization >= 0:
            raise ValueError("Anderson: regularization must be non-negative")
        if not self.restart > 1:
            raise ValueError(f"Anderson: restart must exceed 1, got {self.restart!r}")

    def init(self, fn: Map, x: Array) -> AndersonState:
        # The history keeps the iterate's own shape: reshaping images to vectors would make XLA
        # relayout them around every convolution of the map.
        m = self.memory
        return AndersonState(
            images=jnp.zeros((m,) + x.shape, x.dtype),
            residuals=jnp.zeros((m,) + x.shape, x.dtype),
            gram=jnp.zeros((m, m), x.dtype),
            count=jnp.zeros((), jnp.int32),
            best=jnp.full((), jnp.inf, x.dtype),
        )

    def step(
        self, fn: Map, x: Array, state: AndersonState, residual: Residual
    ) -> tuple[Array, AndersonState, Array]:
        m, dtype = self.memory, x.dtype
        gx = fn(x)
        f = gx - x
        res = residual(x, gx)

        # Restart: forget the history if the residual blew up relative to the best seen.
        fresh = res > self.restart * state.best
        count = jnp.where(fresh, 0, state.count)
        valid_prev = (jnp.arange(m) < jnp.minimum(count, m)) & ~fresh
        gram = jnp.where(valid_prev[:, None] & valid_prev[None, :], state.gram, 0)

        # Slots outside the valid history keep stale (finite) values: they get weight exactly 0
        # below, so the history is updated in place rather than masked. (On the CPU the
        # overhead over T, about 1.4-1.7x for m = 5, is the Gram row and the mixing: masking,
        # the small solve and elementwise sums instead of tensordots were measured not to help.)
        slot = count % m
        images = state.images.at[slot].set(gx)
        residuals = state.residuals.at[slot].set(f)
        row = jnp.tensordot(residuals, f, axes=f.ndim, precision=EXACT)
        gram = gram.at[slot, :].set(row).at[:, slot].set(row)
        valid = jnp.arange(m) < jnp.minimum(count + 1, m)

        # The weights are treated as constants when differentiating through the iterations
        # (Unrolled): their own derivative is ill-conditioned once the residuals are tiny.
        alpha = jax.lax.stop_gradient(_mixing_weights(gram, valid, self._regularization(dtype)))
        ok = jnp.all(jnp.isfinite(alpha))
        alpha = jnp.where(ok, alpha, 0)
        mixed = jnp.tensordot(alpha, images, axes=1, precision=EXACT)
        if self.mixing != 1.0:
            mixed = mixed - (1 - self.mixing) * jnp.tensordot(
                alpha, residuals, axes=1, precision=EXACT
            )
        x_new = jnp.where(ok, mixed, x + self.mixing * f)

        best = jnp.where(fresh, res, jnp.minimum(state.best, res))
        new_state = AndersonState(images, residuals, gram, count + 1, best)
        return x_new, new_state, res

    def _regularization(self, dtype: jnp.dtype) -> float:
        if self.regularization is not None:
            return self.regularization
        return 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-6


def _mixing_weights(gram: Array, valid: Array, reg: float) -> Array:
    """Solve ``[[0, 1ᵀ], [1, H + λI]] [ν; α] = [1; 0]`` over the valid entries (α = 0 elsewhere)."""
    m = gram.shape[0]
    v = valid.astype(gram.dtype)
    h = gram * (v[:, None] * v[None, :])
    scale = jnp.sum(jnp.diag(h)) / jnp.maximum(jnp.sum(v), 1)
    scale = jnp.where(scale > 0, scale, 1)
    h = h / scale + jnp.diag(jnp.where(valid, reg, 1))
    top = jnp.concatenate([jnp.zeros((1,), gram.dtype), v])
    system = jnp.concatenate([top[None, :], jnp.concatenate([v[:, None], h], axis=1)], axis=0)
    rhs = jnp.zeros((m + 1,), gram.dtype).at[0].set(1)
    return jnp.linalg.solve(system, rhs)[1:]
