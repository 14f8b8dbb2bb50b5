"""Natural grayscale images bundled with scikit-image, split by image.

Only images whose files ship inside the scikit-image wheel are used, so nothing is ever
downloaded. Each is converted to grayscale float32 on [0, 1] (luminance weights as
``skimage.color.rgb2gray``).

The split is by image, never by patch, and fixed:

* ``test``: the classic benchmark photographs ``camera``, ``astronaut``, ``coins`` and the
  texture ``grass``;
* ``val``: ``moon`` and ``page``;
* ``train``: the remaining eleven.

Deliberately left out: ``clock`` (motion-blurred on purpose: a poor ground truth),
``microaneurysms`` (only 102x102), the right view of ``stereo_motorcycle`` (near-duplicate of
the left, it would leak across splits), ``cat`` (alias of ``chelsea``), and the synthetic or
binary images (``horse``, ``colorwheel``, ``logo``, checkerboards, phantom).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

from ._convert import to_gray


def _sk(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _motorcycle() -> np.ndarray:
    from skimage import data

    return data.stereo_motorcycle()[0]


_LOADERS: Mapping[str, Callable[[], np.ndarray]] = MappingProxyType(
    {
        "astronaut": _sk("astronaut"),
        "brick": _sk("brick"),
        "camera": _sk("camera"),
        "cell": _sk("cell"),
        "chelsea": _sk("chelsea"),
        "coffee": _sk("coffee"),
        "coins": _sk("coins"),
        "grass": _sk("grass"),
        "gravel": _sk("gravel"),
        "hubble_deep_field": _sk("hubble_deep_field"),
        "immunohistochemistry": _sk("immunohistochemistry"),
        "moon": _sk("moon"),
        "motorcycle": _motorcycle,
        "page": _sk("page"),
        "retina": _sk("retina"),
        "rocket": _sk("rocket"),
        "text": _sk("text"),
    }
)

#: Fixed split of the bundled images, by image.
SPLITS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "train": (
            "brick",
            "cell",
            "chelsea",
            "coffee",
            "gravel",
            "hubble_deep_field",
            "immunohistochemistry",
            "motorcycle",
            "retina",
            "rocket",
            "text",
        ),
        "val": ("moon", "page"),
        "test": ("camera", "astronaut", "coins", "grass"),
    }
)

#: All bundled image names, in the order train, val, test.
IMAGE_NAMES: tuple[str, ...] = SPLITS["train"] + SPLITS["val"] + SPLITS["test"]


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink a 2-D image by an integer ``factor`` by averaging ``factor x factor`` blocks.

    Trailing rows/columns that do not fill a whole block are dropped.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(image.dtype)


def load_image(name: str, *, max_size: int | None = None) -> np.ndarray:
    """Load one bundled image as a 2-D float32 array on [0, 1].

    With ``max_size``, an image whose longer side ``L`` exceeds it is shrunk by the integer
    factor ``ceil(L / max_size)`` (block averaging, see :func:`downscale`), so its longer side
    becomes at most ``max_size``. Smaller images are returned unchanged.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown image {name!r}; available: {', '.join(IMAGE_NAMES)}")
    image = to_gray(_LOADERS[name](), name=name)
    if max_size is not None:
        if not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a positive integer or None, got {max_size!r}")
        image = downscale(image, math.ceil(max(image.shape) / max_size))
    return image


def load_images(split: str = "train", *, max_size: int | None = None) -> list[np.ndarray]:
    """Load the images of a split (``"train"``, ``"val"``, ``"test"`` or ``"all"``).

    Returns a list of 2-D float32 arrays on [0, 1] of varying sizes, in the order of
    ``SPLITS[split]`` (or :data:`IMAGE_NAMES` for ``"all"``). ``max_size`` as in
    :func:`load_image`.
    """
    if split == "all":
        names = IMAGE_NAMES
    elif split in SPLITS:
        names = SPLITS[split]
    else:
        raise ValueError(f"unknown split {split!r}; use 'train', 'val', 'test' or 'all'")
    return [load_image(n, max_size=max_size) for n in names]
