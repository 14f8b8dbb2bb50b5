"""Seeded random patches and deterministic centre crops from variable-size images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import numpy as np


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"patch size must be positive, got {size!r}")
    return int(h), int(w)


def _check(images: Sequence[np.ndarray], h: int, w: int) -> list[np.ndarray]:
    arrays = [np.asarray(im) for im in images]
    if not arrays:
        raise ValueError("no images given")
    for i, im in enumerate(arrays):
        if im.ndim != 2:
            raise ValueError(f"image {i} has shape {im.shape}; expected a 2-D image")
        if im.shape[0] < h or im.shape[1] < w:
            raise ValueError(
                f"image {i} is {im.shape[0]}x{im.shape[1]}, smaller than the requested "
                f"{h}x{w} patch"
            )
    return arrays


@overload
def sample_patches(
    images: Sequence[np.ndarray],
    size: int | tuple[int, int],
    count: int,
    *,
    seed: int | np.random.Generator,
    augment: bool = ...,
    return_positions: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def sample_patches(
    images: Sequence[np.ndarray],
    size: int | tuple[int, int],
    count: int,
    *,
    seed: int | np.random.Generator,
    augment: bool = ...,
    return_positions: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


def sample_patches(
    images: Sequence[np.ndarray],
    size: int | tuple[int, int],
    count: int,
    *,
    seed: int | np.random.Generator,
    augment: bool = False,
    return_positions: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Crop ``count`` random ``size`` patches from a list of 2-D images.

    For each patch an image is drawn uniformly, then a top-left corner uniformly among the
    positions where the patch fits. With ``augment`` each patch is then mapped by a random
    symmetry of the square (one of the 4 rotations by 90°, each optionally mirrored; for
    non-square patches one of identity, the two mirrors and the 180° rotation), drawn after
    all positions, so the positions do not depend on ``augment``. Reproducible: the same
    ``seed`` (an int, or a ``numpy.random.Generator`` which is advanced) gives the same patches.

    Returns an array ``(count, h, w)`` with the images' dtype; with ``return_positions`` also an
    int array ``(count, 3)`` of ``(image index, row, column)`` of each patch's top-left corner.
    Raises ``ValueError`` if an image is smaller than the patch.
    """
    h, w = _hw(size)
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    arrays = _check(images, h, w)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shapes = np.array([im.shape for im in arrays], dtype=np.int64)
    idx = rng.integers(0, len(arrays), size=count)
    rows = rng.integers(0, shapes[idx, 0] - h + 1)
    cols = rng.integers(0, shapes[idx, 1] - w + 1)
    dtype = np.result_type(*arrays)
    patches = np.empty((count, h, w), dtype=dtype)
    for k, (i, r, c) in enumerate(zip(idx, rows, cols, strict=True)):
        patches[k] = arrays[i][r : r + h, c : c + w]
    if augment:
        _augment(patches, rng)
    if return_positions:
        return patches, np.stack([idx, rows, cols], axis=1).astype(np.int64)
    return patches


def _augment(patches: np.ndarray, rng: np.random.Generator) -> None:
    """Map each patch in place by a random symmetry (see :func:`sample_patches`)."""
    square = patches.shape[1] == patches.shape[2]
    draws = rng.integers(0, 8 if square else 4, size=len(patches))
    for k, t in enumerate(draws):
        p = patches[k]
        if square:
            p = np.rot90(p, int(t) % 4)
            if t >= 4:
                p = p[:, ::-1]
        else:
            p = p[::-1] if t & 1 else p
            p = p[:, ::-1] if t & 2 else p
        patches[k] = p


def center_crops(images: Sequence[np.ndarray], size: int | tuple[int, int]) -> np.ndarray:
    """Crop the centre ``size`` patch of every image; returns ``(len(images), h, w)``.

    The top-left corner is ``((H - h) // 2, (W - w) // 2)``. Raises ``ValueError`` if an image
    is smaller than the patch.
    """
    h, w = _hw(size)
    arrays = _check(images, h, w)
    crops = []
    for im in arrays:
        r, c = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
        crops.append(im[r : r + h, c : c + w])
    return np.stack(crops)
