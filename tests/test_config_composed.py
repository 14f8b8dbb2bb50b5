"""The training configuration's sub-configurations: nested and flat forms, names, validation."""

import json
from pathlib import Path

import pytest

from jaxinv import cli
from jaxinv.solvers import Anderson
from jaxinv.train import (
    AdjointConfig,
    DataConfig,
    OptimConfig,
    PenaltyConfig,
    SolverConfig,
    TrainConfig,
    expand_grid,
)

#: ``TrainConfig.to_dict()`` of a configuration with every section changed, as the flat
#: dataclass wrote it to ``config.json`` and checkpoint headers before the sub-configurations.
OLD_FLAT = {
    "task": "inpaint",
    "task_options": {"sigma": 0.05},
    "model": "deq",
    "arch": "foe",
    "arch_options": {"num_filters": 4, "size": 3},
    "dataset": "natural",
    "train_images": None,
    "val_images": None,
    "augment": True,
    "patch_size": 24,
    "num_train": 64,
    "num_val": 4,
    "max_image_size": 256,
    "batch_size": 4,
    "steps": 30,
    "lr": 0.002,
    "lr_final": 1e-05,
    "schedule": "linear",
    "lr_scale": {"log_weights": 20.0},
    "clip_norm": 1.0,
    "solver": "anderson",
    "tol": 1e-05,
    "max_iter": 400,
    "memory": 7,
    "restart": 3.0,
    "relaxation": 1.0,
    "adjoint": "anderson",
    "adjoint_tol": 1e-06,
    "adjoint_max_iter": 250,
    "adjoint_restart": 30,
    "throw": False,
    "skip_unconverged": True,
    "seed": 3,
    "checkpoint_every": 10,
    "eval_every": 5,
    "warm_start": True,
    "devices": 1,
    "jac_penalty": 0.5,
    "jac_kind": "spectral",
    "jac_probes": 2,
    "jac_iters": 3,
    "jac_target": 0.9,
}

TINY = {"num_filters": 4, "size": 3}


def _expected_old() -> TrainConfig:
    return TrainConfig(
        task="inpaint",
        task_options={"sigma": 0.05},
        model="deq",
        arch="foe",
        arch_options=TINY,
        steps=30,
        batch_size=4,
        data=DataConfig(augment=True, patch_size=24, num_train=64, num_val=4),
        optim=OptimConfig(
            lr=0.002, schedule="linear", lr_scale={"log_weights": 20.0}, clip_norm=1.0
        ),
        forward=SolverConfig(tol=1e-5, max_iter=400, memory=7, restart=3.0),
        # the flat form shared the forward memory with the Anderson adjoint
        adjoint=AdjointConfig(method="anderson", tol=1e-6, max_iter=250, restart=30, memory=7),
        penalty=PenaltyConfig(weight=0.5, kind="spectral", probes=2, iters=3, target=0.9),
        skip_unconverged=True,
        seed=3,
        checkpoint_every=10,
        eval_every=5,
        warm_start=True,
    )


def test_the_nested_form_round_trips_and_is_what_to_dict_writes():
    c = _expected_old()
    d = c.to_dict()
    assert set(d["optim"]) == {
        "lr",
        "lr_final",
        "schedule",
        "lr_scale",
        "clip_norm",
        "optimizer",
        "lbfgs_memory",
        "linesearch_steps",
    }
    assert d["adjoint"]["memory"] == 7 and d["forward"]["memory"] == 7
    assert d["penalty"] == {
        "weight": 0.5,
        "kind": "spectral",
        "probes": 2,
        "iters": 3,
        "target": 0.9,
    }
    assert not {"lr", "tol", "jac_penalty", "dataset"} & set(d)  # no flat keys
    assert TrainConfig.from_dict(d) == c
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == c
    assert TrainConfig.from_json(c.to_json()) == c


