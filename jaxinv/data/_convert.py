"""Conversion of decoded image arrays to grayscale float32 on [0, 1]."""

from __future__ import annotations

import warnings

import numpy as np

#: Luminance weights (ITU-R BT.709 primaries), the same as ``skimage.color.rgb2gray``.
LUMA_WEIGHTS: tuple[float, float, float] = (0.2125, 0.7154, 0.0721)


def to_unit_range(a: np.ndarray, *, name: str = "image", rescale: bool = True) -> np.ndarray:
    """Map an array's values to float64 on [0, 1] (or, with ``rescale=False``, keep a float
    array's own range).

    Rule: booleans -> {0, 1}; unsigned integers -> divided by the dtype's maximum (255 for 8-bit,
    65535 for 16-bit); signed integers with no negative values -> divided by the dtype's maximum;
    floats already within [0, 1] -> unchanged. Anything else (floats outside [0, 1], negative
    integers) is rescaled linearly from [min, max] to [0, 1] with a ``UserWarning``; with
    ``rescale=False`` floats are kept as they are, whatever their range, and negative integers
    raise ``ValueError``. Non-finite values raise ``ValueError``.
    """
    a = np.asarray(a)
    if a.dtype == bool:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        if a.size == 0 or a.min() >= 0:
            return a.astype(np.float64) / float(info.max)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not rescale or a.size == 0 or (a.min() >= 0.0 and a.max() <= 1.0):
            return a
    else:
        raise ValueError(f"{name} has unsupported dtype {a.dtype}")
    if not rescale:
        raise ValueError(
            f"{name} holds negative {a.dtype} integers, which have no [0, 1] reading; store the "
            "image as unsigned integers or as floats on [0, 1]"
        )
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    warnings.warn(
        f"{name}: values span [{lo:g}, {hi:g}], outside [0, 1]; rescaled linearly to [0, 1]",
        UserWarning,
        stacklevel=3,
    )
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _drop_alpha(a: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` and gray+alpha ``(H, W, 2)`` -> ``(H, W)``; RGBA -> RGB; others unchanged."""
    if a.ndim == 3 and a.shape[-1] in (1, 2):
        return a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        return a[..., :3]
    return a


def to_values(a: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Convert a decoded image to its values as stored, channels kept: ``(H, W)`` or RGB
    ``(H, W, 3)``, float32 (float64 data stays float64).

    Integers are divided by the dtype's maximum (8-bit by 255, 16-bit by 65535), booleans give
    {0, 1}, floats are kept as they are: no rescaling and no clipping, so a float image is read
    unchanged. Alpha is dropped. Non-finite values, negative integers and other shapes raise
    ``ValueError``.
    """
    a = _drop_alpha(np.asarray(a))
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"{name} has shape {a.shape}; expected (H, W) or (H, W, C) with C in 1..4")
    dtype = np.float64 if a.dtype == np.float64 else np.float32
    return to_unit_range(a, name=name, rescale=False).astype(dtype)


def to_gray(a: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Convert a decoded image to a 2-D float32 grayscale array on [0, 1].

    Accepts ``(H, W)``, ``(H, W, 1)``, gray+alpha ``(H, W, 2)``, RGB ``(H, W, 3)`` and RGBA
    ``(H, W, 4)``. Alpha is dropped (not composited); colour is reduced to luminance with
    :data:`LUMA_WEIGHTS` after scaling to [0, 1], so 8- and 16-bit inputs agree.
    """
    a = _drop_alpha(np.asarray(a))
    if a.ndim == 3 and a.shape[-1] == 3:
        rgb = to_unit_range(a, name=name)
        gray = rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float64)
    elif a.ndim == 2:
        gray = to_unit_range(a, name=name)
    else:
        raise ValueError(f"{name} has shape {a.shape}; expected (H, W) or (H, W, C) with C in 1..4")
    return np.clip(gray, 0.0, 1.0).astype(np.float32)
