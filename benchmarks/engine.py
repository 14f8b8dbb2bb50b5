"""Engine benchmark: one training step of a fields-of-experts model, every adjoint, vs jaxopt.

Workload (fixed by the engine's specification): a batch of 8 grayscale 96x96 crops of the bundled
natural images, Gaussian noise 0.1, fields of experts with 8 filters 5x5, log-cosh, circular
boundary, lam = 1, tau = 1/(lam + sum_i ||k_i||_1^2). One training step = 100 forward iterations
+ 100 adjoint iterations (fixed counts) + one Adam step, for the tied (bilevel) and the untied
(DEQ) map. Also: the per-iteration cost of the solver relative to one bare jitted evaluation of T,
the same step with Krylov adjoints stopped at a tolerance (the realistic setting), and the memory
XLA allocates for implicit vs unrolled gradients at K = 10, 100, 1000 iterations.

    python benchmarks/engine.py            # full run, about 5-10 minutes on 2 cores
    python benchmarks/engine.py --quick    # fewer repetitions

Prints tables and writes benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import jaxinv as ji
from jaxinv import energies, operators
from jaxinv.data import load_images, sample_patches

BATCH, SIZE, FILTERS, KSIZE, SIGMA, ITERS = 8, 96, 8, 5, 0.1, 100
TINY = 1e-30  # a tolerance never met: fixed iteration counts


def flops_per_application() -> float:
    """Two 8-filter 5x5 correlations of the batch (multiply + add per tap)."""
    return 2 * 2 * BATCH * FILTERS * SIZE * SIZE * KSIZE * KSIZE


def workload(seed: int = 0):
    images = load_images("train")
    x_true = jnp.asarray(sample_patches(images, SIZE, BATCH, seed=seed))
    key_noise, key_k, key_c = jax.random.split(jax.random.PRNGKey(seed), 3)
    y = x_true + SIGMA * jax.random.normal(key_noise, x_true.shape, x_true.dtype)
    k = jax.random.normal(key_k, (FILTERS, KSIZE, KSIZE)) * 0.1
    k = k - k.mean(axis=(1, 2), keepdims=True)
    c = k + 0.02 * jax.random.normal(key_c, k.shape)
    lam = 1.0
    tau = 1.0 / (lam + float(jnp.sum(jnp.sum(jnp.abs(k), axis=(1, 2)) ** 2)))
    op = operators.Identity()
    tied = energies.tied_foe_map(op, potential="logcosh", boundary="circular")
    tied_params = {
        "lam": jnp.asarray(lam),
        "tau": jnp.asarray(tau),
        "reg": {"filters": k, "weights": jnp.ones(FILTERS)},
    }
    untied = energies.deq_conv_map(op, activation="tanh", boundary="circular")
    untied_params = {
        "lam": jnp.asarray(lam),
        "tau": jnp.asarray(tau),
        "K": k,
        "C": c,
        "b": jnp.zeros(FILTERS),
    }
    return x_true, y, {"tied": (tied, tied_params), "untied": (untied, untied_params)}


def timeit(fn, *args, reps: int) -> tuple[float, list[float]]:
    out = fn(*args)
    jax.block_until_ready(out)  # compile + warm up
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def make_ji_step(T, x_true, y, solver, adjoint):
    opt = optax.adam(1e-3)

    def loss(params, probe):
        def one(yi, xi, pi):
            sol = ji.fixed_point(
                T, yi, params, yi, solver=solver, adjoint=adjoint, throw=False, probe=pi
            )
            return jnp.sum((sol.value - xi) ** 2), sol.stats

        losses, stats = jax.vmap(one)(y, x_true, probe)
        return jnp.mean(losses), stats

    @jax.jit
    def step(params, opt_state):
        probe = ji.BackwardProbe.zeros(BATCH)
        (value, stats), (grads, probe_grad) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True
        )(params, probe)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, stats, probe_grad

    return step, opt


def make_jaxopt_step(T, x_true, y, linear: str):
    import jaxopt  # test/bench dependency: an independent baseline

    def solve(matvec, b):
        # Both spend about ITERS operator applications: normal CG applies A and A^T per
        # iteration; jax's GMRES counts restart cycles of 20 products.
        if linear == "normal_cg":
            return jaxopt.linear_solve.solve_normal_cg(matvec, b, tol=TINY, maxiter=ITERS // 2)
        return jaxopt.linear_solve.solve_gmres(matvec, b, tol=TINY, restart=20, maxiter=ITERS // 20)

    opt = optax.adam(1e-3)

    def loss(params):
        fpi = jaxopt.FixedPointIteration(
            fixed_point_fun=lambda x, p: T(x, p, y),
            maxiter=ITERS,
            tol=TINY,
            implicit_diff=True,
            implicit_diff_solve=solve,
        )
        return jnp.sum((fpi.run(y, params).params - x_true) ** 2) / BATCH

    @jax.jit
    def step(params, opt_state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, opt


def bare_map_ms(T, params, y, reps: int) -> float:
    @jax.jit
    def loop(x):
        return jax.lax.fori_loop(0, ITERS, lambda _, v: T(v, params, y), x)

    med, _ = timeit(loop, y, reps=reps)
    return 1e3 * med / ITERS


def forward_solve_ms(T, params, y, reps: int, solver) -> float:

    @jax.jit
    def solve(x):
        return jax.vmap(
            lambda yi: ji.fixed_point(T, yi, params, yi, solver=solver, throw=False).value
        )(x)

    med, _ = timeit(solve, y, reps=reps)
    return 1e3 * med / ITERS


def memory_bytes(T, params, y, adjoint, iters: int) -> int:
    """Bytes XLA plans for one value-and-gradient (temporaries + outputs)."""
    solver = ji.Picard(tol=TINY, max_iter=iters)

    def loss(p):
        sol = jax.vmap(
            lambda yi: ji.fixed_point(T, yi, p, yi, solver=solver, adjoint=adjoint, throw=False)
        )(y)
        return jnp.sum(sol.value**2)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    mem = compiled.memory_analysis()
    return int(mem.temp_size_in_bytes + mem.output_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 10")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.json"))
    args = parser.parse_args()
    reps = 3 if args.quick else 10

    x_true, y, maps = workload()
    gflop_step = 2 * ITERS * flops_per_application() / 1e9
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
        },
        "workload": {
            "batch": BATCH,
            "size": SIZE,
            "filters": FILTERS,
            "kernel": KSIZE,
            "iterations": ITERS,
            "gflop_per_step": gflop_step,
        },
        "steps": [],
        "per_iteration": [],
        "memory": [],
    }

    print(
        f"# jaxinv engine benchmark ({jax.devices()[0]}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__})"
    )
    print(
        f"# step = {ITERS} forward + {ITERS} adjoint iterations + Adam; "
        f"{gflop_step:.1f} GFLOP of convolutions"
    )
    print("\n## Per-iteration cost (ms), median of", reps)
    print(f"{'map':8} {'solver':9} {'bare T':>8} {'solver':>8} {'ratio':>6}")
    for name, (T, params) in maps.items():
        bare = bare_map_ms(T, params, y, reps)
        for solver in (ji.Picard(tol=TINY, max_iter=ITERS), ji.Anderson(tol=TINY, max_iter=ITERS)):
            solve = forward_solve_ms(T, params, y, reps, solver)
            label = type(solver).__name__
            row = {"map": name, "solver": label, "bare_T_ms": bare, "solver_ms": solve}
            result["per_iteration"].append({**row, "ratio": solve / bare})
            print(f"{name:8} {label:9} {bare:8.2f} {solve:8.2f} {solve / bare:6.2f}")

    configs = [
        ("tied", "ji Implicit(fixed_point)", ji.Implicit("fixed_point", tol=TINY, max_iter=ITERS)),
        ("tied", "ji Implicit(cg)", ji.Implicit("cg", tol=TINY, max_iter=ITERS)),
        ("tied", "ji Implicit(gmres)", ji.Implicit("gmres", tol=TINY, max_iter=ITERS)),
        ("tied", "ji JacobianFree", ji.JacobianFree()),
        ("tied", "ji Unrolled", ji.Unrolled()),
        ("tied", "ji Implicit(cg, tol=1e-4)", ji.Implicit("cg", tol=1e-4, max_iter=ITERS)),
        ("tied", "jaxopt (normal-CG adjoint)", "normal_cg"),
        ("tied", "jaxopt (GMRES adjoint)", "gmres"),
        (
            "untied",
            "ji Implicit(fixed_point)",
            ji.Implicit("fixed_point", tol=TINY, max_iter=ITERS),
        ),
        ("untied", "ji Implicit(gmres)", ji.Implicit("gmres", tol=TINY, max_iter=ITERS)),
        ("untied", "ji Implicit(gmres, tol=1e-4)", ji.Implicit("gmres", tol=1e-4, max_iter=ITERS)),
        ("untied", "jaxopt (GMRES adjoint)", "gmres"),
    ]
    print("\n## Training step (ms), median of", reps)
    print(f"{'map':7} {'method':30} {'ms/step':>8} {'adj it':>7} {'GFLOP/s':>8}")
    baseline = {}
    for map_name, label, adjoint in configs:
        T, params = maps[map_name]
        if isinstance(adjoint, str):
            step, opt = make_jaxopt_step(T, x_true, y, adjoint)
            med, times = timeit(step, params, opt.init(params), reps=reps)
            adj_iters = None
        else:
            solver = ji.Picard(tol=TINY, max_iter=ITERS)
            step, opt = make_ji_step(T, x_true, y, solver, adjoint)
            med, times = timeit(step, params, opt.init(params), reps=reps)
            probe = step(params, opt.init(params))[4]
            adj_iters = float(probe.iterations.mean())
        applications = ITERS + (adj_iters if adj_iters is not None else ITERS)
        gflops = 2 * applications / 2 * flops_per_application() / 1e9 / med
        row = {
            "map": map_name,
            "method": label,
            "ms_per_step": 1e3 * med,
            "times_s": times,
            "adjoint_iterations": adj_iters,
            "gflop_per_s": gflops,
        }
        result["steps"].append(row)
        if label.startswith("jaxopt"):
            baseline.setdefault(map_name, []).append(1e3 * med)
        it = "-" if adj_iters is None else f"{adj_iters:.0f}"
        print(f"{map_name:7} {label:30} {1e3 * med:8.0f} {it:>7} {gflops:8.1f}")
    for row in result["steps"]:
        best = min(baseline.get(row["map"], [float("nan")]))
        row["speedup_vs_best_jaxopt"] = best / row["ms_per_step"]
    print("\nSpeed-up over the best jaxopt configuration on the same map:")
    for row in result["steps"]:
        print(f"  {row['map']:7} {row['method']:30} {row['speedup_vs_best_jaxopt']:5.2f}x")

    print("\n## Memory allocated by XLA for one value-and-gradient (MB), tied map")
    print(f"{'K':>6} {'implicit':>10} {'unrolled':>10}")
    T, params = maps["tied"]
    for k in (10, 100, 1000):
        imp = (
            memory_bytes(T, params, y, ji.Implicit("fixed_point", tol=TINY, max_iter=k), k) / 2**20
        )
        unr = memory_bytes(T, params, y, ji.Unrolled(), k) / 2**20
        result["memory"].append({"K": k, "implicit_mb": imp, "unrolled_mb": unr})
        print(f"{k:6d} {imp:10.1f} {unr:10.1f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
