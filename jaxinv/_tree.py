"""Small array and pytree helpers used by the solvers, maps and operators."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

#: Full float32 arithmetic for every product and convolution, on every backend: GPUs would
#: otherwise use TF32 and TPUs bfloat16 passes, which stalls fixed-point residuals near 1e-3.
EXACT = jax.lax.Precision.HIGHEST


def matmul(a: Array, b: Array) -> Array:
    """``a @ b`` at :data:`EXACT` precision."""
    return jnp.matmul(a, b, precision=EXACT)


def tree_dot(a: PyTree[Array], b: PyTree[Array]) -> Array:
    """Real inner product ``<a, b>`` summed over every leaf."""
    leaves = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.vdot(u, v, precision=EXACT).real, a, b))
    return sum(leaves, jnp.zeros((), leaves[0].dtype)) if leaves else jnp.zeros(())


def tree_norm(a: PyTree[Array]) -> Array:
    """Euclidean norm over every leaf; its gradient at zero is zero, not NaN."""
    sq = tree_dot(a, a)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)


def same_structure(a: PyTree, b: PyTree) -> tuple[bool, str]:
    """Whether two pytrees of arrays agree in structure, shapes and dtypes (and why not)."""
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta != tb:
        return False, f"tree structure {tb} differs from {ta}"
    for i, (u, v) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)):
        if u.shape != v.shape:
            return False, f"leaf {i} has shape {v.shape}, expected {u.shape}"
        if u.dtype != v.dtype:
            return False, f"leaf {i} has dtype {v.dtype}, expected {u.dtype}"
    return True, ""
