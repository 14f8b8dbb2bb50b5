"""The model interface: an ``eqx.Module`` whose array fields are its parameters.

A built model *is* the fixed-point map ``T(x; y)``: ``model(x, y)``. Its array fields are the
parameters, learnable (filters, weights) and derived (the step τ, operator norms), its static
fields the settings. :meth:`AbstractModel.refresh` recomputes the derived leaves from the
learnable ones (call it after every optimiser step), :meth:`AbstractModel.trainable` says which
leaves the optimiser updates. Equal settings and shapes give equal static structure, so one
compilation serves every model of a configuration.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..operators import AbstractOperator
from ..tasks import Task


class AbstractModel(eqx.Module):
    """A learnable regularizer turned into a fixed-point map for one task and image shape.

    Attributes:
        operator: the forward operator ``A`` (not a parameter).
        image_shape: ``(H, W)`` the map and its operator were built for.
        tied: ``True`` for the bilevel (gradient-step) map, ``False`` for the DEQ map.
        arch: registry name of the architecture.
        op_norm: the upper bound on ``‖A‖₂`` the step is computed with.

    The parameters are the model's own floating-point array fields (not the operator's); the
    names of the frozen ones are :meth:`frozen`.
    """

    operator: AbstractOperator
    image_shape: tuple[int, int] = eqx.field(static=True)
    tied: bool = eqx.field(static=True)
    arch: str = eqx.field(static=True)
    op_norm: float = eqx.field(static=True)

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "H W"], y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        """The map ``T(x; y)`` on one image (``vmap`` for batches)."""

    @abc.abstractmethod
    def refresh(self) -> AbstractModel:
        """A copy with the derived leaves (τ, operator norms) recomputed from the others, treated
        as constants by the gradient (``stop_gradient``); jit-compatible."""

    @abc.abstractmethod
    def frozen(self) -> tuple[str, ...]:
        """Names of the parameters the optimiser leaves alone (derived or fixed)."""

    def learned(self) -> str:
        """What is learned, in words."""
        return ", ".join(n for n in parameter_names(self) if n not in self.frozen())

    def solve_form(self) -> AbstractModel:
        """The model as a batched solve takes it: the same map, with any parameter that the map
        uses twice given as two leaves, so that a batch's gradient sums each use over the batch
        before adding them. The default is the model itself."""
        return self

    def init_x(self, y: Float[Array, "H W"]) -> Float[Array, "H W"]:
        """The initial guess ``Aᵀy``."""
        return self.operator.adjoint(y)

    def params(self) -> AbstractModel:
        """The parameters: this model with every leaf that is not a parameter (the operator's
        arrays, non-floating leaves) replaced by ``None`` (``eqx.combine`` restores them)."""
        return eqx.filter(self, _parameter_spec(self))

    def trainable(self) -> PyTree[bool]:
        """A pytree of bools with the structure of :meth:`params`: ``True`` on the leaves the
        optimiser updates."""
        frozen = self.frozen()
        return jax.tree_util.tree_map_with_path(
            lambda path, _: _name(path[0]) not in frozen, self.params()
        )

    def num_params(self, trainable_only: bool = True) -> int:
        """Number of (trainable) scalar parameters."""
        params = self.params()
        return count_params(params, self.trainable() if trainable_only else None)


def partition(model: AbstractModel) -> tuple[AbstractModel, AbstractModel]:
    """``(params, rest)`` with ``eqx.combine(params, rest) == model``: the parameters
    (:meth:`AbstractModel.params`) and everything else (settings, the operator)."""
    return eqx.partition(model, _parameter_spec(model))


def apply_model(x: Array, model: AbstractModel, y: Array) -> Array:
    """``model(x, y)`` as a map ``T(x, params, y)`` for :func:`jaxinv.fixed_point` with the model
    as its parameters (one function, so compilations are shared between equal models)."""
    return model(x, y)


def parameter_names(model: AbstractModel) -> list[str]:
    """Names of the model's parameter fields that are set (in field order)."""
    return list(as_dict(model))


