"""Multi-filter 2-D correlation of image batches, and its exact adjoint.

``correlate(x, filters)`` maps images ``x`` of shape ``(..., H, W)`` and a filter bank of shape
``(F, k, k)`` to responses ``(..., F, H, W)`` with

    z_f[i, j] = sum_{a, b} filters[f, a, b] * x[i + a - c, j + b - c],   c = k // 2,

where out-of-range pixels wrap around (``boundary="circular"``) or are zero (``"zero"``).
``correlate_adjoint`` is its exact transpose, ``(..., F, H, W) -> (..., H, W)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

BOUNDARIES = ("circular", "zero")


def _check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {BOUNDARIES}")


def _pad(x: Array, k: int, boundary: str) -> Array:
    c = k // 2
    widths = [(0, 0)] * (x.ndim - 2) + [(c, k - 1 - c), (c, k - 1 - c)]
    return jnp.pad(x, widths, mode="wrap" if boundary == "circular" else "constant")


def correlate(
    x: Float[Array, "*batch H W"], filters: Float[Array, "F k k"], boundary: str = "circular"
) -> Float[Array, "*batch F H W"]:
    """Correlate every image with every filter ('same' output size)."""
    _check_boundary(boundary)
    batch = x.shape[:-2]
    h, w = x.shape[-2:]
    k = filters.shape[-1]
    xp = _pad(x.reshape((-1, 1) + x.shape[-2:]), k, boundary)
    z = lax.conv_general_dilated(
        xp, filters[:, None].astype(x.dtype), (1, 1), "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return z.reshape(batch + (filters.shape[0], h, w))


def correlate_adjoint(
    z: Float[Array, "*batch F H W"], filters: Float[Array, "F k k"], boundary: str = "circular"
) -> Float[Array, "*batch H W"]:
    """The exact adjoint of :func:`correlate` (sum over filters of the transposed correlation)."""
    _check_boundary(boundary)
    batch = z.shape[:-3]
    nf, h, w = z.shape[-3:]
    k = filters.shape[-1]
    c = k // 2
    # Adjoint of 'pad then valid-correlate' = 'full-convolve then fold the padding back'.
    zz = z.reshape((-1, nf, h, w))
    full = lax.conv_general_dilated(
        zz, jnp.flip(filters, (-2, -1))[None].astype(z.dtype), (1, 1),
        [(k - 1, k - 1), (k - 1, k - 1)], dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )  # shape (n, 1, h + k - 1, w + k - 1): the adjoint image on the padded grid
    full = full[:, 0]
    lo, hi = c, k - 1 - c
    if boundary == "circular":
        full = _fold_circular(full, lo, hi, axis=-2)
        full = _fold_circular(full, lo, hi, axis=-1)
    else:
        full = full[..., lo : lo + h, lo : lo + w]
    return full.reshape(batch + (h, w))


def _fold_circular(a: Array, lo: int, hi: int, axis: int) -> Array:
    """Adjoint of wrap-padding by (lo, hi) along ``axis``: add the pads back onto the interior."""
    n = a.shape[axis] - lo - hi
    inner = lax.slice_in_dim(a, lo, lo + n, axis=axis)
    if lo:
        left = lax.slice_in_dim(a, 0, lo, axis=axis)
        inner = inner + jnp.pad(left, _widths(a.ndim, axis, n - lo, 0))
    if hi:
        right = lax.slice_in_dim(a, lo + n, lo + n + hi, axis=axis)
        inner = inner + jnp.pad(right, _widths(a.ndim, axis, 0, n - hi))
    return inner


def _widths(ndim: int, axis: int, before: int, after: int) -> list[tuple[int, int]]:
    widths = [(0, 0)] * ndim
    widths[axis] = (before, after)
    return widths
