"""Restoring the user's own degraded images with a trained model: files in, files out.

::

    jaxinv restore MODEL FILE... --out DIR [--sigma S] [--kernel K | --mask M] [--raw]

``MODEL`` is a run directory written by ``jaxinv train`` or the name of a pretrained model
(:mod:`jaxinv.pretrained`). Each image is the measurement ``y`` of ``y = A x + noise``; its
restoration is the fixed point of the model's map for the energy

    E(x) = λ/2 ‖A x − y‖² + R_θ(x)

(the learned regularizer ``R_θ``, or its DEQ counterpart), computed at the image's own size.

**The operator.** Without options, ``A`` and σ are those the model was trained for. A
regularizer trained for one task also serves another data term: ``kernel`` makes it deblurring
with that kernel (the boundary of the model's task: circular unless it was trained for
zero-boundary deblurring), ``mask`` inpainting with that mask (nonzero = observed); the model is
built for the new operator and loaded with the trained parameters, whose derived leaves (the
step τ, operator norms) are then recomputed. ``sigma`` is the noise level of the data term. For
Gaussian noise the likelihood weight is ``1/σ²``, so the λ learned at the training level
``σ_t`` is used at σ as ``λ (σ_t / σ)²`` (both σ floored at :data:`SIGMA_FLOOR`;
``keep_lambda=True`` keeps λ as trained). The results are best at the training σ.

**Values.** Files are read by :func:`jaxinv.data.load_image_values`: 8-bit data divided by
255, 16-bit by 65535, float TIFF and ``.npy`` taken as they are (no rescaling, no clipping).
Models trained on MNIST work on [−1, 1]: the image is mapped there (``2v − 1``) and back, and σ
is always given on the files' [0, 1] scale.

**Colour.** The models are grayscale: each channel of a colour image is restored separately
with the same operator and written back as a colour image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from . import pretrained
from .data import load_image_values, parse_sigma
from .models import AbstractModel, as_dict, from_dict, refreshed
from .operators import AbstractOperator, Blur, Identity, Mask, gaussian_kernel, motion_kernel
from .runs import CHECKPOINT, load_run
from .tasks import Task
from .train import CheckpointError, TrainConfig, read_header, reconstruct

#: σ below this (on the [0, 1] scale) counts as this in the λ rescaling ``(σ_t / σ)²``.
SIGMA_FLOOR = 0.005
_KERNEL_HELP = "give --kernel FILE (an image or .npy), motion:N[:DIRECTION] or gaussian:S"


class RestoreError(ValueError):
    """Bad input to :func:`restore_image` or :func:`restore_files` (raised before solving)."""


# ----------------------------------------------------------------------------------------------
# Operators given by the user
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class GivenOperatorTask(Task):
    """A :class:`jaxinv.tasks.Task` whose operator is given as an array: a blur kernel
    (``name="deblur"``, normalised to sum 1) or an observation mask (``name="inpaint"``, True =
    observed); ``name="denoise"`` is the identity. ``label`` says where the array came from."""

    given: np.ndarray | None = None
    label: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.name != "denoise" and self.given is None:
            raise ValueError(f"GivenOperatorTask: {self.name} needs the given kernel or mask")

    def operator(self, image_shape: tuple[int, int]) -> AbstractOperator:
        shape = tuple(int(s) for s in image_shape)
        if self.name == "denoise":
            return Identity()
        assert self.given is not None
        if self.name == "inpaint":
            if self.given.shape != shape:
                raise ValueError(
                    f"the mask {self.label} is {_size(self.given.shape)} but the image is "
                    f"{_size(shape)}; give a mask of the image's size"
                )
            return Mask(self.given)
        return Blur(jnp.asarray(self.given), self.boundary)

    def operator_norm_bound(self) -> float:
        """``‖k‖₁`` for a blur (= 1 for a non-negative kernel), 1 for masks and the identity."""
        if self.name == "deblur" and self.given is not None:
            return float(np.sum(np.abs(self.given)))
        return 1.0

    def describe(self) -> str:
        if self.name == "inpaint":
            assert self.given is not None
            missing = 1.0 - float(np.mean(self.given))
            detail = f" (mask {self.label}, {missing:.0%} missing)"
        elif self.name == "deblur":
            assert self.given is not None
            detail = f" (kernel {self.label}, {_size(self.given.shape)}, {self.boundary})"
        else:
            detail = ""
        return f"{self.name}{detail}, σ={self.sigma:.4g}"

    def digest(self) -> str:
        """A short hash of the operator (for caching built models)."""
        h = hashlib.sha1(f"{self.name}|{self.boundary}|{self.sigma!r}".encode())
        if self.given is not None:
            h.update(np.ascontiguousarray(self.given).tobytes())
            h.update(str(self.given.shape).encode())
        return h.hexdigest()[:16]


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def kernel_from_array(kernel: ArrayLike, *, name: str = "kernel") -> np.ndarray:
    """A blur kernel from an array: 2-D (or a colour image with equal channels), finite, odd
    sizes, positive sum; returned as float64 normalised to sum 1."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 3 and k.shape[-1] in (3, 4):
        k = _single_channel(k[..., :3], name, "kernel")
    if k.ndim != 2:
        raise RestoreError(f"{name} has shape {k.shape}; a blur kernel must be 2-D (kh, kw)")
    if not np.all(np.isfinite(k)):
        raise RestoreError(f"{name} contains NaN or infinite values")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise RestoreError(
            f"{name} is {_size(k.shape)}; a blur kernel needs odd sizes so that it has a centre "
            "(pad it with a zero row/column)"
        )
    total = float(k.sum())
    if not total > 0:
        raise RestoreError(
            f"{name} sums to {total:g}; a blur kernel needs a positive sum (it is normalised "
            "to sum 1)"
        )
    return k / total


