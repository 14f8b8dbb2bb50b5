"""Run by tests/test_sweep.py in a fresh process with 4 forced host CPU devices: a sweep of 3
configurations sharded over the devices (padded to 4 lanes) against the same sweep on one.

Prints one JSON object with the raw results; the test asserts on them.
"""

import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from jaxinv.train import TrainConfig, build_instance, expand_grid, stack, train_sweep  # noqa: E402
from jaxinv.train._checkpoint import read_header  # noqa: E402

from helpers import DIGITS_DEFAULTS  # noqa: E402

BASE = DIGITS_DEFAULTS
GRID = {"gamma": [0.25, 0.5, 1.0]}


def diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one = train_sweep(TrainConfig.of(**BASE), GRID, f"{tmp}/one", progress=False)
        four = train_sweep(TrainConfig.of(**BASE, devices=4), GRID, f"{tmp}/four", progress=False)
        # killed after one step on 4 devices (4 lanes), resumed on 1 (3 lanes)
        half = f"{tmp}/half"
        train_sweep(TrainConfig.of(**BASE, devices=4), GRID, half, progress=False, until=1)
        resumed = train_sweep(TrainConfig.of(**BASE), GRID, half, progress=False)
        initial = stack(
            [build_instance(c)[1] for _, c in expand_grid(TrainConfig.of(**BASE), GRID)]
        )
        meta, _ = read_header(f"{tmp}/four/checkpoint.eqx")
        out = {
            "devices": len(jax.devices()),
            "lanes": meta["lanes"],
            "diff_sharded_vs_one_device": diff(one.state, four.state),
            "param_change": diff(one.models.params(), initial.params()),
            "traces": four.step_fn.trace_count,
            "diff_resumed_on_one_vs_one": diff(one.state, resumed.state),
            "resumed_steps": [r["step"] for r in resumed.records(0)],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
