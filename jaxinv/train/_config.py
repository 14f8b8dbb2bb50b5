"""The training configuration: a frozen, JSON-round-trippable dataclass composed of small ones.

:class:`TrainConfig` holds what the run trains (task, model, architecture), its run settings and
five sub-configurations, each a frozen dataclass that validates itself: :class:`DataConfig`,
:class:`OptimConfig`, :class:`SolverConfig` (the forward solve), :class:`AdjointConfig` and
:class:`PenaltyConfig`. Every setting also has a flat name (the field names of the single flat
dataclass this replaced: ``lr``, ``tol``, ``adjoint_tol``, ``jac_penalty``, ...), accepted by
:meth:`TrainConfig.of`, :meth:`TrainConfig.replace` and :meth:`TrainConfig.from_dict`, so that
run directories written in the flat form keep loading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optax

from .._adjoint import AbstractAdjoint, Implicit, JacobianFree
from ..data import DatasetInfo, dataset_info
from ..models import ARCHITECTURES, Architecture, get_model
from ..solvers import AbstractFixedPointSolver, Anderson, Picard
from ..tasks import DATASETS, TASKS, Task, make_task

MODELS = ("bilevel", "deq")
SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adam", "lbfgs")
SOLVERS = ("anderson", "picard")
ADJOINTS = ("cg", "gmres", "fixed_point", "anderson", "jfb")
JAC_KINDS = ("frobenius", "spectral")
ON_ADJOINT_FAILURE = ("stop", "warn")
#: With ``skip_unconverged``, training stops after this many skipped steps in a row.
MAX_SKIPS_IN_A_ROW = 10
#: Fields that do not change the trained parameters (ignored when matching a checkpoint).
NON_SEMANTIC = ("checkpoint_every", "eval_every", "devices", "on_adjoint_failure")

# The adjoint each configuration uses unless ``adjoint.method`` is set.
DEFAULT_ADJOINT = {"bilevel": "cg", "deq": "gmres"}


def flat_name(name: str) -> str:
    """The flat name of a dotted sub-configuration field (``"optim.lr"`` -> ``"lr"``,
    ``"adjoint.tol"`` -> ``"adjoint_tol"``); other names are returned as they are."""
    section, _, field = name.partition(".")
    return _FLAT_OF.get((section, field), name)


def _label(section: str, name: str) -> str:
    """How errors name a field: ``optim.lr``, with its flat name where that differs
    (``penalty.weight (jac_penalty)``)."""
    flat = _FLAT_OF.get((section, name), name)
    return f"{section}.{name}" if flat == name else f"{section}.{name} ({flat})"


def _choose(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig: unknown {what} {value!r}; choose one of {list(choices)}")


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"TrainConfig: {name} must be a positive integer, got {v!r}")


def _positive(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"TrainConfig: {name} must be positive, got {v!r}")


# ---- sub-configurations ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training and validation examples.

    Attributes:
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
    """

    dataset: str = "natural"
    train_images: str | None = None
    val_images: str | None = None
    augment: bool | None = None
    patch_size: int = 32
    num_train: int = 256
    num_val: int = 16
    max_image_size: int = 256

    def __post_init__(self) -> None:
        _choose("data.dataset", self.dataset, DATASETS)
        for name in ("patch_size", "num_train", "num_val", "max_image_size"):
            _positive_int(_label("data", name), getattr(self, name))
        for name in ("train_images", "val_images"):
            folder = getattr(self, name)
            if folder is None:
                continue
            if not isinstance(folder, (str, os.PathLike)) or not str(folder):
                raise ValueError(
                    f"TrainConfig: {_label('data', name)} must be a folder path, got {folder!r}"
                )
            if self.dataset != "natural":
                raise ValueError(
                    f"TrainConfig: {_label('data', name)} needs dataset='natural' (images on "
                    f"[0, 1]), got dataset={self.dataset!r}"
                )
            object.__setattr__(self, name, str(Path(folder).expanduser().resolve()))
        if self.augment is not None and not isinstance(self.augment, bool):
            raise ValueError(
                f"TrainConfig: {_label('data', 'augment')} must be True, False or None, got "
                f"{self.augment!r}"
            )

    @property
    def info(self) -> DatasetInfo:
        """The dataset's value range and shape (:class:`jaxinv.data.DatasetInfo`)."""
        return dataset_info(self.dataset)

    @property
    def image_shape(self) -> tuple[int, int]:
        """Training image shape: ``(28, 28)`` for MNIST, else ``(patch_size, patch_size)``."""
        return self.info.image_shape(self.patch_size)

    @property
    def augments(self) -> bool:
        """Whether training patches are augmented (``augment``, or on for image folders)."""
        return bool(self.train_images) if self.augment is None else self.augment


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimiser: Adam with a learning-rate schedule, or full-batch L-BFGS.

    Attributes:
        optimizer: ``"adam"`` (default) or ``"lbfgs"``: ``optax.lbfgs`` with a zoom line search
            (strong Wolfe conditions) on the whole training set at every step, as the published
            bilevel fields of experts were trained. It needs one objective for all steps, so
            ``batch_size`` must equal ``data.num_train`` (and one device, no Jacobian penalty);
            the line search sets the step, so ``lr``, its schedule and ``lr_scale`` are unused
            (``lr_scale`` must be empty). Each line-search trial is one more forward and adjoint
            solve of the whole set; warm starts (``warm_start``) make them cheap.
        lbfgs_memory: L-BFGS's number of stored curvature pairs.
        linesearch_steps: at most this many line-search trials per L-BFGS step.
        lr, lr_final: Adam learning rate, decayed to ``lr_final`` by ``schedule`` (``"cosine"``,
            ``"linear"`` or ``"constant"``) over the run's ``steps``.
        lr_scale: learning-rate multipliers by top-level parameter name, e.g.
            ``{"log_weights": 20.0}``: those parameters step ``20 × lr`` (their Adam updates are
            scaled after the schedule). Useful when parameters live on different scales (a
            log-weight needs steps of 1e-2, a filter tap 1e-3). Names must be trainable
            parameters of the model (checked when training starts).
        clip_norm: clip the gradient's global norm (``None``: no clipping).
    """

    lr: float = 1e-3
    lr_final: float = 1e-5
    schedule: str = "cosine"
    lr_scale: dict[str, float] = dataclasses.field(default_factory=dict)
    clip_norm: float | None = None
    optimizer: str = "adam"
    lbfgs_memory: int = 10
    linesearch_steps: int = 15

    def __post_init__(self) -> None:
        _choose("optim.schedule", self.schedule, SCHEDULES)
        _choose("optim.optimizer", self.optimizer, OPTIMIZERS)
        for name in ("lbfgs_memory", "linesearch_steps"):
            _positive_int(f"optim.{name}", getattr(self, name))
        if self.optimizer == "lbfgs" and self.lr_scale:
            raise ValueError(
                "TrainConfig: optim.lr_scale scales Adam's steps; L-BFGS's line search chooses "
                f"its own, so lr_scale {dict(self.lr_scale)} has no effect there: leave it empty "
                "or use optimizer='adam'"
            )
        _positive("optim.lr", self.lr)
        if not 0 <= self.lr_final <= self.lr:
            raise ValueError(
                f"TrainConfig: need 0 <= optim.lr_final <= optim.lr, got {self.lr_final}"
            )
        for name, factor in dict(self.lr_scale).items():
            if not isinstance(name, str) or isinstance(factor, bool):
                raise ValueError(
                    f"TrainConfig: optim.lr_scale must map names to numbers, got {name!r}"
                )
            if not (isinstance(factor, (int, float)) and factor > 0 and factor < float("inf")):
                raise ValueError(
                    f"TrainConfig: optim.lr_scale[{name!r}] must be a positive number, got "
                    f"{factor!r}"
                )
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(
                f"TrainConfig: optim.clip_norm must be positive or None, got {self.clip_norm}"
            )
        object.__setattr__(self, "lr_scale", {k: float(v) for k, v in self.lr_scale.items()})

    def make_schedule(self, steps: int) -> optax.Schedule:
        """The learning rate of each step: cosine or linear decay from ``lr`` to ``lr_final``
        over ``steps``, or constant ``lr``."""
        if self.schedule == "cosine":
            return optax.cosine_decay_schedule(self.lr, steps, alpha=self.lr_final / self.lr)
        if self.schedule == "linear":
            return optax.linear_schedule(self.lr, self.lr_final, steps)
        return optax.constant_schedule(self.lr)


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """The forward solve: the fixed-point iteration that reconstructs an image.

    Attributes:
        name: ``"anderson"`` or ``"picard"``.
        tol, max_iter: stop at a relative residual ``tol`` or after ``max_iter`` iterations.
        memory: Anderson's history length.
        restart: Anderson clears its history when the residual exceeds ``restart`` × the best so
            far (3 instead of the default 1e4 cut the slowest Student-t fields-of-experts solves
            from 517 to 157 iterations).
        relaxation: Picard's damping in (0, 1].
    """

    name: str = "anderson"
    tol: float = 1e-4
    max_iter: int = 300
    memory: int = 5
    restart: float = 1e4
    relaxation: float = 1.0

    def __post_init__(self) -> None:
        _choose(_label("forward", "name"), self.name, SOLVERS)
        _positive("forward.tol", self.tol)
        for name in ("max_iter", "memory"):
            _positive_int(_label("forward", name), getattr(self, name))
        self.make()  # the solver's own checks

    def make(self) -> AbstractFixedPointSolver:
        """The forward fixed-point solver."""
        if self.name == "anderson":
            return Anderson(
                tol=self.tol, max_iter=self.max_iter, memory=self.memory, restart=self.restart
            )
        return Picard(tol=self.tol, max_iter=self.max_iter, relaxation=self.relaxation)


@dataclasses.dataclass(frozen=True)
class AdjointConfig:
    """The gradient: how the adjoint (backward) linear system is solved.

    Attributes:
        method: ``"cg"``, ``"gmres"``, ``"fixed_point"``, ``"anderson"`` or ``"jfb"``
            (Jacobian-free: no adjoint solve); ``None`` picks :data:`DEFAULT_ADJOINT` for the
            model (bilevel: ``"cg"``, DEQ: ``"gmres"``).
        tol, max_iter: stop at a relative residual ``tol`` or after ``max_iter`` iterations.
        restart: GMRES's Krylov dimension between restarts (20 stalled on ill-conditioned
            inpainting systems).
        memory: Anderson's history length (method ``"anderson"``), independent of the forward
            solver's.
    """

    method: str | None = None
    tol: float = 1e-4
    max_iter: int = 300
    restart: int = 20
    memory: int = 5

    def __post_init__(self) -> None:
        if self.method is not None:
            _choose(_label("adjoint", "method"), self.method, ADJOINTS)
        _positive(_label("adjoint", "tol"), self.tol)
        for name in ("max_iter", "restart", "memory"):
            _positive_int(_label("adjoint", name), getattr(self, name))

    def method_for(self, model: str) -> str:
        """The method in use for ``model`` (``method`` or the model's default)."""
        return self.method or DEFAULT_ADJOINT[model]

    def make(self, model: str) -> AbstractAdjoint:
        """The gradient strategy of :func:`jaxinv.fixed_point` for ``model`` (``"bilevel"``
        or ``"deq"``)."""
        method = self.method_for(model)
        if method == "jfb":
            return JacobianFree()
        return Implicit(
            method=method,
            tol=self.tol,
            max_iter=self.max_iter,
            memory=self.memory,
            restart=self.restart,
        )


@dataclasses.dataclass(frozen=True)
class PenaltyConfig:
    """A penalty on the map's Jacobian ``J = ∂T/∂x`` at the fixed points, added to the loss.

    The loss becomes ``mse + weight · mean_batch P(J(x*))`` with ``x*`` a constant of the
    penalty's gradient (:mod:`jaxinv.train._penalty`). It keeps an untied (DEQ) map contractive
    while it trains. Tied maps accept it too (their safe step already makes ``‖J‖₂ ≤ 1``
    wherever the energy is convex, so there it matters only for non-convex potentials).

    Attributes:
        weight: ``w`` (>= 0); 0 (default): off, and the step is the plain MSE step.
        kind: ``"frobenius"``: ``P = ‖J‖_F² / n`` by Hutchinson's estimator with ``probes``
            Gaussian probes per example (Bai, Koltun & Kolter 2021); ``"spectral"``:
            ``P = relu(σ̂ − target)²`` with ``σ̂`` the estimate of ``‖J‖₂`` by ``iters`` power
            iterations on ``JᵀJ`` from each of ``probes`` Gaussian starts (the largest taken).
        probes: probe vectors per example (>= 1); drawn from ``(step, example id)``, so a
            resumed run draws the same ones.
        iters: power iterations of ``"spectral"`` (>= 1).
        target: the spectral norm ``"spectral"`` tolerates unpenalised (> 0). Default 0.95:
            ``‖J‖₂ < 1`` at the fixed point makes ``T`` a local contraction (Picard converges,
            and the adjoint system ``(I − J)ᵀu = g`` has ``‖(I − J)⁻¹‖ ≤ 1/(1 − ‖J‖₂)``), but a
            hinge at 1 acts only once that is lost, and ``σ̂`` is a lower bound: on the dense
            MNIST deblurring DEQ (``‖J‖₂ = 0.997`` at initialisation, estimated 0.974 with 5
            iterations) with weight 1e4, target 1 stayed off until the first Adam step at lr
            1e-3 had made ``‖J‖₂ > 1`` and every forward solve failed, while 0.95 kept them
            converging (``benchmarks/deq_stability.py``).
    """

    weight: float = 0.0
    kind: str = "frobenius"
    probes: int = 1
    iters: int = 5
    target: float = 0.95

    def __post_init__(self) -> None:
        _choose(_label("penalty", "kind"), self.kind, JAC_KINDS)
        for name in ("weight", "target"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(
                    f"TrainConfig: {_label('penalty', name)} must be a finite number, got {v!r}"
                )
            object.__setattr__(self, name, float(v))
        if self.weight < 0:
            raise ValueError(
                f"TrainConfig: {_label('penalty', 'weight')} must be >= 0 (0 turns the Jacobian "
                f"penalty off), got {self.weight}"
            )
        if not self.target > 0:
            raise ValueError(
                f"TrainConfig: {_label('penalty', 'target')} must be positive (the spectral "
                f"norm left unpenalised, e.g. 0.95), got {self.target}"
            )
        for name in ("probes", "iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(
                    f"TrainConfig: {_label('penalty', name)} must be an integer >= 1 (e.g. 1 "
                    f"probe, 5 iterations), got {v!r}"
                )

    @property
    def enabled(self) -> bool:
        """Whether the penalty is on (``weight > 0``)."""
        return self.weight > 0


#: The sub-configurations by their field name in :class:`TrainConfig`.
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "optim": OptimConfig,
    "forward": SolverConfig,
    "adjoint": AdjointConfig,
    "penalty": PenaltyConfig,
}
# The field names of each sub-configuration, in order.
_FIELDS = {s: tuple(f.name for f in dataclasses.fields(kind)) for s, kind in SECTIONS.items()}
# How a section's fields are named flat (the single flat dataclass this replaced): a prefix, and
# the fields named otherwise.
_FLAT_RULES: dict[str, tuple[str, dict[str, str]]] = {
    "data": ("", {}),
    "optim": ("", {}),
    "forward": ("", {"name": "solver"}),
    "adjoint": ("adjoint_", {"method": "adjoint"}),
    "penalty": ("jac_", {"weight": "jac_penalty"}),
}
#: The flat name of every sub-configuration field: ``{flat name: (section, field)}``. The
#: forward solve keeps the plain names (``tol``), the adjoint's are prefixed (``adjoint_tol``).
FLAT_NAMES: dict[str, tuple[str, str]] = {
    renamed.get(field, prefix + field): (section, field)
    for section, (prefix, renamed) in _FLAT_RULES.items()
    for field in _FIELDS[section]
}
_FLAT_OF = {dotted: flat for flat, dotted in FLAT_NAMES.items()}


# ---- the configuration -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; ``TrainConfig.from_dict(c.to_dict()) == c``.

    The configuration is chosen by ONE argument, ``model``: ``"bilevel"`` trains the tied map
    (a gradient step on the energy) with the conjugate-gradient adjoint, ``"deq"`` the untied
    map with GMRES (``adjoint.method="fixed_point"`` is the paper's choice for both).

    Layout: what is trained (``task``, ``model``, ``arch`` and their options), how long
    (``steps`` of ``batch_size`` examples), five sub-configurations and the run's bookkeeping:

    * ``data`` (:class:`DataConfig`): which images, how many, how large;
    * ``optim`` (:class:`OptimConfig`): the learning rate, its schedule, per-parameter scales
      and gradient clipping;
    * ``forward`` (:class:`SolverConfig`): the solver that computes a reconstruction;
    * ``adjoint`` (:class:`AdjointConfig`): the solver that computes the gradient through it;
    * ``penalty`` (:class:`PenaltyConfig`): an optional regulariser of the map's Jacobian.

    ```python
    c = TrainConfig(model="deq", optim=OptimConfig(lr=1e-4), forward=SolverConfig(tol=1e-5))
    c = TrainConfig.of(model="deq", lr=1e-4, tol=1e-5)       # the same, by flat names
    c.replace(**{"optim.lr": 1e-3}, adjoint_tol=1e-6)       # dotted and flat names mix
    ```

    Flat names (:data:`FLAT_NAMES`) are the sub-configurations' field names, except the
    forward solver's ``name`` (``solver``), the adjoint's (``adjoint``, ``adjoint_tol``,
    ``adjoint_max_iter``, ``adjoint_restart``, ``adjoint_memory``) and the penalty's
    (``jac_penalty`` for ``weight``, ``jac_kind``, ``jac_probes``, ``jac_iters``,
    ``jac_target``).

    Attributes:
        task: ``"denoise"``, ``"inpaint"`` or ``"deblur"``.
        task_options: :class:`jaxinv.tasks.Task` fields overriding the dataset's defaults (see
            :func:`jaxinv.tasks.make_task`), e.g. ``{"sigma": 0.05, "mask": "block"}``.
        model: ``"bilevel"`` (tied) or ``"deq"`` (untied).
        arch: architecture name in :data:`jaxinv.models.ARCHITECTURES`.
        arch_options: its hyperparameters (see the architecture's class).
        steps: optimiser steps.
        batch_size: examples per step.
        data, optim, forward, adjoint, penalty: the sub-configurations above.
        throw: raise on a non-converged solve (otherwise failures are only reported in the
            metrics; non-finite losses raise unless the step is skipped).
        skip_unconverged: leave the parameters and the optimiser state unchanged on a step
            where a forward or adjoint solve of the batch did not converge or the loss is not
            finite (the gradient of an unconverged solve is not the implicit gradient); the
            metric ``skipped`` says when. A skipped step still consumes its batch but does not
            advance the optimiser's own schedule count (the logged ``lr`` follows the step).
            Training stops with an error after :data:`MAX_SKIPS_IN_A_ROW` skipped steps in a
            row.
        on_adjoint_failure: what training does when in :data:`MAX_SKIPS_IN_A_ROW` steps in a
            row fewer than half of the batch's adjoint solves converged (their gradients are
            then not implicit gradients): ``"stop"`` (default) raises
            :class:`AdjointFailureError` with advice, the last checkpoint intact; ``"warn"``
            warns once and trains on.
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
    """

    task: str = "denoise"
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = "bilevel"
    arch: str = "foe"
    arch_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 200
    batch_size: int = 8
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    forward: SolverConfig = dataclasses.field(default_factory=SolverConfig)
    adjoint: AdjointConfig = dataclasses.field(default_factory=AdjointConfig)
    penalty: PenaltyConfig = dataclasses.field(default_factory=PenaltyConfig)
    throw: bool = False
    skip_unconverged: bool = False
    on_adjoint_failure: str = "stop"
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 50
    warm_start: bool = False
    devices: int = 1

    def __post_init__(self) -> None:
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(
                    f"TrainConfig: {name} must be of type {kind.__name__}, got "
                    f"{getattr(self, name)!r}; set single values with TrainConfig.of(...) or "
                    "replace(...)"
                )
        _choose("task", self.task, TASKS)
        _choose("model", self.model, MODELS)
        _choose("arch", self.arch, tuple(ARCHITECTURES))
        _choose("on_adjoint_failure", self.on_adjoint_failure, ON_ADJOINT_FAILURE)
        for name in ("batch_size", "steps", "devices"):
            _positive_int(name, getattr(self, name))
        for name in ("checkpoint_every", "eval_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"TrainConfig: {name} must be a non-negative integer, got {v!r}")
        if self.batch_size % self.devices:
            raise ValueError(
                f"TrainConfig: batch_size {self.batch_size} must be a multiple of devices "
                f"{self.devices}; change one of them"
            )
        if self.batch_size > self.data.num_train:
            raise ValueError(
                f"TrainConfig: batch_size {self.batch_size} exceeds data.num_train "
                f"{self.data.num_train}"
            )
        if self.optim.optimizer == "lbfgs":
            self._check_lbfgs()
        if self.model == "deq" and not ARCHITECTURES[self.arch].untied_ok:
            raise ValueError(
                f"TrainConfig: arch {self.arch!r} has no untied (DEQ) map; use model='bilevel'"
            )
        if self.penalty.weight and self.arch == "tv":
            raise ValueError(
                "TrainConfig: arch 'tv' is tuned on the validation set, not trained by "
                "gradients, so the Jacobian penalty has nothing to act on; set "
                "penalty.weight (jac_penalty) to 0"
            )
        object.__setattr__(self, "task_options", dict(self.task_options))
        object.__setattr__(self, "arch_options", dict(self.arch_options))
        # fail early on bad options
        self.make_task()
        self.make_arch()
        self.adjoint_strategy()

    def _check_lbfgs(self) -> None:
        """L-BFGS compares gradients across steps, so every step must see one objective."""
        if self.batch_size != self.data.num_train:
            raise ValueError(
                f"TrainConfig: optimizer 'lbfgs' is full-batch (its curvature pairs compare "
                f"gradients of one objective), but batch_size {self.batch_size} != "
                f"data.num_train {self.data.num_train}; set batch_size = num_train"
            )
        if self.devices != 1:
            raise ValueError(
                f"TrainConfig: optimizer 'lbfgs' runs its line search on one device, got "
                f"devices={self.devices}; set devices=1 or use optimizer='adam'"
            )
        if self.penalty.enabled:
            raise ValueError(
                "TrainConfig: optimizer 'lbfgs' needs one objective for all steps, but the "
                "Jacobian penalty draws new probes at every step; set penalty.weight "
                "(jac_penalty) to 0 or use optimizer='adam'"
            )

    # ---- derived objects -------------------------------------------------------------------

    @property
    def tied(self) -> bool:
        """``True`` for bilevel (tied map), ``False`` for DEQ."""
        return self.model == "bilevel"

    @property
    def dataset_info(self) -> DatasetInfo:
        """The dataset's value range and shape (:class:`jaxinv.data.DatasetInfo`)."""
        return self.data.info

    @property
    def image_shape(self) -> tuple[int, int]:
        """Training image shape: ``(28, 28)`` for MNIST, else ``(patch_size, patch_size)``."""
        return self.data.image_shape

    @property
    def data_range(self) -> float:
        """Width of the value range for PSNR/SSIM: 2 for MNIST on [−1, 1], 1 otherwise."""
        return self.data.info.data_range

    @property
    def augments(self) -> bool:
        """Whether training patches are augmented (``data.augment``, or on for image
        folders)."""
        return self.data.augments

    @property
    def adjoint_method(self) -> str:
        """The adjoint method in use (``adjoint.method`` or the model's default)."""
        return self.adjoint.method_for(self.model)

    def make_task(self) -> Task:
        """The :class:`jaxinv.tasks.Task` (dataset defaults overridden by ``task_options``)."""
        return make_task(self.task, dataset=self.data.dataset, **self.task_options)

    def make_arch(self) -> Architecture:
        """The architecture with ``arch_options``."""
        return get_model(self.arch, **self.arch_options)

    def forward_solver(self) -> AbstractFixedPointSolver:
        """The forward fixed-point solver (``forward.make()``)."""
        return self.forward.make()

    def adjoint_strategy(self) -> AbstractAdjoint:
        """The gradient strategy for :func:`jaxinv.fixed_point` (``adjoint.make(model)``)."""
        return self.adjoint.make(self.model)

    # ---- settings by name ------------------------------------------------------------------

    @classmethod
    def of(cls, **settings: Any) -> TrainConfig:
        """The default configuration with ``settings``: top-level fields, sub-configurations,
        flat names (``lr=1e-3``, ``adjoint_tol=1e-6``) or dotted ones (``**{"optim.lr":
        1e-3}``); see :meth:`replace`."""
        return cls().replace(**settings)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated once, as a whole). Keys are top-level
        fields (a sub-configuration as an object, or a dict of its fields), flat names
        (:data:`FLAT_NAMES`: ``lr``, ``tol``, ``adjoint_tol``, ``jac_penalty``, ...) or dotted
        names (``"optim.lr"``); an unknown key raises ``ValueError`` naming it."""
        top, sections = _split(changes)
        for name, fields in sections.items():
            base = top.get(name, getattr(self, name))
            top[name] = dataclasses.replace(base, **fields)
        return dataclasses.replace(self, **top)

    def setting(self, name: str) -> Any:
        """The value of one setting by its flat name (``"lr"``; ``"adjoint"`` is the adjoint's
        method), dotted name (``"optim.lr"``) or top-level field name."""
        head, dot, tail = name.partition(".")
        if name in FLAT_NAMES:
            head, tail = FLAT_NAMES[name]
        elif not dot and name in _TOP:
            return getattr(self, name)
        if tail not in _FIELDS.get(head, ()):
            _split({name: None})  # raises, naming it
        return getattr(getattr(self, head), tail)

    def dotted(self) -> dict[str, Any]:
        """Every setting by its dotted name (``{"optim.lr": 1e-3, "task_options": {...},
        ...}``), as JSON values."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if key in SECTIONS:
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    # ---- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field, the sub-configurations as dicts."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; also reads the flat form that run directories and
        checkpoints were written in before the sub-configurations (every key a flat name,
        missing ones at their defaults: there the adjoint's Anderson memory was the forward
        solver's ``memory``, and it loads so). Unknown keys raise ``ValueError``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"TrainConfig: expected a dict of settings, got {d!r}")
        d = dict(d)
        nested = any(isinstance(d.get(s), Mapping) for s in SECTIONS) or any("." in k for k in d)
        if not nested and "memory" in d and "adjoint_memory" not in d:
            method = d.get("adjoint") or DEFAULT_ADJOINT.get(d.get("model", "bilevel"))
            if method == "anderson":
                d["adjoint_memory"] = d["memory"]
        return cls.of(**d)

    def to_json(self) -> str:
        """JSON text (sorted keys, indented)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def differences(self, other: TrainConfig, *, semantic_only: bool = True) -> list[str]:
        """Dotted names of the settings where ``self`` and ``other`` differ (``optim.lr``;
        ignoring :data:`NON_SEMANTIC` fields unless ``semantic_only=False``)."""
        a, b = self.dotted(), other.dotted()
        skip = NON_SEMANTIC if semantic_only else ()
        return [k for k in a if k not in skip and a[k] != b.get(k)]


_TOP = {f.name for f in dataclasses.fields(TrainConfig)}


def setting_names() -> list[str]:
    """Every name :meth:`TrainConfig.replace` takes: top-level fields, flat names and dotted
    names."""
    dotted = [f"{s}.{f}" for s, fields in _FIELDS.items() for f in fields]
    return sorted(_TOP | set(FLAT_NAMES)) + dotted


def _split(changes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``changes`` as top-level fields and ``{section: {field: value}}``."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    unknown: list[str] = []

    def put(section: str, field: str, value: Any, key: str) -> None:
        if field not in _FIELDS[section]:
            unknown.append(key)
        elif field in sections.setdefault(section, {}):
            raise ValueError(f"TrainConfig: {_label(section, field)} is given twice")
        else:
            sections[section][field] = value

    for key, value in changes.items():
        head, dot, tail = key.partition(".")
        if dot:
            if head in SECTIONS:
                put(head, tail, value, key)
            else:
                unknown.append(key)
        elif key in SECTIONS and isinstance(value, SECTIONS[key]):
            top[key] = value
        elif key in SECTIONS and isinstance(value, Mapping):
            for field, v in value.items():
                put(key, str(field), v, f"{key}.{field}")
        elif key in FLAT_NAMES:
            put(*FLAT_NAMES[key], value, key)
        elif key in _TOP:
            top[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"TrainConfig: unknown fields {sorted(unknown)}; known: the fields "
            f"{sorted(_TOP)}, the flat names {sorted(FLAT_NAMES)}, or SECTION.FIELD with "
            + "; ".join(f"{s}: {', '.join(f)}" for s, f in _FIELDS.items())
        )
    return top, sections
