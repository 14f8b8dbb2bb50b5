"""The operator interface and the identity (denoising)."""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float


class AbstractOperator(eqx.Module):
    """A linear forward operator ``A`` acting on images of shape ``(..., H, W)``.

    Subclasses implement ``__call__`` (``A x``) and ``adjoint`` (``Aᵀ y``), both batched over any
    leading axes. ``normal`` (``AᵀA x``) and ``shape_out`` have generic defaults.
    """

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "*batch H W"]) -> Float[Array, "..."]:
        """Apply the operator: ``A x``."""

    @abc.abstractmethod
    def adjoint(self, y: Float[Array, "..."]) -> Float[Array, "*batch H W"]:
        """Apply the adjoint: ``Aᵀ y``, so that ``<A x, y> = <x, Aᵀ y>``."""

    def normal(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """Apply the normal operator ``AᵀA x``."""
        return self.adjoint(self(x))

    def shape_out(self, shape_in: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``A x`` for ``x`` of shape ``shape_in`` (the same, unless overridden)."""
        return tuple(shape_in)


class Identity(AbstractOperator):
    """``A = I``: the denoising forward operator."""

    def __call__(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """Return ``x``."""
        return x

    def adjoint(self, y: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """Return ``y``."""
        return y

    def normal(self, x: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
        """Return ``x``."""
        return x
