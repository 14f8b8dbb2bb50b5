"""Sweeps: a grid of configurations trained as one vmapped, compiled step, checked against
separate runs of each configuration."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxinv.train import (
    TrainConfig,
    expand_grid,
    load_sweep,
    make_dataset_parts,
    make_datasets,
    train,
    train_sweep,
)
from jaxinv.train import _sweep as sweep_module

from helpers import DIGITS_DEFAULTS, patch_config

# The paper's dense MNIST model on 8 digits, 3 steps; a fixed step tau (the paper's grid).
BASE = {
    **DIGITS_DEFAULTS,
    "arch_options": {"tau": 0.5, "gamma": 0.5},
    "task_options": {"sigma": 0.05},
    "steps": 3,
    "lr_final": 1e-5,
    "schedule": "cosine",
    "eval_every": 2,
    "warm_start": True,
}
# Per configuration: its noise level, its seed (initial model, training set, noise, order) and
# its learning rate (a factor on Adam's update).
GRID = {"sigma": [0.05, 0.2], "seed": [0, 1], "lr": [2e-3, 6e-3]}
# One learning rate so large that the first update overflows: those configurations must fail.
FAIL_GRID = {"gamma": [0.5, 1.0], "lr": [2e-3, 1e200]}
PER_STEP = ("loss", "psnr", "fwd_iters", "bwd_iters", "grad_norm", "lr", "tau", "warm")


def _base(**changes):
    return TrainConfig.of(**{**BASE, **changes})


def _max_diff(a, b):
    """The largest difference of two pytrees' leaves, relative to each leaf's size (if over 1)."""
    out = 0.0
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        u, v = np.asarray(u, float), np.asarray(v, float)
        scale = max(1.0, float(np.max(np.abs(u), initial=0.0)))
        out = max(out, float(np.max(np.abs(u - v), initial=0.0)) / scale)
    return out


def _lane(tree, g):
    return jax.tree.map(lambda a: a[g], tree)


def _same_records(single, lane, kinds=("train", "val", "val_input")):
    for kind in kinds:
        a = [r for r in single if r["kind"] == kind]
        b = [r for r in lane if r["kind"] == kind]
        assert [r["step"] for r in a] == [r["step"] for r in b] and a, kind
        for ra, rb in zip(a, b, strict=True):
            for key in ra:
                if key in ("time", "kind"):
                    continue
                assert rb[key] == pytest.approx(ra[key], rel=1e-9, abs=1e-12), (kind, key)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    result = train_sweep(_base(), GRID, out, progress=False)
    return result, result.step_fn.trace_count


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    root = tmp_path_factory.mktemp("separate")
    return [
        train(config, root / str(g), progress=False)
        for g, (_, config) in enumerate(expand_grid(_base(), GRID))
    ]


def test_a_sweep_equals_separate_runs_of_its_configurations(sweep, separate):
    result, _ = sweep
    assert len(result) == 8 and result.finished and not result.failures
    assert result.settings[5] == {"sigma": 0.2, "seed": 0, "lr": 6e-3}
    for g, single in enumerate(separate):
        assert result.configs[g] == single.config
        lane = _lane(result.state, g)  # params, optimiser state, step, warm-start buffer
        assert _max_diff(single.state, lane) < 1e-10
        _same_records(single.history, result.records(g, "train") + _others(result, g))
    # the configurations really differ: in data, initialisation and step size
    assert _max_diff(separate[0].params.W, separate[2].params.W) > 1e-3  # seed
    assert abs(separate[0].history[-1]["mse"] - separate[4].history[-1]["mse"]) > 1e-4  # sigma
    lrs = [r["lr"] for r in result.records(1)], [r["lr"] for r in result.records(0)]
    assert lrs[0] == pytest.approx([3 * v for v in lrs[1]])  # the whole schedule scales
    moved = _max_diff(separate[1].state.params, separate[0].state.params)
    assert moved > 1e-6


def _others(result, g):
    return [r for r in result.history if r.get("config") == g and r["kind"] != "train"]


def test_one_trace_for_the_whole_sweep(sweep):
    _, traces = sweep
    assert traces == 1


def test_metrics_carry_the_configuration_and_its_settings(sweep):
    result, _ = sweep
    lines = (result.out_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["config"] for r in records} == set(range(8))
    assert all(r["settings"] == result.settings[r["config"]] for r in records)
    described = json.loads((result.out_dir / "sweep.json").read_text())
    assert described["grid"] == {k: list(v) for k, v in GRID.items()}
    assert TrainConfig.from_dict(described["configurations"][3]["config"]) == result.configs[3]


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, sweep):
    full, _ = sweep
    half = train_sweep(_base(checkpoint_every=1), GRID, tmp_path, progress=False, until=2)
    assert not half.finished
    with open(tmp_path / "metrics.jsonl", "a") as f:  # written after the checkpoint, then killed
        f.write(json.dumps({"config": 0, "kind": "train", "step": 3, "loss": -1.0}) + "\n")
    # resumed with the grid's keys in another order: the saved lanes keep their own order
    resumed = train_sweep(_base(), dict(reversed(GRID.items())), tmp_path, progress=False)
    assert resumed.finished
    assert resumed.settings == full.settings
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state), strict=True):
        np.testing.assert_array_equal(a, b)
    for g in range(len(full)):
        assert [r["loss"] for r in resumed.records(g)] == [r["loss"] for r in full.records(g)]
    loaded = load_sweep(tmp_path)
    assert loaded.finished and _max_diff(loaded.state, full.state) == 0.0
    # GRID's keys are not in sorted order: lane g still carries configuration g's settings
    assert list(GRID) != sorted(GRID)
    assert loaded.settings == full.settings and list(loaded.grid) == list(GRID)
    assert resumed.step_fn.trace_count == 1  # the same compiled program throughout


def test_a_failing_configuration_is_frozen_and_the_others_train_on(tmp_path):
    result = train_sweep(_base(), FAIL_GRID, tmp_path, progress=False)
    assert sorted(result.failures) == [1, 3]  # lr 1e200, both gammas
    for g in (1, 3):
        failure = result.failures[g]
        # 1e200 overflows float32: the loss is nan or inf by the CPU's order of operations
        assert failure["step"] == 2
        assert re.search(r"loss became (nan|inf) at step 2", failure["reason"]), failure["reason"]
        assert [r["step"] for r in result.records(g)] == [1]
        # its own run raises at that step; the sweep keeps its state from before that step
        config = result.configs[g]
        with pytest.raises(FloatingPointError):
            train(config, tmp_path / f"single{g}", progress=False)
        before = train(config, tmp_path / f"before{g}", progress=False, overwrite=True, until=1)
        assert _max_diff(before.state, _lane(result.state, g)) < 1e-10
    failed = [r for r in result.history if r["kind"] == "failed"]
    assert [(r["config"], r["step"]) for r in failed] == [(1, 2), (3, 2)]
    for g in (0, 2):  # unaffected by the NaNs in the other lanes
        single = train(result.configs[g], tmp_path / f"ok{g}", progress=False)
        assert _max_diff(single.state, _lane(result.state, g)) < 1e-10
        _same_records(single.history, result.records(g) + _others(result, g))


@pytest.mark.unchecked  # wrong types on purpose: the sweep's own errors are tested
@pytest.mark.parametrize(
    ("grid", "changes", "words"),
    [
        ({"gama": [0.1]}, {}, "unknown grid key 'gama'"),
        ({"activation": [1.0]}, {}, "static setting of the model"),
        ({"batch_size": [2, 4]}, {}, "setting of the compiled step"),
        ({"solver": [1.0]}, {}, "setting of the compiled step"),
        ({"gamma": []}, {}, "has no values"),
        ({"gamma": [0.1, float("nan")]}, {}, "finite numbers"),
        ({"tau": [float("inf")]}, {}, "finite numbers"),
        ({"seed": [0.5]}, {}, "non-negative integers"),
        ({"gamma": [0.1, 0.1]}, {}, "repeats a value"),
        ({"gamma": 0.1}, {}, "list of numbers"),
        ({}, {}, "non-empty dict"),
        ({"sigma": [0.1, 2.0]}, {}, "{'sigma': 2.0}"),
        ({"gamma": [0.1]}, {"throw": True}, "throw=False"),
    ],
)
def test_bad_grids_are_refused_before_anything_compiles(tmp_path, grid, changes, words):
    before = sum(sweep_module._SWEEP_TRACES.values())
    with pytest.raises(ValueError) as err:
        train_sweep(_base(**changes), grid, tmp_path, progress=False)
    assert words in str(err.value)
    assert sum(sweep_module._SWEEP_TRACES.values()) == before
    assert not (tmp_path / "sweep.json").exists()


def test_a_key_that_changes_the_models_static_form_is_named(tmp_path):
    before = sum(sweep_module._SWEEP_TRACES.values())
    with pytest.raises(ValueError) as err:  # shrink is a static field of the dense model
        train_sweep(_base(), {"shrink": [0.1, 0.5]}, tmp_path, progress=False)
    assert "'shrink'" in str(err.value) and "cannot share one compiled step" in str(err.value)
    assert sum(sweep_module._SWEEP_TRACES.values()) == before


@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_one_noise_draw_scaled_per_configuration_is_each_runs_data(task):
    config = _base(task=task, num_train=6, num_val=3)
    train_parts, val_parts = make_dataset_parts(config)
    for sigma in (0.0, 0.05, 0.5):
        train_set, val_set = make_datasets(config.replace(task_options={"sigma": sigma}))
        np.testing.assert_array_equal(train_parts.measurements(sigma), train_set.y)
        np.testing.assert_array_equal(val_parts.measurements(sigma), val_set.y)
        np.testing.assert_array_equal(train_parts.x, train_set.x)


WORKER = Path(__file__).with_name("sweep_worker.py")


def test_configurations_shard_over_four_devices_and_resume_on_one():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["lanes"] == 4  # 3 configurations, one padding lane
    assert report["param_change"] > 1e-6
    assert report["diff_sharded_vs_one_device"] < 1e-10
    assert report["traces"] == 1
    assert report["diff_resumed_on_one_vs_one"] < 1e-10  # checkpointed on 4, resumed on 1
    assert report["resumed_steps"] == [1, 2]


# ---------------------------------------------------------------------------------------------
# evaluation, the command line, the paper's box plots
# ---------------------------------------------------------------------------------------------


def test_each_configuration_scores_on_the_test_split_as_its_separate_run(sweep, separate):
    from jaxinv.evaluate import evaluate_run
    from jaxinv.sweep import evaluate_sweep

    result, _ = sweep
    rows = evaluate_sweep(result, max_images=6)
    assert [r["index"] for r in rows] == list(range(8))
    for g in (0, 5, 6):  # different noise levels, seeds and learning rates
        single = evaluate_run(separate[g].out_dir, tv=False, max_images=6)["mean"]
        assert rows[g]["settings"] == result.settings[g] and rows[g]["status"] == "ok"
        assert rows[g]["test_loss"] == pytest.approx(single["reconstruction"]["mse"], rel=1e-9)
        assert rows[g]["psnr"] == pytest.approx(single["reconstruction"]["psnr"], rel=1e-9)
        assert rows[g]["input_psnr"] == pytest.approx(single["degraded"]["psnr"], rel=1e-12)
        assert rows[g]["converged_test"] == single["reconstruction"]["converged"]
    assert rows[0]["input_psnr"] > rows[4]["input_psnr"] + 5  # sigma 0.05 vs 0.2


def test_box_summary_counts_failed_dropped_and_kept():
    from jaxinv.reproduce import box_summary

    s = box_summary([0.1, 0.2, float("nan"), 0.7, 0.3, 0.5], drop_above=0.5)
    assert (s["configurations"], s["failed"], s["dropped_above"], s["kept"]) == (6, 1, 1, 4)
    assert (s["min"], s["median"], s["max"]) == (0.1, 0.25, 0.5)
    empty = box_summary([float("nan"), 0.9])
    assert empty["kept"] == 0 and np.isnan(empty["median"])


def test_box_plot_draws_arrays_with_an_empty_box(tmp_path):
    from jaxinv.plots import box_plot

    groups = {
        "denoise": {"bilevel": np.array([0.1, 0.2, np.nan, 0.9]), "deq": [0.05, 0.3]},
        "inpaint": {"bilevel": [np.nan, np.nan], "deq": np.linspace(0.1, 0.4, 7)},
    }
    path = box_plot(tmp_path / "box.png", groups, drop_above=0.5, title="t")
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
    flat = box_plot(tmp_path / "flat.png", {"bilevel": [0.1, 0.2], "deq": [0.3]})
    assert flat.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--grid", "num_filters=2,4"], "unknown grid key 'num_filters'"),
        (["--grid", "activation=1"], "static setting of the model"),
        (["--grid", "gamma=0.1,abc"], "'abc' is not a number"),
        (["--grid", "gamma"], "expected KEY=V1,V2"),
        (["--grid", "gamma=1", "--grid", "gamma=2"], "given twice"),
        (["--grid", "sigma=0.1,2"], "not in [0, 1]"),
    ],
)
def test_the_sweep_command_explains_bad_grids(tmp_path, capsys, extra, words):
    from jaxinv.cli import main

    argv = ["sweep", "--task", "denoise", "--model", "bilevel", "--arch", "dense"]
    assert main([*argv, "--quick", *extra, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_reproduce_grid_quick_draws_the_box_plots_and_the_sweep_command_agrees(tmp_path, capsys):
    from jaxinv.cli import main

    assert (
        main(["reproduce", "--grid", "--quick", "--tasks", "denoise", "--out", str(tmp_path)]) == 0
    )
    summary = json.loads((tmp_path / "grid_results.json").read_text())
    assert [(c["model"], c["box"]["configurations"]) for c in summary["cells"]] == [
        ("bilevel", 4),
        ("deq", 4),
    ]
    # the command that reruns it names the task it was restricted to
    assert summary["settings"]["command"] == "jaxinv reproduce --grid --tasks denoise --quick"
    assert (tmp_path / "figures" / "grid_test_loss.png").stat().st_size > 5000
    assert "Dropped from the boxes: failed configurations and those with test loss > 0.5" in (
        (tmp_path / "grid_results.md").read_text()
    )
    bilevel = json.loads((tmp_path / "grid" / "denoise-dense-bilevel" / "results.json").read_text())
    assert [r["settings"] for r in bilevel["rows"]] == [
        {"tau": t, "gamma": g} for t in (0.1, 0.9) for g in (0.5, 1.0)
    ]
    # the same sweep from the sweep command: the same configurations, the same results
    argv = ["sweep", "--task", "denoise", "--model", "bilevel", "--arch", "dense", "--quick"]
    grid = ["--grid", "tau=0.1,0.9", "--grid", "gamma=0.5,1"]
    assert main([*argv, *grid, "--quiet", "--out", str(tmp_path / "cli")]) == 0
    assert "lowest test loss" in capsys.readouterr().out.lower()
    again = json.loads((tmp_path / "cli" / "results.json").read_text())
    for a, b in zip(bilevel["rows"], again["rows"], strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-12)
    assert again["settings"]["command"].startswith("jaxinv sweep --task denoise")


def test_natural_image_sweeps_score_test_crops_at_their_own_size(tmp_path):
    """Trained on 16x16 patches, evaluated on 32x32 crops: each configuration's model is rebuilt
    for the crops (its operator and step refreshed), as ``load_run(image_shape=...)`` does."""
    from jaxinv.evaluate import evaluate_run
    from jaxinv.sweep import run_sweep

    base = patch_config(steps=2)
    done = run_sweep(base, {"lam": [0.5, 2.0]}, tmp_path / "sweep", progress=False, crop=32)
    rows = done["rows"]
    first = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert first["rows"][1]["index"] == 1
    assert first["settings"]["train_s"] > 0
    # run again: the finished sweep is reused (nothing retrains) and keeps its training time
    again = run_sweep(base, {"lam": [0.5, 2.0]}, tmp_path / "sweep", progress=False, crop=32)
    assert [r["test_loss"] for r in again["rows"]] == [r["test_loss"] for r in rows]
    kept = json.loads((tmp_path / "sweep" / "results.json").read_text())["settings"]
    assert kept["train_s"] == first["settings"]["train_s"]
    assert f"(training {kept['train_s']:.0f} s)" in (tmp_path / "sweep" / "results.md").read_text()
    for g, (_, config) in enumerate(expand_grid(base, {"lam": [0.5, 2.0]})):
        run = train(config, tmp_path / str(g), progress=False).out_dir
        single = evaluate_run(run, tv=False, crop=32)["mean"]["reconstruction"]
        assert rows[g]["test_loss"] == pytest.approx(single["mse"], rel=1e-8)
        assert rows[g]["ssim"] == pytest.approx(single["ssim"], rel=1e-8)
    assert abs(rows[0]["test_loss"] - rows[1]["test_loss"]) > 1e-5
