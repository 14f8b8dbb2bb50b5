"""The run directory: the files :func:`jaxinv.train.train` writes, checking and loading a run, and
its standard figures.

A run directory holds::

    config.json      the configuration (:meth:`jaxinv.train.TrainConfig.to_json`)
    metrics.jsonl    one JSON record per line (training steps, validation, the degraded input)
    checkpoint.eqx   the last checkpoint: a header with the configuration, then the parameters
                     and the optimiser state (:mod:`jaxinv.train._checkpoint`)
    figures/         the figures of :func:`run_figures`

A sweep's directory (:func:`jaxinv.train.train_sweep`) holds ``sweep.json`` instead of
``config.json``. The file names are defined with the checkpoint code that writes them
(``jaxinv.train`` sits below this module) and are imported from here everywhere else.

```python
from jaxinv import runs

runs.is_run_dir("runs/deq-foe")                       # True
config, model = runs.load_run("runs/deq-foe")        # the model with the trained parameters
runs.run_figures("runs/deq-foe")                     # runs/deq-foe/figures/*.png
```
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .models import as_dict
from .plots import (
    filter_grid,
    iteration_curves,
    read_metrics,
    reconstruction_grid,
    training_curves,
)
from .train import load_run, make_datasets, reconstruct
from .train._checkpoint import CHECKPOINT, CONFIG, FIGURES, METRICS

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "FIGURES",
    "METRICS",
    "NotARunError",
    "check_run_dir",
    "is_run_dir",
    "load_run",
    "run_figures",
]


class NotARunError(ValueError):
    """A path is not a run directory; the message says what to give instead."""


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by :func:`jaxinv.train.train` (it holds a
    checkpoint)."""
    p = Path(path)
    return p.is_dir() and (p / CHECKPOINT).is_file()


def check_run_dir(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a ``Path`` or raise :class:`NotARunError` if it is not a run."""
    p = Path(path)
    if not p.exists():
        raise NotARunError(
            f"run directory {str(p)!r} does not exist; train one with "
            f"'jaxinv train --task denoise --model bilevel --out {p}'"
        )
    if not p.is_dir():
        raise NotARunError(f"{str(p)!r} is a file, not a run directory; give the --out of a run")
    if not (p / CHECKPOINT).is_file():
        raise NotARunError(
            f"{str(p)!r} is not a jaxinv run directory (no {CHECKPOINT}); give the --out "
            "directory of 'jaxinv train'"
        )
    return p


def run_figures(
    run_dir: str | os.PathLike[str],
    *,
    reconstructions: bool = True,
    max_images: int = 4,
) -> list[Path]:
    """Write the standard figures of a training run into ``RUN/figures/`` and return their paths:
    ``curves.png`` (loss and PSNR), ``iterations.png`` (forward/backward iterations and
    residuals), ``filters_K.png`` / ``filters_C.png`` (learned convolution banks; for the dense
    model the first rows of ``W`` / columns of ``V`` as images) and, with ``reconstructions``,
    ``reconstructions.png`` (ground truth / degraded / reconstruction of validation examples).
    """

    run = Path(run_dir)
    fig_dir = run / FIGURES
    config, model = load_run(run)
    records = read_metrics(run / METRICS)
    params = as_dict(model)
    label = f"{config.model} / {config.arch} / {config.task}"
    out = [
        training_curves(fig_dir / "curves.png", records, title=label),
        iteration_curves(fig_dir / "iterations.png", records, title=label),
    ]
    h, w = model.image_shape
    banks = {
        "K": params.get("K"),
        "C": params.get("C"),
        "W": None if params.get("W") is None else np.asarray(params["W"])[:16].reshape(-1, h, w),
        "V": None if params.get("V") is None else np.asarray(params["V"]).T[:16].reshape(-1, h, w),
    }
    for name, bank in banks.items():
        if bank is not None and np.ndim(bank) == 3:
            what = "rows of W" if name == "W" else "columns of V" if name == "V" else "filters"
            title = f"{label}: {name} ({np.shape(bank)[0]} {what})"
            out.append(filter_grid(fig_dir / f"filters_{name}.png", bank, title=title))
    if reconstructions:
        task = config.make_task()
        _, val = make_datasets(config, task)
        n = min(max_images, len(val))
        sol = reconstruct(model, task, val.y[:n], solver=config.forward_solver())
        y = np.asarray(task.degraded_view(val.y[:n]))
        lo = config.dataset_info.lo
        out.append(
            reconstruction_grid(
                fig_dir / "reconstructions.png",
                {"ground truth": val.x[:n], "degraded": y, config.model: sol.value},
                value_range=(lo, lo + config.data_range),
                reference="ground truth",
            )
        )
    return out
