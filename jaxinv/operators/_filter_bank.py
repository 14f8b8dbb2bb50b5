"""A filter bank as an operator: the ``W`` of a convolutional regularizer."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._conv import correlate, correlate_adjoint
from ._base import AbstractOperator
from ._blur import _check_boundary


class FilterBank(AbstractOperator):
    """Correlation with ``F`` filters: ``(..., H, W) -> (..., F, H, W)``, ``z_f = k_f * x``.

    Uses :func:`jaxinv._conv.correlate` (its centring and ``"circular"`` / ``"zero"`` /
    ``"reflect"`` boundary conventions); the adjoint is ``Σ_f k_fᵀ * z_f``
    (:func:`jaxinv._conv.correlate_adjoint`, which for the reflect boundary folds the mirrored
    border back). Use it with :func:`operator_norm` to get ``‖W‖`` for the paper's
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

    def adjoint(self, y: Float[Array, "*batch F H W"]) -> Float[Array, "*batch H W"]:
        """``Σ_f k_fᵀ * y_f``."""
        return correlate_adjoint(y, self.filters, self.boundary)

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
    by ``k − 1``, whose norm is returned: an upper bound (tight up to O(k/H)). With the reflect
    boundary an upper bound that is exact for banks whose filters each have one parity about
    their centre tap (even or odd in each axis: symmetric filters, the DCT basis), see
    :func:`_reflect_norm_bound`. Either way no power iteration is needed; :func:`operator_norm`
    of a :class:`FilterBank` converges to the same value (exact cases) from below.
    """
    _check_boundary(boundary)
    filters = jnp.asarray(filters)
    if filters.ndim != 3 or filters.shape[1] != filters.shape[2]:
        raise ValueError(f"filters must have shape (F, k, k), got {filters.shape}")
    h, w = (int(shape[0]), int(shape[1]))
    if boundary == "reflect":
        return _reflect_norm_bound(filters, h, w)
    k = filters.shape[-1]
    if boundary == "zero":
        h, w = h + k - 1, w + k - 1
    return _circular_norm(filters, h, w)


# Jitted with the grid static: one compilation per shape when called outside a jitted function
# (otherwise every small array operation of the bound compiles on its own).
@functools.partial(jax.jit, static_argnums=(1, 2))
def _circular_norm(filters: Array, h: int, w: int) -> Array:
    """``max_ω (Σ_i |k̂_i(ω)|²)^½`` on the ``h × w`` torus: the circular bank's exact norm."""
    spec = jnp.fft.rfft2(_fold_onto(filters, h, w), s=(h, w))
    return jnp.sqrt(jnp.max(jnp.sum(jnp.abs(spec) ** 2, axis=0)))


def _fold_onto(filters: Array, h: int, w: int) -> Array:
    """Fold taps beyond an ``h × w`` grid onto it (circular wrap-around); the first tap at 0."""
    kh, kw = filters.shape[-2:]
    mh, mw = -(-kh // h), -(-kw // w)
    f = jnp.pad(filters, ((0, 0), (0, mh * h - kh), (0, mw * w - kw)))
    return f.reshape(filters.shape[0], mh, h, mw, w).sum(axis=(1, 3))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _reflect_norm_bound(filters: Array, h: int, w: int) -> Array:
    """An upper bound of ``‖K‖`` for the reflect boundary on ``h × w`` images.

    The reflect correlation is ``K = R C E``: ``E`` the even (half-sample symmetric) extension
    onto the ``2h × 2w`` torus, ``C`` the circular correlation there, ``R`` the restriction to
    the image. Split each filter into its four parity parts about the centre tap, ``k =
    Σ_p k_p`` (``p`` = even/odd in rows × even/odd in columns, ``k_p = ¼ Σ_g χ_p(g) g k`` over
    the flips ``g``). ``C_p`` maps the DCT-II basis image ``φ_uv`` (``E φ_uv`` a half-sample
    cosine of frequency ``ω = (πu/h, πv/w)``, ``0 ≤ u < h``, ``0 ≤ v < w``) to ``λ_p(u, v)``
    times a member ``ψ^p_uv`` of the orthonormal cos/sin basis of parity ``p``, with
    ``|λ_p(u, v)| = |k̂_p(ω)|``. So with ``x = Σ α_uv φ_uv``

        ‖(K x)_i‖ = ‖Σ_p Ψ^p Λ_{i,p} α‖ ≤ Σ_p ‖Λ_{i,p} α‖,
        (Σ_p ‖Λ_{i,p} α‖)² ≤ (Σ_p w_{i,p}) Σ_p ‖Λ_{i,p} α‖² / w_{i,p}      (any w > 0),
        ‖K‖² ≤ max_{u,v} Σ_i (Σ_p w_{i,p}) Σ_p |k̂_{i,p}(ω_uv)|² / w_{i,p},

    the sums over the parts that are non-zero. Filters of one parity (symmetric ones, the DCT
    basis) have one part: the bound is then the exact norm (DCT-diagonalised). Returned: the
    smaller of the bounds with ``w_{i,p}`` the peak of ``|k̂_{i,p}|`` and with ``w = 1``; the
    latter is at most ``max_ω (Σ_i Σ_g |k̂_i(g ω)|²)^½ ≤ 2 ‖C‖`` (``‖E x‖ = 2 ‖x‖``).
    """
    nf, k = filters.shape[0], filters.shape[-1]
    c = k // 2  # offsets -c .. k-1-c; an even filter gets a zero last row/column
    g = jnp.pad(filters, ((0, 0), (0, 2 * c + 1 - k), (0, 2 * c + 1 - k)))
    flip_r, flip_c = jnp.flip(g, 1), jnp.flip(g, 2)
    flip_rc = jnp.flip(g, (1, 2))
    parts = jnp.stack(
        [
            (g + sr * flip_r + sc * flip_c + sr * sc * flip_rc) / 4
            for sr in (1, -1)
            for sc in (1, -1)
        ],
        axis=1,
    )  # (F, 4, 2c + 1, 2c + 1)
    spec = jnp.fft.rfft2(_fold_onto(parts.reshape(nf * 4, 2 * c + 1, -1), 2 * h, 2 * w))
    spec = spec.reshape(nf, 4, 2 * h, w + 1)[..., :h, :w]  # the DCT frequencies
    s2 = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # (F, 4, h, w)
    peak2 = jnp.max(s2, axis=(2, 3))
    present = peak2 > 0
    peak = jnp.sqrt(jnp.where(present, peak2, 1.0))

    def bound(weights):
        weights = jnp.where(present, weights, 1.0)
        total = jnp.sum(jnp.where(present, weights, 0.0), axis=1)
        per = jnp.sum(s2 / weights[:, :, None, None], axis=1)  # absent parts are zero
        return jnp.sqrt(jnp.max(jnp.sum(total[:, None, None] * per, axis=0)))

    return jnp.minimum(bound(peak), bound(jnp.ones_like(peak)))
