"""Regularizers ``R(x, params) -> scalar`` as pure functions, with potentials and initialisers."""

from ._dense import dense as dense
from ._dense import init_dense as init_dense
from ._foe import dct_filters as dct_filters
from ._foe import fields_of_experts as fields_of_experts
from ._foe import fields_of_experts_grad as fields_of_experts_grad
from ._foe import init_fields_of_experts as init_fields_of_experts
from ._foe import tv_like_filters as tv_like_filters
from ._potentials import AbstractPotential as AbstractPotential
from ._potentials import get_activation as get_activation
from ._potentials import get_potential as get_potential
from ._tv import smoothed_tv as smoothed_tv

__all__ = [
    "AbstractPotential",
    "dct_filters",
    "dense",
    "fields_of_experts",
    "fields_of_experts_grad",
    "get_activation",
    "get_potential",
    "init_dense",
    "init_fields_of_experts",
    "smoothed_tv",
    "tv_like_filters",
]
