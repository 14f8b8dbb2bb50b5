"""Evaluate a trained run on held-out images, against the degraded input and a tuned TV baseline.

:func:`evaluate_run` degrades clean images exactly as the run was trained (its task, noise level
and operator, from the run's configuration; seeded noise), reconstructs them with the run's
model, and reports per-image and mean PSNR/SSIM of

* ``degraded``: the measurements as a user sees them (``y`` for denoising and deblurring, the
  masked ``Aᵀy`` for inpainting),
* ``reconstruction``: the run's fixed points,
* ``tv``: smoothed total variation with its weight tuned on the run's validation set
  (:func:`jaxinv.tuning.tune_tv`), cached in ``RUN/tv_baseline.json``.

The default images are the test split of the run's dataset: centre crops of the bundled test
photographs (natural images) or the MNIST test digits. Any PNG/JPEG/TIFF files can be given
instead.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from . import pretrained
from .data import SPLITS, center_crops, load_image_file, load_images, load_mnist, sample_patches
from .metrics import psnr, ssim
from .models import TV, AbstractModel
from .plots import reconstruction_grid
from .runs import check_run_dir as check_run_dir
from .runs import is_run_dir as is_run_dir
from .solvers import reconstruction_solver
from .tasks import Task
from .train import TrainConfig, atomic_write_text, load_run, reconstruct
from .tuning import tune_tv, with_weight

#: Name of the TV-baseline cache inside a run directory.
TV_CACHE = "tv_baseline.json"
#: Smoothing of the TV baseline.
TV_EPS = 0.02
#: Default side of the centre crops of the natural test images.
DEFAULT_CROP = 128
#: Smallest image side accepted (SSIM uses an 11x11 window).
MIN_SIDE = 11
#: Number of validation images (natural: patches) the TV weight is tuned on, and their seed.
TV_TUNE_COUNT = 8
TV_TUNE_SEED = 20240612
#: The three columns of every result, in table order.
METHODS = ("degraded", "reconstruction", "tv")


class EvaluationError(ValueError):
    """The inputs cannot be evaluated (not a run, unusable images); the message says why and
    what to do."""


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def held_out_images(
    config: TrainConfig, *, crop: int = DEFAULT_CROP, max_images: int | None = None
) -> tuple[list[str], list[np.ndarray]]:
    """Names and clean images of the test split of ``config.data.dataset``.

    Natural images: the bundled test photographs, shrunk like the training images
    (``config.data.max_image_size``) and centre-cropped to ``crop`` (or their smaller side).
    MNIST: the test digits on [−1, 1]. ``max_images`` keeps the first so many.
    """
    if config.data.dataset == "mnist":
        digits = load_mnist("test").images
        if max_images is not None:
            digits = digits[:max_images]
        return [f"mnist-test-{i}" for i in range(len(digits))], list(digits)
    names = list(SPLITS["test"])
    if max_images is not None:
        names = names[:max_images]
    images = load_images("test", max_size=config.data.max_image_size)[: len(names)]
    side = min(crop, *(min(im.shape) for im in images))
    return names, list(center_crops(images, side))


def read_user_images(
    paths: Sequence[str | os.PathLike[str]], config: TrainConfig
) -> tuple[list[str], list[np.ndarray]]:
    """Read image files as clean ground truths for ``config``'s model.

    Files are converted to grayscale on [0, 1] (:func:`jaxinv.data.load_image_file`) and, for an
    MNIST run, mapped to the run's [−1, 1]. Raises :class:`EvaluationError` with the file's name
    if a file is missing, unreadable, too small, or (for the dense model) not 28x28.
    """
    names, images = [], []
    for path in paths:
        try:
            image = load_image_file(path)
        except FileNotFoundError as err:
            raise EvaluationError(f"{err}; check the path given to --images") from err
        except (ValueError, OSError) as err:
            raise EvaluationError(f"{err}; convert it to an 8- or 16-bit PNG") from err
        if min(image.shape) < MIN_SIDE:
            raise EvaluationError(
                f"image {str(path)!r} is {image.shape[0]}x{image.shape[1]}; images must be at "
                f"least {MIN_SIDE}x{MIN_SIDE} pixels"
            )
        if config.arch == "dense" and image.shape != tuple(config.image_shape):
            h, w = config.image_shape
            raise EvaluationError(
                f"image {str(path)!r} is {image.shape[0]}x{image.shape[1]} but the dense model "
                f"of this run only works on {h}x{w} images; resize it to {h}x{w}"
            )
        image = config.dataset_info.from_unit(image)
        names.append(str(path))
        images.append(image.astype(np.float32))
    if not images:
        raise EvaluationError("no images given; pass one or more files to --images")
    return names, images


def degrade_images(task: Task, images: Sequence[np.ndarray], seed: int) -> list[jax.Array]:
    """Measurements of each image, with noise key ``fold_in(PRNGKey(seed), i)`` for image ``i``
    (so an image's noise does not depend on which other images are evaluated with it). Images
    of one shape are degraded in one vectorised call."""
    dtype = jnp.result_type(float)
    base = jax.random.PRNGKey(seed)
    out: list[jax.Array | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(images):
        groups.setdefault(tuple(np.shape(x)), []).append(i)
    for idx in groups.values():
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(idx))
        x = jnp.asarray(np.stack([images[i] for i in idx]), dtype)
        y = jax.vmap(task.degrade)(x, keys)
        for j, i in enumerate(idx):
            out[i] = y[j]
    return cast(list[jax.Array], out)  # every image is in one group


# ----------------------------------------------------------------------------------------------
# TV baseline
# ----------------------------------------------------------------------------------------------


def validation_images(config: TrainConfig, *, crop: int = DEFAULT_CROP) -> np.ndarray:
    """Clean images the TV weight is tuned on: the validation split of ``config.data.dataset``.

    Natural images: :data:`TV_TUNE_COUNT` seeded patches of side ``min(crop, smallest side)``
    from the validation photographs (shrunk like the training images), so the weight is tuned
    at about the scale it is tested at. MNIST: the first :data:`TV_TUNE_COUNT` validation digits.
    """

    if config.data.dataset == "mnist":
        return load_mnist("val").images[: 4 * TV_TUNE_COUNT]
    images = load_images("val", max_size=config.data.max_image_size)
    side = min(crop, *(min(im.shape) for im in images))
    return sample_patches(images, side, TV_TUNE_COUNT, seed=TV_TUNE_SEED)


def tune_tv_for_run(
    run_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    crop: int = DEFAULT_CROP,
    refresh: bool = False,
) -> dict[str, Any]:
    """The TV weight tuned on the validation split (:func:`validation_images`, degraded with the
    run's task and seed :data:`TV_TUNE_SEED`), read from ``RUN/tv_baseline.json`` if that
    matches the run's task and the tuning set, else tuned now and cached there.

    Returns ``{"weight", "eps", "val_psnr", "val_input_psnr", "task", "dataset", "crop",
    "trials"}``.
    """

    run = Path(run_dir)
    if config is None:
        config = load_run(run)[0]
    task = config.make_task()
    key = {
        "task": task.to_dict(),
        "dataset": config.data.dataset,
        "eps": TV_EPS,
        "crop": crop if config.data.dataset == "natural" else None,
        "max_image_size": config.data.max_image_size if config.data.dataset == "natural" else None,
    }
    cache = run / TV_CACHE
    if cache.exists() and not refresh:
        try:
            saved = json.loads(cache.read_text())
            if all(saved.get(k) == v for k, v in key.items()):
                return saved
        except (OSError, json.JSONDecodeError):
            pass
    x = validation_images(config, crop=crop)
    tuning = tune_tv(
        task,
        x,
        key=TV_TUNE_SEED,
        eps=TV_EPS,
        data_range=config.data_range,
        solver=reconstruction_solver(),
    )
    result = {
        "weight": tuning.weight,
        "val_psnr": tuning.psnr,
        "val_input_psnr": tuning.input_psnr,
        "num_images": int(len(x)),
        **key,
        "trials": [[w, p] for w, p in tuning.trials],
    }
    try:
        atomic_write_text(cache, json.dumps(result, indent=2) + "\n")
    except OSError:
        pass  # a read-only run directory: tune again next time
    return result


def tv_reconstruct(task: Task, y: jax.Array, weight: float, eps: float = TV_EPS) -> jax.Array:
    """Smoothed-TV reconstructions of a batch ``y`` ``(n, H, W)`` with the given weight."""

    model = TV(eps=eps).build(jax.random.PRNGKey(0), task, tuple(y.shape[-2:]))
    model = with_weight(model, jnp.asarray(weight, jnp.result_type(float)))
    return reconstruct(model, task, y, solver=reconstruction_solver()).value


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _scores(x: jax.Array, ref: jax.Array, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    x = jnp.asarray(x, ref.dtype)
    return np.asarray(psnr(x, ref, data_range)), np.asarray(ssim(x, ref, data_range))


def _load_other(
    other: str | os.PathLike[str], shape: tuple[int, int] | None
) -> tuple[TrainConfig, AbstractModel]:
    """A compared model: a run directory, else a pretrained name."""
    if is_run_dir(other):
        return load_run(Path(other), image_shape=shape)
    if not pretrained.is_name(str(other)):
        listing = ", ".join(pretrained.names()) or "none are installed"
        raise EvaluationError(
            f"cannot compare with {str(other)!r}: not a run directory nor a pretrained model "
            f"(available: {listing})"
        )
    return pretrained.load(str(other), image_shape=shape)


def _check_comparable(label: str, other: TrainConfig, config: TrainConfig) -> None:
    """A compared model must solve the run's problem: same task, noise level and data range."""
    mine, theirs = config.make_task(), other.make_task()
    if (other.task, other.data_range) != (config.task, config.data_range) or not math.isclose(
        theirs.sigma, mine.sigma, rel_tol=1e-6
    ):
        raise EvaluationError(
            f"cannot compare with {label!r}: it was trained for {theirs.describe()} on "
            f"{other.data.dataset} data, the run for {mine.describe()} on "
            f"{config.data.dataset} data"
        )


def evaluate_run(
    run_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]] | None = None,
    *,
    seed: int = 0,
    crop: int = DEFAULT_CROP,
    max_images: int | None = None,
    tv: bool = True,
    figure: str | os.PathLike[str] | None = None,
    compare: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Evaluate a run on held-out images (see the module docstring).

    Args:
        run_dir: a directory written by :func:`jaxinv.train.train`.
        images: image files to use as ground truths; ``None``: the test split of the run's
            dataset (natural: centre crops of side ``crop``; MNIST: the test digits, the first
            ``max_images`` of them if given).
        seed: noise seed (image ``i`` uses ``fold_in(PRNGKey(seed), i)``).
        tv: include the TV baseline (tuned on the validation set and cached in the run).
        figure: if given, write a ground truth / degraded / reconstruction / TV grid there.
        compare: other trained models (pretrained names, :func:`jaxinv.pretrained.names`, or
            run directories) restored from the SAME degraded images, each reported as one more
            method named by its name; each must have been trained for the run's task, noise
            level and data range.

    Returns:
        A JSON-serialisable dict: ``run``, ``task``, ``task_description``, ``model``, ``arch``,
        ``dataset``, ``sigma``, ``seed``, ``data_range``, ``num_params``, ``tv_weight``
        (``None`` without TV), ``compare`` (the names of the compared models), ``images`` (one
        dict per image: ``name``, ``shape``, and for each of ``degraded``, ``reconstruction``,
        ``tv`` and each compared model a dict with ``psnr`` and ``ssim``; the
        reconstruction also has ``mse``, ``iterations`` and ``converged``) and ``mean`` (the
        same three dicts averaged over the images; ``converged`` as a fraction).

    Raises:
        jaxinv.runs.NotARunError: not a run directory.
        EvaluationError: unusable image files, or a compared model that does not fit.
        jaxinv.train.CheckpointError: the run's checkpoint is corrupt or from another model.
    """

    run = check_run_dir(run_dir)
    config, model = load_run(run)
    task = config.make_task()
    if images is None:
        names, clean = held_out_images(config, crop=crop, max_images=max_images)
    else:
        names, clean = read_user_images(images, config)
    ys = degrade_images(task, clean, seed)
    dr = config.data_range
    others = {str(Path(c).name if is_run_dir(c) else c): c for c in compare}
    for label, other in others.items():
        _check_comparable(label, _load_other(other, None)[0], config)
    tv_info = tune_tv_for_run(run, config, crop=crop) if tv else None

    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(clean):
        groups.setdefault(tuple(x.shape), []).append(i)
    dtype = jnp.result_type(float)
    rows: list[dict[str, Any]] = [{} for _ in clean]
    methods = (*METHODS, *others)
    arrays: dict[str, list[np.ndarray | None]] = {m: [None] * len(clean) for m in methods}
    for shape, idx in groups.items():
        _, shaped = load_run(run, image_shape=None if shape == model.image_shape else shape)
        x = jnp.asarray(np.stack([clean[i] for i in idx]), dtype)
        y = jnp.stack([ys[i] for i in idx]).astype(dtype)
        sol = reconstruct(shaped, task, y, solver=config.forward_solver())
        outs = {"degraded": task.degraded_view(y), "reconstruction": sol.value}
        if tv_info is not None:
            outs["tv"] = tv_reconstruct(task, y, tv_info["weight"])
        for label, other in others.items():
            other_config, other_model = _load_other(other, shape)
            solver = other_config.forward_solver()
            outs[label] = reconstruct(other_model, task, y, solver=solver).value
        scores = {m: _scores(v, x, dr) for m, v in outs.items()}
        mse = np.asarray(jnp.mean(jnp.square(sol.value - x), axis=(-2, -1)))
        iters = np.asarray(sol.stats.iterations)
        conv = np.asarray(sol.stats.converged)
        for j, i in enumerate(idx):
            row: dict[str, Any] = {"name": names[i], "shape": list(shape)}
            for m in methods:
                if m in scores:
                    row[m] = {"psnr": float(scores[m][0][j]), "ssim": float(scores[m][1][j])}
                    arrays[m][i] = np.asarray(outs[m][j])
            row["reconstruction"].update(
                mse=float(mse[j]), iterations=int(iters[j]), converged=bool(conv[j])
            )
            rows[i] = row

    mean: dict[str, dict[str, float]] = {}
    for m in methods:
        if m not in rows[0]:
            continue
        keys = [k for k in rows[0][m] if k != "converged"]
        mean[m] = {k: float(np.mean([r[m][k] for r in rows])) for k in keys}
    mean["reconstruction"]["converged"] = float(
        np.mean([r["reconstruction"]["converged"] for r in rows])
    )

    result = {
        "run": str(run),
        "task": config.task,
        "task_description": task.describe(),
        "model": config.model,
        "arch": config.arch,
        "dataset": config.data.dataset,
        "sigma": task.sigma,
        "seed": seed,
        "data_range": dr,
        "num_params": model.num_params(),
        "tv_weight": None if tv_info is None else tv_info["weight"],
        "compare": list(others),
        "images": rows,
        "mean": mean,
    }
    if figure is not None:
        lo = config.dataset_info.lo
        same = [i for i in range(len(clean)) if clean[i].shape == clean[0].shape]
        cols = {"ground truth": np.stack([clean[i] for i in same])}
        heads = {"degraded": "degraded", "reconstruction": config.model, "tv": "TV"}
        for m in methods:
            if arrays[m][0] is not None:  # then it was scored on every image
                shown = cast(list[np.ndarray], [arrays[m][i] for i in same])
                cols[heads.get(m, m)] = np.stack(shown)
        reconstruction_grid(
            figure,
            cols,
            value_range=(lo, lo + dr),
            reference="ground truth",
            labels=[Path(names[i]).name for i in same],
        )
    return result


def format_table(result: dict[str, Any], *, max_rows: int | None = 20) -> str:
    """A plain-text table of :func:`evaluate_run`'s result: one row per image (the first
    ``max_rows``) and the mean, with PSNR (dB) and SSIM of each method."""
    methods = [m for m in (*METHODS, *result.get("compare", ())) if m in result["mean"]]
    heads = {"degraded": "degraded", "reconstruction": result.get("model", "recon"), "tv": "TV"}
    heads.update({m: m for m in result.get("compare", ())})
    rows = result["images"]
    width = max([len("image"), len("mean")] + [len(str(r["name"])) for r in rows[:max_rows]])
    width = min(width, 48)
    cols = []
    for m in methods:
        cols += [f"{heads[m]} PSNR", f"{heads[m]} SSIM"]
    cw = max(12, *(len(c) for c in cols))
    lines = []
    lines.append(
        f"run {result['run']}: {result['model']} / {result['arch']} on {result['dataset']}, "
        f"task {result['task_description']}, noise seed {result['seed']}"
        + (f", TV weight {result['tv_weight']:.4g}" if result.get("tv_weight") else "")
    )
    header = f"{'image':<{width}}  " + "  ".join(f"{c:>{cw}}" for c in cols)
    lines += [header, "-" * len(header)]

    def fmt(entry: dict[str, Any]) -> str:
        cells = []
        for m in methods:
            p, s = entry[m]["psnr"], entry[m]["ssim"]
            cells += [f"{p:>{cw}.2f}" if math.isfinite(p) else f"{'inf':>{cw}}", f"{s:>{cw}.4f}"]
        return "  ".join(cells)

    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        name = str(r["name"])
        if len(name) > width:
            name = "…" + name[-(width - 1) :]
        lines.append(f"{name:<{width}}  " + fmt(r))
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more images (use --json for all)")
    lines.append("-" * len(header))
    lines.append(f"{'mean':<{width}}  " + fmt(result["mean"]))
    rec = result["mean"]["reconstruction"]
    lines.append(
        f"{len(rows)} image{'s' if len(rows) != 1 else ''}; reconstruction: "
        f"{rec['iterations']:.1f} iterations on average, "
        f"{rec['converged']:.0%} converged"
    )
    return "\n".join(lines)


__all__ = [
    "EvaluationError",
    "check_run_dir",
    "degrade_images",
    "evaluate_run",
    "format_table",
    "is_run_dir",
    "read_user_images",
    "held_out_images",
    "tune_tv_for_run",
    "tv_reconstruct",
    "validation_images",
]
