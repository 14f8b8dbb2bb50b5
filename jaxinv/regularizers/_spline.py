"""Ridge regularizers with learned linear-spline potentials (CRR-NN / WCRR-NN).

``R(x) = Σ_i Σ_pixels ψ_i((k_i * x))`` where each activation ``ψ_i'`` is a continuous
piecewise-linear function on the uniform grid ``t_j = (j − M/2) Δ``, ``j = 0..M``, given by its
knot values ``c_{i,j} = ψ_i'(t_j)`` and continued outside ``[t_0, t_M]`` with the slopes of the
outer segments. Then ``ψ_i''`` is piecewise constant (the segment slopes
``(c_{i,j+1} − c_{i,j})/Δ``) and ``ψ_i`` is piecewise quadratic, integrated exactly with
``ψ_i(0) = 0``.

Constraints on the shape are imposed by a projection inside every evaluation, as in Goujon et
al.: the segment slopes of the stored coefficients are clipped to the allowed interval (``[0, ∞)``
for a convex ``ψ``, ``[−μ, ∞)`` for a ``μ``-weakly convex one, optionally capped by
``max_slope``), the knot values are rebuilt by a cumulative sum, and shifted so that
``ψ'(0) = 0``. The projection is the identity on coefficients that already satisfy the
constraints, so the stored ``"coeffs"`` are the knot values of ``ψ'`` whenever they are feasible,
and every value of them gives a valid potential. Where a slope is clipped its gradient is zero
(the papers' projected parametrisation).

References: A. Goujon, S. Neumayer, P. Bohra, S. Ducotterd, M. Unser, "A neural-network-based
convex regularizer for inverse problems", IEEE TCI 2023 (CRR-NN); A. Goujon, S. Neumayer, M. Unser,
"Learning weakly convex regularizers for convergent image-reconstruction algorithms", SIAM J.
Imaging Sci. 2024 (WCRR-NN).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._conv import correlate, correlate_adjoint
from ..operators._blur import _check_boundary
from ._common import require_keys
from ._foe import dct_filters

KINDS = ("convex", "weakly_convex", "free")


@dataclasses.dataclass(frozen=True)
class LinearSpline:
    """Settings of a bank of linear-spline activations ``ψ_i'``; the knot values are parameters.

    A frozen dataclass (hashable, compared by value), so equal settings never recompile.

    Args:
        spacing: the knot spacing ``Δ > 0``; the ``M + 1`` knots are ``t_j = (j − M/2) Δ``.
        kind: the constraint on the segment slopes ``ψ''``: ``"convex"`` (``ψ'' ≥ 0``, CRR-NN),
            ``"weakly_convex"`` (``ψ'' ≥ −μ``, WCRR-NN) or ``"free"`` (no lower bound).
        mu: the weak-convexity modulus ``μ ≥ 0`` of ``"weakly_convex"`` (must be 0 otherwise).
        max_slope: an optional upper bound on ``ψ''`` (then ``sup ψ'' ≤ max_slope`` and a safe
            step does not depend on the learned coefficients).
        flat_tails: force the two outer segments to slope 0, so ``ψ'`` is constant outside
            ``[t_1, t_{M−1}]`` and ``ψ`` grows linearly (the papers' "clamped" splines).
        symmetric: make ``ψ'`` odd (``ψ`` even) by taking the odd part of the knot values, which
            keeps the slope constraints (its slopes are averages of slopes).
    """

    spacing: float = 0.02
    kind: str = "convex"
    mu: float = 0.0
    max_slope: float | None = None
    flat_tails: bool = False
    symmetric: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown spline kind {self.kind!r}; choose one of {KINDS}")
        if not (math.isfinite(self.spacing) and self.spacing > 0):
            raise ValueError(f"the knot spacing must be positive and finite, got {self.spacing}")
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"the weak-convexity modulus mu must be >= 0, got {self.mu}")
        if self.mu and self.kind != "weakly_convex":
            raise ValueError(
                f"mu={self.mu} only applies to kind='weakly_convex' (got kind={self.kind!r})"
            )
        if self.max_slope is not None and not self.max_slope >= self.min_slope:
            raise ValueError(
                f"max_slope={self.max_slope} must be at least the lower slope bound "
                f"{self.min_slope} of kind={self.kind!r}"
            )

    @property
    def min_slope(self) -> float:
        """The lower bound on ``ψ''``: 0 (convex), ``−μ`` (weakly convex), ``−∞`` (free)."""
        return {"convex": 0.0, "weakly_convex": -self.mu, "free": -math.inf}[self.kind]

    def knots(self, num_knots: int, dtype: Any = None) -> Float[Array, " knots"]:
        """The knot positions ``t_j = (j − M/2) Δ``, ``j = 0..M``, ``M = num_knots − 1``."""
        m = num_knots - 1
        return jnp.asarray((np.arange(num_knots) - m / 2) * self.spacing, dtype=dtype)

    def check_coeffs(self, coeffs: Array, who: str = "LinearSpline") -> None:
        """Raise ``ValueError`` unless ``coeffs`` has shape ``(F, M + 1)`` with ``M ≥ 2``."""
        shape = jnp.shape(coeffs)
        if len(shape) != 2 or shape[1] < 3:
            raise ValueError(
                f"{who}: spline coefficients must have shape (F, M + 1) with at least 3 knots "
                f"per filter, got {shape}"
            )

    def project(self, coeffs: Float[Array, "F knots"]) -> Float[Array, "F knots"]:
        """Knot values of ``ψ_i'`` satisfying the constraints (identity on feasible ones).

        Slopes ``s_j = (c_{j+1} − c_j)/Δ`` are clipped to ``[min_slope, max_slope]`` (outer two
        set to 0 with ``flat_tails``), values rebuilt as ``Δ · cumsum(s)``, made odd with
        ``symmetric``, and shifted so that ``ψ'(0) = 0``.
        """
        self.check_coeffs(coeffs, "LinearSpline.project")
        c = jnp.asarray(coeffs)
        s = jnp.diff(c, axis=-1) / self.spacing
        lo = None if self.kind == "free" else self.min_slope
        if lo is not None or self.max_slope is not None:
            s = jnp.clip(s, lo, self.max_slope)
        if self.flat_tails:
            s = s.at[:, 0].set(0.0).at[:, -1].set(0.0)
        v = jnp.concatenate([jnp.zeros_like(c[:, :1]), jnp.cumsum(s, axis=-1) * self.spacing], -1)
        if self.symmetric:
            v = 0.5 * (v - v[:, ::-1])
        m = v.shape[-1] - 1
        at_zero = v[:, m // 2] if m % 2 == 0 else 0.5 * (v[:, m // 2] + v[:, m // 2 + 1])
        return v - at_zero[:, None]

    def slopes(self, coeffs: Float[Array, "F knots"]) -> Float[Array, "F knots-1"]:
        """The segment slopes ``ψ_i''`` of the projected spline."""
        return jnp.diff(self.project(coeffs), axis=-1) / self.spacing

    # ---- evaluation: z has the filter axis at ``axis`` (default -3, as ``correlate`` gives) ----

    def activation(self, z: Array, coeffs: Array, *, axis: int = -3) -> Array:
        """``ψ_i'(z)``: the lerp between the two knots around ``z`` (linear continuation)."""
        v = self.project(coeffs).astype(jnp.result_type(z))
        left, right, frac, _ = _segment(z, v, self.spacing, axis)
        return left + frac * (right - left)

    def curvature(self, z: Array, coeffs: Array, *, axis: int = -3) -> Array:
        """``ψ_i''(z)``: the slope of the segment containing ``z`` (right-continuous at knots)."""
        v = self.project(coeffs).astype(jnp.result_type(z))
        left, right, _, _ = _segment(z, v, self.spacing, axis)
        return (right - left) / self.spacing

    def potential(self, z: Array, coeffs: Array, *, axis: int = -3) -> Array:
        """``ψ_i(z) = ∫_0^z ψ_i'``: exact, piecewise quadratic.

        With the primitive ``P_j = ∫_{t_0}^{t_j} ψ' = Δ Σ_{l<j} (c_l + c_{l+1})/2`` at the knots,
        ``∫_{t_0}^z ψ' = P_j + Δ (c_j u + (c_{j+1} − c_j) u²/2)`` for ``z = t_j + u Δ`` in segment
        ``j`` (``u`` outside ``[0, 1]`` on the outer segments), and ``ψ(z)`` is that minus its
        value at ``z = 0``.
        """
        v = self.project(coeffs).astype(jnp.result_type(z))
        prim = jnp.concatenate(
            [jnp.zeros_like(v[:, :1]), jnp.cumsum(0.5 * (v[:, 1:] + v[:, :-1]), -1) * self.spacing],
            -1,
        )

        def integral(z):
            left, right, frac, idx = _segment(z, v, self.spacing, axis)
            return prim.reshape(-1)[idx] + self.spacing * frac * (
                left + 0.5 * frac * (right - left)
            )

        z0 = jnp.zeros((v.shape[0],) + (1,) * (-axis - 1), z.dtype)
        return integral(z) - integral(z0)


def _segment(z, v, spacing, axis):
    """Knot values at both ends of the segment ``j`` of every ``z``, the position ``u = (z −
    t_j)/Δ`` in it, and the flat index ``i·(M + 1) + j`` of its left knot (for one gather)."""
    if axis >= 0:
        raise ValueError(f"axis must be negative (counted from the end), got {axis}")
    nf, n = v.shape
    if z.ndim < -axis or z.shape[axis] != nf:
        raise ValueError(
            f"responses have shape {z.shape} but axis {axis} must hold the {nf} filters"
        )
    m = n - 1
    u = z / spacing + m / 2
    j = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, m - 1).astype(jnp.int32)
    idx = j + n * jnp.arange(nf, dtype=jnp.int32).reshape((nf,) + (1,) * (-axis - 1))
    flat = v.reshape(-1)
    left, right = flat[idx], flat[idx + 1]
    return left, right, u - j.astype(u.dtype), idx


