"""Data parallelism on 4 forced host devices, in a subprocess so the flag cannot leak."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runs_on_four_devices(report):
    assert report["devices"] == 4
    assert report["stats_sharding_devices"] == 4


def test_sharded_gradient_equals_single_device(report):
    l1, l4 = report["loss"]
    g1, g4 = report["grad_a"]
    assert abs(l1 - l4) < 1e-12 * max(1, abs(l1))
    assert abs(g1 - g4) < 1e-10 * max(1, abs(g1)) and abs(g1) > 1e-6
    assert report["grad_W_maxdiff"] < 1e-10


def test_per_sample_statistics_survive_sharding(report):
    single, sharded = report["iterations"]
    assert single == sharded
    assert max(single) > min(single)  # the slow example really is slower


def test_each_shard_stops_on_its_own_convergence(report):
    # With shard_map every while-loop condition is local; plain jit sharding of the same batched
    # solve reduces the loop condition across devices (the check can tell them apart).
    assert report["sharded_conditions"] and not any(report["sharded_conditions"])
    assert any(report["naive_conditions"])


def test_bad_device_requests_are_explained(report):
    assert "xla_force_host_platform_device_count" in report["errors"]["too_many_devices"]
    assert "multiple of the number of devices" in report["errors"]["indivisible"]


def test_sharded_training_resumes_on_one_device_with_the_same_result(report):
    t = report["training"]
    assert t["sharded_step_count"] == 2 and t["checkpoint_devices"] == 4
    assert t["checkpoint_on_one_device"]
    assert t["param_change"] > 1e-6  # training moved the parameters...
    assert t["param_diff_resumed_vs_single"] < 1e-9  # ...identically on 4 devices and on 1


def test_penalised_training_is_the_same_on_four_devices(report):
    t = report["training"]
    single, sharded = t["penalised_jac_norms"]
    assert len(single) == 2 and min(single) > 0
    assert max(abs(a - b) for a, b in zip(single, sharded, strict=True)) < 1e-10
    assert t["penalised_param_diff"] < 1e-9
