"""Formulations of the multi-filter correlation on the CPU, timed inside the library's hot loop.

Workload: the tied gradient-step map of a fields-of-experts denoiser,

    T(x) = x - tau * ((x - y) + sum_f k_f^T * tanh(k_f * x)),

on a batch of N grayscale images with F filters k x k (float32), built from
``jaxinv._conv.correlate`` / ``correlate_adjoint`` with each ``method=``. Every number is the
time of ONE application, measured inside a jitted ``lax.fori_loop`` (100 applications per call
for the 96x96 case, fewer for the large ones, so per-call overhead is excluded):

* ``fwd``: x <- T(x) (the forward fixed-point iteration);
* ``vjp``: u <- (dT/dx)^T u + g with the linear VJP taken once by ``jax.vjp`` (the adjoint
  fixed-point iteration; second derivatives of the energy's correlations).

The formulations are timed interleaved (round robin) in one process; the tables give medians
(and minima) over the repetitions, GFLOP/s = 2 convolutions x 2 N F H W k^2 / time, and the
speed-up over ``baseline`` (the library's first implementation: wrap pad + NCHW
``lax.conv_general_dilated``, differentiated by JAX). The machine is shared: compare ratios.

    python benchmarks/conv_formulations.py           # default set (< 3 minutes)
    python benchmarks/conv_formulations.py --quick   # the 8 x 96 x 96, 8 filters 5x5 case only
    python benchmarks/conv_formulations.py --full    # + k x image-size cross product, 1-filter
                                                     #   blurs, a fused-stencil experiment, XLA
                                                     #   flags (about 35 min on a busy machine)

Writes ``benchmarks/results/conv_formulations.json`` (``--full`` writes
``conv_formulations_full.json``). A sub-process with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` measures the batch split over two host
devices (``jax.shard_map``), since XLA's CPU FFT is single-threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinv._conv import _split, _sum, choose_method, correlate, correlate_adjoint

ROOT = Path(__file__).resolve().parent
TAU = 0.1
MAIN = dict(n=8, h=96, w=96, nf=8, k=5)
METHODS_2DEV = ("fft", "stencil")


# ----------------------------------------------------------------------------- formulations


def baseline_correlate(x, filters, boundary):
    """The library's first implementation: wrap/zero pad + NCHW conv (autodiff adjoint)."""
    lo, hi = _split(filters.shape[-1])
    mode = "wrap" if boundary == "circular" else "constant"
    xp = jnp.pad(x[:, None], [(0, 0), (0, 0), (lo, hi), (lo, hi)], mode=mode)
    return lax.conv_general_dilated(
        xp, filters[:, None], (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )


def baseline_correlate_adjoint(z, filters, boundary):
    lo, hi = _split(filters.shape[-1])
    k = filters.shape[-1]
    full = lax.conv_general_dilated(
        z,
        jnp.flip(filters, (-2, -1))[None],
        (1, 1),
        [(k - 1, k - 1), (k - 1, k - 1)],
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )[:, 0]
    h, w = z.shape[-2:]
    if boundary == "zero":
        return full[:, lo : lo + h, lo : lo + w]
    for ax in (1, 2):  # fold the wrapped border back (adjoint of the wrap pad)
        n = full.shape[ax] - lo - hi
        inner = lax.slice_in_dim(full, lo, lo + n, axis=ax)
        if lo:
            part = lax.slice_in_dim(full, 0, lo, axis=ax)
            pads = [(0, 0)] * 3
            pads[ax] = (n - lo, 0)
            inner = inner + jnp.pad(part, pads)
        if hi:
            part = lax.slice_in_dim(full, lo + n, lo + n + hi, axis=ax)
            pads = [(0, 0)] * 3
            pads[ax] = (0, n - hi)
            inner = inner + jnp.pad(part, pads)
        full = inner
    return full


def make_map(method, boundary):
    if method == "baseline":
        corr = lambda x, f: baseline_correlate(x, f, boundary)  # noqa: E731
        adj = lambda z, f: baseline_correlate_adjoint(z, f, boundary)  # noqa: E731
    else:
        corr = lambda x, f: correlate(x, f, boundary, method)  # noqa: E731
        adj = lambda z, f: correlate_adjoint(z, f, boundary, method)  # noqa: E731

    def T(x, y, f):
        return x - TAU * ((x - y) + adj(jnp.tanh(corr(x, f)), f))

    return T


def fused_ext(boundary):
    """Experiment, not in the library: one fused stencil per T and per VJP application that
    computes the responses on a grid enlarged by k - 1 (from a pad of the *input*), so that no
    intermediate array is padded; the VJP applies the hand-written symmetric linear map."""

    def vcorr(xp, f, hh, ww):
        k = f.shape[-1]
        t = [
            f[:, a, b][None, :, None, None] * xp[:, None, a : a + hh, b : b + ww]
            for a in range(k)
            for b in range(k)
        ]
        return _sum(t, k)

    def vadj(tp, f, h, w):
        k, nf = f.shape[-1], f.shape[0]
        t = [
            f[i, a, b] * tp[:, i, k - 1 - a : k - 1 - a + h, k - 1 - b : k - 1 - b + w]
            for i in range(nf)
            for a in range(k)
            for b in range(k)
        ]
        return _sum(t, k)

    def ext(x, f):
        k = f.shape[-1]
        lo, hi = _split(k)
        mode = "wrap" if boundary == "circular" else "constant"
        e = lo + hi
        return jnp.pad(x, [(0, 0), (e, e), (e, e)], mode=mode)

    def G(x, f, act):
        k = f.shape[-1]
        h, w = x.shape[-2:]
        z = act(vcorr(ext(x, f), f, h + k - 1, w + k - 1))
        if boundary == "zero":
            z = _mask_ext(z, k)
        return vadj(z, f, h, w)

    def T(x, y, f):
        return x - TAU * ((x - y) + G(x, f, jnp.tanh))

    def vjp_loop(x, y, f, iters):
        k = f.shape[-1]
        h, w = x.shape[-2:]
        d = 1 - jnp.tanh(vcorr(ext(x, f), f, h + k - 1, w + k - 1)) ** 2  # residual, once
        if boundary == "zero":
            d = _mask_ext(d, k)

        def body(i, u):
            v = vcorr(ext(u, f), f, h + k - 1, w + k - 1) * d
            return u - TAU * (u + vadj(v, f, h, w)) + y

        return lax.fori_loop(0, iters, body, x)

    return T, vjp_loop


def _mask_ext(z, k):
    lo, hi = _split(k)
    hh, ww = z.shape[-2:]
    i = jnp.arange(hh)[:, None]
    j = jnp.arange(ww)[None, :]
    inside = (i >= hi) & (i < hh - lo) & (j >= hi) & (j < ww - lo)
    return jnp.where(inside, z, 0)


# ----------------------------------------------------------------------------- timing


def loops(T, iters, vjp_loop=None):
    @jax.jit
    def fwd(x, y, f):
        return lax.fori_loop(0, iters, lambda i, x: T(x, y, f), x)

    @jax.jit
    def vjp(x, y, f):
        if vjp_loop is not None:
            return vjp_loop(x, y, f, iters)
        _, pullback = jax.vjp(lambda x: T(x, y, f), x)
        return lax.fori_loop(0, iters, lambda i, u: pullback(u)[0] + y, x)

    return fwd, vjp


def problem(n, h, w, nf, k, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((n, h, w)), jnp.float32)
    f = jnp.asarray(rng.standard_normal((nf, k, k)) / k, jnp.float32)
    return x, y, f


def iterations(h, w, k):
    """100 applications per call for the 96x96 5x5 case; fewer (>= 5) when one costs more."""
    ratio = (h * w * k * k) / (96 * 96 * 25)
    return int(np.clip(round(100 / max(ratio, 1.0)), 5, 100))


def flops(n, h, w, nf, k):
    return 2 * (2 * n * nf * h * w * k * k)


def time_case(case, methods, boundary, reps, with_fused=False):
    """Compile, check against the baseline, then time all methods interleaved."""
    n, h, w, nf, k = (case[key] for key in ("n", "h", "w", "nf", "k"))
    iters = iterations(h, w, k)
    args = problem(n, h, w, nf, k)
    fns, compile_s = {}, {}
    for m in methods:
        fns[m] = loops(make_map(m, boundary), iters)
    if with_fused:
        T, vl = fused_ext(boundary)
        fns["stencil-fused*"] = loops(T, iters, vl)
    calls = {}
    for m, (fwd, vjp) in fns.items():
        t0 = time.perf_counter()
        calls[m, "fwd"] = fwd.lower(*args).compile()
        calls[m, "vjp"] = vjp.lower(*args).compile()
        compile_s[m] = time.perf_counter() - t0
    ref = {d: np.asarray(calls[methods[0], d](*args)) for d in ("fwd", "vjp")}
    errors = {}
    for (m, d), c in calls.items():
        out = np.asarray(c(*args))  # also the warm-up
        errors[m, d] = float(np.max(np.abs(out - ref[d])) / (np.max(np.abs(ref[d])) + 1e-30))
    times = {key: [] for key in calls}
    for _ in range(reps):
        for key, c in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[key].append((time.perf_counter() - t0) / iters * 1e3)
    rows = []
    fl = flops(n, h, w, nf, k)
    for m in fns:
        row = dict(
            formulation=m,
            boundary=boundary,
            **case,
            iters=iters,
            compile_s=round(compile_s[m], 2),
        )
        for d in ("fwd", "vjp"):
            med = statistics.median(times[m, d])
            row[f"{d}_ms"] = med
            row[f"{d}_ms_min"] = min(times[m, d])
            row[f"{d}_gflops"] = fl / med / 1e6
            row[f"{d}_rel_err"] = errors[m, d]
        rows.append(row)
    for row in rows:
        for d in ("fwd", "vjp"):
            has_base = methods[0] == "baseline"
            row[f"{d}_speedup"] = rows[0][f"{d}_ms"] / row[f"{d}_ms"] if has_base else None
    return rows


def print_rows(rows, title):
    print(f"\n{title}")
    print(
        f"{'formulation':16s} {'bnd':4s} {'images':>13s} {'k':>3s} | {'fwd ms':>7s} {'(min)':>6s}"
        f" {'GF/s':>5s} {'x base':>6s} | {'vjp ms':>7s} {'(min)':>6s} {'GF/s':>5s} {'x base':>6s}"
        f" | {'compile':>7s}"
    )
    for r in rows:
        img = f"{r['n']}x{r['h']}x{r['w']}"
        print(
            f"{r['formulation']:16s} {r['boundary'][:4]:4s} {img:>13s} {r['k']:>3d} | "
            f"{r['fwd_ms']:7.2f} {r['fwd_ms_min']:6.2f} {r['fwd_gflops']:5.1f} "
            f"{_ratio(r['fwd_speedup'])} | {r['vjp_ms']:7.2f} {r['vjp_ms_min']:6.2f} "
            f"{r['vjp_gflops']:5.1f} {_ratio(r['vjp_speedup'])} | {r['compile_s']:6.1f}s"
        )


def _ratio(x):
    return f"{x:6.2f}" if x is not None else f"{'-':>6s}"


# ----------------------------------------------------------------------------- sub-processes


def two_device_worker(reps):
    """Runs with 2 host devices: each formulation on one device vs the batch split on two."""
    mesh = jax.make_mesh((2,), ("b",))
    P = jax.sharding.PartitionSpec
    case, boundary = MAIN, "circular"
    iters = iterations(case["h"], case["w"], case["k"])
    args = problem(**case)
    NS = jax.sharding.NamedSharding
    split_args = (
        jax.device_put(args[0], NS(mesh, P("b"))),
        jax.device_put(args[1], NS(mesh, P("b"))),
        jax.device_put(args[2], NS(mesh, P())),
    )
    calls, inputs = {}, {1: args, 2: split_args}
    for m in METHODS_2DEV:
        fwd, vjp = loops(make_map(m, boundary), iters)
        for d, fn in (("fwd", fwd), ("vjp", vjp)):
            calls[m, d, 1] = fn.lower(*args).compile()
            split = jax.jit(
                jax.shard_map(fn, mesh=mesh, in_specs=(P("b"), P("b"), P()), out_specs=P("b"))
            )
            calls[m, d, 2] = split.lower(*split_args).compile()
    for key, c in calls.items():
        jax.block_until_ready(c(*inputs[key[2]]))
    times = {key: [] for key in calls}
    for _ in range(reps):
        for key, c in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*inputs[key[2]]))
            times[key].append((time.perf_counter() - t0) / iters * 1e3)
    out = []
    for m in METHODS_2DEV:
        row = dict(formulation=m, boundary=boundary, **case)
        for d in ("fwd", "vjp"):
            one, two = (statistics.median(times[m, d, nd]) for nd in (1, 2))
            row[f"{d}_ms_1dev"], row[f"{d}_ms_2dev"] = one, two
            row[f"{d}_split_speedup"] = one / two
        out.append(row)
    print(json.dumps(out))


