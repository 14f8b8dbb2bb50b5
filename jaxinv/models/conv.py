"""The paper's normalised convolutional models (CelebA): 2 filters 11×11 and 30 filters 3×3."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import energies
from .._conv import BOUNDARIES
from ..operators import bank_norm
from ..regularizers import get_activation, tv_like_filters
from ..tasks import Task
from ._base import (
    AbstractModel,
    Architecture,
    _check_common,
    _choose,
    _float,
    _potential_of,
    _stop,
    refreshed,
)

#: The scalars :class:`NormalisedConv` can learn besides the filters and biases.
LEARNABLE = ("lam", "gamma")


class ConvModel(AbstractModel):
    """``T(u; y) = u − τ (λ Aᵀ(Au − y) + G(u))``, ``G(u) = γ c/‖C‖ Cᵀ σ(χ c/‖K‖ K u + b)``
    (``C = K`` tied: then ``G = ∇R`` and the map is a gradient step). Built by
    :class:`NormalisedConv` (which documents the step and what is learned).

    Attributes:
        lam, tau, gamma, chi, c: λ, the step τ (derived), γ, χ, c.
        K: filters ``(F, k, k)``; b: biases ``(F,)``.
        K_norm: ``‖K‖₂`` (derived).
        C, C_norm: the untied second bank and its norm (``None`` when tied).
        activation, step, boundary, learn: the settings of :class:`NormalisedConv`.
    """

    lam: Float[Array, ""]
    tau: Float[Array, ""]
    gamma: Float[Array, ""]
    chi: Float[Array, ""]
    c: Float[Array, ""]
    K: Float[Array, "F k k"]
    b: Float[Array, " F"]
    K_norm: Float[Array, ""]
    C: Float[Array, "F k k"] | None = None
    C_norm: Float[Array, ""] | None = None
    activation: str = eqx.field(static=True, default="tanh")
    step: str = eqx.field(static=True, default="safe")
    boundary: str = eqx.field(static=True, default="circular")
    learn: tuple[str, ...] = eqx.field(static=True, default=())

    def frozen(self) -> tuple[str, ...]:
        names = ("lam", "tau", "gamma", "chi", "c", "K_norm", "C_norm")
        return tuple(n for n in names if n not in self.learn)

    def learned(self) -> str:
        nf, size = self.K.shape[0], self.K.shape[-1]
        out = f"{nf} filters {size}x{size}" + ("" if self.tied else " (K) and C") + ", biases"
        return out + "".join(", " + n for n in self.learn)

    def __call__(self, x: Float[Array, "H W"], y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        if self.tied:
            T = energies.tied_foe_map(
                self.operator, potential=_potential_of(self.activation), boundary=self.boundary
            )
            nf = self.K.shape[0]
            reg = {
                "filters": (self.chi * self.c / self.K_norm) * self.K,
                "weights": jnp.full((nf,), 1.0, self.K.dtype) * (self.gamma / self.chi),
                "bias": self.b,
            }
            return T(x, {"lam": self.lam, "tau": self.tau, "reg": reg}, y)
        T = energies.deq_conv_map(
            self.operator,
            activation=get_activation(self.activation),
            boundary=self.boundary,
            normalize=True,
        )
        p = {
            "lam": self.lam,
            "tau": self.tau,
            "gamma": self.gamma,
            "chi": self.chi,
            "c": self.c,
            "K": self.K,
            "b": self.b,
            "K_norm": self.K_norm,
            "C": self.C,
            "C_norm": self.C_norm,
        }
        return T(x, p, y)

    def refresh(self) -> ConvModel:
        """``‖K‖`` (and ``‖C‖``) from the spectra, then ``τ = 1/(λ‖A‖² + |γ|χc²)``
        (``step="safe"``) or ``1/(8χ)`` (``step="paper"``)."""
        q = _stop(self)
        new = {"K_norm": bank_norm(q.K, self.image_shape, self.boundary)}
        if not self.tied:
            new["C_norm"] = bank_norm(q.C, self.image_shape, self.boundary)
        if self.step == "paper":
            new["tau"] = 1.0 / (8.0 * q.chi)
        else:
            sup = 1.0  # every named activation is 1-Lipschitz
            new["tau"] = 1.0 / (q.lam * self.op_norm**2 + jnp.abs(q.gamma) * q.chi * q.c**2 * sup)
        names = sorted(new)
        return eqx.tree_at(
            lambda m: [getattr(m, n) for n in names],
            self,
            [jax.lax.stop_gradient(new[n]).astype(getattr(self, n).dtype) for n in names],
        )


@dataclasses.dataclass(frozen=True)
class NormalisedConv(Architecture):
    """The paper's CelebA model: ``G(u) = γ c/‖C‖ Cᵀ σ(χ c/‖K‖ K u + b)`` (``C = K`` tied);
    builds a :class:`ConvModel`.

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
    learn: Sequence[str] = ()  # stored as a tuple

    def __post_init__(self) -> None:
        _potential_of(self.activation)
        _choose("step", self.step, ("safe", "paper"))
        _choose("boundary", self.boundary, BOUNDARIES)
        object.__setattr__(self, "learn", tuple(self.learn))
        for name in self.learn:
            _choose("learn entry", name, LEARNABLE)
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

    def build(self, key, task, image_shape, tied=True) -> ConvModel:
        shape = _check_common(self.name, task, image_shape)
        k = self.init_filters(key).astype(_float(0).dtype)
        nf = k.shape[0]
        model = ConvModel(
            **self.common_fields(task, shape, tied),
            lam=_float(self.data_weight(task)),
            tau=_float(1.0),
            gamma=_float(self.gamma),
            chi=_float(self.chi),
            c=_float(self.c),
            K=k,
            b=jnp.zeros((nf,), k.dtype),
            K_norm=_float(1.0),
            C=None if tied else k,
            C_norm=None if tied else _float(1.0),
            activation=self.activation,
            step=self.step,
            boundary=self.boundary,
            learn=tuple(self.learn),
        )
        return refreshed(model)


@dataclasses.dataclass(frozen=True)
class Conv2x11(NormalisedConv):
    """The paper's 2 filters 11×11 with TV-like initialisation (``order`` 1: ``[−1, 1]``, 2:
    ``[1, −2, 1]``, horizontally and vertically), tanh; see :class:`NormalisedConv` for the
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
class Conv30x3(NormalisedConv):
    """The paper's 30 filters 3×3, random (standard normal, zero-mean) initialisation, tanh; see
    :class:`NormalisedConv` for the normalisation, what is learned and the step."""

    name: ClassVar[str] = "conv30x3"
    num_filters: int = 30
    size: int = 3

    def init_filters(self, key):
        k = jax.random.normal(key, (self.num_filters, self.size, self.size), _float(0).dtype)
        return k - jnp.mean(k, axis=(1, 2), keepdims=True)
