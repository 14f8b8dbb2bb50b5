"""Run by tests/test_distributed.py in a fresh process with 4 forced host CPU devices.

Prints one JSON object with the checks' raw results; the test asserts on them.
"""

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jaxinv as ji  # noqa: E402
from jaxinv import distributed as dist  # noqa: E402

from helpers import PATCH_DEFAULTS, solves  # noqa: E402


def T(x, p, y):
    return p["a"] * jnp.tanh(p["W"] @ x) + y


def value_and_grad(params, batch):
    def loss(params):
        sol = jax.vmap(
            lambda yi: ji.fixed_point(
                T,
                yi,
                params,
                yi,
                solver=ji.Anderson(1e-10, 500),
                throw=False,
                adjoint=ji.Implicit("gmres", tol=1e-10),
            )
        )(batch)
        return jnp.mean(jnp.sum((sol.value - 1.0) ** 2, -1)), sol.stats

    return jax.value_and_grad(loss, has_aux=True)(params)


def while_conditions_with_collectives(hlo: str) -> list[bool]:
    bodies = {
        m.group(1).lstrip("%"): m.group(2)
        for m in re.finditer(r"\n(%?[\w.\-]+) \([^\n]*\) -> [^\n]*\{\n(.*?)\n\}", hlo, re.S)
    }
    return ["all-reduce" in bodies.get(c, "") for c in re.findall(r"condition=%?([\w.\-]+)", hlo)]


def sharded_training_matches_single_device() -> dict:
    """Three steps on 1 and on 4 devices, then resume the 4-device run on 1 device."""
    import tempfile

    from jaxinv.train import TrainConfig, load_run, train

    base = {
        **PATCH_DEFAULTS,
        "arch_options": {"num_filters": 3, "size": 3},
        "patch_size": 12,
        "num_train": 8,
        "batch_size": 8,
        "steps": 4,
        **solves(1e-9, 300),
    }
    with tempfile.TemporaryDirectory() as tmp:
        one = train(TrainConfig.of(**base, devices=1), f"{tmp}/one", progress=False)
        four = train(TrainConfig.of(**base, devices=4), f"{tmp}/four", progress=False, until=2)
        cfg, params_ckpt = load_run(f"{tmp}/four")
        resumed = train(TrainConfig.of(**base, devices=1), f"{tmp}/four", progress=False)
        diff = lambda a, b: max(  # noqa: E731
            float(jnp.max(jnp.abs(u - v)))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )
        # the Jacobian penalty draws each example's probes outside the shards: same steps
        jac = dict(base, steps=2, jac_penalty=0.5, jac_kind="spectral", jac_iters=3)
        jac = {**jac, "jac_target": 0.2}
        jac1 = train(TrainConfig.of(**jac, devices=1), f"{tmp}/jac1", progress=False)
        jac4 = train(TrainConfig.of(**jac, devices=4), f"{tmp}/jac4", progress=False)
        norms = [
            [r["jac_norm"] for r in run.history if r["kind"] == "train"] for run in (jac1, jac4)
        ]
        return {
            "penalised_param_diff": diff(jac1.params, jac4.params),
            "penalised_jac_norms": norms,
            "param_diff_resumed_vs_single": diff(one.params, resumed.params),
            "param_change": diff(
                one.params,
                train(TrainConfig.of(**{**base, "steps": 1}), f"{tmp}/s1", progress=False).params,
            ),
            "checkpoint_devices": cfg.devices,
            "checkpoint_on_one_device": all(
                len(leaf.devices()) == 1 for leaf in jax.tree.leaves(params_ckpt)
            ),
            "sharded_step_count": int(four.state.step),
        }


def main() -> None:
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(0.6), "W": jnp.asarray(rng.normal(size=(5, 5)) * 0.3)}
    batch = jnp.asarray(rng.normal(size=(8, 5)))
    batch = batch.at[3].mul(50.0)  # one slow example in shard 1
    mesh = dist.data_mesh(4)
    (l1, s1), g1 = jax.jit(value_and_grad)(params, batch)
    sharded = jax.jit(dist.data_parallel(value_and_grad, mesh))
    args = (dist.replicate(params, mesh), dist.shard_batch(batch, mesh))
    (l4, s4), g4 = sharded(*args)
    naive = jax.jit(value_and_grad).lower(*args).compile().as_text()
    errors = {}
    try:
        dist.data_mesh(8)
    except ValueError as e:
        errors["too_many_devices"] = str(e)
    try:
        dist.shard_batch(jnp.zeros((6, 5)), mesh)
    except ValueError as e:
        errors["indivisible"] = str(e)
    out = {
        "training": sharded_training_matches_single_device(),
        "devices": len(jax.devices()),
        "loss": [float(l1), float(l4)],
        "grad_a": [float(g1["a"]), float(g4["a"])],
        "grad_W_maxdiff": float(jnp.max(jnp.abs(g1["W"] - g4["W"]))),
        "iterations": [np.asarray(s1.iterations).tolist(), np.asarray(s4.iterations).tolist()],
        "loss_sharding": str(l4.sharding),
        "stats_sharding_devices": len(s4.iterations.sharding.device_set),
        "sharded_conditions": while_conditions_with_collectives(
            sharded.lower(*args).compile().as_text()
        ),
        "naive_conditions": while_conditions_with_collectives(naive),
        "errors": errors,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
