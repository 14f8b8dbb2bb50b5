"""Energies ``E(x; y) = λ/2 ‖A x − y‖² + R(x)``, the fixed-point maps built on them, and safe steps.

Every map has the signature ``T(x, params, y) -> x`` with all learnable or swept scalars (``lam``,
``tau``, ``gamma``, …) as array leaves of ``params``:

- tied (bilevel): ``T = x − τ ∇ₓE`` (:func:`tied_foe_map`, :func:`tied_spline_map`, or any
  energy through :func:`variational_energy` and a gradient step);
- untied (DEQ): ``T = x − τ (λ Aᵀ(A x − y) + G(x))`` with a learned ``G`` that need not be a
  gradient (:func:`untied_foe_map`, :func:`deq_conv_map`, :func:`deq_dense_map`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from ._conv import correlate, correlate_adjoint
from ._tree import matmul
from .operators import AbstractOperator, FilterBank, bank_norm, operator_norm
from .operators._blur import _check_boundary
from .regularizers import (
    LinearSpline,
    fields_of_experts_grad,
    get_activation,
    get_potential,
    spline_ridge_grad,
    sup_curvature,
)
from .regularizers import inf_curvature as _inf_curvature
from .regularizers._common import require_keys
from .regularizers._potentials import AbstractPotential

Map = Callable[[Array, PyTree, Array], Array]
_SPLINE = LinearSpline()  # the default spline settings
Energy = Callable[[Array, PyTree, Array], Array]


def _check_op(op: Any) -> None:
    if not (callable(op) and hasattr(op, "adjoint")):
        raise ValueError(
            f"op must be a linear operator with __call__ and adjoint (see jaxinv.operators), "
            f"got {type(op).__name__}"
        )


def _residual_grad(op: AbstractOperator, x: Array, y: Array, lam: ArrayLike) -> Array:
    return op.adjoint(op(x) - y) * lam


def data_fidelity(
    x: Float[Array, "*batch H W"],
    y: Float[Array, "..."],
    op: AbstractOperator,
    lam: Float[ArrayLike, ""],
) -> Float[Array, ""]:
    """``λ/2 ‖A x − y‖²`` (summed over leading batch axes); its gradient is ``λ Aᵀ(A x − y)``."""
    r = op(x) - y
    return jnp.sum(jnp.square(r)) * (0.5 * lam)


def variational_energy(
    op: AbstractOperator, regularizer: Callable[[Array, PyTree], Array]
) -> Energy:
    """Build ``energy(x, params, y) = λ/2 ‖A x − y‖² + R(x, params["reg"])`` with
    ``λ = params["lam"]``.

    ``regularizer(x, reg_params) -> scalar`` is e.g. ``functools.partial(fields_of_experts,
    potential="huber")``. ``params = {"lam": (), "reg": <regularizer params>}``; further keys
    (such as ``"tau"`` for a gradient step) are ignored.
    """
    if not callable(op) or not callable(regularizer):
        raise ValueError(
            "variational_energy(op, regularizer) needs a callable operator (see "
            "jaxinv.operators) and a callable regularizer(x, reg_params)"
        )

    def energy(x: Array, params: PyTree, y: Array) -> Array:
        require_keys(params, ("lam", "reg"), "variational_energy")
        return data_fidelity(x, y, op, params["lam"]) + regularizer(x, params["reg"])

    return energy


def tied_foe_map(
    op: AbstractOperator,
    *,
    potential: str | AbstractPotential = "logcosh",
    boundary: str = "circular",
) -> Map:
    """Gradient step on the fields-of-experts energy, with the explicit gradient:

        T(x, params, y) = x − τ (λ Aᵀ(A x − y) + Σ_i w_i k_iᵀ * ρ'(k_i * x + b_i)),

    ``params = {"lam": (), "tau": (), "reg": {"filters": (F, k, k), "weights": (F,)[, "bias":
    (F,)]}}``. Equal to ``x − τ ∇ₓE`` for ``E = variational_energy(op, fields_of_experts)``.
    The paper's normalised tied model ``γ c/‖W‖ Wᵀ σ(χ c/‖W‖ W x)`` is this map with filters
    ``χ c/‖W‖ · W`` and weights ``γ/χ``.
    """
    _check_op(op)
    pot = get_potential(potential)
    _check_boundary(boundary)

    def reg_grad(x: Array, reg: PyTree) -> Array:
        return fields_of_experts_grad(x, reg, potential=pot, boundary=boundary)

    return _gradient_step(op, reg_grad, "tied_foe_map")


def tied_spline_map(
    op: AbstractOperator,
    *,
    spline: LinearSpline = _SPLINE,
    boundary: str = "circular",
) -> Map:
    """Gradient step on the spline-ridge energy (CRR-NN / WCRR-NN), with the explicit gradient:

        T(x, params, y) = x − τ (λ Aᵀ(A x − y) + Σ_i k_iᵀ * ψ_i'(k_i * x)),

    ``params = {"lam": (), "tau": (), "reg": {"filters": (F, k, k), "coeffs": (F, M + 1)}}``
    (see :func:`jaxinv.regularizers.spline_ridge`). Equal to ``x − τ ∇ₓE`` for ``E =
    variational_energy(op, partial(spline_ridge, spline=spline, boundary=boundary))``; a safe
    ``τ`` is :func:`spline_safe_step`.
    """
    _check_op(op)
    if not isinstance(spline, LinearSpline):
        raise ValueError(f"spline must be a LinearSpline, got {type(spline).__name__}")
    _check_boundary(boundary)

    def reg_grad(x: Array, reg: PyTree) -> Array:
        return spline_ridge_grad(x, reg, spline=spline, boundary=boundary)

    return _gradient_step(op, reg_grad, "tied_spline_map")


def _gradient_step(
    op: AbstractOperator, reg_grad: Callable[[Array, PyTree], Array], name: str
) -> Map:
    """``T(x, params, y) = x − τ (λ Aᵀ(A x − y) + reg_grad(x, params["reg"]))``."""

    def T(x: Array, params: PyTree, y: Array) -> Array:
        require_keys(params, ("lam", "tau", "reg"), name)
        g = _residual_grad(op, x, y, params["lam"]) + reg_grad(x, params["reg"])
        return x - params["tau"] * g

    return T


def untied_foe_map(
    op: AbstractOperator,
    *,
    potential: str | AbstractPotential = "logcosh",
    boundary: str = "circular",
) -> Map:
    """The fields-of-experts step with an independent second filter bank (untied, DEQ):

        T(x, params, y) = x − τ (λ Aᵀ(A x − y) + Σ_i w_i c_iᵀ * ρ'(k_i * x + b_i)),

    ``params = {"lam": (), "tau": (), "reg": {"filters": (F, k, k), "adjoint_filters": (F, k',
    k'), "weights": (F,)[, "bias": (F,)]}}``. With ``adjoint_filters = filters`` it is
    :func:`tied_foe_map`; otherwise ``Σ_i w_i c_iᵀ * ρ'(k_i * x)`` need not be a gradient.
    """
    _check_op(op)
    pot = get_potential(potential)
    _check_boundary(boundary)

    def T(x: Array, params: PyTree, y: Array) -> Array:
        require_keys(params, ("lam", "tau", "reg"), "untied_foe_map")
        reg = params["reg"]
        require_keys(reg, ("filters", "adjoint_filters", "weights"), "untied_foe_map")
        z = correlate(x, reg["filters"], boundary)
        if "bias" in reg:
            z = z + reg["bias"][:, None, None]
        a = reg["weights"][:, None, None] * pot.drho(z)
        g = _residual_grad(op, x, y, params["lam"])
        g = g + correlate_adjoint(a, reg["adjoint_filters"], boundary)
        return x - params["tau"] * g

    return T


_NORMALISED_KEYS = ("chi", "c", "K_norm", "C_norm")


def deq_conv_map(
    op: AbstractOperator,
    *,
    activation: str | Callable[[Array], Array] = "tanh",
    boundary: str = "circular",
    normalize: bool = False,
) -> Map:
    """The paper's untied convolutional DEQ step:

        T(x, p, y) = x − τ (λ Aᵀ(A x − y) + G(x)),
        G(x) = γ s_C Σ_i c_iᵀ * (w_i σ(s_K (k_i * x) + b_i)),

    with a second filter bank ``C ≠ K``. ``p = {"lam": (), "tau": (), "K": (F, k, k), "C": (F, k',
    k'), "b": (F,)}`` plus optional ``"weights": (F,)`` (``w_i``, default 1) and ``"gamma": ()``
    (default 1). Without normalisation ``s_K = s_C = 1``.

    ``normalize=True`` is the paper's operator-norm normalisation ``s_K = χ c/‖K‖``, ``s_C =
    c/‖C‖`` and needs ``p["chi"]``, ``p["c"]``, ``p["K_norm"]``, ``p["C_norm"]``: the norms are
    *read from params*, not computed here (a power iteration in every fixed-point step would be
    wasted). Fill them with :func:`deq_conv_norms` — after every optimiser step as the paper does
    (then they are constants), or inside the loss before the solve (then gradients flow through
    the power iteration).
    """
    _check_op(op)
    sigma = get_activation(activation)
    _check_boundary(boundary)
    needed = ("lam", "tau", "K", "C", "b") + (_NORMALISED_KEYS if normalize else ())

    def T(x: Array, p: PyTree, y: Array) -> Array:
        require_keys(p, needed, "deq_conv_map")
        k, c, b = p["K"], p["C"], p["b"]
        nf = k.shape[0]
        if k.ndim != 3 or c.ndim != 3 or c.shape[0] != nf or b.shape != (nf,):
            raise ValueError(
                f"deq_conv_map: need K (F, k, k), C (F, k', k') and b (F,) with the same F, got "
                f"K {k.shape}, C {c.shape}, b {b.shape}"
            )
        z = correlate(x, k, boundary)
        scale_out = p.get("gamma", 1.0)
        if normalize:
            z = (p["chi"] * p["c"] / p["K_norm"]) * z
            scale_out = scale_out * p["c"] / p["C_norm"]
        a = sigma(z + b[:, None, None])
        if "weights" in p:
            a = p["weights"][:, None, None] * a
        g = _residual_grad(op, x, y, p["lam"]) + scale_out * correlate_adjoint(a, c, boundary)
        return x - p["tau"] * g

    return T


def deq_conv_norms(
    params: PyTree,
    shape: tuple[int, int],
    *,
    boundary: str = "circular",
    key: PRNGKeyArray | None = None,
    num_iter: int = 50,
) -> dict[str, Array]:
    """``{"K_norm": ‖K‖₂, "C_norm": ‖C‖₂}`` for ``params["K"]``, ``params["C"]`` as filter-bank
    operators on ``shape`` images, by power iteration (:func:`jaxinv.operators.operator_norm`).

    Use ``params |= deq_conv_norms(params, (H, W))`` before :func:`deq_conv_map` with
    ``normalize=True``.
    """
    require_keys(params, ("K", "C"), "deq_conv_norms")

    def norm(filters: Array) -> Array:
        bank = FilterBank(filters, boundary)
        return operator_norm(bank, shape, key=key, num_iter=num_iter, dtype=params["K"].dtype)

    return {"K_norm": norm(params["K"]), "C_norm": norm(params["C"])}


def deq_dense_map(
    op: AbstractOperator,
    *,
    activation: str | Callable[[Array], Array] = "relu",
    center: float = 0.0,
) -> Map:
    """The paper's untied dense (MNIST) DEQ step on flattened images ``vec(x) ∈ R^d``:

        T(x, p, y) = x − τ (λ Aᵀ(A x − y) + γ V σ(W vec(x − c) + b)),

    ``p = {"lam": (), "tau": (), "gamma": (), "W": (m, d), "V": (d, m), "b": (m,)}``, ``c`` the
    constant ``center`` (default 0). With ``V = Wᵀ`` and ``σ = ψ'`` this is the gradient step on
    ``λ/2 ‖A x − y‖² + dense(x − c)``.
    """
    _check_op(op)
    sigma = get_activation(activation)

    def T(x: Array, p: PyTree, y: Array) -> Array:
        require_keys(p, ("lam", "tau", "gamma", "W", "V", "b"), "deq_dense_map")
        w, v, b = p["W"], p["V"], p["b"]
        d = x.shape[-2] * x.shape[-1]
        m = w.shape[0]
        if w.shape != (m, d) or v.shape != (d, m) or b.shape != (m,):
            raise ValueError(
                f"deq_dense_map: for {x.shape[-2:]} images need W (m, {d}), V ({d}, m), b (m,), "
                f"got W {w.shape}, V {v.shape}, b {b.shape}"
            )
        u = x.reshape(x.shape[:-2] + (d,))
        if center:
            u = u - center
        g_reg = p["gamma"] * matmul(sigma(matmul(u, w.T) + b), v.T)
        g = _residual_grad(op, x, y, p["lam"]) + g_reg.reshape(x.shape)
        return x - p["tau"] * g

    return T


def lipschitz_bound(
    op_norm: Float[ArrayLike, ""],
    lam: Float[ArrayLike, ""],
    filters: Float[Array, "F k k"],
    weights: Float[Array, " F"],
    potential: str | AbstractPotential = "logcosh",
    *,
    boundary: str = "circular",
) -> Float[Array, ""]:
    """Upper bound on the Lipschitz constant of ``∇E`` for the fields-of-experts energy:

        L = λ ‖A‖² + sup|ρ''| · Σ_i |w_i| n_i²,   n_i ≥ ‖K_i‖.

    ``∇²E = λ AᵀA + Σ_i w_i K_iᵀ D_i K_i`` with ``D_i = diag(ρ''(K_i x + b_i))``, ``‖D_i‖ ≤
    sup|ρ''|``. By Young's inequality ``‖k * x‖₂ ≤ ‖k‖₁ ‖x‖₂``: for the circular boundary it
    holds on the discrete torus (convolution on a group); for the zero boundary ``k * x`` is the
    restriction to the image of the full convolution of the zero-extended ``x`` on ``Z²``, and
    restricting only lowers the norm. So ``n_i = ‖k_i‖₁`` for both boundaries. Not for the
    reflect boundary, where a mirrored pixel is read twice per axis (a one-tap diagonal shift
    has norm 2). There ``n_i`` is the smallest of two bounds: ``K = Σ_a k[a] S_a`` with ``S_a``
    the mirrored shift by the tap offset ``a = (a₁, a₂)``, which reads every pixel at most
    twice along each axis it moves, so ``‖S_a‖ ≤ √2^{[a₁≠0] + [a₂≠0]}`` and ``‖K‖ ≤ Σ_a
    |k[a]| ‖S_a‖ ≤ 2 ‖k‖₁``; and splitting ``k`` into its four parity parts about the centre
    tap (see :func:`jaxinv.operators.bank_norm`), ``‖K‖ ≤ Σ_p ‖k_p‖₁``, which is ``‖k‖₁`` for
    a symmetric filter. Then ``‖∇²E‖ ≤ L``. ``op_norm`` is ``‖A‖₂`` (e.g.
    :func:`jaxinv.operators.operator_norm`; 1 for the identity and masks, 1 for a blur whose
    non-negative kernel sums to 1 under the circular and zero boundaries, and under the reflect
    one if the kernel is symmetric in each axis; a reflect diagonal motion blur exceeds 1).
    """
    pot = get_potential(potential)
    _check_boundary(boundary)
    filters = jnp.asarray(filters)
    if filters.ndim != 3 or jnp.shape(weights) != (filters.shape[0],):
        raise ValueError(
            f"need filters (F, k, k) and weights (F,), got {filters.shape} and {jnp.shape(weights)}"
        )
    l1 = jnp.sum(jnp.abs(filters), axis=(1, 2))
    if boundary == "reflect":
        l1 = jnp.minimum(_shift_l1(filters), _parity_l1(filters))
    curvature = pot.sup_ddrho * jnp.sum(jnp.abs(weights) * l1**2)
    return curvature + lam * op_norm**2


def _shift_l1(filters: Array) -> Array:
    """``Σ_a |k[a]| √2^{[a₁≠0] + [a₂≠0]}``: each tap weighted by its mirrored shift's norm bound."""
    k = filters.shape[-1]
    moved = np.where(np.arange(k) == k // 2, 1.0, math.sqrt(2.0))
    return jnp.sum(jnp.abs(filters) * jnp.asarray(np.outer(moved, moved)), axis=(1, 2))


def _parity_l1(filters: Array) -> Array:
    """``Σ_p ‖k_p‖₁`` over the four parity parts of each filter about its centre tap."""
    k = filters.shape[-1]
    c = k // 2  # an even filter gets a zero last row/column, so the centre tap is central
    g = jnp.pad(filters, ((0, 0), (0, 2 * c + 1 - k), (0, 2 * c + 1 - k)))
    fr, fc, frc = jnp.flip(g, 1), jnp.flip(g, 2), jnp.flip(g, (1, 2))
    parts = [(g + a * fr + b * fc + a * b * frc) / 4 for a in (1, -1) for b in (1, -1)]
    l1 = [jnp.sum(jnp.abs(q), axis=(1, 2)) for q in parts]
    return l1[0] + l1[1] + l1[2] + l1[3]


def dense_lipschitz_bound(
    op_norm: Float[ArrayLike, ""],
    lam: Float[ArrayLike, ""],
    W: Float[Array, "m d"],
    gamma: Float[ArrayLike, ""],
    potential: str | AbstractPotential = "logcosh",
) -> Float[Array, ""]:
    """``L = λ ‖A‖² + sup|ρ''| · |γ| · ‖W‖₂²`` bounds the Lipschitz constant of ``∇E`` for the
    dense energy (``∇²R = γ Wᵀ diag(ψ'') W``); ``‖W‖₂`` is computed exactly by an SVD."""
    pot = get_potential(potential)
    return lam * op_norm**2 + pot.sup_ddrho * jnp.abs(gamma) * jnp.linalg.norm(W, 2) ** 2


def safe_step(
    op_norm: Float[ArrayLike, ""],
    lam: Float[ArrayLike, ""],
    filters: Float[Array, "F k k"],
    weights: Float[Array, " F"],
    potential: str | AbstractPotential = "logcosh",
    *,
    boundary: str = "circular",
) -> Float[Array, ""]:
    """``τ = 1 / L`` with ``L`` from :func:`lipschitz_bound` (pass the map's ``boundary``: the
    reflect one needs a larger bound; for the dense model use
    ``1 / dense_lipschitz_bound(...)``).

    Then the spectrum of ``∂T = I − τ ∇²E`` lies in ``[1 − τL, 1 − τμ] ⊂ [0, 1]`` wherever
    ``∇²E ⪰ μ I ⪰ 0``: for a convex energy (every potential but ``"student_t"``) the tied map is
    firmly non-expansive (Baillon–Haddad), and a contraction with factor ``1 − μ/L`` if ``E`` is
    ``μ``-strongly convex (e.g. denoising, ``μ ≥ λ``). For the non-convex Student-t potential only
    ``‖∂T‖ ≤ 2`` is guaranteed.
    """
    return 1.0 / lipschitz_bound(op_norm, lam, filters, weights, potential, boundary=boundary)


def _weighted_bank_norm_sq(filters: Array, w: Array, shape, boundary: str) -> Array:
    """``‖Σ_i w_i K_iᵀK_i‖ = ‖(√w_i k_i)_i‖²`` for ``w ≥ 0`` (exact for the circular boundary),
    with a zero (not NaN) derivative where ``w_i = 0``."""
    pos = w > 0
    root = jnp.where(pos, jnp.sqrt(jnp.where(pos, w, 1.0)), 0.0)
    return bank_norm(root[:, None, None] * filters, shape, boundary) ** 2


def spline_lipschitz_bound(
    op_norm: Float[ArrayLike, ""],
    lam: Float[ArrayLike, ""],
    reg: PyTree,
    shape: tuple[int, int],
    *,
    spline: LinearSpline = _SPLINE,
    boundary: str = "circular",
) -> Float[Array, ""]:
    """Lipschitz bound of ``∇E`` for the spline-ridge energy on ``shape`` images:

        L = max(λ ‖A‖² + ‖(√s_i⁺ k_i)_i‖², ‖(√r_i⁻ k_i)_i‖²),

    ``s_i = sup ψ_i''``, ``r_i = inf ψ_i''`` (:func:`jaxinv.regularizers.sup_curvature`,
    ``inf_curvature``), bank norms by :func:`jaxinv.operators.bank_norm`. Wherever ``ψ'`` is
    differentiable ``∇²E = λ AᵀA + Σ_i K_iᵀ D_i K_i`` with ``r_i ≤ D_i ≤ s_i``, so ``−Σ r_i⁻
    K_iᵀK_i ⪯ ∇²E ⪯ λ AᵀA + Σ s_i⁺ K_iᵀK_i``, and ``Σ w_i K_iᵀK_i`` is the Gram operator of the
    bank ``(√w_i k_i)``; ``∇E`` is Lipschitz (piecewise linear responses), so the a.e. bound
    is its Lipschitz constant. Never above the coarser ``λ‖A‖² + max(sup ψ'', −inf ψ'') ‖K‖²``.
    Exact bank norms for the circular boundary, upper bounds for the zero and reflect ones.
    """
    require_keys(reg, ("filters", "coeffs"), "spline_lipschitz_bound")
    filters = jnp.asarray(reg["filters"])
    sup = sup_curvature(reg, spline=spline, per_filter=True)
    inf = _inf_curvature(reg, spline=spline, per_filter=True)
    upper = lam * op_norm**2 + _weighted_bank_norm_sq(filters, sup, shape, boundary)
    return jnp.maximum(upper, _weighted_bank_norm_sq(filters, -inf, shape, boundary))


def spline_safe_step(
    op_norm: Float[ArrayLike, ""],
    lam: Float[ArrayLike, ""],
    reg: PyTree,
    shape: tuple[int, int],
    *,
    spline: LinearSpline = _SPLINE,
    boundary: str = "circular",
) -> Float[Array, ""]:
    """``τ = 1 / L`` with ``L`` from :func:`spline_lipschitz_bound`.

    When the energy is ``m``-strongly convex (:func:`spline_convexity_modulus` ``m ≥ 0``; always
    for the convex kind) the tied map :func:`tied_spline_map` is then non-expansive, and a
    contraction with factor ``1 − m/L`` for ``m > 0`` (denoising: ``m ≥ λ`` for the convex kind).
    """
    return 1.0 / spline_lipschitz_bound(op_norm, lam, reg, shape, spline=spline, boundary=boundary)


def spline_convexity_modulus(
    lam: Float[ArrayLike, ""],
    op_min_sq: Float[ArrayLike, ""],
    reg: PyTree,
    shape: tuple[int, int],
    *,
    spline: LinearSpline = _SPLINE,
    boundary: str = "circular",
) -> Float[Array, ""]:
    """Lower bound ``m = λ σ_min(AᵀA) − ‖(√r_i⁻ k_i)_i‖²`` on the strong-convexity modulus of
    ``E = λ/2 ‖A x − y‖² + R(x)``, ``r_i = inf ψ_i''`` (``≥ −μ`` for the weakly convex kind).

    ``op_min_sq`` is ``σ_min(AᵀA)`` (1 for denoising, 0 for masks and most blurs). ``E`` is
    convex if ``m ≥ 0``, which holds in particular when ``λ σ_min(AᵀA) ≥ μ ‖K‖²``.
    """
    require_keys(reg, ("filters", "coeffs"), "spline_convexity_modulus")
    inf = _inf_curvature(reg, spline=spline, per_filter=True)
    return jnp.asarray(lam) * op_min_sq - _weighted_bank_norm_sq(
        jnp.asarray(reg["filters"]), -inf, shape, boundary
    )
