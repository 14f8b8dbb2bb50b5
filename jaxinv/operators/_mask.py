"""Pixel masks for inpainting, and constructors for the paper's masks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ._base import AbstractOperator


class Mask(AbstractOperator):
    """Inpainting operator ``(A x)[i, j] = m[i, j] x[i, j]``, ``m`` a 0/1 mask of shape ``(H, W)``.

    ``A`` is an orthogonal projection, so ``Aᵀ = A = AᵀA``. The mask broadcasts over leading axes.
    A pixel with ``m = 1`` is observed (kept), ``m = 0`` is missing.
    """

    mask: Bool[Array, "H W"]

    def __init__(self, mask: ArrayLike):
        if jnp.ndim(mask) != 2:
            raise ValueError(
                f"mask must be 2-D (H, W), got shape {jnp.shape(mask)}; build one with "
                "random_pixel_mask, row_mask or central_block_mask"
            )
        try:
            concrete = np.asarray(mask)
        except jax.errors.TracerArrayConversionError:  # traced: trust the caller
            self.mask = jnp.asarray(mask) != 0
            return
        if concrete.dtype != np.bool_ and not np.all((concrete == 0) | (concrete == 1)):
            raise ValueError(
                f"mask must contain only 0 and 1, found values such as "
                f"{np.unique(concrete)[:5]}; threshold it first (e.g. mask > 0.5)"
            )
        self.mask = jnp.asarray(concrete != 0)

    def _check(self, x: Array) -> None:
        if x.shape[-2:] != self.mask.shape:
            raise ValueError(
                f"mask has shape {self.mask.shape} but the images have shape {x.shape[-2:]} in "
                "their last two axes; build the mask with the image shape"
            )

    def __call__(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """Zero the unobserved pixels: ``m ⊙ x``."""
        self._check(x)
        return x * self.mask.astype(x.dtype)

    def adjoint(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """``Aᵀ y = m ⊙ y`` (the mask is self-adjoint)."""
        return self(y)

    def normal(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """``AᵀA x = m ⊙ x`` (the mask is idempotent)."""
        return self(x)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape}")
    return shape


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    return value


def random_pixel_mask(
    key: PRNGKeyArray, shape: tuple[int, int], keep: float = 0.5
) -> Bool[Array, "H W"]:
    """Random inpainting mask: each pixel is kept (``True``) independently with probability
    ``keep``."""
    shape = _check_shape(shape)
    keep = _check_fraction("keep", keep)
    return jax.random.bernoulli(key, keep, shape)


def row_mask(shape: tuple[int, int], fraction: float = 1 / 3) -> Bool[Array, "H W"]:
    """Mask out the first ``round(fraction · H)`` rows (the paper's MNIST inpainting masks out
    the first third)."""
    h, w = _check_shape(shape)
    fraction = _check_fraction("fraction", fraction)
    n = int(round(fraction * h))
    mask = np.ones((h, w), dtype=bool)
    mask[:n] = False
    return jnp.asarray(mask)


def central_block_mask(shape: tuple[int, int], fraction: float = 0.25) -> Bool[Array, "H W"]:
    """Mask out a centred block covering about ``fraction`` of the area.

    The block is ``round(√fraction · H) × round(√fraction · W)`` pixels, starting at
    ``((H − bh) // 2, (W − bw) // 2)``; ``fraction = 0.25`` removes a block of half the height and
    half the width.
    """
    h, w = _check_shape(shape)
    fraction = _check_fraction("fraction", fraction)
    s = math.sqrt(fraction)
    bh, bw = int(round(s * h)), int(round(s * w))
    i0, j0 = (h - bh) // 2, (w - bw) // 2
    mask = np.ones((h, w), dtype=bool)
    mask[i0 : i0 + bh, j0 : j0 + bw] = False
    return jnp.asarray(mask)
