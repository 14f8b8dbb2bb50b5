"""Inverse problems as small value objects: which forward operator, how much noise.

A :class:`Task` is a frozen, hashable description (JSON round-trip through :meth:`Task.to_dict` /
:meth:`Task.from_dict`) that builds its forward operator for a given image shape and degrades
clean images, ``y = A x + σ n`` with seeded Gaussian noise:

- ``"denoise"``: ``A = I``;
- ``"inpaint"``: ``A`` a 0/1 mask — ``mask="rows"`` (the first ``fraction`` of the rows missing,
  the paper's MNIST setting), ``"pixels"`` (each pixel missing with probability ``fraction``, one
  fixed mask per image shape drawn from ``mask_seed``) or ``"block"`` (a centred block covering
  ``fraction`` of the area);
- ``"deblur"``: ``A`` a convolution — ``kernel="motion5"`` (the paper's 5×5 diagonal motion
  blur), ``"motion11"`` or ``"gaussian"`` (standard deviation ``blur_sigma``, size
  ``2⌈3σ⌉ + 1``), with a ``"circular"`` or ``"zero"`` boundary.

``sigma`` is the noise standard deviation in the data's own units (the [0, 1] scale for natural
images, [−1, 1] for the paper's MNIST); strings such as ``"25/255"`` are accepted by
:func:`make_task`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .data import DATASETS as _DATASET_INFO
from .data import parse_sigma
from .operators import (
    AbstractOperator,
    Blur,
    Identity,
    Mask,
    central_block_mask,
    gaussian_kernel,
    motion_kernel,
    random_pixel_mask,
    row_mask,
)

TASKS = ("denoise", "inpaint", "deblur")
MASKS = ("rows", "pixels", "block")
KERNELS = ("motion5", "motion11", "gaussian")
BOUNDARIES = ("circular", "zero")
DATASETS = tuple(_DATASET_INFO)

# Fraction of the image that is *missing*, per mask kind (paper: a third of the rows on MNIST,
# a quarter-area central block on CelebA; half the pixels for random-pixel inpainting).
_DEFAULT_FRACTION = {"rows": 1 / 3, "pixels": 0.5, "block": 0.25}

# Defaults per dataset: natural images live on [0, 1], the paper's MNIST on [-1, 1].
_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "natural": {
        "denoise": {"sigma": 25 / 255},
        "inpaint": {"sigma": 0.01, "mask": "pixels"},
        "deblur": {"sigma": 0.01, "kernel": "motion5", "boundary": "circular"},
    },
    "mnist": {
        "denoise": {"sigma": 0.1},
        "inpaint": {"sigma": 0.1, "mask": "rows"},
        "deblur": {"sigma": 0.1, "kernel": "motion5", "boundary": "circular"},
    },
}


def _choices(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(choices)}")


@dataclasses.dataclass(frozen=True)
class Task:
    """An inverse problem: forward operator and noise level (see the module docstring).

    Attributes:
        name: ``"denoise"``, ``"inpaint"`` or ``"deblur"``.
        sigma: noise standard deviation (data units), ``0 <= sigma <= 1``.
        mask: inpainting mask kind, ``"rows"``, ``"pixels"`` or ``"block"``.
        fraction: missing fraction for inpainting (``None``: 1/3 rows, 1/2 pixels, 1/4 block).
        mask_seed: seed of the random-pixel mask (one fixed mask per image shape).
        kernel: blur kernel, ``"motion5"``, ``"motion11"`` or ``"gaussian"``.
        blur_sigma: standard deviation of the Gaussian kernel, in pixels.
        boundary: blur boundary, ``"circular"`` or ``"zero"``.

    Options of other tasks are kept but ignored (so a task can be re-targeted with
    ``dataclasses.replace``).
    """

    name: str
    sigma: float
    mask: str = "rows"
    fraction: float | None = None
    mask_seed: int = 0
    kernel: str = "motion5"
    blur_sigma: float = 1.5
    boundary: str = "circular"

    def __post_init__(self) -> None:
        _choices("task", self.name, TASKS)
        object.__setattr__(self, "sigma", parse_sigma(self.sigma))
        _choices("mask", self.mask, MASKS)
        _choices("kernel", self.kernel, KERNELS)
        _choices("boundary", self.boundary, BOUNDARIES)
        if self.fraction is not None and not 0.0 < float(self.fraction) < 1.0:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {self.fraction}")
        if not self.blur_sigma > 0:
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma}")

    @property
    def missing_fraction(self) -> float:
        """The inpainting mask's missing fraction (the default for the mask kind if unset)."""
        return _DEFAULT_FRACTION[self.mask] if self.fraction is None else float(self.fraction)

    def blur_kernel(self) -> Float[Array, "k k"]:
        """The deblurring kernel (normalised to sum 1)."""
        if self.kernel == "motion5":
            return motion_kernel(5, "diagonal")
        if self.kernel == "motion11":
            return motion_kernel(11, "diagonal")
        size = 2 * math.ceil(3 * self.blur_sigma) + 1
        return gaussian_kernel(size, self.blur_sigma)

    def operator(self, image_shape: tuple[int, int]) -> AbstractOperator:
        """The forward operator ``A`` for images of shape ``image_shape = (H, W)``.

        Deterministic: a random-pixel mask is drawn from ``mask_seed``, so the same task and
        shape always give the same operator.
        """
        shape = _check_shape(image_shape)
        if self.name == "denoise":
            return Identity()
        if self.name == "inpaint":
            f = self.missing_fraction
            if self.mask == "rows":
                return Mask(row_mask(shape, f))
            if self.mask == "block":
                return Mask(central_block_mask(shape, f))
            return Mask(random_pixel_mask(jax.random.PRNGKey(self.mask_seed), shape, 1.0 - f))
        return Blur(self.blur_kernel(), self.boundary)

    def operator_norm_bound(self) -> float:
        """An upper bound on ``‖A‖₂``: 1 for the identity, masks (projections) and blurs with
        non-negative kernels summing to 1 (every kernel here), whatever the boundary."""
        return 1.0

    def degrade(
        self, x: Float[Array, "*batch H W"], key: PRNGKeyArray | int
    ) -> Float[Array, "*batch H W"]:
        """Measurements ``y = A x + σ n`` of clean images ``x`` (any leading batch axes).

        ``n`` is standard normal noise drawn from ``key`` (a ``jax.random`` key or an int seed):
        the same key gives the same ``y``. Integer input is promoted to the default float type.
        """
        x = jnp.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"degrade: x must have shape (..., H, W), got {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        if isinstance(key, int):
            key = jax.random.PRNGKey(key)
        ax = self.operator((x.shape[-2], x.shape[-1]))(x)
        return ax + jnp.asarray(self.sigma, ax.dtype) * jax.random.normal(key, ax.shape, ax.dtype)

    def degraded_view(self, y: Float[ArrayLike, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """The measurement as an image to look at: ``y``, or for inpainting ``Aᵀy`` (the
        observed pixels in place, the missing ones zero)."""
        y = jnp.asarray(y)
        if self.name == "inpaint":
            return self.operator((y.shape[-2], y.shape[-1])).adjoint(y)
        return y

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(
                f"Task.from_dict: unknown fields {sorted(extra)}; known {sorted(known)}"
            )
        return cls(**d)

    def describe(self) -> str:
        """A short human-readable label, e.g. ``"deblur (motion5, circular), σ=0.01"``."""
        if self.name == "inpaint":
            detail = f" ({self.mask}, {self.missing_fraction:.0%} missing)"
        elif self.name == "deblur":
            detail = f" ({self.kernel}, {self.boundary})"
        else:
            detail = ""
        return f"{self.name}{detail}, σ={self.sigma:.4g}"


def make_task(name: str, *, dataset: str = "natural", **options: Any) -> Task:
    """A :class:`Task` with the paper's defaults for ``dataset``, overridden by ``options``.

    ``dataset="natural"`` (images on [0, 1]): denoise σ = 25/255; inpaint random pixels (half
    missing), σ = 0.01; deblur 5×5 diagonal motion blur, circular boundary, σ = 0.01.
    ``dataset="mnist"`` (the paper's [−1, 1] digits): σ = 0.1 for every task; inpaint the first
    third of the rows; deblur 5×5 diagonal motion blur, circular boundary.

    ``options`` are :class:`Task` fields (``sigma`` may be a string such as ``"25/255"``).
    Unknown task names, datasets or options raise ``ValueError`` listing the choices.
    """
    _choices("task", name, TASKS)
    _choices("dataset", dataset, DATASETS)
    known = {f.name for f in dataclasses.fields(Task)} - {"name"}
    extra = set(options) - known
    if extra:
        raise ValueError(f"make_task: unknown options {sorted(extra)}; choose from {sorted(known)}")
    fields = dict(_DEFAULTS[dataset][name])
    fields.update(options)
    fields["sigma"] = parse_sigma(fields["sigma"])  # a Task's sigma is a number
    return Task(name=name, **fields)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W) with positive sizes, got {shape}")
    return shape
