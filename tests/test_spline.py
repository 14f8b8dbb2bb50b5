"""Linear-spline ridge regularizers (CRR-NN / WCRR-NN): the spline, its constraints, the ridge
energy and its gradients, safe steps, and hypergradients through the tied map (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv.energies import (
    spline_convexity_modulus,
    spline_lipschitz_bound,
    spline_safe_step,
    tied_spline_map,
    variational_energy,
)
from jaxinv.operators import Blur, Identity, bank_norm, motion_kernel
from jaxinv.regularizers import (
    LinearSpline,
    inf_curvature,
    init_spline_ridge,
    spline_ridge,
    spline_ridge_grad,
    sup_curvature,
)

RNG = np.random.default_rng(7)
SHAPE = (9, 10)

SPLINES = {
    "free": LinearSpline(0.1, "free"),
    "convex": LinearSpline(0.1, "convex"),
    "weakly_convex": LinearSpline(0.1, "weakly_convex", mu=0.7),
    "convex_capped_flat": LinearSpline(0.1, "convex", max_slope=2.0, flat_tails=True),
    "weakly_symmetric": LinearSpline(0.1, "weakly_convex", mu=0.3, symmetric=True),
}


def _randn(*shape):
    return jnp.asarray(RNG.normal(size=shape))


def _np_activation(s, t, v):
    """numpy reference for ψ': np.interp inside the knots, the outer slopes outside."""
    s = np.asarray(s, dtype=float)
    out = np.interp(s, t, v)
    lo, hi = s < t[0], s > t[-1]
    out[lo] = v[0] + (s[lo] - t[0]) * (v[1] - v[0]) / (t[1] - t[0])
    out[hi] = v[-1] + (s[hi] - t[-1]) * (v[-1] - v[-2]) / (t[-1] - t[-2])
    return out


def _np_potential(z, t, v):
    """ψ(z) = ∫_0^z ψ' by the trapezoid rule on a grid containing every knot between 0 and z:
    exact for a piecewise-linear integrand."""
    a, b = min(0.0, z), max(0.0, z)
    grid = np.union1d([a, b], t[(t > a) & (t < b)])
    f = _np_activation(grid, t, v)
    integral = np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))
    return integral if z >= 0 else -integral


def _points(spline, n, count=200):
    """Responses inside and outside the knot range, knots and segment midpoints included."""
    t = np.asarray(spline.knots(n))
    half = t[-1]
    extra = np.concatenate([t, 0.5 * (t[1:] + t[:-1]), [t[0] - 0.37, t[-1] + 0.41]])
    return np.concatenate([RNG.uniform(-1.6 * half, 1.6 * half, count), extra])


def _as_responses(s, nf):
    """Points ``s`` for every filter, shaped (F, N, 1) (filter axis -3)."""
    return jnp.broadcast_to(jnp.asarray(s)[None, :, None], (nf, len(s), 1))


# ---- the spline -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_knots", [9, 8])
def test_spline_interpolates_knots_and_is_linear_between(num_knots):
    spline = LinearSpline(0.25, "free")
    v = spline.project(_randn(3, num_knots))  # feasible: the projection is now the identity
    np.testing.assert_allclose(spline.project(v), v, atol=1e-15)
    t = np.asarray(spline.knots(num_knots))
    np.testing.assert_allclose(t, (np.arange(num_knots) - (num_knots - 1) / 2) * 0.25)
    # ψ'(0) = 0 (a knot for odd counts, a segment midpoint for even ones)
    np.testing.assert_allclose(spline.activation(jnp.zeros((3, 1, 1)), v)[:, 0, 0], 0, atol=1e-15)
    # exact at the knots
    np.testing.assert_allclose(spline.activation(_as_responses(t, 3), v)[..., 0], v, rtol=1e-14)
    # linear between knots: at fractions u of every segment
    u = RNG.uniform(0, 1, size=5)
    for j in range(num_knots - 1):
        s = t[j] + u * 0.25
        want = (1 - u)[None] * np.asarray(v[:, j : j + 1]) + u[None] * np.asarray(
            v[:, j + 1 : j + 2]
        )
        got = spline.activation(_as_responses(s, 3), v)[..., 0]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # against np.interp (and the outer slopes outside the range)
    s = _points(spline, num_knots)
    got = np.asarray(spline.activation(_as_responses(s, 3), v)[..., 0])
    for i in range(3):
        np.testing.assert_allclose(got[i], _np_activation(s, t, np.asarray(v[i])), atol=1e-13)


