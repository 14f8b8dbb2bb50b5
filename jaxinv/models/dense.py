"""The paper's MNIST model: one dense layer on the flattened image."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import energies
from ..operators import matrix_norm
from ..regularizers import get_activation, init_dense
from ._base import AbstractModel, Architecture, _check_common, _choose, _float, _stop, refreshed

_DENSE_POTENTIAL = {"relu": "relu2", "soft_shrink": "soft_shrink", "identity": "quadratic"}


class DenseModel(AbstractModel):
    """``T(u; y) = u − τ (λ Aᵀ(Au − y) + γ V σ(W vec(u) + b))`` with ``V = Wᵀ`` tied. Built by
    :class:`Dense`.

    Attributes:
        lam, tau, gamma: λ, the step τ (derived unless fixed), γ.
        W: ``(d, d)``, ``d = H·W``; b: ``(d,)``; V: the untied ``(d, d)`` (``None`` when tied,
            ``Wᵀ`` in the tied model's :meth:`solve_form`).
        activation, shrink: σ and its soft-shrink threshold.
        fixed_tau: ``True`` when τ was given as a number (then :meth:`refresh` keeps it).
    """

    lam: Float[Array, ""]
    tau: Float[Array, ""]
    gamma: Float[Array, ""]
    W: Float[Array, "d d"]
    b: Float[Array, " d"]
    V: Float[Array, "d d"] | None = None
    activation: str = eqx.field(static=True, default="relu")
    shrink: float = eqx.field(static=True, default=0.5)
    fixed_tau: bool = eqx.field(static=True, default=False)
    center: float = eqx.field(static=True, default=0.0)

    def frozen(self) -> tuple[str, ...]:
        return ("lam", "tau", "gamma")

    def learned(self) -> str:
        d = self.W.shape[0]
        return f"W ({d}x{d}), b ({d})" + ("" if self.tied else f", V ({d}x{d})")

    def __call__(self, x: Float[Array, "H W"], y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        opts = {"delta": self.shrink} if self.activation == "soft_shrink" else {}
        sigma = get_activation(self.activation, **opts)
        T = energies.deq_dense_map(self.operator, activation=sigma, center=self.center)
        v = self.W.T if self.V is None else self.V
        p = {"lam": self.lam, "tau": self.tau, "gamma": self.gamma, "W": self.W, "b": self.b}
        return T(x, {**p, "V": v}, y)

    def solve_form(self) -> DenseModel:
        """Tied: ``V = Wᵀ`` as its own leaf. Under ``vmap`` the two uses of ``W`` would
        otherwise add their per-example ``(d, d)`` cotangents before the batch sum, which XLA
        then cannot turn into one matrix product (``benchmarks/dense_step.py`` times both)."""
        if self.V is not None:
            return self
        return eqx.tree_at(lambda m: m.V, self, self.W.T, is_leaf=lambda leaf: leaf is None)

    def refresh(self) -> DenseModel:
        """``τ = 1/(λ‖A‖² + |γ| ‖W‖ ‖V‖)`` (norms by power iteration), unless τ is fixed."""
        if self.fixed_tau:
            return self
        q = _stop(self)
        nw = matrix_norm(q.W)
        nv = nw if self.tied else matrix_norm(q.V.T)  # ‖V‖ = ‖Vᵀ‖; equal to nw at init
        tau = 1.0 / (q.lam * self.op_norm**2 + jnp.abs(q.gamma) * nw * nv)
        return eqx.tree_at(lambda m: m.tau, self, jax.lax.stop_gradient(tau).astype(self.tau.dtype))


@dataclasses.dataclass(frozen=True)
class Dense(Architecture):
    """The paper's MNIST model: ``G(u) = γ Wᵀ σ(W vec(u) + b)`` tied, ``γ V σ(W vec(u) + b)``
    untied, ``W`` (d × d, ``d = H·W``), ``b`` (d); builds a :class:`DenseModel`.

    Learned: ``W``, ``b`` (and ``V``, initialised to ``Wᵀ``): about 0.62 M parameters tied and
    1.23 M untied for 28×28 digits. Fixed: ``lam`` (λ = 1), ``gamma`` (γ), ``tau``. ``σ`` is
    ``"relu"``, ``"soft_shrink"`` (threshold ``shrink``) or ``"identity"``. ``tau="safe"``
    (default) recomputes ``τ = 1/(λ‖A‖² + |γ| ‖W‖ ‖V‖)`` (``V = Wᵀ`` tied; norms by power
    iteration) after every step; a number fixes τ (the paper's grid: 0.01 … 2.1). ``init_scale``
    scales the Gaussian init (``‖W‖ ≈ 2·init_scale``); ``bias`` is every entry of the initial
    ``b``. ``center`` (``c``, default 0) writes the pre-activation as ``W(u − c) + b``: the same
    model family, but when most pixels sit at ``c`` (MNIST's background at −1) Adam's steps on
    ``W`` no longer shift every unit's input coherently by ``lr · Σ_j |u_j|``.
    """

    name: ClassVar[str] = "dense"
    activation: str = "relu"
    shrink: float = 0.5
    gamma: float = 1.0
    lam: float = 1.0
    tau: float | str = "safe"
    init_scale: float = 0.5
    bias: float = 0.0
    center: float = 0.0

    def __post_init__(self) -> None:
        _choose("activation", self.activation, tuple(_DENSE_POTENTIAL))
        if isinstance(self.tau, str):
            _choose("tau", self.tau, ("safe",))
        elif not self.tau > 0:
            raise ValueError(f"dense: tau must be positive or 'safe', got {self.tau}")

    def build(self, key, task, image_shape, tied=True) -> DenseModel:
        shape = _check_common(self.name, task, image_shape)
        d = shape[0] * shape[1]
        init = init_dense(
            key, d, scale=self.init_scale, gamma=self.gamma, bias=self.bias, dtype=_float(0).dtype
        )
        model = DenseModel(
            **self.common_fields(task, shape, tied),
            lam=_float(self.lam),
            tau=_float(1.0 if isinstance(self.tau, str) else self.tau),  # str: "safe"
            gamma=init["gamma"],
            W=init["W"],
            b=init["b"],
            V=None if tied else init["W"].T,
            activation=self.activation,
            shrink=float(self.shrink),
            fixed_tau=self.tau != "safe",
            center=float(self.center),
        )
        return refreshed(model)
