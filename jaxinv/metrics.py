"""Image quality metrics in JAX: MSE, PSNR and SSIM, per image and batched.

All functions take ``x`` (estimate) and ``ref`` (ground truth) that broadcast together, reduce
over the trailing image axes and return one value per image for the leading (batch) axes.
They are pure ``jax.numpy`` code: ``jit``, ``vmap`` and ``grad`` work.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._tree import EXACT

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): skimage's truncate=3.5 -> an 11x11 window
_K1, _K2 = 0.01, 0.03


def _prepare(x: ArrayLike, ref: ArrayLike) -> tuple[jax.Array, jax.Array]:
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    dtype = jnp.result_type(x.dtype, ref.dtype, float)
    x, ref = jnp.broadcast_arrays(x.astype(dtype), ref.astype(dtype))
    return x, ref


def mse(x: ArrayLike, ref: ArrayLike, *, image_ndim: int = 2) -> jax.Array:
    """Mean squared error over the last ``image_ndim`` axes; shape = the leading axes."""
    x, ref = _prepare(x, ref)
    axes = tuple(range(x.ndim - image_ndim, x.ndim))
    return jnp.mean((x - ref) ** 2, axis=axes)


def psnr(
    x: ArrayLike, ref: ArrayLike, data_range: float | ArrayLike = 1.0, *, image_ndim: int = 2
) -> jax.Array:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / mse)``, per image.

    ``data_range`` is the width of the value range (1 for [0, 1], 2 for [-1, 1]).
    Identical images give ``inf``.
    """
    err = mse(x, ref, image_ndim=image_ndim)
    return 10.0 * jnp.log10(jnp.asarray(data_range, err.dtype) ** 2 / err)


def _gaussian_window() -> list[float]:
    taps = [math.exp(-0.5 * (k / _SSIM_SIGMA) ** 2) for k in range(-_SSIM_RADIUS, _SSIM_RADIUS + 1)]
    total = sum(taps)
    return [t / total for t in taps]


def _filter_valid(a: jax.Array, taps: list[float]) -> jax.Array:
    """Separable correlation over the last two axes, keeping only fully covered pixels."""
    lead, (h, w) = a.shape[:-2], a.shape[-2:]
    k = jnp.asarray(taps, a.dtype)
    out = a.reshape(-1, 1, h, w)
    for kernel in (k.reshape(1, 1, -1, 1), k.reshape(1, 1, 1, -1)):
        out = jax.lax.conv_general_dilated(out, kernel, (1, 1), "VALID", precision=EXACT)
    return out.reshape(*lead, *out.shape[-2:])


@jax.jit
def _ssim(x: jax.Array, ref: jax.Array, data_range: jax.Array) -> jax.Array:
    stats = _filter_valid(jnp.stack([x, ref, x * x, ref * ref, x * ref]), _gaussian_window())
    mx, my, sxx, syy, sxy = stats
    vx, vy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return jnp.mean(smap, axis=(-2, -1))


def ssim(x: ArrayLike, ref: ArrayLike, data_range: float | ArrayLike = 1.0) -> jax.Array:
    """Structural similarity (Wang et al. 2004) of 2-D images, per image.

    Gaussian window sigma 1.5 truncated to 11x11, K1 = 0.01, K2 = 0.03, population
    (not sample) covariances; the SSIM map is averaged over the pixels whose window lies inside
    the image. This equals ``skimage.metrics.structural_similarity(x, ref,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)``,
    which filters with a reflected boundary and then discards a border of width 5 -- exactly
    the pixels a reflected boundary would affect. Images must be at least 11x11.
    """
    x, ref = _prepare(x, ref)
    size = 2 * _SSIM_RADIUS + 1
    if x.ndim < 2 or x.shape[-2] < size or x.shape[-1] < size:
        raise ValueError(f"ssim needs images of at least {size}x{size}, got shape {x.shape}")
    return _ssim(x, ref, jnp.asarray(data_range, x.dtype))
