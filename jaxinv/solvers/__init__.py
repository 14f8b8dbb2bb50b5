"""Forward fixed-point solvers and the loop that drives them."""

from ._anderson import Anderson as Anderson
from ._base import AbstractFixedPointSolver as AbstractFixedPointSolver
from ._base import iterate as iterate
from ._base import iterate_fixed as iterate_fixed
from ._picard import Picard as Picard
