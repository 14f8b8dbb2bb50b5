"""Building fixed-point maps from energies."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jaxtyping import Array, PyTree

Energy = Callable[[PyTree, PyTree, PyTree], Array]
Step = float | Array | Callable[[PyTree], Array]


def gradient_step(energy: Energy, step: Step) -> Callable[[PyTree, PyTree, PyTree], PyTree]:
    """The tied (bilevel) map ``T(x, params, y) = x − τ ∇ₓ energy(x, params, y)``.

    Its fixed points are the stationary points of the energy; for an ``L``-smooth, μ-strongly
    convex energy and ``0 < τ < 2/L`` it is a contraction with rate ``max(|1 − τμ|, |1 − τL|)``,
    and ``I − ∂ₓT = τ∇²E`` is symmetric positive definite, so the adjoint system can be solved by
    conjugate gradients (``ji.Implicit(method="cg")``).

    Args:
        energy: ``energy(x, params, y) -> scalar``.
        step: τ, a positive number or array, or a function ``params -> τ`` for a learnable or
            swept step (keep such scalars in ``params`` rather than as Python constants).
    """
    if not callable(step):
        try:
            positive = float(step) > 0
        except (TypeError, jax.errors.ConcretizationTypeError):
            positive = True  # a traced step: checked by the caller's own logic
        if not positive:
            raise ValueError(f"gradient_step: step must be positive, got {step!r}")
    grad_x = jax.grad(energy)

    def T(x: PyTree, params: PyTree, y: PyTree) -> PyTree:
        tau = step(params) if callable(step) else step
        return jax.tree.map(lambda a, g: a - tau * g, x, grad_x(x, params, y))

    return T
