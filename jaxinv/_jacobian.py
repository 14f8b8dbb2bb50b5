"""Matrix-free estimates of a map's Jacobian ``J = ∂f/∂x`` at a point, by Jacobian-vector
products: the squared Frobenius norm (Hutchinson) and the spectral norm (power iteration).

Both treat the point ``x`` as a constant and are differentiable w.r.t. ``params``, so they can
be added to a training loss as regularisers of the map (Bai, Koltun & Kolter, *Stabilizing
Equilibrium Models by Jacobian Regularization*, ICML 2021).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

Fn = Callable[[Array, PyTree], Array]


def frobenius_sq(
    fn: Fn, x: Float[Array, "*shape"], params: PyTree, probes: Float[Array, "k ..."]
) -> Float[Array, ""]:
    """Hutchinson's estimate of ``‖J‖_F² / n`` (``n = x.size``) at ``x``:

        (1 / (k n)) Σ_j ‖J v_j‖²,   E[‖J v‖²] = tr(Jᵀ J E[v vᵀ]) = ‖J‖_F²  when E[v vᵀ] = I.

    Unbiased for standard Gaussian ``probes``, with variance ``2 ‖JᵀJ‖_F² / (k n²)``. The
    ``n`` columns of ``√n · I`` as probes (``k = n``) give the exact value.

    Args:
        fn: the map ``fn(x, params) -> array of x's shape``.
        x: the point (a constant: ``stop_gradient`` is applied).
        params: differentiable parameters of ``fn``.
        probes: ``(k, *x.shape)`` probe vectors.
    """
    x = jax.lax.stop_gradient(x)
    _check_probes("frobenius_sq", x, probes)

    def jv(v: Array) -> Array:
        return jax.jvp(lambda z: fn(z, params), (x,), (v,))[1]

    out = jax.vmap(jv)(probes)
    return jnp.sum(jnp.square(out)) / (probes.shape[0] * x.size)


def spectral_norm(
    fn: Fn,
    x: Float[Array, "*shape"],
    params: PyTree,
    starts: Float[Array, "k ..."],
    iterations: int,
) -> Float[Array, ""]:
    """An estimate of ``‖J‖₂ = σ_max(J)`` at ``x`` by power iteration on ``JᵀJ``:

        v ← JᵀJ v / ‖JᵀJ v‖   (``iterations`` times from each start),   σ̂ = max_starts ‖J v‖.

    The iteration runs on ``stop_gradient(params)`` and its vector ``v`` is a constant of the
    gradient, so ``∇_params σ̂ = ∇_params ‖J(params) v‖``; when ``v`` is the top right singular
    vector this is the gradient of ``σ_max`` itself (``dσ = uᵀ dJ v`` for a simple singular
    value). ``σ̂ ≤ ‖J‖₂`` always; the gap shrinks like ``(σ₂/σ₁)^(2·iterations)``.

    Args:
        fn: the map ``fn(x, params) -> array of x's shape``.
        x: the point (a constant: ``stop_gradient`` is applied).
        params: differentiable parameters of ``fn``.
        starts: ``(k, *x.shape)`` start vectors (e.g. Gaussian), not necessarily normalised.
        iterations: power iterations (``>= 0``; 0 uses the normalised starts as they are).
    """
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"spectral_norm: iterations must be an integer >= 0, got {iterations!r}")
    x = jax.lax.stop_gradient(x)
    _check_probes("spectral_norm", x, starts)
    frozen = jax.lax.stop_gradient(params)
    _, jvp = jax.linearize(lambda z: fn(z, frozen), x)
    vjp = jax.linear_transpose(jvp, x)

    def normalise(v: Array) -> Array:
        return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)

    def power(v: Array) -> Array:
        def body(_, v):
            return normalise(vjp(jvp(v))[0])

        return jax.lax.fori_loop(0, iterations, body, normalise(v))

    vs = jax.lax.stop_gradient(jax.vmap(power)(starts))

    def norm_jv(v: Array) -> Array:
        u = jax.jvp(lambda z: fn(z, params), (x,), (v,))[1]
        return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(u)), jnp.finfo(u.dtype).tiny))

    return jnp.max(jax.vmap(norm_jv)(vs))


def _check_probes(who: str, x: Array, probes: Array) -> None:
    if probes.ndim != x.ndim + 1 or probes.shape[1:] != x.shape or probes.shape[0] < 1:
        raise ValueError(
            f"{who}: probes must have shape (k, *x.shape) = (k, {', '.join(map(str, x.shape))}) "
            f"with k >= 1, got {probes.shape}"
        )
