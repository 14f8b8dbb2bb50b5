"""Restoring the user's degraded files (jaxinv.restore, ``jaxinv restore``) and the pretrained
model layout (jaxinv.pretrained), on a tiny trained run."""

import json
from pathlib import Path, PurePosixPath

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image

from jaxinv import cli, pretrained
from jaxinv import restore as rs
from jaxinv.data import load_image_values
from jaxinv.metrics import psnr
from jaxinv.models import as_dict, from_dict
from jaxinv.operators import gaussian_kernel, motion_kernel, row_mask
from jaxinv.tasks import make_task
from jaxinv.train import TrainConfig, build_instance, load_run, reconstruct, train

from helpers import QUIET

SIGMA = 25 / 255
SHAPE = (40, 36)  # not the 16x16 training patches: restored at the image's own size


def _config(**changes):
    return TrainConfig.of(
        **{
            "arch": "foe",
            "arch_options": {"num_filters": 4, "size": 3},
            "patch_size": 16,
            "num_train": 8,
            "num_val": 2,
            "batch_size": 2,
            "steps": 3,
            **QUIET,
            **changes,
        }
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(_config(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def clean():
    """A 40x36 crop of a real photograph, on [0, 1]."""
    return skimage.data.camera()[::4, ::4][60:100, 50:86].astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def noisy(clean):
    y = clean + SIGMA * np.random.default_rng(3).standard_normal(clean.shape)
    return y.astype(np.float32)  # values beyond [0, 1]


def _expected(run, y, **kw):
    """The restoration by the reference route: load_run for the shape, then reconstruct."""
    config, model = load_run(run, image_shape=y.shape)
    task = config.make_task()
    sol = reconstruct(model, task, jnp.asarray(y), solver=config.forward_solver())
    return np.asarray(sol.value, np.float32), sol


def _psnr(x, ref):
    return float(psnr(jnp.asarray(x, jnp.float64), jnp.asarray(ref), 1.0))


def _error(capsys, argv, *fragments):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxinv: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if a model is built (checks that happen before any compilation)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr(rs, "_build", refuse)


# ---------------------------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------------------------


def test_restore_image_is_the_runs_reconstruction_and_raises_psnr(run_dir, clean, noisy):
    r = rs.restore_image(run_dir, noisy)
    want, sol = _expected(run_dir, noisy)
    np.testing.assert_array_equal(r.image, want)
    assert r.image.dtype == np.float32 and r.image.shape == SHAPE
    assert r.iterations == int(sol.stats.iterations) and r.converged
    assert r.residual == float(sol.stats.residual) and r.residual <= 1e-4
    assert r.operator == "denoise, σ=0.09804"
    assert _psnr(r.image, clean) > _psnr(noisy, clean) + 1.0


def test_equal_shapes_build_once(run_dir, noisy, monkeypatch):
    calls = []
    real = rs._build

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(rs, "_build", counting)
    model = rs.open_model(run_dir)
    for y in (noisy, noisy[::-1], noisy[:20, :30], noisy + 0.01):
        rs.restore_image(model, y)
    assert calls == [SHAPE, (20, 30)]


def test_sigma_rescales_lambda_and_a_new_operator_rebuilds_the_model(run_dir, clean):
    """Deblurring with a denoising regularizer, against a model built for the deblur task by
    the training layer (TrainConfig.replace + build_instance) with λ scaled by hand."""
    blurred = np.asarray(make_task("deblur", sigma=0.01).degrade(jnp.asarray(clean), 5))
    got = rs.restore_image(run_dir, blurred, kernel="motion:5", sigma=0.01)
    kept = rs.restore_image(run_dir, blurred, kernel="motion:5", sigma=0.01, keep_lambda=True)

    config, trained = load_run(run_dir)
    params = as_dict(trained)
    deblur = config.replace(task="deblur", task_options={"sigma": 0.01, "kernel": "motion5"})
    task, fresh = build_instance(deblur, SHAPE)
    for scale, result in (((SIGMA / 0.01) ** 2, got), (1.0, kept)):
        model = from_dict(fresh, {**params, "lam": params["lam"] * scale}).refresh()
        sol = reconstruct(model, task, jnp.asarray(blurred), solver=config.forward_solver())
        np.testing.assert_allclose(result.image, np.asarray(sol.value, np.float32), atol=1e-6)
        assert result.converged
    assert not np.allclose(got.image, kept.image, atol=1e-3)
    assert got.operator == "deblur (kernel motion:5, 5x5, circular), σ=0.01"
    assert _psnr(got.image, clean) > _psnr(blurred, clean)

    plan = rs.make_plan(rs.open_model(run_dir), kernel="motion:5", sigma=0.01)
    assert plan.lam_scale == pytest.approx((SIGMA / 0.01) ** 2)
    assert any("trained for denoise" in n for n in plan.notes)
    assert any("96.12" in n and "--keep-lambda" in n for n in plan.notes)
    same = rs.make_plan(rs.open_model(run_dir), sigma="25/255")
    assert same.lam_scale == 1.0 and same.notes == () and not same.retarget


def test_given_mask_is_the_inpainting_operator(run_dir, clean):
    m = np.asarray(row_mask(SHAPE, 1 / 3))
    task_rows = make_task("inpaint", mask="rows", sigma=SIGMA)
    y = np.asarray(task_rows.degrade(jnp.asarray(clean), 2))
    got = rs.restore_image(run_dir, y, mask=m.astype(np.uint8) * 255)

    config, trained = load_run(run_dir)
    rows = config.replace(task="inpaint", task_options={"mask": "rows", "sigma": SIGMA})
    task, fresh = build_instance(rows, SHAPE)
    model = from_dict(fresh, as_dict(trained)).refresh()
    sol = reconstruct(model, task, jnp.asarray(y), solver=rows.forward_solver())
    np.testing.assert_allclose(got.image, np.asarray(sol.value, np.float32), atol=1e-6)
    assert got.operator == f"inpaint (mask given, {1 - m.mean():.0%} missing), σ=0.09804"
    assert _psnr(got.image, clean) > _psnr(y, clean) + 1.0


def test_mnist_models_work_on_their_own_scale(tmp_path):
    """A model trained on MNIST's [-1, 1] digits restores [0, 1] files: the values are mapped
    to 2v - 1 and back, and σ is on the files' scale (the training 0.1 on [-1, 1] is 0.05)."""
    run = tmp_path / "mnist"
    train(_config(dataset="mnist", num_train=4, steps=2), run, progress=False)
    digit = np.zeros((28, 28))
    digit[6:22, 12:16] = 1.0
    y = (digit + 0.05 * np.random.default_rng(1).standard_normal(digit.shape)).astype(np.float32)
    r = rs.restore_image(run, y)
    config, model = load_run(run)
    sol = reconstruct(
        model, config.make_task(), jnp.asarray(2.0 * y - 1.0), solver=config.forward_solver()
    )
    np.testing.assert_allclose(r.image, np.asarray((sol.value + 1.0) / 2.0, np.float32), atol=1e-6)
    assert r.operator == "denoise, σ=0.05 (2σ on [-1, 1])"
    assert rs.make_plan(rs.open_model(run), sigma=0.05).lam_scale == 1.0
    assert "at σ=0.05 on mnist 28x28" in rs.open_model(run).describe()
    dense = rs.Model(run, "dense", TrainConfig.of(arch="dense", dataset="mnist"), 1, True, True)
    with pytest.raises(rs.RestoreError, match="dense model restores only 28x28"):
        rs.check_image(dense, rs.make_plan(dense), y[:20])


def test_colour_restores_each_channel(run_dir, clean, noisy, tmp_path):
    rgb = np.stack([noisy, noisy[::-1], 1.0 - noisy], axis=-1)
    r = rs.restore_image(run_dir, rgb)
    assert r.image.shape == SHAPE + (3,)
    singles = [rs.restore_image(run_dir, rgb[..., c]) for c in range(3)]
    for c in range(3):
        np.testing.assert_array_equal(r.image[..., c], singles[c].image)
    assert r.iterations == max(s.iterations for s in singles)
    assert r.residual == max(s.residual for s in singles)

    Image.fromarray(rs.to_png_array(rgb)).save(tmp_path / "c.png")
    assert (
        cli.main(
            [
                "restore",
                str(run_dir),
                str(tmp_path / "c.png"),
                "--out",
                str(tmp_path / "o"),
                "--raw",
            ]
        )
        == 0
    )
    out = Image.open(tmp_path / "o" / "c.png")
    assert out.mode == "RGB" and out.size == (SHAPE[1], SHAPE[0])
    raw = np.load(tmp_path / "o" / "c.npy")
    for c in range(3):
        want = rs.restore_image(run_dir, load_image_values(tmp_path / "c.png")[..., c]).image
        np.testing.assert_array_equal(raw[..., c], want)
    np.testing.assert_array_equal(np.asarray(out), rs.to_png_array(raw))


def test_kernels():
    np.testing.assert_array_equal(rs.parse_kernel("motion:5")[0], np.asarray(motion_kernel(5)))
    k, label = rs.parse_kernel("motion:7:horizontal")
    np.testing.assert_array_equal(k, np.asarray(motion_kernel(7, "horizontal")))
    assert label == "motion:7:horizontal"
    np.testing.assert_allclose(
        rs.parse_kernel("gaussian:1.5")[0],
        np.asarray(make_task("deblur", kernel="gaussian").blur_kernel()),
    )
    np.testing.assert_allclose(
        rs.parse_kernel("gaussian:0.5")[0], np.asarray(gaussian_kernel(5, 0.5))
    )
    box = np.zeros((3, 5))
    box[1] = 4.0
    k, _ = rs.parse_kernel(box)
    np.testing.assert_array_equal(k, box / 20.0)
    for bad, match in (
        (np.ones((3, 3, 2)), "must be 2-D"),
        (np.ones((3, 3, 3)) * np.arange(3), "different channels"),
        (np.zeros((3, 3)), "positive sum"),
        (np.array([[1.0, -2.0, 0.5]]), "positive sum"),
        (np.ones((4, 3)), "odd sizes"),
        (np.full((3, 3), np.inf), "NaN or infinite"),
    ):
        with pytest.raises(rs.RestoreError, match=match):
            rs.parse_kernel(bad)
    for spec, match in (
        ("motion:x", "motion:x"),
        ("motion:4", "odd"),
        ("motion:5:sideways", "direction"),
        ("gaussian:-1", "positive"),
        ("gaussian:", "gaussian"),
        ("no/such/kernel.png", "no such file"),
    ):
        with pytest.raises(rs.RestoreError, match=match):
            rs.parse_kernel(spec)


def test_kernel_and_mask_files(tmp_path, unchecked):
    np.save(tmp_path / "k.npy", np.arange(9.0).reshape(3, 3))
    k, label = rs.parse_kernel(str(tmp_path / "k.npy"))
    np.testing.assert_array_equal(k, np.arange(9.0).reshape(3, 3) / 36.0)
    assert label == "k.npy"
    Image.fromarray(np.array([[0, 51, 0], [51, 102, 51], [0, 51, 0]], np.uint8)).save(
        tmp_path / "k.png"
    )
    np.testing.assert_allclose(
        rs.parse_kernel(tmp_path / "k.png")[0], np.array([[0, 1, 0], [1, 2, 1], [0, 1, 0]]) / 6.0
    )
    np.save(tmp_path / "k3.npy", np.ones((3, 3, 3, 3)))
    with pytest.raises(rs.RestoreError, match=r"k3\.npy.*\(H, W\)"):
        rs.parse_kernel(tmp_path / "k3.npy")

    grid = np.zeros((6, 7), np.uint8)
    grid[::2] = 200
    Image.fromarray(grid).save(tmp_path / "m.png")
    m, label = rs.load_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(m, grid != 0)
    assert m.dtype == bool and label == "m.png"
    with pytest.raises(rs.RestoreError, match="observes no pixel"):
        rs.load_mask(np.zeros((4, 4)))
    with pytest.raises(rs.RestoreError, match="no such file"):
        rs.load_mask(tmp_path / "none.png")
    with pytest.raises(rs.RestoreError, match="not both"), unchecked():
        rs.make_plan(None, kernel="motion:5", mask=grid)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


def test_cli_reads_each_format_with_its_scaling(
    run_dir, clean, noisy, tmp_path, capsys, monkeypatch
):
    """8-bit PNG / 255, 16-bit PNG / 65535, float TIFF and float .npy as they are: each raw
    output is the restoration of exactly that input, the PNG its clipped 8-bit view."""
    q8 = np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    q16 = np.round(np.clip(noisy, 0, 1) * 65535).astype(np.uint16)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(q8).save(src / "a8.png")
    Image.fromarray(q16).save(src / "a16.png")
    tifffile.imwrite(src / "af.tif", noisy)
    np.save(src / "an.npy", noisy)
    inputs = {
        "a8": q8 / np.float32(255),
        "a16": q16 / np.float32(65535),
        "af": noisy,
        "an": noisy,
    }
    calls = []
    real = rs._build
    monkeypatch.setattr(rs, "_build", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    files = [str(src / n) for n in ("a8.png", "a16.png", "af.tif", "an.npy")]
    out = tmp_path / "out"
    assert cli.main(["restore", str(run_dir), *files, "--out", str(out), "--raw"]) == 0
    assert calls == [SHAPE]  # one model for the four equal-sized images
    text = capsys.readouterr().out
    assert "operator: denoise, σ=0.09804" in text and "note:" not in text
    assert text.count("converged ->") == 4 and "4 of 4 converged" in text
    for stem, y in inputs.items():
        raw = np.load(out / f"{stem}.npy")
        assert raw.dtype == np.float32 and raw.shape == SHAPE
        np.testing.assert_array_equal(raw, _expected(run_dir, y.astype(np.float32))[0])
        png = np.asarray(Image.open(out / f"{stem}.png"))
        assert png.dtype == np.uint8
        np.testing.assert_array_equal(png, rs.to_png_array(raw))
        assert _psnr(raw, clean) > _psnr(y, clean) + 1.0
        assert f"{stem}" in text


def test_raw_output_is_not_clipped(run_dir, tmp_path):
    y = np.full(SHAPE, 1.25, np.float32)
    y[:, :18] = -0.25
    y += np.float32(0.02) * np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    np.save(tmp_path / "wide.npy", y)
    assert (
        cli.main(
            [
                "restore",
                str(run_dir),
                str(tmp_path / "wide.npy"),
                "--out",
                str(tmp_path / "o"),
                "--raw",
            ]
        )
        == 0
    )
    raw = np.load(tmp_path / "o" / "wide.npy")
    assert raw.dtype == np.float32
    assert raw.max() > 1.1 and raw.min() < -0.1
    png = np.asarray(Image.open(tmp_path / "o" / "wide.png"))
    assert png[:, -1].min() == 255 and png[:, 0].max() == 0


def test_outputs_are_never_overwritten_silently(run_dir, noisy, tmp_path, capsys):
    np.save(tmp_path / "x.npy", noisy)
    out = tmp_path / "out"
    argv = ["restore", str(run_dir), str(tmp_path / "x.npy"), "--out", str(out)]
    assert cli.main(argv) == 0
    before = (out / "x.png").read_bytes()
    (out / "x.png").write_bytes(b"keep")
    _error(capsys, argv, str(out / "x.png"), "--overwrite")
    assert (out / "x.png").read_bytes() == b"keep"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert (out / "x.png").read_bytes() == before
    _error(capsys, [*argv, "--raw"], "x.png", "--overwrite")  # the png exists, the npy not yet
    assert not (out / "x.npy").exists()

    (tmp_path / "b").mkdir()
    Image.fromarray(rs.to_png_array(noisy)).save(tmp_path / "b" / "x.png")
    _error(
        capsys,
        [
            "restore",
            str(run_dir),
            str(tmp_path / "x.npy"),
            str(tmp_path / "b" / "x.png"),
            "--out",
            str(tmp_path / "o2"),
        ],
        "x.npy",
        "x.png",
        "both be written",
    )
    _error(
        capsys,
        [
            "restore",
            str(run_dir),
            str(tmp_path / "b" / "x.png"),
            "--out",
            str(tmp_path / "b"),
            "--overwrite",
        ],
        "would replace an input",
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "x.png")), rs.to_png_array(noisy))


def test_bad_input_exits_2_before_compiling(run_dir, noisy, tmp_path, capsys, no_build):
    np.save(tmp_path / "ok.npy", noisy)
    ok = str(tmp_path / "ok.npy")
    out = ["--out", str(tmp_path / "out")]
    run = str(run_dir)
    bad = noisy.copy()
    bad[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "text.png").write_text("not an image")
    np.save(tmp_path / "m.npy", np.ones((10, 10)))
    np.save(tmp_path / "k.npy", np.ones((41, 41)))
    (tmp_path / "plain").mkdir()
    (tmp_path / "cut").mkdir()
    for f in ("config.json", "checkpoint.eqx"):
        (tmp_path / "cut" / f).write_bytes((run_dir / f).read_bytes())
    data = (tmp_path / "cut" / "checkpoint.eqx").read_bytes()
    (tmp_path / "cut" / "checkpoint.eqx").write_bytes(data[:-10])
    cases = [
        (["restore", str(tmp_path / "cut"), ok, *out], ["cut", "unreadable", "payload"]),
        (["restore", run, str(tmp_path / "missing.png"), *out], ["missing.png", "not found"]),
        (["restore", run, str(tmp_path / "text.png"), *out], ["text.png", "NPY"]),
        (["restore", run, str(tmp_path / "nan.npy"), *out], ["nan.npy", "NaN or infinite"]),
        (["restore", str(tmp_path / "nope"), ok, *out], ["nope", "pretrained", "available"]),
        (["restore", str(tmp_path / "plain"), ok, *out], ["plain", "no checkpoint.eqx"]),
        (["restore", ok, ok, *out], ["a file, not a run directory"]),
        (["restore", run, ok, "--sigma", "2", *out], ["--sigma", "[0,1]"]),
        (["restore", run, ok, "--mask", str(tmp_path / "m.npy"), *out], ["40x36", "10x10"]),
        (["restore", run, ok, "--kernel", str(tmp_path / "k.npy"), *out], ["41x41 kernel"]),
        (["restore", run, ok, "--kernel", "motion:4", *out], ["motion:4", "odd"]),
        (["restore", run, ok, "--kernel", "motion:5", "--mask", ok, *out], ["not allowed with"]),
        (["restore", run, ok, "--max-iter", "0", *out], ["--max-iter"]),
        (["restore", run, *out], ["FILE"]),
    ]
    for argv, fragments in cases:
        _error(capsys, argv, *fragments)
    assert not (tmp_path / "out").exists()


def test_unfinished_run_is_restored_with_a_note(tmp_path, noisy, capsys):
    run = tmp_path / "half"
    train(_config(steps=4), run, progress=False, until=2)
    np.save(tmp_path / "y.npy", noisy)
    assert (
        cli.main(["restore", str(run), str(tmp_path / "y.npy"), "--out", str(tmp_path / "o")]) == 0
    )
    assert "unfinished at step 2 of 4" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# pretrained models
# ---------------------------------------------------------------------------------------------

CARD = "# tiny-denoise\n\nA 4-filter 3x3 FoE, 3 steps: a test model, not for use.\n"


def test_export_load_and_card(run_dir, tmp_path, noisy):
    root = tmp_path / "root"
    assert pretrained.names(root=root) == []
    target = pretrained.export(run_dir, "tiny-denoise", CARD, root=root)
    assert target == root / "tiny-denoise"
    assert sorted(p.name for p in target.iterdir()) == ["CARD.md", "checkpoint.eqx", "config.json"]
    assert (target / "checkpoint.eqx").read_bytes() == (run_dir / "checkpoint.eqx").read_bytes()
    assert json.loads((target / "config.json").read_text()) == json.loads(
        (run_dir / "config.json").read_text()
    )
    assert pretrained.names(root=root) == ["tiny-denoise"]
    assert pretrained.card("tiny-denoise", root=root) == CARD

    config, model = pretrained.load("tiny-denoise", SHAPE, root=root)
    config_r, model_r = load_run(run_dir, image_shape=SHAPE)
    assert config == config_r and model.image_shape == SHAPE
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(model_r), strict=True):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(
        ValueError, match=r"unknown pretrained model 'nope'; available: tiny-denoise"
    ):
        pretrained.load("nope", root=root)
    with pytest.raises(ValueError, match="already exists.*overwrite=True"):
        pretrained.export(run_dir, "tiny-denoise", CARD, root=root)
    pretrained.export(run_dir, "tiny-denoise", CARD + "v2\n", root=root, overwrite=True)
    assert pretrained.card("tiny-denoise", root=root).endswith("v2\n")
    assert [p.name for p in root.iterdir()] == ["tiny-denoise"]  # no temporary left over
    for name in ("Tiny", "-x", "a b", "../up", ""):
        with pytest.raises(ValueError, match="lower-case"):
            pretrained.export(run_dir, name, CARD, root=root)
    with pytest.raises(ValueError, match="card_text is empty"):
        pretrained.export(run_dir, "other", "  \n", root=root)
    (root / "incomplete").mkdir()
    (root / "incomplete" / "config.json").write_text("{}")
    assert pretrained.names(root=root) == ["tiny-denoise"]


def test_export_refuses_an_unfinished_or_altered_run(tmp_path):
    run = tmp_path / "half"
    train(_config(steps=4), run, progress=False, until=1)
    with pytest.raises(ValueError, match="unfinished run.*step 1 of 4"):
        pretrained.export(run, "half", CARD, root=tmp_path / "root")
    with pytest.raises(Exception, match="no checkpoint.eqx"):
        pretrained.export(tmp_path, "none", CARD, root=tmp_path / "root")
    assert not (tmp_path / "root" / "half").exists()


def test_restore_accepts_a_pretrained_name(run_dir, noisy, tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    pretrained.export(run_dir, "tiny-denoise", CARD, root=root)
    monkeypatch.setenv(pretrained.ROOT_ENV, str(root))
    assert pretrained.root() == root and pretrained.names() == ["tiny-denoise"]
    np.save(tmp_path / "y.npy", noisy)
    argv = [
        "restore",
        "tiny-denoise",
        str(tmp_path / "y.npy"),
        "--out",
        str(tmp_path / "o"),
        "--raw",
    ]
    assert cli.main(argv) == 0
    assert "model: tiny-denoise (bilevel / foe" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "y.npy"), _expected(run_dir, noisy)[0])
    _error(
        capsys,
        ["restore", "tiny-denoize", str(tmp_path / "y.npy"), "--out", str(tmp_path / "p")],
        "available: tiny-denoise",
    )


def test_shipped_models_are_complete_and_packaged():
    """Every model directory in the package is a finished run with a card, and pyproject.toml
    declares every file of the layout as package data (so a wheel carries them)."""
    from jaxinv.train._checkpoint import read_header

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    default = Path(pretrained.__file__).parent
    for name in pretrained.names(root=default):
        assert pretrained.card(name, root=default).strip(), name
        assert read_header(default / name / "checkpoint.eqx")[0]["finished"], name
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["jaxinv"]
    for f in (*pretrained.RUN_FILES, pretrained.CARD_FILE):
        path = PurePosixPath("pretrained", "some-model", f)
        assert any(path.match(p) for p in patterns), (f, patterns)
