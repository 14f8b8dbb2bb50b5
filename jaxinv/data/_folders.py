"""Folders of the user's own images: listing, reading, and a deterministic split by image."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ._files import load_image_file

#: File name endings read as images (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def list_image_files(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`) under ``folder``, sorted by relative path.

    Hidden files and folders (names starting with ``.``) are skipped. Raises
    ``FileNotFoundError`` if ``folder`` does not exist and ``ValueError`` if it is not a folder
    or holds no image file.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {str(root)!r}")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder; give a folder of images")
    pattern = "**/*" if recursive else "*"
    files = [
        p
        for p in root.glob(pattern)
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not files:
        where = "under" if recursive else "in"
        raise ValueError(
            f"no image files {where} {str(root)!r} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_image_folder(
    folder: str | os.PathLike[str],
    *,
    recursive: bool = True,
    min_size: int | tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Every image under ``folder`` (see :func:`list_image_files`) as 2-D float32 grayscale
    arrays on [0, 1] (:func:`jaxinv.data.load_image_file`: colour to luminance, 8/16-bit
    scaled), at their own resolution, in sorted path order.

    Raises ``ValueError`` naming the file if one cannot be read or (with ``min_size``) is too
    small.
    """
    return [
        load_image_file(p, min_size=min_size) for p in list_image_files(folder, recursive=recursive)
    ]


def folder_fingerprint(folder: str | os.PathLike[str], *, recursive: bool = True) -> str:
    """A short digest of the folder's image files (relative paths and sizes): it changes when
    a file is added, removed, renamed or rewritten with another size."""
    root = Path(folder)
    h = hashlib.sha256()
    for p in list_image_files(root, recursive=recursive):
        h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def split_by_image(count: int, every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a deterministic split of ``count`` images: every
    ``every``-th image (``i % every == every − 1``) is held out for validation, at least one.
    Needs ``count >= 2``."""
    if count < 2:
        raise ValueError(
            f"an image folder needs at least 2 images to hold one out for validation, got "
            f"{count}; add images or give a separate validation folder"
        )
    idx = np.arange(count)
    val = idx[idx % every == every - 1]
    if len(val) == 0:
        val = idx[-1:]
    return np.setdiff1d(idx, val), val