# --------------------------------------------------------------------------------------------
# The ridge regularizer
# --------------------------------------------------------------------------------------------


def _check_params(params: dict[str, Any], spline: LinearSpline, who: str):
    require_keys(params, ("filters", "coeffs"), who)
    if not isinstance(spline, LinearSpline):
        raise ValueError(f"{who}: spline must be a LinearSpline, got {type(spline).__name__}")
    filters, coeffs = params["filters"], params["coeffs"]
    if filters.ndim != 3 or filters.shape[1] != filters.shape[2]:
        raise ValueError(f"{who}: filters must have shape (F, k, k), got {filters.shape}")
    spline.check_coeffs(coeffs, who)
    if coeffs.shape[0] != filters.shape[0]:
        raise ValueError(
            f"{who}: coeffs must have shape ({filters.shape[0]}, M + 1) to match the filters, "
            f"got {coeffs.shape}"
        )
    return filters, coeffs


def spline_ridge(
    x: Float[Array, "*batch H W"],
    params: dict[str, Any],
    *,
    spline: LinearSpline = LinearSpline(),
    boundary: str = "circular",
) -> Float[Array, ""]:
    """``R(x) = Σ_i Σ_pixels ψ_i((k_i * x))`` with learned linear-spline activations ``ψ_i'``.

    ``params = {"filters": (F, k, k), "coeffs": (F, M + 1)}``; ``coeffs`` are the knot values of
    ``ψ_i'`` before the projection of ``spline`` (:meth:`LinearSpline.project`). ``k_i * x`` is
    :func:`jaxinv._conv.correlate` (``boundary`` ``"circular"`` or ``"zero"``). Summed over
    leading batch axes, so ``∇R`` is per image.
    """
    filters, coeffs = _check_params(params, spline, "spline_ridge")
    _check_boundary(boundary)
    return jnp.sum(spline.potential(correlate(x, filters, boundary), coeffs))


