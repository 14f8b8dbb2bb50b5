"""Smoothed total variation."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._conv import correlate
from ..operators._blur import _check_boundary
from ._common import require_keys

# forward differences x[i, j+1] - x[i, j] and x[i+1, j] - x[i, j] as 3x3 correlation filters
_DIFF = jnp.asarray(
    [
        [[0.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]],
    ]
)


def smoothed_tv(
    x: Float[Array, "*batch H W"], params: dict[str, Any], *, boundary: str = "circular"
) -> Float[Array, ""]:
    """Smoothed isotropic TV ``R(x) = weight · Σ_pixels sqrt((∂₁x)² + (∂₂x)² + ε²)``.

    Forward differences; outside the image ``x`` wraps around (``"circular"``), is zero
    (``"zero"``, so the last column/row differences are ``−x``) or mirrors the image
    (``"reflect"``, ``x[H] = x[H − 1]``, so the last differences are zero: the Neumann
    boundary of the standard discrete TV, which charges no jump across the image edge).
    ``params = {"weight": (), "eps": ()}``, ``eps > 0`` makes ``R`` smooth. Summed over
    leading batch axes.
    """
    require_keys(params, ("weight", "eps"), "smoothed_tv")
    _check_boundary(boundary)
    d = correlate(x, _DIFF, boundary)
    eps = jnp.asarray(params["eps"], d.dtype)
    mag = jnp.sqrt(jnp.sum(jnp.square(d), axis=-3) + jnp.square(eps))
    return params["weight"] * jnp.sum(mag)
