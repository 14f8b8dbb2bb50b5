"""Sweeps end to end: train a grid in one compiled program, evaluate every configuration on the
test split, and write a results table.

:func:`run_sweep` is :func:`jaxinv.train.train_sweep` followed by :func:`evaluate_sweep`, which
degrades the test images of the run's dataset per configuration (its own noise level, the same
seeded noise draw for all) and reconstructs them with every trained model at once (one ``vmap``
over the configurations), and writes

* ``DIR/results.json``: the base configuration, the grid, and one row per configuration
  (settings, status, test loss, PSNR of the reconstruction and of the input, the converged
  fractions of the forward and adjoint solves in training and of the forward solves on the test
  images, mean iterations);
* ``DIR/results.md``: the same as a markdown table, with the failures and their reasons.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .evaluate import DEFAULT_CROP, degrade_images, held_out_images
from .metrics import psnr, ssim
from .train import (
    RunExistsError,
    SweepResult,
    TrainConfig,
    load_sweep,
    reconstruct_stacked,
    retarget,
    stack,
    train_sweep,
)
from .train._checkpoint import atomic_write_text


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else math.nan


def evaluate_sweep(
    result: SweepResult,
    *,
    crop: int = DEFAULT_CROP,
    max_images: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per configuration of a trained sweep: its settings and status, its test-split
    scores (as :func:`jaxinv.evaluate.evaluate_run` computes them: image ``i`` degraded with
    noise key ``fold_in(PRNGKey(seed), i)`` at the configuration's noise level) and its training
    statistics (means over the steps it trained)."""
    configs = result.configs
    names, clean = held_out_images(configs[0], crop=crop, max_images=max_images)
    tasks = [c.make_task() for c in configs]
    ys = [degrade_images(task, clean, seed) for task in tasks]
    dr = configs[0].data_range
    solver = configs[0].forward_solver()
    per_image: dict[str, np.ndarray] = {
        k: np.full((len(configs), len(clean)), np.nan)
        for k in ("mse", "psnr", "ssim", "input_psnr", "iterations", "converged")
    }
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(clean):
        h, w = np.shape(x)
        groups.setdefault((h, w), []).append(i)
    for shape, idx in groups.items():
        models = stack([retarget(c, result.model(g), shape) for g, c in enumerate(configs)])
        dtype = jax.tree.leaves(models.params())[0].dtype
        x = jnp.asarray(np.stack([clean[i] for i in idx]), dtype)
        y = jnp.stack([jnp.stack([ys[g][i] for i in idx]) for g in range(len(configs))])
        y = y.astype(dtype)
        sol = reconstruct_stacked(models, y, solver)
        xb = jnp.broadcast_to(x, sol.value.shape)
        seen = jnp.stack([t.degraded_view(y[g]) for g, t in enumerate(tasks)])
        cols = np.asarray(idx)
        per_image["mse"][:, cols] = np.asarray(jnp.mean(jnp.square(sol.value - xb), axis=(-2, -1)))
        per_image["psnr"][:, cols] = np.asarray(psnr(sol.value, xb, dr))
        per_image["ssim"][:, cols] = np.asarray(ssim(sol.value, xb, dr))
        per_image["input_psnr"][:, cols] = np.asarray(psnr(seen, xb, dr))
        per_image["iterations"][:, cols] = np.asarray(sol.stats.iterations)
        per_image["converged"][:, cols] = np.asarray(sol.stats.converged)
    rows = []
    for g, (settings, config) in enumerate(zip(result.settings, configs, strict=True)):
        train_recs = result.records(g)
        failure = result.failures.get(g)
        rows.append(
            {
                "index": g,
                "settings": dict(settings),
                "task": config.task,
                "arch": config.arch,
                "model": config.model,
                "status": "failed" if failure else "ok",
                "failed_step": failure["step"] if failure else None,
                "failure": failure["reason"] if failure else None,
                "steps_trained": train_recs[-1]["step"] if train_recs else 0,
                "test_images": len(clean),
                "test_loss": float(np.mean(per_image["mse"][g])),
                "psnr": float(np.mean(per_image["psnr"][g])),
                "ssim": float(np.mean(per_image["ssim"][g])),
                "input_psnr": float(np.mean(per_image["input_psnr"][g])),
                "converged_test": float(np.mean(per_image["converged"][g])),
                "fwd_iters_test": float(np.mean(per_image["iterations"][g])),
                "final_train_loss": float(train_recs[-1]["loss"]) if train_recs else math.nan,
                "fwd_converged_train": _mean(train_recs, "fwd_converged"),
                "bwd_converged_train": _mean(train_recs, "bwd_converged"),
                "fwd_iters_train": _mean(train_recs, "fwd_iters"),
                "bwd_iters_train": _mean(train_recs, "bwd_iters"),
            }
        )
    return rows


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _f(v: Any, spec: str) -> str:
    return format(v, spec) if _finite(v) else "–"


