"""Blur (deconvolution) operator and the blur kernels of the paper."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._conv import BOUNDARIES, correlate, correlate_adjoint
from ._base import AbstractOperator

_DIRECTIONS = ("diagonal", "antidiagonal", "horizontal", "vertical")


def _check_boundary(boundary: str) -> str:
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; choose one of {BOUNDARIES}")
    return boundary


def _check_odd_size(size: int) -> int:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(
            f"kernel size must be a positive odd integer (so the kernel has a centre), got {size}"
        )
    return int(size)


class Blur(AbstractOperator):
    """Convolution with a kernel ``h`` (odd sizes, centred), same output size.

    ``(A x)[i, j] = Σ_{a,b} h[a, b] · x[i − a + c_h, j − b + c_w]`` with ``c = size // 2``, where
    pixels outside the image wrap around (``boundary="circular"``), are zero (``"zero"``) or
    mirror the image (``"reflect"``: ``x[−1] = x[0]``, ``x[−2] = x[1]``). This is a true
    convolution (``scipy.ndimage.convolve`` with ``mode="wrap"`` / ``"constant"`` /
    ``"reflect"``). Its adjoint is the correlation with ``h`` under the same boundary for the
    circular and zero boundaries; for the reflect one it is not a reflect-boundary correlation
    (the mirrored border folds back onto the image) and uses
    :func:`jaxinv._conv.correlate_adjoint`. A non-square kernel is zero-padded to a square one.

    A non-negative kernel that sums to 1 gives ``‖A‖ ≤ 1`` for the circular and zero
    boundaries, and for the reflect one if it is symmetric in each axis (Gaussian, box): then
    the DCT-II diagonalises ``A``. Otherwise a mirrored border pixel can weigh more than 1:
    the reflect 5×5 diagonal motion blur has ``‖A‖ = 1.05`` on 64×64 images;
    ``bank_norm(kernel[None], shape, "reflect")`` bounds it (1.27).
    """

    kernel: Float[Array, "k k"]
    boundary: str = eqx.field(static=True)

    def __init__(self, kernel: ArrayLike, boundary: str = "circular"):
        k = jnp.asarray(kernel)
        if k.ndim != 2:
            raise ValueError(f"kernel must be 2-D (kh, kw), got shape {k.shape}")
        kh, kw = k.shape
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(
                f"kernel must have odd sizes so that it has a centre, got {k.shape}; pad it with "
                "a zero row/column on the side that places the centre where you want it"
            )
        if kh != kw:  # embed in a square kernel with the same centre
            n = max(kh, kw)
            ph, pw = (n - kh) // 2, (n - kw) // 2
            k = jnp.pad(k, ((ph, ph), (pw, pw)))
        self.kernel = k
        self.boundary = _check_boundary(boundary)

    def __call__(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """Blur: ``h ⊛ x``."""
        flipped = jnp.flip(self.kernel, (0, 1))
        return correlate(x, flipped[None], self.boundary)[..., 0, :, :]

    def adjoint(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """The exact adjoint of the convolution: the correlation with ``h`` (circular, zero),
        the transposed reflect-boundary correlation with the flipped ``h`` (reflect)."""
        if self.boundary == "reflect":
            flipped = jnp.flip(self.kernel, (0, 1))
            return correlate_adjoint(y[..., None, :, :], flipped[None], self.boundary)
        return correlate(y, self.kernel[None], self.boundary)[..., 0, :, :]


def motion_kernel(size: int, direction: str = "diagonal") -> Float[Array, "size size"]:
    """Linear motion blur of length ``size`` (odd), normalised to sum 1.

    ``"diagonal"`` is the main diagonal (top-left to bottom-right, ``eye(size) / size``, the
    paper's 5×5 and 11×11 blur); also ``"antidiagonal"``, ``"horizontal"`` (centre row) and
    ``"vertical"`` (centre column).
    """
    size = _check_odd_size(size)
    if direction == "diagonal":
        k = np.eye(size)
    elif direction == "antidiagonal":
        k = np.fliplr(np.eye(size))
    elif direction == "horizontal":
        k = np.zeros((size, size))
        k[size // 2, :] = 1.0
    elif direction == "vertical":
        k = np.zeros((size, size))
        k[:, size // 2] = 1.0
    else:
        raise ValueError(f"unknown direction {direction!r}; choose one of {_DIRECTIONS}")
    return jnp.asarray(k / k.sum())


def gaussian_kernel(size: int, sigma: float) -> Float[Array, "size size"]:
    """Isotropic Gaussian ``h[a, b] ∝ exp(−((a−c)² + (b−c)²) / (2σ²))``, odd ``size``, sum 1."""
    size = _check_odd_size(size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    t = np.arange(size) - size // 2
    g = np.exp(-(t**2) / (2.0 * float(sigma) ** 2))
    k = np.outer(g, g)
    return jnp.asarray(k / k.sum())


def uniform_kernel(size: int) -> Float[Array, "size size"]:
    """Box blur: ``h = 1 / size²`` on an odd ``size × size`` square."""
    size = _check_odd_size(size)
    return jnp.full((size, size), 1.0 / size**2)
