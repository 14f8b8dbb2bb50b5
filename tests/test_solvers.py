"""Forward solvers: acceleration, stability, honest reporting of failure, input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji


def _ill_conditioned_quadratic(n=12, cond=1e4, seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.logspace(0, np.log10(cond), n)
    a = jnp.asarray(q @ np.diag(eig) @ q.T, dtype)
    b = jnp.asarray(rng.normal(size=n), dtype)
    step = float(1.0 / eig.max())
    x_true = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return (lambda x, p, y: x - step * (p @ x - y)), a, b, x_true


def _solve(T, x0, p, y, solver, **kw):
    return jax.jit(lambda x0, p, y: ji.fixed_point(T, x0, p, y, solver=solver, throw=False, **kw))(
        x0, p, y
    )


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-8), (jnp.float32, 1e-5)])
def test_anderson_accelerates_ill_conditioned_problem(dtype, tol):
    T, a, b, x_true = _ill_conditioned_quadratic(dtype=dtype)
    x0 = jnp.zeros(12, dtype)
    picard = _solve(T, x0, a, b, ji.Picard(tol=tol, max_iter=200_000))
    anderson = _solve(T, x0, a, b, ji.Anderson(tol=tol, max_iter=200_000, memory=5))
    assert bool(picard.stats.converged) and bool(anderson.stats.converged)
    assert int(anderson.stats.iterations) * 10 < int(picard.stats.iterations)
    assert bool(jnp.all(jnp.isfinite(anderson.value)))
    rel = np.linalg.norm(np.asarray(anderson.value, np.float64) - x_true) / np.linalg.norm(x_true)
    assert rel < (1e-3 if dtype == jnp.float64 else 1e-1)


def test_anderson_beats_jaxopt_anderson_on_the_same_problem():
    jaxopt = pytest.importorskip("jaxopt")
    T, a, b, _ = _ill_conditioned_quadratic()
    ours = _solve(T, jnp.zeros(12), a, b, ji.Anderson(tol=1e-8, max_iter=100_000, memory=5))
    theirs = jaxopt.AndersonAcceleration(
        fixed_point_fun=lambda x: T(x, a, b), history_size=5, maxiter=100_000, tol=1e-8, jit=True
    ).run(jnp.zeros(12))
    # jaxopt measures the absolute residual; compare at our (relative, stricter-or-equal) tolerance.
    assert bool(ours.stats.converged)
    assert int(ours.stats.iterations) < int(theirs.state.iter_num)


def test_anderson_stays_finite_on_nonlinear_and_nonsmooth_maps():
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(30, 30)) * 0.3)

    def T(x, p, y):
        return 0.5 * jnp.maximum(p @ x, 0.0) / (1 + jnp.linalg.norm(p, 2)) + y

    sol = _solve(T, jnp.zeros(30), w, jnp.asarray(rng.normal(size=30)), ji.Anderson(tol=1e-10))
    assert bool(sol.stats.converged)
    assert bool(jnp.all(jnp.isfinite(sol.value)))


def test_relaxed_picard_converges_for_nonexpansive_rotation():
    # A rotation by 90 degrees about y is non-expansive, not contractive: plain Picard cycles,
    # Krasnosel'skii–Mann with relaxation 1/2 converges.
    rot = jnp.array([[0.0, -1.0], [1.0, 0.0]])
    T = lambda x, p, y: p @ (x - y) + y  # noqa: E731
    y = jnp.array([1.0, 2.0])
    plain = _solve(T, jnp.zeros(2), rot, y, ji.Picard(tol=1e-8, max_iter=500))
    km = _solve(T, jnp.zeros(2), rot, y, ji.Picard(tol=1e-8, max_iter=500, relaxation=0.5))
    assert not bool(plain.stats.converged)
    assert bool(km.stats.converged)
    np.testing.assert_allclose(km.value, y, atol=1e-6)


def test_per_sample_convergence_under_vmap():
    T = lambda x, p, y: p * x + y  # noqa: E731
    rates = jnp.array([0.1, 0.5, 0.9])
    sol = jax.jit(
        jax.vmap(
            lambda p: ji.fixed_point(
                T, jnp.zeros(4), p, jnp.ones(4), solver=ji.Picard(tol=1e-8, max_iter=1000)
            )
        )
    )(rates)
    it = np.asarray(sol.stats.iterations)
    assert it[0] < it[1] < it[2]  # each sample stops on its own residual
    np.testing.assert_allclose(sol.value[:, 0], 1 / (1 - rates), rtol=1e-6)


@pytest.mark.parametrize(
    "solver", [ji.Picard(tol=1e-8, max_iter=50), ji.Anderson(tol=1e-8, max_iter=50)]
)
def test_divergence_is_reported_and_raises(solver):
    T = lambda x, p, y: x * x + y  # noqa: E731  (no real fixed point: iterates blow up)
    sol = _solve(T, jnp.zeros(3), {}, jnp.ones(3), solver)
    assert not bool(sol.stats.converged)
    with pytest.raises(RuntimeError, match="did not converge|non-finite"):
        ji.fixed_point(T, jnp.zeros(3), {}, jnp.ones(3), solver=solver).value.block_until_ready()


def test_nonconvergence_message_names_the_fix():
    T = lambda x, p, y: 0.999 * x + y  # noqa: E731
    with pytest.raises(RuntimeError, match="max_iter=7.*Increase max_iter"):
        ji.fixed_point(
            T, jnp.zeros(3), {}, jnp.ones(3), solver=ji.Picard(1e-6, 7)
        ).value.block_until_ready()


def test_nan_produces_a_nonfinite_error():
    T = lambda x, p, y: x + jnp.log(y - 2.0)  # noqa: E731  (NaN for y < 2)
    sol = _solve(T, jnp.zeros(2), {}, jnp.ones(2), ji.Picard(1e-6, 10))
    assert not bool(sol.stats.converged)
    with pytest.raises(RuntimeError, match="non-finite"):
        ji.fixed_point(T, jnp.zeros(2), {}, jnp.ones(2)).value.block_until_ready()


def test_adjoint_nonconvergence_is_reported_through_the_probe_and_raises():
    T = lambda x, p, y: p * x + y  # noqa: E731

    def loss(p, probe, throw):
        sol = ji.fixed_point(
            T,
            jnp.zeros(3),
            p,
            jnp.ones(3),
            solver=ji.Anderson(tol=1e-10),
            adjoint=ji.Implicit("fixed_point", tol=1e-10, max_iter=5),
            throw=throw,
            probe=probe,
        )
        return jnp.sum(sol.value)

    _, probe_grad = jax.grad(loss, argnums=(0, 1))(jnp.asarray(0.9), ji.BackwardProbe(), False)
    stats = probe_grad.as_stats()
    assert int(stats.iterations) == 5 and not bool(stats.converged)
    assert float(stats.residual) > 1e-3
    with pytest.raises(RuntimeError, match="adjoint solve.*did not converge"):
        jax.grad(loss)(jnp.asarray(0.9), ji.BackwardProbe(), True).block_until_ready()


def test_cg_on_untied_map_fails_loudly_and_gmres_succeeds():
    # (I - J)^T is far from symmetric: CG must not return a silently wrong answer.
    J = jnp.array([[0.0, 0.95], [-0.95, 0.0]])
    T = lambda x, p, y: p @ x + y  # noqa: E731

    def loss(p, adjoint):
        x = ji.fixed_point(
            T,
            jnp.zeros(2),
            p,
            jnp.array([1.0, 0.5]),
            solver=ji.Anderson(tol=1e-12),
            adjoint=adjoint,
        ).value
        return x[0]

    g = jax.grad(loss)(J, ji.Implicit("gmres", tol=1e-12))
    exact = jax.grad(lambda p: jnp.linalg.solve(jnp.eye(2) - p, jnp.array([1.0, 0.5]))[0])(J)
    np.testing.assert_allclose(g, exact, atol=1e-9)
    with pytest.raises(RuntimeError, match="adjoint solve.*cg"):
        jax.grad(loss)(J, ji.Implicit("cg", tol=1e-12, max_iter=4)).block_until_ready()


@pytest.mark.parametrize(
    "make",
    [
        lambda: ji.Picard(tol=0.0),
        lambda: ji.Picard(tol=-1e-3),
        lambda: ji.Picard(max_iter=0),
        lambda: ji.Picard(relaxation=1.5),
        lambda: ji.Anderson(memory=0),
        lambda: ji.Anderson(max_iter=2.5),
        lambda: ji.Implicit(method="newton"),
        lambda: ji.Implicit(tol=0),
        lambda: ji.gradient_step(lambda x, p, y: jnp.sum(x**2), -0.1),
    ],
)
@pytest.mark.unchecked  # passes ill-typed values on purpose
def test_bad_settings_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_misuse_raises_before_compiling():
    x0, y = jnp.zeros(3), jnp.ones(3)
    with pytest.raises(ValueError, match="same structure"):
        ji.fixed_point(lambda x, p, y: (x, x), x0, {}, y)
    with pytest.raises(ValueError, match="shape"):
        ji.fixed_point(lambda x, p, y: jnp.zeros(4), x0, {}, y)
    with pytest.raises(ValueError, match="dtype"):
        ji.fixed_point(lambda x, p, y: x.astype(jnp.float32), x0, {}, y)
    with pytest.raises(ValueError, match="floating"):
        ji.fixed_point(lambda x, p, y: x, jnp.zeros(3, jnp.int32), {}, y)
    with pytest.raises(ValueError, match="NaN or inf"):
        ji.fixed_point(lambda x, p, y: 0.5 * x + y, x0, {}, jnp.array([1.0, jnp.nan, 0.0]))
    with pytest.raises(TypeError, match="solver"):
        ji.fixed_point(lambda x, p, y: x, x0, {}, y, solver="anderson")
    with pytest.raises(TypeError, match="adjoint"):
        ji.fixed_point(lambda x, p, y: x, x0, {}, y, adjoint="cg")


def _products(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "dot_general" in ln or "convolution(" in ln]


def test_products_run_in_full_precision(monkeypatch):
    # GPUs would run float32 products in TF32 (TPUs in bfloat16 passes) unless told otherwise,
    # which stalls residuals near 1e-3: every matrix product and convolution of a solve and of
    # its implicit gradient asks for HIGHEST precision.
    from jaxinv import _conv, energies, operators

    monkeypatch.setattr(_conv, "choose_method", lambda *a, **k: "conv")  # the GPU formulation
    op = operators.Identity()
    conv_map = energies.deq_conv_map(op, activation="tanh", boundary="circular")
    filters = 0.1 * jnp.ones((2, 3, 3))
    p_conv = {"lam": 1.0, "tau": 0.5, "K": filters, "C": filters, "b": jnp.zeros(2)}
    dense_map = energies.deq_dense_map(op, activation="tanh")
    p_dense = {
        "lam": 1.0,
        "tau": 0.5,
        "gamma": 1.0,
        "W": 0.01 * jnp.ones((5, 36)),
        "V": 0.01 * jnp.ones((36, 5)),
        "b": jnp.zeros(5),
    }
    y = jnp.ones((6, 6))
    solver = ji.Anderson(tol=1e-5, max_iter=20)
    for T, p in ((conv_map, p_conv), (dense_map, p_dense)):

        def loss(p, T=T):
            sol = ji.fixed_point(T, y, p, y, solver=solver, adjoint=ji.Implicit("gmres"))
            return jnp.sum(sol.value)

        text = jax.jit(jax.grad(loss)).lower(p).as_text()
        found = _products(text)
        assert found, "expected matrix products / convolutions in the lowered program"
        loose = [ln.strip()[:120] for ln in found if "HIGHEST" not in ln]
        assert not loose, f"products without full precision: {loose}"
