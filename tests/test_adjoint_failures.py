"""Training says so when its adjoint solves keep failing (their gradients are then not implicit
gradients), and GMRES's restart length is a training setting."""

from __future__ import annotations

import warnings

import pytest

from jaxinv.train import TrainConfig, train


def _config(**changes):
    base = dict(
        arch="foe",
        arch_options={"num_filters": 2, "size": 3, "init_scale": 10.0},
        patch_size=16,
        num_train=4,
        num_val=2,
        batch_size=4,
        steps=10,
        task_options={"sigma": 0.1},
        adjoint="fixed_point",
        adjoint_tol=1e-12,
        adjoint_max_iter=1,  # one iteration never reaches 1e-12: every adjoint solve fails
        eval_every=0,
        checkpoint_every=0,
    )
    base.update(changes)
    return TrainConfig.of(**base)


def test_a_run_whose_adjoints_keep_failing_warns_with_advice(tmp_path):
    with pytest.warns(RuntimeWarning, match="fewer than half of the adjoint solves converged"):
        result = train(_config(), tmp_path / "failing", progress=False)
    assert all(r["bwd_converged"] == 0.0 for r in result.history if r["kind"] == "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nine failing steps are not yet a pattern
        train(_config(steps=9), tmp_path / "short", progress=False)
        train(_config(adjoint_max_iter=300, adjoint_tol=1e-6), tmp_path / "fine", progress=False)


def test_gmres_restart_is_a_training_setting():
    config = TrainConfig.of(model="deq", adjoint_restart=7)
    assert config.adjoint_strategy().linear_solver.restart == 7
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(
        ValueError, match=r"adjoint.restart \(adjoint_restart\) must be a positive integer"
    ):
        TrainConfig.of(adjoint_restart=0)
