"""Architectures: learnable regularizers turned into fixed-point maps for a task.

Each architecture is a small frozen dataclass of hyperparameters. ``build(key, task, image_shape,
tied)`` returns a :class:`ModelInstance`: the initial ``params`` (a dict of arrays), the map
``T(x, params, y)`` — tied (bilevel: a gradient step on an energy) or untied (DEQ: the same step
with an independent second weight set) — an initial guess ``x0_fn(y)``, and ``refresh(params)``,
which recomputes the *derived* leaves (the step τ, operator norms) after every optimiser step.

Every scalar (λ, τ, γ, …) is an array leaf of ``params``; ``ModelInstance.trainable`` says which
leaves the optimiser updates. Derived leaves are frozen and treated as constants by the gradient.
Because τ only scales the step, the fixed point — and hence the implicit gradient — does not depend
on it; it is chosen so that the tied map contracts.

Registry (:data:`ARCHITECTURES`, :func:`get_model`):

- ``"foe"`` (:class:`FoE`): fields of experts, the strong denoiser;
- ``"conv2x11"`` (:class:`Conv2x11`): the paper's 2 filters 11×11, TV-like init, tanh, operator
  norm normalisation;
- ``"conv30x3"`` (:class:`Conv30x3`): the paper's 30 filters 3×3, random init, same normalisation;
- ``"dense"`` (:class:`Dense`): the paper's MNIST model, ``W`` (d×d) plus bias;
- ``"tv"`` (:class:`TV`): smoothed total variation with one weight, tuned by :func:`tune_tv`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from . import energies
from ._conv import BOUNDARIES, correlate, correlate_adjoint
from .metrics import psnr
from .operators import AbstractOperator, bank_norm, matrix_norm
from .regularizers import (
    dct_filters,
    get_activation,
    get_potential,
    init_dense,
    init_fields_of_experts,
    smoothed_tv,
    tv_like_filters,
)
from .solvers import AbstractFixedPointSolver, Anderson
from .tasks import Task

Map = Callable[[Array, PyTree, Array], Array]

_BOUNDARIES = BOUNDARIES
_STEPS = ("safe", "spectral")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelInstance:
    """A built architecture for one task and image shape.

    Attributes:
        arch: registry name of the architecture.
        tied: ``True`` for the bilevel (gradient-step) map, ``False`` for the DEQ map.
        image_shape: ``(H, W)`` the map and its operator were built for.
        params: initial parameters (a dict of arrays, derived leaves already refreshed).
        T: the map ``T(x, params, y) -> x`` on single images ``(H, W)`` (vmap for batches).
        x0_fn: initial guess ``x0_fn(y) -> x`` (``Aᵀy``).
        refresh: ``params -> params`` recomputing the derived, frozen leaves (τ, norms) from the
            trainable ones; jit-compatible, call it after every optimiser step.
        trainable: a pytree of bools with the structure of ``params``.
        operator: the forward operator ``A``.
        learned: what is learned, in words.
    """

    arch: str
    tied: bool
    image_shape: tuple[int, int]
    params: dict[str, Any]
    T: Map
    x0_fn: Callable[[Array], Array]
    refresh: Callable[[PyTree], PyTree]
    trainable: PyTree
    operator: AbstractOperator
    learned: str = ""

    def num_params(self, trainable_only: bool = True) -> int:
        """Number of (trainable) scalar parameters."""
        return count_params(self.params, self.trainable if trainable_only else None)


def count_params(params: PyTree, trainable: PyTree | None = None) -> int:
    """Total size of the floating-point array leaves of ``params`` (only those marked ``True`` in
    ``trainable``, a matching pytree of bools, if given)."""
    leaves = jax.tree.leaves(params)
    if trainable is None:
        keep = [True] * len(leaves)
    else:
        keep = jax.tree.leaves(trainable)
        if len(keep) != len(leaves):
            raise ValueError("count_params: trainable must have the structure of params")
    return int(
        sum(
            int(np.size(leaf))
            for leaf, k in zip(leaves, keep, strict=True)
            if k and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
        )
    )


def _float(value: float) -> Array:
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _stop(tree: PyTree) -> PyTree:
    return jax.tree.map(jax.lax.stop_gradient, tree)


def _check_common(arch: str, task: Task, image_shape: Sequence[int]) -> tuple[int, int]:
    if not isinstance(task, Task):
        raise ValueError(f"{arch}: task must be a jaxinv.tasks.Task, got {type(task).__name__}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{arch}: image_shape must be (H, W), got {tuple(image_shape)}")
    return shape  # type: ignore[return-value]


def _labels(params: dict[str, Any], frozen: Sequence[str]) -> dict[str, Any]:
    """Trainable mask: every leaf trainable except the top-level keys in ``frozen``."""
    out = {}
    for k, v in params.items():
        flag = k not in frozen
        out[k] = jax.tree.map(lambda _, f=flag: f, v)
    return out


class AbstractModel:
    """Base of the architectures: frozen dataclasses whose fields are hyperparameters."""

    name: ClassVar[str]
    untied_ok: ClassVar[bool] = True

    def build(
        self, key: PRNGKeyArray, task: Task, image_shape: tuple[int, int], tied: bool = True
    ) -> ModelInstance:
        """Initial parameters and maps for ``task`` on ``image_shape`` images."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The hyperparameters as a JSON-serialisable dict (``get_model(name, **options)``)."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Fields of experts