@pytest.mark.parametrize("name", sorted(SPLINES))
def test_potential_and_curvature_are_consistent(name):
    spline = SPLINES[name]
    n, nf = 9, 2
    coeffs = _randn(nf, n) * 0.5
    v = np.asarray(spline.project(coeffs))
    t = np.asarray(spline.knots(n))
    s = _points(spline, n, count=40)
    z = _as_responses(s, nf)

    def at(f, i):  # scalar function of one response for filter i
        return lambda r: f(jnp.full((nf, 1, 1), r), coeffs)[i, 0, 0]

    for i in range(nf):
        d_pot = jax.vmap(jax.grad(at(spline.potential, i)))(jnp.asarray(s))
        d_act = jax.vmap(jax.grad(at(spline.activation, i)))(jnp.asarray(s))
        np.testing.assert_allclose(d_pot, spline.activation(z, coeffs)[i, :, 0], atol=1e-13)
        np.testing.assert_allclose(d_act, spline.curvature(z, coeffs)[i, :, 0], atol=1e-12)
        # numpy references: exact integral of the interpolant, slopes of the segments
        pot = np.asarray(spline.potential(z, coeffs)[i, :, 0])
        np.testing.assert_allclose(pot, [_np_potential(r, t, v[i]) for r in s], atol=1e-13)
        seg = np.clip(np.floor((s - t[0]) / spline.spacing), 0, n - 2).astype(int)
        want = (v[i, seg + 1] - v[i, seg]) / spline.spacing
        np.testing.assert_allclose(spline.curvature(z, coeffs)[i, :, 0], want, rtol=1e-12)
    np.testing.assert_allclose(spline.potential(jnp.zeros((nf, 1, 1)), coeffs), 0.0, atol=1e-15)


@pytest.mark.parametrize("name", sorted(SPLINES))
def test_constraints_hold_for_any_parameters(name):
    spline = SPLINES[name]
    n = 11
    t = np.asarray(spline.knots(n))
    s = np.sort(_points(spline, n))
    fd_slopes = []
    for _ in range(5):
        coeffs = _randn(3, n) * 3.0  # far from feasible
        z = _as_responses(s, 3)
        curv = np.asarray(spline.curvature(z, coeffs))
        slopes = np.asarray(spline.slopes(coeffs))
        act = np.asarray(spline.activation(z, coeffs))[..., 0]
        fd = np.diff(act, axis=-1) / np.diff(s)
        fd_slopes.append(fd)
        lo, hi = spline.min_slope, spline.max_slope
        assert curv.min() >= lo - 1e-12 and slopes.min() >= lo - 1e-12
        assert fd.min() >= lo - 1e-8
        if hi is not None:
            assert curv.max() <= hi + 1e-12 and fd.max() <= hi + 1e-8
        # sup / inf curvature: the extreme finite-difference slopes (pairs inside one segment)
        params = {"filters": jnp.zeros((3, 3, 3)), "coeffs": coeffs}
        sup = sup_curvature(params, spline=spline, per_filter=True)
        inf = inf_curvature(params, spline=spline, per_filter=True)
        np.testing.assert_allclose(sup, fd.max(axis=-1), atol=1e-8)  # rounding / Δs
        np.testing.assert_allclose(inf, fd.min(axis=-1), atol=1e-8)
        assert float(sup_curvature(params, spline=spline)) == float(jnp.max(sup))
        assert float(inf_curvature(params, spline=spline)) == float(jnp.min(inf))
        if spline.flat_tails:
            np.testing.assert_allclose(slopes[:, [0, -1]], 0.0, atol=1e-12)
            outside = np.abs(s) > t[-2]
            np.testing.assert_allclose(curv[:, outside], 0.0, atol=1e-12)
        if spline.symmetric:
            zm = _as_responses(-s, 3)
            np.testing.assert_allclose(spline.activation(zm, coeffs)[..., 0], -act, atol=1e-12)
            np.testing.assert_allclose(
                spline.potential(zm, coeffs), spline.potential(z, coeffs), atol=1e-12
            )
        # projection: idempotent, keeps ψ'(0) = 0
        v = spline.project(coeffs)
        np.testing.assert_allclose(spline.project(v), v, atol=1e-12)
        np.testing.assert_allclose(spline.activation(jnp.zeros((3, 1, 1)), coeffs), 0, atol=1e-13)
    if spline.kind == "free":  # the check can fail: random splines are not convex
        assert min(fd.min() for fd in fd_slopes) < -1.0


