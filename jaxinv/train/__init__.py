"""Training: configuration, the jitted step, the loop with checkpoints, and loading runs.

```python
from jaxinv.train import TrainConfig, train, train_sweep, load_run, reconstruct

result = train(TrainConfig(model="deq", arch="foe", steps=200), "runs/deq-foe")
# sub-configurations (data, optim, forward, adjoint, penalty), or settings by flat name
config = TrainConfig(optim=OptimConfig(lr=1e-4), forward=SolverConfig(tol=1e-5))
config = TrainConfig.of(lr=1e-4, tol=1e-5, adjoint_tol=1e-6)
config, model = load_run("runs/deq-foe")   # the model holds the trained parameters
sol = reconstruct(model, config.make_task(), y)

# a grid of configurations, trained as one compiled (vmapped) program
sweep = train_sweep(TrainConfig(model="bilevel", arch="dense", dataset="mnist"),
                    {"gamma": [0.1, 1.0], "sigma": [0.05, 0.1]}, "runs/sweep")
```
"""

from ._checkpoint import CHECKPOINT as CHECKPOINT
from ._checkpoint import CONFIG as CONFIG
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import RunExistsError as RunExistsError
from ._checkpoint import atomic_write_text as atomic_write_text
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import read_header as read_header
from ._checkpoint import save_checkpoint as save_checkpoint
from ._config import ADJOINTS as ADJOINTS
from ._config import DEFAULT_ADJOINT as DEFAULT_ADJOINT
from ._config import FLAT_NAMES as FLAT_NAMES
from ._config import JAC_KINDS as JAC_KINDS
from ._config import MODELS as MODELS
from ._config import SCHEDULES as SCHEDULES
from ._config import SECTIONS as SECTIONS
from ._config import SOLVERS as SOLVERS
from ._config import AdjointConfig as AdjointConfig
from ._config import DataConfig as DataConfig
from ._config import OptimConfig as OptimConfig
from ._config import PenaltyConfig as PenaltyConfig
from ._config import SolverConfig as SolverConfig
from ._config import TrainConfig as TrainConfig
from ._config import flat_name as flat_name
from ._config import setting_names as setting_names
from ._data import Examples as Examples
from ._data import NoisyParts as NoisyParts
from ._data import batch_indices as batch_indices
from ._data import make_dataset_parts as make_dataset_parts
from ._data import make_datasets as make_datasets
from ._loop import AdjointFailureError as AdjointFailureError
from ._loop import TrainResult as TrainResult
from ._loop import build_instance as build_instance
from ._loop import load_run as load_run
from ._loop import read_metrics as read_metrics
from ._loop import retarget as retarget
from ._loop import train as train
from ._step import TrainState as TrainState
from ._step import TrainStep as TrainStep
from ._step import evaluate as evaluate
from ._step import init_state as init_state
from ._step import make_loss_fn as make_loss_fn
from ._step import make_optimizer as make_optimizer
from ._step import make_schedule as make_schedule
from ._step import make_train_step as make_train_step
from ._step import reconstruct as reconstruct
from ._step import solve_batch as solve_batch
from ._step import step_body as step_body
from ._sweep import GridError as GridError
from ._sweep import SweepResult as SweepResult
from ._sweep import SweepState as SweepState
from ._sweep import SweepStep as SweepStep
from ._sweep import expand_grid as expand_grid
from ._sweep import grid_keys as grid_keys
from ._sweep import load_sweep as load_sweep
from ._sweep import reconstruct_stacked as reconstruct_stacked
from ._sweep import stack as stack
from ._sweep import train_sweep as train_sweep
from ._sweep import unstack as unstack

__all__ = [
    "AdjointFailureError",
    "ADJOINTS",
    "CHECKPOINT",
    "CONFIG",
    "DEFAULT_ADJOINT",
    "FLAT_NAMES",
    "JAC_KINDS",
    "MODELS",
    "SCHEDULES",
    "SECTIONS",
    "SOLVERS",
    "AdjointConfig",
    "CheckpointError",
    "DataConfig",
    "Examples",
    "GridError",
    "NoisyParts",
    "OptimConfig",
    "PenaltyConfig",
    "RunExistsError",
    "SolverConfig",
    "SweepResult",
    "SweepState",
    "SweepStep",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "atomic_write_text",
    "batch_indices",
    "build_instance",
    "evaluate",
    "expand_grid",
    "flat_name",
    "grid_keys",
    "init_state",
    "load_checkpoint",
    "load_run",
    "load_sweep",
    "make_dataset_parts",
    "make_datasets",
    "make_loss_fn",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "read_metrics",
    "read_header",
    "reconstruct",
    "reconstruct_stacked",
    "retarget",
    "save_checkpoint",
    "setting_names",
    "solve_batch",
    "stack",
    "step_body",
    "train",
    "train_sweep",
    "unstack",
]