def as_dict(model: AbstractModel) -> dict[str, Any]:
    """The parameters by field name, ``{"lam": ..., "tau": ..., "K": ...}`` (fields that are
    ``None`` left out); the layout of checkpoints written before models were modules. Works on
    any pytree with the model's structure (e.g. ``model.trainable()`` or gradients)."""
    out = {}
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if f.name != "operator" and not f.metadata.get("static", False) and value is not None:
            out[f.name] = value
    return out


def from_dict(model: AbstractModel, values: dict[str, Any]) -> AbstractModel:
    """``model`` with the parameters named in ``values`` replaced (inverse of :func:`as_dict`);
    the values may be any pytrees (e.g. optimiser moments)."""
    names = parameter_names(model)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"{model.arch}: {unknown} are not parameters of this model; it has {sorted(names)}"
        )
    keys = sorted(values)
    return eqx.tree_at(
        lambda m: [getattr(m, k) for k in keys],
        model,
        [values[k] for k in keys],
        is_leaf=lambda v: v is None,
    )


def count_params(params: PyTree, trainable: PyTree | None = None) -> int:
    """Total size of the floating-point array leaves of ``params`` (only those marked ``True`` in
    ``trainable``, a matching pytree of bools, if given). For a model, only its parameters count
    (not the operator)."""
    if isinstance(params, AbstractModel):
        params = params.params()
    leaves = jax.tree.leaves(params)
    if trainable is None:
        keep = [True] * len(leaves)
    else:
        keep = jax.tree.leaves(trainable)
        if len(keep) != len(leaves):
            raise ValueError("count_params: trainable must have the structure of params")
    return int(
        sum(
            int(np.size(leaf))
            for leaf, k in zip(leaves, keep, strict=True)
            if k and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
        )
    )


M = TypeVar("M", bound=AbstractModel)


def refreshed(model: M) -> M:
    """``model.refresh()``, compiled (once per model structure)."""
    return cast(M, _refresh_jit(model))


@eqx.filter_jit
def _refresh_jit(model: AbstractModel) -> AbstractModel:
    return model.refresh()


class Architecture:
    """Base of the architectures' option sets: frozen dataclasses of hyperparameters whose
    ``build`` initialises an :class:`AbstractModel`."""

    name: ClassVar[str]
    untied_ok: ClassVar[bool] = True
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # set by each subclass

    def build(
        self, key: PRNGKeyArray, task: Task, image_shape: Sequence[int], tied: bool = True
    ) -> AbstractModel:
        """The initial model for ``task`` on ``image_shape = (H, W)`` images (derived leaves
        refreshed)."""
        raise NotImplementedError

    def common_fields(self, task: Task, shape: tuple[int, int], tied: bool) -> dict[str, Any]:
        """The fields every model is built with: ``task``'s operator on ``shape`` images and its
        norm bound, the image shape, whether the map is tied, and the architecture's name."""
        return {
            "operator": task.operator(shape),
            "image_shape": shape,
            "tied": tied,
            "arch": self.name,
            "op_norm": task.operator_norm_bound(),
        }

    def options(self) -> dict[str, Any]:
        """The hyperparameters as a JSON-serialisable dict (``get_model(name, **options)``)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# ---- helpers shared by the architectures ---------------------------------------------------


def _name(key: Any) -> str:
    """The field or dict key a pytree path entry names."""
    for attr in ("name", "key"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _parameter_spec(model: AbstractModel) -> PyTree[bool]:
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: _name(path[0]) != "operator" and eqx.is_inexact_array(leaf), model
    )


def _float(value: float) -> Array:
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _stop(tree: PyTree) -> PyTree:
    return jax.tree.map(jax.lax.stop_gradient, tree)


def _check_common(arch: str, task: Task, image_shape: Sequence[int]) -> tuple[int, int]:
    if not isinstance(task, Task):
        raise ValueError(f"{arch}: task must be a jaxinv.tasks.Task, got {type(task).__name__}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{arch}: image_shape must be (H, W), got {tuple(image_shape)}")
    return shape


def _choose(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(choices)}")


def _potential_of(activation: str) -> str:
    names = {
        "tanh": "logcosh",
        "relu": "relu2",
        "soft_shrink": "soft_shrink",
        "identity": "quadratic",
    }
    if activation not in names:
        raise ValueError(
            f"activation {activation!r} has no potential; choose one of {sorted(names)}"
        )
    return names[activation]
