"""Architectures: learnable regularizers turned into fixed-point maps for a task.

A built model is an ``eqx.Module`` that *is* the map: ``model(x, y) = T(x; y)``, tied (bilevel:
a gradient step on an energy) or untied (DEQ: the same step with an independent second weight
set). Its array fields are the parameters (every scalar λ, τ, γ, … is an array leaf), its static
fields the settings; ``model.init_x(y)`` is the initial guess ``Aᵀy`` and ``model.refresh()``
recomputes the *derived* leaves (the step τ, operator norms) after every optimiser step.
``model.trainable()`` says which parameters the optimiser updates; derived leaves are frozen and
treated as constants by the gradient. Because τ only scales the step, the fixed point — and hence
the implicit gradient — does not depend on it; it is chosen so that the tied map contracts.

Each architecture is a small frozen dataclass of hyperparameters whose ``build(key, task,
image_shape, tied)`` initialises its model. Registry (:data:`ARCHITECTURES`, :func:`get_model`,
:func:`build_model`):

- ``"foe"`` (:class:`FoE` → :class:`FoEModel`): fields of experts, the strong denoiser;
- ``"conv2x11"`` (:class:`Conv2x11` → :class:`ConvModel`): the paper's 2 filters 11×11,
  TV-like init, tanh, operator norm normalisation;
- ``"conv30x3"`` (:class:`Conv30x3` → :class:`ConvModel`): the paper's 30 filters 3×3, random
  init, same normalisation;
- ``"dense"`` (:class:`Dense` → :class:`DenseModel`): the paper's MNIST model, ``W`` (d×d) plus
  bias;
- ``"spline"`` (:class:`Spline` → :class:`SplineModel`): the spline ridge regularizer with
  learned convex (CRR-NN) or weakly convex (WCRR-NN) linear-spline potentials;
- ``"tv"`` (:class:`TV` → :class:`TVModel`): smoothed total variation with one weight, tuned by
  :func:`jaxinv.tuning.tune_tv`.
"""

from ._base import AbstractModel as AbstractModel
from ._base import Architecture as Architecture
from ._base import apply_model as apply_model
from ._base import as_dict as as_dict
from ._base import count_params as count_params
from ._base import from_dict as from_dict
from ._base import partition as partition
from ._base import refreshed as refreshed
from ._registry import ARCHITECTURES as ARCHITECTURES
from ._registry import build_model as build_model
from ._registry import get_model as get_model
from .conv import Conv2x11 as Conv2x11
from .conv import Conv30x3 as Conv30x3
from .conv import ConvModel as ConvModel
from .conv import NormalisedConv as NormalisedConv
from .dense import Dense as Dense
from .dense import DenseModel as DenseModel
from .foe import FoE as FoE
from .foe import FoEModel as FoEModel
from .spline import Spline as Spline
from .spline import SplineModel as SplineModel
from .tv import TV as TV
from .tv import TVModel as TVModel
