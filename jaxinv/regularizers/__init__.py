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
from ._spline import LinearSpline as LinearSpline
from ._spline import inf_curvature as inf_curvature
from ._spline import init_spline_ridge as init_spline_ridge
from ._spline import spline_ridge as spline_ridge
from ._spline import spline_ridge_grad as spline_ridge_grad
from ._spline import sup_curvature as sup_curvature
from ._tv import smoothed_tv as smoothed_tv

__all__ = [
    "AbstractPotential",
    "LinearSpline",
    "dct_filters",
    "dense",
    "fields_of_experts",
    "fields_of_experts_grad",
    "get_activation",
    "get_potential",
    "inf_curvature",
    "init_dense",
    "init_fields_of_experts",
    "init_spline_ridge",
    "smoothed_tv",
    "spline_ridge",
    "spline_ridge_grad",
    "sup_curvature",
    "tv_like_filters",
]
