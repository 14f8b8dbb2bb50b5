"""Additive white Gaussian noise with an explicit, checked noise level."""

from __future__ import annotations

import math
from numbers import Real

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

_HINT = "give sigma on the [0,1] scale or as '25/255'"


def parse_sigma(sigma: float | np.floating | np.integer | str) -> float:
    """Return a noise standard deviation on the [0, 1] scale as a float.

    Accepted: a number in [0, 1] (``0.1``), or a string holding one (``"0.1"``) or a fraction
    (``"25/255"`` -> ``25/255``). A number above 1 is rejected rather than guessed to mean grey
    levels out of 255: ``ValueError`` ("give sigma on the [0,1] scale or as '25/255'").
    For data on [-1, 1] (MNIST as in the paper) sigma is in the data's own units.
    """
    if isinstance(sigma, str):
        text = sigma.strip()
        try:
            if "/" in text:
                num, den = text.split("/")
                value = float(num) / float(den)
            else:
                value = float(text)
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(f"cannot parse sigma {sigma!r}; {_HINT}") from err
    elif isinstance(sigma, Real) and not isinstance(sigma, bool):
        value = float(sigma)
    else:
        raise TypeError(f"sigma must be a number or a string, got {type(sigma).__name__}")
    if not math.isfinite(value) or value < 0.0 or value > 1.0:
        raise ValueError(f"sigma {sigma!r} is not in [0, 1]; {_HINT}")
    return value


def add_gaussian_noise(
    x: ArrayLike, sigma: float | str | ArrayLike, key: jax.Array | int
) -> jax.Array:
    """Return ``x + sigma * n`` with ``n`` standard normal noise drawn from ``key``.

    ``key`` is a ``jax.random`` key or an int seed; the same key gives the same noise. A Python
    number or string ``sigma`` goes through :func:`parse_sigma`; an array ``sigma`` (e.g. per
    image, broadcasting against ``x``, or traced under ``jit``) is used as given. The result is
    not clipped. Integer ``x`` is promoted to JAX's default float type.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if isinstance(sigma, (str, Real)):
        sigma = parse_sigma(sigma)
    if isinstance(key, int):
        key = jax.random.key(key)
    noise = jax.random.normal(key, x.shape, dtype=x.dtype)
    return x + jnp.asarray(sigma, dtype=x.dtype) * noise
