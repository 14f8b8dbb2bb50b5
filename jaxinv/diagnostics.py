"""Diagnostics of built models."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .models import AbstractModel


@eqx.filter_jit
def _ratios(model, y, x1, x2):
    n = x1.shape[0]
    tx = jax.vmap(lambda x: model(x, y))(jnp.concatenate([x1, x2]))
    num = jnp.linalg.norm((tx[:n] - tx[n:]).reshape(n, -1), axis=1)
    den = jnp.linalg.norm((x1 - x2).reshape(n, -1), axis=1)
    return num / den


def empirical_lipschitz(
    model: AbstractModel,
    y: Float[Array, "H W"],
    *,
    key: PRNGKeyArray | int = 0,
    num_pairs: int = 8,
    spread: float = 0.1,
) -> float:
    """``max ‖T(x₁) − T(x₂)‖ / ‖x₁ − x₂‖`` over random pairs around ``model.init_x(y)`` (a lower
    estimate of the map's Lipschitz constant; below 1 on a contraction)."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    y = jnp.asarray(y)
    base = model.init_x(y)
    k1, k2 = jax.random.split(key)
    shape = (num_pairs,) + base.shape
    x1 = base + spread * jax.random.normal(k1, shape, base.dtype)
    x2 = x1 + spread * 0.1 * jax.random.normal(k2, shape, base.dtype)
    return float(jnp.max(_ratios(model, y, x1, x2)))
