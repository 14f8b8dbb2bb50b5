"""A grid of G configurations trained as one vmapped sweep vs the same G as separate runs.

The dense MNIST denoising model of ``jaxinv reproduce`` (batch 100, Anderson forward and adjoint
to tol 1e-3 within 50 iterations, Adam at 1e-4; a fixed step tau = 0.9) for ``--steps`` steps per
configuration, on grids of G = 3 (gamma) and G = 9 (gamma x sigma) configurations. Each
measurement runs in its own process, so every run pays its own compilations and none reuses
another's: ``sweep`` is one :func:`jaxinv.train.train_sweep` of the G configurations,
``sequential`` the G :func:`jaxinv.train.train` runs one after another (each configuration
compiles its own step, as separate runs do). Same steps, same data (the sweep gives each
configuration exactly its own run's batches and noise).

Reported per mode: wall time of the training calls (compilation, the steps, the final validation
and checkpoint included; data loading excluded) and the time of one step of all G configurations
excluding compilation (the first step's time left out), plus the largest parameter difference
between the two modes (float32).

    python benchmarks/sweep.py [--steps 20] [--grids 3 9]

Prints a table and writes benchmarks/results/sweep.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRIDS = {
    3: {"gamma": [0.1, 0.5, 1.0]},
    9: {"gamma": [0.1, 0.5, 1.0], "sigma": [0.05, 0.1, 0.2]},
}


def base_config(steps: int):
    from jaxinv.reproduce import experiment_config

    config = experiment_config("denoise", "dense", "bilevel", steps=steps)
    return config.replace(
        num_train=1000,
        num_val=100,
        eval_every=0,
        checkpoint_every=0,
        arch_options={**config.arch_options, "tau": 0.9},
    )


def per_step(records: list[dict]) -> float:
    """Seconds per step without the first (which compiles)."""
    t = [r["time"] for r in records]
    return (t[-1] - t[0]) / (len(t) - 1)


def worker(mode: str, size: int, steps: int, params_out: str) -> dict:
    import jax
    import numpy as np

    from jaxinv.train import expand_grid, make_datasets, train, train_sweep

    base, grid = base_config(steps), GRIDS[size]
    pairs = expand_grid(base, grid)
    for _, config in pairs:  # load and degrade the data outside the timings
        make_datasets(config)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if mode == "sweep":
            result = train_sweep(base, grid, f"{tmp}/sweep", progress=False)
            wall = time.perf_counter() - t0
            step = per_step(result.records(0))
            leaves = [np.asarray(a) for a in jax.tree.leaves(result.models.params())]
            traces = result.step_fn.trace_count
            failed = len(result.failures)
        else:
            steps_s, runs = [], []
            for g, (_, config) in enumerate(pairs):
                run = train(config, f"{tmp}/{g}", progress=False)
                steps_s.append(per_step([r for r in run.history if r["kind"] == "train"]))
                runs.append([np.asarray(a) for a in jax.tree.leaves(run.params.params())])
            wall = time.perf_counter() - t0
            step = sum(steps_s)
            leaves = [np.stack(a) for a in zip(*runs, strict=True)]
            traces = len(pairs)
            failed = 0
    np.savez(params_out, *leaves)
    return {
        "mode": mode,
        "configurations": size,
        "grid": grid,
        "steps": steps,
        "wall_s": wall,
        "step_s": step,
        "compilations_of_the_step": traces,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--grids", type=int, nargs="+", default=[3, 9], choices=sorted(GRIDS))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sweep.json"))
    args = parser.parse_args()
    if args.worker:
        mode, size, params_out = args.worker
        print(json.dumps(worker(mode, int(size), args.steps, params_out)))
        return

    import numpy as np

    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.grids:
            pair = {}
            for mode in ("sweep", "sequential"):
                npz = f"{tmp}/{mode}{size}.npz"
                cmd = [sys.executable, __file__, "--steps", str(args.steps)]
                cmd += ["--worker", mode, str(size), npz]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(proc.stderr[-3000:])
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                pair[mode] = np.load(npz)
                rows.append(row)
                print(
                    f"G={size:2d} {mode:10s} wall {row['wall_s']:7.1f} s   per step of all G "
                    f"{row['step_s']:6.3f} s   step compilations {row['compilations_of_the_step']}",
                    flush=True,
                )
            a, b = pair["sweep"], pair["sequential"]
            diff = max(
                float(np.max(np.abs(a[k] - b[k])) / max(1.0, np.max(np.abs(b[k])))) for k in a
            )
            rows[-1]["max_param_diff_vs_sweep"] = rows[-2]["max_param_diff_vs_sweep"] = diff
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    print()
    print("| G | mode | wall incl. compilation (s) | step of all G, no compilation (s) | "
          "step compilations | speed-up wall / step |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|")
    for size in args.grids:
        sw, sq = (next(r for r in rows if r["configurations"] == size and r["mode"] == m)
                  for m in ("sweep", "sequential"))  # fmt: skip
        for r in (sw, sq):
            speed = (
                f"{sq['wall_s'] / sw['wall_s']:.2f}x / {sq['step_s'] / sw['step_s']:.2f}x"
                if r is sw
                else ""
            )
            print(
                f"| {size} | {r['mode']} | {r['wall_s']:.1f} | {r['step_s']:.3f} "
                f"| {r['compilations_of_the_step']} | {speed} |"
            )
    print(f"\nlargest relative parameter difference sweep vs sequential: "
          f"{max(r['max_param_diff_vs_sweep'] for r in rows):.2e} (float32)")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import jax

    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "steps": args.steps,
                "cpus": os.cpu_count(),
                "device": str(jax.devices()[0].device_kind),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "command": "python benchmarks/sweep.py " + " ".join(sys.argv[1:]),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
