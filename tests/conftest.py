"""Test configuration: float64 everywhere so gradients can be compared tightly, and no
persistent compilation cache (the command line would otherwise write to ~/.cache)."""

import os

import jax

os.environ.setdefault("JAXINV_COMPILATION_CACHE", "off")
jax.config.update("jax_enable_x64", True)
