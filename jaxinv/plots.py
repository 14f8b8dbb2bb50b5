"""Figures for runs and comparisons, written as PNG files with matplotlib's Agg backend.

Every function takes plain arrays or metric records, writes one PNG and returns its path; none
opens a window, so they work on headless machines and in tests. The figures of a whole run
directory (loading its checkpoint, reconstructing validation examples) are drawn by
:func:`jaxinv.runs.run_figures`.

* :func:`reconstruction_grid` -- ground truth / degraded / reconstruction (/ TV) per image;
* :func:`filter_grid` -- a learned filter bank ``(F, k, k)`` as a grid of small images;
* :func:`training_curves` -- loss and PSNR against the training step, from ``metrics.jsonl``;
* :func:`iteration_curves` -- forward and backward solver iterations against the training step;
* :func:`comparison_bars` -- one bar chart per metric, comparing several runs;
* :func:`box_plot` -- box plots of many values per group (a sweep's test losses per model).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from .metrics import psnr

Records = Sequence[Mapping[str, Any]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100, format="png")
    plt.close(fig)
    return p


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (one JSON object per line); blank or truncated lines
    (e.g. from an interrupted run) are skipped."""
    records = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _as_images(a: Any) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected an image (H, W) or a batch (N, H, W), got shape {a.shape}")
    return a


