"""Regularizers: potentials, fields of experts, smoothed TV, dense, initialisers, input errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxinv.regularizers import (
    dense,
    fields_of_experts,
    fields_of_experts_grad,
    get_activation,
    get_potential,
    init_dense,
    init_fields_of_experts,
    smoothed_tv,
    tv_like_filters,
)

from helpers import dense_params

SHAPE = (12, 13)
RNG = np.random.default_rng(1)


POTENTIALS = ["logcosh", "student_t", "huber", "soft_shrink", "quadratic", "relu2"]
ALL_POTENTIALS = [get_potential(n) for n in POTENTIALS] + [
    get_potential("huber", delta=0.3),
    get_potential("soft_shrink", delta=1.7),
]


def _directional_fd(f, x, v, h=1e-5):
    return (f(x + h * v) - f(x - h * v)) / (2 * h)


@pytest.mark.parametrize("pot", ALL_POTENTIALS, ids=str)
def test_drho_is_grad_of_rho_and_sup_ddrho_bounds(pot):
    t = jnp.asarray(np.concatenate([RNG.normal(size=500) * 3, np.linspace(-8, 8, 301) + 1e-3]))
    np.testing.assert_allclose(pot.drho(t), jax.vmap(jax.grad(pot.rho))(t), rtol=1e-12, atol=1e-12)
    dense_t = jnp.linspace(-30.0, 30.0, 60_001) + 1e-7
    ddrho = jax.vmap(jax.grad(pot.drho))(dense_t)
    assert jnp.max(jnp.abs(ddrho)) <= pot.sup_ddrho * (1 + 1e-9)
    assert jnp.max(jnp.abs(ddrho)) >= 0.99 * pot.sup_ddrho  # and the bound is attained
    # second differences of drho agree (catches a wrong custom derivative)
    h = 1e-4
    fd = (pot.drho(dense_t + h) - pot.drho(dense_t - h)) / (2 * h)
    assert jnp.max(jnp.abs(fd)) <= pot.sup_ddrho * (1 + 1e-6)


def test_potential_values():
    t = jnp.asarray([-3.0, -0.7, -0.2, 0.0, 0.4, 2.5])
    tn = np.asarray(t)
    np.testing.assert_allclose(get_potential("logcosh").rho(t), np.log(np.cosh(tn)), rtol=1e-12)
    np.testing.assert_allclose(get_potential("student_t").rho(t), np.log1p(tn**2), rtol=1e-12)
    np.testing.assert_allclose(
        get_potential("huber", delta=0.5).drho(t), np.clip(tn, -0.5, 0.5), rtol=1e-12
    )
    shrink = np.sign(tn) * np.maximum(np.abs(tn) - 0.5, 0)
    np.testing.assert_allclose(get_potential("soft_shrink").drho(t), shrink, atol=1e-15)
    np.testing.assert_allclose(get_potential("relu2").drho(t), np.maximum(tn, 0))
    np.testing.assert_allclose(get_potential("quadratic").drho(t), tn)
    np.testing.assert_allclose(get_potential("huber", delta=0.5).rho(2.5), 0.5 * (2.5 - 0.25))


def test_logcosh_is_stable():
    pot = get_potential("logcosh")
    t = jnp.asarray([-1e4, 1e4, -800.0, 800.0, 0.0])

    @jax.jit
    def derivatives(t):
        return pot.rho(t), jax.vmap(jax.grad(pot.rho))(t), jax.vmap(jax.hessian(pot.rho))(t)

    rho, drho, ddrho = derivatives(t)
    np.testing.assert_allclose(rho, np.abs(t) - np.log(2.0) * (t != 0), rtol=1e-15)
    np.testing.assert_allclose(drho, np.sign(t))
    np.testing.assert_allclose(ddrho, [0, 0, 0, 0, 1.0])  # exact at the kink of |t|


def test_activations_and_registry():
    t = jnp.asarray([-2.0, -0.1, 0.3, 1.5])
    np.testing.assert_allclose(get_activation("tanh")(t), np.tanh(np.asarray(t)))
    np.testing.assert_allclose(get_activation("relu")(t), np.maximum(np.asarray(t), 0))
    np.testing.assert_allclose(get_activation("identity")(t), t)
    np.testing.assert_allclose(get_activation("soft_shrink", delta=1.0)(t), [-1.0, 0, 0, 0.5])
    np.testing.assert_allclose(get_activation("clip", delta=1.0)(t), [-1.0, -0.1, 0.3, 1.0])
    assert get_activation(jnp.sin) is jnp.sin
    # value semantics: equal settings are equal and hashable (safe as static jit arguments)
    assert get_potential("huber", delta=0.3) == get_potential("huber", delta=0.3)
    assert hash(get_potential("huber", delta=0.3)) == hash(get_potential("huber", delta=0.3))
    assert get_potential("huber", delta=0.3) != get_potential("huber", delta=0.4)


def _foe_params(num_filters=3, size=3, bias=True):
    p = {"filters": jnp.asarray(RNG.normal(size=(num_filters, size, size)))}
    p["weights"] = jnp.asarray(RNG.uniform(0.2, 2.0, size=num_filters))
    if bias:
        p["bias"] = jnp.asarray(RNG.normal(size=num_filters) * 0.1)
    return p


@pytest.mark.parametrize("boundary", ["circular", "zero", "reflect"])
def test_foe_grad_equals_autodiff(boundary):
    params = _foe_params(size=3 if boundary == "circular" else 4)  # an even size too
    x = jnp.asarray(RNG.normal(size=(2,) + SHAPE))

    @jax.jit
    def check(x, p):  # one compilation for all potentials
        out = {}
        for pot in POTENTIALS:
            kw = dict(potential=pot, boundary=boundary)
            f = functools.partial(fields_of_experts, **kw)
            out[pot] = (
                fields_of_experts_grad(x, p, **kw),
                jax.grad(f)(x, p),
                f(x, p) - f(x[0], p) - f(x[1], p),
            )
        return out

    for pot, (explicit, autodiff, batch_gap) in check(x, params).items():
        np.testing.assert_allclose(explicit, autodiff, rtol=1e-10, atol=1e-10, err_msg=pot)
        # batched value = sum of the per-image values
        np.testing.assert_allclose(batch_gap, 0.0, atol=1e-9, err_msg=pot)


def test_foe_value_against_numpy():
    x = RNG.normal(size=SHAPE)
    params = {"filters": tv_like_filters(1, size=5), "weights": jnp.asarray([0.7, 1.3])}
    dx = np.roll(x, -1, axis=1) - x
    dy = np.roll(x, -1, axis=0) - x
    ref = 0.7 * 0.5 * np.sum(dx**2) + 1.3 * 0.5 * np.sum(dy**2)
    out = fields_of_experts(jnp.asarray(x), params, potential="quadratic")
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    # zero boundary: the last column/row differences see zeros outside
    dxz = np.diff(np.pad(x, ((0, 0), (0, 1))), axis=1)
    dyz = np.diff(np.pad(x, ((0, 1), (0, 0))), axis=0)
    refz = np.sum(np.log(np.cosh(dxz))) * 0.7 + np.sum(np.log(np.cosh(dyz))) * 1.3
    outz = fields_of_experts(jnp.asarray(x), params, boundary="zero")
    np.testing.assert_allclose(outz, refz, rtol=1e-12)
    # reflect boundary: x mirrors (x[W] = x[W - 1]), so the last differences are zero
    dxr = np.diff(np.pad(x, ((0, 0), (0, 1)), mode="symmetric"), axis=1)
    dyr = np.diff(np.pad(x, ((0, 1), (0, 0)), mode="symmetric"), axis=0)
    assert not dxr[:, -1].any() and not dyr[-1].any()
    refr = np.sum(np.log(np.cosh(dxr))) * 0.7 + np.sum(np.log(np.cosh(dyr))) * 1.3
    outr = fields_of_experts(jnp.asarray(x), params, boundary="reflect")
    np.testing.assert_allclose(outr, refr, rtol=1e-12)
    # a symmetric 3x3 Laplacian-like filter on the reflect boundary, against scipy's "reflect"
    lap = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    pl = {"filters": jnp.asarray(lap[None]), "weights": jnp.ones(1)}
    outl = fields_of_experts(jnp.asarray(x), pl, potential="quadratic", boundary="reflect")
    refl = 0.5 * np.sum(scipy.ndimage.correlate(x, lap, mode="reflect") ** 2)
    np.testing.assert_allclose(outl, refl, rtol=1e-12)
    # order 2: second differences
    d2 = np.roll(x, -1, axis=1) - 2 * x + np.roll(x, 1, axis=1)
    p2 = {"filters": tv_like_filters(2, size=11), "weights": jnp.asarray([1.0, 0.0])}
    out2 = fields_of_experts(jnp.asarray(x), p2, potential="quadratic")
    np.testing.assert_allclose(out2, 0.5 * np.sum(d2**2), rtol=1e-12)


@pytest.mark.parametrize("boundary", ["circular", "zero", "reflect"])
def test_smoothed_tv(boundary):
    x = RNG.normal(size=SHAPE)
    params = {"weight": jnp.asarray(0.8), "eps": jnp.asarray(0.05)}
    if boundary == "circular":
        dx, dy = np.roll(x, -1, axis=1) - x, np.roll(x, -1, axis=0) - x
    elif boundary == "reflect":  # Neumann: the last forward differences are zero
        dx = np.concatenate([np.diff(x, axis=1), np.zeros((SHAPE[0], 1))], axis=1)
        dy = np.concatenate([np.diff(x, axis=0), np.zeros((1, SHAPE[1]))], axis=0)
    else:
        dx = np.diff(np.pad(x, ((0, 0), (0, 1))), axis=1)
        dy = np.diff(np.pad(x, ((0, 1), (0, 0))), axis=0)
    ref = 0.8 * np.sum(np.sqrt(dx**2 + dy**2 + 0.05**2))
    f = jax.jit(functools.partial(smoothed_tv, boundary=boundary))
    np.testing.assert_allclose(f(jnp.asarray(x), params), ref, rtol=1e-12)
    g = jax.grad(f)(jnp.asarray(x), params)
    for _ in range(3):
        v = jnp.asarray(RNG.normal(size=SHAPE))
        fd = _directional_fd(lambda z: f(z, params), jnp.asarray(x), v)
        np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=1e-7)


@pytest.mark.parametrize("potential", ["logcosh", "soft_shrink", "relu2"])
def test_dense(potential):
    d = SHAPE[0] * SHAPE[1]
    params = dense_params(RNG, d, 40, 0.6)
    params["b"] = jnp.asarray(RNG.normal(size=40))
    x = RNG.normal(size=(2,) + SHAPE)
    f = jax.jit(functools.partial(dense, potential=potential))
    pot = get_potential(potential)
    z = x.reshape(2, d) @ np.asarray(params["W"]).T + np.asarray(params["b"])
    np.testing.assert_allclose(f(jnp.asarray(x), params), 0.6 * np.sum(pot.rho(z)), rtol=1e-12)
    g = jax.grad(f)(jnp.asarray(x), params)
    np.testing.assert_allclose(
        g.reshape(2, d), 0.6 * np.asarray(pot.drho(z)) @ np.asarray(params["W"]), rtol=1e-10
    )
    for _ in range(3):
        v = jnp.asarray(RNG.normal(size=x.shape))
        fd = _directional_fd(lambda u: f(u, params), jnp.asarray(x), v)
        np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=1e-7)


def test_initialisers():
    p = init_fields_of_experts(jax.random.PRNGKey(0), 5, 7, scale=2.0, weight=0.1, bias=True)
    assert p["filters"].shape == (5, 7, 7) and p["weights"].shape == (5,)
    assert set(p) == {"filters", "weights", "bias"}
    np.testing.assert_array_equal(p["bias"], 0.0)
    filters = np.asarray(p["filters"])
    np.testing.assert_allclose(filters.mean(axis=(1, 2)), 0.0, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(filters.reshape(5, -1), axis=1), 2.0)
    np.testing.assert_allclose(p["weights"], 0.1)

    for order, size in [(1, 11), (2, 11), (1, 3), (2, 4)]:
        f = np.asarray(tv_like_filters(order, size))
        assert f.shape == (2, size, size)
        np.testing.assert_allclose(f.sum(axis=(1, 2)), 0.0)
        np.testing.assert_array_equal(f[1], f[0].T)
        assert np.abs(f).sum() == 2 * (2 if order == 1 else 4)

    q = init_dense(jax.random.PRNGKey(0), 30)
    assert q["W"].shape == (30, 30) and q["b"].shape == (30,) and q["gamma"].shape == ()
    assert 1.0 < np.linalg.norm(q["W"], 2) < 3.0


def test_bad_input_raises():
    x = jnp.zeros(SHAPE)
    with pytest.raises(ValueError, match="logcosh"):
        get_potential("cauchy")
    with pytest.raises(ValueError, match="tanh"):
        get_activation("sigmoid")
    with pytest.raises(ValueError, match="options"):
        get_potential("logcosh", delta=0.1)
    with pytest.raises(ValueError, match="positive"):
        get_potential("huber", delta=0.0)
    p = _foe_params()
    with pytest.raises(ValueError, match="missing"):
        fields_of_experts(x, {"filters": p["filters"]})
    with pytest.raises(ValueError, match=r"\(F, k, k\)"):
        fields_of_experts(x, {**p, "filters": p["filters"][0]})
    with pytest.raises(ValueError, match="weights"):
        fields_of_experts_grad(x, {**p, "weights": jnp.ones(2)})
    with pytest.raises(ValueError, match="bias"):
        fields_of_experts(x, {**p, "bias": jnp.ones(5)})
    with pytest.raises(ValueError, match="boundary"):
        fields_of_experts(x, p, boundary="mirror")
    with pytest.raises(ValueError, match="boundary"):
        smoothed_tv(x, {"weight": 1.0, "eps": 0.1}, boundary="neumann")
    with pytest.raises(ValueError, match="missing"):
        smoothed_tv(x, {"weight": 1.0})
    with pytest.raises(ValueError, match="W of shape"):
        dense(x, dense_params(RNG, 10, 10, 1.0))
    with pytest.raises(ValueError, match="order"):
        tv_like_filters(3)
    with pytest.raises(ValueError, match="size"):
        tv_like_filters(1, 2)
    with pytest.raises(ValueError, match="size"):
        init_fields_of_experts(jax.random.PRNGKey(0), 3, 1)
