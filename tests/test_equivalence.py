"""The paper's theorem at training scale: on a tied (gradient-step) map the bilevel
hypergradient by conjugate gradients and the DEQ gradient by the fixed-point adjoint (and by
GMRES) are the same gradient, so whole training runs with either end at the same parameters."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxinv.train import TrainConfig, build_instance, train

from helpers import QUIET, TINY_FOE, constant_lr, solves

STEPS = 12


def _run(tmp_path, adjoint: str):
    config = TrainConfig.of(
        task="denoise",
        task_options={"sigma": 0.1},
        model="bilevel",
        arch="foe",
        arch_options={**TINY_FOE, "num_filters": 3},
        patch_size=16,
        num_train=8,
        num_val=2,
        batch_size=4,
        steps=STEPS,
        **constant_lr(0.01),
        **solves(1e-12, 2000),
        adjoint=adjoint,
        throw=True,
        **QUIET,
    )
    return train(config, tmp_path / adjoint, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equivalence")
    return {a: _run(tmp, a) for a in ("cg", "fixed_point", "gmres")}


def _leaves(params):
    return [np.asarray(a) for a in jax.tree.leaves(params)]


def test_bilevel_and_deq_adjoints_train_to_the_same_parameters(runs):
    reference = _leaves(runs["cg"].params)
    start = _leaves(build_instance(runs["cg"].config)[1])
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, start, strict=True))
    assert moved > 1e-3  # the run really trained: the comparison below is not trivial
    for name in ("fixed_point", "gmres"):
        for a, b in zip(reference, _leaves(runs[name].params), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9, err_msg=name)


def test_every_step_of_every_run_converged_both_ways(runs):
    for name, result in runs.items():
        steps = [r for r in result.history if r["kind"] == "train"]
        assert len(steps) == STEPS
        assert all(r["fwd_converged"] == 1.0 and r["bwd_converged"] == 1.0 for r in steps), name
    losses = [[r["loss"] for r in res.history if r["kind"] == "train"] for res in runs.values()]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-8)
    np.testing.assert_allclose(losses[2], losses[0], rtol=1e-8)
