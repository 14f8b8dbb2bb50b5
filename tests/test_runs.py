"""The run directory module: its file names, the checks of a path, and plots free of runs."""

import ast
from pathlib import Path

import pytest

import jaxinv
from jaxinv import evaluate, pretrained, runs, train


def test_the_file_names_are_the_training_code_s_and_the_public_ones():
    assert (runs.CHECKPOINT, runs.CONFIG, runs.METRICS, runs.FIGURES) == (
        "checkpoint.eqx",
        "config.json",
        "metrics.jsonl",
        "figures",
    )
    assert (train.CHECKPOINT, train.CONFIG) == (runs.CHECKPOINT, runs.CONFIG)
    assert runs.load_run is train.load_run
    assert pretrained.RUN_FILES == (runs.CONFIG, runs.CHECKPOINT)
    assert evaluate.check_run_dir is runs.check_run_dir


def test_check_run_dir_says_what_the_path_is(tmp_path):
    with pytest.raises(runs.NotARunError, match="does not exist; train one"):
        runs.check_run_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(runs.NotARunError, match="is a file"):
        runs.check_run_dir(tmp_path / "file")
    with pytest.raises(runs.NotARunError, match=r"no checkpoint\.eqx"):
        runs.check_run_dir(tmp_path)
    assert not runs.is_run_dir(tmp_path)
    (tmp_path / runs.CHECKPOINT).write_bytes(b"")
    assert runs.is_run_dir(tmp_path) and runs.check_run_dir(str(tmp_path)) == tmp_path


def test_plots_imports_neither_the_training_code_nor_runs():
    source = Path(jaxinv.__file__).parent / "plots.py"
    modules = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
    assert not {m for m in modules if "train" in m or "runs" in m}, modules
