"""How a solve ended, carried through ``jit`` as an integer code, and the one place it is raised."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Int, PyTree


class RESULTS(enum.IntEnum):
    """The outcome of a forward or adjoint solve; each member's ``message`` names the cause.

    Inside ``jit`` a status is an ``int32`` array (one per sample under ``vmap``), compared with
    the members directly: ``stats.result == ji.RESULTS.successful``; ``ji.RESULTS(int(code))``
    reads a concrete code back. Larger codes are the more severe failures: when a batch fails in
    several ways, the error raised names the largest.
    """

    message: str

    def __new__(cls, code: int, message: str) -> RESULTS:
        member = int.__new__(cls, code)
        member._value_ = code
        member.message = message
        return member

    successful = 0, "converged"
    max_iterations_reached = 1, "did not converge within {limit}"
    stagnated = (
        2,
        "stopped short of tol: its recurrence residual fell below tol but the true residual did "
        "not (accuracy lost to rounding)",
    )
    nonpositive_curvature = (
        3,
        "met a non-positive curvature pᵀAp <= 0: its operator is not symmetric positive definite",
    )
    breakdown = 4, "broke down: its operator is singular on the Krylov space"
    nonfinite = 5, "produced non-finite values"


def status(code: RESULTS) -> Int[Array, ""]:
    """A member as a traced ``int32`` scalar."""
    return jnp.asarray(int(code), jnp.int32)


def raise_if_failed(
    x: PyTree[Array],
    result: Int[Array, "*batch"],
    who: str,
    limit: str,
    fixes: Mapping[RESULTS, str],
) -> PyTree[Array]:
    """Return ``x``, raising at run time (``eqx.error_if``) where ``result`` is a failure.

    The message reads ``"fixed_point: {who} {cause}. {fix}"``: the cause from the member's
    message (``limit`` fills in the settings it names, e.g. ``"max_iter=300 to tol=1e-06"``) and
    the fix from ``fixes``, which lists the failures the caller expects; any other failure is
    raised with its cause alone. Under ``vmap`` the most severe failure in the batch is raised.
    """
    expected = sorted(fixes, reverse=True)  # most severe first
    for member in expected:
        message = f"fixed_point: {who} {member.message.format(limit=limit)}. {fixes[member]}"
        x = eqx.error_if(x, result == member, message.rstrip())
    others = [m for m in RESULTS if m not in fixes and m != RESULTS.successful]
    if others:
        causes = "; ".join(f"{int(m)}: {m.message.format(limit=limit)}" for m in others)
        unexpected = functools.reduce(jnp.logical_or, [result == m for m in others])
        x = eqx.error_if(x, unexpected, f"fixed_point: {who} failed (result {causes}).")
    return x
