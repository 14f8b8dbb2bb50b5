"""Anderson's restart threshold on trained models: iterations to each run's own tolerance.

Anderson clears its history when the residual exceeds ``restart`` × the best residual seen.
A vmapped batch of solves runs until its slowest member converges, so the worst case sets the
cost. Workload: for each run directory given (written by ``jaxinv train``, ``jaxinv reproduce``
or ``benchmarks/denoise_quality.py``), the first 64 training patches (256 MNIST digits) of its
own training set, solved by Anderson with the run's ``tol`` and ``memory``, ``max_iter`` three
times the run's, for each threshold. Reports mean / max iterations, the fraction converged and
the wall time of one jitted batched solve (after a compile run).

    python benchmarks/anderson_restart.py runs/denoise_quality_foe runs/reproduce/runs/*

Writes ``benchmarks/results/anderson_restart.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxinv.solvers import Anderson
from jaxinv.train import load_run, make_datasets, reconstruct

RESULTS = Path(__file__).resolve().parent / "results" / "anderson_restart.json"
THRESHOLDS = (1e4, 10.0, 3.0, 2.0)


def measure(run: Path, thresholds: tuple[float, ...]) -> dict:
    config, model = load_run(run)
    task = config.make_task()
    train, _ = make_datasets(config, task)
    n = 64 if config.data.dataset == "natural" else 256
    y = jax.numpy.asarray(train.y[:n])
    out = {
        "run": str(run),
        "tol": config.forward.tol,
        "memory": config.forward.memory,
        "n": n,
        "rows": [],
    }
    for restart in thresholds:
        solver = Anderson(
            tol=config.forward.tol,
            max_iter=3 * config.forward.max_iter,
            memory=config.forward.memory,
            restart=restart,
        )
        reconstruct(model, task, y, solver=solver).value.block_until_ready()  # compile
        t0 = time.perf_counter()
        sol = reconstruct(model, task, y, solver=solver)
        sol.value.block_until_ready()
        seconds = time.perf_counter() - t0
        iters = np.asarray(sol.stats.iterations)
        out["rows"].append(
            {
                "restart": restart,
                "mean_iters": float(iters.mean()),
                "max_iters": int(iters.max()),
                "converged": float(np.asarray(sol.stats.converged).mean()),
                "seconds": seconds,
            }
        )
    return out


def _cell(row: dict) -> str:
    return (
        f"{row['mean_iters']:.0f}/{row['max_iters']} {row['converged']:.2f} {row['seconds']:.1f}s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--restart", type=float, nargs="+", default=list(THRESHOLDS))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    results = []
    head = f"{'run':<32}" + "".join(f"{'restart ' + format(r, 'g'):>24}" for r in args.restart)
    print("mean/max iterations, fraction converged, seconds per batched solve")
    print(head)
    print("-" * len(head))
    for run in args.runs:
        r = measure(run, tuple(args.restart))
        results.append(r)
        cells = "".join(f"{_cell(row):>24}" for row in r["rows"])
        print(f"{run.name:<32}{cells}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "anderson_restart", "runs": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
