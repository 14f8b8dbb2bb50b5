"""Ridge regularizers with learned linear-spline potentials: CRR-NN (convex) and WCRR-NN
(weakly convex), Goujon et al. 2023 / 2024."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import energies
from .._conv import BOUNDARIES, correlate, correlate_adjoint
from ..operators import bank_norm
from ..regularizers import (
    LinearSpline,
    init_fields_of_experts,
    init_spline_ridge,
    spline_ridge,
    sup_curvature,
)
from ..regularizers import inf_curvature as _inf_curvature
from ._base import AbstractModel, Architecture, _check_common, _choose, _float, _stop, refreshed

KINDS = ("convex", "weakly_convex")


class SplineModel(AbstractModel):
    """The spline-ridge regularizer as a fixed-point map; built by :class:`Spline` (which
    documents the parametrisation, the initialisation and the step).

    ``R(x) = α⁻² Σ_i Σ_pixels ψ_i(α (k̃_i * x))``, ``k̃_i = k_i / ‖K‖``, so ``∇R(x) = α⁻¹ Σ_i
    k̃_iᵀ * ψ_i'(α (k̃_i * x))`` and ``∇²R = K̃ᵀ diag(ψ''(α K̃ x)) K̃``. Tied (bilevel): ``T(x; y)
    = x − τ (λ Aᵀ(Ax − y) + ∇R(x))``. Untied (DEQ): ``∇R`` replaced by ``α⁻¹ Σ_i c̃_iᵀ *
    ψ_i'(α (k̃_i * x))`` with a second bank ``c̃_i = c_i / ‖C‖``.

    Attributes:
        lam: λ (fixed).
        tau: the step τ (derived by :meth:`refresh`).
        K: filters ``(F, k, k)``.
        coeffs: knot values of the activations ``ψ_i'`` ``(F, M + 1)`` before the projection of
            ``spline`` (see :class:`jaxinv.regularizers.LinearSpline`).
        log_scale: ``log α``.
        K_norm: ``‖K‖₂`` on ``image_shape`` (derived).
        C, C_norm: the untied second bank and its norm (``None`` when tied).
        spline: the spline settings (knot spacing, kind, μ); boundary: the convolutions'.
    """

    lam: Float[Array, ""]
    tau: Float[Array, ""]
    K: Float[Array, "F k k"]
    coeffs: Float[Array, "F M"]
    log_scale: Float[Array, ""]
    K_norm: Float[Array, ""]
    C: Float[Array, "F k k"] | None = None
    C_norm: Float[Array, ""] | None = None
    spline: LinearSpline = eqx.field(static=True, default=LinearSpline())
    boundary: str = eqx.field(static=True, default="circular")

    def frozen(self) -> tuple[str, ...]:
        return ("lam", "tau", "K_norm", "C_norm")

    def learned(self) -> str:
        nf, size = self.K.shape[0], self.K.shape[-1]
        kind = "convex" if self.spline.kind == "convex" else f"{self.spline.mu}-weakly convex"
        return (
            f"{nf} filters {size}x{size}"
            + (" (K) and a second bank C" if not self.tied else "")
            + f", {kind} linear-spline potentials with {self.coeffs.shape[1]} knots, a scale"
        )

    def ridge(self) -> dict[str, Array]:
        """``{"filters": K̃, "coeffs": ...}``: the normalised bank and the spline coefficients,
        the arguments of :func:`jaxinv.energies.spline_safe_step` and its relatives."""
        return {"filters": self.K / self.K_norm, "coeffs": self.coeffs}

    def regularizer(self, x: Float[Array, "*B H W"]) -> Float[Array, ""]:
        """``R(x) = α⁻² Σ_i Σ_pixels ψ_i(α (k̃_i * x))`` (tied; summed over leading axes)."""
        alpha = jnp.exp(self.log_scale)
        reg = {"filters": alpha * self.K / self.K_norm, "coeffs": self.coeffs}
        return spline_ridge(x, reg, spline=self.spline, boundary=self.boundary) / alpha**2

    def __call__(self, x: Float[Array, "H W"], y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        alpha = jnp.exp(self.log_scale)
        k = self.K / self.K_norm
        c = k if self.C is None or self.C_norm is None else self.C / self.C_norm
        z = alpha * correlate(x, k, self.boundary)
        g = correlate_adjoint(self.spline.activation(z, self.coeffs), c, self.boundary) / alpha
        op = self.operator
        return x - self.tau * (self.lam * op.adjoint(op(x) - y) + g)

    def refresh(self) -> SplineModel:
        """``‖K‖`` (and ``‖C‖``) from the spectra (:func:`bank_norm`), then ``τ = 1/L``.

        Tied: ``L`` from :func:`jaxinv.energies.spline_lipschitz_bound` of the normalised bank,
        a bound on the Lipschitz constant of ``∇E``. Untied: ``L = λ‖A‖² + ‖(√a_i c̃_i)‖
        ‖(√a_i k̃_i)‖``, ``a_i = max(sup ψ_i'', −inf ψ_i'')``, a bound on ``‖∂(λAᵀ(A·) +
        C̃ᵀψ'(αK̃·)/α)‖`` by Cauchy–Schwarz (equal to the tied one for a convex ``ψ`` and
        ``C = K``).
        """
        q = _stop(self)
        new = {"K_norm": bank_norm(q.K, self.image_shape, self.boundary)}
        k = q.K / new["K_norm"]
        reg = {"filters": k, "coeffs": q.coeffs}
        if self.tied:
            new["tau"] = energies.spline_safe_step(
                self.op_norm, q.lam, reg, self.image_shape, spline=self.spline,
                boundary=self.boundary,
            )  # fmt: skip
        else:
            assert q.C is not None
            new["C_norm"] = bank_norm(q.C, self.image_shape, self.boundary)
            c = q.C / new["C_norm"]
            sup = sup_curvature(reg, spline=self.spline, per_filter=True)
            inf = _inf_curvature(reg, spline=self.spline, per_filter=True)
            root = jnp.sqrt(jnp.maximum(jnp.maximum(sup, -inf), 0.0))[:, None, None]
            nk = bank_norm(root * k, self.image_shape, self.boundary)
            nc = bank_norm(root * c, self.image_shape, self.boundary)
            new["tau"] = 1.0 / (q.lam * self.op_norm**2 + nk * nc)
        names = sorted(new)
        return eqx.tree_at(
            lambda m: [getattr(m, n) for n in names],
            self,
            [jax.lax.stop_gradient(new[n]).astype(getattr(self, n).dtype) for n in names],
        )

    def convexity_modulus(self, op_min_sq: float = 1.0) -> Float[Array, ""]:
        """Lower bound ``m = λ σ_min(AᵀA) − ‖(√r_i⁻ k̃_i)‖² ≥ λ σ_min(AᵀA) − μ`` on the
        strong-convexity modulus of the tied energy (:func:`jaxinv.energies.
        spline_convexity_modulus`); ``op_min_sq = σ_min(AᵀA)``, 1 for denoising."""
        return energies.spline_convexity_modulus(
            self.lam, op_min_sq, _stop(self.ridge()), self.image_shape, spline=self.spline,
            boundary=self.boundary,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Spline(Architecture):
    """Spline ridge regularizer ``R(x) = α⁻² Σ_i Σ_pixels ψ_i(α (k̃_i * x))``, ``k̃_i = k_i /
    ‖K‖``, with learned linear-spline potentials (CRR-NN: ``kind="convex"``, ``ψ_i'' ≥ 0``;
    WCRR-NN: ``kind="weakly_convex"``, ``ψ_i'' ≥ −μ``); builds a :class:`SplineModel`.

    Learned: the filters ``k_i`` (``num_filters × size × size``), the knot values of every
    ``ψ_i'`` on the grid ``t_j = (j − M/2) Δ`` (``M + 1 = num_knots``, ``Δ = spacing``; projected
    onto the constraint of ``kind`` in every evaluation) and the scale ``α = exp(log_scale)``
    (WCRR-NN's noise-dependent scale, one scalar at one noise level: it moves the responses on
    the knot grid and leaves the curvature ``∇²R = K̃ᵀ diag(ψ''(α K̃ x)) K̃`` bounded by the
    slopes). Fixed: ``lam`` (λ) and the derived ``K_norm`` (``‖K‖₂`` from the spectra on the
    image grid, refreshed after every optimiser step and a constant for the gradient, as in the
    papers' spectral normalisation) and ``tau``. Untied (DEQ): a second bank ``C``, initialised
    equal to ``K``, on the adjoint side (see :class:`SplineModel`).

    Because ``‖K̃‖ ≤ 1`` (exact for the circular boundary, an upper bound for the others),
    ``−μ I ⪯ ∇²R ⪯ max_i sup ψ_i'' I``: the step ``τ = 1/L`` of
    :func:`jaxinv.energies.spline_safe_step` makes the tied map non-expansive whenever the
    energy is convex, and a contraction with factor ``1 − m/L`` when it is ``m``-strongly
    convex. The convex kind with denoising has ``m ≥ λ``; the weakly convex one ``m ≥ λ − μ``, so
    for denoising ``mu < lam`` is required (checked by :meth:`build`). For inpainting and
    deblurring (``σ_min(AᵀA) = 0``) the weakly convex energy is only ``μ``-weakly convex: the
    tied map is then a gradient step with ``τ ≤ 1/L`` that decreases ``E`` at every iteration,
    its fixed points are the critical points of ``E``, but it need not contract.

    Initialisation: ``init="dct"`` (default) the first ``num_filters`` non-constant DCT-II
    filters (random zero-mean ones beyond ``size² − 1``), ``"random"`` zero-mean Gaussian
    filters, all of unit ℓ2 norm; ``α₀ = ‖K₀‖ / max(σ, 0.01)``, so ``α k̃_i * x = (k_i * x)/σ``:
    the knots are in units of the noise level (WCRR-NN's σ-dependent range). The activations
    start as the clipped identity ``ψ_i'(t) = (s ‖K₀‖² / F) clip(t, ±θ)/θ``, ``θ =
    init_threshold``, ``s = init_strength``: the untrained regularizer is ``Σ_i (s σ/F)
    |k_i * x|`` (up to a constant) on responses beyond ``θσ``, quadratic below, a TV-like start
    (fields of experts' log-cosh start has ``s = 1.4``). The defaults (the complete DCT basis,
    ``num_filters = size² − 1``; ``θ`` one knot spacing; ``s = 1.4``) come from a sweep of the
    untrained model on held-out BSD400 patches at σ = 25/255, recorded with what the trained
    kinds reach in ``benchmarks/results/settings.md``.

    Options: ``num_filters``, ``size``, ``num_knots`` (``≥ 3``), ``spacing`` (``Δ``, in units of
    σ at initialisation), ``kind``, ``mu`` (``> 0`` for ``"weakly_convex"``, 0 otherwise),
    ``lam``, ``init``, ``init_threshold``, ``init_strength``, ``boundary`` (``"circular"``,
    ``"zero"``, ``"reflect"``).
    """

    name: ClassVar[str] = "spline"
    num_filters: int = 48
    size: int = 7
    num_knots: int = 41
    spacing: float = 0.25
    kind: str = "convex"
    mu: float = 0.0
    lam: float = 1.0
    init: str = "dct"
    init_threshold: float = 0.25
    init_strength: float = 1.4
    boundary: str = "circular"

    def __post_init__(self) -> None:
        _choose("kind", self.kind, KINDS)
        _choose("init", self.init, ("dct", "random"))
        _choose("boundary", self.boundary, BOUNDARIES)
        for name in ("num_filters", "size", "num_knots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"spline: {name} must be an integer, got {value!r}")
        if self.num_filters < 1 or self.size < 2 or self.num_knots < 3:
            raise ValueError(
                "spline: need num_filters >= 1, size >= 2 and num_knots >= 3, got "
                f"{self.num_filters}, {self.size}, {self.num_knots}"
            )
        for name in ("spacing", "lam", "init_threshold", "init_strength"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"spline: {name} must be a positive number, got {value!r}")
        if self.kind == "weakly_convex" and not self.mu > 0:
            raise ValueError(
                f"spline: kind='weakly_convex' needs mu > 0 (the weak-convexity modulus), got "
                f"{self.mu}; use kind='convex' for mu = 0"
            )
        if self.kind == "convex" and self.mu != 0:
            raise ValueError(
                f"spline: mu={self.mu} only applies to kind='weakly_convex'; set mu=0 or change "
                "the kind"
            )
        self.linear_spline()  # validates mu

    def linear_spline(self) -> LinearSpline:
        """The spline settings of the potentials."""
        return LinearSpline(spacing=float(self.spacing), kind=self.kind, mu=float(self.mu))

    def build(self, key, task, image_shape, tied=True) -> SplineModel:
        shape = _check_common(self.name, task, image_shape)
        if task.name == "denoise" and self.mu >= self.lam:
            raise ValueError(
                f"spline: denoising with kind='weakly_convex' needs mu < lam for a strongly convex "
                f"energy (so the map contracts), got mu={self.mu}, lam={self.lam}; lower mu or "
                "raise lam"
            )
        dtype = _float(0).dtype
        spline = self.linear_spline()
        nf = self.num_filters
        init = init_spline_ridge(
            key, nf, self.size, self.num_knots, spline=spline, threshold=1.0, dtype=dtype
        )
        filters = init["filters"]
        if self.init == "random":
            filters = init_fields_of_experts(key, nf, self.size, dtype=dtype)["filters"]
        norm = float(bank_norm(filters, shape, self.boundary))
        gain = self.init_strength * norm**2 / (nf * self.init_threshold)
        # ψ'(t) = gain · clip(t, ±θ): the init's clip at 1 rescaled
        coeffs = (
            gain
            * self.init_threshold
            * jnp.clip(spline.knots(self.num_knots, dtype) / self.init_threshold, -1.0, 1.0)
        )
        model = SplineModel(
            **self.common_fields(task, shape, tied),
            lam=_float(self.lam),
            tau=_float(1.0),
            K=filters,
            coeffs=jnp.broadcast_to(coeffs, (nf, self.num_knots)).astype(dtype),
            log_scale=_float(math.log(norm / max(task.sigma, 0.01))),
            K_norm=_float(norm),
            C=None if tied else filters,
            C_norm=None if tied else _float(norm),
            spline=spline,
            boundary=self.boundary,
        )
        return refreshed(model)
