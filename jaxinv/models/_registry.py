"""The registry of architectures by name."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jaxtyping import PRNGKeyArray

from ..tasks import Task
from ._base import AbstractModel, Architecture
from .conv import Conv2x11, Conv30x3
from .dense import Dense
from .foe import FoE
from .spline import Spline
from .tv import TV

#: Architecture name -> its options class.
ARCHITECTURES: dict[str, type[Architecture]] = {
    "foe": FoE,
    "conv2x11": Conv2x11,
    "conv30x3": Conv30x3,
    "dense": Dense,
    "tv": TV,
    "spline": Spline,
}


def get_model(name: str, **options: Any) -> Architecture:
    """The architecture ``name`` with hyperparameters ``options`` (see each class).

    Unknown names or options raise ``ValueError`` listing the choices.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    cls = ARCHITECTURES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    extra = set(options) - known
    if extra:
        raise ValueError(f"{name}: unknown options {sorted(extra)}; choose from {sorted(known)}")
    return cls(**options)


def build_model(
    name: str,
    key: PRNGKeyArray | int,
    task: Task,
    image_shape: tuple[int, int],
    *,
    tied: bool = True,
    **options: Any,
) -> AbstractModel:
    """Shorthand for ``get_model(name, **options).build(key, task, image_shape, tied)``."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    return get_model(name, **options).build(key, task, tuple(image_shape), tied)
