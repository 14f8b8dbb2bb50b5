"""Forward operators: adjoints, references, masks, kernels, operator norm, input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxinv.operators import (
    Blur,
    FilterBank,
    Identity,
    Mask,
    bank_norm,
    central_block_mask,
    gaussian_kernel,
    motion_kernel,
    operator_norm,
    random_pixel_mask,
    row_mask,
    uniform_kernel,
)

SHAPE = (12, 13)
RNG = np.random.default_rng(0)
ASYM = RNG.normal(size=(3, 3))  # asymmetric: catches a missing or double flip
ASYM_RECT = RNG.normal(size=(3, 5))


def _operators(shape=SHAPE):
    ops = {
        "identity": Identity(),
        "random_mask": Mask(random_pixel_mask(jax.random.PRNGKey(3), shape)),
        "row_mask": Mask(row_mask(shape)),
        "block_mask": Mask(central_block_mask(shape)),
        "float_mask": Mask(np.asarray(row_mask(shape), dtype=float)),
    }
    for boundary in ("circular", "zero", "reflect"):
        ops[f"motion5_{boundary}"] = Blur(motion_kernel(5), boundary)
        ops[f"gauss_{boundary}"] = Blur(gaussian_kernel(5, 1.2), boundary)
        ops[f"asym_{boundary}"] = Blur(ASYM, boundary)
        ops[f"asym_rect_{boundary}"] = Blur(ASYM_RECT, boundary)
        ops[f"bank_{boundary}"] = FilterBank(RNG.normal(size=(3, 4, 4)), boundary)
    return ops


OPS = _operators()


@jax.jit
def _adjoint_check(op, x, y):
    ax = op(x)
    (transposed,) = jax.linear_transpose(op, x)(y)
    return jnp.vdot(ax, y), jnp.vdot(x, op.adjoint(y)), op.normal(x) - op.adjoint(ax), transposed


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_adjoint_dot_product(name, batch):
    op = OPS[name]
    rng = np.random.default_rng(len(name) + len(batch))  # numpy: no PRNG compile per shape
    x = jnp.asarray(rng.normal(size=batch + SHAPE))
    y = jnp.asarray(rng.normal(size=op.shape_out(batch + SHAPE)))
    assert op(x).shape == y.shape
    lhs, rhs, normal_diff, transposed = _adjoint_check(op, x, y)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(normal_diff, 0.0, atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y), transposed, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "boundary, mode", [("circular", "wrap"), ("zero", "constant"), ("reflect", "reflect")]
)
@pytest.mark.parametrize("kernel", [ASYM, ASYM_RECT, np.asarray(motion_kernel(5))])
def test_blur_matches_scipy_convolve(boundary, mode, kernel):
    x = RNG.normal(size=SHAPE)
    ref = scipy.ndimage.convolve(x, kernel, mode=mode, cval=0.0)
    np.testing.assert_allclose(Blur(kernel, boundary)(jnp.asarray(x)), ref, rtol=1e-12, atol=1e-12)
    # batched: the same blur on every image
    xs = RNG.normal(size=(2,) + SHAPE)
    out = Blur(kernel, boundary)(jnp.asarray(xs))
    for i in range(2):
        np.testing.assert_allclose(out[i], scipy.ndimage.convolve(xs[i], kernel, mode=mode))


def test_kernels():
    for k, size in [
        (motion_kernel(5), 5),
        (motion_kernel(11), 11),
        (gaussian_kernel(7, 1.5), 7),
        (uniform_kernel(3), 3),
        (motion_kernel(5, "horizontal"), 5),
        (motion_kernel(5, "vertical"), 5),
        (motion_kernel(5, "antidiagonal"), 5),
    ]:
        assert k.shape == (size, size)
        np.testing.assert_allclose(jnp.sum(k), 1.0, rtol=1e-12)
        assert jnp.all(k >= 0)
    np.testing.assert_allclose(motion_kernel(5), np.eye(5) / 5)
    np.testing.assert_allclose(motion_kernel(3, "antidiagonal"), np.fliplr(np.eye(3)) / 3)
    np.testing.assert_allclose(motion_kernel(3, "horizontal")[1], np.ones(3) / 3)
    np.testing.assert_allclose(uniform_kernel(3), np.full((3, 3), 1 / 9))
    g = np.asarray(gaussian_kernel(5, 1.0))
    np.testing.assert_allclose(g, g.T)
    np.testing.assert_allclose(g, g[::-1, ::-1])
    np.testing.assert_allclose(g[2, 3] / g[2, 2], np.exp(-0.5), rtol=1e-12)
    assert np.unravel_index(np.argmax(g), g.shape) == (2, 2)


def test_masks_mask_documented_pixels():
    h, w = 12, 13
    r = np.asarray(row_mask((h, w)))
    assert r.shape == (h, w)
    assert not r[:4].any() and r[4:].all()  # first third of 12 rows = 4
    r28 = np.asarray(row_mask((28, 28)))
    assert not r28[:9].any() and r28[9:].all()  # MNIST: round(28 / 3) = 9

    b = np.asarray(central_block_mask((12, 16)))  # half the height and width: 6 x 8 block
    missing = np.argwhere(~b)
    assert missing.min(axis=0).tolist() == [3, 4] and missing.max(axis=0).tolist() == [8, 11]
    assert (~b).sum() == 48 == 0.25 * 12 * 16

    m = np.asarray(random_pixel_mask(jax.random.PRNGKey(0), (100, 100), keep=0.3))
    assert m.dtype == bool and abs(m.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(m, random_pixel_mask(jax.random.PRNGKey(0), (100, 100), 0.3))

    x = RNG.normal(size=(2, h, w))
    out = np.asarray(Mask(r)(jnp.asarray(x)))
    np.testing.assert_array_equal(out[:, :4], 0.0)
    np.testing.assert_array_equal(out[:, 4:], x[:, 4:])


def _dense_matrix(op, shape):
    """Materialise ``A`` by applying it to the batch of all basis images."""
    n = int(np.prod(shape))
    columns = np.asarray(op(jnp.eye(n).reshape((n,) + shape)))
    return columns.reshape(n, -1).T


NORM_SHAPE = (5, 6)
NORM_OPS = ["random_mask", "asym_circular", "asym_rect_zero", "bank_zero", "asym_reflect"]


def test_operator_norm_matches_dense_matrix():
    ops = {k: v for k, v in _operators(NORM_SHAPE).items() if k in NORM_OPS}

    @jax.jit
    def norms(ops):
        return {
            k: operator_norm(o, NORM_SHAPE, num_iter=2000, dtype=jnp.float64)
            for k, o in ops.items()
        }

    est = norms(ops)
    for name, op in ops.items():
        ref = np.linalg.norm(_dense_matrix(op, NORM_SHAPE), 2)
        np.testing.assert_allclose(est[name], ref, rtol=1e-6, err_msg=name)


def test_operator_norm_is_differentiable():
    k = jnp.asarray(RNG.normal(size=(2, 3, 3)))
    v = jnp.asarray(RNG.normal(size=k.shape))

    def norm(f):
        return operator_norm(FilterBank(f), NORM_SHAPE, num_iter=30, dtype=jnp.float64)

    @jax.jit
    def check(k, v):  # the derivative along v, and central finite differences
        return jnp.vdot(jax.grad(norm)(k), v), (norm(k + 1e-6 * v) - norm(k - 1e-6 * v)) / 2e-6

    np.testing.assert_allclose(*check(k, v), rtol=1e-5)


@pytest.mark.unchecked  # passes ill-typed values on purpose
def test_bad_input_raises():
    with pytest.raises(ValueError, match="boundary"):
        Blur(motion_kernel(3), "mirror")
    with pytest.raises(ValueError, match="2-D"):
        Blur(jnp.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        Blur(jnp.ones((1, 3, 3)))
    with pytest.raises(ValueError, match="odd"):
        Blur(jnp.ones((4, 4)) / 16)
    with pytest.raises(ValueError, match="odd"):
        motion_kernel(4)
    with pytest.raises(ValueError, match="direction"):
        motion_kernel(5, "sideways")
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(5, 0.0)
    with pytest.raises(ValueError, match="odd"):
        uniform_kernel(0)
    with pytest.raises(ValueError, match="2-D"):
        Mask(jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="0 and 1"):
        Mask(jnp.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="image shape"):
        Mask(row_mask((12, 13)))(jnp.ones((13, 12)))
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="between 0 and 1"):
            row_mask((12, 13), bad)
        with pytest.raises(ValueError, match="between 0 and 1"):
            central_block_mask((12, 13), bad)
        with pytest.raises(ValueError, match="between 0 and 1"):
            random_pixel_mask(jax.random.PRNGKey(0), (12, 13), bad)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        row_mask((2, 12, 13))
    with pytest.raises(ValueError, match=r"\(F, k, k\)"):
        FilterBank(jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="num_iter"):
        operator_norm(Identity(), SHAPE, num_iter=0)


def test_reflect_operators_on_images_smaller_than_the_kernel():
    """Reflect blur and filter banks (odd and even filters) wider than the image: the mirror
    copies repeat (period 2H, like scipy's "reflect"); exact adjoints."""
    shape = (3, 4)
    ops = {
        "motion11": Blur(motion_kernel(11), "reflect"),
        "asym_rect": Blur(RNG.normal(size=(5, 9)), "reflect"),
        "bank6": FilterBank(RNG.normal(size=(2, 6, 6)), "reflect"),
        "bank7": FilterBank(RNG.normal(size=(2, 7, 7)), "reflect"),
    }
    rng = np.random.default_rng(7)
    for name, op in ops.items():
        x = jnp.asarray(rng.normal(size=(2,) + shape))
        y = jnp.asarray(rng.normal(size=op.shape_out((2,) + shape)))
        lhs, rhs, normal_diff, transposed = _adjoint_check(op, x, y)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(normal_diff, 0.0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(op.adjoint(y), transposed, atol=1e-12, err_msg=name)
        if isinstance(op, Blur):
            ref = scipy.ndimage.convolve(np.asarray(x[0]), np.asarray(op.kernel), mode="reflect")
        else:
            ref = scipy.ndimage.correlate(
                np.asarray(x[0]), np.asarray(op.filters[1]), mode="reflect"
            )
        got = op(x)[0] if isinstance(op, Blur) else op(x)[0, 1]
        np.testing.assert_allclose(got, ref, atol=1e-12, err_msg=name)


def _dct_like(size):
    """Separable products of the 1-D DCT-II basis, non-constant: each even or odd about the
    centre for odd ``size``."""
    i = np.arange(size)
    basis = [np.cos(np.pi * (2 * i + 1) * u / (2 * size)) for u in range(size)]
    return np.stack([np.outer(a, b) for a in basis for b in basis][1:])


def test_bank_norm_bounds_the_reflect_norm():
    """bank_norm(..., "reflect") is an upper bound of the true norm (of the dense matrix) for
    random filters, odd and even, narrower and wider than the image; exact for
    filters of one parity (symmetric filters, the odd-size DCT basis); never above the 2 ‖C‖
    bound of the 2H x 2W symmetric extension; and the circular / zero values stay as before
    (exact / an upper bound)."""
    cases = []
    for i, (shape, nf, k) in enumerate(
        [((8, 9), 3, 3), ((7, 6), 4, 4), ((6, 7), 2, 5), ((4, 5), 2, 7), ((3, 4), 2, 9)]
    ):
        rand = np.random.default_rng(20 + i).normal(size=(nf, k, k))
        sym = rand + rand[:, ::-1] + rand[:, :, ::-1] + rand[:, ::-1, ::-1]
        cases += [(shape, rand, False), (shape, sym, k % 2 == 1)]
        if k % 2:
            cases.append((shape, _dct_like(k)[:: max(1, k * k // 12)], True))
    ratios = []
    for shape, f, exact in cases:
        f = jnp.asarray(f)
        dense = np.linalg.norm(_dense_matrix(FilterBank(f, "reflect"), shape), 2)
        bound = float(bank_norm(f, shape, "reflect"))
        msg = f"{shape} {f.shape}"
        assert bound >= dense * (1 - 1e-12), msg
        assert bound <= 2 * float(bank_norm(f, (2 * shape[0], 2 * shape[1]))) * (1 + 1e-12), msg
        if exact:
            np.testing.assert_allclose(bound, dense, rtol=1e-10, err_msg=msg)
        else:
            ratios.append(bound / dense)
        circ = np.linalg.norm(_dense_matrix(FilterBank(f, "circular"), shape), 2)
        np.testing.assert_allclose(bank_norm(f, shape, "circular"), circ, rtol=1e-10, err_msg=msg)
        zero = np.linalg.norm(_dense_matrix(FilterBank(f, "zero"), shape), 2)
        assert float(bank_norm(f, shape, "zero")) >= zero * (1 - 1e-12), msg
    assert max(ratios) < 2.0  # the general bound stays below the factor-2 extension bound
    with pytest.raises(ValueError, match="boundary"):
        bank_norm(jnp.ones((1, 3, 3)), (8, 8), "mirror")


def test_reflect_blur_norms():
    """A reflect blur with a kernel symmetric in each axis keeps ‖A‖ ≤ 1; the diagonal motion
    blur does not (its mirrored corner pixels weigh more), and bank_norm bounds it."""
    shape = (12, 13)
    for kernel in (gaussian_kernel(5, 1.2), uniform_kernel(3), motion_kernel(5, "horizontal")):
        dense = np.linalg.norm(_dense_matrix(Blur(kernel, "reflect"), shape), 2)
        np.testing.assert_allclose(dense, 1.0, rtol=1e-12)
        np.testing.assert_allclose(bank_norm(kernel[None], shape, "reflect"), 1.0, rtol=1e-12)
    kernel = motion_kernel(5)
    dense = np.linalg.norm(_dense_matrix(Blur(kernel, "reflect"), shape), 2)
    assert 1.01 < dense <= float(bank_norm(jnp.flip(kernel)[None], shape, "reflect"))
