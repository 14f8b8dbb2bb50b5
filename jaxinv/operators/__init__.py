"""Forward operators ``A`` with adjoints, acting on image batches ``(..., H, W)``."""

from ._base import AbstractOperator as AbstractOperator
from ._base import Identity as Identity
from ._blur import Blur as Blur
from ._blur import gaussian_kernel as gaussian_kernel
from ._blur import motion_kernel as motion_kernel
from ._blur import uniform_kernel as uniform_kernel
from ._filter_bank import FilterBank as FilterBank
from ._filter_bank import bank_norm as bank_norm
from ._mask import Mask as Mask
from ._mask import central_block_mask as central_block_mask
from ._mask import random_pixel_mask as random_pixel_mask
from ._mask import row_mask as row_mask
from ._norm import matrix_norm as matrix_norm
from ._norm import operator_norm as operator_norm

__all__ = [
    "AbstractOperator",
    "Blur",
    "FilterBank",
    "Identity",
    "Mask",
    "bank_norm",
    "central_block_mask",
    "gaussian_kernel",
    "matrix_norm",
    "motion_kernel",
    "operator_norm",
    "random_pixel_mask",
    "row_mask",
    "uniform_kernel",
]