def parse_kernel(spec: str | os.PathLike[str] | ArrayLike) -> tuple[np.ndarray, str]:
    """A blur kernel and its label from ``--kernel``: ``motion:N[:DIRECTION]`` (length ``N``,
    odd; ``diagonal`` (default), ``antidiagonal``, ``horizontal``, ``vertical``; see
    :func:`jaxinv.operators.motion_kernel`), ``gaussian:S`` (standard deviation ``S`` pixels,
    size ``2⌈3S⌉ + 1``, as the ``gaussian`` task kernel), a file (an image or ``.npy``) or an
    array. The kernel is normalised to sum 1 (:func:`kernel_from_array`)."""
    if not isinstance(spec, (str, os.PathLike)):
        return kernel_from_array(spec), "given"
    text = os.fspath(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind in ("motion", "gaussian"):
        try:
            if kind == "motion":
                length, _, direction = rest.partition(":")
                k = motion_kernel(int(length), direction or "diagonal")
            else:
                s = float(rest)
                if not (math.isfinite(s) and s > 0):
                    raise ValueError(f"the standard deviation must be positive, got {rest!r}")
                k = gaussian_kernel(2 * math.ceil(3 * s) + 1, s)
        except ValueError as err:
            raise RestoreError(f"--kernel {text!r}: {err}; {_KERNEL_HELP}") from None
        return kernel_from_array(np.asarray(k), name=f"kernel {text}"), text
    path = Path(text)
    if not path.exists():
        raise RestoreError(f"--kernel {text!r}: no such file; {_KERNEL_HELP}")
    return kernel_from_array(_read(path, "kernel"), name=f"kernel {text!r}"), path.name


def _single_channel(a: np.ndarray, name: str, what: str) -> np.ndarray:
    if not all(np.array_equal(a[..., 0], a[..., c]) for c in range(1, a.shape[-1])):
        raise RestoreError(f"{name} has {a.shape[-1]} different channels; a {what} is 2-D")
    return a[..., 0]


def mask_from_array(mask: ArrayLike, *, name: str = "mask") -> np.ndarray:
    """An observation mask (bool, True = observed) from an array: nonzero = observed; a colour
    image must have equal channels; at least one pixel must be observed."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] in (3, 4):
        m = _single_channel(m[..., :3], name, "mask")
    if m.ndim != 2:
        raise RestoreError(f"{name} has shape {m.shape}; a mask must be 2-D (H, W)")
    if np.issubdtype(m.dtype, np.floating) and not np.all(np.isfinite(m)):
        raise RestoreError(f"{name} contains NaN or infinite values")
    m = m != 0
    if not m.any():
        raise RestoreError(f"{name} observes no pixel (all zero); nonzero marks an observed pixel")
    return m


def load_mask(spec: str | os.PathLike[str] | ArrayLike) -> tuple[np.ndarray, str]:
    """An observation mask and its label from a file (an image or ``.npy``) or an array."""
    if not isinstance(spec, (str, os.PathLike)):
        return mask_from_array(spec), "given"
    path = Path(spec)
    if not path.exists():
        raise RestoreError(f"--mask {str(spec)!r}: no such file")
    return mask_from_array(_read(path, "mask"), name=f"mask {str(spec)!r}"), path.name


def _read(path: Path, what: str) -> np.ndarray:
    try:
        return load_image_values(path)
    except (OSError, ValueError) as err:
        raise RestoreError(f"{what}: {err}") from None


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Model:
    """A trained model ready to restore images of any size (see :func:`open_model`).

    Attributes:
        run: its run directory.
        label: how it was named (a path or a pretrained name).
        config: its :class:`jaxinv.train.TrainConfig`.
        step, finished: the checkpoint's step and whether training finished.
        x64: whether it was trained in float64.
    """

    run: Path
    label: str
    config: Any
    step: int
    finished: bool
    x64: bool
    _built: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def task(self) -> Task:
        """The task it was trained for."""
        return self.config.make_task()

    @property
    def value_range(self) -> tuple[float, float]:
        """``(lo, width)``: the model's data live on ``[lo, lo + width]`` (MNIST: [−1, 1])."""
        data = self.config.dataset_info
        return data.lo, data.data_range

    def describe(self) -> str:
        c = self.config
        sigma = self.task.sigma / self.value_range[1]
        state = "" if self.finished else f", unfinished at step {self.step} of {c.steps}"
        return (
            f"{self.label} ({c.model} / {c.arch}, trained for {c.task} at σ={sigma:.4g} on "
            f"{c.data.dataset} {_size(c.image_shape)} images{state})"
        )

    def match_precision(self) -> None:
        """Switch JAX to the floating-point precision the model was trained in."""
        if bool(self.x64) != bool(jax.config.read("jax_enable_x64")):
            jax.config.update("jax_enable_x64", bool(self.x64))

    def built(self, plan: Plan, shape: tuple[int, int]) -> AbstractModel:
        """The model instance and parameters for ``plan`` on ``shape`` images (cached, so
        images of one size share one compilation)."""
        hw = (int(shape[0]), int(shape[1]))
        key = (plan.key, hw, str(jnp.result_type(float)))
        if key not in self._built:
            self._built[key] = _build(self, plan.task, hw, plan.lam_scale, plan.retarget)
        return self._built[key]


def _build(
    model: Model, task: Task, shape: tuple[int, int], lam_scale: float, retarget: bool
) -> AbstractModel:
    """The trained model for ``task`` on ``shape`` images.

    The one place that knows what :func:`jaxinv.train.load_run` returns and how a model is
    built: for the training task and λ, ``load_run`` for ``shape``; otherwise the architecture
    is built for ``task`` and ``shape``, given the trained parameters with λ multiplied by
    ``lam_scale``, and its ``refresh`` recomputes the derived leaves (τ, operator norms).
    """

    if not retarget and lam_scale == 1.0:
        return load_run(model.run, image_shape=shape)[1]
    config, trained = load_run(model.run)
    new = config.make_arch().build(jax.random.PRNGKey(config.seed), task, shape, config.tied)
    params, fresh = as_dict(trained), as_dict(new)
    fits = jax.tree.structure(fresh) == jax.tree.structure(params) and all(
        np.shape(a) == np.shape(b)
        for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(params), strict=True)
    )
    if not fits:
        raise RestoreError(
            f"the {config.arch!r} parameters trained for {config.task} on "
            f"{_size(config.image_shape)} images do not fit a model for {task.name} on "
            f"{_size(shape)} images; restore with the model's own task and size"
        )
    params["lam"] = params["lam"] * jnp.asarray(lam_scale, params["lam"].dtype)
    return refreshed(from_dict(new, params))