def format_markdown(rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> str:
    """``results.md``: what was swept, one table row per configuration, and the failures."""
    keys = list(info["grid"])
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [
        f"# Sweep: {info['model']} / {info['arch']}, {info['task']} ({info['dataset']})",
        "",
        f"{len(rows)} configurations of the grid "
        + " × ".join(
            f"{k} ∈ {{{', '.join(str(v) for v in vals)}}}" for k, vals in info["grid"].items()
        )
        + f", trained in one compiled program for {info['steps']} steps; {len(rows) - len(ok)} "
        f"failed. Test split: {info['test_images']} images. {info['date']} · "
        f"{info['duration_s']:.0f} s (training {info['train_s']:.0f} s)"
        + (f" · `{info['command']}`" if info.get("command") else ""),
        "",
        "| # | "
        + " | ".join(keys)
        + " | status | test loss | PSNR (dB) | input PSNR | converged train fwd/bwd "
        "| converged test | iters train fwd/bwd | iters test |",
        "|---:|" + "---:|" * len(keys) + "---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"failed @ {r['failed_step']}"
        lines.append(
            f"| {r['index']} | "
            + " | ".join(str(r["settings"][k]) for k in keys)
            + f" | {status} | {_f(r['test_loss'], '.4g')} | {_f(r['psnr'], '.2f')} "
            f"| {_f(r['input_psnr'], '.2f')} | {_f(r['fwd_converged_train'], '.0%')} / "
            f"{_f(r['bwd_converged_train'], '.0%')} | {_f(r['converged_test'], '.0%')} "
            f"| {_f(r['fwd_iters_train'], '.1f')} / {_f(r['bwd_iters_train'], '.1f')} "
            f"| {_f(r['fwd_iters_test'], '.1f')} |"
        )
    scored = [r for r in ok if all(_finite(r[k]) for k in ("test_loss", "psnr", "input_psnr"))]
    if scored:
        low = min(scored, key=lambda r: r["test_loss"])
        gain = max(scored, key=lambda r: r["psnr"] - r["input_psnr"])
        lines += [
            "",
            f"Lowest test loss: configuration {low['index']} {low['settings']}; largest PSNR "
            f"gain over its input: configuration {gain['index']} {gain['settings']} "
            f"({gain['psnr'] - gain['input_psnr']:+.2f} dB).",
        ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failures (frozen where they failed; the others trained on)", ""]
        lines += [f"- {r['index']} {r['settings']}: {r['failure']}" for r in failed]
    lines += [
        "",
        "Columns: *test loss* is the mean squared error of the reconstructions of the test split "
        "(degraded at the configuration's noise level with seeded noise); *input PSNR* that of "
        "the degraded input; *converged* the fraction of solves that reached the tolerance (in "
        "training: forward / adjoint, averaged over the steps trained); *iters* the mean solver "
        "iterations. A failed configuration is evaluated with the parameters it was frozen "
        "with.",
    ]
    return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def train_seconds(result: SweepResult) -> float:
    """Seconds the sweep spent in its training steps, summed over every process that trained
    it (the ``time`` of its last ``train`` record), so a reused or resumed sweep keeps it."""
    return max((float(r["time"]) for r in result.history if r.get("kind") == "train"), default=0.0)


def run_sweep(
    base: TrainConfig,
    grid: Mapping[str, Sequence[float]],
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
    until: int | None = None,
    crop: int = DEFAULT_CROP,
    max_images: int | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the sweep (:func:`jaxinv.train.train_sweep`; a finished sweep of the same base and
    grid in ``out_dir`` is reused unless ``overwrite``), evaluate it (:func:`evaluate_sweep`)
    and write ``results.json`` and ``results.md`` (see the module docstring).

    Returns ``{"result", "rows", "markdown", "duration_s"}`` (``rows`` and ``markdown`` are
    ``None`` when ``until`` stopped the sweep before its end)."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    try:
        result = train_sweep(
            base, grid, out, progress=progress, resume=resume, overwrite=overwrite, until=until
        )
    except RunExistsError:
        result = load_sweep(out)
        if not result.finished or result.base.differences(base):
            raise
    if not result.finished:
        return {"result": result, "rows": None, "markdown": None, "duration_s": 0.0}
    rows = evaluate_sweep(result, crop=crop, max_images=max_images)
    duration = time.perf_counter() - t0
    info = {
        "task": base.task,
        "arch": base.arch,
        "model": base.model,
        "dataset": base.data.dataset,
        "steps": base.steps,
        "grid": {k: list(v) for k, v in result.grid.items()},
        "test_images": rows[0]["test_images"] if rows else 0,
        "test_crop": crop,
        "test_max_images": max_images,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "duration_s": duration,
        "train_s": train_seconds(result),
        "command": command,
        "base": base.to_dict(),
    }
    markdown = format_markdown(rows, info)
    atomic_write_text(out / "results.md", markdown)
    text = json.dumps(json_safe({"settings": info, "rows": rows}), indent=2) + "\n"
    atomic_write_text(out / "results.json", text)
    return {"result": result, "rows": rows, "markdown": markdown, "duration_s": duration}


__all__ = ["evaluate_sweep", "format_markdown", "json_safe", "run_sweep"]
