"""A filter bank as an operator: the ``W`` of a convolutional regularizer."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._conv import correlate, correlate_adjoint
from ._base import AbstractOperator
from ._blur import _check_boundary


class FilterBank(AbstractOperator):
    """Correlation with ``F`` filters: ``(..., H, W) -> (..., F, H, W)``, ``z_f = k_f * x``.

    Uses :func:`jaxinv._conv.correlate` (its centring and boundary conventions); the adjoint is
    ``Σ_f k_fᵀ * z_f``. Use it with :func:`operator_norm` to get ``‖W‖`` for the paper's
    normalised convolutional maps.
    """

    filters: Float[Array, "F k k"]
    boundary: str = eqx.field(static=True)

    def __init__(self, filters: ArrayLike, boundary: str = "circular"):
        f = jnp.asarray(filters)
        if f.ndim != 3 or f.shape[1] != f.shape[2]:
            raise ValueError(
                f"filters must have shape (F, k, k), got {f.shape}; add a leading axis for a "
                "single filter"
            )
        self.filters = f
        self.boundary = _check_boundary(boundary)

    def __call__(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch F H W"]:
        """Filter responses ``k_f * x`` for every filter."""
        return correlate(x, self.filters, self.boundary)

    def adjoint(self, z: Float[Array, "*batch F H W"]) -> Float[Array, "*batch H W"]:
        """``Σ_f k_fᵀ * z_f``."""
        return correlate_adjoint(z, self.filters, self.boundary)

    def shape_out(self, shape_in: tuple[int, ...]) -> tuple[int, ...]:
        """``(..., H, W) -> (..., F, H, W)``."""
        shape_in = tuple(shape_in)
        return shape_in[:-2] + (self.filters.shape[0],) + shape_in[-2:]


def bank_norm(
    filters: Float[Array, "F k k"], shape: tuple[int, int], boundary: str = "circular"
) -> Float[Array, ""]:
    """Operator norm of the filter bank ``x ↦ (k_i * x)_i`` on ``shape`` images, from spectra.

    With the circular boundary the bank is diagonalised by the 2-D DFT of the image grid, so
    ``‖K‖² = max_ω Σ_i |k̂_i(ω)|²`` exactly (filters larger than the image are folded onto it).
    With the zero boundary the bank is a restriction of the circular one on the grid enlarged
    by ``k − 1``, whose norm is returned: an upper bound (tight up to O(k/H)). Either way no
    power iteration is needed; :func:`operator_norm` of a :class:`FilterBank` converges to the
    same value from below.
    """
    k = filters.shape[-1]
    h, w = (int(shape[0]), int(shape[1]))
    if boundary == "zero":
        h, w = h + k - 1, w + k - 1
    mh, mw = -(-k // h), -(-k // w)  # fold taps beyond the grid (circular wrap-around)
    f = jnp.pad(filters, ((0, 0), (0, mh * h - k), (0, mw * w - filters.shape[-2])))
    f = f.reshape(filters.shape[0], mh, h, mw, w).sum(axis=(1, 3))
    spec = jnp.fft.rfft2(f, s=(h, w))
    return jnp.sqrt(jnp.max(jnp.sum(jnp.abs(spec) ** 2, axis=0)))
