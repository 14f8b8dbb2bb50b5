"""Throughput of a data-parallel training step vs the number of devices.

Each device count runs in its own process (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
on CPU). The step is the engine benchmark's tied fields-of-experts step (8 filters 5x5, 100
forward + adjoint CG to tol 1e-4, Adam), with the batch split over the devices by
``jaxinv.distributed.data_parallel``. On a CPU the forced devices share the machine's physical
cores, so this measures the overhead and the parallel efficiency of the split, not more hardware.

    python benchmarks/scaling.py [--devices 1 2 4] [--batch 8] [--size 96] [--reps 5]

On a GPU machine pass ``--platform gpu`` to time the single real device instead.
Prints a table and writes benchmarks/results/scaling.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(devices: int, batch: int, size: int, reps: int, iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxinv as ji
    from jaxinv import distributed as dist
    from jaxinv import energies, operators
    from jaxinv.data import load_images, sample_patches

    images = [im for im in load_images("train") if min(im.shape) >= size]
    x_true = jnp.asarray(sample_patches(images, size, batch, seed=0))
    y = x_true + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x_true.shape)
    k = jax.random.normal(jax.random.PRNGKey(2), (8, 5, 5)) * 0.1
    k = k - k.mean(axis=(1, 2), keepdims=True)
    tau = 1.0 / (1.0 + float(jnp.sum(jnp.sum(jnp.abs(k), axis=(1, 2)) ** 2)))
    params = {
        "lam": jnp.asarray(1.0),
        "tau": jnp.asarray(tau),
        "reg": {"filters": k, "weights": jnp.ones(8)},
    }
    T = energies.tied_foe_map(operators.Identity(), potential="logcosh")
    solver = ji.Picard(tol=1e-30, max_iter=iters)
    adjoint = ji.Implicit("cg", tol=1e-4, max_iter=iters)
    opt = optax.adam(1e-3)

    def value_and_grad(params, data):
        ys, xs = data

        def loss(params):
            sol = jax.vmap(
                lambda yi: ji.fixed_point(
                    T, yi, params, yi, solver=solver, adjoint=adjoint, throw=False
                )
            )(ys)
            return jnp.mean((sol.value - xs) ** 2), sol.stats

        return jax.value_and_grad(loss, has_aux=True)(params)

    mesh = dist.data_mesh(devices)
    vg = dist.data_parallel(value_and_grad, mesh)

    @jax.jit
    def step(params, opt_state, data):
        (value, _), grads = vg(params, data)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    params = dist.replicate(params, mesh)
    opt_state = dist.replicate(opt.init(params), mesh)
    data = dist.shard_batch((y, x_true), mesh)
    jax.block_until_ready(step(params, opt_state, data))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(step(params, opt_state, data))
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "devices": devices,
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "batch": batch,
        "size": size,
        "iterations": iters,
        "ms_per_step": 1e3 * med,
        "images_per_s": batch / med,
        "times_s": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--platform", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scaling.json"))
    args = parser.parse_args()
    if args.worker is not None:
        row = worker(args.worker, args.batch, args.size, args.reps, args.iters)
        print(json.dumps(row))
        return
    rows = []
    counts = [1] if args.platform == "gpu" else args.devices
    for n in counts:
        env = dict(os.environ)
        if args.platform == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            env["JAX_PLATFORMS"] = "cpu"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            str(n),
            "--batch",
            str(args.batch),
            "--size",
            str(args.size),
            "--reps",
            str(args.reps),
            "--iters",
            str(args.iters),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"worker for {n} device(s) failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]["images_per_s"]
    print(
        f"# data-parallel training step, batch {args.batch} of {args.size}x{args.size}, "
        f"{args.iters} forward iterations + CG adjoint (tol 1e-4), {os.cpu_count()} CPUs"
    )
    print(f"{'devices':>7} {'platform':>8} {'ms/step':>9} {'images/s':>9} {'vs 1':>6}")
    for r in rows:
        print(
            f"{r['devices']:7d} {r['platform']:>8} {r['ms_per_step']:9.0f} "
            f"{r['images_per_s']:9.2f} {r['images_per_s'] / base:6.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count()}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