# --------------------------------------------------------------------------------------------


#: Potential -> (initial scale, weight gain) of :class:`FoE` (see its docstring).
_FOE_INIT: dict[str, tuple[float, float]] = {"logcosh": (300.0, 1.4), "student_t": (40.0, 2.0)}


@dataclasses.dataclass(frozen=True)
class FoE(AbstractModel):
    """Fields of experts ``R(x) = Σ_i w_i Σ_pixels ρ(s (k_i * x) + b_i)``.

    Learned: the filters ``k_i`` (``num_filters × size × size``), per-filter weights ``w_i =
    exp(log_weights_i) > 0`` and one potential scale ``s = exp(log_scale)`` (plus biases ``b_i``
    if ``bias``). Fixed: ``lam`` (λ, redundant with the weights) and the derived step ``tau``.
    Untied (DEQ): ``G(x) = Σ_i w_i (s c_i)ᵀ * σ(s (k_i * x) + b_i)`` with a second filter bank
    ``C`` (initialised equal to ``K``) and ``σ = ρ'``.

    ``step="spectral"`` (default) sets ``τ = 1/L``, ``L = λ‖A‖² + sup|ρ''| ‖K̃‖ ‖C̃‖`` with the
    norms of the weighted, scaled banks ``K̃ = (√w_i s k_i)_i`` from their spectra
    (:func:`bank_norm`; exact for the circular boundary, an upper bound for the zero one;
    ``C = K`` when tied), which bounds the Lipschitz constant of ``∇E`` (tied: ``∇²E =
    λAᵀA + K̃ᵀ D K̃``, ``‖D‖ ≤ sup|ρ''|``), so the tied map is a contraction for denoising
    and non-expansive otherwise. ``step="safe"`` uses :func:`jaxinv.energies.safe_step` (the
    looser ``‖k‖₁`` bound; untied: ``Σ_i w_i s²‖k_i‖₁‖c_i‖₁``).

    Initialisation: ``init="dct"`` (default) takes the first ``num_filters`` non-constant 2-D
    DCT-II basis filters by frequency (the default 24 filters 5×5 are the complete basis;
    filters beyond ``size² − 1`` are random), ``"random"`` zero-mean Gaussian filters; all have
    unit ℓ2 norm. The potential scale starts at ``init_scale`` and every weight at
    ``init_weight``; both default by potential, from sweeps of the untrained DCT model on the
    validation images at σ = 25/255:

    * log-cosh: ``s = 300`` (filter responses of natural images are O(0.1), so the log-cosh
      acts like a smoothed absolute value, a TV-like start), ``w = 1.4 max(σ, 0.01) / (F s)``;
    * Student-t: ``s = 40`` (noise responses fall in the quadratic core ``|s z| < 1``, edges in
      the flat tails), ``w = 2 max(σ, 0.01) / (F s)``: with 48 filters 7×7, 30.9 dB on the
      validation images against 29.9 for the log-cosh start (``s = 60`` scored 0.3 dB more
      there but needs twice the iterations);
    * others: ``s = 300``, ``w = 1.4 max(σ, 0.01) / (F s)``.
    """

    name: ClassVar[str] = "foe"
    num_filters: int = 24
    size: int = 5
    potential: str = "logcosh"
    bias: bool = False
    init: str = "dct"
    init_scale: float | None = None
    init_weight: float | None = None
    lam: float = 1.0
    step: str = "spectral"
    boundary: str = "circular"

    def __post_init__(self) -> None:
        get_potential(self.potential)
        _choose("step", self.step, _STEPS)
        _choose("boundary", self.boundary, _BOUNDARIES)
        _choose("init", self.init, ("dct", "random"))
        if self.num_filters < 1 or self.size < 2:
            raise ValueError("foe: need num_filters >= 1 and size >= 2")
        if not (self.lam > 0 and (self.init_scale is None or self.init_scale > 0)):
            raise ValueError("foe: init_scale and lam must be positive")

    def build(self, key, task, image_shape, tied=True):
        shape = _check_common(self.name, task, image_shape)
        op = task.operator(shape)
        op_norm = task.operator_norm_bound()
        pot = get_potential(self.potential)
        nf = self.num_filters
        default_scale, gain = _FOE_INIT.get(pot.name, (300.0, 1.4))
        init_scale = self.init_scale or default_scale
        weight = self.init_weight or gain * max(task.sigma, 0.01) / (nf * init_scale)
        init = init_fields_of_experts(key, nf, self.size, bias=self.bias, dtype=_float(0).dtype)
        if self.init == "dct":
            dct = dct_filters(self.size, min(nf, self.size**2 - 1))
            init["filters"] = init["filters"].at[: len(dct)].set(dct.astype(init["filters"].dtype))
        params: dict[str, Any] = {
            "lam": _float(self.lam),
            "tau": _float(1.0),
            "K": init["filters"],
            "log_weights": jnp.full((nf,), math.log(weight), init["filters"].dtype),
            "log_scale": _float(math.log(init_scale)),
        }
        if self.bias:
            params["b"] = init["bias"]
        if not tied:
            params["C"] = init["filters"]
        boundary, step = self.boundary, self.step

        def banks(p):
            s = jnp.exp(p["log_scale"])
            w = jnp.exp(p["log_weights"])
            return s, w

        if tied:
            base = energies.tied_foe_map(op, potential=pot, boundary=boundary)

            def T(x, p, y):
                s, w = banks(p)
                reg = {"filters": s * p["K"], "weights": w}
                if "b" in p:
                    reg["bias"] = p["b"]
                return base(x, {"lam": p["lam"], "tau": p["tau"], "reg": reg}, y)

        else:

            def T(x, p, y):
                s, w = banks(p)
                z = correlate(x, s * p["K"], boundary)
                if "b" in p:
                    z = z + p["b"][:, None, None]
                a = w[:, None, None] * pot.drho(z)
                g = p["lam"] * op.adjoint(op(x) - y) + correlate_adjoint(a, s * p["C"], boundary)
                return x - p["tau"] * g

        def refresh(p):
            s, w = banks(_stop(p))
            k = jax.lax.stop_gradient(p["K"])
            c = jax.lax.stop_gradient(p.get("C", p["K"]))
            if step == "safe":
                if tied:
                    lip = energies.lipschitz_bound(op_norm, p["lam"], s * k, w, pot)
                else:
                    l1k = jnp.sum(jnp.abs(s * k), axis=(1, 2))
                    l1c = jnp.sum(jnp.abs(s * c), axis=(1, 2))
                    lip = p["lam"] * op_norm**2 + pot.sup_ddrho * jnp.sum(w * l1k * l1c)
            else:
                root = jnp.sqrt(w)[:, None, None] * s
                nk = bank_norm(root * k, shape, boundary)
                nc = nk if tied else bank_norm(root * c, shape, boundary)
                lip = p["lam"] * op_norm**2 + pot.sup_ddrho * nk * nc
            return {**p, "tau": jax.lax.stop_gradient(1.0 / lip).astype(p["tau"].dtype)}

        params = jax.jit(refresh)(params)
        learned = (
            f"{nf} filters {self.size}x{self.size}"
            + (" (K) and a second bank C" if not tied else "")
            + ", per-filter weights, potential scale"
            + (", biases" if self.bias else "")
        )
        return ModelInstance(
            arch=self.name,
            tied=tied,
            image_shape=shape,
            params=params,
            T=T,
            x0_fn=op.adjoint,
            refresh=refresh,
            trainable=_labels(params, ("lam", "tau")),
            operator=op,
            learned=learned,
        )