def test_an_old_flat_config_loads_into_the_equal_nested_one():
    old = TrainConfig.from_dict(OLD_FLAT)
    assert old == _expected_old()
    assert TrainConfig.from_dict(old.to_dict()) == old
    # a partial flat dict (older runs lack the later keys) takes the defaults
    partial = {k: v for k, v in OLD_FLAT.items() if not k.startswith(("jac_", "adjoint_"))}
    assert TrainConfig.from_dict(partial).penalty == PenaltyConfig()
    assert TrainConfig.from_dict(partial).adjoint == AdjointConfig(method="anderson", memory=7)
    # with another adjoint the forward memory is not carried over
    gmres = TrainConfig.from_dict({**OLD_FLAT, "adjoint": "gmres"})
    assert gmres.adjoint.memory == AdjointConfig().memory


@pytest.mark.parametrize("name", ["foe-student-t-s25", "spline-wcrr-s25"])
def test_the_shipped_flat_config_files_load(name):
    path = Path(__file__).parent.parent / "jaxinv" / "pretrained" / name / "config.json"
    text = path.read_text()
    assert '"lr"' in text  # written in the flat form
    config = TrainConfig.from_json(text)
    flat = json.loads(text)
    assert config.optim.lr == flat["lr"] and config.forward.max_iter == flat["max_iter"]
    assert config.forward.restart == flat["restart"]
    assert config.adjoint.max_iter == flat["adjoint_max_iter"]
    assert config.data.train_images == flat["train_images"]


def test_the_adjoint_memory_is_its_own():
    c = TrainConfig.of(adjoint="anderson", memory=3, adjoint_memory=9)
    forward, adjoint = c.forward_solver(), c.adjoint_strategy().linear_solver
    assert isinstance(forward, Anderson) and isinstance(adjoint, Anderson)
    assert (forward.memory, adjoint.memory) == (3, 9)
    assert c.adjoint.make("deq").linear_solver.memory == 9
    # the forward memory alone leaves the adjoint's at its default
    d = TrainConfig.of(adjoint="anderson", memory=3)
    assert d.adjoint_strategy().linear_solver.memory == AdjointConfig().memory == 5
    assert d.forward_solver().memory == 3


def test_flat_dotted_and_object_settings_agree():
    base = TrainConfig(arch_options=TINY)
    flat = base.replace(lr=1e-4, tol=1e-5, adjoint_tol=1e-6, jac_penalty=0.1, num_val=3)
    dotted = base.replace(
        **{
            "optim.lr": 1e-4,
            "forward.tol": 1e-5,
            "adjoint.tol": 1e-6,
            "penalty.weight": 0.1,
            "data.num_val": 3,
        }
    )
    objects = base.replace(
        optim=OptimConfig(lr=1e-4),
        forward=SolverConfig(tol=1e-5),
        adjoint=AdjointConfig(tol=1e-6),
        penalty=PenaltyConfig(weight=0.1),
        data=DataConfig(num_val=3),
    )
    same = TrainConfig.of(
        arch_options=TINY, lr=1e-4, tol=1e-5, adjoint_tol=1e-6, jac_penalty=0.1, num_val=3
    )
    assert flat == dotted == objects == same
    assert flat.forward.tol == 1e-5 and flat.adjoint.tol == 1e-6  # not confused
    assert (flat.setting("tol"), flat.setting("adjoint.tol"), flat.setting("seed")) == (
        1e-5,
        1e-6,
        0,
    )
    assert flat.setting("adjoint") is None and flat.setting("jac_penalty") == 0.1
    assert flat.optim.lr_final == OptimConfig().lr_final and base.optim.lr == 1e-3  # a copy
    # a sub-configuration object and a dotted change of it combine
    both = base.replace(forward=SolverConfig(name="picard"), **{"forward.relaxation": 0.5})
    assert both.forward == SolverConfig(name="picard", relaxation=0.5)
    assert flat.differences(base) == [
        "data.num_val",
        "optim.lr",
        "forward.tol",
        "adjoint.tol",
        "penalty.weight",
    ]
    assert base.replace(eval_every=1, devices=1).differences(base) == []


