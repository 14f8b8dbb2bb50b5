"""Training on folders of the user's own images: listing, reading, the split by image,
augmented patches, the training configuration, resuming, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jaxinv import cli
from jaxinv.data import (
    folder_fingerprint,
    list_image_files,
    load_image_folder,
    sample_patches,
    split_by_image,
)
from jaxinv.train import CheckpointError, TrainConfig, make_datasets, train

from helpers import TINY_FOE, solves


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def _level_image(level: int, shape=(24, 30), seed=0) -> np.ndarray:
    """8-bit image whose values lie in [20·level, 20·level + 9]: a patch tells its image."""
    rng = np.random.default_rng([seed, level])
    return (20 * level + rng.integers(0, 10, size=shape)).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    """Ten images 24x30 in a nested folder (levels 0..9 in sorted path order), plus files
    that are not images or are hidden."""
    root = tmp_path / "images"
    for level in range(10):
        sub = "a" if level < 5 else "b/c"
        _save(root / sub / f"im{level}.png", _level_image(level))
    (root / "notes.txt").write_text("not an image")
    _save(root / ".hidden" / "x.png", _level_image(12))
    return root


def _levels(patches: np.ndarray) -> set[int]:
    return {int(round(float(p.min()) * 255)) // 20 for p in patches}


def test_listing_is_recursive_sorted_and_skips_other_files(folder, tmp_path):
    files = list_image_files(folder)
    rel = [p.relative_to(folder).as_posix() for p in files]
    assert rel == [f"a/im{i}.png" for i in range(5)] + [f"b/c/im{i}.png" for i in range(5, 10)]
    _save(folder / "TOP.PNG", _level_image(11))
    assert "TOP.PNG" in [p.name for p in list_image_files(folder)]
    assert [p.name for p in list_image_files(folder, recursive=False)] == ["TOP.PNG"]
    images = load_image_folder(folder)
    assert len(images) == 11 and all(im.dtype == np.float32 for im in images)
    np.testing.assert_allclose(images[4] * 255, _level_image(3), atol=1e-4)  # after TOP.PNG


def test_folder_errors_name_the_cause(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        list_image_files(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a folder"):
        list_image_files(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no image files under .*\.png"):
        list_image_files(tmp_path / "empty")
    with pytest.raises(ValueError, match="im0.png.* smaller than the requested 32x32"):
        load_image_folder(folder, min_size=32)
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(folder)


def test_fingerprint_follows_the_files(folder):
    before = folder_fingerprint(folder)
    assert folder_fingerprint(folder) == before
    _save(folder / "a" / "new.png", _level_image(3))
    assert folder_fingerprint(folder) != before


def test_split_by_image_holds_out_every_tenth():
    train_ids, val_ids = split_by_image(25)
    assert list(val_ids) == [9, 19]
    assert sorted([*train_ids, *val_ids]) == list(range(25))
    assert list(split_by_image(3)[1]) == [2]  # at least one
    with pytest.raises(ValueError, match="at least 2 images"):
        split_by_image(1)


def test_augmented_patches_are_symmetries_of_the_same_windows():
    rng = np.random.default_rng(1)
    images = [rng.random((20, 25)), rng.random((30, 18))]
    plain, pos = sample_patches(images, 8, 64, seed=5, return_positions=True)
    aug, pos_aug = sample_patches(images, 8, 64, seed=5, augment=True, return_positions=True)
    np.testing.assert_array_equal(pos, pos_aug)
    used = set()
    for p, q in zip(plain, aug, strict=True):
        syms = [np.rot90(p, k) for k in range(4)] + [np.rot90(p, k)[:, ::-1] for k in range(4)]
        hits = [i for i, s in enumerate(syms) if np.array_equal(s, q)]
        assert hits, "an augmented patch is not a symmetry of its window"
        used.add(hits[0])
    assert len(used) >= 6  # the draws cover the symmetries, not only the identity
    rect = sample_patches(images, (6, 9), 32, seed=5, augment=True)
    assert rect.shape == (32, 6, 9)
    np.testing.assert_array_equal(sample_patches(images, 8, 64, seed=5, augment=True), aug)


def _folder_config(folder, **changes):
    return TrainConfig.of(
        **{
            "arch": "foe",
            "arch_options": TINY_FOE,
            "train_images": str(folder),
            "patch_size": 12,
            "num_train": 40,
            "num_val": 6,
            "batch_size": 4,
            "steps": 2,
            **solves(1e-6, 100),
            "task_options": {"sigma": 0.05},
            "eval_every": 0,
            "checkpoint_every": 1,
            **changes,
        }
    )


def test_config_reads_patches_from_the_folder_and_holds_out_by_image(
    folder, monkeypatch, unchecked
):
    monkeypatch.chdir(folder.parent)
    config = _folder_config("images")
    assert config.data.train_images == str(folder.resolve())  # stored absolute
    assert config.augments and not config.replace(augment=False).augments
    assert not TrainConfig().augments  # the bundled images are not augmented by default
    assert TrainConfig.from_json(config.to_json()) == config
    train_set, val_set = make_datasets(config)
    assert _levels(train_set.x) <= set(range(9)) and len(_levels(train_set.x)) >= 5
    assert _levels(val_set.x) == {9}  # the 10th image in path order is held out
    _save(folder.parent / "val" / "v.png", _level_image(11))
    separate = _folder_config(folder, val_images=str(folder.parent / "val"))
    _, val_sep = make_datasets(separate)
    assert _levels(val_sep.x) == {11}
    assert 9 in _levels(make_datasets(separate.replace(num_train=400))[0].x)  # all images train
    with pytest.raises(ValueError, match="needs dataset='natural'"):
        _folder_config(folder, dataset="mnist")
    with pytest.raises(ValueError, match="augment must be"), unchecked():
        _folder_config(folder, augment="yes")


def test_resuming_checks_that_the_folder_is_unchanged(folder, tmp_path):
    config = _folder_config(folder)
    out = tmp_path / "run"
    first = train(config, out, progress=False, until=1)
    assert not first.finished
    _save(folder / "a" / "extra.png", _level_image(4))
    with pytest.raises(CheckpointError, match="files have changed"):
        train(config, out, progress=False)
    (folder / "a" / "extra.png").unlink()
    done = train(config, out, progress=False)
    assert done.finished
    for r in done.history:  # validation PSNR of the set's MSE, beside the per-patch mean
        if r["kind"] == "val":
            assert r["psnr_pooled"] == pytest.approx(10 * np.log10(1.0 / r["mse"]), rel=1e-6)


def test_cli_trains_on_a_folder_and_reports_bad_folders(folder, tmp_path, capsys):
    out = tmp_path / "cli_run"
    argv = [
        "train", "--task", "denoise", "--model", "bilevel", "--steps", "1", "--batch", "2",
        "--patch", "12", "--num-train", "4", "--train-images", str(folder), "--no-augment",
        "--set", "num_val=2", "--set", "arch_options.num_filters=2", "--set",
        "arch_options.size=3", "--set", "eval_every=0", "--quiet", "--no-figures",
        "--out", str(out),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (
        saved["data"]["train_images"] == str(folder.resolve()) and saved["data"]["augment"] is False
    )
    capsys.readouterr()
    bad = [*argv[:-1], str(tmp_path / "other")]
    bad[bad.index(str(folder))] = str(tmp_path / "nowhere")
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert "image folder not found" in err and "Traceback" not in err