# --------------------------------------------------------------------------------------------
# The paper's normalised convolutional models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _NormalisedConv(AbstractModel):
    """The paper's CelebA model: ``G(u) = γ c/‖C‖ Cᵀ σ(χ c/‖K‖ K u + b)`` (``C = K`` tied).

    Learned: the filters ``K`` (and ``C`` untied) and biases ``b``. Fixed: ``lam`` (λ; the
    paper's 18.16 at its noise level ε = 0.1, and by default (``lam="auto"``) scaled like the
    MAP weight ``1/σ²`` for other noise levels, ``λ = 18.16 · (0.1 / max(σ, 0.005))²``),
    ``gamma`` (γ), ``chi`` (χ = 100), ``c`` (≈ 2.73), and the derived ``K_norm``/``C_norm``
    (from the spectra, :func:`bank_norm`, where the paper uses power iteration; refreshed after
    every optimiser step as in the paper, treated as constants by the gradient) and ``tau``.
    ``step="safe"`` (default): ``τ = 1/(λ‖A‖² + |γ|χc²)``
    (the normalisation bounds ``‖∂G‖ ≤ γχc²``, so the tied map contracts); ``step="paper"``:
    ``τ = 1/(8χ)``. ``learn`` names scalars among ``("lam", "gamma")`` to learn as well.
    """

    name: ClassVar[str] = "conv"
    num_filters: int = 2
    size: int = 11
    activation: str = "tanh"
    lam: float | str = "auto"
    gamma: float = 1.0
    chi: float = 100.0
    c: float = 2.73
    step: str = "safe"
    boundary: str = "circular"
    learn: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _potential_of(self.activation)
        _choose("step", self.step, ("safe", "paper"))
        _choose("boundary", self.boundary, _BOUNDARIES)
        object.__setattr__(self, "learn", tuple(self.learn))
        for name in self.learn:
            _choose("learn entry", name, ("lam", "gamma"))
        if isinstance(self.lam, str):
            _choose("lam", self.lam, ("auto",))
        elif not self.lam > 0:
            raise ValueError(f"{self.name}: lam must be positive or 'auto', got {self.lam}")
        if not (self.chi > 0 and self.c > 0):
            raise ValueError(f"{self.name}: chi and c must be positive")

    def data_weight(self, task: Task) -> float:
        """λ for ``task``: the given number, or ``18.16 · (0.1 / max(σ, 0.005))²``."""
        if self.lam == "auto":
            return 18.16 * (0.1 / max(task.sigma, 0.005)) ** 2
        return float(self.lam)

    def init_filters(self, key: PRNGKeyArray) -> Array:
        raise NotImplementedError

    def build(self, key, task, image_shape, tied=True):
        shape = _check_common(self.name, task, image_shape)
        op = task.operator(shape)
        op_norm = task.operator_norm_bound()
        sigma = get_activation(self.activation)
        sup = 1.0  # every named activation is 1-Lipschitz
        k = self.init_filters(key).astype(_float(0).dtype)
        nf = k.shape[0]
        params: dict[str, Any] = {
            "lam": _float(self.data_weight(task)),
            "tau": _float(1.0),
            "gamma": _float(self.gamma),
            "chi": _float(self.chi),
            "c": _float(self.c),
            "K": k,
            "b": jnp.zeros((nf,), k.dtype),
            "K_norm": _float(1.0),
        }
        if not tied:
            params["C"] = k
            params["C_norm"] = _float(1.0)
        boundary, step = self.boundary, self.step

        if tied:
            base = energies.tied_foe_map(
                op, potential=_potential_of(self.activation), boundary=boundary
            )

            def T(x, p, y):
                scale = p["chi"] * p["c"] / p["K_norm"]
                reg = {
                    "filters": scale * p["K"],
                    "weights": jnp.full((nf,), 1.0, p["K"].dtype) * (p["gamma"] / p["chi"]),
                    "bias": p["b"],
                }
                return base(x, {"lam": p["lam"], "tau": p["tau"], "reg": reg}, y)

        else:
            T = energies.deq_conv_map(op, activation=sigma, boundary=boundary, normalize=True)

        def refresh(p):
            q = _stop(p)
            new = {"K_norm": bank_norm(q["K"], shape, boundary)}
            if not tied:
                new["C_norm"] = bank_norm(q["C"], shape, boundary)
            if step == "paper":
                tau = 1.0 / (8.0 * q["chi"])
            else:
                tau = 1.0 / (
                    q["lam"] * op_norm**2 + jnp.abs(q["gamma"]) * q["chi"] * q["c"] ** 2 * sup
                )
            new["tau"] = tau
            return {**p, **{n: jax.lax.stop_gradient(v).astype(p[n].dtype) for n, v in new.items()}}

        params = jax.jit(refresh)(params)
        frozen = [
            n
            for n in ("lam", "tau", "gamma", "chi", "c", "K_norm", "C_norm")
            if n not in self.learn
        ]
        learned = (
            f"{nf} filters {self.size}x{self.size}" + ("" if tied else " (K) and C") + ", biases"
        )
        if self.learn:
            learned += ", " + ", ".join(self.learn)
        return ModelInstance(
            arch=self.name,
            tied=tied,
            image_shape=shape,
            params=params,
            T=T,
            x0_fn=op.adjoint,
            refresh=refresh,
            trainable=_labels(params, frozen),
            operator=op,
            learned=learned,
        )