def open_model(model: str | os.PathLike[str] | Model) -> Model:
    """A :class:`Model` from a run directory or a pretrained name (an existing directory wins).

    Reads and verifies the checkpoint's header only; nothing is compiled. Raises
    :class:`RestoreError` if ``model`` is neither.
    """

    if isinstance(model, Model):
        return model
    text = os.fspath(model)
    path = Path(text)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise RestoreError(
                f"MODEL {text!r} is not a jaxinv run directory (no {CHECKPOINT}); give the --out "
                "of 'jaxinv train' or a pretrained name"
            )
    elif pretrained.is_name(text):
        path = pretrained.path(text)
    else:
        available = ", ".join(pretrained.names()) or "none installed"
        what = "a file, not a run directory" if path.exists() else "no such directory"
        raise RestoreError(
            f"MODEL {text!r} is neither a run directory ({what}) nor a pretrained model "
            f"(available: {available})"
        )
    header, _ = read_header(path / CHECKPOINT)  # CheckpointError if corrupt
    try:
        config = TrainConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path / CHECKPOINT} holds a configuration this version cannot read ({err})"
        ) from None
    return Model(
        run=path,
        label=text,
        config=config,
        step=int(header.get("step", 0)),
        finished=bool(header.get("finished")),
        x64=bool(header.get("x64", False)),
    )


