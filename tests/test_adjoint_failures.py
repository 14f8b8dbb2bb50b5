"""Training says so when its adjoint solves keep failing (their gradients are then not implicit
gradients): it stops with advice, or warns and trains on when told to; GMRES's restart length
is a training setting."""

from __future__ import annotations

import warnings

import pytest

from jaxinv.train import AdjointFailureError, TrainConfig, read_metrics, train

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


def test_a_run_whose_adjoints_keep_failing_stops_with_advice_and_resumes_to_train_on(tmp_path):
    out = tmp_path / "failing"
    config = _config(steps=20, checkpoint_every=5)
    with pytest.raises(AdjointFailureError, match="fewer than half of the adjoint solves") as err:
        train(config, out, progress=False)
    assert "adjoint='gmres'" in str(err.value) and "on_adjoint_failure='warn'" in str(err.value)
    logged = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [r["step"] for r in logged] == list(range(1, 11))  # stopped after the tenth step
    assert all(r["bwd_converged"] == 0.0 for r in logged)
    # the checkpoint of step 5 is intact: resuming with "warn" trains on to the end, warned
    with pytest.warns(RuntimeWarning, match="fewer than half of the adjoint solves converged"):
        result = train(config.replace(on_adjoint_failure="warn"), out, progress=False)
    steps = [r["step"] for r in result.history if r["kind"] == "train"]
    assert steps == list(range(1, 21))


def test_a_run_whose_adjoints_keep_failing_warns_when_told_to(tmp_path):
    with pytest.warns(RuntimeWarning, match="fewer than half of the adjoint solves converged"):
        result = train(_config(on_adjoint_failure="warn"), tmp_path / "failing", progress=False)
    assert all(r["bwd_converged"] == 0.0 for r in result.history if r["kind"] == "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nine failing steps are not yet a pattern
        train(_config(steps=9), tmp_path / "short", progress=False)
        train(_config(adjoint_max_iter=300, adjoint_tol=1e-6), tmp_path / "fine", progress=False)
    with pytest.raises(ValueError, match="on_adjoint_failure"):
        TrainConfig.of(on_adjoint_failure="ignore")


def test_gmres_restart_is_a_training_setting():
    config = TrainConfig.of(model="deq", adjoint_restart=7)
    assert config.adjoint_strategy().linear_solver.restart == 7
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(
        ValueError, match=r"adjoint.restart \(adjoint_restart\) must be a positive integer"
    ):
        TrainConfig.of(adjoint_restart=0)
