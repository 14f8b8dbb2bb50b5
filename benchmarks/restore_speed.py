"""Restoration speed: a pretrained model against BM3D on the same noisy images, side by side.

The images of a folder (e.g. Set12) get Gaussian noise of standard deviation ``--sigma`` drawn
as in ``set12_quality.py`` (image ``i`` sorted by name: ``fold_in(PRNGKey(--seed), i)``). Each is
restored, one at a time, by

* ``BM3D`` (the ``bm3d`` package, told the true sigma), and
* each ``--model`` through :func:`jaxinv.restore.restore_image` (what ``jaxinv restore`` runs),
  at each ``--tol``: first in image order as a fresh process would (``cold``: the first image
  of every shape includes compiling its solve), then all again (``warm``: compiled, as with a
  filled compilation cache or in a long-lived process).

    python benchmarks/restore_speed.py --images ../shared/data/set12
    python benchmarks/restore_speed.py --images DIR --model foe-student-t-s25 --tol 1e-4 1e-5

Prints a table (seconds for the whole folder, mean iterations, PSNR) and writes
``benchmarks/results/restore_speed.json`` (or ``--out``). The methods alternate image by image
in the warm pass, so a change in the machine's speed affects them alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxinv.data import list_image_files, load_image_file, parse_sigma
from jaxinv.metrics import psnr
from jaxinv.restore import open_model, restore_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from set12_quality import machine, noisy_images, write_result  # noqa: E402  (shared)

RESULTS = Path(__file__).resolve().parent / "results" / "restore_speed.json"


def _psnr(out: np.ndarray, clean: np.ndarray) -> float:
    return float(psnr(jnp.asarray(out, jnp.float32), jnp.asarray(clean, jnp.float32), 1.0))


def _timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, type=Path, help="folder of clean test images")
    p.add_argument("--model", action="append", help="pretrained name or run directory")
    p.add_argument("--tol", type=float, nargs="+", default=[1e-4], help="solver tolerances")
    p.add_argument("--sigma", default="25/255", help="noise level (default 25/255)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--no-bm3d", action="store_true", help="skip BM3D")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = p.parse_args()
    models = args.model or ["foe-student-t-s25"]
    sigma = parse_sigma(args.sigma)

    files = list_image_files(args.images)
    clean = [np.asarray(load_image_file(f), np.float32) for f in files]
    noisy = noisy_images(clean, sigma, args.seed)
    load_before = os.getloadavg()

    bm3d = None
    if not args.no_bm3d:
        try:
            import bm3d
        except ImportError:
            sys.exit('bm3d is not installed: pip install "jaxinv[bench]"')

    methods: dict[str, dict] = {}
    solvers = {}  # key -> (model, tol); each model opened fresh, so its cold pass compiles
    for name in models:
        for tol in args.tol:
            model = open_model(name)
            model.match_precision()
            key = f"{name} tol {tol:g}"
            solvers[key] = (model, tol)
            cold = [
                _timed(lambda y=y, m=model, t=tol: restore_image(m, y, tol=t))[1] for y in noisy
            ]
            methods[key] = {"model": name, "tol": tol, "cold_seconds": cold, "seconds": []}
            methods[key].update(iterations=[], converged=[], psnr=[])
    if bm3d is not None:
        methods["BM3D"] = {"seconds": [], "psnr": []}
    for y, c in zip(noisy, clean, strict=True):  # warm pass: the methods in turn, image by image
        if bm3d is not None:
            out, secs = _timed(lambda y=y: np.asarray(bm3d.bm3d(y.astype(np.float64), sigma)))
            methods["BM3D"]["seconds"].append(secs)
            methods["BM3D"]["psnr"].append(_psnr(out, c))
        for key, (model, tol) in solvers.items():
            r, secs = _timed(lambda y=y, model=model, tol=tol: restore_image(model, y, tol=tol))
            m = methods[key]
            m["seconds"].append(secs)
            m["iterations"].append(r.iterations)
            m["converged"].append(r.converged)
            m["psnr"].append(_psnr(r.image, c))

    rows = []
    base = sum(methods["BM3D"]["seconds"]) if "BM3D" in methods else None
    header = "| method | PSNR (dB) | iterations | cold s | warm s | warm ÷ BM3D |"
    print(header + "\n|---|---:|---:|---:|---:|---:|")
    for key, m in methods.items():
        warm_total = sum(m["seconds"])
        cold_total = sum(m.get("cold_seconds", m["seconds"]))
        ratio = f"{warm_total / base:.2f}" if base else "–"
        iters = f"{np.mean(m['iterations']):.0f}" if "iterations" in m else "–"
        row = (key, np.mean(m["psnr"]), iters, cold_total, warm_total, ratio)
        rows.append(row)
        print(f"| {row[0]} | {row[1]:.2f} | {row[2]} | {row[3]:.1f} | {row[4]:.1f} | {row[5]} |")

    result = {
        "benchmark": "restore_speed",
        "images_folder": str(args.images),
        "images": [f.stem for f in files],
        "shapes": [list(c.shape) for c in clean],
        "sigma": sigma,
        "noise_seed": args.seed,
        "methods": methods,
        "load_average_before_after": [load_before, os.getloadavg()],
        "machine": machine(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
