"""Denoising quality on a folder of test images (Set12) at sigma = 25/255: trained models vs BM3D.

Every method sees the SAME noisy images: image ``i`` (sorted by file name) gets Gaussian noise of
standard deviation ``--sigma`` drawn with ``fold_in(PRNGKey(--seed), i)``, not clipped.

* ``noisy``: the input itself;
* each ``--model``: a run directory written by ``jaxinv train`` or a pretrained name
  (``jaxinv.pretrained.names()``), restored at each image's own size (Anderson, tol 1e-5,
  at most ``--max-iter`` iterations; iterations and convergence are reported);
* ``BM3D``: the ``bm3d`` package (``pip install "jaxinv[bench]"``), told the true sigma.

    python benchmarks/set12_quality.py --images ../shared/data/set12 --model runs/foe_s25
    python benchmarks/set12_quality.py --images DIR --model A --model B --no-bm3d

Prints a PSNR/SSIM table (per image and mean) and writes ``benchmarks/results/set12_quality.json``
(or ``--out``). The test images are read, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.data import list_image_files, load_image_file, parse_sigma
from jaxinv.metrics import psnr, ssim
from jaxinv.solvers import Anderson
from jaxinv.train import load_run, reconstruct

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "set12_quality.json"


def noisy_images(clean: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    """``x_i + sigma * n_i`` with ``n_i`` from ``fold_in(PRNGKey(seed), i)`` (float32)."""
    base = jax.random.PRNGKey(seed)
    out = []
    for i, x in enumerate(clean):
        n = jax.random.normal(jax.random.fold_in(base, i), x.shape, jnp.float32)
        out.append(np.asarray(x, np.float32) + sigma * np.asarray(n))
    return out


def load_model(name: str, shape: tuple[int, int]):
    """``(config, model)`` of a run directory or a pretrained name, for ``shape``."""
    if Path(name).is_dir():
        return load_run(name, image_shape=shape)
    from jaxinv import pretrained

    return pretrained.load(name, image_shape=shape)


def run_model(name: str, noisy: list[np.ndarray], max_iter: int) -> dict:
    """Restore every image with the model ``name``; images of one shape share one compilation."""
    outputs: list[np.ndarray | None] = [None] * len(noisy)
    iters, conv = [0] * len(noisy), [False] * len(noisy)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, y in enumerate(noisy):
        groups.setdefault(tuple(y.shape), []).append(i)
    t0 = time.perf_counter()
    for shape, idx in groups.items():
        config, model = load_model(name, shape)
        solver = Anderson(tol=1e-5, max_iter=max_iter, restart=config.forward.restart)
        task = config.make_task()
        for i in idx:  # one image at a time: a batch would wait for its slowest solve
            sol = reconstruct(model, task, jnp.asarray(noisy[i]), solver=solver)
            outputs[i] = np.asarray(sol.value)
            iters[i] = int(sol.stats.iterations)
            conv[i] = bool(sol.stats.converged)
    return {
        "outputs": outputs,
        "iterations": iters,
        "converged": conv,
        "seconds": time.perf_counter() - t0,
        "config": config.to_dict(),
    }


def run_bm3d(noisy: list[np.ndarray], sigma: float) -> tuple[list[np.ndarray] | None, float, str]:
    try:
        import bm3d
    except ImportError:
        return None, float("nan"), 'bm3d is not installed: pip install "jaxinv[bench]"'
    t0 = time.perf_counter()
    out = [np.asarray(bm3d.bm3d(np.asarray(y, np.float64), sigma_psd=sigma)) for y in noisy]
    version = getattr(bm3d, "__version__", "")
    return out, time.perf_counter() - t0, f"bm3d {version}".strip()


def machine() -> str:
    """The machine a benchmark ran on, in words."""
    cores = f"{os.cpu_count()} CPU cores"
    return f"{platform.machine()}, {cores}, jax {jax.__version__} ({jax.default_backend()})"


def write_result(path: Path, result: dict) -> None:
    """Write a benchmark's JSON result and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, type=Path, help="folder of clean test images")
    p.add_argument("--model", action="append", default=[], help="run directory or pretrained name")
    p.add_argument("--sigma", default="25/255")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    sigma = parse_sigma(args.sigma)
    files = list_image_files(args.images)
    names = [f.stem for f in files]
    clean = [load_image_file(f) for f in files]
    noisy = noisy_images(clean, sigma, args.seed)

    outputs: dict[str, list[np.ndarray]] = {"noisy": noisy}
    timings: dict[str, float] = {}
    details: dict[str, dict] = {}
    for name in args.model:
        res = run_model(name, noisy, args.max_iter)
        label = Path(name).name if Path(name).is_dir() else name
        outputs[label] = res.pop("outputs")
        timings[label] = res["seconds"]
        details[label] = res
        print(f"{label}: {res['seconds']:.1f} s, iterations {res['iterations']}")
    bm3d_note = "skipped (--no-bm3d)"
    if not args.no_bm3d:
        out, secs, bm3d_note = run_bm3d(noisy, sigma)
        if out is not None:
            outputs["BM3D"] = out
            timings["BM3D"] = secs
        else:
            print(f"note: BM3D skipped: {bm3d_note}")

    def score(f, out):
        return [float(f(jnp.asarray(o), jnp.asarray(x))) for o, x in zip(out, clean, strict=True)]

    methods = list(outputs)
    scores = {m: (score(psnr, outputs[m]), score(ssim, outputs[m])) for m in methods}
    width = max(12, *(len(m) + 6 for m in methods))
    head = f"{'image':<12}" + "".join(
        f"{m + ' PSNR':>{width}}{m + ' SSIM':>{width}}" for m in methods
    )
    print(
        f"\ndenoising, sigma = {args.sigma}, {len(files)} images from {args.images}, "
        f"noise seed {args.seed}"
    )
    print(head)
    print("-" * len(head))
    for i, n in enumerate(names):
        print(
            f"{n:<12}"
            + "".join(
                f"{scores[m][0][i]:>{width}.2f}{scores[m][1][i]:>{width}.4f}" for m in methods
            )
        )
    print("-" * len(head))
    means = {m: (float(np.mean(s[0])), float(np.mean(s[1]))) for m, s in scores.items()}
    print(
        f"{'mean':<12}"
        + "".join(f"{means[m][0]:>{width}.2f}{means[m][1]:>{width}.4f}" for m in methods)
    )
    if "BM3D" in means:
        for m in methods:
            if m not in ("noisy", "BM3D"):
                print(f"{m} - BM3D = {means[m][0] - means['BM3D'][0]:+.2f} dB")
    print("seconds: " + ", ".join(f"{m} {t:.1f}" for m, t in timings.items()))

    result = {
        "benchmark": "set12_quality",
        "images_folder": str(args.images),
        "images": names,
        "sigma": sigma,
        "noise_seed": args.seed,
        "methods": methods,
        "per_image": {m: {"psnr": scores[m][0], "ssim": scores[m][1]} for m in methods},
        "mean": {m: {"psnr": means[m][0], "ssim": means[m][1]} for m in methods},
        "models": details,
        "bm3d": bm3d_note,
        "seconds": timings,
        "machine": machine(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