# ----------------------------------------------------------------------------------------------
# What to solve: the operator and the noise level
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """The data term of a restoration (see :func:`make_plan`).

    Attributes:
        task: the task on the model's value scale (a :class:`GivenOperatorTask` for a given
            kernel or mask).
        sigma: the noise level on the files' [0, 1] scale.
        lam_scale: the factor applied to the trained λ.
        retarget: whether the operator differs from the training task's.
        notes: what differs from training, in words.
        solver: the forward fixed-point solver.
    """

    task: Task
    sigma: float
    lam_scale: float
    retarget: bool
    notes: tuple[str, ...]
    solver: Any

    @property
    def key(self) -> str:
        task = self.task
        if isinstance(task, GivenOperatorTask):
            op = task.digest()
        else:
            op = repr(sorted(task.to_dict().items()))
        return f"{op}|{self.lam_scale!r}|{self.retarget}"

    def describe(self, model: Model) -> str:
        """The operator and σ, on the files' scale."""
        text = self.task.describe()
        width = model.value_range[1]
        if width != 1.0:  # the task speaks the model's scale
            text = text.rsplit(", σ=", 1)[0] + f", σ={self.sigma:.4g} ({width:g}σ on [-1, 1])"
        return text


def make_plan(
    model: Model,
    *,
    sigma: float | str | None = None,
    kernel: str | os.PathLike[str] | ArrayLike | None = None,
    mask: str | os.PathLike[str] | ArrayLike | None = None,
    keep_lambda: bool = False,
    max_iter: int | None = None,
    tol: float | None = None,
) -> Plan:
    """The data term for ``model``: its own task, or deblurring with ``kernel``, or inpainting
    with ``mask`` (see :func:`parse_kernel`, :func:`load_mask`), at noise level ``sigma``
    (default: the training σ; accepts ``0.1`` or ``"25/255"``). ``max_iter``/``tol`` override
    the model's forward solver. Raises :class:`RestoreError` for bad options."""
    if kernel is not None and mask is not None:
        raise RestoreError(
            "give --kernel (deblurring) or --mask (inpainting), not both: no task combines a "
            "blur and a mask"
        )
    lo, width = model.value_range
    trained = model.task
    sigma_t = trained.sigma / width
    if sigma is None:
        s = sigma_t
    else:
        try:
            s = parse_sigma(sigma)
        except (TypeError, ValueError) as err:
            raise RestoreError(f"--sigma: {err}") from None
    notes: list[str] = []
    floor = SIGMA_FLOOR
    lam_scale = 1.0
    if not math.isclose(s, sigma_t, rel_tol=1e-9, abs_tol=1e-12):
        ratio = (max(sigma_t, floor) / max(s, floor)) ** 2
        if keep_lambda:
            notes.append(
                f"σ={s:.4g} differs from the training σ={sigma_t:.4g}; the data weight λ was "
                "learned for that σ and is kept as trained (--keep-lambda)"
            )
        else:
            lam_scale = ratio
            notes.append(
                f"σ={s:.4g} differs from the training σ={sigma_t:.4g}, for which the data weight "
                f"λ was learned; λ is scaled by (σ_train/σ)² = {ratio:.4g} (Gaussian likelihood, "
                f"σ floored at {floor:g}); results are best at the training σ (--keep-lambda "
                "keeps λ)"
            )
    sigma_model = s * width
    try:
        if kernel is not None:
            k, label = parse_kernel(kernel)
            task: Task = GivenOperatorTask(
                name="deblur", sigma=sigma_model, boundary=trained.boundary, given=k, label=label
            )
        elif mask is not None:
            m, label = load_mask(mask)
            task = GivenOperatorTask(name="inpaint", sigma=sigma_model, given=m, label=label)
        else:
            task = dataclasses.replace(trained, sigma=sigma_model)
    except RestoreError:
        raise
    except ValueError as err:
        raise RestoreError(str(err)) from None
    retarget = kernel is not None or mask is not None
    if retarget and task.name != trained.name:
        notes.append(
            f"the regularizer was trained for {trained.name}; here it is used with the "
            f"{task.name} data term"
        )
    elif retarget:
        notes.append(f"the {task.name} operator is the one given, not the training task's")
    changes = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
    try:
        solver = dataclasses.replace(model.config.forward, **changes).make()
    except (TypeError, ValueError) as err:
        raise RestoreError(str(err)) from None
    return Plan(task, s, lam_scale, retarget, tuple(notes), solver)