def run_subprocess(extra_flags, args):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + extra_flags).strip()
    res = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def flags_worker(reps):
    rows = time_case(MAIN, ["baseline", "fft", "stencil"], "circular", reps)
    print(json.dumps(rows))


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 8x96x96, 8 filters 5x5 case")
    ap.add_argument("--full", action="store_true", help="cross product, blurs, XLA flags")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per formulation")
    ap.add_argument("--two-device-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--flags-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    reps = a.reps or 5
    if a.two_device_worker:
        return two_device_worker(reps)
    if a.flags_worker:
        return flags_worker(reps)

    t_start = time.perf_counter()
    lib = ["conv", "fft", "stencil"]
    report = dict(
        machine=dict(
            cpu=_cpu_model(),
            cores=os.cpu_count(),
            load_average_at_start=os.getloadavg(),
            python=platform.python_version(),
            jax=jax.__version__,
            backend=jax.default_backend(),
            xla_flags=os.environ.get("XLA_FLAGS", ""),
        ),
        settings=dict(tau=TAU, reps=reps, dtype="float32", statistic="median"),
        auto_rule={},
        results=[],
    )
    three = ["baseline", "fft", "stencil"]
    sections = [("main case, circular", MAIN, "circular", ["baseline", *lib], a.full, reps)]
    if a.full:
        sections.append(("main case, zero boundary", MAIN, "zero", ["baseline", *lib], True, reps))
        few = max(3, reps // 2)
        for hw in ((28, 28), (96, 96), (178, 218), (256, 256)):
            for k in (3, 5, 7, 9, 11):
                if (hw, k) == ((96, 96), 5):
                    continue
                # the baseline only where it is cheap enough to time on a shared 2-core machine
                methods = three if hw[0] * hw[1] * k * k <= 96 * 96 * 49 else ["fft", "stencil"]
                case = dict(MAIN, h=hw[0], w=hw[1], k=k)
                sections.append((f"{hw} k={k}", case, "circular", methods, False, few))
        for hw in ((96, 96), (256, 256)):
            for k in (5, 11, 15, 25):
                case = dict(n=8, h=hw[0], w=hw[1], nf=1, k=k)
                sections.append((f"1 filter {hw} k={k}", case, "circular", three, False, few))
    elif not a.quick:
        few = max(3, reps // 2)
        sections += [
            ("main case, zero boundary", MAIN, "zero", three, False, few),
            ("96x96, k=9", dict(MAIN, k=9), "circular", ["fft", "stencil"], False, few),
            ("28x28, k=5", dict(MAIN, h=28, w=28), "circular", three, False, few),
            ("256x256, k=5", dict(MAIN, h=256, w=256), "circular", ["fft", "stencil"], False, few),
        ]

    for title, case, boundary, methods, fused, nrep in sections:
        rows = time_case(case, methods, boundary, nrep, with_fused=fused)
        auto = choose_method((case["h"], case["w"]), case["k"], boundary, case["nf"], backend="cpu")
        for r in rows:
            r["auto_would_pick"] = auto
        report["results"] += rows
        print_rows(rows, f"{title}  (method='auto' picks {auto!r})")

    print("\nbatch split over 2 host devices (sub-process, main case)")
    two = run_subprocess(
        "--xla_force_host_platform_device_count=2",
        ["--two-device-worker", "--reps", str(max(3, reps // 2) if not a.full else reps)],
    )
    report["two_devices"] = two
    if isinstance(two, dict):
        print("  failed:", two["error"][-500:])
    else:
        for r in two:
            print(
                f"  {r['formulation']:9s} fwd {r['fwd_ms_1dev']:6.2f} -> {r['fwd_ms_2dev']:6.2f} ms"
                f" (x{r['fwd_split_speedup']:.2f})   vjp {r['vjp_ms_1dev']:6.2f} -> "
                f"{r['vjp_ms_2dev']:6.2f} ms (x{r['vjp_split_speedup']:.2f})"
            )

    if a.full:
        report["xla_flags"] = {}
        for flags in (
            "",
            "--xla_cpu_prefer_vector_width=512",
            "--xla_cpu_enable_fast_math=true",
            "--xla_cpu_multi_thread_eigen=false",
            "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
        ):
            res = run_subprocess(flags, ["--flags-worker", "--reps", str(reps)])
            report["xla_flags"][flags or "(none)"] = res
            if isinstance(res, dict):
                print(f"\nXLA_FLAGS={flags!r}: failed: {res['error'][-300:]}")
            else:
                print_rows(res, f"XLA_FLAGS={flags!r}")

    report["auto_rule"] = {
        "doc": choose_method.__doc__,
        "main_case": choose_method((96, 96), 5, "circular", backend="cpu"),
    }
    report["wall_s"] = time.perf_counter() - t_start
    out = ROOT / "results" / ("conv_formulations_full.json" if a.full else "conv_formulations.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {out.relative_to(ROOT.parent)} in {report['wall_s']:.0f} s")


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
