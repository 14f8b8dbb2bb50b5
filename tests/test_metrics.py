"""Tests for jaxinv.metrics: MSE, PSNR and SSIM against hand formulas and scikit-image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from jaxinv import metrics
from jaxinv.data import load_image


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(degraded, clean) pairs of real images in float64, of different sizes."""
    rng = np.random.default_rng(0)
    out = []
    for name, sl in [
        ("camera", np.s_[100:228, 150:310]),
        ("coins", np.s_[:, :]),
        ("astronaut", np.s_[0:96, 0:64]),
        ("brick", np.s_[200:240, 10:90]),
    ]:
        clean = load_image(name)[sl].astype(np.float64)
        noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
        out.append((noisy, clean))
    return out


def _sk_ssim(x: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    return structural_similarity(
        x,
        ref,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
    )


def test_mse_and_psnr_hand_formula(pairs) -> None:
    for x, ref in pairs:
        err = np.mean((x - ref) ** 2)
        np.testing.assert_allclose(metrics.mse(x, ref), err, rtol=1e-12)
        np.testing.assert_allclose(metrics.psnr(x, ref), 10 * np.log10(1.0 / err), rtol=1e-12)
        np.testing.assert_allclose(
            metrics.psnr(2 * x - 1, 2 * ref - 1, data_range=2.0),
            10 * np.log10(1.0 / err),
            rtol=1e-12,
        )
    assert float(metrics.psnr(np.full((4, 4), 0.5), np.zeros((4, 4)))) == pytest.approx(
        10 * np.log10(4.0)
    )
    assert np.isinf(metrics.psnr(np.ones((3, 3)), np.ones((3, 3))))


def test_psnr_batched_per_image() -> None:
    rng = np.random.default_rng(1)
    ref = rng.random((2, 3, 8, 8))
    x = ref + rng.normal(scale=[[0.01], [0.1]], size=(2, 24 * 8)).reshape(2, 3, 8, 8)
    out = metrics.psnr(x, ref)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], metrics.psnr(x[i, j], ref[i, j]), rtol=1e-12)
    assert np.all(out[0] > out[1])
    flat = metrics.psnr(x.reshape(2, 3, 64), ref.reshape(2, 3, 64), image_ndim=1)
    np.testing.assert_allclose(flat, out, rtol=1e-12)
    np.testing.assert_allclose(metrics.mse(x, ref[0, 0]).shape, (2, 3))  # broadcasting ref


def test_ssim_matches_skimage(pairs) -> None:
    for x, ref in pairs:
        ours = float(metrics.ssim(x, ref))
        assert ours == pytest.approx(_sk_ssim(x, ref), abs=1e-6)
        assert float(metrics.ssim(x, ref, data_range=2.0)) == pytest.approx(
            _sk_ssim(x, ref, 2.0), abs=1e-6
        )
    smooth = pairs[1][1]
    shifted = np.roll(smooth, 3, axis=1)
    assert float(metrics.ssim(shifted, smooth)) == pytest.approx(
        _sk_ssim(shifted, smooth), abs=1e-6
    )


def test_ssim_float32_close_to_skimage(pairs) -> None:
    x, ref = (a.astype(np.float32) for a in pairs[0])
    ours = metrics.ssim(x, ref)
    assert ours.dtype == jnp.float32
    assert float(ours) == pytest.approx(_sk_ssim(x.astype(np.float64), ref), abs=1e-4)


def test_ssim_batched_jit_and_grad(pairs) -> None:
    x, ref = pairs[0]
    rng = np.random.default_rng(2)
    xs = np.stack([x, ref, np.clip(ref + 0.3 * rng.standard_normal(ref.shape), 0, 1)])
    out = jax.jit(metrics.ssim)(xs, ref)
    assert out.shape == (3,)
    for k in range(3):
        assert float(out[k]) == pytest.approx(_sk_ssim(xs[k], ref), abs=1e-6)
    assert float(out[1]) == pytest.approx(1.0, abs=1e-12)
    assert out[1] > out[0] > out[2]
    nested = metrics.ssim(xs.reshape(3, 1, *ref.shape), ref)
    assert nested.shape == (3, 1)
    g = jax.grad(lambda z: metrics.ssim(z, ref))(jnp.asarray(x))
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


def test_ssim_rejects_small_images() -> None:
    with pytest.raises(ValueError, match="11x11"):
        metrics.ssim(np.zeros((10, 20)), np.zeros((10, 20)))
