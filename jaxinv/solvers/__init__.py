"""Forward fixed-point solvers (driven by the one loop in :mod:`jaxinv._iterate`) and the linear
solvers of the adjoint systems."""

from ._anderson import Anderson as Anderson
from ._base import AbstractFixedPointSolver as AbstractFixedPointSolver
from ._base import AbstractLinearSolver as AbstractLinearSolver
from ._cg import CG as CG
from ._gmres import GMRES as GMRES
from ._picard import Picard as Picard


def reconstruction_solver() -> Anderson:
    """The forward solver of reconstructions and evaluations when none is given:
    ``Anderson(tol=1e-5, max_iter=500)`` (memory 5)."""
    return Anderson(tol=1e-5, max_iter=500)