@dataclasses.dataclass(frozen=True)
class Conv2x11(_NormalisedConv):
    """The paper's 2 filters 11×11 with TV-like initialisation (``order`` 1: ``[−1, 1]``, 2:
    ``[1, −2, 1]``, horizontally and vertically), tanh; see :class:`_NormalisedConv` for the
    normalisation, what is learned and the step."""

    name: ClassVar[str] = "conv2x11"
    num_filters: int = 2
    size: int = 11
    order: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in (1, 2):
            raise ValueError(f"conv2x11: order must be 1 or 2, got {self.order}")
        if self.num_filters != 2:
            raise ValueError("conv2x11: the TV-like initialisation has exactly 2 filters")

    def init_filters(self, key):
        return tv_like_filters(self.order, self.size)


@dataclasses.dataclass(frozen=True)
class Conv30x3(_NormalisedConv):
    """The paper's 30 filters 3×3, random (standard normal, zero-mean) initialisation, tanh; see
    :class:`_NormalisedConv` for the normalisation, what is learned and the step."""

    name: ClassVar[str] = "conv30x3"
    num_filters: int = 30
    size: int = 3

    def init_filters(self, key):
        k = jax.random.normal(key, (self.num_filters, self.size, self.size), _float(0).dtype)
        return k - jnp.mean(k, axis=(1, 2), keepdims=True)


