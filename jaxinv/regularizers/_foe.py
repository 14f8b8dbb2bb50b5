"""Fields-of-experts regularizer, its explicit gradient, and filter initialisers."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._conv import correlate, correlate_adjoint
from ..operators._blur import _check_boundary
from ._common import require_keys
from ._potentials import AbstractPotential, get_potential


def _responses(x: Array, params: dict[str, Any], boundary: str, who: str) -> Array:
    """``z_i = k_i * x + b_i`` with the checks shared by the value and the gradient."""
    require_keys(params, ("filters", "weights"), who)
    _check_boundary(boundary)
    filters, weights = params["filters"], params["weights"]
    if filters.ndim != 3 or filters.shape[1] != filters.shape[2]:
        raise ValueError(f"{who}: filters must have shape (F, k, k), got {filters.shape}")
    nf = filters.shape[0]
    if weights.shape != (nf,):
        raise ValueError(
            f"{who}: weights must have shape ({nf},) to match filters, got {weights.shape}"
        )
    z = correlate(x, filters, boundary)
    if "bias" in params:
        if params["bias"].shape != (nf,):
            raise ValueError(f"{who}: bias must have shape ({nf},), got {params['bias'].shape}")
        z = z + params["bias"][:, None, None].astype(z.dtype)
    return z


def fields_of_experts(
    x: Float[Array, "*batch H W"],
    params: dict[str, Any],
    *,
    potential: str | AbstractPotential = "logcosh",
    boundary: str = "circular",
) -> Float[Array, ""]:
    """Fields of experts ``R(x) = Σ_i w_i Σ_pixels ρ((k_i * x) + b_i)``.

    ``k_i * x`` is the correlation of :func:`jaxinv._conv.correlate` (same size, ``boundary``
    ``"circular"``, ``"zero"`` or ``"reflect"``, the half-sample mirror ``x[−1] = x[0]``).
    ``params = {"filters": (F, k, k), "weights": (F,)}`` plus an optional ``"bias": (F,)``
    (absent means 0). Any scale of the potential is absorbed by the filters and weights.
    Summed over leading batch axes, so ``∇R`` is per image.
    """
    pot = get_potential(potential)
    z = _responses(x, params, boundary, "fields_of_experts")
    w = params["weights"].astype(z.dtype)
    return jnp.sum(w[:, None, None] * pot.rho(z))


def fields_of_experts_grad(
    x: Float[Array, "*batch H W"],
    params: dict[str, Any],
    *,
    potential: str | AbstractPotential = "logcosh",
    boundary: str = "circular",
) -> Float[Array, "*batch H W"]:
    """Explicit gradient ``∇R(x) = Σ_i w_i k_iᵀ * ρ'(k_i * x + b_i)``: one correlation and its
    adjoint (:func:`jaxinv._conv.correlate_adjoint`, exact for every boundary; for the reflect
    one it folds the mirrored border back), the fast path for tied maps."""
    pot = get_potential(potential)
    z = _responses(x, params, boundary, "fields_of_experts_grad")
    w = params["weights"].astype(z.dtype)
    return correlate_adjoint(w[:, None, None] * pot.drho(z), params["filters"], boundary)


def init_fields_of_experts(
    key: PRNGKeyArray,
    num_filters: int,
    size: int,
    *,
    scale: float = 1.0,
    weight: float = 1.0,
    bias: bool = False,
    dtype: Any = None,
) -> dict[str, Array]:
    """Random fields-of-experts parameters.

    Filters are i.i.d. normal, made zero-mean (so ``R`` ignores constant images) and scaled to
    ``‖k_i‖₂ = scale``; weights are all ``weight``; ``bias=True`` adds a zero ``"bias"``.
    """
    if num_filters < 1:
        raise ValueError(f"num_filters must be positive, got {num_filters}")
    if size < 2:
        raise ValueError(f"size must be at least 2 for a non-zero zero-mean filter, got {size}")
    dtype = dtype or jnp.asarray(0.0).dtype
    return _init_foe(key, num_filters, size, scale, weight, bias, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 5, 6))
def _init_foe(key, num_filters, size, scale, weight, bias, dtype):
    k = jax.random.normal(key, (num_filters, size, size), dtype)
    k = k - jnp.mean(k, axis=(1, 2), keepdims=True)
    k = scale * k / jnp.linalg.norm(k.reshape(num_filters, -1), axis=1)[:, None, None]
    params = {"filters": k, "weights": jnp.full((num_filters,), weight, dtype)}
    if bias:
        params["bias"] = jnp.zeros((num_filters,), dtype)
    return params


def tv_like_filters(
    order: int = 1, size: int = 11, *, dtype: Any = None
) -> Float[Array, "2 size size"]:
    """The paper's TV-like initialisation: horizontal and vertical differences in ``size × size``.

    ``order=1``: ``[−1, 1]`` at columns (rows) ``c, c+1`` of the centre row (column), so the
    responses are forward differences ``x[i, j+1] − x[i, j]`` and ``x[i+1, j] − x[i, j]``;
    ``order=2``: ``[1, −2, 1]`` at ``c−1, c, c+1``. ``c = size // 2``; ``size ≥ 3``.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if int(size) != size or size < 3:
        raise ValueError(f"size must be an integer of at least 3, got {size}")
    c = size // 2
    h = np.zeros((size, size))
    if order == 1:
        h[c, c], h[c, c + 1] = -1.0, 1.0
    else:
        h[c, c - 1 : c + 2] = (1.0, -2.0, 1.0)
    return jnp.asarray(np.stack([h, h.T]), dtype=dtype)


def dct_filters(size: int, count: int | None = None) -> np.ndarray:
    """The non-constant 2-D DCT-II basis filters ``size × size`` (orthonormal, so zero-mean
    with unit ℓ2 norm), ordered by frequency ``u² + v²`` then ``u``; the first ``count``."""
    i = np.arange(size)
    basis = []
    for u in range(size):
        cu = np.cos(np.pi * (2 * i + 1) * u / (2 * size)) * math.sqrt((1 if u else 0.5) * 2 / size)
        for v in range(size):
            if u == v == 0:
                continue
            cv = np.cos(np.pi * (2 * i + 1) * v / (2 * size)) * math.sqrt(
                (1 if v else 0.5) * 2 / size
            )
            basis.append((u * u + v * v, u, np.outer(cu, cv)))
    basis.sort(key=lambda t: (t[0], t[1]))
    filters = np.stack([b[2] for b in basis])
    return filters if count is None else filters[:count]