def spline_ridge_grad(
    x: Float[Array, "*batch H W"],
    params: dict[str, Any],
    *,
    spline: LinearSpline = LinearSpline(),
    boundary: str = "circular",
) -> Float[Array, "*batch H W"]:
    """Explicit gradient ``∇R(x) = Σ_i k_iᵀ * ψ_i'(k_i * x)``: one correlation, one gather and
    the adjoint correlation (the fast path for tied maps)."""
    filters, coeffs = _check_params(params, spline, "spline_ridge_grad")
    _check_boundary(boundary)
    z = correlate(x, filters, boundary)
    return correlate_adjoint(spline.activation(z, coeffs), filters, boundary)


def sup_curvature(
    params: dict[str, Any], *, spline: LinearSpline = LinearSpline(), per_filter: bool = False
) -> Float[Array, "*F"]:
    """``sup ψ_i''``: the largest segment slope of the projected spline (per filter, or the
    largest over all filters). With ``‖K‖`` the filter-bank norm, ``∇²R ⪯ sup ψ'' · ‖K‖²``, so
    ``τ = 1/(λ‖A‖² + sup ψ'' ‖K‖²)`` is a safe step for the tied map (see
    :func:`jaxinv.energies.spline_safe_step` for the tighter per-filter version)."""
    _, coeffs = _check_params(params, spline, "sup_curvature")
    s = jnp.max(spline.slopes(coeffs), axis=-1)
    return s if per_filter else jnp.max(s)


