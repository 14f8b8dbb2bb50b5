"""The command line: train -> eval -> reproduce on tiny settings, and every user error exits 2
with a one-line message (no traceback)."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from jaxinv import cli, reproduce
from jaxinv.evaluate import METHODS

# A tiny but complete run: 4 filters 3x3, 2 steps of 2 patches 16x16, 2 validation patches.
TINY = [
    "--task",
    "denoise",
    "--model",
    "bilevel",
    "--arch",
    "foe",
    "--steps",
    "2",
    "--batch",
    "2",
    "--patch",
    "16",
    "--num-train",
    "4",
    "--set",
    "num_val=2",
    "--set",
    "arch_options.num_filters=4",
    "--set",
    "arch_options.size=3",
    "--set",
    "solver=picard",
    "--set",
    "adjoint=fixed_point",
    "--set",
    "max_iter=30",
    "--set",
    "adjoint_max_iter=30",
    "--set",
    "eval_every=0",
    "--set",
    "lr_scale.log_weights=20",
    "--quiet",
]
EVAL = ["--crop", "16", "--max-images", "2"]


def _error(capsys, argv, *fragments):
    """Run ``argv``; expect exit code 2 and a one-line message containing ``fragments``."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxinv: error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_a_run_with_figures(run_dir, capsys):
    for name in ("config.json", "metrics.jsonl", "checkpoint.eqx"):
        assert (run_dir / name).is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch_options"] == {"num_filters": 4, "size": 3}
    assert config["steps"] == 2 and config["data"]["num_val"] == 2
    assert config["optim"]["lr_scale"] == {"log_weights": 20.0}
    kinds = [json.loads(s)["kind"] for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("train") == 2
    for fig in ("curves", "iterations", "filters_K", "reconstructions"):
        path = run_dir / "figures" / f"{fig}.png"
        assert path.stat().st_size > 2000
        with Image.open(path) as im:
            assert im.format == "PNG"


def test_eval_json_has_the_documented_keys(run_dir, capsys):
    assert cli.main(["eval", str(run_dir), "--json", *EVAL]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("run", "task", "model", "arch", "dataset", "sigma", "seed", "tv_weight"):
        assert key in result
    assert result["task"] == "denoise" and result["model"] == "bilevel"
    assert [r["name"] for r in result["images"]] == ["camera", "astronaut"]
    for entry in (*result["images"], result["mean"]):
        for m in METHODS:
            assert set(entry[m]) >= {"psnr", "ssim"}
            assert np.isfinite(entry[m]["psnr"]) and -1 <= entry[m]["ssim"] <= 1
        assert {"mse", "iterations", "converged"} <= set(entry["reconstruction"])
    mean_psnr = np.mean([r["reconstruction"]["psnr"] for r in result["images"]])
    assert result["mean"]["reconstruction"]["psnr"] == pytest.approx(mean_psnr)
    assert result["tv_weight"] > 0
    assert (run_dir / "tv_baseline.json").is_file()  # the tuned TV weight is cached
    # the same seed gives the same numbers (and reuses the cache)
    assert cli.main(["eval", str(run_dir), "--json", *EVAL]) == 0
    again = json.loads(capsys.readouterr().out)
    for m in METHODS:
        assert again["mean"][m] == pytest.approx(result["mean"][m])


def test_eval_table_on_user_images(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.png"
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray((rng.random((16, 16, 4)) * 255).astype(np.uint8), "RGBA").save(rgba)
    fig = tmp_path / "grid.png"
    argv = ["eval", str(run_dir), "--images", str(gray), str(rgba), *EVAL, "--figure", str(fig)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "gray.png" in out and "rgba.png" in out and "mean" in out
    assert "TV PSNR" in out and "bilevel PSNR" in out
    assert fig.stat().st_size > 2000


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train", "--task", "denoise2", "--model", "deq", "--out", "x"], ["--task", "denoise2"]),
        (
            ["train", "--task", "denoise", "--model", "deq", "--arch", "unet", "--out", "x"],
            ["unet"],
        ),
        (["train", "--task", "denoise", "--model", "tied", "--out", "x"], ["--model"]),
        (["train", "--task", "denoise", "--model", "deq", "--arch", "tv", "--out", "x"], ["tv"]),
        (
            ["train", "--task", "deblur", "--model", "deq", "--sigma", "25", "--out", "x"],
            ["25/255"],
        ),
        (
            ["train", "--task", "denoise", "--model", "deq", "--set", "bogus=1", "--out", "x"],
            ["bogus"],
        ),
        (["train", "--task", "denoise", "--model", "deq", "--devices", "64", "--out", "x"], ["64"]),
        (
            ["train", "--task", "denoise", "--model", "deq", "--set", "lr.x=1", "--out", "x"],
            ["lr.x", "lr_scale"],
        ),
        (
            ["train", "--task", "denoise", "--model", "deq", "--set", "lr_scale.w=2", "--out", "x"],
            ["['w']", "not trainable", "log_weights"],
        ),
        (["frobnicate"], ["frobnicate"]),
    ],
)
def test_usage_errors_exit_2(capsys, argv, fragments):
    _error(capsys, argv, *fragments)


def test_devices_one_is_accepted_and_more_need_support(capsys, monkeypatch):
    assert cli._devices_option(None, set()) == {}
    assert cli._devices_option(1, set()) == {}
    assert cli._devices_option(1, {"devices"}) == {"devices": 1}
    monkeypatch.setattr("jax.device_count", lambda: 4)
    with pytest.raises(cli.CLIError, match="single device"):
        cli._devices_option(2, set())
    assert cli._devices_option(2, {"devices"}) == {"devices": 2}


def test_train_refuses_to_overwrite(run_dir, tmp_path, capsys):
    line = _error(capsys, ["train", *TINY, "--out", str(run_dir)], "already exists", "--overwrite")
    assert str(run_dir) in line
    f = tmp_path / "file"
    f.write_text("x")
    _error(capsys, ["train", *TINY, "--out", str(f)], "is a file")
    # with --overwrite the check passes; an existing finished run needs --overwrite, not --resume
    cli._check_out_dir(run_dir, overwrite=True, resume=False)
    _error(capsys, ["train", *TINY, "--resume", "--out", str(run_dir)], "finished", "--overwrite")


def test_eval_errors_exit_2(run_dir, tmp_path, capsys):
    _error(capsys, ["eval", str(tmp_path / "nope")], "does not exist", "jaxinv train")
    empty = tmp_path / "empty"
    empty.mkdir()
    _error(capsys, ["eval", str(empty)], "not a jaxinv run directory")
    _error(capsys, ["eval", str(run_dir), "--images", str(tmp_path / "missing.png")], "not found")
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image")
    _error(capsys, ["eval", str(run_dir), "--images", str(bad)], "bad.png", "cannot read")
    gif = tmp_path / "anim.gif"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(gif)
    _error(capsys, ["eval", str(run_dir), "--images", str(gif)], "GIF", "PNG")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((5, 40), np.uint8)).save(tiny)
    _error(capsys, ["eval", str(run_dir), "--images", str(tiny)], "5x40", "at least")


def test_corrupt_or_foreign_checkpoint_exits_2(run_dir, tmp_path, capsys):
    from jaxinv.train import save_checkpoint
    from jaxinv.train._checkpoint import read_header

    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    ckpt = corrupt / "checkpoint.eqx"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    _error(capsys, ["eval", str(corrupt)], "unreadable")

    foreign = tmp_path / "foreign"
    shutil.copytree(run_dir, foreign)
    header, _ = read_header(run_dir / "checkpoint.eqx")
    own = ("format", "step", "finished", "payload_bytes", "payload_sha256")
    meta = {k: v for k, v in header.items() if k not in own}
    other_state = {"W": jnp.zeros((3, 3)), "b": jnp.zeros(7)}  # not this model's parameters
    save_checkpoint(foreign / "checkpoint.eqx", other_state, step=2, finished=True, meta=meta)
    _error(capsys, ["eval", str(foreign)], "does not match")


def test_help_returns_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "reproduce" in capsys.readouterr().out


def test_reproduce_tiny(tmp_path, capsys, monkeypatch):
    # the quick natural-image settings made tinier (1 step on 16x16 patches, a cheaper solver
    # that compiles faster); the test images get the validation shape, so their solve reuses it
    _tiny_natural_cells(monkeypatch)
    monkeypatch.setitem(reproduce._EVAL[True], "natural", dict(max_images=2, crop=16))
    out = tmp_path / "repro"
    argv = ["reproduce", "--quick", "--steps", "1", "--tasks", "deblur", "--archs", "conv2x11"]
    assert cli.main([*argv, "--quiet", "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| deblur | conv2x11 | natural |")]
    assert len(rows) == 2 and "bilevel" in rows[0] and "deq" in rows[1]
    assert "## Bilevel vs DEQ" in md
    data = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["bilevel", "deq"]
    for r in data["rows"]:
        assert r["num_params"] > 0 and np.isfinite(r["psnr"]) and r["test_images"] == 2
    for name in ("comparison_quality", "comparison_cost", "deblur-conv2x11-deq"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 2000
    assert (out / "runs" / "deblur-conv2x11-deq" / "figures" / "filters_C.png").is_file()
    capsys.readouterr()
    # an existing output directory needs --resume (reuse finished runs) or --overwrite
    _error(capsys, [*argv, "--out", str(out)], "--resume", "--overwrite")


def _tiny_natural_cells(monkeypatch):
    """The quick natural-image cells made tinier: 1 step on 16x16 patches, a cheap solver."""
    tiny = dict(
        reproduce._QUICK["natural"],
        patch_size=16,
        num_train=4,
        num_val=2,
        batch_size=2,
        solver="picard",
        adjoint="fixed_point",
        max_iter=20,
        adjoint_max_iter=20,
    )
    monkeypatch.setitem(reproduce._QUICK, "natural", tiny)


def test_reproduce_trains_the_convolutional_cells_on_a_users_folder(tmp_path, capsys, monkeypatch):
    """The paper's CelebA experiment on the user's own faces: ``--images`` trains the 2x11x11
    and 30x3x3 cells on the folder's patches, ``--test-images`` tests them at full size."""
    _tiny_natural_cells(monkeypatch)
    camera = skimage.data.camera()  # 512x512 uint8
    train_dir, test_dir = tmp_path / "faces" / "train", tmp_path / "faces" / "test"
    for folder, count, side in ((train_dir, 10, 40), (test_dir, 2, 24)):
        folder.mkdir(parents=True)
        for i in range(count):
            crop = camera[20 * i : 20 * i + side, 30 * i : 30 * i + side]
            Image.fromarray(crop).save(folder / f"face{i:02d}.png")
    out = tmp_path / "repro"
    argv = ["reproduce", "--quick", "--steps", "1", "--tasks", "denoise", "--quiet"]
    folders = ["--images", str(train_dir), "--test-images", str(test_dir)]
    assert cli.main([*argv, *folders, "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert [(r["arch"], r["model"]) for r in rows] == [
        (a, m) for a in ("conv2x11", "conv30x3") for m in ("bilevel", "deq")
    ]
    for r in rows:
        assert r["test_images"] == 2 and np.isfinite(r["psnr"])
        run = json.loads(
            (out / "runs" / f"denoise-{r['arch']}-{r['model']}" / "config.json").read_text()
        )
        assert run["data"]["train_images"] == str(train_dir)
    assert data["settings"]["test_images"] == sorted(str(p) for p in test_dir.iterdir())
    assert "--images" in data["settings"]["command"]
    assert "tested on 2 images of the user's at full size" in (out / "results.md").read_text()
    capsys.readouterr()
    again = [*argv, *folders, "--out", str(tmp_path / "other")]
    _error(capsys, [*again, "--archs", "dense"], "drop 'dense'")
    _error(capsys, [*again, "--grid"], "--grid", "no image folder")
    _error(
        capsys,
        [*argv, "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        "--images",
        "not found",
    )


def test_results_markdown_has_every_cell():
    """All 18 cells of the full grid appear in results.md (synthetic rows: no training)."""
    rows = []
    for task in ("denoise", "inpaint", "deblur"):
        for arch in reproduce.ARCHS:
            for model in reproduce.MODELS:
                rows.append(
                    dict(
                        task=task,
                        arch=arch,
                        model=model,
                        dataset=reproduce.DATASET[arch],
                        test_loss=1e-3,
                        psnr=25.0 + (model == "deq"),
                        ssim=0.8,
                        input_psnr=20.0,
                        fwd_iters_test=10.0,
                        fwd_iters_train=11.0,
                        bwd_iters_train=12.0,
                        time_per_step_s=0.5,
                        time_per_step_includes_compile=False,
                        time_per_epoch_s=8.0,
                        num_params=1234,
                        converged_test=1.0,
                        fwd_converged_train=1.0,
                        bwd_converged_train=0.5,
                    )
                )
    settings = dict(
        quick=False,
        date="today",
        device="cpu",
        duration_s=1.0,
        command="jaxinv reproduce",
        train_settings={"mnist": {"steps": 1}},
    )
    md = reproduce.format_markdown(rows, settings)
    table = [line for line in md.splitlines() if line.startswith("| ") and "mnist |" in line]
    table += [line for line in md.splitlines() if line.startswith("| ") and "natural |" in line]
    assert len(table) == 18
    summary = [line for line in md.splitlines() if "| +1.00 |" in line]
    assert len(summary) == 9
    assert "1,234" in md and "50%" in md
