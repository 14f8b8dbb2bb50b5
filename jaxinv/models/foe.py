"""Fields of experts: the strong denoiser."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import energies
from .._conv import BOUNDARIES
from ..operators import bank_norm
from ..regularizers import dct_filters, get_potential, init_fields_of_experts
from ._base import AbstractModel, Architecture, _check_common, _choose, _float, refreshed

STEPS = ("safe", "spectral")

#: Potential -> (initial scale, weight gain) of :class:`FoE` (see its docstring).
_FOE_INIT: dict[str, tuple[float, float]] = {"logcosh": (300.0, 1.4), "student_t": (40.0, 2.0)}


class FoEModel(AbstractModel):
    """Fields of experts ``R(x) = Σ_i w_i Σ_pixels ρ(s (k_i * x) + b_i)`` as a fixed-point map.

    Tied (bilevel): ``T(x; y) = x − τ ∇ₓ(λ/2‖Ax − y‖² + R(x))``. Untied (DEQ): the same step with
    ``Σ_i w_i (s c_i)ᵀ * ρ'(s (k_i * x) + b_i)`` and a second filter bank ``C``. Built by
    :class:`FoE` (which documents the initialisation and the step).

    Attributes:
        lam: λ (fixed).
        tau: the step τ (derived by :meth:`refresh`).
        K: filters ``(F, k, k)``.
        log_weights: ``log w_i`` ``(F,)``.
        log_scale: ``log s``.
        b: biases ``(F,)`` or ``None``.
        C: the untied second bank ``(F, k, k)`` (``None`` when tied).
        potential, step, boundary: the settings of :class:`FoE`.
    """

    lam: Float[Array, ""]
    tau: Float[Array, ""]
    K: Float[Array, "F k k"]
    log_weights: Float[Array, " F"]
    log_scale: Float[Array, ""]
    b: Float[Array, " F"] | None = None
    C: Float[Array, "F k k"] | None = None
    potential: str = eqx.field(static=True, default="logcosh")
    step: str = eqx.field(static=True, default="spectral")
    boundary: str = eqx.field(static=True, default="circular")

    def frozen(self) -> tuple[str, ...]:
        return ("lam", "tau")

    def learned(self) -> str:
        nf, size = self.K.shape[0], self.K.shape[-1]
        return (
            f"{nf} filters {size}x{size}"
            + (" (K) and a second bank C" if not self.tied else "")
            + ", per-filter weights, potential scale"
            + (", biases" if self.b is not None else "")
        )

    def _reg(self) -> dict[str, Array]:
        s = jnp.exp(self.log_scale)
        reg = {"filters": s * self.K, "weights": jnp.exp(self.log_weights)}
        if self.b is not None:
            reg["bias"] = self.b
        if not self.tied:
            assert self.C is not None  # an untied model has its second bank
            reg["adjoint_filters"] = s * self.C
        return reg

    def __call__(self, x: Float[Array, "H W"], y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        build = energies.tied_foe_map if self.tied else energies.untied_foe_map
        T = build(self.operator, potential=self.potential, boundary=self.boundary)
        return T(x, {"lam": self.lam, "tau": self.tau, "reg": self._reg()}, y)

    def refresh(self) -> FoEModel:
        """``τ = 1/L`` with ``L`` from the spectra (``step="spectral"``) or the ``‖k‖₁`` bound
        (``step="safe"``); see :class:`FoE`."""
        pot = get_potential(self.potential)
        s = jax.lax.stop_gradient(jnp.exp(self.log_scale))
        w = jax.lax.stop_gradient(jnp.exp(self.log_weights))
        lam = jax.lax.stop_gradient(self.lam)
        k = jax.lax.stop_gradient(self.K)
        c = jax.lax.stop_gradient(self.K if self.C is None else self.C)
        if self.step == "safe":
            if self.tied:
                lip = energies.lipschitz_bound(self.op_norm, lam, s * k, w, pot)
            else:
                l1k = jnp.sum(jnp.abs(s * k), axis=(1, 2))
                l1c = jnp.sum(jnp.abs(s * c), axis=(1, 2))
                lip = lam * self.op_norm**2 + pot.sup_ddrho * jnp.sum(w * l1k * l1c)
        else:
            root = jnp.sqrt(w)[:, None, None] * s
            nk = bank_norm(root * k, self.image_shape, self.boundary)
            nc = nk if self.tied else bank_norm(root * c, self.image_shape, self.boundary)
            lip = lam * self.op_norm**2 + pot.sup_ddrho * nk * nc
        tau = jax.lax.stop_gradient(1.0 / lip).astype(self.tau.dtype)
        return eqx.tree_at(lambda m: m.tau, self, tau)


@dataclasses.dataclass(frozen=True)
class FoE(Architecture):
    """Fields of experts ``R(x) = Σ_i w_i Σ_pixels ρ(s (k_i * x) + b_i)``; builds a
    :class:`FoEModel`.

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
    validation images at σ = 25/255 (``benchmarks/results/settings.md``):

    * log-cosh: ``s = 300`` (filter responses of natural images are O(0.1), so the log-cosh
      acts like a smoothed absolute value, a TV-like start), ``w = 1.4 max(σ, 0.01) / (F s)``;
    * Student-t: ``s = 40`` (noise responses fall in the quadratic core ``|s z| < 1``, edges in
      the flat tails), ``w = 2 max(σ, 0.01) / (F s)``;
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
        _choose("step", self.step, STEPS)
        _choose("boundary", self.boundary, BOUNDARIES)
        _choose("init", self.init, ("dct", "random"))
        if self.num_filters < 1 or self.size < 2:
            raise ValueError("foe: need num_filters >= 1 and size >= 2")
        if not (self.lam > 0 and (self.init_scale is None or self.init_scale > 0)):
            raise ValueError("foe: init_scale and lam must be positive")

    def build(self, key, task, image_shape, tied=True) -> FoEModel:
        shape = _check_common(self.name, task, image_shape)
        pot = get_potential(self.potential)
        nf = self.num_filters
        default_scale, gain = _FOE_INIT.get(pot.name, (300.0, 1.4))
        init_scale = self.init_scale or default_scale
        weight = self.init_weight or gain * max(task.sigma, 0.01) / (nf * init_scale)
        init = init_fields_of_experts(key, nf, self.size, bias=self.bias, dtype=_float(0).dtype)
        filters = init["filters"]
        if self.init == "dct":
            dct = dct_filters(self.size, min(nf, self.size**2 - 1))
            filters = filters.at[: len(dct)].set(dct.astype(filters.dtype))
        model = FoEModel(
            **self.common_fields(task, shape, tied),
            lam=_float(self.lam),
            tau=_float(1.0),
            K=filters,
            log_weights=jnp.full((nf,), math.log(weight), filters.dtype),
            log_scale=_float(math.log(init_scale)),
            b=init["bias"] if self.bias else None,
            C=None if tied else filters,
            potential=self.potential,
            step=self.step,
            boundary=self.boundary,
        )
        return refreshed(model)
