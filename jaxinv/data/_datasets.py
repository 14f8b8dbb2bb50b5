"""What the code needs to know about a training dataset, in one value object.

The natural images (bundled photographs or a user's folders) live on ``[0, 1]`` and are cut
into square patches of any size; the MNIST digits are normalised to ``[-1, 1]`` (as in the
paper) and are always ``28 x 28``. Everything that depends on that (PSNR's data range, the
mapping of a user's ``[0, 1]`` file onto the model's scale, figure colour limits, the default
architecture, the training image shape) asks the :class:`DatasetInfo` instead of the name.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A dataset's value range and shape.

    Attributes:
        name: ``"natural"`` or ``"mnist"``.
        lo, hi: the value range the model's data live on.
        fixed_shape: the one image shape of the dataset, or ``None`` when it is cut into
            patches of ``patch_size``.
        default_arch: the architecture trained when none is named.
    """

    name: str
    lo: float
    hi: float
    fixed_shape: tuple[int, int] | None
    default_arch: str

    @property
    def data_range(self) -> float:
        """``hi - lo``: the peak of PSNR and SSIM."""
        return self.hi - self.lo

    @property
    def value_range(self) -> tuple[float, float]:
        """``(lo, hi)``."""
        return self.lo, self.hi

    def image_shape(self, patch_size: int) -> tuple[int, int]:
        """The training image shape: the fixed shape, else ``(patch_size, patch_size)``."""
        return self.fixed_shape or (patch_size, patch_size)

    def from_unit(self, image: np.ndarray) -> np.ndarray:
        """An image on ``[0, 1]`` (a file's values) on this dataset's scale."""
        return self.lo + self.data_range * np.asarray(image)

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`from_unit`."""
        return (np.asarray(image) - self.lo) / self.data_range


DATASETS: dict[str, DatasetInfo] = {
    "natural": DatasetInfo("natural", 0.0, 1.0, None, "foe"),
    "mnist": DatasetInfo("mnist", -1.0, 1.0, (28, 28), "dense"),
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; raises ``ValueError`` naming the choices."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
