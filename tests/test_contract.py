"""The public contract: every solver x adjoint under jit, grad, vmap, nested vmap; no recompiles."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji

SOLVERS = [ji.Picard(tol=1e-10, max_iter=400), ji.Anderson(tol=1e-10, max_iter=400)]
ADJOINTS = [
    ji.Implicit("fixed_point", tol=1e-10),
    ji.Implicit("anderson", tol=1e-10),
    ji.Implicit("cg", tol=1e-10),
    ji.Implicit("gmres", tol=1e-10),
    ji.JacobianFree(),
    ji.Unrolled(),
]


def energy(x, params, y):
    """A pytree-valued unknown: x = {"u": (3,), "v": (2,)}, tied through a smooth coupling."""
    u, v = x["u"], x["v"]
    fit = 0.5 * params["lam"] * (jnp.sum((u - y[:3]) ** 2) + jnp.sum((v - y[3:]) ** 2))
    return fit + jnp.sum(jnp.log(jnp.cosh(params["K"] @ jnp.concatenate([u, v]))))


PARAMS = {
    "lam": jnp.asarray(1.0),
    "K": jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)) * 0.3),
}
T = ji.gradient_step(energy, 0.5)
X0 = {"u": jnp.zeros(3), "v": jnp.zeros(2)}


def loss(params, y, solver, adjoint):
    sol = ji.fixed_point(T, X0, params, y, solver=solver, adjoint=adjoint, throw=False)
    return jnp.sum(sol.value["u"] ** 2) + jnp.sum(jnp.sin(sol.value["v"])), sol.stats


@pytest.mark.parametrize("adjoint", ADJOINTS, ids=lambda a: getattr(a, "method", type(a).__name__))
@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_jit_grad_vmap(solver, adjoint):
    ys = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)))
    grad_fn = jax.grad(loss, has_aux=True)
    per_sample = jax.jit(jax.vmap(grad_fn, in_axes=(None, 0, None, None)), static_argnums=(2, 3))
    grads, stats = per_sample(PARAMS, ys, solver, adjoint)
    assert grads["K"].shape == (3, 4, 5) and stats.iterations.shape == (3,)
    assert bool(jnp.all(stats.converged))
    if not isinstance(adjoint, ji.JacobianFree):
        # Every exact method, batched, equals the unbatched reference gradient sample by sample.
        np.testing.assert_allclose(grads["K"], _reference_grads(ys)["K"], rtol=1e-6, atol=1e-9)


_REFERENCE = {}


def _reference_grads(ys):
    key = np.asarray(ys).tobytes()
    if key not in _REFERENCE:
        grad_fn = jax.jit(
            jax.grad(lambda p, y: loss(p, y, SOLVERS[1], ji.Implicit("gmres", tol=1e-12))[0])
        )
        _REFERENCE[key] = jax.tree.map(lambda *a: jnp.stack(a), *[grad_fn(PARAMS, y) for y in ys])
    return _REFERENCE[key]


def test_nested_vmap_and_gradient_wrt_data():
    ys = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 5)))
    f = jax.jit(jax.vmap(jax.vmap(jax.grad(lambda y: loss(PARAMS, y, SOLVERS[1], ADJOINTS[2])[0]))))
    g = f(ys)
    assert g.shape == (2, 3, 5)
    eps = 1e-6
    e = jnp.zeros(5).at[4].set(eps)
    l = lambda y: loss(PARAMS, y, SOLVERS[1], ADJOINTS[2])[0]  # noqa: E731
    fd = (l(ys[1, 2] + e) - l(ys[1, 2] - e)) / (2 * eps)
    assert abs(float(fd) - float(g[1, 2, 4])) < 1e-7


def test_new_solver_instance_with_same_settings_does_not_recompile():
    traces = []

    @jax.jit
    def step(params, y, solver, adjoint):
        traces.append(1)
        return jax.grad(lambda p: loss(p, y, solver, adjoint)[0])(params)

    y = jnp.arange(5.0)
    for _ in range(3):
        step(PARAMS, y, ji.Anderson(tol=1e-10, max_iter=400), ji.Implicit("cg", tol=1e-10))
        step(PARAMS, y + 1, ji.Anderson(tol=1e-10, max_iter=400), ji.Implicit("cg", tol=1e-10))
    assert len(traces) == 1
    step(PARAMS, y, ji.Anderson(tol=1e-9, max_iter=400), ji.Implicit("cg", tol=1e-10))
    assert len(traces) == 2  # a different setting is a different program


def test_eager_calls_reuse_the_compiled_solve():
    T_lin = lambda x, p, y: 0.5 * x + p * y  # noqa: E731
    ji.fixed_point(T_lin, jnp.zeros(4), jnp.asarray(1.0), jnp.ones(4))
    before = ji._fixed_point._fixed_point_jit._cached._cache_size()
    for p in (2.0, 3.0, 4.0):
        ji.fixed_point(T_lin, jnp.zeros(4), jnp.asarray(p), jnp.ones(4))
    assert ji._fixed_point._fixed_point_jit._cached._cache_size() == before


def test_solvers_and_adjoints_are_pytrees_without_array_leaves():
    for obj in SOLVERS + ADJOINTS:
        assert isinstance(obj, eqx.Module)
        assert jax.tree.leaves(obj) == []
        assert obj == type(obj)(**{f: getattr(obj, f) for f in obj.__dataclass_fields__})
