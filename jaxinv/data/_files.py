"""Reading user image files (PNG, JPEG, TIFF) as grayscale float32 on [0, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._convert import to_gray

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF")
_PIL_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF"}


def _not_an_image(path: Path, why: str) -> ValueError:
    return ValueError(
        f"cannot read {str(path)!r} as an image ({why}); "
        f"accepted formats: {', '.join(ACCEPTED_FORMATS)}"
    )


def _read_tiff(path: Path) -> np.ndarray | None:
    """First page of a TIFF with samples last, or None if tifffile cannot decode it."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            axes = page.axes
            data = page.asarray()
    except Exception:
        return None
    if "S" in axes:
        data = np.moveaxis(data, axes.index("S"), -1)
    return data


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = _PIL_FORMATS.get(im.format or "")
            if fmt is None:
                raise _not_an_image(path, f"format {im.format}")
            im.load()
            mode = im.mode
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
            elif mode == "I" and fmt == "PNG":
                # Older Pillow versions open 16-bit grayscale PNGs in 32-bit mode "I".
                return np.asarray(im).astype(np.uint16)
            return np.asarray(im)
    except UnidentifiedImageError as err:
        raise _not_an_image(path, "unrecognised content") from err
    except (OSError, SyntaxError) as err:
        raise _not_an_image(path, str(err) or type(err).__name__) from err


def load_image_file(
    path: str | os.PathLike[str], *, min_size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Read a PNG, JPEG or TIFF file as a 2-D float32 grayscale array on [0, 1].

    Colour is reduced to luminance (``skimage.color.rgb2gray`` weights) and alpha dropped.
    8-bit data is divided by 255, 16-bit by 65535; float data already on [0, 1] is kept and
    other float ranges are rescaled from [min, max] with a warning. Of a multi-page TIFF only
    the first page is read. 16-bit colour PNGs are reduced to 8 bits by Pillow.

    Raises ``FileNotFoundError`` if ``path`` does not exist, and ``ValueError`` if it is not a
    readable image in an accepted format or (with ``min_size``, an int or ``(height, width)``)
    is smaller than ``min_size``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image file not found: {str(p)!r}")
    if not p.is_file():
        raise _not_an_image(p, "not a regular file")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    raw = _read_tiff(p) if magic[:2] in (b"II", b"MM") else None
    if raw is None:
        raw = _read_pil(p)
    image = to_gray(raw, name=str(p))
    if min_size is not None:
        mh, mw = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
        if image.shape[0] < mh or image.shape[1] < mw:
            raise ValueError(
                f"image {str(p)!r} is {image.shape[0]}x{image.shape[1]}, smaller than the "
                f"requested {mh}x{mw}"
            )
    return image