# ----------------------------------------------------------------------------------------------
# Restoring
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Restored:
    """A restored image and how its solve went.

    Attributes:
        image: the restoration, the input's shape (``(H, W)`` or ``(H, W, C)``), float32 on the
            files' scale, not clipped.
        iterations: forward iterations (the most over the channels).
        residual: final relative residual (the largest over the channels).
        converged: whether every channel's solve converged.
        operator: the operator and σ used, in words.
    """

    image: np.ndarray
    iterations: int
    residual: float
    converged: bool
    operator: str


def check_image(model: Model, plan: Plan, image: ArrayLike, name: str = "image") -> np.ndarray:
    """``image`` as a float array ``(H, W)`` or ``(H, W, C)``, or :class:`RestoreError` if
    the model cannot restore it with ``plan`` (shape, non-finite values, mask size, kernel
    size, a fixed-size architecture)."""
    a = np.asarray(image)
    if not np.issubdtype(a.dtype, np.floating):
        raise RestoreError(
            f"{name} has dtype {a.dtype}; give float values (read files with "
            "jaxinv.data.load_image_values)"
        )
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise RestoreError(f"{name} has shape {a.shape}; expected (H, W) or (H, W, C)")
    if not np.all(np.isfinite(a)):
        raise RestoreError(f"{name} contains NaN or infinite values")
    shape = a.shape[:2]
    task = plan.task
    if isinstance(task, GivenOperatorTask) and task.given is not None:
        if task.name == "inpaint" and task.given.shape != shape:
            raise RestoreError(
                f"{name} is {_size(shape)} but the mask {task.label} is "
                f"{_size(task.given.shape)}; give a mask of the image's size"
            )
        if task.name == "deblur" and max(task.given.shape) > min(shape):
            raise RestoreError(
                f"{name} is {_size(shape)}, smaller than the {_size(task.given.shape)} kernel"
            )
    if model.config.arch == "dense" and tuple(shape) != model.config.image_shape:
        raise RestoreError(
            f"{name} is {_size(shape)}, but the dense model restores only "
            f"{_size(model.config.image_shape)} images (its size is fixed)"
        )
    return a