def inf_curvature(
    params: dict[str, Any], *, spline: LinearSpline = LinearSpline(), per_filter: bool = False
) -> Float[Array, "*F"]:
    """``inf ψ_i''``: the smallest segment slope (``≥ 0`` convex, ``≥ −μ`` weakly convex).

    ``∇²R ⪰ −Σ_i (inf ψ_i'')⁻ K_iᵀK_i ⪰ −μ ‖K‖² I``, so the energy ``λ/2 ‖A x − y‖² + R(x)`` is
    convex whenever ``λ σ_min(AᵀA) ≥ μ ‖K‖²`` (e.g. denoising, ``A = I``: ``λ ≥ μ ‖K‖²``); see
    :func:`jaxinv.energies.spline_convexity_modulus`.
    """
    _, coeffs = _check_params(params, spline, "inf_curvature")
    s = jnp.min(spline.slopes(coeffs), axis=-1)
    return s if per_filter else jnp.min(s)


def init_spline_ridge(
    key: PRNGKeyArray,
    num_filters: int,
    size: int,
    num_knots: int,
    *,
    spline: LinearSpline = LinearSpline(),
    threshold: float | None = None,
    weight: float = 1.0,
    dtype: Any = None,
) -> dict[str, Array]:
    """Spline-ridge parameters: DCT filters and Huber activations ``ψ_i'(t) = w clip(t, ±θ)``.

    The filters are the first ``num_filters`` non-constant ``size × size`` DCT-II basis filters
    (:func:`dct_filters`: zero-mean, unit ℓ2 norm); beyond the ``size² − 1`` of them, random
    zero-mean unit-norm filters drawn from ``key``. The activation is the clip at ``θ =
    threshold`` (default a quarter of the knot range ``M Δ``) scaled by ``w = weight ≥ 0``: a
    convex Huber potential with ``ψ'' ∈ {0, w}``, feasible for every kind (unless ``w`` exceeds
    ``spline.max_slope``, which the projection then caps).
    """
    if num_filters < 1:
        raise ValueError(f"num_filters must be positive, got {num_filters}")
    if size < 2:
        raise ValueError(f"size must be at least 2 for a non-zero zero-mean filter, got {size}")
    if num_knots < 3:
        raise ValueError(f"num_knots must be at least 3, got {num_knots}")
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0 for a convex initial potential, got {weight}")
    dtype = dtype or jnp.asarray(0.0).dtype
    theta = (num_knots - 1) * spline.spacing / 4 if threshold is None else threshold
    if not theta > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    filters = dct_filters(size, num_filters)
    extra = num_filters - filters.shape[0]
    filters = jnp.asarray(filters, dtype)
    if extra > 0:
        filters = jnp.concatenate([filters, _random_filters(key, extra, size, dtype)])
    t = np.asarray(spline.knots(num_knots))
    coeffs = np.broadcast_to(weight * np.clip(t, -theta, theta), (num_filters, num_knots))
    return {"filters": filters, "coeffs": jnp.asarray(coeffs, dtype)}


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_filters(key, count, size, dtype):
    k = jax.random.normal(key, (count, size, size), dtype)
    k = k - jnp.mean(k, axis=(1, 2), keepdims=True)
    return k / jnp.linalg.norm(k.reshape(count, -1), axis=1)[:, None, None]
