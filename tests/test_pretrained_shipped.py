"""The pretrained models that ship in the package load offline, have cards, and denoise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import pretrained
from jaxinv.data import center_crops, load_images
from jaxinv.metrics import psnr
from jaxinv.train import reconstruct

SHIPPED = ("foe-student-t-s25", "spline-wcrr-s25")


def test_the_shipped_models_are_listed():
    assert set(SHIPPED) <= set(pretrained.names())


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_loads_and_denoises_a_photograph(name):
    with jax.enable_x64(False):  # the models were trained, and are loaded, in float32
        _denoise(name)


def _denoise(name):
    card = pretrained.card(name)
    assert name in card and "Set12" in card and "jaxinv train" in card
    config, model = pretrained.load(name, image_shape=(64, 64))
    assert config.make_task().name == "denoise" and model.image_shape == (64, 64)
    x = jnp.asarray(center_crops(load_images("test")[:1], 64))
    y = x + (25 / 255) * jax.random.normal(jax.random.PRNGKey(0), x.shape, x.dtype)
    sol = reconstruct(model, config.make_task(), y, solver=config.forward_solver())
    assert bool(np.all(np.asarray(sol.stats.converged)))
    assert float(psnr(sol.value, x)[0]) > float(psnr(y, x)[0]) + 5.0
