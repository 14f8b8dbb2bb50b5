"""Correlation primitives: every formulation against numpy/scipy, adjointness, derivatives, vmap.

Compilation dominates the run time, so each test jits one program that covers several cases.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxinv import _conv
from jaxinv._conv import METHODS, choose_method, correlate, correlate_adjoint

CONCRETE = [m for m in METHODS if m != "auto"]
BOUNDARIES = ("circular", "zero", "reflect")
# the derivative tests compile large programs: all boundaries for the CPU default, fewer else
DERIV_CASES = {
    "stencil": BOUNDARIES,
    "matmul": BOUNDARIES,
    "fft": ("zero", "reflect"),
    "conv": ("circular", "reflect"),
}
SCIPY_MODE = {"zero": "constant", "reflect": "reflect"}  # scipy's "reflect" is half-sample


def reference(x, filters, boundary):
    """numpy: np.roll sums (circular) or scipy.ndimage.correlate with zeros outside or the
    mirrored image (reflect; scipy's mirror copies repeat with period 2H like ours)."""
    x, filters = np.asarray(x), np.asarray(filters)
    k = filters.shape[-1]
    c = k // 2
    out = np.zeros(x.shape[:-2] + (filters.shape[0],) + x.shape[-2:])
    for f in range(filters.shape[0]):
        if boundary == "circular":
            for a in range(k):
                for b in range(k):
                    out[..., f, :, :] += filters[f, a, b] * np.roll(x, (c - a, c - b), (-2, -1))
        else:
            for idx in np.ndindex(x.shape[:-2]):
                # scipy centres a k-tap filter at k // 2, as correlate does (even k included)
                out[idx + (f,)] = ndimage.correlate(x[idx], filters[f], mode=SCIPY_MODE[boundary])
    return out


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def logcosh_energy(method, boundary):
    return lambda u, f: jnp.sum(jnp.log(jnp.cosh(correlate(u, f, boundary, method))))


@pytest.mark.parametrize("method", CONCRETE)
def test_matches_numpy_and_is_adjoint(method):
    """Odd and even filters, both boundaries, batched and unbatched, <A x, z> = <x, A^T z>."""
    x, z = rand(2, 3, 9, 11), rand(2, 3, 4, 9, 11, seed=1)
    banks = {k: rand(4, k, k, seed=k) for k in (3, 4)}

    @jax.jit
    def run(x, z, banks):
        out = {}
        for k, f in banks.items():
            for b in BOUNDARIES:
                out[k, b] = (correlate(x, f, b, method), correlate_adjoint(z, f, b, method))
        # single images (H, W) and single response stacks (F, H, W) take the same path
        f = banks[3]
        out[0, "single"] = (
            correlate(x[0, 0], f, "zero", method),
            correlate_adjoint(z[1, 2], f, "zero", method),
        )
        return out

    res = run(x, z, banks)
    single = res.pop((0, "single"))
    for (k, b), (zz, adj) in res.items():
        np.testing.assert_allclose(zz, reference(x, banks[k], b), atol=1e-12, err_msg=f"{k} {b}")
        assert adj.shape == x.shape
        np.testing.assert_allclose(np.vdot(zz, z), np.vdot(x, adj), rtol=1e-12)
    np.testing.assert_allclose(single[0], res[3, "zero"][0][0, 0], atol=1e-12)
    np.testing.assert_allclose(single[1], res[3, "zero"][1][1, 2], atol=1e-12)


@pytest.mark.parametrize("method", CONCRETE)
def test_linear_transpose_agrees(method):
    x, z, f = rand(2, 8, 10), rand(2, 3, 8, 10, seed=1), rand(3, 3, 3, seed=2)

    @jax.jit
    def run(x, z, f):
        out = []
        for b in BOUNDARIES:
            (t,) = jax.linear_transpose(lambda u, b=b: correlate(u, f, b, method), x)(z)
            (tt,) = jax.linear_transpose(lambda v, b=b: correlate_adjoint(v, f, b, method), z)(x)
            out.append((t, correlate_adjoint(z, f, b, method), tt, correlate(x, f, b, method)))
        return out

    for t, adj, tt, corr in run(x, z, f):
        np.testing.assert_allclose(t, adj, atol=1e-12)
        np.testing.assert_allclose(tt, corr, atol=1e-12)


def _fd_grad(f, p, eps=1e-6):
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        d = np.zeros_like(p)
        d[i] = eps
        g[i] = (f(p + d) - f(p - d)) / (2 * eps)
    return g


@pytest.mark.parametrize("method", CONCRETE)
def test_gradients_match_finite_differences(method):
    """jax.grad w.r.t. the filters and the images, through both functions and boundaries."""
    x, f, z = rand(2, 6, 7), rand(2, 3, 3, seed=1), rand(2, 2, 6, 7, seed=2)

    def loss(f, u):
        total = 0.0
        for b in DERIV_CASES[method]:
            total += logcosh_energy(method, b)(u, f)
            total += jnp.vdot(correlate_adjoint(z, f, b, method), u**2)
        return total

    gf, gx = jax.jit(jax.grad(loss, (0, 1)))(f, x)
    loss = jax.jit(loss)
    np.testing.assert_allclose(gf, _fd_grad(lambda g: float(loss(g, x)), f), rtol=1e-6)
    np.testing.assert_allclose(gx, _fd_grad(lambda u: float(loss(f, u)), x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", CONCRETE)
def test_second_order(method):
    """Hessian-vector product of sum(logcosh(correlate(x))) by jvp-of-grad against finite
    differences of the gradient; for the default formulation also along a filter direction.
    (Reverse-over-reverse is covered by test_vjp_of_gradient_step_map.)"""
    x, f = rand(2, 7, 9), rand(3, 3, 3, seed=1)
    v, vf = rand(2, 7, 9, seed=2), rand(3, 3, 3, seed=3) * (method == "stencil")

    def energy(u, g):
        return sum(logcosh_energy(method, b)(u, g) for b in DERIV_CASES[method])

    grad = jax.grad(energy)  # w.r.t. the images
    hvp = jax.jit(lambda x, f, v, vf: jax.jvp(grad, (x, f), (v, vf))[1])(x, f, v, vf)
    grad, eps = jax.jit(grad), 1e-6
    fd = (grad(x + eps * v, f + eps * vf) - grad(x - eps * v, f - eps * vf)) / (2 * eps)
    np.testing.assert_allclose(hvp, fd, rtol=1e-6, atol=1e-8)


def test_vjp_of_gradient_step_map():
    """The library's adjoint iteration: the VJP of T(x) = x - tau grad_x E(x, filters), where
    grad_x E is jax.grad of an energy built from correlate, w.r.t. x *and* the filters (the
    hypergradient): all formulations agree and match finite differences."""
    x, f, y, u = rand(2, 8, 8), rand(3, 3, 3, seed=1), rand(2, 8, 8, seed=2), rand(2, 8, 8, seed=3)

    def T(x, f, method):
        def energy(x):
            return 0.5 * jnp.sum((x - y) ** 2) + logcosh_energy(method, "circular")(x, f)

        return x - 0.1 * jax.grad(energy)(x)

    vjps = jax.jit(
        lambda x, f: {m: jax.vjp(lambda x, f, m=m: T(x, f, m), x, f)[1](u) for m in CONCRETE}
    )
    got = vjps(x, f)
    for m in CONCRETE:
        np.testing.assert_allclose(got[m][0], got["conv"][0], atol=1e-10, err_msg=m)
        np.testing.assert_allclose(got[m][1], got["conv"][1], atol=1e-10, err_msg=m)
    pairing = jax.jit(lambda x, f: jnp.vdot(T(x, f, "stencil"), u))
    np.testing.assert_allclose(
        got["stencil"][1], _fd_grad(lambda g: float(pairing(x, g)), f), rtol=1e-6
    )
    np.testing.assert_allclose(
        got["stencil"][0], _fd_grad(lambda v: float(pairing(v, f)), x), rtol=1e-6, atol=1e-8
    )


def test_jvp_rules_with_two_symbolic_zero_tangents():
    """JAX skips a primitive's JVP rule when every tangent is a symbolic zero, but the rules
    handle that case too: the output tangent is a symbolic zero of the output's type."""
    from jax.interpreters import ad

    x, z, f = jnp.asarray(rand(2, 6, 7)), jnp.asarray(rand(2, 3, 6, 7)), jnp.asarray(rand(3, 3, 3))

    def zero(a):
        return ad.Zero(jax.typeof(a).to_tangent_aval())

    for prim, a in ((_conv._corr_p, x), (_conv._adj_p, z)):
        out, tangent = ad.primitive_jvps[prim](
            (a, f), (zero(a), zero(f)), boundary="circular", method="stencil"
        )
        assert type(tangent) is ad.Zero
        assert tangent.aval == jax.typeof(out).to_tangent_aval()


def test_vmap():
    """Batching rules (shared by all formulations): single images, nested, non-leading axes,
    batched filter banks with and without batched images, per-example gradients."""
    x, z = rand(3, 2, 7, 8), rand(3, 2, 2, 7, 8, seed=1)
    f, fb = rand(2, 3, 3, seed=2), rand(3, 2, 3, 3, seed=3)
    corr = lambda u, g: correlate(u, g, "circular", "stencil")  # noqa: E731
    adj = lambda v, g: correlate_adjoint(v, g, "zero", "stencil")  # noqa: E731
    energy = lambda u: jnp.sum(jnp.tanh(corr(u, f)))  # noqa: E731

    @jax.jit
    def run(x, z, f, fb):
        return dict(
            nested=(jax.vmap(jax.vmap(corr, (0, None)), (0, None))(x, f), corr(x, f)),
            axis1=(jax.vmap(corr, (1, None), 1)(x, f), corr(x, f)),
            adj_nested=(jax.vmap(jax.vmap(adj, (0, None)), (0, None))(z, f), adj(z, f)),
            corr_banks=(jax.vmap(corr, (None, 0))(x, fb), jnp.stack([corr(x, g) for g in fb])),
            corr_both=(jax.vmap(corr)(x, fb), jnp.stack([corr(x[i], fb[i]) for i in range(3)])),
            adj_banks=(jax.vmap(adj, (None, 0))(z, fb), jnp.stack([adj(z, g) for g in fb])),
            adj_both=(jax.vmap(adj)(z, fb), jnp.stack([adj(z[i], fb[i]) for i in range(3)])),
            per_example=(jax.vmap(jax.grad(energy))(x), jax.grad(energy)(x)),
        )

    for name, (got, want) in run(x, z, f, fb).items():
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=name)


def test_float32_dtype_and_large_filters():
    x, f = rand(2, 12, 12), rand(3, 5, 5, seed=1)
    x32, f32 = jnp.asarray(x, jnp.float32), jnp.asarray(f, jnp.float32)
    small, big = rand(1, 4, 5, seed=2), rand(2, 7, 7, seed=3)  # filters wider than the image

    @jax.jit
    def run(x32, f32, small, big):
        return {
            m: (
                correlate(x32, f32, "circular", m),
                [correlate(small, big, b, m) for b in BOUNDARIES],
            )
            for m in CONCRETE
        }

    for m, (out32, wide) in run(x32, f32, small, big).items():
        assert out32.dtype == jnp.float32
        np.testing.assert_allclose(out32, reference(x, f, "circular"), atol=1e-4, err_msg=m)
        for b, got in zip(BOUNDARIES, wide, strict=True):
            np.testing.assert_allclose(got, reference(small, big, b), atol=1e-12, err_msg=m)
    assert correlate(x32, f).dtype == jnp.float32  # the images' dtype rules, as before


def test_long_stencils_are_split_and_still_exact(monkeypatch):
    """Beyond _MAX_TERMS taps per output the stencil sums groups of taps in separate XLA loops
    (one-trip while loops). Lowered to 10 here, so that small filters exercise the split."""
    monkeypatch.setattr(_conv, "_MAX_TERMS", 10)
    x, z = rand(2, 9, 10), rand(2, 3, 9, 10, seed=1)
    f3, f4 = rand(3, 3, 3, seed=2), rand(2, 4, 4, seed=3)  # 27 / 32 adjoint, 9 / 16 forward taps
    run = jax.jit(
        lambda x, z, f3, f4: [
            (correlate(x, f, b, "stencil"), correlate_adjoint(z[:, : len(f)], f, b, "stencil"))
            for f, b in ((f3, "zero"), (f4, "circular"))
        ]
    )
    cases = [(f3, "zero"), (f4, "circular")]
    for (f, b), (zz, adj) in zip(cases, run(x, z, f3, f4), strict=True):
        np.testing.assert_allclose(zz, reference(x, f, b), atol=1e-12)
        np.testing.assert_allclose(np.vdot(zz, z[:, : len(f)]), np.vdot(x, adj), rtol=1e-12)


def test_choose_method_rule_and_errors(unchecked):
    cpu = functools.partial(choose_method, backend="cpu")
    assert cpu((96, 96), 5) == cpu((96, 96), 7) == cpu((256, 256), 9) == "stencil"
    assert cpu((96, 96), 9) == cpu((28, 28), 7) == cpu((256, 256), 11) == "fft"
    assert cpu((256, 256), 11, num_filters=1) == "stencil"
    assert cpu((178, 218), 11, "circular") == "stencil"  # 89 and 109 are prime
    assert cpu((178, 218), 11, "zero") == "fft"  # the zero boundary picks its own grid
    assert cpu((96, 96), 5, "reflect") == "stencil"
    assert cpu((96, 96), 9, "reflect") == "fft"  # the padded 104 x 104 image on a 105 x 105 grid
    assert choose_method((96, 96), 5, backend="gpu") == "conv"
    x, f = rand(2, 9, 11), rand(4, 3, 3, seed=1)
    auto = correlate(x, f, "zero")  # method="auto" resolves to one of the formulations
    np.testing.assert_allclose(auto, reference(x, f, "zero"), atol=1e-12)
    x, f = rand(8, 8), rand(2, 3, 3)
    with pytest.raises(ValueError, match="boundary"):
        correlate(x, f, "mirror")
    with pytest.raises(ValueError, match="method"):
        correlate(x, f, method="winograd")
    with pytest.raises(ValueError, match="filter channels"), unchecked():
        correlate_adjoint(np.zeros((3, 8, 8)), f)


def padded_reference(x, filters):
    """Reflect boundary in plain JAX: ``jnp.pad(mode="symmetric")`` then a valid convolution
    (JAX's own derivative rules, independent of the primitives')."""
    k = filters.shape[-1]
    lo, hi = k // 2, k - 1 - k // 2
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(lo, hi), (lo, hi)], mode="symmetric")
    lead = xp.shape[:-2]
    z = jax.lax.conv_general_dilated(
        xp.reshape((-1, 1) + xp.shape[-2:]),
        filters[:, None],
        (1, 1),
        "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return z.reshape(lead + z.shape[1:])


# (image shape, filter size): odd and even filters, filters wider than the image
REFLECT_CASES = [((7, 9), 3), ((6, 7), 4), ((3, 4), 5), ((2, 3), 6)]


@pytest.mark.parametrize("method", CONCRETE)
def test_reflect_matches_padded_reference_to_second_order(method):
    """Reflect boundary, per formulation: values, <A x, z> = <x, A^T z>, gradients w.r.t.
    images and filters through correlate and correlate_adjoint, a JVP, a Hessian-vector
    product (forward over reverse) and a hypergradient (reverse over reverse), all against
    the same quantities of padded_reference."""
    cases = []
    for i, (shape, k) in enumerate(REFLECT_CASES):
        nf = 2
        cases.append(
            [rand(2, *shape, seed=10 * i + s) for s in (1, 2, 3)]  # x, v, u
            + [rand(2, nf, *shape, seed=10 * i + 4)]  # z
            + [rand(nf, k, k, seed=10 * i + s) for s in (5, 6)]  # f, vf
        )

    def energies(corr):
        def energy(u, f, z):
            return jnp.sum(jnp.log(jnp.cosh(corr(u, f)))) + jnp.vdot(adjoint(corr, z, f, u), u**2)

        return energy

    def adjoint(corr, z, f, like):
        return jax.linear_transpose(lambda u: corr(u, f), like)(z)[0]

    def quantities(corr, adj, x, v, u, z, f, vf):
        energy = energies(corr)
        grad_x = jax.grad(energy)
        return dict(
            value=corr(x, f),
            adjoint=adj(z, f),
            grads=jax.grad(energy, (0, 1, 2))(x, f, z),
            jvp=jax.jvp(lambda a, g: energy(a, g, z), (x, f), (v, vf))[1],
            hvp=jax.jvp(lambda a, g: grad_x(a, g, z), (x, f), (v, vf))[1],
            hyper=jax.grad(lambda g: jnp.vdot(grad_x(x, g, z), u))(f),
        )

    def ours(u, g):
        return correlate(u, g, "reflect", method)

    def ours_adj(z, g):
        return correlate_adjoint(z, g, "reflect", method)

    def ref_adj(z, g):
        return adjoint(padded_reference, z, g, jnp.zeros(z.shape[:-3] + z.shape[-2:]))

    @jax.jit
    def run(cases):
        return [
            (quantities(ours, ours_adj, *c), quantities(padded_reference, ref_adj, *c))
            for c in cases
        ]

    for (shape, k), c, (got, want) in zip(REFLECT_CASES, cases, run(cases), strict=True):
        msg = f"{method} {shape} k={k}"
        x, z = c[0], c[3]
        np.testing.assert_allclose(got["value"], reference(x, c[4], "reflect"), atol=1e-12)
        np.testing.assert_allclose(
            np.vdot(got["value"], z), np.vdot(x, got["adjoint"]), rtol=1e-12, err_msg=msg
        )
        for name in want:
            for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(want[name]), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=f"{msg} {name}")


