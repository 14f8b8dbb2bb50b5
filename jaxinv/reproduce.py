"""The paper's comparison, bilevel learning vs deep equilibrium models, as one function.

For every task (denoise, inpaint, deblur) and architecture -- the dense model on MNIST digits and
the normalised convolutional models (2 filters 11x11, 30 filters 3x3) on natural-image patches
(Riccio, Ehrhardt & Benning, arXiv 2206.13193) -- train the tied (bilevel) and the untied (DEQ)
map with identical settings, evaluate both on the held-out test split, and write

* ``DIR/results.md``: a markdown table (task, architecture, model, test loss, PSNR, SSIM,
  forward/backward iterations, time per step and per epoch, parameter count, converged
  fraction) and a bilevel-vs-DEQ summary;
* ``DIR/results.json``: the same rows and the settings;
* ``DIR/figures/``: comparison bar charts and a reconstruction grid per run;
* ``DIR/runs/<task>-<arch>-<model>/``: each run (config, metrics, checkpoint, its figures).

``quick=True`` uses tiny settings (2 steps on a few small examples) so the whole grid finishes in
minutes on two CPU cores; it checks the pipeline, it does not measure the methods.

:func:`run_grid_comparison` (``jaxinv reproduce --grid``) is the paper's other figure: per task,
the bilevel and the DEQ model swept over the paper's grid of configurations (dense MNIST: noise ×
fixed step × γ, :data:`PAPER_GRID`), each model's grid trained in one compiled program
(:func:`jaxinv.train.train_sweep`), and the configurations' test losses drawn as box plots
(:func:`jaxinv.plots.box_plot`) with the failed ones and those above :data:`DROP_ABOVE` dropped.

The measured durations (full grid and ``quick``, on two CPU cores) are in the README's
section on ``jaxinv reproduce`` and in ``benchmarks/results/reproduce.md``; the paper's own
budgets (100 epochs on MNIST, i.e. ``--steps 4000`` for the dense runs; 500 epochs on faces for
the convolutional ones) are 20x the full run and more.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .data import list_image_files
from .evaluate import evaluate_run
from .plots import box_plot, comparison_bars
from .runs import FIGURES, run_figures
from .sweep import json_safe, run_sweep, train_seconds
from .tasks import TASKS
from .train import (
    MODELS,
    RunExistsError,
    TrainConfig,
    atomic_write_text,
    expand_grid,
    load_run,
    read_metrics,
    train,
)

#: Architectures of the comparison and the dataset each is trained on.
ARCHS = ("dense", "conv2x11", "conv30x3")
DATASET = {"dense": "mnist", "conv2x11": "natural", "conv30x3": "natural"}

# Training settings, identical for bilevel and DEQ. As in the paper, the adjoint system is solved
# by the same iteration as the forward problem: Anderson acceleration (memory 5) for both, which
# the paper uses on MNIST (its convolutional experiments use plain fixed-point iteration, which
# converges far more slowly). Full: the paper's MNIST optimiser and tolerances (Adam, cosine
# decay, batch 100, tol 1e-3, <= 50 iterations; but lr 1e-4, not 1e-3, see below, and the
# cells in _CELLS) for 5 of its 100 epochs; for the
# convolutional models 64x64 natural-image patches instead of CelebA faces, tol 1e-4 (<= 300
# iterations) instead of 1e-14, and 150 steps instead of 500 epochs. Sized so the whole grid
# runs in under an hour on two CPU cores.
# A cell whose adjoints keep failing trains on (warned) so that the table reports it.
_SOLVER = dict(
    solver="anderson",
    adjoint="anderson",
    memory=5,
    schedule="cosine",
    on_adjoint_failure="warn",
)
_FULL: dict[str, dict[str, Any]] = {
    "mnist": dict(
        _SOLVER,
        num_train=4000,
        num_val=100,
        batch_size=100,
        steps=200,
        # lr 1e-4, not the paper's 1e-3: at 1e-3 Adam tripled ‖W‖ within 30 steps, killed
        # the ReLUs and untied the DEQ deblurring map until every solve diverged
        # (benchmarks/results/settings.md; the denoising cell overrides it below).
        lr=1e-4,
        lr_final=1e-7,
        tol=1e-3,
        max_iter=50,
        adjoint_tol=1e-3,
        adjoint_max_iter=50,
        eval_every=50,
        checkpoint_every=50,
    ),
    "natural": dict(
        _SOLVER,
        patch_size=64,
        num_train=128,
        num_val=8,
        batch_size=8,
        steps=150,
        lr=3e-3,
        lr_final=3e-5,
        tol=1e-4,
        max_iter=300,
        adjoint_tol=1e-4,
        adjoint_max_iter=300,
        eval_every=50,
        checkpoint_every=50,
    ),
}
# Quick: the same solvers on a few tiny examples for 2 steps. The test images have the shape and
# count of the validation set, so their solve reuses the validation solve's compilation.
_QUICK: dict[str, dict[str, Any]] = {
    "mnist": dict(
        _FULL["mnist"],
        num_train=32,
        num_val=16,
        batch_size=8,
        steps=2,
        eval_every=0,
        checkpoint_every=0,
    ),
    "natural": dict(
        _FULL["natural"],
        patch_size=32,
        num_train=8,
        num_val=4,
        batch_size=4,
        steps=2,
        max_iter=100,
        adjoint_max_iter=100,
        eval_every=0,
        checkpoint_every=0,
    ),
}
# Test images: all 500 MNIST test digits / the 4 test photographs centre-cropped to 128 (full);
# 16 digits / the 4 photographs cropped to 32 (quick).
_EVAL = {
    False: {"mnist": dict(max_images=None, crop=128), "natural": dict(max_images=None, crop=128)},
    True: {"mnist": dict(max_images=16, crop=32), "natural": dict(max_images=4, crop=32)},
}

# Settings of single (task, architecture) cells over those of their dataset, for both models
# (bilevel and DEQ keep identical settings) and both modes.
_INVERSE = dict(tol=1e-4, max_iter=200, adjoint="gmres", adjoint_max_iter=200)
_CELLS: dict[tuple[str, str], dict[str, Any]] = {
    # Dense inpainting and deblurring: a forward residual of 1e-3 stopped far from the fixed
    # point (the tied map's spectral radius is 0.994-0.996) and the Anderson adjoint did not
    # converge within its cap; GMRES does, for both models.
    ("inpaint", "dense"): _INVERSE,
    ("deblur", "dense"): _INVERSE,
    # Dense MNIST denoising: ReLU units all switched off to undo their random start and got no
    # gradient again; the identity activation with the pre-activation centred on the background
    # (W(u + 1) + b) learns. conv30x3 denoising: γ = 1 over-smooths with random normalised
    # filters, which training cannot undo with γ fixed; γ = 0.25, learned. The measurements:
    # benchmarks/results/settings.md.
    ("denoise", "dense"): dict(
        arch_options={"activation": "identity", "center": -1.0}, lr=1e-3, lr_final=1e-6
    ),
    ("denoise", "conv30x3"): dict(arch_options={"gamma": 0.25, "learn": ["gamma"]}),
    # conv2x11 inpainting: at χ = 100 the tanh units saturate on every edge, the energy has
    # almost no curvature at the missing pixels there, and no adjoint solver converged; χ = 10
    # keeps it. conv2x11 deblurring: GMRES(60) converges where Anderson ran into its cap.
    # The measurements: benchmarks/results/settings.md.
    ("inpaint", "conv2x11"): dict(arch_options={"chi": 10.0}, adjoint="gmres", adjoint_restart=60),
    ("deblur", "conv2x11"): dict(adjoint="gmres", adjoint_restart=60),
}


def dataset_settings(
    dataset: str, *, quick: bool = False, task: str | None = None, arch: str | None = None
) -> dict[str, Any]:
    """The comparison's training settings for ``dataset`` (``quick``: the tiny ones), with the
    ``(task, arch)`` cell's own settings over them when both are given (:func:`cell_settings`)."""
    kw = copy.deepcopy((_QUICK if quick else _FULL)[dataset])
    if task is not None and arch is not None:
        kw.update(cell_settings(task, arch))
    return kw