# --------------------------------------------------------------------------------------------
# Dense (MNIST)
# --------------------------------------------------------------------------------------------

_DENSE_POTENTIAL = {"relu": "relu2", "soft_shrink": "soft_shrink", "identity": "quadratic"}


@dataclasses.dataclass(frozen=True)
class Dense(AbstractModel):
    """The paper's MNIST model: ``G(u) = γ Wᵀ σ(W vec(u) + b)`` tied, ``γ V σ(W vec(u) + b)``
    untied, ``W`` (d × d, ``d = H·W``), ``b`` (d).

    Learned: ``W``, ``b`` (and ``V``, initialised to ``Wᵀ``): about 0.62 M parameters tied and
    1.23 M untied for 28×28 digits. Fixed: ``lam`` (λ = 1), ``gamma`` (γ), ``tau``. ``σ`` is
    ``"relu"``, ``"soft_shrink"`` (threshold ``shrink``) or ``"identity"``. ``tau="safe"``
    (default) recomputes ``τ = 1/(λ‖A‖² + |γ| ‖W‖ ‖V‖)`` (``V = Wᵀ`` tied; norms by power
    iteration) after every step; a number fixes τ (the paper's grid: 0.01 … 2.1). ``init_scale``
    scales the Gaussian init (``‖W‖ ≈ 2·init_scale``).
    """

    name: ClassVar[str] = "dense"
    activation: str = "relu"
    shrink: float = 0.5
    gamma: float = 1.0
    lam: float = 1.0
    tau: float | str = "safe"
    init_scale: float = 0.5

    def __post_init__(self) -> None:
        _choose("activation", self.activation, tuple(_DENSE_POTENTIAL))
        if isinstance(self.tau, str):
            _choose("tau", self.tau, ("safe",))
        elif not self.tau > 0:
            raise ValueError(f"dense: tau must be positive or 'safe', got {self.tau}")

    def build(self, key, task, image_shape, tied=True):
        shape = _check_common(self.name, task, image_shape)
        op = task.operator(shape)
        op_norm = task.operator_norm_bound()
        d = shape[0] * shape[1]
        opts = {"delta": self.shrink} if self.activation == "soft_shrink" else {}
        sigma = get_activation(self.activation, **opts)
        init = init_dense(key, d, scale=self.init_scale, gamma=self.gamma, dtype=_float(0).dtype)
        params: dict[str, Any] = {
            "lam": _float(self.lam),
            "tau": _float(1.0 if self.tau == "safe" else self.tau),
            "gamma": init["gamma"],
            "W": init["W"],
            "b": init["b"],
        }
        if not tied:
            params["V"] = init["W"].T
        base = energies.deq_dense_map(op, activation=sigma)
        if tied:

            def T(x, p, y):
                return base(x, {**p, "V": p["W"].T}, y)

        else:
            T = base
        fixed_tau = self.tau != "safe"

        def refresh(p):
            if fixed_tau:
                return p
            q = _stop(p)
            nw = matrix_norm(q["W"])
            nv = nw if tied else matrix_norm(q["V"].T)  # ‖V‖ = ‖Vᵀ‖; equal to nw at init
            tau = 1.0 / (q["lam"] * op_norm**2 + jnp.abs(q["gamma"]) * nw * nv)
            return {**p, "tau": jax.lax.stop_gradient(tau).astype(p["tau"].dtype)}

        params = jax.jit(refresh)(params)
        return ModelInstance(
            arch=self.name,
            tied=tied,
            image_shape=shape,
            params=params,
            T=T,
            x0_fn=op.adjoint,
            refresh=refresh,
            trainable=_labels(params, ("lam", "tau", "gamma")),
            operator=op,
            learned=f"W ({d}x{d}), b ({d})" + ("" if tied else f", V ({d}x{d})"),
        )


