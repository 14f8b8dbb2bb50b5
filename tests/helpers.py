"""Settings the tests share: the tiny models and the short training configurations that many
test modules (and the worker scripts they start) train, written once.

``patch_config`` is bilevel training of a tiny fields of experts on natural 16×16 patches;
``digits_config`` is the paper's dense model denoising MNIST digits. Both take flat setting
names (``TrainConfig.of``) that replace the defaults.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxinv.train import TrainConfig

# Two 3x3 experts with a large potential scale: well conditioned, so solves take few iterations.
TINY_FOE = {"num_filters": 2, "size": 3, "init_scale": 10.0}
# No validation or checkpoint during training: tests that want them say so.
QUIET = {"eval_every": 0, "checkpoint_every": 0}


def solves(tol: float, max_iter: int) -> dict[str, Any]:
    """The forward and the adjoint solve with one tolerance and one iteration cap."""
    return {"tol": tol, "max_iter": max_iter, "adjoint_tol": tol, "adjoint_max_iter": max_iter}


def constant_lr(lr: float) -> dict[str, Any]:
    """A constant learning rate (no decay over the few steps a test trains)."""
    return {"lr": lr, "lr_final": lr, "schedule": "constant"}


PATCH_DEFAULTS: dict[str, Any] = {
    "arch": "foe",
    "arch_options": TINY_FOE,
    "patch_size": 16,
    "num_train": 4,
    "num_val": 2,
    "batch_size": 4,
    "steps": 6,
    **constant_lr(0.01),
    **solves(1e-8, 200),
    "task_options": {"sigma": 0.1},
    "max_image_size": 64,
    **QUIET,
}

DIGITS_DEFAULTS: dict[str, Any] = {
    "arch": "dense",
    "dataset": "mnist",
    "task": "denoise",
    "arch_options": {"tau": 0.5},
    "num_train": 8,
    "num_val": 4,
    "batch_size": 4,
    "steps": 2,
    "lr": 2e-3,
    **solves(1e-6, 100),
    **QUIET,
}


def patch_config(**changes: Any) -> TrainConfig:
    """Bilevel training of ``TINY_FOE`` on natural 16×16 patches at σ = 0.1, six steps of a
    constant lr 0.01, solves to 1e-8; ``changes`` replace any setting."""
    return TrainConfig.of(**{**PATCH_DEFAULTS, **changes})


def digits_config(**changes: Any) -> TrainConfig:
    """The paper's dense model (τ = 0.5) denoising 8 MNIST digits for two steps, solves to
    1e-6; ``changes`` replace any setting."""
    return TrainConfig.of(**{**DIGITS_DEFAULTS, **changes})


def dense_params(rng: np.random.Generator, d: int, m: int, gamma: float) -> dict[str, Any]:
    """Random parameters of a dense regulariser with ``m`` units on ``d`` pixels, ``W`` scaled
    by ``1/√d`` so that its norm is of order one."""
    w = jnp.asarray(rng.normal(size=(m, d)) / np.sqrt(d))
    return {"W": w, "b": jnp.zeros(m), "gamma": jnp.asarray(gamma)}
