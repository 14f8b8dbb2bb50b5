"""jaxinv: learned variational regularizers for imaging inverse problems, in JAX.

One jitted fixed-point solver with an implicit gradient; bilevel learning (tied gradient-step maps)
and deep equilibrium models (untied learned maps) are two configurations of it.
"""

from . import data as data
from . import distributed as distributed
from . import energies as energies
from . import metrics as metrics
from . import operators as operators
from . import regularizers as regularizers
from ._adjoint import AbstractAdjoint as AbstractAdjoint
from ._adjoint import Implicit as Implicit
from ._adjoint import JacobianFree as JacobianFree
from ._adjoint import Unrolled as Unrolled
from ._fixed_point import fixed_point as fixed_point
from ._maps import gradient_step as gradient_step
from ._results import RESULTS as RESULTS
from ._solution import BackwardProbe as BackwardProbe
from ._solution import Solution as Solution
from ._solution import Stats as Stats
from .solvers import CG as CG
from .solvers import GMRES as GMRES
from .solvers import AbstractFixedPointSolver as AbstractFixedPointSolver
from .solvers import AbstractLinearSolver as AbstractLinearSolver
from .solvers import Anderson as Anderson
from .solvers import Picard as Picard

__version__ = "0.1.0"

# The training layer builds on everything above.
from . import diagnostics as diagnostics  # noqa: E402
from . import models as models  # noqa: E402
from . import tasks as tasks  # noqa: E402
from . import train as train  # noqa: E402
from . import tuning as tuning  # noqa: E402
