"""One training step of the paper's dense MNIST models: tied (bilevel) and untied (DEQ), and the
tied one without its solve form (``V = Wᵀ`` as its own leaf, :meth:`DenseModel.solve_form`).

Workload: the ``jaxinv reproduce`` denoising cell (784 units, identity activation centred at
−1, Anderson forward and adjoint to 1e-3), one batch of 100 digits, float32. Each row compiles
its step, then times ``--reps`` steps on the same batch and reports their minimum and median.

    python benchmarks/dense_step.py            # writes benchmarks/results/dense_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("JAXINV_COMPILATION_CACHE", "off")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxinv.models import AbstractModel, DenseModel  # noqa: E402
from jaxinv.reproduce import experiment_config  # noqa: E402
from jaxinv.train import build_instance, init_state, make_datasets, make_train_step  # noqa: E402

BATCH = 100


def time_step(model: str, reps: int) -> dict:
    config = experiment_config("denoise", "dense", model).replace(num_train=BATCH)
    task, inst = build_instance(config)
    train, _ = make_datasets(config, task)
    step = make_train_step(inst, task, config)
    state = init_state(inst, config, BATCH)
    batch = {
        "x": jnp.asarray(train.x),
        "y": jnp.asarray(train.y),
        "ids": jnp.arange(BATCH, dtype=jnp.int32),
    }
    state, metrics = step(state, batch)  # compiles
    jax.block_until_ready(metrics)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return {
        "min_s": min(times),
        "median_s": statistics.median(times),
        "fwd_iters": float(metrics["fwd_iters"]),
        "bwd_iters": float(metrics["bwd_iters"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dense_step.json"))
    args = parser.parse_args()
    rows = {
        "tied (bilevel)": time_step("bilevel", args.reps),
        "untied (DEQ)": time_step("deq", args.reps),
    }
    with_form = DenseModel.solve_form
    DenseModel.solve_form = AbstractModel.solve_form  # the model itself: W used twice
    jax.clear_caches()  # the step is cached by configuration: trace it again
    try:
        rows["tied, without the solve form"] = time_step("bilevel", args.reps)
    finally:
        DenseModel.solve_form = with_form
    print(f"{'model':32s} {'min (s)':>8s} {'median (s)':>11s} {'fwd':>5s} {'bwd':>5s}")
    for name, r in rows.items():
        print(
            f"{name:32s} {r['min_s']:8.3f} {r['median_s']:11.3f} {r['fwd_iters']:5.1f} "
            f"{r['bwd_iters']:5.1f}"
        )
    result = {
        "rows": rows,
        "batch": BATCH,
        "reps": args.reps,
        "load_average_after": os.getloadavg(),
        "command": "python benchmarks/dense_step.py",
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
