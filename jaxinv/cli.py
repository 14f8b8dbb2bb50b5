"""The ``jaxinv`` command line: train a model, evaluate a run, reproduce the paper's comparison.

::

    jaxinv train --task denoise --model bilevel --out runs/denoise-foe
    jaxinv sweep --task denoise --model bilevel --arch dense --grid gamma=0.1,1 --out runs/sweep
    jaxinv eval runs/denoise-foe [--images photo.png ...] [--json]
    jaxinv restore runs/denoise-foe noisy.png ... --out restored [--sigma 25/255]
    jaxinv reproduce --quick --out results/quick
    jaxinv reproduce --grid --quick --tasks denoise --out results/grid

Every mistake a user can make on the command line (unknown task or architecture, missing or
unreadable image files, a directory that is not a run, a corrupt checkpoint or one from another
model, an output directory that already exists) ends with exit code 2 and a one-line message on
stderr that says what to do -- no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from . import reproduce
from .compile_cache import default_cache_dir, enable_compilation_cache
from .data import dataset_info, list_image_files, parse_sigma
from .evaluate import EvaluationError, evaluate_run, format_table
from .models import ARCHITECTURES
from .restore import RestoreError, open_model, restore_files
from .runs import CHECKPOINT, NotARunError, check_run_dir, run_figures
from .sweep import run_sweep
from .tasks import DATASETS, TASKS
from .train import (
    MODELS,
    SECTIONS,
    AdjointFailureError,
    CheckpointError,
    DataConfig,
    GridError,
    RunExistsError,
    TrainConfig,
    build_instance,
    expand_grid,
    flat_name,
    make_optimizer,
    read_header,
    setting_names,
    train,
)

EXIT_USAGE = 2
ARCHS = tuple(ARCHITECTURES)


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`CLIError` instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


def _positive(kind: type = int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _sigma(text: str) -> float:
    try:
        return parse_sigma(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _check_out_dir(out: Path, *, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise CLIError(
            f"output directory {str(out)!r} already exists and is not empty; pass --overwrite to "
            "replace it, --resume to continue an unfinished run, or choose another --out"
        )


def _devices_option(n: int | None, config_fields: set[str]) -> dict[str, Any]:
    """The ``devices`` entry for the config, or a clear error if it cannot be honoured."""
    if n is None:
        return {}
    available = jax.device_count()
    if n > available:
        hint = (
            f"; on CPU set XLA_FLAGS=--xla_force_host_platform_device_count={n} to simulate them"
            if jax.default_backend() == "cpu"
            else ""
        )
        raise CLIError(f"--devices {n}: only {available} device(s) are visible{hint}")
    if "devices" in config_fields:
        return {"devices": n}
    if n == 1:
        return {}
    raise CLIError(
        f"--devices {n}: this version of jaxinv.train trains on a single device (its TrainConfig "
        "has no 'devices' setting); drop --devices or pass --devices 1"
    )


#: ``--set`` settings that are dicts and take ``HEAD.NAME=VALUE``.
_DOTTED = ("arch_options", "task_options", "lr_scale")


def _apply_setting(kw: dict[str, Any], item: str, fields: set[str]) -> None:
    """Apply one ``--set KEY=VALUE`` (VALUE parsed as JSON, else kept as text); ``KEY`` is a
    TrainConfig setting by its flat name (``lr``, ``adjoint_tol``), a dotted sub-configuration
    field (``optim.lr``) or ``arch_options.NAME`` / ``task_options.NAME`` / ``lr_scale.NAME``."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CLIError(f"--set {item!r}: expected KEY=VALUE, e.g. --set num_val=4")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    head, dot, sub = key.partition(".")
    if dot and key in fields:  # a sub-configuration field, kept by its flat name
        kw[flat_name(key)] = value
    elif dot:
        if head not in _DOTTED or not sub:
            raise CLIError(
                f"--set {key}: unknown setting; a dotted name is SECTION.FIELD of "
                f"{', '.join(SECTIONS)} or one of {', '.join(_DOTTED)} (HEAD.NAME)"
            )
        kw[head] = {**kw.get(head, {}), sub: value}
    elif key in fields:
        kw[key] = value
    else:
        flat = sorted(k for k in fields if "." not in k and k not in SECTIONS)
        raise CLIError(
            f"--set {key}: unknown setting; choose from {', '.join(flat)}, SECTION.FIELD of "
            f"{', '.join(SECTIONS)}, or " + " / ".join(f"{h}.NAME" for h in _DOTTED)
        )


