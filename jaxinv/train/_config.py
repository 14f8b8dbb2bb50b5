"""The training configuration: one frozen, JSON-round-trippable dataclass."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from .._adjoint import AbstractAdjoint, Implicit, JacobianFree
from ..data import DatasetInfo, dataset_info
from ..models import ARCHITECTURES, Architecture, get_model
from ..solvers import AbstractFixedPointSolver, Anderson, Picard
from ..tasks import DATASETS, TASKS, Task, make_task

MODELS = ("bilevel", "deq")
SCHEDULES = ("cosine", "linear", "constant")
SOLVERS = ("anderson", "picard")
ADJOINTS = ("cg", "gmres", "fixed_point", "anderson", "jfb")
JAC_KINDS = ("frobenius", "spectral")
#: With ``skip_unconverged``, training stops after this many skipped steps in a row.
MAX_SKIPS_IN_A_ROW = 10
#: Fields that do not change the trained parameters (ignored when matching a checkpoint).
NON_SEMANTIC = ("checkpoint_every", "eval_every", "devices")

# The adjoint each configuration uses unless ``adjoint`` is set.
DEFAULT_ADJOINT = {"bilevel": "cg", "deq": "gmres"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; ``TrainConfig.from_dict(c.to_dict()) == c``.

    The configuration is chosen by ONE argument, ``model``: ``"bilevel"`` trains the tied map
    (a gradient step on the energy) with the conjugate-gradient adjoint, ``"deq"`` the untied
    map with GMRES (``adjoint="fixed_point"`` is the paper's choice for both).

    Attributes:
        task: ``"denoise"``, ``"inpaint"`` or ``"deblur"``.
        task_options: :class:`jaxinv.tasks.Task` fields overriding the dataset's defaults (see
            :func:`jaxinv.tasks.make_task`), e.g. ``{"sigma": 0.05, "mask": "block"}``.
        model: ``"bilevel"`` (tied) or ``"deq"`` (untied).
        arch: architecture name in :data:`jaxinv.models.ARCHITECTURES`.
        arch_options: its hyperparameters (see the architecture's class).
        dataset: ``"natural"`` (scikit-image photographs on [0, 1], random patches) or
            ``"mnist"`` (28×28 digits on [−1, 1]; ``patch_size`` is ignored).
        train_images: a folder of the user's own images (PNG/JPEG/TIFF, searched recursively,
            read as grayscale on [0, 1] at their own resolution) to train on instead of the
            bundled photographs (``dataset="natural"`` only). Unless ``val_images`` is given,
            every 10th image of the folder (sorted by path) is held out for validation.
            Stored as an absolute path; a resumed run checks that the folder's files are
            unchanged.
        val_images: a folder of validation images (default: the held-out images of
            ``train_images``, or the bundled ``val`` split).
        augment: map each training patch by a random rotation by 90° and/or mirror; ``None``
            (default) augments image folders and not the bundled photographs (whose published
            figures were measured without).
        patch_size: side of the square training/validation patches (natural images).
        num_train: size of the fixed training set (patches or digits).
        num_val: size of the fixed validation set (drawn from the ``val`` split with a fixed
            seed, the same for every run).
        max_image_size: natural images are block-averaged down to at most this longer side.
        batch_size: examples per step.
        steps: optimiser steps.
        lr, lr_final: Adam learning rate, decayed to ``lr_final`` by ``schedule`` (``"cosine"``,
            ``"linear"`` or ``"constant"``).
        lr_scale: learning-rate multipliers by top-level parameter name, e.g.
            ``{"log_weights": 20.0}``: those parameters step ``20 × lr`` (their Adam updates are
            scaled after the schedule). Useful when parameters live on different scales (a
            log-weight needs steps of 1e-2, a filter tap 1e-3). Names must be trainable
            parameters of the model (checked when training starts).
        clip_norm: clip the gradient's global norm (``None``: no clipping).
        solver: forward solver, ``"anderson"`` or ``"picard"``; ``tol``, ``max_iter``,
            ``memory`` and ``restart`` (Anderson: clear the history when the residual exceeds
            ``restart`` × the best so far; 3 instead of the default 1e4 cut the slowest
            Student-t fields-of-experts solves from 517 to 157 iterations), ``relaxation``
            (Picard).
        adjoint: ``"cg"``, ``"gmres"``, ``"fixed_point"``, ``"anderson"`` or ``"jfb"``
            (Jacobian-free); ``None`` picks :data:`DEFAULT_ADJOINT` for ``model``;
            ``adjoint_tol``, ``adjoint_max_iter``, ``adjoint_restart`` (GMRES: the Krylov
            dimension between restarts; 20 stalled on ill-conditioned inpainting systems).
        throw: raise on a non-converged solve (otherwise failures are only reported in the
            metrics; non-finite losses raise unless the step is skipped).
        skip_unconverged: leave the parameters and the optimiser state unchanged on a step
            where a forward or adjoint solve of the batch did not converge or the loss is not
            finite (the gradient of an unconverged solve is not the implicit gradient); the
            metric ``skipped`` says when. A skipped step still consumes its batch but does not
            advance the optimiser's own schedule count (the logged ``lr`` follows the step).
            Training stops with an error after :data:`MAX_SKIPS_IN_A_ROW` skipped steps in a
            row.
        seed: model initialisation, training set and noise, data order (a pure function of
            ``(seed, step)``).
        checkpoint_every: checkpoint every so many steps (and always at the end); 0: only at the
            end.
        eval_every: validation PSNR/SSIM every so many steps (and at the start and the end);
            0: only at the end.
        warm_start: start each example's solve from its previous fixed point.
        devices: split each batch over this many devices (data parallelism with
            :mod:`jaxinv.distributed`; ``batch_size`` must be a multiple). Execution only: a run
            checkpointed on N devices resumes on any other number.
        jac_penalty: weight ``w`` of a regulariser of the map's Jacobian ``J = ∂T/∂x`` at the
            fixed points, added to the loss: ``mse + w · mean_batch P(J(x*))`` with ``x*``
            a constant of the penalty's gradient (:mod:`jaxinv.train._penalty`). It keeps an
            untied (DEQ) map contractive while it trains. 0 (default): off, and the step is
            the plain MSE step. Tied maps accept it too (their safe step already makes
            ``‖J‖₂ ≤ 1`` wherever the energy is convex, so there it matters only for
            non-convex potentials).
        jac_kind: ``"frobenius"``: ``P = ‖J‖_F² / n`` by Hutchinson's estimator with
            ``jac_probes`` Gaussian probes per example (Bai, Koltun & Kolter 2021);
            ``"spectral"``: ``P = relu(σ̂ − jac_target)²`` with ``σ̂`` the estimate of
            ``‖J‖₂`` by ``jac_iters`` power iterations on ``JᵀJ`` from each of ``jac_probes``
            Gaussian starts (the largest taken).
        jac_probes: probe vectors per example (>= 1); drawn from ``(step, example id)``, so a
            resumed run draws the same ones.
        jac_iters: power iterations of ``"spectral"`` (>= 1).
        jac_target: the spectral norm ``"spectral"`` tolerates unpenalised (> 0). Default
            0.95: ``‖J‖₂ < 1`` at the fixed point makes ``T`` a local contraction (Picard
            converges, and the adjoint system ``(I − J)ᵀu = g`` has
            ``‖(I − J)⁻¹‖ ≤ 1/(1 − ‖J‖₂)``), but a hinge at 1 acts only once that is lost, and
            ``σ̂`` is a lower bound: on the dense MNIST deblurring DEQ (``‖J‖₂ = 0.997`` at
            initialisation, estimated 0.974 with 5 iterations) with weight 1e4, target 1
            stayed off until the first Adam step at lr 1e-3 had made ``‖J‖₂ > 1`` and every
            forward solve failed, while 0.95 kept them converging
            (``benchmarks/deq_stability.py``).
    """

    task: str = "denoise"
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = "bilevel"
    arch: str = "foe"
    arch_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "natural"
    train_images: str | None = None
    val_images: str | None = None
    augment: bool | None = None
    patch_size: int = 32
    num_train: int = 256
    num_val: int = 16
    max_image_size: int = 256
    batch_size: int = 8
    steps: int = 200
    lr: float = 1e-3
    lr_final: float = 1e-5
    schedule: str = "cosine"
    lr_scale: dict[str, float] = dataclasses.field(default_factory=dict)
    clip_norm: float | None = None
    solver: str = "anderson"
    tol: float = 1e-4
    max_iter: int = 300
    memory: int = 5
    restart: float = 1e4
    relaxation: float = 1.0
    adjoint: str | None = None
    adjoint_tol: float = 1e-4
    adjoint_max_iter: int = 300
    adjoint_restart: int = 20
    throw: bool = False
    skip_unconverged: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 50
    warm_start: bool = False
    devices: int = 1
    jac_penalty: float = 0.0
    jac_kind: str = "frobenius"
    jac_probes: int = 1
    jac_iters: int = 5
    jac_target: float = 0.95

    def __post_init__(self) -> None:
        _choose("task", self.task, TASKS)
        _choose("model", self.model, MODELS)
        _choose("arch", self.arch, tuple(ARCHITECTURES))
        _choose("dataset", self.dataset, DATASETS)
        _choose("schedule", self.schedule, SCHEDULES)
        _choose("solver", self.solver, SOLVERS)
        if self.adjoint is not None:
            _choose("adjoint", self.adjoint, ADJOINTS)
        self._check_jacobian_penalty()
        for name in ("patch_size", "num_train", "num_val", "max_image_size", "batch_size"):
            _positive_int(name, getattr(self, name))
        for name in (
            "steps",
            "max_iter",
            "adjoint_max_iter",
            "adjoint_restart",
            "memory",
            "devices",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("checkpoint_every", "eval_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"TrainConfig: {name} must be a non-negative integer, got {v!r}")
        for name in ("lr", "tol", "adjoint_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig: {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.lr_final <= self.lr:
            raise ValueError(f"TrainConfig: need 0 <= lr_final <= lr, got {self.lr_final}")
        for name, factor in dict(self.lr_scale).items():
            if not isinstance(name, str) or isinstance(factor, bool):
                raise ValueError(f"TrainConfig: lr_scale must map names to numbers, got {name!r}")
            if not (isinstance(factor, (int, float)) and factor > 0 and factor < float("inf")):
                raise ValueError(
                    f"TrainConfig: lr_scale[{name!r}] must be a positive number, got {factor!r}"
                )
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(
                f"TrainConfig: clip_norm must be positive or None, got {self.clip_norm}"
            )
        if self.batch_size % self.devices:
            raise ValueError(
                f"TrainConfig: batch_size {self.batch_size} must be a multiple of devices "
                f"{self.devices}; change one of them"
            )
        if self.batch_size > self.num_train:
            raise ValueError(
                f"TrainConfig: batch_size {self.batch_size} exceeds num_train {self.num_train}"
            )
        if self.model == "deq" and not ARCHITECTURES[self.arch].untied_ok:
            raise ValueError(
                f"TrainConfig: arch {self.arch!r} has no untied (DEQ) map; use model='bilevel'"
            )
        for name in ("train_images", "val_images"):
            folder = getattr(self, name)
            if folder is None:
                continue
            if not isinstance(folder, (str, os.PathLike)) or not str(folder):
                raise ValueError(f"TrainConfig: {name} must be a folder path, got {folder!r}")
            if self.dataset != "natural":
                raise ValueError(
                    f"TrainConfig: {name} needs dataset='natural' (images on [0, 1]), got "
                    f"dataset={self.dataset!r}"
                )
            object.__setattr__(self, name, str(Path(folder).expanduser().resolve()))
        if self.augment is not None and not isinstance(self.augment, bool):
            raise ValueError(
                f"TrainConfig: augment must be True, False or None, got {self.augment!r}"
            )
        object.__setattr__(self, "task_options", dict(self.task_options))
        object.__setattr__(self, "arch_options", dict(self.arch_options))
        object.__setattr__(self, "lr_scale", {k: float(v) for k, v in self.lr_scale.items()})
        # fail early on bad options
        self.make_task()
        self.make_arch()
        self.forward_solver()
        self.adjoint_strategy()

    def _check_jacobian_penalty(self) -> None:
        _choose("jac_kind", self.jac_kind, JAC_KINDS)
        for name in ("jac_penalty", "jac_target"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"TrainConfig: {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.jac_penalty < 0:
            raise ValueError(
                f"TrainConfig: jac_penalty must be >= 0 (0 turns the Jacobian penalty off), got "
                f"{self.jac_penalty}"
            )
        if not self.jac_target > 0:
            raise ValueError(
                f"TrainConfig: jac_target must be positive (the spectral norm left unpenalised, "
                f"e.g. 0.95), got {self.jac_target}"
            )
        for name in ("jac_probes", "jac_iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(
                    f"TrainConfig: {name} must be an integer >= 1 (e.g. 1 probe, 5 iterations), "
                    f"got {v!r}"
                )
        if self.jac_penalty and self.arch == "tv":
            raise ValueError(
                "TrainConfig: arch 'tv' is tuned on the validation set, not trained by "
                "gradients, so jac_penalty has nothing to act on; set jac_penalty=0"
            )

    # ---- derived objects -------------------------------------------------------------------

    @property
    def tied(self) -> bool:
        """``True`` for bilevel (tied map), ``False`` for DEQ."""
        return self.model == "bilevel"

    @property
    def data(self) -> DatasetInfo:
        """The dataset's value range and shape (:class:`jaxinv.data.DatasetInfo`)."""
        return dataset_info(self.dataset)

    @property
    def image_shape(self) -> tuple[int, int]:
        """Training image shape: ``(28, 28)`` for MNIST, else ``(patch_size, patch_size)``."""
        return self.data.image_shape(self.patch_size)

    @property
    def data_range(self) -> float:
        """Width of the value range for PSNR/SSIM: 2 for MNIST on [−1, 1], 1 otherwise."""
        return self.data.data_range

    @property
    def augments(self) -> bool:
        """Whether training patches are augmented (``augment``, or on for image folders)."""
        return bool(self.train_images) if self.augment is None else self.augment

    @property
    def adjoint_method(self) -> str:
        """The adjoint method in use (``adjoint`` or the model's default)."""
        return self.adjoint or DEFAULT_ADJOINT[self.model]

    def make_task(self) -> Task:
        """The :class:`jaxinv.tasks.Task` (dataset defaults overridden by ``task_options``)."""
        return make_task(self.task, dataset=self.dataset, **self.task_options)

    def make_arch(self) -> Architecture:
        """The architecture with ``arch_options``."""
        return get_model(self.arch, **self.arch_options)

    def forward_solver(self) -> AbstractFixedPointSolver:
        """The forward fixed-point solver."""
        if self.solver == "anderson":
            return Anderson(
                tol=self.tol, max_iter=self.max_iter, memory=self.memory, restart=self.restart
            )
        return Picard(tol=self.tol, max_iter=self.max_iter, relaxation=self.relaxation)

    def adjoint_strategy(self) -> AbstractAdjoint:
        """The gradient strategy for :func:`jaxinv.fixed_point`."""
        method = self.adjoint_method
        if method == "jfb":
            return JacobianFree()
        return Implicit(
            method=method,
            tol=self.adjoint_tol,
            max_iter=self.adjoint_max_iter,
            memory=self.memory,
            restart=self.adjoint_restart,
        )

    # ---- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"TrainConfig: unknown fields {sorted(extra)}; known {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        """JSON text (sorted keys, indented)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: TrainConfig, *, semantic_only: bool = True) -> list[str]:
        """Names of the fields where ``self`` and ``other`` differ (ignoring
        :data:`NON_SEMANTIC` fields unless ``semantic_only=False``)."""
        a, b = self.to_dict(), other.to_dict()
        skip = NON_SEMANTIC if semantic_only else ()
        return [k for k in a if k not in skip and a[k] != b.get(k)]


def _choose(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig: unknown {what} {value!r}; choose one of {list(choices)}")


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"TrainConfig: {name} must be a positive integer, got {v!r}")