@pytest.mark.unchecked  # unknown names on purpose
def test_unknown_names_raise_with_the_name():
    with pytest.raises(ValueError, match=r"unknown fields \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match=r"unknown fields \['optim.lrr'\]"):
        TrainConfig.from_dict({"optim": {"lrr": 1e-3}})
    with pytest.raises(ValueError, match=r"unknown fields \['forward.mem'\]"):
        TrainConfig().replace(**{"forward.mem": 3})
    with pytest.raises(ValueError, match=r"unknown fields \['solver.tol'\]"):
        TrainConfig().replace(**{"solver.tol": 3})
    with pytest.raises(ValueError, match=r"unknown fields \['adjoint_mem'\]"):
        TrainConfig.of(adjoint_mem=3)
    with pytest.raises(ValueError, match=r"unknown fields \['optim.rate'\]"):
        TrainConfig().setting("optim.rate")
    with pytest.raises(ValueError, match=r"optim.lr is given twice"):
        TrainConfig.of(lr=1e-3, **{"optim.lr": 1e-4})
    with pytest.raises(ValueError, match="optim must be of type OptimConfig"):
        TrainConfig(optim=1e-3)  # type: ignore[arg-type]


@pytest.mark.unchecked  # wrong values on purpose
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SolverConfig(name="newton"), r"unknown forward.name \(solver\) 'newton'"),
        (lambda: SolverConfig(max_iter=0), "forward.max_iter must be a positive integer"),
        (lambda: SolverConfig(restart=1.0), "restart must exceed 1"),
        (lambda: AdjointConfig(method="lu"), r"unknown adjoint.method \(adjoint\) 'lu'"),
        (lambda: AdjointConfig(memory=0), r"adjoint.memory \(adjoint_memory\) must be a pos"),
        (lambda: OptimConfig(lr=0.0), "optim.lr must be positive"),
        (lambda: OptimConfig(lr_final=1.0), "need 0 <= optim.lr_final <= optim.lr"),
        (lambda: DataConfig(dataset="mnist", train_images="x"), "needs dataset='natural'"),
        (lambda: PenaltyConfig(weight=-1.0), r"penalty.weight \(jac_penalty\) must be >= 0"),
        (lambda: TrainConfig.of(batch_size=8, num_train=4), "exceeds data.num_train 4"),
        (lambda: TrainConfig.of(batch_size=6, devices=4), "must be a multiple of devices"),
    ],
)
def test_each_section_checks_its_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_command_line_and_the_sweep_take_flat_and_dotted_names():
    argv = ["train", "--task", "denoise", "--model", "bilevel", "--arch", "dense", "--out", "x"]
    sets = ["--set", "adjoint_tol=1e-6", "--set", "forward.max_iter=50", "--set", "optim.lr=2e-3"]
    config = cli.build_train_config(cli.make_parser().parse_args([*argv, "--lr", "5e-4", *sets]))
    assert config.adjoint.tol == 1e-6 and config.forward.max_iter == 50
    assert config.optim.lr == 2e-3  # --set comes after the flags
    with pytest.raises(cli.CLIError, match="--set optim.lrr: unknown setting"):
        cli.build_train_config(cli.make_parser().parse_args([*argv, "--set", "optim.lrr=1"]))
    with pytest.raises(cli.CLIError, match="--set lrr: unknown setting"):
        cli.build_train_config(cli.make_parser().parse_args([*argv, "--set", "lrr=1"]))
    base = TrainConfig.of(arch="dense", dataset="mnist", lr=1e-3, lr_final=1e-5)
    (_, a), (_, b) = expand_grid(base, {"optim.lr": [1e-3, 1e-4]})
    assert (a.optim.lr, b.optim.lr, b.optim.lr_final) == (1e-3, 1e-4, pytest.approx(1e-6))