def eval_settings(dataset: str, *, quick: bool = False) -> dict[str, Any]:
    """The test-split settings of the comparison (``crop``, ``max_images``) for ``dataset``."""
    return dict(_EVAL[quick][dataset])


def cell_settings(task: str, arch: str) -> dict[str, Any]:
    """The settings of the ``(task, arch)`` cell that override its dataset's (see ``_CELLS``)."""
    return copy.deepcopy(_CELLS.get((task, arch), {}))


def experiment_config(
    task: str,
    arch: str,
    model: str,
    *,
    quick: bool = False,
    steps: int | None = None,
    images: str | os.PathLike[str] | None = None,
):
    """The :class:`jaxinv.train.TrainConfig` of one cell of the comparison: its dataset's
    settings, then the cell's own (:func:`cell_settings`); ``steps`` overrides the number of
    training steps; ``images`` (a folder) replaces the bundled photographs of the convolutional
    cells by the user's own (e.g. CelebA faces, as in the paper): their patches train, every
    10th image validates."""

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {list(ARCHS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    dataset = DATASET[arch]
    kw = dataset_settings(dataset, quick=quick, task=task, arch=arch)
    if steps is not None:
        kw["steps"] = int(steps)
    if images is not None:
        if dataset != "natural":
            raise ValueError(
                f"the {arch!r} cells train on {dataset} (the paper's dense model is fixed to "
                "28x28 digits); an image folder serves the convolutional cells "
                f"{[a for a in ARCHS if DATASET[a] == 'natural']}"
            )
        kw["train_images"] = str(images)
    return TrainConfig.of(task=task, model=model, arch=arch, dataset=dataset, **kw)


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else math.nan


def _timing(train_recs: Sequence[dict[str, Any]]) -> tuple[float, bool]:
    """Seconds per step excluding the first step (which includes compilation), and whether the
    first step had to be included (a one-step run)."""
    times = [float(r["time"]) for r in train_recs if "time" in r]
    steps = [int(r["step"]) for r in train_recs if "time" in r]
    if len(times) >= 2:
        return (times[-1] - times[0]) / (steps[-1] - steps[0]), False
    if times:
        return times[0], True
    return math.nan, True


def summarise_run(
    config: Any, history: Sequence[dict[str, Any]], evaluation: dict[str, Any], wall_s: float
) -> dict[str, Any]:
    """One row of the results table from a run's metrics and its test evaluation."""
    train_recs = [r for r in history if r.get("kind") == "train"]
    per_step, with_compile = _timing(train_recs)
    steps_per_epoch = math.ceil(config.data.num_train / config.batch_size)
    rec = evaluation["mean"]["reconstruction"]
    deg = evaluation["mean"]["degraded"]
    return {
        "task": config.task,
        "arch": config.arch,
        "model": config.model,
        "dataset": config.data.dataset,
        "adjoint": config.adjoint_method,
        "adjoint_tol": config.adjoint.tol,
        "adjoint_max_iter": config.adjoint.max_iter,
        "tol": config.forward.tol,
        "max_iter": config.forward.max_iter,
        "steps": config.steps,
        "test_images": len(evaluation["images"]),
        "test_loss": rec["mse"],
        "psnr": rec["psnr"],
        "ssim": rec["ssim"],
        "input_psnr": deg["psnr"],
        "input_ssim": deg["ssim"],
        "fwd_iters_test": rec["iterations"],
        "converged_test": rec["converged"],
        "fwd_iters_train": _mean(train_recs, "fwd_iters"),
        "bwd_iters_train": _mean(train_recs, "bwd_iters"),
        "fwd_converged_train": _mean(train_recs, "fwd_converged"),
        "bwd_converged_train": _mean(train_recs, "bwd_converged"),
        "final_train_loss": float(train_recs[-1]["loss"]) if train_recs else math.nan,
        "time_per_step_s": per_step,
        "time_per_step_includes_compile": with_compile,
        "time_per_epoch_s": per_step * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "num_params": evaluation["num_params"],
        "wall_s": wall_s,
    }


#: A run is flagged when fewer than this fraction of its solves converged.
MIN_CONVERGED = 0.9


def cell_warnings(row: dict[str, Any]) -> list[str]:
    """What is wrong with one row of the results, and what to change: adjoint solves that hit
    their cap in training (the gradients were then not implicit gradients), forward solves that
    did not converge (in training or on the test images), and a model that does not beat its
    own input (it stayed at, or fell below, the identity)."""
    name = f"{row['task']}-{row['arch']}-{row['model']}"
    out = []
    bwd = row.get("bwd_converged_train", math.nan)
    if isinstance(bwd, (int, float)) and bwd < MIN_CONVERGED:
        out.append(
            f"{name}: only {bwd:.0%} of the adjoint solves converged in training (adjoint="
            f"{row.get('adjoint')!r}, adjoint_tol={row.get('adjoint_tol')}, adjoint_max_iter="
            f"{row.get('adjoint_max_iter')}), so its gradients were not implicit gradients; "
            "raise adjoint_max_iter or use adjoint='gmres' (CG for a tied map)."
        )
    for key, where in (
        ("fwd_converged_train", "in training"),
        ("converged_test", "on the test set"),
    ):
        v = row.get(key, math.nan)
        if isinstance(v, (int, float)) and v < MIN_CONVERGED:
            out.append(
                f"{name}: only {v:.0%} of the forward solves converged {where} (tol="
                f"{row.get('tol')}, max_iter={row.get('max_iter')}); if the residuals grow the "
                "map is not a contraction (lower lr, keep the untied weights near the tied "
                "ones), otherwise raise max_iter."
            )
    gain = row.get("psnr", math.nan) - row.get("input_psnr", math.nan)
    if math.isfinite(gain) and gain < 0.05:
        out.append(
            f"{name}: test PSNR {row['psnr']:.2f} dB against {row['input_psnr']:.2f} for the "
            "input: the model did not learn (dead units, a regulariser too strong to be "
            "weakened, or a learning rate that destroys the initialisation)."
        )
    return out


def _f(v: Any, spec: str) -> str:
    if isinstance(v, (int, float)) and math.isfinite(v):
        return format(v, spec)
    return "–"


def format_markdown(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """``results.md``: the settings, the table and a bilevel-vs-DEQ summary."""
    lines = [
        "# Bilevel learning vs deep equilibrium models",
        "",
        f"Mode: **{'quick (pipeline check only: tiny settings, not a measurement)' if settings['quick'] else 'full'}**"  # noqa: E501
        f" · {settings['date']} · {settings['device']} · total {settings['duration_s']:.0f} s"
        f" · command: `{settings['command']}`",
        "",
        "| task | arch | data | model | test loss | PSNR (dB) | SSIM | input PSNR | fwd iters test"
        " | fwd iters train | bwd iters train | time/step (s) | time/epoch (s) | params"
        " | converged test | converged train fwd/bwd |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        star = "*" if r.get("time_per_step_includes_compile") else ""
        lines.append(
            f"| {r['task']} | {r['arch']} | {r['dataset']} | {r['model']} "
            f"| {_f(r['test_loss'], '.3e')} | {_f(r['psnr'], '.2f')} | {_f(r['ssim'], '.4f')} "
            f"| {_f(r['input_psnr'], '.2f')} | {_f(r['fwd_iters_test'], '.1f')} "
            f"| {_f(r['fwd_iters_train'], '.1f')} | {_f(r['bwd_iters_train'], '.1f')} "
            f"| {_f(r['time_per_step_s'], '.3f')}{star} | {_f(r['time_per_epoch_s'], '.2f')}{star} "
            f"| {r['num_params']:,} | {_f(r['converged_test'], '.0%')} "
            f"| {_f(r['fwd_converged_train'], '.0%')} / {_f(r['bwd_converged_train'], '.0%')} |"
        )
    lines += ["", "## Bilevel vs DEQ", ""]
    lines += [
        "| task | arch | ΔPSNR DEQ − bilevel (dB) | Δtest loss | time/step DEQ ÷ bilevel "
        "| bwd iters bilevel → DEQ |",
        "|---|---|---:|---:|---:|---:|",
    ]
    by_key = {(r["task"], r["arch"], r["model"]): r for r in rows}
    for task, arch in dict.fromkeys((r["task"], r["arch"]) for r in rows):
        b, d = by_key.get((task, arch, "bilevel")), by_key.get((task, arch, "deq"))
        if b is None or d is None:
            continue
        ratio = d["time_per_step_s"] / b["time_per_step_s"] if b["time_per_step_s"] else math.nan
        lines.append(
            f"| {task} | {arch} | {_f(d['psnr'] - b['psnr'], '+.2f')} "
            f"| {_f(d['test_loss'] - b['test_loss'], '+.2e')} | {_f(ratio, '.2f')} "
            f"| {_f(b['bwd_iters_train'], '.1f')} → {_f(d['bwd_iters_train'], '.1f')} |"
        )
    warnings = [w for r in rows for w in cell_warnings(r)]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += [
        "",
        "Columns: *test loss* is the mean squared error of the reconstructions of the test "
        "split (MNIST test digits on [−1, 1]; centre crops of the test photographs on [0, 1]) "
        "with seeded noise; *input PSNR* is that of the degraded input. *fwd iters test* are "
        "the forward solver's iterations at test time; *fwd/bwd iters train* the mean forward "
        "and adjoint iterations over the training steps. *time/step* excludes the first step, "
        "which includes compilation (`*`: a one-step run, compilation included); *time/epoch* "
        "= time/step × steps per epoch. *params* counts trainable parameters. *converged* is "
        "the fraction of solves that reached the tolerance. Bilevel and DEQ use identical "
        "settings; as in the paper the adjoint is solved by the forward problem's iteration "
        "(here Anderson acceleration), except in the cells listed under *Settings per cell*.",
        "",
        "Settings per dataset: "
        + "; ".join(
            f"{ds}: " + ", ".join(f"{k}={v}" for k, v in cfg.items())
            for ds, cfg in settings["train_settings"].items()
        ),
    ]
    if settings.get("images") or settings.get("test_images"):
        tests = settings.get("test_images")
        lines += [
            "",
            "Data of the convolutional cells: trained on "
            + (
                f"patches of the images in `{settings['images']}` (every 10th validates)"
                if settings.get("images")
                else "the bundled photographs"
            )
            + "; tested on "
            + (f"{len(tests)} images of the user's at full size" if tests else "the test crops")
            + ".",
        ]
    cells = settings.get("cell_settings") or {}
    if cells:
        lines += [
            "",
            "Settings per cell (over the dataset's, both models): "
            + "; ".join(
                f"{cell}: " + ", ".join(f"{k}={v}" for k, v in cfg.items())
                for cell, cfg in cells.items()
            ),
        ]
    return "\n".join(lines) + "\n"


def _device() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return f"{jax.default_backend()} ({kind}, {os.cpu_count()} CPU cores, {platform.machine()})"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_reproduction(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    steps: int | None = None,
    tasks: Sequence[str] = TASKS,
    archs: Sequence[str] = ARCHS,
    models: Sequence[str] = MODELS,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
    images: str | os.PathLike[str] | None = None,
    test_images: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every ``(task, arch, model)`` and write the results (see the module
    docstring). Finished runs already in ``DIR/runs`` with the same configuration are reused
    unless ``overwrite``; unfinished ones are resumed. ``images``: train the convolutional
    cells on this folder's images (:func:`experiment_config`); ``test_images``: test them on
    this folder's images at full size instead of the bundled test crops.

    Returns ``{"rows", "settings", "duration_s", "markdown"}``.
    """

    out = Path(out_dir)
    test_files = None if test_images is None else [str(p) for p in list_image_files(test_images)]
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cells = [(t, a, m) for t in tasks for a in archs for m in models]
    rows = []
    for n, (task, arch, model) in enumerate(cells, 1):
        config = experiment_config(task, arch, model, quick=quick, steps=steps, images=images)
        name = f"{task}-{arch}-{model}"
        run_dir = out / "runs" / name
        log(f"[{n}/{len(cells)}] {name}: training {config.steps} steps")
        t0 = time.perf_counter()
        try:
            result = train(config, run_dir, progress=progress, resume=True, overwrite=overwrite)
            history = result.history
        except RunExistsError:
            if load_run(run_dir)[0].differences(config):
                raise
            log(f"    reusing the finished run in {run_dir}")
            history = read_metrics(run_dir)
        wall = time.perf_counter() - t0
        own = test_files is not None and DATASET[arch] == "natural"
        evaluation = evaluate_run(
            run_dir,
            images=test_files if own else None,
            tv=False,
            seed=0,
            figure=out / FIGURES / f"{name}.png",
            **_EVAL[quick][DATASET[arch]],
        )
        run_figures(run_dir, reconstructions=False)
        row = summarise_run(config, history, evaluation, wall)
        rows.append(row)
        for warning in cell_warnings(row):
            log(f"    warning: {warning}")
        log(
            f"    {wall:.1f} s; test PSNR {row['psnr']:.2f} dB (input {row['input_psnr']:.2f}), "
            f"{row['time_per_step_s']:.3f} s/step, fwd {row['fwd_iters_train']:.1f} / "
            f"bwd {row['bwd_iters_train']:.1f} iterations"
        )
    duration = time.perf_counter() - t_start
    settings = {
        "quick": quick,
        "steps_override": steps,
        "tasks": list(tasks),
        "archs": list(archs),
        "models": list(models),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": _device(),
        "duration_s": duration,
        "command": "jaxinv reproduce"
        + (" --quick" if quick else "")
        + (f" --steps {steps}" if steps else "")
        + (f" --images {images}" if images is not None else "")
        + (f" --test-images {test_images}" if test_images is not None else ""),
        "images": None if images is None else str(images),
        "test_images": test_files,
        "train_settings": {
            ds: {**(_QUICK if quick else _FULL)[ds], **({"steps": steps} if steps else {})}
            for ds in dict.fromkeys(DATASET[a] for a in archs)
        },
        "cell_settings": {
            f"{t}-{a}": cell_settings(t, a) for t in tasks for a in archs if cell_settings(t, a)
        },
        "eval_settings": {ds: _EVAL[quick][ds] for ds in dict.fromkeys(DATASET[a] for a in archs)},
    }
    markdown = format_markdown(rows, settings)
    atomic_write_text(out / "results.md", markdown)
    atomic_write_text(
        out / "results.json", json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n"
    )
    if rows:
        comparison_bars(
            out / FIGURES / "comparison_quality.png",
            rows,
            metrics=("psnr", "ssim", "test_loss"),
            title="test quality: bilevel (blue) vs DEQ (orange)",
        )
        comparison_bars(
            out / FIGURES / "comparison_cost.png",
            rows,
            metrics=("time_per_step_s", "fwd_iters_train", "bwd_iters_train"),
            title="cost: bilevel (blue) vs DEQ (orange)",
        )
    return {"rows": rows, "settings": settings, "duration_s": duration, "markdown": markdown}


# ---- the paper's grids: box plots of the test losses of many configurations ------------------

#: The paper's grid per architecture: MNIST dense, noise ε × fixed step τ × γ (λ = 1), 75
#: configurations per task and model.
PAPER_GRID: dict[str, dict[str, list[float]]] = {
    "dense": {
        "sigma": [0.0, 0.05, 0.1, 0.5, 1.0],
        "tau": [0.01, 0.1, 0.9, 1.1, 2.1],
        "gamma": [0.1, 0.5, 1.0],
    }
}
#: ``quick=True``: four configurations of it (a pipeline check).
QUICK_GRID: dict[str, dict[str, list[float]]] = {"dense": {"tau": [0.1, 0.9], "gamma": [0.5, 1.0]}}
#: The paper drops the configurations whose loss exceeds this from its box plots.
DROP_ABOVE = 0.5


def box_summary(losses: Sequence[float], drop_above: float | None = DROP_ABOVE) -> dict[str, Any]:
    """What a box of :func:`jaxinv.plots.box_plot` shows: the counts (configurations, failed
    (non-finite), dropped above ``drop_above``, kept) and the quartiles of the kept values."""
    v = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(v)
    keep = finite & (v <= drop_above if drop_above is not None else True)
    kept = v[keep]
    q = np.percentile(kept, [0, 25, 50, 75, 100]) if kept.size else [math.nan] * 5
    return {
        "configurations": int(v.size),
        "failed": int((~finite).sum()),
        "dropped_above": int((finite & ~keep).sum()),
        "kept": int(kept.size),
        "min": float(q[0]),
        "q1": float(q[1]),
        "median": float(q[2]),
        "q3": float(q[3]),
        "max": float(q[4]),
    }


def run_grid_comparison(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    steps: int | None = None,
    tasks: Sequence[str] = TASKS,
    archs: Sequence[str] = ("dense",),
    grid: dict[str, list[float]] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """The paper's box plots: for every ``(task, arch)``, sweep the bilevel and the DEQ model over
    the paper's grid (:data:`PAPER_GRID`; :data:`QUICK_GRID` with ``quick``; ``grid`` replaces
    axes of it) with the cell's settings (:func:`experiment_config`), each model's grid in ONE
    compiled program (:func:`jaxinv.sweep.run_sweep`), and draw the test losses of the
    configurations as box plots, bilevel vs DEQ, dropping failed configurations and those above
    :data:`DROP_ABOVE`.

    Writes ``DIR/grid/<task>-<arch>-<model>/`` (each sweep with its ``results.md``),
    ``DIR/figures/grid_test_loss.png``, ``DIR/grid_results.json`` and ``DIR/grid_results.md``.
    Finished sweeps already there are reused unless ``overwrite``. Returns ``{"cells",
    "settings", "figure", "markdown", "duration_s"}``."""
    for arch in archs:
        if arch not in PAPER_GRID:
            raise ValueError(
                f"the paper gives a grid for {sorted(PAPER_GRID)} only, not {arch!r}; sweep other "
                "architectures with 'jaxinv sweep --grid KEY=VALUES'"
            )
    out = Path(out_dir)
    t_start = time.perf_counter()
    cells, panels = [], {}
    for task in tasks:
        for arch in archs:
            axes = {**(QUICK_GRID if quick else PAPER_GRID)[arch], **(grid or {})}
            losses = {}
            for model in MODELS:
                config = experiment_config(task, arch, model, quick=quick, steps=steps)
                name = f"{task}-{arch}-{model}"
                n = len(expand_grid(config, axes))
                log(f"{name}: {n} configurations x {config.steps} steps in one compiled sweep")
                t0 = time.perf_counter()
                done = run_sweep(
                    config,
                    axes,
                    out / "grid" / name,
                    progress=progress,
                    overwrite=overwrite,
                    command=_grid_command(quick, steps, grid, tasks),
                    **eval_settings(DATASET[arch], quick=quick),
                )
                rows = done["rows"]
                losses[model] = [r["test_loss"] if r["status"] == "ok" else math.nan for r in rows]
                summary = box_summary(losses[model])
                log(
                    f"    {time.perf_counter() - t0:.0f} s; {summary['failed']} failed, "
                    f"{summary['dropped_above']} above {DROP_ABOVE}, median test loss of the "
                    f"{summary['kept']} kept {summary['median']:.4g}"
                )
                cells.append(
                    {
                        "task": task,
                        "arch": arch,
                        "model": model,
                        "grid": axes,
                        "steps": config.steps,
                        "box": summary,
                        "duration_s": time.perf_counter() - t0,
                        "train_s": train_seconds(done["result"]),
                        "rows": rows,
                    }
                )
            panels[f"{task} ({arch})"] = losses
    figure = box_plot(
        out / FIGURES / "grid_test_loss.png",
        panels,
        drop_above=DROP_ABOVE,
        title=f"test loss per configuration, bilevel vs DEQ{' (quick)' if quick else ''}",
    )
    duration = time.perf_counter() - t_start
    settings = {
        "quick": quick,
        "steps_override": steps,
        "grid_override": grid,
        "drop_above": DROP_ABOVE,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": _device(),
        "duration_s": duration,
        "command": _grid_command(quick, steps, grid, tasks),
    }
    markdown = format_grid_markdown(cells, settings)
    atomic_write_text(out / "grid_results.md", markdown)
    safe = json_safe({"settings": settings, "cells": cells})
    atomic_write_text(out / "grid_results.json", json.dumps(safe, indent=2) + "\n")
    return {
        "cells": cells,
        "settings": settings,
        "figure": figure,
        "markdown": markdown,
        "duration_s": duration,
    }


def _grid_command(
    quick: bool,
    steps: int | None,
    grid: dict[str, list[float]] | None,
    tasks: Sequence[str] = TASKS,
) -> str:
    axes = " ".join(f"{k}={','.join(str(v) for v in vals)}" for k, vals in (grid or {}).items())
    return (
        "jaxinv reproduce --grid"
        + (f" {axes}" if axes else "")
        + (f" --tasks {' '.join(tasks)}" if tuple(tasks) != tuple(TASKS) else "")
        + (" --quick" if quick else "")
        + (f" --steps {steps}" if steps else "")
    )


def _largest_gain(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The configuration that gains most PSNR over its own input (comparable across noise
    levels, unlike the test loss), among those that did not fail."""
    ok = [
        r
        for r in rows
        if r["status"] == "ok" and all(_finite(r[k]) for k in ("psnr", "input_psnr"))
    ]
    return max(ok, key=lambda r: r["psnr"] - r["input_psnr"]) if ok else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def format_grid_markdown(cells: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """``grid_results.md``: one row per (task, arch, model) with its box's counts and
    quartiles, and the configuration with the largest PSNR gain over its input."""
    lines = [
        "# The paper's grids: bilevel vs DEQ over many configurations",
        "",
        f"{settings['date']} · {settings['device']} · total {settings['duration_s']:.0f} s · "
        f"command: `{settings['command']}`. Dropped from the boxes: failed configurations and "
        f"those with test loss > {settings['drop_above']}.",
        "",
        "| task | arch | model | grid | steps | training (s) | configurations | failed | > drop "
        "| kept | min | q1 | median | q3 | largest PSNR gain over the input |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cells:
        b = c["box"]
        best = _largest_gain(c["rows"])
        grid = " × ".join(f"{k} {len(v)}" for k, v in c["grid"].items())
        lines.append(
            f"| {c['task']} | {c['arch']} | {c['model']} | {grid} | {c['steps']} "
            f"| {c['train_s']:.0f} | {b['configurations']} | {b['failed']} "
            f"| {b['dropped_above']} | {b['kept']} "
            f"| {_f(b['min'], '.4g')} | {_f(b['q1'], '.4g')} | {_f(b['median'], '.4g')} "
            f"| {_f(b['q3'], '.4g')} | "
            + (f"{best['psnr'] - best['input_psnr']:+.2f} dB {best['settings']}" if best else "–")
            + " |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "ARCHS",
    "DATASET",
    "DROP_ABOVE",
    "MODELS",
    "PAPER_GRID",
    "QUICK_GRID",
    "box_summary",
    "cell_settings",
    "cell_warnings",
    "dataset_settings",
    "eval_settings",
    "experiment_config",
    "format_grid_markdown",
    "format_markdown",
    "run_grid_comparison",
    "run_reproduction",
    "summarise_run",
]
