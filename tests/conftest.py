"""Test configuration: float64 everywhere so gradients can be compared tightly."""

import jax

jax.config.update("jax_enable_x64", True)