def reconstruction_grid(
    path: str | os.PathLike[str],
    columns: Mapping[str, Any],
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    reference: str | None = None,
    labels: Sequence[str] | None = None,
    max_images: int = 6,
) -> Path:
    """One row per image, one column per entry of ``columns`` (e.g. ``{"ground truth": x,
    "degraded": y, "reconstruction": x_hat, "TV": x_tv}``), each a batch ``(N, H, W)``.

    With ``reference`` (a key of ``columns``) every other panel is titled with its PSNR against
    it. ``labels`` name the rows; at most ``max_images`` rows are drawn. Values are shown in
    grey on ``value_range`` (clipped).
    """

    if not columns:
        raise ValueError("reconstruction_grid needs at least one column")
    cols = {name: _as_images(v) for name, v in columns.items()}
    n = min(min(len(v) for v in cols.values()), max_images)
    if reference is not None and reference not in cols:
        raise ValueError(f"reference {reference!r} is not one of the columns {list(cols)}")
    lo, hi = value_range
    plt = _pyplot()
    ncol = len(cols)
    fig, axes = plt.subplots(n, ncol, figsize=(2.4 * ncol, 2.4 * n + 0.3), squeeze=False)
    for i in range(n):
        for j, (name, batch) in enumerate(cols.items()):
            ax = axes[i, j]
            img = batch[i]
            ax.imshow(np.clip(img, lo, hi), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = name if i == 0 else ""
            if (
                reference is not None
                and name != reference
                and img.shape == cols[reference][i].shape
            ):
                value = float(psnr(img, cols[reference][i], data_range=hi - lo))
                title = f"{title}\n{value:.2f} dB" if title else f"{value:.2f} dB"
            ax.set_title(title, fontsize=9)
            if j == 0 and labels is not None and i < len(labels):
                ax.set_ylabel(str(labels[i]), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def filter_grid(
    path: str | os.PathLike[str],
    filters: Any,
    *,
    title: str | None = None,
    ncols: int | None = None,
) -> Path:
    """Draw a filter bank ``(F, k, k)`` (or several banks concatenated) as a grid of images,
    each scaled symmetrically around zero (blue negative, red positive) with its norm below."""
    f = np.asarray(filters, dtype=np.float64)
    if f.ndim == 2:
        f = f[None]
    if f.ndim != 3 or f.shape[0] == 0:
        raise ValueError(f"filters must have shape (F, k, k), got {f.shape}")
    nf = f.shape[0]
    ncols = ncols or max(1, min(nf, math.ceil(math.sqrt(nf * 1.5))))
    nrows = math.ceil(nf / ncols)
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= nf:
            ax.axis("off")
            continue
        m = float(np.max(np.abs(f[i]))) or 1.0
        ax.imshow(f[i], cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_xlabel(f"{np.linalg.norm(f[i]):.2g}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


_SKIP_KINDS = ("tune", "val_input")


def _label(rec: Mapping[str, Any], key: str) -> str:
    kind = rec.get("kind")
    return f"{kind} {key}" if isinstance(kind, str) and kind else key


def _is_number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(records: Records, label: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, rec in enumerate(records):
        if rec.get("kind") in _SKIP_KINDS:
            continue
        for k, v in rec.items():
            if _label(rec, k) == label and _is_number(v):
                xs.append(rec.get("step", i))
                ys.append(float(v))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _labels(records: Records) -> list[str]:
    """Series names: ``"<kind> <field>"`` for records with a ``kind`` (as written by
    :func:`jaxinv.train.train`), the field name otherwise."""
    out: dict[str, None] = {}
    for rec in records:
        if rec.get("kind") in _SKIP_KINDS:
            continue
        for k, v in rec.items():
            if k not in ("step", "time") and _is_number(v):
                out.setdefault(_label(rec, k), None)
    return list(out)


def _reference_lines(records: Records, words: Iterable[str]) -> list[tuple[str, float]]:
    """Constant levels to draw dashed: the ``val_input`` record's matching fields (the
    degraded input's PSNR/SSIM)."""
    lines = []
    for rec in records:
        if rec.get("kind") == "val_input":
            for k, v in rec.items():
                if k != "step" and _is_number(v) and any(w in k.lower() for w in words):
                    lines.append((f"input {k}", float(v)))
    return lines


def _curves(
    path: str | os.PathLike[str],
    records: Records,
    panels: Sequence[tuple[str, Iterable[str], bool]],
    title: str | None,
) -> Path:
    plt = _pyplot()
    labels = _labels(records)
    chosen = []
    for ylabel, words, logy in panels:
        words = tuple(words)
        ks = [k for k in labels if any(w in k.split(" ")[-1].lower() for w in words)]
        if ks:
            chosen.append((ylabel, ks, logy, words))
    if not chosen:
        chosen = [("value", labels[:4], False, ())] if labels else [("(no metrics)", [], False, ())]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.6 * len(chosen), 3.4), squeeze=False)
    for ax, (ylabel, ks, logy, words) in zip(axes[0], chosen, strict=True):
        drawn = False
        positive = True
        for k in ks:
            xs, ys = _series(records, k)
            if len(xs):
                marker = "o" if len(xs) < 30 else None
                ax.plot(xs, ys, marker=marker, markersize=3, label=k)
                drawn = True
                positive = positive and bool(np.all(ys > 0))
        for name, level in _reference_lines(records, words):
            ax.axhline(level, linestyle="--", color="gray", linewidth=1, label=name)
        if drawn and logy and positive:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _records(source: Records | str | os.PathLike[str]) -> Records:
    if isinstance(source, (str, os.PathLike)):
        return read_metrics(source)
    return source


def training_curves(
    path: str | os.PathLike[str],
    metrics: Records | str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Loss (log scale) and PSNR against the step, from metric records or a ``metrics.jsonl``
    path. Every numeric field whose name contains ``loss`` or ``mse`` goes in the first panel,
    every one containing ``psnr`` in the second; records with a ``kind`` (``"train"``,
    ``"val"``) give separate curves, and a ``"val_input"`` record a dashed reference level."""
    panels = [("loss (MSE)", ("loss", "mse"), True), ("PSNR (dB)", ("psnr",), False)]
    return _curves(path, _records(metrics), panels, title)


def iteration_curves(
    path: str | os.PathLike[str],
    metrics: Records | str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Forward and backward solver iterations (fields containing ``iter``) and final residuals
    (fields containing ``resid``) against the training step."""
    panels = [("iterations", ("iter",), False), ("residual", ("resid",), True)]
    return _curves(path, _records(metrics), panels, title)


def comparison_bars(
    path: str | os.PathLike[str],
    rows: Records,
    *,
    label_keys: Sequence[str] = ("task", "arch", "model"),
    metrics: Sequence[str] = ("psnr", "ssim"),
    title: str | None = None,
) -> Path:
    """Bar charts comparing runs: one panel per metric in ``metrics``, one bar per row labelled
    by the ``label_keys`` fields joined with ``/``. Missing values are left as gaps."""
    plt = _pyplot()
    labels = ["/".join(str(r.get(k, "?")) for k in label_keys) for r in rows]
    width = max(5.0, 0.42 * len(rows) + 2.0)
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(width, 2.6 * len(metrics) + 1.2), squeeze=False, sharex=True
    )
    colors = ["tab:blue" if r.get("model") == "bilevel" else "tab:orange" for r in rows]
    for ax, m in zip(axes[:, 0], metrics, strict=True):
        vals = [r.get(m) for r in rows]
        heights = [float(v) if _is_number(v) else np.nan for v in vals]
        ax.bar(range(len(rows)), heights, color=colors)
        ax.set_ylabel(m)
        ax.grid(axis="y", alpha=0.3)
        finite = [h for h in heights if math.isfinite(h)]
        if finite and m.lower().startswith("psnr"):
            ax.set_ylim(min(finite) - 2.0, max(finite) + 1.0)
        elif finite and "loss" in m.lower() and min(finite) > 0:
            ax.set_yscale("log")
    axes[-1, 0].set_xticks(range(len(rows)))
    axes[-1, 0].set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def box_plot(
    path: str | os.PathLike[str],
    groups: Mapping[str, Any],
    *,
    drop_above: float | None = None,
    ylabel: str = "test loss",
    title: str | None = None,
    log: bool | None = None,
) -> Path:
    """Box plots of values per group, e.g. the test losses of a sweep's configurations for
    ``{"bilevel": losses, "deq": losses}``; a dict of such dicts draws one panel per key (e.g.
    per task). Non-finite values (failed configurations) and, with ``drop_above``, values above
    it are dropped; each box states how many were kept and dropped, and the figure the rule.
    Every value kept is drawn as a point over its box. ``log``: a logarithmic axis (default:
    when a panel's kept values are positive and span more than a factor 20)."""
    plt = _pyplot()
    nested = bool(groups) and all(isinstance(v, Mapping) for v in groups.values())
    panels: Mapping[str, Mapping[str, Any]] = groups if nested else {"": groups}
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(4.0, 1.6 * sum(len(g) for g in panels.values()) + 1.5), 4.2),
        squeeze=False,
    )
    palette = {"bilevel": "tab:blue", "deq": "tab:orange"}
    for ax, (panel, boxes) in zip(axes[0], panels.items(), strict=True):
        kept, counts = [], []
        for values in boxes.values():
            v = np.asarray(values, dtype=np.float64).ravel()
            keep = np.isfinite(v) & (v <= drop_above if drop_above is not None else True)
            kept.append(v[keep])
            counts.append((int(keep.sum()), int(v.size - keep.sum())))
        positions = np.arange(1, len(kept) + 1)
        drawn = [(p, k) for p, k in zip(positions, kept, strict=True) if k.size]
        if drawn:
            box = ax.boxplot(
                [k for _, k in drawn], positions=[p for p, _ in drawn], widths=0.5,
                patch_artist=True, showfliers=False,
            )  # fmt: skip
            for patch, (p, _) in zip(box["boxes"], drawn, strict=True):
                name = list(boxes)[p - 1]
                patch.set_facecolor(palette.get(name, "tab:gray"))
                patch.set_alpha(0.35)
        rng = np.random.default_rng(0)
        for p, k, name in zip(positions, kept, boxes, strict=True):
            jitter = rng.uniform(-0.12, 0.12, k.size)
            ax.plot(p + jitter, k, "o", ms=3, color=palette.get(name, "tab:gray"), alpha=0.8)
        labels = [
            f"{name}\n{n} kept, {d} dropped" for name, (n, d) in zip(boxes, counts, strict=True)
        ]
        values = np.concatenate(kept) if kept else np.zeros(0)
        wide = values.size > 0 and values.min() > 0 and values.max() > 20 * values.min()
        if log or (log is None and wide):
            ax.set_yscale("log")
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_xlim(0.4, len(kept) + 0.6)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        if panel:
            ax.set_title(panel, fontsize=10)
    rule = "dropped: failed (non-finite)" + (
        f" or {ylabel} > {drop_above:g}" if drop_above is not None else ""
    )
    fig.suptitle((f"{title}\n" if title else "") + rule, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "comparison_bars",
    "filter_grid",
    "iteration_curves",
    "read_metrics",
    "reconstruction_grid",
    "training_curves",
]
