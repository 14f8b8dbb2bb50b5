"""Operator norm by power iteration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._tree import EXACT, matmul
from ._base import AbstractOperator

#: Power iterations of :func:`matrix_norm` (deterministic start).
NORM_ITERS = 50


def operator_norm(
    op: AbstractOperator,
    shape: tuple[int, ...],
    *,
    key: PRNGKeyArray | None = None,
    num_iter: int = 100,
    dtype: DTypeLike = jnp.float32,
) -> Float[Array, ""]:
    """Spectral norm ``‖A‖₂ = sqrt(λ_max(AᵀA))`` by power iteration on ``AᵀA``.

    Starts from a normal random ``v₀`` of shape ``shape`` (``key`` defaults to ``PRNGKey(0)``),
    iterates ``v ← AᵀA v / ‖AᵀA v‖`` ``num_iter`` times in a ``lax.fori_loop`` and returns
    ``sqrt(<v, AᵀA v>)`` — a lower bound that converges like ``(λ₂/λ₁)^(2·num_iter)``.
    Jit-friendly (``shape``, ``num_iter`` and ``dtype`` static) and differentiable in the arrays
    of ``op``.
    """
    if int(num_iter) != num_iter or num_iter < 1:
        raise ValueError(f"num_iter must be a positive integer, got {num_iter}")
    if key is None:
        key = jax.random.PRNGKey(0)
    v = jax.random.normal(key, tuple(shape), dtype)
    tiny = jnp.finfo(dtype).tiny

    def unit(u: Array) -> Array:
        return u / jnp.maximum(jnp.linalg.norm(u), tiny)

    v = lax.fori_loop(0, int(num_iter), lambda _, u: unit(op.normal(u)), unit(v))
    vtv = jnp.vdot(v, op.normal(v), precision=EXACT)
    return jnp.sqrt(jnp.maximum(vtv, 0.0))


def matrix_norm(w: Float[Array, "m n"], num_iter: int = NORM_ITERS) -> Float[Array, ""]:
    """``‖W‖₂`` by power iteration on ``WᵀW`` (deterministic start)."""
    v = jax.random.normal(jax.random.PRNGKey(0), (w.shape[1],), w.dtype)

    def body(_, v):
        u = matmul(w.T, matmul(w, v))
        return u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(w.dtype).tiny)

    v = jax.lax.fori_loop(0, int(num_iter), body, v / jnp.linalg.norm(v))
    return jnp.linalg.norm(matmul(w, v))
