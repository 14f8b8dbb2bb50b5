"""The paper's dense (MNIST) regularizer."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._tree import matmul
from ._common import require_keys
from ._potentials import AbstractPotential, get_potential


def dense(
    x: Float[Array, "*batch H W"],
    params: dict[str, Any],
    *,
    potential: str | AbstractPotential = "logcosh",
) -> Float[Array, ""]:
    """Dense regularizer ``R(x) = γ Σ_j ψ((W vec(x) + b)_j)``, ``ψ`` the potential.

    ``vec`` flattens the last two axes (``d = H·W``); ``params = {"W": (m, d), "b": (m,),
    "gamma": ()}``; ``∇R = γ Wᵀ ψ'(W vec(x) + b)``. Summed over leading batch axes.
    """
    require_keys(params, ("W", "b", "gamma"), "dense")
    pot = get_potential(potential)
    w, b = params["W"], params["b"]
    d = x.shape[-2] * x.shape[-1]
    if w.ndim != 2 or w.shape[1] != d or b.shape != (w.shape[0],):
        raise ValueError(
            f"dense: need W of shape (m, {d}) for {x.shape[-2:]} images and b of shape (m,), got "
            f"W {w.shape}, b {b.shape}"
        )
    z = matmul(x.reshape(x.shape[:-2] + (d,)), w.T) + b
    return params["gamma"] * jnp.sum(pot.rho(z))


def init_dense(
    key: PRNGKeyArray,
    d: int,
    *,
    num_features: int | None = None,
    scale: float = 1.0,
    gamma: float = 1.0,
    bias: float = 0.0,
    dtype: Any = None,
) -> dict[str, Array]:
    """Random dense parameters: ``W`` (m × d, ``m = num_features or d``) i.i.d. normal times
    ``scale / sqrt(d)`` (so ``‖W‖₂ ≈ scale · (1 + sqrt(m/d))``), ``b = bias`` (every entry),
    ``gamma``."""
    if d < 1:
        raise ValueError(f"d must be positive, got {d}")
    dtype = dtype or jnp.asarray(0.0).dtype
    return _init_dense(key, d, num_features or d, scale, gamma, bias, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 6))
def _init_dense(key, d, m, scale, gamma, bias, dtype):
    w = jax.random.normal(key, (m, d), dtype) * (scale / jnp.sqrt(d))
    b = jnp.full((m,), bias, dtype)
    return {"W": w, "b": b, "gamma": jnp.asarray(gamma, dtype)}
