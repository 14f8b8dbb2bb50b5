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
    # Linear-solver objects with settings the short spelling does not reach:
    ji.Implicit(linear_solver=ji.GMRES(tol=1e-10, max_iter=300, restart=2)),
    ji.Implicit(linear_solver=ji.Anderson(tol=1e-10, max_iter=300, memory=2, mixing=0.8)),
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


@pytest.mark.parametrize(
    "short,full",
    [
        (ji.Implicit(), ji.Implicit(linear_solver=ji.CG(tol=1e-6, max_iter=300))),
        (ji.Implicit("cg"), ji.Implicit(linear_solver=ji.CG())),
        (
            ji.Implicit(method="cg", tol=1e-8, max_iter=50, memory=5),  # as TrainConfig spells it
            ji.Implicit(linear_solver=ji.CG(tol=1e-8, max_iter=50)),
        ),
        (ji.Implicit("gmres"), ji.Implicit(linear_solver=ji.GMRES(1e-6, 300, restart=20))),
        (
            ji.Implicit("gmres", tol=1e-9, restart=7),
            ji.Implicit(linear_solver=ji.GMRES(tol=1e-9, restart=7)),
        ),
        (
            ji.Implicit("fixed_point", tol=1e-9, memory=5),
            ji.Implicit(linear_solver=ji.Picard(tol=1e-9, max_iter=300)),
        ),
        (
            ji.Implicit("anderson", max_iter=40, memory=3),
            ji.Implicit(linear_solver=ji.Anderson(tol=1e-6, max_iter=40, memory=3)),
        ),
    ],
)
def test_short_spelling_builds_the_same_object(short, full):
    assert short == full and hash(short) == hash(full)
    assert jax.tree.structure(short) == jax.tree.structure(full)
    assert short.method == full.method


def test_spellings_share_one_compiled_program():
    traces = []

    @jax.jit
    def step(params, y, adjoint):
        traces.append(1)
        return jax.grad(lambda p: loss(p, y, SOLVERS[1], adjoint)[0])(params)

    y = jnp.arange(5.0)
    a = step(PARAMS, y, ji.Implicit(method="cg", tol=1e-10, max_iter=300, memory=5))
    b = step(PARAMS, y, ji.Implicit(linear_solver=ji.CG(tol=1e-10, max_iter=300)))
    assert len(traces) == 1
    np.testing.assert_array_equal(a["K"], b["K"])
    step(PARAMS, y, ji.Implicit(linear_solver=ji.GMRES(tol=1e-10, max_iter=300)))
    assert len(traces) == 2  # a different solver is a different program
    # The eager path (filter_jit inside fixed_point) reuses its cache across spellings too.
    T_lin = lambda x, p, y: 0.5 * x + p * y  # noqa: E731
    ji.fixed_point(T_lin, jnp.zeros(4), jnp.asarray(1.0), jnp.ones(4), adjoint=ji.Implicit("cg"))
    before = ji._fixed_point._fixed_point_jit._cached._cache_size()
    ji.fixed_point(
        T_lin,
        jnp.zeros(4),
        jnp.asarray(2.0),
        jnp.ones(4),
        adjoint=ji.Implicit(linear_solver=ji.CG()),
    )
    assert ji._fixed_point._fixed_point_jit._cached._cache_size() == before


@pytest.mark.parametrize(
    "solver",
    [ji.CG(tol=1e-11), ji.GMRES(tol=1e-11, restart=3), ji.Picard(tol=1e-11), ji.Anderson(1e-11)],
    ids=lambda s: type(s).__name__,
)
def test_linear_solver_objects_under_jit_and_vmap(solver):
    # (I − M) u = g for a batch of right-hand sides, M symmetric with ‖M‖ < 1 (valid for all four).
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    m = jnp.asarray(q @ np.diag(np.linspace(-0.6, 0.7, 6)) @ q.T)
    gs = jnp.asarray(rng.normal(size=(4, 6)))
    solve = jax.jit(jax.vmap(lambda g: solver.solve_linear(lambda u: m @ u, g)))
    u, stats = solve(gs)
    assert u.shape == (4, 6) and stats.result.shape == (4,)
    assert bool(jnp.all(stats.result == ji.RESULTS.successful)) and bool(jnp.all(stats.converged))
    want = np.linalg.solve(np.eye(6) - np.asarray(m), np.asarray(gs).T).T
    np.testing.assert_allclose(u, want, rtol=1e-8, atol=1e-9)
    assert bool(jnp.all(stats.residual <= 1e-11))


@pytest.mark.unchecked  # passes ill-typed values on purpose
def test_implicit_rejects_mixed_spellings_and_bad_solvers():
    with pytest.raises(ValueError, match="either linear_solver"):
        ji.Implicit("cg", linear_solver=ji.CG())
    with pytest.raises(ValueError, match="either linear_solver"):
        ji.Implicit(tol=1e-3, linear_solver=ji.GMRES())
    with pytest.raises(TypeError, match="linear_solver must be"):
        ji.Implicit(linear_solver="cg")
    for make in (lambda: ji.CG(tol=0), lambda: ji.GMRES(restart=0), lambda: ji.CG(max_iter=1.5)):
        with pytest.raises(ValueError):
            make()