def _solve(model: Model, plan: Plan, image: np.ndarray) -> Restored:

    shape = tuple(image.shape[:2])
    built = model.built(plan, shape)
    lo, width = model.value_range
    dtype = jax.tree.leaves(built.params())[0].dtype
    channels = image[..., None] if image.ndim == 2 else image
    op = plan.task.operator(shape)
    offset = lo * op(jnp.ones(shape, dtype)) if lo else 0.0  # A(lo + width x) = lo A1 + width Ax
    out, iters, resid, conv = [], [], [], []
    for c in range(channels.shape[-1]):
        y = jnp.asarray(channels[..., c], dtype) * width + offset
        sol = reconstruct(built, plan.task, y, solver=plan.solver)
        out.append(np.asarray((sol.value - lo) / width, np.float32))
        iters.append(int(sol.stats.iterations))
        resid.append(float(sol.stats.residual))
        conv.append(bool(sol.stats.converged))
    value = out[0] if image.ndim == 2 else np.stack(out, axis=-1)
    return Restored(value, max(iters), max(resid), all(conv), plan.describe(model))


def restore_image(
    model_or_run: str | os.PathLike[str] | Model,
    image: Float[ArrayLike, "H W"] | Float[ArrayLike, "H W C"],
    *,
    sigma: float | str | None = None,
    kernel: str | os.PathLike[str] | ArrayLike | None = None,
    mask: str | os.PathLike[str] | ArrayLike | None = None,
    keep_lambda: bool = False,
    max_iter: int | None = None,
    tol: float | None = None,
) -> Restored:
    """Restore one degraded image (values on [0, 1] as stored, e.g. from
    :func:`jaxinv.data.load_image_values`; colour channels restored separately).

    Args:
        model_or_run: a run directory, a pretrained name or a :class:`Model`
            (:func:`open_model`; reuse one to reuse its compiled solves).
        image: the measurement ``y``, ``(H, W)`` or ``(H, W, C)``.
        sigma, kernel, mask, keep_lambda, max_iter, tol: the data term and the solver, see
            :func:`make_plan` (default: the model's own task and σ).

    Returns:
        :class:`Restored`. Raises :class:`RestoreError` for bad input (before compiling).
    """
    model = open_model(model_or_run)
    plan = make_plan(
        model,
        sigma=sigma,
        kernel=kernel,
        mask=mask,
        keep_lambda=keep_lambda,
        max_iter=max_iter,
        tol=tol,
    )
    return _solve(model, plan, check_image(model, plan, image))


def to_png_array(image: np.ndarray) -> np.ndarray:
    """8-bit pixels of an image on [0, 1]: clipped, ``round(255 v)``."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def output_paths(
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    raw: bool = False,
    overwrite: bool = False,
) -> list[list[Path]]:
    """``[DIR/<stem>.png (, DIR/<stem>.npy)]`` per input, or :class:`RestoreError` if two
    inputs share a stem, an output exists (without ``overwrite``) or an output would replace
    an input (never allowed)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RestoreError(f"--out {str(out)!r} is a file; give a directory")
    seen: dict[str, str] = {}
    inputs = {Path(f).resolve() for f in files}
    paths = []
    for f in files:
        stem = Path(f).stem
        if stem in seen:
            raise RestoreError(
                f"{seen[stem]!r} and {os.fspath(f)!r} would both be written to "
                f"{str(out / (stem + '.png'))!r}; rename one of them or restore them into "
                "different --out directories"
            )
        seen[stem] = os.fspath(f)
        mine = [out / f"{stem}.png"] + ([out / f"{stem}.npy"] if raw else [])
        for p in mine:
            if p.resolve() in inputs:
                raise RestoreError(
                    f"the output {str(p)!r} would replace an input image; choose another --out"
                )
            if p.exists() and not overwrite:
                raise RestoreError(
                    f"{str(p)!r} already exists; pass --overwrite to replace it or choose "
                    "another --out"
                )
        paths.append(mine)
    return paths


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(to_png_array(image)).save(path, format="PNG")


