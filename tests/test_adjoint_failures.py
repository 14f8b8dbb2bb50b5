"""Training says so when its adjoint solves keep failing (their gradients are then not implicit
gradients), and GMRES's restart length is a training setting."""

from __future__ import annotations

import warnings

import pytest

from jaxinv.train import TrainConfig, train

from helpers import patch_config


def _config(**changes):
    return patch_config(
        **{
            "steps": 10,
            "adjoint": "fixed_point",
            "adjoint_tol": 1e-12,
            "adjoint_max_iter": 1,  # one iteration never reaches 1e-12: every adjoint solve fails
            **changes,
        }
    )


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