def test_reflect_formulations_agree_and_fold_is_the_padding_adjoint():
    """All formulations give the same reflect correlation and adjoint (a larger image, several
    filters), and _fold is the exact transpose of the symmetric padding, narrow and wide."""
    x, z, f = rand(2, 16, 13), rand(2, 5, 16, 13, seed=1), rand(5, 5, 5, seed=2)
    run = jax.jit(
        lambda x, z, f: {
            m: (correlate(x, f, "reflect", m), correlate_adjoint(z, f, "reflect", m))
            for m in CONCRETE
        }
    )
    got = run(x, z, f)
    for m in CONCRETE:
        np.testing.assert_allclose(got[m][0], got["stencil"][0], atol=1e-12, err_msg=m)
        np.testing.assert_allclose(got[m][1], got["stencil"][1], atol=1e-12, err_msg=m)
    for (h, w), lo, hi in (((6, 5), 2, 1), ((6, 5), 3, 3), ((3, 2), 5, 4), ((1, 4), 2, 3)):
        v = rand(2, h, w, seed=h + lo)
        pad = lambda a, lo=lo, hi=hi: jnp.pad(  # noqa: E731
            a, [(0, 0), (lo, hi), (lo, hi)], mode="symmetric"
        )
        y = rand(2, h + lo + hi, w + lo + hi, seed=w + hi)
        (want,) = jax.linear_transpose(pad, v)(y)
        np.testing.assert_allclose(_conv._fold(y, lo, hi, h, w), want, atol=1e-12)
        np.testing.assert_allclose(_conv._pad(v, lo, hi, "reflect", 1.0), pad(v), atol=0)