def restore_files(
    model: str | os.PathLike[str] | Model,
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    sigma: float | str | None = None,
    kernel: str | os.PathLike[str] | ArrayLike | None = None,
    mask: str | os.PathLike[str] | ArrayLike | None = None,
    keep_lambda: bool = False,
    max_iter: int | None = None,
    tol: float | None = None,
    raw: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Restore image files into ``out_dir``: ``<stem>.png`` (8-bit, clipped to [0, 1]) and with
    ``raw`` ``<stem>.npy`` (float32, unclipped), reporting to ``echo``.

    Every input is checked first (files readable and finite, outputs free, mask and kernel
    fitting every image; :class:`RestoreError` otherwise), then the images are restored one by
    one, each at its own size; images of one size share one compiled solve. Returns one dict
    per image: ``file``, ``outputs``, ``shape``, ``iterations``, ``residual``, ``converged``.
    """
    if not files:
        raise RestoreError("no input images given")
    m = open_model(model)
    plan = make_plan(
        m,
        sigma=sigma,
        kernel=kernel,
        mask=mask,
        keep_lambda=keep_lambda,
        max_iter=max_iter,
        tol=tol,
    )
    images = [check_image(m, plan, _read(Path(f), "input"), repr(os.fspath(f))) for f in files]
    paths = output_paths(files, out_dir, raw=raw, overwrite=overwrite)
    for shape in dict.fromkeys(tuple(a.shape[:2]) for a in images):
        try:
            m.built(plan, shape)
        except RestoreError:
            raise
        except ValueError as err:  # an architecture that cannot take this shape
            raise RestoreError(str(err)) from None

    echo(f"model: {m.describe()}")
    echo(f"operator: {plan.describe(m)}")
    for note in plan.notes:
        echo(f"note: {note}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for f, image, outs in zip(files, images, paths, strict=True):
        r = _solve(m, plan, image)
        _write_png(outs[0], r.image)
        if raw:
            np.save(outs[1], r.image.astype(np.float32))
        kind = "gray" if image.ndim == 2 else f"{image.shape[2]} channels, each restored"
        status = "converged" if r.converged else "NOT converged"
        echo(
            f"{os.fspath(f)} ({_size(image.shape[:2])}, {kind}): {r.iterations} iterations, "
            f"residual {r.residual:.2e}, {status} -> {', '.join(str(p) for p in outs)}"
        )
        rows.append(
            {
                "file": os.fspath(f),
                "outputs": [str(p) for p in outs],
                "shape": list(image.shape),
                "iterations": r.iterations,
                "residual": r.residual,
                "converged": r.converged,
            }
        )
    done = sum(r["converged"] for r in rows)
    summary = (
        f"restored {len(rows)} image(s) in {time.perf_counter() - t0:.1f} s; "
        f"{done} of {len(rows)} converged"
    )
    if done < len(rows):
        summary += (
            f" (the others stopped at max_iter={plan.solver.max_iter}; raise --max-iter or --tol)"
        )
    echo(summary)
    return rows


__all__ = [
    "SIGMA_FLOOR",
    "GivenOperatorTask",
    "Model",
    "Plan",
    "RestoreError",
    "Restored",
    "check_image",
    "kernel_from_array",
    "load_mask",
    "make_plan",
    "mask_from_array",
    "open_model",
    "output_paths",
    "parse_kernel",
    "restore_files",
    "restore_image",
    "to_png_array",
]