def test_convex_spline_gives_a_convex_potential():
    spline = SPLINES["convex"]
    coeffs = _randn(2, 9) * 3.0
    a, b = _randn(2, 50, 1) * 0.6, _randn(2, 50, 1) * 0.6
    w = jnp.asarray(RNG.uniform(size=(1, 50, 1)))
    lhs = spline.potential(w * a + (1 - w) * b, coeffs)
    rhs = w * spline.potential(a, coeffs) + (1 - w) * spline.potential(b, coeffs)
    assert float(jnp.max(lhs - rhs)) <= 1e-12
    assert float(jnp.min(spline.potential(a, coeffs))) >= -1e-12  # ψ ≥ ψ(0) = 0, ψ'(0) = 0


# ---- the ridge regularizer -------------------------------------------------------------------


def _reg(nf=3, k=3, n=9, spline=SPLINES["convex"], seed_scale=1.0):
    filters = RNG.normal(size=(nf, k, k))
    filters -= filters.mean(axis=(1, 2), keepdims=True)
    # feasible coefficients with slopes well inside the constraints, so small perturbations
    # never reach a clipped (zero-gradient) boundary
    slopes = RNG.uniform(0.1, 1.8, size=(nf, n - 1)) + max(spline.min_slope, -0.2)
    v = np.concatenate([np.zeros((nf, 1)), np.cumsum(slopes, -1) * spline.spacing], -1)
    v -= v[:, (n - 1) // 2 : (n - 1) // 2 + 1]
    return {"filters": jnp.asarray(filters) * seed_scale, "coeffs": jnp.asarray(v)}


def test_feasible_coefficients_are_kept():
    for name in ("free", "convex", "weakly_convex"):
        spline = SPLINES[name]
        reg = _reg(spline=spline)
        np.testing.assert_allclose(spline.project(reg["coeffs"]), reg["coeffs"], atol=1e-14)


@pytest.mark.parametrize("boundary", ["circular", "zero"])
@pytest.mark.parametrize("name", ["convex", "weakly_symmetric"])
def test_ridge_grad_equals_autodiff(boundary, name):
    spline = SPLINES[name]
    reg = _reg(spline=spline)
    x = _randn(2, *SHAPE) * 0.3
    kw = dict(spline=spline, boundary=boundary)
    got = jax.jit(functools.partial(spline_ridge_grad, **kw))(x, reg)
    want = jax.grad(functools.partial(spline_ridge, **kw))(x, reg)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert float(jnp.max(jnp.abs(got))) > 1e-2
    # value against an independent evaluation: numpy ψ on the responses
    z = np.asarray(ji._conv.correlate(x, reg["filters"], boundary))
    t, v = np.asarray(spline.knots(9)), np.asarray(spline.project(reg["coeffs"]))
    want_value = sum(_np_potential(r, t, v[i]) for i in range(3) for r in z[:, i].reshape(-1))
    np.testing.assert_allclose(spline_ridge(x, reg, **kw), want_value, rtol=1e-12)


def _fd_grad(f, params, eps=1e-6):
    """Central finite differences of the scalar ``f`` w.r.t. every leaf entry of ``params``."""
    out = {}
    for key, leaf in params.items():
        g = np.zeros(leaf.shape)
        for idx in np.ndindex(leaf.shape):
            e = jnp.zeros(leaf.shape).at[idx].set(eps)
            up, dn = {**params, key: leaf + e}, {**params, key: leaf - e}
            g[idx] = (float(f(up)) - float(f(dn))) / (2 * eps)
        out[key] = g
    return out


@pytest.mark.parametrize("name", ["free", "weakly_convex"])
def test_parameter_gradients_match_finite_differences(name):
    spline = SPLINES[name]
    reg = _reg(nf=2, k=3, n=9, spline=spline)
    x = _randn(7, 8) * 0.3
    v = _randn(7, 8)
    f_value = jax.jit(lambda p: spline_ridge(x, p, spline=spline))
    f_grad = jax.jit(lambda p: jnp.sum(v * spline_ridge_grad(x, p, spline=spline, boundary="zero")))
    for f in (f_value, f_grad):
        got = jax.grad(f)(reg)
        want = _fd_grad(f, reg)
        for key in reg:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7)
            assert np.abs(want[key]).max() > 1e-3


