"""Status codes: each way a forward or adjoint solve can end is reported and raised with a fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji

R = ji.RESULTS


def _forward(T, solver, y=None, throw=False):
    y = jnp.ones(3) if y is None else y
    return ji.fixed_point(T, jnp.zeros_like(y), {}, y, solver=solver, throw=throw)


def test_results_are_integers_with_messages():
    assert R.successful == 0 and all(int(m) == i for i, m in enumerate(R))
    assert R(1) is R.max_iterations_reached
    assert "max_iter" in R.max_iterations_reached.message.format(limit="max_iter=3")
    assert "non-finite" in R.nonfinite.message
    assert max(R) is R.nonfinite  # the most severe failure is the one raised for a batch


@pytest.mark.parametrize("solver", [ji.Picard(tol=1e-8, max_iter=5), ji.Anderson(1e-8, 5)])
def test_forward_max_iterations_reached(solver):
    sol = _forward(lambda x, p, y: 0.999 * jnp.sin(x) + y, solver)
    assert int(sol.stats.result) == R.max_iterations_reached
    assert int(sol.stats.iterations) == 5 and not bool(sol.stats.converged)
    with pytest.raises(RuntimeError, match="did not converge within max_iter=5.*Increase max_iter"):
        _forward(
            lambda x, p, y: 0.999 * jnp.sin(x) + y, solver, throw=True
        ).value.block_until_ready()


@pytest.mark.parametrize("solver", [ji.Picard(tol=1e-8, max_iter=50), ji.Anderson(1e-8, 50)])
def test_forward_nonfinite(solver):
    T = lambda x, p, y: x + jnp.log(y - 2.0)  # noqa: E731  (NaN for y < 2)
    sol = _forward(T, solver)
    assert int(sol.stats.result) == R.nonfinite
    assert int(sol.stats.iterations) == 1  # a NaN residual stops the loop at once
    with pytest.raises(RuntimeError, match="non-finite.*ji.energies.safe_step"):
        _forward(T, solver, throw=True).value.block_until_ready()


def test_forward_successful_and_per_sample_codes_under_vmap():
    T = lambda x, p, y: p * x + y  # noqa: E731
    solve = jax.vmap(
        lambda p: ji.fixed_point(
            T, jnp.zeros(2), p, jnp.ones(2), solver=ji.Picard(1e-8, 40), throw=False
        )
    )
    stats = solve(jnp.array([0.1, 0.9, jnp.inf])).stats
    np.testing.assert_array_equal(
        stats.result, [R.successful, R.max_iterations_reached, R.nonfinite]
    )
    np.testing.assert_array_equal(stats.converged, [True, False, False])


def _indefinite_problem():
    """T(x) = J x + y with symmetric J of eigenvalues 0.5 and 1.5: I − J is indefinite.

    Anderson still finds the fixed point (it is GMRES-like on affine maps) and the gradient is
    well defined, but CG on (I − J)ᵀ u = c meets cᵀ(I − J)c < 0 at its first step.
    """
    q = jnp.array([[1.0, 1.0], [1.0, -1.0]]) / jnp.sqrt(2.0)
    J = q @ jnp.diag(jnp.array([0.5, 1.5])) @ q.T
    c = q @ jnp.array([0.1, 1.0])
    return J, c


def _indefinite_loss(J, c, adjoint, probe, throw):
    sol = ji.fixed_point(
        lambda x, p, y: p @ x + y,
        jnp.zeros(2),
        J,
        jnp.array([1.0, -0.5]),
        solver=ji.Anderson(tol=1e-12, max_iter=50),
        adjoint=adjoint,
        throw=throw,
        probe=probe,
    )
    return c @ sol.value


def test_cg_on_indefinite_system_reports_nonpositive_curvature():
    J, c = _indefinite_problem()
    cg = ji.Implicit(linear_solver=ji.CG(tol=1e-10, max_iter=20))
    grad = jax.grad(_indefinite_loss, argnums=(0, 3))
    _, probe = grad(J, c, cg, ji.BackwardProbe(), False)
    stats = probe.as_stats()
    assert int(stats.result) == R.nonpositive_curvature and not bool(stats.converged)
    assert float(probe.result) == float(R.nonpositive_curvature)
    with pytest.raises(RuntimeError, match="adjoint solve.*non-positive curvature.*gmres"):
        grad(J, c, cg, ji.BackwardProbe(), True)[0].block_until_ready()
    # GMRES solves the same system; its gradient is the closed form c (I − J)⁻¹ y differentiated.
    gmres = ji.Implicit(linear_solver=ji.GMRES(tol=1e-12, max_iter=20))
    g, probe = grad(J, c, gmres, ji.BackwardProbe(), True)
    assert int(probe.as_stats().result) == R.successful
    exact = jax.grad(lambda p: c @ jnp.linalg.solve(jnp.eye(2) - p, jnp.array([1.0, -0.5])))(J)
    np.testing.assert_allclose(g, exact, atol=1e-9)


def test_gmres_breakdown_on_a_singular_system():
    # M = I makes (I − M) = 0: the first Arnoldi column is zero.
    u, stats = ji.GMRES(tol=1e-10, max_iter=10).solve_linear(lambda v: v, jnp.array([1.0, 2.0]))
    assert int(stats.result) == R.breakdown
    assert bool(jnp.all(jnp.isfinite(u)))  # the broken column is left out, not divided by zero
    # A singular A = [[0, 1], [0, 0]] (M = I − A): one good column, then A e₁ = 0 breaks down.
    A = jnp.array([[0.0, 1.0], [0.0, 0.0]])
    g = jnp.array([0.0, 1.0])
    u, stats = ji.GMRES(tol=1e-10, max_iter=10).solve_linear(lambda v: v - A @ v, g)
    assert int(stats.result) == R.breakdown and int(stats.iterations) == 4
    np.testing.assert_allclose(float(stats.residual), 1.0)  # g is not in the range of A


def test_gmres_breakdown_through_fixed_point_raises():
    # T(x) = p y with ∂T/∂x = I: (I − ∂T/∂x)ᵀ u = g has no solution at x* = p y.
    T = lambda x, p, y: x - jax.lax.stop_gradient(x) + p * y  # noqa: E731
    adjoint = ji.Implicit(linear_solver=ji.GMRES(tol=1e-10, max_iter=10))

    def loss(p, probe, throw):
        sol = ji.fixed_point(
            T, jnp.zeros(2), p, jnp.ones(2), adjoint=adjoint, throw=throw, probe=probe
        )
        return jnp.sum(sol.value)

    _, probe = jax.grad(loss, argnums=(0, 1))(jnp.asarray(2.0), ji.BackwardProbe(), False)
    assert int(probe.as_stats().result) == R.breakdown
    with pytest.raises(RuntimeError, match="adjoint solve.*broke down.*eigenvalue of ∂T/∂x"):
        jax.grad(loss)(jnp.asarray(2.0), ji.BackwardProbe(), True).block_until_ready()


def test_adjoint_max_iterations_through_the_probe():
    def loss(p, probe, linear_solver):
        sol = ji.fixed_point(
            lambda x, p, y: p * x + y,
            jnp.zeros(3),
            p,
            jnp.ones(3),
            adjoint=ji.Implicit(linear_solver=linear_solver),
            throw=False,
            probe=probe,
        )
        return jnp.sum(sol.value)

    grad = jax.jit(jax.grad(loss, argnums=1), static_argnums=2)
    for solver in (ji.Picard(1e-10, 5), ji.Anderson(1e-10, 1, memory=2)):
        stats = grad(jnp.asarray(0.9), ji.BackwardProbe(), solver).as_stats()
        assert int(stats.result) == R.max_iterations_reached, solver
    stats = grad(jnp.asarray(0.9), ji.BackwardProbe(), ji.Picard(1e-10, 500)).as_stats()
    assert int(stats.result) == R.successful and bool(stats.converged)


def test_linear_solvers_report_nonfinite():
    g = jnp.array([1.0, 2.0])
    for solver in (ji.CG(), ji.GMRES(), ji.Picard(), ji.Anderson()):
        _, stats = solver.solve_linear(lambda v: v * jnp.nan, g)
        assert int(stats.result) == R.nonfinite, solver


def test_cg_in_float32_past_its_attainable_accuracy_reports_stagnation():
    # cond(A) = 1e4 in float32: the true residual cannot go below ~eps·cond ≈ 1e-3, while the
    # CG recurrence residual keeps falling and passes tol = 1e-7 long before max_iter.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    a = (q * np.logspace(0, -4, 50)) @ q.T
    m = jnp.asarray(np.eye(50) - a, jnp.float32)
    g = jnp.asarray(rng.normal(size=50), jnp.float32)
    _, stats = ji.CG(tol=1e-7, max_iter=5000).solve_linear(lambda v: m @ v, g)
    assert int(stats.result) == R.stagnated
    assert int(stats.iterations) < 5000 and float(stats.residual) > 1e-5
    # The same system in float64 reaches the tolerance.
    _, stats = ji.CG(tol=1e-7, max_iter=5000).solve_linear(
        lambda v: m.astype(jnp.float64) @ v, g.astype(jnp.float64)
    )
    assert int(stats.result) == R.successful


@pytest.mark.parametrize("member", [m for m in R if m != R.successful], ids=lambda m: m.name)
def test_every_adjoint_failure_raises_its_cause_and_a_fix(member):
    adjoint = ji.Implicit("gmres", tol=1e-6, max_iter=9)
    stats = ji.Stats(jnp.asarray(9), jnp.asarray(1.0), jnp.asarray(int(member), jnp.int32))
    cause = member.message.format(limit="max_iter=9 to tol=1e-06").split(":")[0]
    with pytest.raises(RuntimeError, match=r"adjoint solve \(Implicit\(method='gmres'\)\)") as err:
        adjoint._raise_if_failed(jnp.zeros(2), stats).block_until_ready()
    message = str(err.value)
    assert cause in message
    assert any(word in message for word in ("reduce", "Increase", "use method", "Loosen"))
    ok = ji.Stats(jnp.asarray(3), jnp.asarray(0.0), jnp.asarray(0, jnp.int32))
    np.testing.assert_array_equal(adjoint._raise_if_failed(jnp.ones(2), ok), jnp.ones(2))