#: What ``jaxinv train`` trains for natural-image denoising when no ``--arch`` is given: 48
#: Student-t experts 7x7 with the reflect boundary, 48x48 patches, the experts' log-weights and
#: log-scale at 30x / 10x the learning rate, Anderson restarts at 3, and steps whose solves did
#: not converge skipped (the recipe of the pretrained ``foe-student-t-s25``; see its card).
DENOISE_RECIPE: dict[str, Any] = {
    "arch_options": {"num_filters": 48, "size": 7, "potential": "student_t", "boundary": "reflect"},
    "patch_size": 48,
    "lr_scale": {"log_weights": 30.0, "log_scale": 10.0},
    "restart": 3.0,
    "max_iter": 500,
    "adjoint_max_iter": 200,
    "skip_unconverged": True,
}


def _arch_and_dataset(args: argparse.Namespace) -> tuple[str, str]:
    arch = args.arch or dataset_info(args.dataset or "natural").default_arch
    return arch, args.dataset or ("mnist" if arch == "dense" else "natural")


def build_train_config(args: argparse.Namespace, defaults: dict[str, Any] | None = None):
    """The :class:`jaxinv.train.TrainConfig` the ``train`` arguments ask for (``defaults``:
    settings under the explicit options, e.g. ``sweep --quick``'s)."""
    fields = set(setting_names())
    arch, dataset = _arch_and_dataset(args)
    if arch == "dense" and dataset != "mnist":
        raise CLIError("--arch dense is the paper's MNIST model; use --dataset mnist (the default)")
    if arch == "tv" and args.model == "deq":
        raise CLIError("--arch tv is a variational baseline with no DEQ form; use --model bilevel")
    kw: dict[str, Any] = {"task": args.task, "model": args.model, "arch": arch, "dataset": dataset}
    if args.arch is None and dataset == "natural" and args.task == "denoise":
        kw.update(json.loads(json.dumps(DENOISE_RECIPE)))  # a copy: --set merges into it
    if defaults:
        kw.update(json.loads(json.dumps(defaults)))
    if args.sigma is not None:
        kw["task_options"] = {**kw.get("task_options", {}), "sigma": args.sigma}
    for name, field in (
        ("steps", "steps"),
        ("batch", "batch_size"),
        ("patch", "patch_size"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("num_train", "num_train"),
        ("train_images", "train_images"),
        ("val_images", "val_images"),
        ("augment", "augment"),
    ):
        value = getattr(args, name)
        if value is not None:
            kw[field] = value
    if "batch_size" in kw and "num_train" not in kw:
        kw["num_train"] = max(DataConfig().num_train, kw["batch_size"])
    kw.update(_devices_option(args.devices, fields))
    for item in args.set or ():
        _apply_setting(kw, item, fields)
    if kw.get("optimizer") == "lbfgs" and not any(
        item.startswith("lr_scale") for item in args.set or ()
    ):  # the recipe's Adam step multipliers mean nothing to a line search
        kw.pop("lr_scale", None)
    try:
        config = TrainConfig.of(**kw)
        for folder in (config.data.train_images, config.data.val_images):
            if folder:  # a missing or empty folder is reported before anything compiles
                list_image_files(folder)
        if config.optim.lr_scale:  # its names are checked against the model's parameters
            make_optimizer(config, build_instance(config)[1].trainable())
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise CLIError(_one_line(str(err))) from None
    return config


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    config = build_train_config(args)
    _check_out_dir(out, overwrite=args.overwrite, resume=args.resume)
    print(
        f"training {config.model} / {config.arch} on "
        f"{config.data.train_images or config.data.dataset} for {config.task} "
        f"({config.make_task().describe()}), {config.steps} steps of batch {config.batch_size} "
        f"-> {out}",
        flush=True,
    )
    t0 = time.perf_counter()
    result = train(
        config, out, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite
    )
    wall = time.perf_counter() - t0
    figures = [] if args.no_figures else run_figures(out)
    vals = [r for r in result.history if r.get("kind") == "val"]
    inputs = [r for r in result.history if r.get("kind") == "val_input"]
    summary = f"done in {wall:.1f} s"
    if vals:
        summary += f"; validation PSNR {vals[-1]['psnr']:.2f} dB"
        if "psnr_pooled" in vals[0]:
            first, last = vals[0]["psnr_pooled"], vals[-1]["psnr_pooled"]
            summary += f" (of the set's MSE: {first:.2f} -> {last:.2f} dB)"
        if "ssim" in vals[-1]:
            summary += f", SSIM {vals[-1]['ssim']:.4f}"
    if inputs:
        summary += f" (degraded input {inputs[0]['psnr']:.2f} dB)"
    print(summary)
    print(f"run: {out}  (evaluate with: jaxinv eval {out})")
    for f in figures:
        print(f"figure: {f}")
    return 0


# ----------------------------------------------------------------------------------------------
# sweep
# ----------------------------------------------------------------------------------------------


def parse_grid(items: Sequence[str]) -> dict[str, list[float]]:
    """``["gamma=0.1,0.5,1", "sigma=0,25/255"]`` -> ``{"gamma": [0.1, 0.5, 1], "sigma": [0.0,
    0.098...]}`` (values read as JSON numbers; ``sigma`` also as fractions such as ``25/255``)."""
    grid: dict[str, list[float]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise CLIError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid gamma=0.1,0.5,1")
        if key in grid:
            raise CLIError(f"--grid {key}: given twice; list all its values in one --grid")
        values: list[float] = []
        for part in text.split(","):
            part = part.strip()
            try:
                v = parse_sigma(part) if key.endswith("sigma") else json.loads(part)
            except (ValueError, TypeError) as err:
                raise CLIError(f"--grid {key}: {part!r} is not a number ({err})") from None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CLIError(f"--grid {key}: {part!r} is not a number")
            values.append(v)
        grid[key] = values
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    out = Path(args.out)
    grid = parse_grid(args.grid)
    arch, dataset = _arch_and_dataset(args)
    defaults = (
        reproduce.dataset_settings(dataset, quick=True, task=args.task, arch=arch)
        if args.quick
        else {}
    )
    config = build_train_config(args, defaults)
    try:
        n = len(expand_grid(config, grid))  # every key and value checked before compiling
    except GridError as err:
        raise CLIError(_one_line(str(err))) from None
    _check_out_dir(out, overwrite=args.overwrite, resume=args.resume)
    test = reproduce.eval_settings(dataset, quick=args.quick)
    test.update({k: v for k, v in (("crop", args.crop), ("max_images", args.max_images)) if v})
    print(
        f"sweeping {config.model} / {config.arch} on {config.data.dataset} for {config.task}: "
        f"{n} configurations x {config.steps} steps of batch {config.batch_size} in one compiled "
        f"program -> {out}",
        flush=True,
    )
    try:
        summary = run_sweep(
            config,
            grid,
            out,
            progress=not args.quiet,
            resume=args.resume,
            overwrite=args.overwrite,
            command="jaxinv " + " ".join(getattr(args, "argv", ["sweep"])),
            **test,
        )
    except GridError as err:  # a key that changes the model's static form
        raise CLIError(_one_line(str(err))) from None
    print(summary["markdown"])
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


def _add_sweep_parser(sub: Any) -> None:
    s = sub.add_parser(
        "sweep",
        help="train a grid of configurations in one compiled program",
        description="Train every configuration of a grid (the Cartesian product of the --grid "
        "values over the configuration the other options build, as for 'jaxinv train') in ONE "
        "compiled, vmapped program, then evaluate each on the test split. Grid keys: sigma, "
        "lr, seed and the architecture's real-valued options (dense: gamma, tau, lam, "
        "init_scale). A configuration that fails (non-finite loss, diverging solves) is frozen "
        "and reported; the others train on. Writes DIR/sweep.json, metrics.jsonl, "
        "checkpoint.eqx, results.md and results.json.",
    )
    _add_config_arguments(s)
    s.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2,...",
        help="one axis of the grid, e.g. --grid gamma=0.1,0.5,1 --grid sigma=0,0.05,0.1 "
        "(repeatable)",
    )
    s.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings of 'jaxinv reproduce --quick' (2 steps on a few examples, 16 test "
        "digits): checks the pipeline, measures nothing",
    )
    s.add_argument("--crop", type=_positive(int), help="side of the natural test crops")
    s.add_argument("--max-images", type=_positive(int), help="use only the first N test images")
    s.add_argument("--out", required=True, help="sweep directory to create")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    s.add_argument("--resume", action="store_true", help="continue an unfinished sweep in --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------


def _match_precision(run: Path) -> None:
    """Load the run in the floating-point precision it was trained in."""
    header, _ = read_header(run / CHECKPOINT)
    x64 = header.get("x64")
    if x64 is not None and bool(x64) != bool(jax.config.read("jax_enable_x64")):
        jax.config.update("jax_enable_x64", bool(x64))


def cmd_eval(args: argparse.Namespace) -> int:
    run = check_run_dir(args.run)
    _match_precision(run)
    result = evaluate_run(
        run,
        args.images,
        seed=args.seed,
        crop=args.crop,
        max_images=args.max_images,
        tv=not args.no_tv,
        figure=args.figure,
        compare=args.compare or (),
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        if args.figure:
            print(f"figure: {args.figure}")
    return 0


# ----------------------------------------------------------------------------------------------
# restore
# ----------------------------------------------------------------------------------------------


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        model = open_model(args.model)
        model.match_precision()
        restore_files(
            model,
            args.files,
            args.out,
            sigma=args.sigma,
            kernel=args.kernel,
            mask=args.mask,
            keep_lambda=args.keep_lambda,
            max_iter=args.max_iter,
            tol=args.tol,
            raw=args.raw,
            overwrite=args.overwrite,
        )
    except RestoreError as err:
        raise CLIError(_one_line(str(err))) from None
    return 0


def _add_restore_parser(sub: Any) -> None:
    s = sub.add_parser(
        "restore",
        help="restore your own degraded images with a trained or pretrained model",
        description="Restore degraded images (PNG/JPEG/TIFF, 8/16-bit or float, or .npy; float "
        "values are taken as they are) with MODEL, each at its own size; colour images channel "
        "by channel. Writes DIR/<stem>.png (8-bit, clipped to [0, 1]) and with --raw "
        "DIR/<stem>.npy (float32, unclipped). Without --kernel/--mask the operator and the "
        "noise level are those MODEL was trained for; a different --sigma scales the learned "
        "data weight by (sigma_train/sigma)^2.",
    )
    s.add_argument("model", metavar="MODEL", help="a run directory or a pretrained model name")
    s.add_argument("files", nargs="+", metavar="FILE", help="degraded images")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument(
        "--sigma", type=_sigma, help="noise level, e.g. 0.1 or 25/255 (default: MODEL's)"
    )
    op = s.add_mutually_exclusive_group()
    op.add_argument(
        "--kernel",
        metavar="K",
        help="deblur with kernel K: FILE (image or .npy), motion:N[:DIRECTION] or gaussian:S",
    )
    op.add_argument(
        "--mask", metavar="FILE", help="inpaint: mask image or .npy, nonzero = observed"
    )
    s.add_argument(
        "--keep-lambda", action="store_true", help="use the learned data weight at any --sigma"
    )
    s.add_argument("--max-iter", type=_positive(int), help="solver iterations (default: MODEL's)")
    s.add_argument("--tol", type=_positive(float), help="solver tolerance (default: MODEL's)")
    s.add_argument("--raw", action="store_true", help="also write DIR/<stem>.npy (float32)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.set_defaults(func=cmd_restore)


# ----------------------------------------------------------------------------------------------
# reproduce
# ----------------------------------------------------------------------------------------------


def cmd_reproduce(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not (args.overwrite or args.resume):
        raise CLIError(
            f"output directory {str(out)!r} already exists and is not empty; pass --resume to "
            "reuse its finished runs, --overwrite to retrain them, or choose another --out"
        )
    for a in args.archs or ():
        if a not in reproduce.ARCHS:
            raise CLIError(
                f"--archs: unknown architecture {a!r}; choose from {list(reproduce.ARCHS)}"
            )
    own = args.images is not None or args.test_images is not None
    if args.grid is not None:
        if own:
            raise CLIError(
                "--grid sweeps the paper's dense MNIST grid, which takes no image folder; drop "
                "--images/--test-images, or run the convolutional cells without --grid"
            )
        return _reproduce_grid(args, out)
    archs = tuple(args.archs) if args.archs else reproduce.ARCHS
    if own:  # the folder serves the convolutional cells (the paper's CelebA experiment)
        natural = tuple(a for a in reproduce.ARCHS if reproduce.DATASET[a] == "natural")
        if not args.archs:
            archs = natural
        elif set(archs) - set(natural):
            raise CLIError(
                f"--images/--test-images serve the convolutional cells {list(natural)}; the "
                "dense model is the paper's 28x28 MNIST one, so drop 'dense' from --archs"
            )
        for flag, folder in (("--images", args.images), ("--test-images", args.test_images)):
            if folder is not None:
                try:
                    list_image_files(folder)
                except (ValueError, FileNotFoundError) as err:
                    raise CLIError(f"{flag}: {err}") from None
    summary = reproduce.run_reproduction(
        out,
        quick=args.quick,
        steps=args.steps,
        tasks=tuple(args.tasks) if args.tasks else TASKS,
        archs=archs,
        overwrite=args.overwrite,
        progress=not args.quiet,
        images=args.images,
        test_images=args.test_images,
    )
    print(summary["markdown"])
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'figures'}/")
    print(f"total time {summary['duration_s']:.0f} s")
    return 0


def _reproduce_grid(args: argparse.Namespace, out: Path) -> int:
    archs = tuple(args.archs) if args.archs else tuple(reproduce.PAPER_GRID)
    for a in archs:
        if a not in reproduce.PAPER_GRID:
            raise CLIError(
                f"--grid: the paper gives a grid for {sorted(reproduce.PAPER_GRID)} only, not "
                f"{a!r}; sweep other architectures with 'jaxinv sweep --grid KEY=VALUES'"
            )
    try:
        summary = reproduce.run_grid_comparison(
            out,
            quick=args.quick,
            steps=args.steps,
            tasks=tuple(args.tasks) if args.tasks else TASKS,
            archs=archs,
            grid=parse_grid(args.grid) or None,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except GridError as err:
        raise CLIError(_one_line(str(err))) from None
    print(summary["markdown"])
    print(f"wrote {out / 'grid_results.md'}, {out / 'grid_results.json'} and {summary['figure']}")
    print(f"total time {summary['duration_s']:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------------
# parser and entry point
# ----------------------------------------------------------------------------------------------


def _add_config_arguments(t: argparse.ArgumentParser) -> None:
    """The options that build a :class:`jaxinv.train.TrainConfig` (``train`` and ``sweep``)."""
    t.add_argument("--task", required=True, choices=TASKS)
    t.add_argument("--model", required=True, choices=MODELS, help="bilevel (tied) or deq (untied)")
    t.add_argument(
        "--arch",
        choices=ARCHS,
        help="architecture (default: foe on natural images, dense on MNIST; natural-image "
        "denoising without --arch trains the recommended fields of experts: 48 Student-t "
        "experts 7x7, reflect boundary, 48x48 patches, lr_scale log_weights=30 log_scale=10, "
        "restart 3, max_iter 500, skip_unconverged; --set overrides any of it)",
    )
    t.add_argument("--dataset", choices=DATASETS, help="default: mnist for dense, else natural")
    t.add_argument("--steps", type=_positive(int), help="optimiser steps (default 200)")
    t.add_argument("--batch", type=_positive(int), help="batch size (default 8)")
    t.add_argument("--patch", type=_positive(int), help="training patch side (default 32)")
    t.add_argument("--num-train", type=_positive(int), help="training examples (default 256)")
    t.add_argument("--lr", type=_positive(float), help="Adam learning rate (default 1e-3)")
    t.add_argument(
        "--train-images",
        metavar="DIR",
        help="train on the PNG/JPEG/TIFF images under DIR (recursive, grayscale) instead of "
        "the bundled photographs; every 10th image is held out for validation unless "
        "--val-images is given",
    )
    t.add_argument("--val-images", metavar="DIR", help="validate on the images under DIR")
    t.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random 90-degree rotations and mirrors of the training patches (default: on "
        "for --train-images, off for the bundled images)",
    )
    t.add_argument(
        "--sigma",
        type=_sigma,
        help="noise level on the data's scale, e.g. 0.1 or 25/255 (default: the task's)",
    )
    t.add_argument("--seed", type=_non_negative_int, help="seed (default 0)")
    t.add_argument("--devices", type=_positive(int), help="number of devices to train on")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other TrainConfig setting, e.g. --set num_val=4 --set arch_options.size=5 "
        "--set lr_scale.log_weights=20 "
        "(VALUE is read as JSON; repeatable)",
    )


def _add_cache_options(s: argparse.ArgumentParser) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--compile-cache",
        metavar="DIR",
        type=Path,
        help="keep compiled programs in DIR for later runs (default: $JAXINV_COMPILATION_CACHE, "
        "else ~/.cache/jaxinv/xla)",
    )
    g.add_argument(
        "--no-compile-cache", action="store_true", help="compile everything in this process"
    )


def _use_compile_cache(args: argparse.Namespace) -> None:
    if getattr(args, "no_compile_cache", False):
        return
    directory = getattr(args, "compile_cache", None) or default_cache_dir()
    if directory is not None:
        try:
            enable_compilation_cache(directory)
        except ValueError as err:
            raise CLIError(str(err)) from None


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="jaxinv",
        description="Learn variational regularizers for imaging inverse problems: bilevel "
        "learning vs deep equilibrium models.",
    )
    sub = p.add_subparsers(
        dest="command", metavar="{train,sweep,eval,restore,reproduce}", parser_class=_Parser
    )
    sub.required = True

    t = sub.add_parser(
        "train",
        help="train a model on the bundled images or an image folder",
        description="Train a bilevel (tied) or DEQ (untied) model on the bundled data or on "
        "the images of a folder (--train-images); the "
        "defaults finish in a few minutes on two CPU cores. Writes config.json, metrics.jsonl, "
        "checkpoint.eqx and figures/ into --out.",
    )
    _add_config_arguments(t)
    t.add_argument("--out", required=True, help="run directory to create")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    t.add_argument("--no-figures", action="store_true", help="skip writing figures")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    _add_sweep_parser(sub)

    e = sub.add_parser(
        "eval",
        help="evaluate a run against the degraded input and TV",
        description="Degrade test images exactly as RUN was trained (seeded noise), reconstruct "
        "them, and report PSNR/SSIM of the degraded input, the reconstruction and a TV baseline "
        "tuned on the validation split (cached in RUN).",
    )
    e.add_argument("run", metavar="RUN", help="a run directory written by 'jaxinv train'")
    e.add_argument(
        "--images",
        nargs="+",
        metavar="FILE",
        help="PNG/JPEG/TIFF files to use as ground truth (default: the test split)",
    )
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed (default 0)")
    e.add_argument(
        "--crop", type=_positive(int), default=128, help="side of the test-image centre crops"
    )
    e.add_argument("--max-images", type=_positive(int), help="use only the first N test images")
    e.add_argument("--no-tv", action="store_true", help="skip the TV baseline")
    e.add_argument("--figure", metavar="PNG", help="also write a reconstruction grid there")
    e.add_argument(
        "--compare",
        action="append",
        metavar="MODEL",
        help="also restore the same degraded images with MODEL (a pretrained name or a run "
        "directory trained for the same task and noise level); repeatable",
    )
    e.set_defaults(func=cmd_eval)
    _add_restore_parser(sub)

    r = sub.add_parser(
        "reproduce",
        help="bilevel vs DEQ on every task and architecture",
        description="The paper's comparison: bilevel vs DEQ for denoise, inpaint and deblur with "
        "the dense model on MNIST and the 2x11x11 and 30x3x3 convolutional models on natural "
        "image patches. Writes DIR/results.md, DIR/results.json and DIR/figures/.",
    )
    r.add_argument("--quick", action="store_true", help="tiny settings: a few minutes on 2 cores")
    r.add_argument("--out", default="reproduce", help="output directory (default ./reproduce)")
    r.add_argument("--steps", type=_positive(int), help="override the training steps of every run")
    r.add_argument("--tasks", nargs="+", choices=TASKS, help="only these tasks")
    r.add_argument("--archs", nargs="+", metavar="ARCH", help="only these architectures")
    r.add_argument("--overwrite", action="store_true", help="retrain runs in an existing --out")
    r.add_argument(
        "--resume", action="store_true", help="reuse finished runs in --out, continue unfinished"
    )
    r.add_argument(
        "--grid",
        nargs="*",
        metavar="KEY=V1,V2",
        help="instead of one configuration per cell, sweep the paper's grid (dense MNIST: "
        "sigma x tau x gamma, 75 configurations) for bilevel and for DEQ, each in one "
        "compiled program, and draw their test losses as box plots (failed ones and those "
        "above 0.5 dropped); KEY=V1,V2 replaces an axis of the grid",
    )
    r.add_argument(
        "--images",
        metavar="DIR",
        help="train the convolutional cells on patches of this folder's images (e.g. CelebA "
        "faces, as in the paper; every 10th image validates) instead of the bundled photographs",
    )
    r.add_argument(
        "--test-images",
        metavar="DIR",
        help="test the convolutional cells on this folder's images at full size",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_reproduce)
    for command in sub.choices.values():
        _add_cache_options(command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = make_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        _use_compile_cache(args)
        return int(args.func(args))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("jaxinv: interrupted", file=sys.stderr)
        return 130
    except (CLIError, EvaluationError, NotARunError, FileNotFoundError) as err:
        print(f"jaxinv: error: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        known = _known_error(err, getattr(args, "command", None))
        if known is None:
            raise
        code, message = known
        print(f"jaxinv: error: {message}", file=sys.stderr)
        return code


def _known_error(err: Exception, command: str | None) -> tuple[int, str] | None:
    """Exit code and one-line message for the training layer's user-facing errors: a corrupt
    or foreign checkpoint and an existing run (2), a diverged training loss (1)."""
    text = _one_line(str(err))
    if command in ("train", "sweep", "reproduce"):
        text = text.replace("pass overwrite=True", "pass --overwrite")
    else:
        text = text.replace("pass overwrite=True", "retrain with 'jaxinv train --overwrite'")
    if isinstance(err, (CheckpointError, RunExistsError)):
        return EXIT_USAGE, text
    if isinstance(err, (FloatingPointError, AdjointFailureError)):
        return 1, text
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