# --------------------------------------------------------------------------------------------
# Smoothed TV (the baseline)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TV(AbstractModel):
    """Smoothed TV ``E(x) = λ/2‖Ax − y‖² + weight Σ sqrt(|∇x|² + ε²)``, ``λ = 1``.

    The one parameter ``weight`` is tuned on a validation set by :func:`tune_tv` (a 1-D search),
    not trained by gradients (it is still an array leaf, marked trainable). ``tau`` is derived:
    ``τ = 1/(λ‖A‖² + 8·weight/ε)`` (``‖∇‖² ≤ 8``, ``sqrt`` has curvature ≤ 1/ε), so the map
    contracts. Tied only.
    """

    name: ClassVar[str] = "tv"
    untied_ok: ClassVar[bool] = False
    weight: float = 0.05
    eps: float = 0.02
    boundary: str = "circular"

    def __post_init__(self) -> None:
        _choose("boundary", self.boundary, _BOUNDARIES)
        if not (self.weight > 0 and self.eps > 0):
            raise ValueError("tv: weight and eps must be positive")

    def build(self, key, task, image_shape, tied=True):
        shape = _check_common(self.name, task, image_shape)
        if not tied:
            raise ValueError(
                "tv: smoothed TV is a variational baseline; it has no untied (DEQ) map"
            )
        op = task.operator(shape)
        op_norm = task.operator_norm_bound()
        boundary = self.boundary
        params = {
            "lam": _float(1.0),
            "tau": _float(1.0),
            "weight": _float(self.weight),
            "eps": _float(self.eps),
        }
        grad_tv = jax.grad(
            lambda x, w, e: smoothed_tv(x, {"weight": w, "eps": e}, boundary=boundary)
        )

        def T(x, p, y):
            g = p["lam"] * op.adjoint(op(x) - y) + grad_tv(x, p["weight"], p["eps"])
            return x - p["tau"] * g

        def refresh(p):
            q = _stop(p)
            tau = 1.0 / (q["lam"] * op_norm**2 + 8.0 * jnp.abs(q["weight"]) / q["eps"])
            return {**p, "tau": jax.lax.stop_gradient(tau).astype(p["tau"].dtype)}

        params = jax.jit(refresh)(params)
        return ModelInstance(
            arch=self.name,
            tied=True,
            image_shape=shape,
            params=params,
            T=T,
            x0_fn=op.adjoint,
            refresh=refresh,
            trainable={"lam": False, "tau": False, "weight": True, "eps": False},
            operator=op,
            learned="one weight (tuned by tune_tv)",
        )