def test_jit_vmap_over_images_and_parameters():
    spline = SPLINES["weakly_convex"]
    regs = [_reg(spline=spline) for _ in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *regs)
    x = _randn(3, *SHAPE)
    f = jax.jit(jax.vmap(functools.partial(spline_ridge_grad, spline=spline)))
    got = f(x, stacked)
    for i in range(3):
        np.testing.assert_allclose(got[i], spline_ridge_grad(x[i], regs[i], spline=spline))
    # a batch of images is summed in R and kept apart in ∇R
    g = spline_ridge_grad(x, regs[0], spline=spline)
    np.testing.assert_allclose(g[1], spline_ridge_grad(x[1], regs[0], spline=spline), atol=1e-13)


def test_init_spline_ridge():
    spline = LinearSpline(0.05, "weakly_convex", mu=0.5)
    p = init_spline_ridge(jax.random.PRNGKey(0), 10, 3, 21, spline=spline, weight=2.0)
    assert p["filters"].shape == (10, 3, 3) and p["coeffs"].shape == (10, 21)
    f = np.asarray(p["filters"])
    np.testing.assert_allclose(f.sum(axis=(1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(f.reshape(10, -1), axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(f[:8], np.asarray(ji.regularizers.dct_filters(3)), atol=1e-15)
    assert np.abs(f[8] - f[9]).max() > 1e-3  # the random extras differ
    # Huber: ψ' = 2 clip(t, ±0.25), feasible (kept by the projection), convex with ψ'' ∈ {0, 2}
    t = np.asarray(spline.knots(21))
    np.testing.assert_allclose(p["coeffs"][3], 2.0 * np.clip(t, -0.25, 0.25), atol=1e-15)
    np.testing.assert_allclose(spline.project(p["coeffs"]), p["coeffs"], atol=1e-14)
    assert float(sup_curvature(p, spline=spline)) == pytest.approx(2.0)
    assert float(inf_curvature(p, spline=spline)) == pytest.approx(0.0, abs=1e-12)


# ---- tied map, safe steps, convexity -----------------------------------------------------------


@pytest.mark.parametrize("op", [Identity(), Blur(motion_kernel(5), "zero")], ids=["id", "blur"])
def test_tied_spline_map_is_gradient_step(op):
    spline = SPLINES["weakly_convex"]
    params = {"lam": jnp.asarray(2.0), "tau": jnp.asarray(0.07), "reg": _reg(spline=spline)}
    x, y = _randn(2, *SHAPE), _randn(2, *SHAPE)
    for boundary in ("circular", "zero"):
        reg = functools.partial(spline_ridge, spline=spline, boundary=boundary)
        energy = variational_energy(op, reg)
        T = jax.jit(tied_spline_map(op, spline=spline, boundary=boundary))
        want = x - params["tau"] * jax.grad(energy)(x, params, y)
        np.testing.assert_allclose(T(x, params, y), want, atol=1e-12)


def _hessian_spectrum(energy, x, params, y):
    h = jax.hessian(energy)(x, params, y).reshape(x.size, x.size)
    return np.linalg.eigvalsh(np.asarray(h))


@pytest.mark.parametrize("name", ["convex", "weakly_convex", "convex_capped_flat"])
def test_lipschitz_bound_and_convexity_modulus_bound_the_hessian(name):
    spline = SPLINES[name]
    shape = (6, 7)
    reg = {"filters": _randn(3, 3, 3), "coeffs": _randn(3, 9) * 2.0}
    lam = 0.8
    L = float(spline_lipschitz_bound(1.0, lam, reg, shape, spline=spline))
    m = float(spline_convexity_modulus(lam, 1.0, reg, shape, spline=spline))
    # never above the coarse bound λ‖A‖² + max(sup ψ'', −inf ψ'') ‖K‖²
    k2 = float(bank_norm(reg["filters"], shape)) ** 2
    sup = float(sup_curvature(reg, spline=spline))
    inf = float(inf_curvature(reg, spline=spline))
    assert L <= lam + max(sup, 0.0, -inf) * k2 * (1 + 1e-12)
    assert m >= lam - max(-inf, 0.0) * k2 * (1 + 1e-12)
    energy = variational_energy(Identity(), functools.partial(spline_ridge, spline=spline))
    params = {"lam": lam, "reg": reg}
    lo, hi = np.inf, -np.inf
    for scale in (0.05, 0.3, 1.0):
        ev = _hessian_spectrum(energy, _randn(*shape) * scale, params, jnp.zeros(shape))
        lo, hi = min(lo, ev.min()), max(hi, ev.max())
        assert ev.max() <= L * (1 + 1e-10) and ev.min() >= -L * (1 + 1e-10)
        assert ev.min() >= m - 1e-10
    assert hi > 0.3 * L  # the bounds are not vacuous


def test_safe_step_makes_tied_map_a_contraction_for_denoising():
    op, shape, lam = Identity(), (8, 8), 1.0
    T = jax.jit(tied_spline_map(op))
    spline = LinearSpline()
    reg0 = init_spline_ridge(jax.random.PRNGKey(1), 6, 3, 21, spline=spline, weight=3.0)
    reg0 = {"filters": 5.0 * reg0["filters"], "coeffs": reg0["coeffs"]}
    reg = {**reg0, "coeffs": reg0["coeffs"] + 0.02 * _randn(6, 21)}
    # τ from sup ψ'' and the exact bank norm, and the tighter per-filter step
    tau_coarse = 1.0 / (lam + sup_curvature(reg) * bank_norm(reg["filters"], shape) ** 2)
    tau = spline_safe_step(1.0, lam, reg, shape)
    assert float(tau) >= float(tau_coarse)
    y = _randn(*shape) * 0.1
    for step in (tau_coarse, tau):
        p = {"lam": jnp.asarray(lam), "tau": step, "reg": reg}
        ratios = []
        for _ in range(30):
            x1 = _randn(*shape) * 0.1
            x2 = x1 + _randn(*shape) * 10.0 ** RNG.uniform(-3, -0.5)
            ratios.append(
                float(jnp.linalg.norm(T(x1, p, y) - T(x2, p, y)) / jnp.linalg.norm(x1 - x2))
            )
        # strongly convex with modulus ≥ λ: factor ≤ 1 − τλ < 1
        assert max(ratios) <= (1.0 - float(step) * lam) * (1 + 1e-12)
        assert max(ratios) > 0.5 * (1.0 - float(step) * lam)

    # and a step 2.5x the safe one expands along the top eigenvector: for the Huber spline
    # (ψ'' = 3 near 0 for every filter) the bound is the exact top eigenvalue there
    tau0 = spline_safe_step(1.0, lam, reg0, shape)
    p = {"lam": jnp.asarray(lam), "tau": 2.5 * tau0, "reg": reg0}
    v = _randn(*shape)
    lin = jax.jit(lambda v: jax.jvp(lambda x: T(x, p, jnp.zeros(shape)), (0 * v,), (v,))[1])
    for _ in range(200):
        v = lin(v)
        v = v / jnp.linalg.norm(v)
    eps = 1e-4  # responses stay inside the linear part |z| < threshold of the Huber spline
    out = T(eps * v, p, jnp.zeros(shape)) - T(0 * v, p, jnp.zeros(shape))
    assert float(jnp.linalg.norm(out)) > 1.4 * eps


def test_weakly_convex_tied_map_contracts_when_the_energy_is_convex():
    shape, lam = (8, 8), 1.0
    spline = LinearSpline(0.05, "weakly_convex", mu=0.5)
    # ‖K‖² ≤ 1: the 8 non-constant 3×3 DCT filters and the constant one form an orthonormal
    # patch basis, so Σ_i K_iᵀK_i ⪯ 9 I over the 9 patches every pixel lies in
    filters = jnp.asarray(ji.regularizers.dct_filters(3, 4)) / 3.0
    reg = {"filters": filters, "coeffs": _randn(4, 15)}
    m = float(spline_convexity_modulus(lam, 1.0, reg, shape, spline=spline))
    assert float(inf_curvature(reg, spline=spline)) == pytest.approx(-0.5)  # the bound is active
    assert float(bank_norm(filters, shape)) <= 1.0 + 1e-12
    assert lam - 0.5 <= m < lam  # convex: λ σ_min(I) ≥ μ ‖K‖²
    tau = spline_safe_step(1.0, lam, reg, shape, spline=spline)
    T = jax.jit(tied_spline_map(Identity(), spline=spline))
    p = {"lam": jnp.asarray(lam), "tau": tau, "reg": reg}
    y = _randn(*shape) * 0.2
    for _ in range(30):
        x1 = _randn(*shape) * 0.2
        x2 = x1 + _randn(*shape) * 10.0 ** RNG.uniform(-3, -0.5)
        num = jnp.linalg.norm(T(x1, p, y) - T(x2, p, y))
        assert float(num) <= (1.0 - float(tau) * m) * float(jnp.linalg.norm(x1 - x2)) * (1 + 1e-12)


def test_hypergradient_through_fixed_point():
    """8×8 denoising, 2 filters 3×3, 9 knots: implicit CG = unrolled = finite differences."""
    shape, lam = (8, 8), 1.5
    spline = LinearSpline(0.15, "weakly_convex", mu=0.2)
    reg = _reg(nf=2, k=3, n=9, spline=spline, seed_scale=0.3)
    assert float(inf_curvature(reg, spline=spline)) < 0  # weakly convex, not convex
    x_true = _randn(*shape) * 0.3
    y = x_true + 0.1 * _randn(*shape)
    tau = float(spline_safe_step(1.0, lam, reg, shape, spline=spline))
    assert float(spline_convexity_modulus(lam, 1.0, reg, shape, spline=spline)) > 0
    T = tied_spline_map(Identity(), spline=spline)
    tight = dict(tol=1e-13, max_iter=3000)

    def loss(params, adjoint, solver):
        p = {"lam": params["lam"], "tau": jnp.asarray(tau), "reg": params["reg"]}
        x = ji.fixed_point(T, y, p, y, solver=solver, adjoint=adjoint).value
        return jnp.sum((x - x_true) ** 2)

    params = {"lam": jnp.asarray(lam), "reg": reg}
    implicit = jax.jit(jax.grad(loss), static_argnums=(1, 2))(
        params, ji.Implicit("cg", **tight), ji.Anderson(**tight)
    )
    unrolled = jax.grad(loss)(params, ji.Unrolled(), ji.Picard(tol=1e-13, max_iter=1500))
    f = jax.jit(lambda p: loss(p, ji.Implicit("cg", **tight), ji.Anderson(**tight)))
    fd = _fd_grad(lambda r: f({"lam": params["lam"], "reg": r}), reg, eps=1e-6)
    eps = 1e-6
    fd_lam = (float(f({**params, "lam": lam + eps})) - float(f({**params, "lam": lam - eps}))) / (
        2 * eps
    )
    np.testing.assert_allclose(implicit["lam"], fd_lam, rtol=1e-5)
    for key in reg:
        np.testing.assert_allclose(implicit["reg"][key], unrolled["reg"][key], atol=1e-9)
        np.testing.assert_allclose(implicit["reg"][key], fd[key], rtol=1e-5, atol=1e-8)
        assert np.abs(fd[key]).max() > 1e-3
    np.testing.assert_allclose(implicit["lam"], unrolled["lam"], atol=1e-9)


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.unchecked  # passes ill-typed values on purpose
def test_bad_input_raises():
    x = jnp.zeros(SHAPE)
    reg = _reg()
    with pytest.raises(ValueError, match="kind"):
        LinearSpline(0.1, "concave")
    with pytest.raises(ValueError, match="spacing"):
        LinearSpline(0.0)
    with pytest.raises(ValueError, match="spacing"):
        LinearSpline(-0.1)
    with pytest.raises(ValueError, match="mu"):
        LinearSpline(0.1, "weakly_convex", mu=-1.0)
    with pytest.raises(ValueError, match="weakly_convex"):
        LinearSpline(0.1, "convex", mu=0.5)
    with pytest.raises(ValueError, match="max_slope"):
        LinearSpline(0.1, "convex", max_slope=-1.0)
    with pytest.raises(ValueError, match="missing"):
        spline_ridge(x, {"filters": reg["filters"]})
    with pytest.raises(ValueError, match=r"\(F, k, k\)"):
        spline_ridge(x, {**reg, "filters": reg["filters"][0]})
    with pytest.raises(ValueError, match=r"\(3, M \+ 1\)"):
        spline_ridge_grad(x, {**reg, "coeffs": reg["coeffs"][:2]})
    with pytest.raises(ValueError, match="at least 3 knots"):
        spline_ridge(x, {**reg, "coeffs": reg["coeffs"][:, :2]})
    with pytest.raises(ValueError, match=r"\(F, M \+ 1\)"):
        sup_curvature({**reg, "coeffs": reg["coeffs"][0]})
    with pytest.raises(ValueError, match="boundary"):
        spline_ridge(x, reg, boundary="mirror")
    with pytest.raises(ValueError, match="LinearSpline"):
        spline_ridge(x, reg, spline="convex")
    with pytest.raises(ValueError, match="3 filters"):
        LinearSpline().activation(jnp.zeros((2, 4, 4)), reg["coeffs"])
    with pytest.raises(ValueError, match="LinearSpline"):
        tied_spline_map(Identity(), spline=None)
    with pytest.raises(ValueError, match="boundary"):
        tied_spline_map(Identity(), boundary="neumann")
    with pytest.raises(ValueError, match="adjoint"):
        tied_spline_map(lambda x: x)
    with pytest.raises(ValueError, match="missing"):
        tied_spline_map(Identity())(x, {"lam": 1.0, "reg": reg}, x)
    with pytest.raises(ValueError, match="num_knots"):
        init_spline_ridge(jax.random.PRNGKey(0), 3, 3, 2)
    with pytest.raises(ValueError, match="size"):
        init_spline_ridge(jax.random.PRNGKey(0), 3, 1, 9)
    with pytest.raises(ValueError, match="threshold"):
        init_spline_ridge(jax.random.PRNGKey(0), 3, 3, 9, threshold=0.0)
    with pytest.raises(ValueError, match="weight"):
        init_spline_ridge(jax.random.PRNGKey(0), 3, 3, 9, weight=-1.0)
