"""Energies and maps: tied map = gradient step, DEQ maps, Lipschitz bounds and safe steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv._conv import correlate
from jaxinv.energies import (
    data_fidelity,
    dense_lipschitz_bound,
    deq_conv_map,
    deq_conv_norms,
    deq_dense_map,
    lipschitz_bound,
    safe_step,
    tied_foe_map,
    untied_foe_map,
    variational_energy,
)
from jaxinv.operators import Blur, FilterBank, Identity, Mask, motion_kernel, row_mask
from jaxinv.regularizers import (
    dense,
    fields_of_experts,
    get_potential,
    tv_like_filters,
)

from helpers import dense_params

SHAPE = (12, 13)
RNG = np.random.default_rng(2)


OPS = {
    "identity": Identity(),
    "rows": Mask(row_mask(SHAPE)),
    "blur_zero": Blur(motion_kernel(5), "zero"),
}


def _randn(*shape):
    return jnp.asarray(RNG.normal(size=shape))


def _foe_params(lam=2.0, tau=0.05):
    filters = RNG.normal(size=(3, 3, 3))
    filters -= filters.mean(axis=(1, 2), keepdims=True)
    reg = {"filters": jnp.asarray(filters), "weights": jnp.asarray([0.5, 1.0, 2.0])}
    reg["bias"] = _randn(3) * 0.1
    return {"lam": jnp.asarray(lam), "tau": jnp.asarray(tau), "reg": reg}


def test_data_fidelity():
    x, y = _randn(2, *SHAPE), _randn(2, *SHAPE)
    op = OPS["rows"]
    ref = 0.5 * 3.0 * np.sum((np.asarray(op(x)) - np.asarray(y)) ** 2)
    np.testing.assert_allclose(data_fidelity(x, y, op, jnp.asarray(3.0)), ref, rtol=1e-12)


@pytest.mark.parametrize("op_name", sorted(OPS))
def test_tied_map_is_gradient_step(op_name):
    op = OPS[op_name]
    x, y = _randn(2, *SHAPE), _randn(2, *SHAPE)
    params = _foe_params()

    @jax.jit
    def check(x, params, y):
        out = {}
        for pot, boundary in [("logcosh", "circular"), ("huber", "zero"), ("student_t", "zero")]:
            reg = functools.partial(fields_of_experts, potential=pot, boundary=boundary)
            energy = variational_energy(op, reg)
            T = tied_foe_map(op, potential=pot, boundary=boundary)
            out[pot] = (T(x, params, y), x - params["tau"] * jax.grad(energy)(x, params, y))
        return out

    for pot, (fast, ref) in check(x, params, y).items():
        np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12, err_msg=pot)


def test_deq_conv_map():
    op = OPS["blur_zero"]
    x, y = _randn(2, *SHAPE), _randn(2, *SHAPE)
    k, c, b = _randn(3, 3, 3), _randn(3, 5, 5), _randn(3) * 0.1
    p = {"lam": jnp.asarray(1.5), "tau": jnp.asarray(0.1), "K": k, "C": c, "b": b}
    T = jax.jit(deq_conv_map(op, activation="tanh", boundary="zero"))

    # reference: C^T applied through the vjp of the correlation with C
    def reg_step(x, c, weights):
        z = jnp.tanh(correlate(x, k, "zero") + b[:, None, None]) * weights[:, None, None]
        _, vjp = jax.vjp(lambda u: correlate(u, c, "zero"), x)
        return vjp(z)[0]

    grad_data = 1.5 * op.adjoint(op(x) - y)
    np.testing.assert_allclose(
        T(x, p, y), x - 0.1 * (grad_data + reg_step(x, c, jnp.ones(3))), rtol=1e-12
    )
    w = jnp.asarray([0.3, -1.0, 2.0])
    np.testing.assert_allclose(
        T(x, {**p, "weights": w, "gamma": jnp.asarray(0.5)}, y),
        x - 0.1 * (grad_data + 0.5 * reg_step(x, c, w)),
        rtol=1e-12,
    )


def test_deq_conv_map_with_tied_filters_is_the_gradient_step():
    op = OPS["identity"]
    x, y = _randn(2, *SHAPE), _randn(2, *SHAPE)
    p = _foe_params()
    k = p["reg"]["filters"]
    chi, c, gamma = 100.0, 2.73, 0.7
    tied = tied_foe_map(op, potential="logcosh")

    @jax.jit
    def check(x, p, y):
        deq = {"lam": p["lam"], "tau": p["tau"], "K": k, "C": k, "b": p["reg"]["bias"]}
        untied = deq_conv_map(op)(x, {**deq, "weights": p["reg"]["weights"]}, y)
        # the paper's normalisation with C = K is the tied map with filters χc/‖K‖·K, weights γ/χ
        norms = deq_conv_norms(deq, SHAPE, num_iter=200)
        deq_n = {**deq, **norms, "chi": chi, "c": c, "gamma": gamma, "b": jnp.zeros(3)}
        s = chi * c / norms["K_norm"]
        p_tied = {**p, "reg": {"filters": s * k, "weights": jnp.full(3, gamma / chi)}}
        normalised = deq_conv_map(op, normalize=True)(x, deq_n, y)
        return untied, tied(x, p, y), normalised, tied(x, p_tied, y), norms

    untied, ref, normalised, ref_normalised, norms = check(x, p, y)
    np.testing.assert_allclose(untied, ref, rtol=1e-12)
    np.testing.assert_allclose(normalised, ref_normalised, rtol=1e-10)
    np.testing.assert_allclose(norms["K_norm"], operator_norm_dense(k), rtol=1e-6)
    np.testing.assert_allclose(norms["K_norm"], norms["C_norm"])


@pytest.mark.parametrize("op_name", sorted(OPS))
def test_untied_foe_map(op_name):
    op = OPS[op_name]
    boundary = "zero"
    x, y = _randn(*SHAPE), _randn(*SHAPE)
    p = _foe_params()
    reg, c = p["reg"], _randn(3, 3, 3)
    pot = get_potential("student_t")
    T = jax.jit(untied_foe_map(op, potential=pot, boundary=boundary))
    tied = jax.jit(tied_foe_map(op, potential=pot, boundary=boundary))
    # C = K: the gradient step on the fields-of-experts energy
    same = {**p, "reg": {**reg, "adjoint_filters": reg["filters"]}}
    np.testing.assert_allclose(T(x, same, y), tied(x, p, y), rtol=1e-12)
    # C != K: Cᵀ applied through the vjp of the correlation with C
    z = correlate(x, reg["filters"], boundary) + reg["bias"][:, None, None]
    a = reg["weights"][:, None, None] * jax.grad(lambda t: jnp.sum(pot.rho(t)))(z)
    _, vjp = jax.vjp(lambda u: correlate(u, c, boundary), x)
    expected = x - p["tau"] * (p["lam"] * op.adjoint(op(x) - y) + vjp(a)[0])
    untied = {**p, "reg": {**reg, "adjoint_filters": c}}
    np.testing.assert_allclose(T(x, untied, y), expected, rtol=1e-10, atol=1e-12)
    no_bias = {k: v for k, v in untied["reg"].items() if k != "bias"}
    shifted = {**untied["reg"], "bias": jnp.zeros(3)}
    np.testing.assert_allclose(
        T(x, {**p, "reg": no_bias}, y), T(x, {**p, "reg": shifted}, y), rtol=1e-12
    )
    with pytest.raises(ValueError, match="adjoint_filters"):
        untied_foe_map(op)(x, p, y)


def operator_norm_dense(filters):
    n = SHAPE[0] * SHAPE[1]
    cols = np.asarray(FilterBank(filters)(jnp.eye(n).reshape((n,) + SHAPE)))
    return np.linalg.norm(cols.reshape(n, -1).T, 2)


def test_deq_dense_map():
    op = OPS["rows"]
    d = SHAPE[0] * SHAPE[1]
    x, y = _randn(2, *SHAPE), _randn(2, *SHAPE)
    q = dense_params(RNG, d, 50, 0.4)
    q["b"] = _randn(50)
    v = _randn(d, 50)
    p = {"lam": jnp.asarray(2.0), "tau": jnp.asarray(0.1), "V": v, **q}
    T = jax.jit(deq_dense_map(op, activation="relu"))
    u = np.asarray(x).reshape(2, d)
    g_reg = 0.4 * np.maximum(u @ np.asarray(q["W"]).T + np.asarray(q["b"]), 0) @ np.asarray(v).T
    g = 2.0 * np.asarray(op.adjoint(op(x) - y)) + g_reg.reshape(x.shape)
    np.testing.assert_allclose(T(x, p, y), np.asarray(x) - 0.1 * g, rtol=1e-12)
    # V = W^T, σ = ψ': the gradient step on the dense energy
    energy = variational_energy(op, functools.partial(dense, potential="relu2"))
    tied = {"lam": p["lam"], "tau": p["tau"], "reg": q}
    ref = x - 0.1 * jax.grad(energy)(x, tied, y)
    np.testing.assert_allclose(T(x, {**p, "V": q["W"].T}, y), ref, rtol=1e-10, atol=1e-12)


def _hessian_norm(energy, params, y, x, num_iter=300):
    """max |eigenvalue| of the Hessian of ``energy`` at ``x`` by power iteration on H."""
    hvp = jax.jit(lambda v: jax.jvp(lambda z: jax.grad(energy)(z, params, y), (x,), (v,))[1])
    v = _randn(*x.shape)
    for _ in range(num_iter):
        v = hvp(v / jnp.linalg.norm(v))
    return float(jnp.linalg.norm(v))


@pytest.mark.parametrize(
    "potential, op_name, boundary",
    [
        ("logcosh", "blur_zero", "zero"),
        ("student_t", "rows", "circular"),
    ],
)
def test_lipschitz_bound_bounds_the_hessian(potential, op_name, boundary):
    op = OPS[op_name]
    p = _foe_params(lam=1.3)
    p["reg"]["filters"] = 3.0 * p["reg"]["filters"]
    x, y = _randn(*SHAPE) * 0.05, _randn(*SHAPE)  # small x: ρ'' near its supremum
    reg = functools.partial(fields_of_experts, potential=potential, boundary=boundary)
    energy = variational_energy(op, reg)
    est = _hessian_norm(energy, p, y, x, num_iter=100)
    bound = lipschitz_bound(
        1.0, p["lam"], p["reg"]["filters"], p["reg"]["weights"], potential, boundary=boundary
    )
    assert est <= float(bound)
    assert est >= 0.2 * float(bound)  # not vacuous


def test_lipschitz_bound_reflect_is_tight_for_a_shift():
    """A one-tap diagonal shift reads the mirrored corner pixel four times under the reflect
    boundary: ‖K‖ = 2 > ‖k‖₁ = 1, so the circular/zero bound fails there and the reflect one
    (min(2 ‖k‖₁, Σ_p ‖k_p‖₁) = 2) is attained; for a symmetric filter it stays ‖k‖₁."""
    shape = (7, 8)
    shift = np.zeros((1, 3, 3))
    shift[0, 2, 2] = 1.0
    reg = {"filters": jnp.asarray(shift), "weights": jnp.asarray([0.5])}
    p = {"lam": jnp.asarray(1.0), "reg": reg}
    energy = variational_energy(
        Identity(),
        functools.partial(fields_of_experts, potential="quadratic", boundary="reflect"),
    )
    est = _hessian_norm(energy, p, jnp.zeros(shape), _randn(*shape), num_iter=300)
    args = (1.0, 1.0, reg["filters"], reg["weights"], "quadratic")
    np.testing.assert_allclose(lipschitz_bound(*args, boundary="reflect"), 1.0 + 0.5 * 4)
    np.testing.assert_allclose(est, 1.0 + 0.5 * 4, rtol=1e-6)
    assert est > 1.5 * float(lipschitz_bound(*args))  # the circular bound, 1 + 0.5
    np.testing.assert_allclose(safe_step(*args, boundary="reflect"), 1.0 / (1.0 + 0.5 * 4))
    box = jnp.ones((1, 3, 3))
    np.testing.assert_allclose(
        lipschitz_bound(1.0, 1.0, box, jnp.ones(1), "quadratic", boundary="reflect"), 1.0 + 81
    )
    # random filters, an inpainting operator: a bound (shape-free, so looser than the circular
    # one: every off-centre tap may read a mirrored pixel twice per axis)
    q = _foe_params(lam=1.3)
    q["reg"]["filters"] = 3.0 * q["reg"]["filters"]
    reg = functools.partial(fields_of_experts, potential="logcosh", boundary="reflect")
    est = _hessian_norm(
        variational_energy(OPS["rows"], reg), q, _randn(*SHAPE), _randn(*SHAPE) * 0.05
    )
    bound = lipschitz_bound(
        1.0, q["lam"], q["reg"]["filters"], q["reg"]["weights"], "logcosh", boundary="reflect"
    )
    assert 0.1 * float(bound) <= est <= float(bound)


def test_lipschitz_bound_is_tight_for_tv_filters():
    # quadratic potential, difference filters, even grid: ‖k‖₁ = ‖K‖ at the Nyquist frequency
    shape = (12, 12)
    reg = {"filters": tv_like_filters(1, 3), "weights": jnp.asarray([0.5, 0.5])}
    p = {"lam": jnp.asarray(1.0), "reg": reg}
    energy = variational_energy(
        Identity(), functools.partial(fields_of_experts, potential="quadratic")
    )
    est = _hessian_norm(energy, p, jnp.zeros(shape), _randn(*shape), num_iter=300)
    bound = lipschitz_bound(1.0, 1.0, reg["filters"], reg["weights"], "quadratic")
    np.testing.assert_allclose(bound, 1.0 + 0.5 * 4 + 0.5 * 4)
    np.testing.assert_allclose(est, bound, rtol=1e-6)


def test_dense_lipschitz_bound():
    d = SHAPE[0] * SHAPE[1]
    q = dense_params(RNG, d, d, 0.8)
    p = {"lam": jnp.asarray(1.0), "reg": q}
    op = OPS["blur_zero"]
    energy = variational_energy(op, functools.partial(dense, potential="quadratic"))
    est = _hessian_norm(energy, p, _randn(*SHAPE), _randn(*SHAPE), num_iter=100)
    bound = dense_lipschitz_bound(1.0, 1.0, q["W"], q["gamma"], get_potential("quadratic"))
    assert 0.5 * float(bound) <= est <= float(bound)


def test_safe_step_makes_tied_map_nonexpansive():
    op = OPS["blur_zero"]
    p = _foe_params(lam=1.0)
    p["reg"]["filters"] = 4.0 * p["reg"]["filters"]
    reg = p["reg"]
    tau = safe_step(1.0, p["lam"], reg["filters"], reg["weights"], "logcosh")
    np.testing.assert_allclose(
        tau, 1.0 / lipschitz_bound(1.0, p["lam"], reg["filters"], reg["weights"]), rtol=1e-15
    )
    T = jax.jit(tied_foe_map(op, potential="logcosh", boundary="zero"))
    y = _randn(*SHAPE)
    ratios = []
    for _ in range(20):
        x1 = _randn(*SHAPE) * 0.3
        x2 = x1 + _randn(*SHAPE) * 10.0 ** RNG.uniform(-3, 0)
        num = jnp.linalg.norm(T(x1, {**p, "tau": tau}, y) - T(x2, {**p, "tau": tau}, y))
        ratios.append(float(num / jnp.linalg.norm(x1 - x2)))
    assert max(ratios) <= 1.0 + 1e-12

    # denoising (λ-strongly convex): a strict contraction, factor ≤ 1 − λ/L
    op, T = Identity(), jax.jit(tied_foe_map(Identity(), potential="huber"))
    x1, x2 = _randn(*SHAPE), _randn(*SHAPE)
    num = jnp.linalg.norm(T(x1, {**p, "tau": tau}, y) - T(x2, {**p, "tau": tau}, y))
    assert num <= (1.0 - float(tau) * 1.0) * jnp.linalg.norm(x1 - x2) * (1 + 1e-12)

    # and a step well beyond 2/L expands: the check can fail
    tv = {"filters": tv_like_filters(1, 3), "weights": jnp.asarray([1.0, 1.0])}
    q = {"lam": jnp.asarray(1.0), "reg": tv}
    big = 2.5 / lipschitz_bound(1.0, 1.0, tv["filters"], tv["weights"], "quadratic")
    T = tied_foe_map(op, potential="quadratic")
    checker = jnp.asarray((-1.0) ** np.add.outer(np.arange(12), np.arange(12)))
    zero = jnp.zeros((12, 12))
    out = T(checker, {**q, "tau": big}, zero) - T(0 * checker, {**q, "tau": big}, zero)
    assert jnp.linalg.norm(out) > 1.2 * jnp.linalg.norm(checker)


@pytest.mark.unchecked  # passes ill-typed values on purpose
def test_bad_input_raises():
    x = jnp.zeros(SHAPE)
    with pytest.raises(ValueError, match="potential"):
        tied_foe_map(Identity(), potential="cauchy")
    with pytest.raises(ValueError, match="boundary"):
        tied_foe_map(Identity(), boundary="mirror")
    with pytest.raises(ValueError, match="activation"):
        deq_conv_map(Identity(), activation="sigmoid")
    with pytest.raises(ValueError, match="operator"):
        variational_energy(None, fields_of_experts)
    with pytest.raises(ValueError, match="adjoint"):
        tied_foe_map(lambda x: x)
    k = _randn(3, 3, 3)
    base = {"lam": 1.0, "tau": 0.1, "K": k, "C": k, "b": jnp.zeros(3)}
    with pytest.raises(ValueError, match="K_norm"):
        deq_conv_map(Identity(), normalize=True)(x, base, x)
    with pytest.raises(ValueError, match="same F"):
        deq_conv_map(Identity())(x, {**base, "C": k[:2]}, x)
    with pytest.raises(ValueError, match="missing"):
        tied_foe_map(Identity())(x, {"lam": 1.0, "reg": {}}, x)
    with pytest.raises(ValueError, match="V"):
        dq = dense_params(RNG, SHAPE[0] * SHAPE[1], 4, 1.0)
        deq_dense_map(Identity())(x, {"lam": 1.0, "tau": 0.1, "V": dq["W"], **dq}, x)
    with pytest.raises(ValueError, match="weights"):
        lipschitz_bound(1.0, 1.0, k, jnp.ones(2))
