"""Hypergradients through ji.fixed_point against independent answers (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji

N = 8
TIGHT = dict(tol=1e-12, max_iter=5000)


def _quadratic_problem(seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(N, N))
    params = {"Q": jnp.asarray(m @ m.T / N + np.eye(N)), "a": jnp.asarray(0.3)}
    y = jnp.asarray(rng.normal(size=N))
    target = jnp.asarray(rng.normal(size=N))
    lipschitz = float(np.linalg.eigvalsh(np.asarray(params["Q"])).max()) + 0.3
    return params, y, target, 1.0 / lipschitz


def quadratic_energy(x, p, y):
    return 0.5 * x @ (p["Q"] @ x) - y @ x + 0.5 * p["a"] * jnp.sum(x**2)


def _max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("method", ["cg", "gmres", "fixed_point", "anderson"])
@pytest.mark.parametrize("solver", [ji.Anderson(**TIGHT), ji.Picard(**TIGHT)])
def test_quadratic_hypergradient_matches_closed_form(method, solver):
    params, y, target, step = _quadratic_problem()
    T = ji.gradient_step(quadratic_energy, step)

    def loss(params, y):
        x = ji.fixed_point(
            T, jnp.zeros(N), params, y, solver=solver, adjoint=ji.Implicit(method, **TIGHT)
        ).value
        return jnp.sum((x - target) ** 2)

    def closed_form(params, y):
        # E only sees the symmetric part of Q: x* = (sym(Q) + a I)^{-1} y.
        sym = 0.5 * (params["Q"] + params["Q"].T)
        x = jnp.linalg.solve(sym + params["a"] * jnp.eye(N), y)
        return jnp.sum((x - target) ** 2)

    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, y)
    want = jax.grad(closed_form, argnums=(0, 1))(params, y)
    assert _max_diff(got, want) < 1e-9
    assert _max_diff(got, jax.tree.map(jnp.zeros_like, want)) > 1e-3  # not trivially zero


def _deq_problem(seed=1):
    """A non-symmetric contraction T(x) = x - tau (x - y + V tanh(W x + b)), C != W^T."""
    rng = np.random.default_rng(seed)
    params = {
        "W": jnp.asarray(rng.normal(size=(N, N)) * 0.15),
        "V": jnp.asarray(rng.normal(size=(N, N)) * 0.15),
        "b": jnp.asarray(rng.normal(size=N) * 0.1),
    }
    y = jnp.asarray(rng.normal(size=N))
    return params, y


def deq_map(x, p, y):
    return x - 0.5 * (x - y + p["V"] @ jnp.tanh(p["W"] @ x + p["b"]))


def _assert_contraction(params, y):
    jac = jax.jacobian(deq_map)(jnp.zeros(N), params, y)
    assert np.linalg.norm(np.asarray(jac), 2) < 1, "test problem must contract"
    assert not np.allclose(jac, jac.T), "test problem must be non-symmetric"


@pytest.mark.parametrize("method", ["gmres", "fixed_point", "anderson"])
def test_deq_hypergradient_matches_finite_differences(method):
    params, y = _deq_problem()
    _assert_contraction(params, y)

    def loss(params, y):
        x = ji.fixed_point(
            deq_map,
            jnp.zeros(N),
            params,
            y,
            solver=ji.Anderson(**TIGHT),
            adjoint=ji.Implicit(method, **TIGHT),
        ).value
        return jnp.sum(jnp.sin(x))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, y)
    flat, unravel = jax.flatten_util.ravel_pytree((params, y))
    gflat = jax.flatten_util.ravel_pytree(grads)[0]
    eps = 1e-6
    f = jax.jit(lambda v: loss(*unravel(v)))
    for i in range(0, flat.size, 5):
        e = jnp.zeros_like(flat).at[i].set(eps)
        fd = (f(flat + e) - f(flat - e)) / (2 * eps)
        assert abs(float(fd) - float(gflat[i])) < 1e-7 * max(1.0, abs(float(fd))), i


def test_implicit_matches_unrolled_at_convergence():
    params, y = _deq_problem()

    def loss(params, adjoint, solver):
        x = ji.fixed_point(
            deq_map, jnp.zeros(N), params, y, solver=solver, adjoint=adjoint, throw=False
        ).value
        return jnp.sum(jnp.cos(x))

    implicit = jax.grad(loss)(params, ji.Implicit("gmres", **TIGHT), ji.Anderson(**TIGHT))
    unrolled = jax.grad(loss)(params, ji.Unrolled(), ji.Picard(tol=1e-12, max_iter=200))
    assert _max_diff(implicit, unrolled) < 1e-10
    # Truncated unrolling is visibly different: the comparison can fail.
    early = jax.grad(loss)(params, ji.Unrolled(), ji.Picard(tol=1e-12, max_iter=3))
    assert _max_diff(implicit, early) > 1e-4


def _tied_nonlinear_problem(seed=2):
    """E(x) = 1/2 ||x - y||^2 + sum log cosh(K x): nonlinear, strongly convex."""
    rng = np.random.default_rng(seed)
    params = {"K": jnp.asarray(rng.normal(size=(2 * N, N)) * 0.5), "lam": jnp.asarray(1.0)}
    y = jnp.asarray(rng.normal(size=N))
    lipschitz = 1.0 + float(np.linalg.norm(np.asarray(params["K"]), 2) ** 2)
    return params, y, 1.0 / lipschitz


def tied_energy(x, p, y):
    return 0.5 * p["lam"] * jnp.sum((x - y) ** 2) + jnp.sum(jnp.log(jnp.cosh(p["K"] @ x)))


def test_paper_theorem_adjoint_methods_agree_for_tied_map():
    """Bilevel = DEQ with a tied map: the three adjoint solvers give one gradient."""
    params, y, step = _tied_nonlinear_problem()
    T = ji.gradient_step(tied_energy, step)
    jac = jax.jacobian(T)(y, params, y)
    np.testing.assert_allclose(jac, jac.T, atol=1e-12)  # I - dT/dx is symmetric

    def loss(params, method):
        x = ji.fixed_point(
            T,
            jnp.zeros(N),
            params,
            y,
            solver=ji.Anderson(**TIGHT),
            adjoint=ji.Implicit(method, **TIGHT),
        ).value
        return jnp.sum((x - 0.5) ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    grads = {m: grad(params, m) for m in ("fixed_point", "cg", "gmres")}
    assert _max_diff(grads["cg"], grads["fixed_point"]) < 1e-8
    assert _max_diff(grads["gmres"], grads["fixed_point"]) < 1e-8

    # ... and that gradient is the bilevel hypergradient -(d2E/dθdx)^T (d2E/dx2)^{-1} dL/dx.
    x_star = ji.fixed_point(T, jnp.zeros(N), params, y, solver=ji.Anderson(**TIGHT)).value
    hess = jax.hessian(tied_energy)(x_star, params, y)
    dl = 2 * (x_star - 0.5)
    w = jnp.linalg.solve(hess, dl)
    _, vjp = jax.vjp(lambda p: jax.grad(tied_energy)(x_star, p, y), params)
    bilevel = jax.tree.map(lambda a: -a, vjp(w)[0])
    assert _max_diff(grads["cg"], bilevel) < 1e-8


def test_matches_jaxopt_implicit_differentiation():
    jaxopt = pytest.importorskip("jaxopt")
    params, y = _deq_problem()

    def loss_ji(params):
        x = ji.fixed_point(
            deq_map,
            jnp.zeros(N),
            params,
            y,
            solver=ji.Anderson(**TIGHT),
            adjoint=ji.Implicit("gmres", **TIGHT),
        ).value
        return jnp.sum(x**3)

    def loss_jaxopt(params):
        fpi = jaxopt.FixedPointIteration(
            fixed_point_fun=lambda x, p: deq_map(x, p, y),
            maxiter=2000,
            tol=1e-13,
            implicit_diff=True,  # its own adjoint solver, made as tight as ours:
            implicit_diff_solve=lambda matvec, b: jaxopt.linear_solve.solve_gmres(
                matvec, b, tol=1e-13, maxiter=500
            ),
        )
        return jnp.sum(fpi.run(jnp.zeros(N), params).params ** 3)

    got, want = jax.jit(jax.grad(loss_ji))(params), jax.jit(jax.grad(loss_jaxopt))(params)
    assert _max_diff(got, want) < 1e-8


def test_gradient_wrt_closed_over_array_is_not_dropped():
    params, y = _deq_problem()

    def loss(scale):
        def T(x, p, y):  # closes over the traced `scale`
            return deq_map(x, p, y * scale)

        x = ji.fixed_point(
            T,
            jnp.zeros(N),
            params,
            y,
            solver=ji.Anderson(**TIGHT),
            adjoint=ji.Implicit("gmres", **TIGHT),
        ).value
        return jnp.sum(x**2)

    def reference(scale):
        x = ji.fixed_point(
            deq_map,
            jnp.zeros(N),
            params,
            y * scale,
            solver=ji.Anderson(**TIGHT),
            adjoint=ji.Implicit("gmres", **TIGHT),
        ).value
        return jnp.sum(x**2)

    got = jax.jit(jax.grad(loss))(1.3)
    assert abs(float(got)) > 1e-3
    assert abs(float(got) - float(jax.jit(jax.grad(reference))(1.3))) < 1e-9


def test_jacobian_free_is_an_approximation_with_reported_error():
    params, y = _deq_problem()
    probe = ji.BackwardProbe()

    def loss(params, probe, adjoint):
        x = ji.fixed_point(
            deq_map,
            jnp.zeros(N),
            params,
            y,
            solver=ji.Anderson(**TIGHT),
            adjoint=adjoint,
            probe=probe,
        ).value
        return jnp.sum(x**2)

    exact, _ = jax.grad(loss, argnums=(0, 1))(params, probe, ji.Implicit("gmres", **TIGHT))
    jfb, jfb_probe = jax.grad(loss, argnums=(0, 1))(params, probe, ji.JacobianFree())
    diff = _max_diff(exact, jfb)
    assert 1e-6 < diff < 10 * _max_diff(exact, jax.tree.map(jnp.zeros_like, exact))
    assert float(jfb_probe.residual) > 1e-3  # the error of the approximation is visible


@pytest.mark.parametrize(
    "linear_solver,tied",
    [
        (ji.CG(**TIGHT), True),
        (ji.GMRES(**TIGHT, restart=3), True),
        (ji.GMRES(**TIGHT, restart=3), False),
        (ji.Picard(**TIGHT), False),
        (ji.Anderson(**TIGHT, memory=3, mixing=0.7), False),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, bool) else ("tied" if v else "deq"),
)
def test_linear_solver_objects_match_finite_differences(linear_solver, tied):
    if tied:
        params, y, step = _tied_nonlinear_problem()
        T = ji.gradient_step(tied_energy, step)
    else:
        params, y = _deq_problem()
        T = deq_map
    adjoint = ji.Implicit(linear_solver=linear_solver)

    def loss(params, y, probe):
        sol = ji.fixed_point(
            T, jnp.zeros(N), params, y, solver=ji.Anderson(**TIGHT), adjoint=adjoint, probe=probe
        )
        return jnp.sum(jnp.sin(sol.value))

    probe = ji.BackwardProbe()
    grads, probe_grad = jax.jit(jax.grad(lambda a, b: loss(*a, b), argnums=(0, 1)))(
        (params, y), probe
    )
    assert int(probe_grad.as_stats().result) == ji.RESULTS.successful
    assert float(probe_grad.residual) <= 1e-12
    flat, unravel = jax.flatten_util.ravel_pytree((params, y))
    gflat = jax.flatten_util.ravel_pytree(grads)[0]
    assert float(jnp.max(jnp.abs(gflat))) > 1e-3  # not trivially zero
    eps = 1e-6
    f = jax.jit(lambda v: loss(*unravel(v), probe))
    for i in range(0, flat.size, 7):
        e = jnp.zeros_like(flat).at[i].set(eps)
        fd = (f(flat + e) - f(flat - e)) / (2 * eps)
        assert abs(float(fd) - float(gflat[i])) < 1e-7 * max(1.0, abs(float(fd))), i