@dataclasses.dataclass(frozen=True)
class TVTuning:
    """Result of :func:`tune_tv`: the best ``weight``, its mean ``psnr``, the tuned ``params``
    and every ``(weight, psnr)`` trial in the order evaluated; ``input_psnr`` is the PSNR of
    the measurements ``y`` (the degraded input)."""

    weight: float
    psnr: float
    params: dict[str, Any]
    trials: list[tuple[float, float]]
    input_psnr: float


def tune_tv(
    task: Task,
    images: Array,
    *,
    key: PRNGKeyArray | int = 0,
    y: Array | None = None,
    weight_range: tuple[float, float] = (1e-3, 1.0),
    grid: int = 7,
    refine: int = 6,
    eps: float = 0.02,
    data_range: float = 1.0,
    solver: AbstractFixedPointSolver | None = None,
) -> TVTuning:
    """Tune the smoothed-TV weight on clean ``images`` ``(n, H, W)`` by maximising mean PSNR.

    The measurements are ``task.degrade(images, key)`` (or ``y`` if given). The search is 1-D in
    ``log(weight)``: a ``grid`` of log-spaced weights over ``weight_range``, then ``refine``
    golden-section steps in the bracket around the best grid point. The weight is an array leaf,
    so all trials share one compiled solve. ``solver`` defaults to ``Anderson(tol=1e-5,
    max_iter=500)``; unconverged solves are used as they are.
    """
    images = jnp.asarray(images, dtype=_float(0).dtype)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"tune_tv: images must be (n, H, W), got {images.shape}")
    lo, hi = weight_range
    if not 0 < lo < hi:
        raise ValueError(f"tune_tv: need 0 < weight_range[0] < weight_range[1], got {weight_range}")
    if grid < 3:
        raise ValueError("tune_tv: grid must be at least 3")
    y = task.degrade(images, key) if y is None else jnp.asarray(y, images.dtype)
    inst = TV(eps=eps).build(jax.random.PRNGKey(0), task, images.shape[-2:])
    solver = Anderson(tol=1e-5, max_iter=500) if solver is None else solver
    from ._fixed_point import fixed_point  # local: models sits above the engine

    @jax.jit
    def score(log_w):
        p = inst.refresh({**inst.params, "weight": jnp.exp(log_w)})

        def one(yy):
            return fixed_point(inst.T, inst.x0_fn(yy), p, yy, solver=solver, throw=False).value

        return jnp.mean(psnr(jax.vmap(one)(y), images, data_range))

    cache: dict[float, float] = {}

    def f(t: float) -> float:
        if t not in cache:
            cache[t] = float(score(jnp.asarray(t, images.dtype)))
        return cache[t]

    ts = np.linspace(math.log(lo), math.log(hi), grid)
    vals = [f(float(t)) for t in ts]
    i = int(np.nanargmax(vals))
    a, b = float(ts[max(i - 1, 0)]), float(ts[min(i + 1, grid - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(refine):
        if f(c) >= f(d):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    best_t = max(cache, key=lambda t: cache[t] if np.isfinite(cache[t]) else -np.inf)
    best_w = math.exp(best_t)
    params = inst.refresh({**inst.params, "weight": jnp.asarray(best_w, images.dtype)})
    x_in = y if y.shape == images.shape else jax.vmap(inst.x0_fn)(y)  # the measurements
    return TVTuning(
        weight=best_w,
        psnr=cache[best_t],
        params=params,
        trials=[(math.exp(t), v) for t, v in cache.items()],
        input_psnr=float(jnp.mean(psnr(x_in, images, data_range))),
    )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

#: Architecture name -> class.
ARCHITECTURES: dict[str, type[AbstractModel]] = {
    "foe": FoE,
    "conv2x11": Conv2x11,
    "conv30x3": Conv30x3,
    "dense": Dense,
    "tv": TV,
}


def get_model(name: str, **options: Any) -> AbstractModel:
    """The architecture ``name`` with hyperparameters ``options`` (see each class).

    Unknown names or options raise ``ValueError`` listing the choices.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    cls = ARCHITECTURES[name]
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
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
) -> ModelInstance:
    """Shorthand for ``get_model(name, **options).build(key, task, image_shape, tied)``."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    return get_model(name, **options).build(key, task, tuple(image_shape), tied)


def empirical_lipschitz(
    instance: ModelInstance,
    params: PyTree,
    y: Array,
    *,
    key: PRNGKeyArray | int = 0,
    num_pairs: int = 8,
    spread: float = 0.1,
) -> float:
    """``max ‖T(x₁) − T(x₂)‖ / ‖x₁ − x₂‖`` over random pairs around ``x0_fn(y)`` (a lower
    estimate of the map's Lipschitz constant; below 1 on a contraction)."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    y = jnp.asarray(y)
    base = instance.x0_fn(y)
    k1, k2 = jax.random.split(key)
    shape = (num_pairs,) + base.shape
    x1 = base + spread * jax.random.normal(k1, shape, base.dtype)
    x2 = x1 + spread * 0.1 * jax.random.normal(k2, shape, base.dtype)

    @jax.jit
    def ratios(params, y, x1, x2):
        tx = jax.vmap(lambda x: instance.T(x, params, y))(jnp.concatenate([x1, x2]))
        num = jnp.linalg.norm((tx[:num_pairs] - tx[num_pairs:]).reshape(num_pairs, -1), axis=1)
        den = jnp.linalg.norm((x1 - x2).reshape(num_pairs, -1), axis=1)
        return num / den

    return float(jnp.max(ratios(params, y, x1, x2)))


def _potential_of(activation: str) -> str:
    names = {
        "tanh": "logcosh",
        "relu": "relu2",
        "soft_shrink": "soft_shrink",
        "identity": "quadratic",
    }
    if activation not in names:
        raise ValueError(
            f"activation {activation!r} has no potential; choose one of {sorted(names)}"
        )
    return names[activation]


def _choose(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(choices)}")
