"""Reading user image files: PNG, JPEG, TIFF (and ``.npy`` arrays for their values as stored)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._convert import to_gray, to_values

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF")
#: What :func:`load_image_values` reads: the image formats and NumPy ``.npy`` files.
VALUE_FORMATS: tuple[str, ...] = (*ACCEPTED_FORMATS, "NPY")
_NPY_MAGIC = b"\x93NUMPY"
_PIL_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF"}


def _not_an_image(path: Path, why: str, formats: tuple[str, ...] = ACCEPTED_FORMATS) -> ValueError:
    return ValueError(
        f"cannot read {str(path)!r} as an image ({why}); accepted formats: {', '.join(formats)}"
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


def _read_pil(path: Path, formats: tuple[str, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = _PIL_FORMATS.get(im.format or "")
            if fmt is None:
                raise _not_an_image(path, f"format {im.format}", formats)
            im.load()
            mode = im.mode
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
            elif mode == "I" and fmt == "PNG":
                # Older Pillow versions open 16-bit grayscale PNGs in 32-bit mode "I".
                return np.asarray(im).astype(np.uint16)
            return np.asarray(im)
    except UnidentifiedImageError as err:
        raise _not_an_image(path, "unrecognised content", formats) from err
    except (OSError, SyntaxError) as err:
        raise _not_an_image(path, str(err) or type(err).__name__, formats) from err


def _decode(p: Path, *, npy: bool) -> np.ndarray:
    """The decoded array of an image file (or, with ``npy``, of a ``.npy`` file)."""
    formats = VALUE_FORMATS if npy else ACCEPTED_FORMATS
    if not p.exists():
        raise FileNotFoundError(f"image file not found: {str(p)!r}")
    if not p.is_file():
        raise _not_an_image(p, "not a regular file", formats)
    with open(p, "rb") as fh:
        magic = fh.read(len(_NPY_MAGIC))
    if npy and magic == _NPY_MAGIC:
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise _not_an_image(p, f"unreadable .npy: {err}", formats) from err
    raw = _read_tiff(p) if magic[:2] in (b"II", b"MM") else None
    return _read_pil(p, formats) if raw is None else raw


def load_image_values(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG, JPEG, TIFF or ``.npy`` file as its values, without rescaling or clipping.

    Returns ``(H, W)`` for grayscale and ``(H, W, 3)`` for colour (alpha dropped), float32
    (float64 data stays float64). 8-bit data is divided by 255, 16-bit by 65535; float data
    (float TIFF, float ``.npy``) is taken as it is, whatever its range -- unlike
    :func:`load_image_file`, which rescales a float image outside [0, 1]. This is the reader for
    measurements, whose noise reaches beyond [0, 1]. 16-bit colour PNGs are reduced to 8 bits
    by Pillow.

    Raises ``FileNotFoundError`` if ``path`` does not exist, and ``ValueError`` if it is not a
    readable image or array of shape ``(H, W)`` / ``(H, W, C)`` (``C`` in 1..4), or holds NaN,
    infinite or negative integer values.
    """
    p = Path(path)
    return to_values(_decode(p, npy=True), name=str(p))


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
    image = to_gray(_decode(p, npy=False), name=str(p))
    if min_size is not None:
        mh, mw = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
        if image.shape[0] < mh or image.shape[1] < mw:
            raise ValueError(
                f"image {str(p)!r} is {image.shape[0]}x{image.shape[1]}, smaller than the "
                f"requested {mh}x{mw}"
            )
    return image
