"""Does a Jacobian penalty keep the dense MNIST deblurring DEQ stable at the paper's rate?

Workload: the ``deblur / dense / deq`` cell of ``jaxinv reproduce`` (``experiment_config``: 784x784
untied dense map, 5x5 diagonal motion blur, batch 100 of 4000 training digits, Anderson forward
solve and GMRES adjoint to 1e-4 within 200 iterations, Adam with cosine decay) trained at the
paper's learning rate 1e-3 (decayed to 1e-6) without a penalty, with the Frobenius penalty
(Hutchinson, 1 probe per digit) and with the spectral-norm penalty (5 power iterations,
target 0.95) at the given weights; a reference row keeps the cell's own setting (lr 1e-4, no
penalty).

Per run: test PSNR of the reconstructions of the first ``--test-images`` MNIST test digits (and
of the blurred input), the fraction of test solves converged, the fractions of forward and
adjoint solves converged over the training steps, the Jacobian ``J = ∂T/∂x`` at the test
fixed points of the first ``--jacobian-images`` digits computed exactly (``jax.jacfwd``,
784x784): its spectral norm ``‖J‖₂`` and spectral radius ``ρ(J)`` (max and median over the
digits), and the training seconds per step (first step, which compiles, excluded). A run whose
loss becomes non-finite is evaluated at its last checkpoint and marked.

    python benchmarks/deq_stability.py                         # 200 steps each
    python benchmarks/deq_stability.py --steps 4 --frobenius 10 --spectral 100 1000 --no-reference

Measured with the defaults (2 CPU cores at load average about 5, 45 min; the table is in the
README): at lr 1e-3 the unpenalised run diverges from its second step (-1.03 dB against the
input's 14.27); Frobenius 100 / 1000 and spectral 1e4 keep every forward solve converging and
the exact ‖J‖₂ at 1.00 but end at 13.73 / 12.86 / 14.07 dB; lr 1e-4 without a penalty reaches
15.79 dB.

Runs are written to ``--runs`` (default ``runs/deq_stability``) and reused when finished with
the same configuration (``--overwrite`` trains again). Prints a table and writes
``benchmarks/results/deq_stability.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.evaluate import degrade_images, evaluate_run, held_out_images
from jaxinv.reproduce import experiment_config
from jaxinv.train import RunExistsError, load_run, read_metrics, reconstruct, train

RESULTS = Path(__file__).resolve().parent / "results" / "deq_stability.json"
PAPER_LR = (1e-3, 1e-6)  # the paper's Adam rate and the end of its cosine decay


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """``(name, TrainConfig changes)`` of every run, in table order."""
    paper = {"lr": PAPER_LR[0], "lr_final": PAPER_LR[1]}
    pen = {"jac_probes": args.probes, "jac_iters": args.iters, "jac_target": args.target}
    out = [("lr 1e-3, no penalty", paper)]
    for w in args.frobenius:
        out.append((f"lr 1e-3, frobenius {w:g}", {**paper, **pen, "jac_penalty": w}))
    for w in args.spectral:
        spec = {**paper, **pen, "jac_penalty": w, "jac_kind": "spectral"}
        out.append((f"lr 1e-3, spectral {w:g}", spec))
    if args.reference:
        out.append(("lr 1e-4, no penalty (reproduce)", {}))
    return out


def _train(config, run_dir: Path, overwrite: bool) -> tuple[list[dict], str | None]:
    """Train (or reuse a finished run); returns the metrics and why training stopped early."""
    try:
        train(config, run_dir, progress=False, overwrite=overwrite)
    except RunExistsError:
        if load_run(run_dir)[0].differences(config):
            raise
    except FloatingPointError as err:  # the loss became non-finite: keep the last checkpoint
        return read_metrics(run_dir), str(err).split(". ")[0]
    return read_metrics(run_dir), None


def jacobian_norms(run_dir: Path, n: int) -> dict[str, float]:
    """``‖J‖₂`` and ``ρ(J)`` of the exact 784x784 Jacobian at the test fixed points of the
    first ``n`` test digits (the points the solver returned, seed-0 noise as in evaluation)."""
    config, model = load_run(run_dir)
    task = config.make_task()
    _, clean = held_out_images(config, max_images=n)
    y = jnp.stack(degrade_images(task, clean, 0))
    sol = reconstruct(model, task, y, solver=config.forward_solver())
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda x, yy: model(x, yy))))(sol.value, y)
    d = int(np.prod(model.image_shape))
    norms, radii = [], []
    for J in np.asarray(jac, np.float64).reshape(-1, d, d):
        if not np.all(np.isfinite(J)):
            norms.append(math.nan)
            radii.append(math.nan)
            continue
        norms.append(float(np.linalg.norm(J, 2)))
        radii.append(float(np.max(np.abs(np.linalg.eigvals(J)))))
    return {
        "jac_norm_max": float(np.max(norms)),
        "jac_norm_median": float(np.median(norms)),
        "radius_max": float(np.max(radii)),
        "radius_median": float(np.median(radii)),
        "jacobian_points_converged": float(np.mean(np.asarray(sol.stats.converged))),
    }


def measure(name: str, config, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    history, stopped = _train(config, run_dir, args.overwrite)
    wall = time.perf_counter() - t0
    steps = [r for r in history if r.get("kind") == "train"]
    timed = [r for r in steps if "time" in r]
    per_step = (
        (timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"])
        if len(timed) >= 2
        else math.nan
    )
    evaluation = evaluate_run(run_dir, tv=False, seed=0, max_images=args.test_images)
    rec, deg = evaluation["mean"]["reconstruction"], evaluation["mean"]["degraded"]
    last = steps[-1] if steps else {}
    row = {
        "name": name,
        "lr": config.optim.lr,
        "jac_penalty": config.penalty.weight,
        "jac_kind": config.penalty.kind if config.penalty.weight else None,
        "steps_done": int(last.get("step", 0)),
        "steps": config.steps,
        "stopped": stopped,
        "test_psnr": rec["psnr"],
        "input_psnr": deg["psnr"],
        "test_mse": rec["mse"],
        "test_converged": rec["converged"],
        "test_images": len(evaluation["images"]),
        "fwd_converged_train": float(np.mean([r["fwd_converged"] for r in steps])),
        "bwd_converged_train": float(np.mean([r["bwd_converged"] for r in steps])),
        "final_train_loss": last.get("loss", math.nan),
        "train_jac_estimate_final": last.get("jac_norm", last.get("jac_frob")),
        "time_per_step_s": per_step,
        "wall_s": wall,
    }
    row.update(jacobian_norms(run_dir, args.jacobian_images))
    return row


def _f(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| run | test PSNR (input) dB | test converged | train fwd / bwd converged "
        "| ‖J‖₂ max (median) | ρ(J) max (median) | s/step |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        note = f" (stopped at step {r['steps_done']})" if r["stopped"] else ""
        lines.append(
            f"| {r['name']}{note} | {_f(r['test_psnr'], '.2f')} ({_f(r['input_psnr'], '.2f')}) "
            f"| {_f(r['test_converged'], '.0%')} "
            f"| {_f(r['fwd_converged_train'], '.0%')} / {_f(r['bwd_converged_train'], '.0%')} "
            f"| {_f(r['jac_norm_max'], '.3f')} ({_f(r['jac_norm_median'], '.3f')}) "
            f"| {_f(r['radius_max'], '.3f')} ({_f(r['radius_median'], '.3f')}) "
            f"| {_f(r['time_per_step_s'], '.2f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="training steps per run")
    p.add_argument("--frobenius", type=float, nargs="*", default=[100.0, 1000.0], help="weights")
    p.add_argument("--spectral", type=float, nargs="*", default=[1e4], help="weights")
    p.add_argument("--target", type=float, default=0.95, help="jac_target of the spectral runs")
    p.add_argument("--iters", type=int, default=5, help="jac_iters (power iterations)")
    p.add_argument("--probes", type=int, default=1, help="jac_probes per digit")
    p.add_argument("--no-reference", dest="reference", action="store_false")
    p.add_argument("--test-images", type=int, default=500, help="MNIST test digits evaluated")
    p.add_argument("--jacobian-images", type=int, default=10, help="digits for exact Jacobians")
    p.add_argument("--runs", type=Path, default=Path("runs/deq_stability"))
    p.add_argument("--overwrite", action="store_true", help="train finished runs again")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    t_start = time.perf_counter()
    base = experiment_config("deblur", "dense", "deq", steps=args.steps)
    base = base.replace(checkpoint_every=10)  # a diverged run keeps a recent checkpoint
    rows = []
    for name, changes in variants(args):
        config = base.replace(**changes)
        slug = name.replace(", ", "-").replace(" ", "_").replace("(", "").replace(")", "")
        print(f"{name}: training {config.steps} steps", flush=True)
        rows.append(measure(name, config, args.runs / slug, args))
        r = rows[-1]
        print(
            f"    {r['wall_s']:.0f} s; test PSNR {r['test_psnr']:.2f} dB "
            f"(input {r['input_psnr']:.2f}); ‖J‖₂ max {r['jac_norm_max']:.3f}",
            flush=True,
        )
    print()
    print(table(rows))
    d = jax.devices()[0]
    out = {
        "benchmark": "deq_stability",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": f"{jax.default_backend()} ({getattr(d, 'device_kind', d.platform)}, "
        f"{os.cpu_count()} CPU cores, {platform.machine()})",
        "command": "python benchmarks/deq_stability.py "
        + " ".join(
            [f"--steps {args.steps}", "--frobenius", *map(str, args.frobenius)]
            + ["--spectral", *map(str, args.spectral), f"--target {args.target}"]
            + [f"--iters {args.iters}", f"--probes {args.probes}"]
            + ([] if args.reference else ["--no-reference"])
            + [f"--test-images {args.test_images}", f"--jacobian-images {args.jacobian_images}"]
        ),
        "base_config": base.to_dict(),
        "duration_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
