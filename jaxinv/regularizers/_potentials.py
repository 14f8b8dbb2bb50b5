"""Scalar potentials ``ρ``, their derivatives ``ρ'`` (the activations) and bounds ``sup|ρ''|``.

A potential is a small frozen dataclass — hashable and compared by value — so it can be passed as a
static argument to jitted code without recompiling for equal settings.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

_LOG2 = math.log(2.0)


@jax.custom_jvp
def _logcosh(t: Array) -> Array:
    a = jnp.abs(t)
    return a + jnp.log1p(jnp.exp(-2.0 * a)) - _LOG2


@_logcosh.defjvp
def _logcosh_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    return _logcosh(t), jnp.tanh(t) * dt


class AbstractPotential(abc.ABC):
    """A potential ``ρ: R → R`` (elementwise) with ``drho = ρ'`` and ``sup_ddrho ≥ |ρ''|``."""

    name: str

    @abc.abstractmethod
    def rho(self, t: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """The potential ``ρ(t)``, elementwise."""

    @abc.abstractmethod
    def drho(self, t: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """Its derivative ``ρ'(t)`` (the activation ``σ``), elementwise."""

    @property
    @abc.abstractmethod
    def sup_ddrho(self) -> float:
        """``sup_t |ρ''(t)|``: the Lipschitz constant of ``ρ'``, used for safe step sizes."""


def _check_delta(delta: float) -> None:
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")


@dataclasses.dataclass(frozen=True)
class _LogCosh(AbstractPotential):
    """``ρ = log cosh t = |t| + log(1 + e^{−2|t|}) − log 2`` (stable); ``ρ' = tanh``;
    ``ρ'' ≤ 1``."""

    name = "logcosh"

    def rho(self, t):
        return _logcosh(jnp.asarray(t))

    def drho(self, t):
        return jnp.tanh(t)

    @property
    def sup_ddrho(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class _StudentT(AbstractPotential):
    """``ρ = log(1 + t²)``, ``ρ' = 2t / (1 + t²)``, ``ρ'' = 2(1 − t²)/(1 + t²)² ∈ [−¼, 2]``
    (non-convex)."""

    name = "student_t"

    def rho(self, t):
        return jnp.log1p(jnp.square(t))

    def drho(self, t):
        t = jnp.asarray(t)
        return 2.0 * t / (1.0 + jnp.square(t))

    @property
    def sup_ddrho(self) -> float:
        return 2.0


@dataclasses.dataclass(frozen=True)
class _Huber(AbstractPotential):
    """``ρ = t²/2`` for ``|t| ≤ δ``, ``δ(|t| − δ/2)`` beyond; ``ρ' = clip(t, −δ, δ)``;
    ``ρ'' ≤ 1``."""

    delta: float = 1.0
    name = "huber"

    def __post_init__(self):
        _check_delta(self.delta)

    def rho(self, t):
        a = jnp.abs(t)
        return jnp.where(a <= self.delta, 0.5 * jnp.square(t), self.delta * (a - 0.5 * self.delta))

    def drho(self, t):
        return jnp.clip(t, -self.delta, self.delta)

    @property
    def sup_ddrho(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class _SoftShrink(AbstractPotential):
    """``ρ = ½ max(|t| − δ, 0)²``, ``ρ' = sign(t) max(|t| − δ, 0)`` (soft-shrinkage);
    ``ρ'' ≤ 1``."""

    delta: float = 0.5
    name = "soft_shrink"

    def __post_init__(self):
        _check_delta(self.delta)

    def rho(self, t):
        return 0.5 * jnp.square(jnp.maximum(jnp.abs(t) - self.delta, 0.0))

    def drho(self, t):
        return jnp.sign(t) * jnp.maximum(jnp.abs(t) - self.delta, 0.0)

    @property
    def sup_ddrho(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class _Quadratic(AbstractPotential):
    """``ρ = t²/2``, ``ρ' = t`` (identity activation), ``ρ'' = 1``."""

    name = "quadratic"

    def rho(self, t):
        return 0.5 * jnp.square(t)

    def drho(self, t):
        return jnp.asarray(t)

    @property
    def sup_ddrho(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class _ReLU2(AbstractPotential):
    """``ρ = ½ max(t, 0)²``, ``ρ' = ReLU``, ``ρ'' ≤ 1``."""

    name = "relu2"

    def rho(self, t):
        return 0.5 * jnp.square(jnp.maximum(t, 0.0))

    def drho(self, t):
        return jnp.maximum(t, 0.0)

    @property
    def sup_ddrho(self) -> float:
        return 1.0


_POTENTIALS: dict[str, type[AbstractPotential]] = {
    "logcosh": _LogCosh,
    "student_t": _StudentT,
    "huber": _Huber,
    "soft_shrink": _SoftShrink,
    "quadratic": _Quadratic,
    "relu2": _ReLU2,
}

# activation name -> potential whose derivative it is
_ACTIVATIONS: dict[str, str] = {
    "tanh": "logcosh",
    "relu": "relu2",
    "soft_shrink": "soft_shrink",
    "identity": "quadratic",
    "clip": "huber",
}


def get_potential(name: str | AbstractPotential, **options: float) -> AbstractPotential:
    """Look up a potential by name: ``"logcosh"``, ``"student_t"``, ``"huber"`` (option ``delta``,
    default 1), ``"soft_shrink"`` (option ``delta``, default 0.5), ``"quadratic"``, ``"relu2"``.

    A potential instance is returned unchanged (``options`` must then be empty).
    """
    if isinstance(name, AbstractPotential):
        if options:
            raise ValueError("options can only be given together with a potential name")
        return name
    if name not in _POTENTIALS:
        raise ValueError(f"unknown potential {name!r}; choose one of {sorted(_POTENTIALS)}")
    try:
        return _POTENTIALS[name](**options)
    except TypeError as err:
        raise ValueError(f"potential {name!r} does not accept options {sorted(options)}") from err


def get_activation(
    name: str | Callable[[Array], Array], **options: float
) -> Callable[[Array], Array]:
    """Activation ``σ`` for untied (DEQ) maps: ``"tanh"``, ``"relu"``, ``"soft_shrink"`` (option
    ``delta``), ``"identity"``, ``"clip"`` (option ``delta``) — each the derivative ``ρ'`` of a
    potential above, so ``σ`` is ``sup_ddrho``-Lipschitz. A callable is returned unchanged.
    """
    if callable(name):
        if options:
            raise ValueError("options can only be given together with an activation name")
        return name
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return get_potential(_ACTIVATIONS[name], **options).drho
