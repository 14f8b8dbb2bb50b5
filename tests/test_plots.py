"""Figures: every plotting function writes a PNG that Pillow can open."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxinv import plots


def _check_png(path, min_bytes=2000):
    assert path.exists()
    assert path.stat().st_size > min_bytes
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w > 50 and h > 50
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 0  # not a blank canvas


def test_reconstruction_grid(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((3, 24, 24))
    y = x + 0.1 * rng.standard_normal(x.shape)
    out = plots.reconstruction_grid(
        tmp_path / "sub" / "grid.png",
        {"ground truth": x, "degraded": y, "reconstruction": 0.5 * (x + y), "TV": x},
        reference="ground truth",
        labels=["a", "b", "c"],
    )
    _check_png(out)


def test_reconstruction_grid_single_image_and_bad_reference(tmp_path):
    img = np.linspace(0, 1, 400).reshape(20, 20)
    _check_png(plots.reconstruction_grid(tmp_path / "one.png", {"x": img, "y": img[::-1]}))
    with pytest.raises(ValueError, match="reference"):
        plots.reconstruction_grid(tmp_path / "bad.png", {"x": img}, reference="gt")


def test_filter_grid(tmp_path):
    f = np.random.default_rng(1).standard_normal((30, 3, 3))
    _check_png(plots.filter_grid(tmp_path / "filters.png", f, title="30 filters 3x3"))
    _check_png(plots.filter_grid(tmp_path / "one.png", np.eye(7)), min_bytes=500)
    with pytest.raises(ValueError, match="shape"):
        plots.filter_grid(tmp_path / "bad.png", np.zeros(5))


def test_curves_from_metrics_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        json.dumps(
            {
                "step": s,
                "train_loss": 1.0 / (s + 1),
                "val_loss": 1.2 / (s + 1),
                "val_psnr": 20 + s,
                "fwd_iters": 30 - s,
                "bwd_iters": 20 - s,
                "fwd_residual": 1e-7,
            }
        )
        for s in range(5)
    ]
    path.write_text("\n".join(lines) + "\n{truncated")
    recs = plots.read_metrics(path)
    assert len(recs) == 5
    _check_png(plots.training_curves(tmp_path / "curves.png", path, title="run"))
    _check_png(plots.iteration_curves(tmp_path / "iters.png", recs))


def test_curves_with_no_matching_metrics(tmp_path):
    _check_png(plots.training_curves(tmp_path / "empty.png", []), min_bytes=500)


def test_comparison_bars(tmp_path):
    rows = [
        {"task": "denoise", "arch": "dense", "model": m, "psnr": p, "ssim": s}
        for m, p, s in (("bilevel", 25.0, 0.8), ("deq", 26.0, None))
    ]
    _check_png(plots.comparison_bars(tmp_path / "bars.png", rows))
