"""Multi-filter 2-D correlation of image batches, and its exact adjoint.

``correlate(x, filters)`` maps images ``x`` of shape ``(..., H, W)`` and a filter bank of shape
``(F, k, k)`` to responses ``(..., F, H, W)`` with

    z_f[i, j] = sum_{a, b} filters[f, a, b] * x[i + a - c, j + b - c],   c = k // 2,

where out-of-range pixels wrap around (``boundary="circular"``), are zero (``"zero"``), or
mirror the image about its edge (``"reflect"``, half-sample symmetric: ``x[-1] = x[0]``,
``x[-2] = x[1]``, ``x[H] = x[H - 1]``; numpy's ``mode="symmetric"``, scipy's ``"reflect"``;
for filters wider than the image the mirrored copies repeat with period ``2H``).
``correlate_adjoint`` is its exact transpose, ``(..., F, H, W) -> (..., H, W)``. For the
reflect boundary that transpose is *not* a reflect-boundary correlation: the adjoint of the
symmetric padding folds the padded border back onto the image pixels it copies, so the
adjoint computes the full zero-boundary transposed correlation on the padded grid and folds
it (``_fold``).

Both are JAX primitives with their own differentiation rules: the transpose of ``correlate``
with respect to the images *is* ``correlate_adjoint`` (and vice versa), whichever formulation
computes them. A gradient or a vector-Jacobian product of an energy built from them therefore
runs the same fast kernels as the forward map, to any order of differentiation, under ``jit``
and ``vmap``.

Formulations (``method=``), all exact up to rounding:

``"stencil"``
    k*k shifted static slices of a once-padded array, multiplied by the filter taps and summed
    (short chains combined by a tree), which XLA fuses into one vectorised loop per operation.
    The padded array is built so that XLA computes its input once, vectorised, straight into
    it (see ``_pad``), even when that input is a whole stencil times a residual, as in a VJP.
    Fastest on the CPU for small filters; compile time grows with F*k*k.
``"matmul"``
    the k*k shifted views of the padded images stacked, then one matrix product with the
    ``(F, k*k)`` bank; the adjoint is the transposed product followed by k*k shifted sums (one
    per tap, not one per filter and tap). Its compile time hardly grows with F (4-8x less than
    the stencil's for 48 filters 7x7) and it is faster on small images, but it holds k*k
    copies of every image and its Hessian-vector products are slower on large ones; chosen
    explicitly, never by ``"auto"`` (measured for 48 filters 7x7 on 48x48 to 512x512 images).
``"fft"``
    products of real 2-D spectra (``rfft2``/``irfft2``); the zero boundary embeds the images
    in a grid enlarged by at least ``k // 2``; the reflect boundary pads the images
    symmetrically by the filter's reach and correlates the padded image on a grid of at
    least its size (``H + k - 1``), where no wrapped tap reaches a kept output, then keeps
    the centre (its adjoint folds, as above). Its cost hardly depends on the filter size, but
    XLA's CPU FFT runs on one thread and is slow for sizes with large prime factors.
``"conv"``
    ``lax.conv_general_dilated`` (NHWC inside). The backend's own convolution: the choice off
    the CPU, where cuDNN-style libraries serve it.
``"auto"`` (default)
    resolved by :func:`choose_method` from the shapes, the boundary and the backend; see there
    for the rule and ``benchmarks/conv_formulations.py`` for the measurements behind it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jaxtyping import Array, ArrayLike, Float

from ._tree import EXACT

BOUNDARIES = ("circular", "zero", "reflect")
METHODS = ("auto", "stencil", "matmul", "fft", "conv")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def correlate(
    x: Float[ArrayLike, "*batch H W"],
    filters: Float[ArrayLike, "F k k"],
    boundary: str = "circular",
    method: str = "auto",
) -> Float[Array, "*batch F H W"]:
    """Correlate every image with every filter ('same' output size)."""
    x, filters = _prepare(x, filters, 2, boundary, method)
    batch, (h, w) = x.shape[:-2], x.shape[-2:]
    m = _resolve(method, h, w, filters, boundary)
    z = _corr_p.bind(x.reshape((-1, h, w)), filters, boundary=boundary, method=m)
    return z.reshape(batch + z.shape[1:])


def correlate_adjoint(
    z: Float[ArrayLike, "*batch F H W"],
    filters: Float[ArrayLike, "F k k"],
    boundary: str = "circular",
    method: str = "auto",
) -> Float[Array, "*batch H W"]:
    """The exact adjoint of :func:`correlate` (sum over filters of the transposed correlation)."""
    z, filters = _prepare(z, filters, 3, boundary, method)
    if z.shape[-3] != filters.shape[0]:
        raise ValueError(
            f"z has {z.shape[-3]} filter channels (axis -3) but there are "
            f"{filters.shape[0]} filters"
        )
    batch, (h, w) = z.shape[:-3], z.shape[-2:]
    m = _resolve(method, h, w, filters, boundary)
    out = _adj_p.bind(z.reshape((-1,) + z.shape[-3:]), filters, boundary=boundary, method=m)
    return out.reshape(batch + (h, w))


def choose_method(
    image_shape: tuple[int, int],
    filter_size: int,
    boundary: str = "circular",
    num_filters: int = 8,
    backend: str | None = None,
) -> str:
    """The formulation ``method="auto"`` uses.

    Off the CPU: ``"conv"`` (the backend's convolution library; not tuned here). On the CPU a
    cost model fitted to ``benchmarks/conv_formulations.py`` (2-core x86; batches of 8 images
    of 28x28 to 256x256; 1 or 8 filters of 3x3 to 25x25): the stencil costs ``F k^2`` per
    pixel, the FFT ``4.5 (F + 1) log2(H W)`` (F + 1 transforms per image and direction), and
    the cheaper one is used, except that the FFT is only used on transform sizes without prime
    factors above 7 (the circular boundary transforms the image size itself, the zero and
    reflect boundaries a fast size at least ``H + k // 2`` / ``H + k - 1``; XLA's FFT of
    178 = 2 x 89 points is 5-10x slower than the stencil). In practice: the stencil for
    filters up to 7x7 (5x5 on 28x28 images), the FFT from 9x9 (11x11 on 256x256 images) with
    8 filters, and from about 11x11 (13x13 on 256x256) with one filter. The reflect boundary
    follows the same rule on its own grid (its FFT correlates the symmetrically padded image,
    as exact as the stencil); the measurements behind the rule were not repeated for it.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return "conv"
    h, w = image_shape
    hp, wp = _fft_grid(h, w, filter_size, boundary)
    if not (_is_smooth(hp) and _is_smooth(wp)):
        return "stencil"
    stencil_cost = num_filters * filter_size**2
    fft_cost = 4.5 * (num_filters + 1) * math.log2(hp * wp)
    return "stencil" if stencil_cost <= fft_cost else "fft"


def _is_smooth(n: int) -> bool:
    """No prime factor above 7 (fast FFT sizes)."""
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


def _fft_size(n: int) -> int:
    """The smallest size >= n without prime factors above 7."""
    while not _is_smooth(n):
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------------


def _prepare(a, filters, min_ndim: int, boundary: str, method: str):
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {BOUNDARIES}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    a, filters = jnp.asarray(a), jnp.asarray(filters)
    if a.ndim < min_ndim:
        raise ValueError(f"expected an array with at least {min_ndim} axes, got shape {a.shape}")
    if filters.ndim != 3 or filters.shape[-1] != filters.shape[-2]:
        raise ValueError(f"filters must have shape (F, k, k), got {filters.shape}")
    # Like the first implementation: the images' dtype rules (the filters are cast to it), so
    # a float32 fixed-point iterate stays float32 whatever precision the parameters have.
    dtype = a.dtype if jnp.issubdtype(a.dtype, jnp.floating) else jnp.promote_types(a.dtype, float)
    return a.astype(dtype), filters.astype(dtype)


def _resolve(method: str, h: int, w: int, filters, boundary: str) -> str:
    if method != "auto":
        return method
    return choose_method((h, w), filters.shape[-1], boundary, filters.shape[0])


# --------------------------------------------------------------------------------------------
# Padding helpers (static shapes; the last two axes)
# --------------------------------------------------------------------------------------------


def _split(k: int) -> tuple[int, int]:
    """Offsets of a k-tap filter: rows/columns ``-c .. k - 1 - c`` around the centre."""
    c = k // 2
    return c, k - 1 - c


def _pad(v, lo: int, hi: int, boundary: str, anchor):
    """Pad the last two axes by (lo, hi), wrapping, mirroring or with zeros.

    ``v`` is written into a zero frame with a dynamic-update-slice, and (circular, reflect) the
    border is then copied from the frame's own interior with four small updates (reflect: the
    copies reversed). Written with ``pad`` or ``concatenate`` instead, XLA's CPU fusion pulls
    the producer of ``v`` (often a whole stencil times a residual, in a VJP) into the padding
    loop, where it runs unvectorised and once per piece; as an update it is computed once,
    vectorised, straight into the frame. The update's offsets are made opaque (``anchor * 0``
    converted to an integer, 0 at run time; with a NaN filter every output is NaN whatever the
    offset) because an update of zeros at constant offsets is rewritten into a ``pad``.
    """
    *lead, h, w = v.shape
    nl = len(lead)
    if not (lo or hi):
        return v
    if boundary != "zero" and max(lo, hi) > min(h, w):  # wider than the image: rare
        mode = "wrap" if boundary == "circular" else "symmetric"  # both periodic (2H: mirror)
        return jnp.pad(v, [(0, 0)] * nl + [(lo, hi), (lo, hi)], mode=mode)
    zero = lax.convert_element_type(anchor * 0, jnp.int32)
    frame = jnp.zeros((*lead, h + lo + hi, w + lo + hi), v.dtype)
    p = lax.dynamic_update_slice(frame, v, (zero,) * nl + (lo + zero, lo + zero))
    at = (0,) * nl
    if boundary == "circular":
        if lo:  # top rows <- last image rows, bottom rows <- first image rows
            p = lax.dynamic_update_slice(p, p[..., h : h + lo, lo : lo + w], at + (0, lo))
        if hi:
            p = lax.dynamic_update_slice(p, p[..., lo : lo + hi, lo : lo + w], at + (lo + h, lo))
        if lo:  # then whole columns, corners included
            p = lax.dynamic_update_slice(p, p[..., :, w : w + lo], at + (0, 0))
        if hi:
            p = lax.dynamic_update_slice(p, p[..., :, lo : lo + hi], at + (0, lo + w))
    elif boundary == "reflect":
        # padded row r < lo copies image row lo - 1 - r; row lo + h + q copies row h - 1 - q
        rows, cols = nl, nl + 1
        if lo:
            top = lax.rev(p[..., lo : 2 * lo, lo : lo + w], (rows,))
            p = lax.dynamic_update_slice(p, top, at + (0, lo))
        if hi:
            bottom = lax.rev(p[..., lo + h - hi : lo + h, lo : lo + w], (rows,))
            p = lax.dynamic_update_slice(p, bottom, at + (lo + h, lo))
        if lo:  # then whole columns, corners included
            p = lax.dynamic_update_slice(p, lax.rev(p[..., :, lo : 2 * lo], (cols,)), at + (0, 0))
        if hi:
            right = lax.rev(p[..., :, lo + w - hi : lo + w], (cols,))
            p = lax.dynamic_update_slice(p, right, at + (0, lo + w))
    return p


def _fold(v, lo: int, hi: int, h: int, w: int):
    """The adjoint of the symmetric padding ``_pad(., lo, hi, "reflect")``: ``(..., h + lo + hi,
    w + lo + hi) -> (..., h, w)``, every border pixel added onto the image pixel it copies."""
    return _fold_axis(_fold_axis(v, lo, hi, h, v.ndim - 2), lo, hi, w, v.ndim - 1)


def _fold_axis(v, lo: int, hi: int, n: int, axis: int):
    if max(lo, hi) <= n:  # one mirror copy per side
        out = lax.slice_in_dim(v, lo, lo + n, axis=axis)
        widths = [(0, 0, 0)] * v.ndim
        if lo:
            top = lax.rev(lax.slice_in_dim(v, 0, lo, axis=axis), (axis,))
            widths[axis] = (0, n - lo, 0)
            out = out + lax.pad(top, jnp.zeros((), v.dtype), widths)
        if hi:
            bottom = lax.rev(lax.slice_in_dim(v, lo + n, lo + n + hi, axis=axis), (axis,))
            widths[axis] = (n - hi, 0, 0)
            out = out + lax.pad(bottom, jnp.zeros((), v.dtype), widths)
        return out
    # Wider: padded index m copies image index s(m) of the 2n-periodic mirror extension,
    # t = (m - lo) mod 2n, s = t if t < n else 2n - 1 - t. Sum over periods, then fold the
    # mirrored half.
    v = jnp.moveaxis(v, axis, -1)
    before = (-lo) % (2 * n)
    after = (-(before + v.shape[-1])) % (2 * n)
    v = jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(before, after)])
    v = jnp.sum(v.reshape(v.shape[:-1] + (-1, 2 * n)), axis=-2)
    out = v[..., :n] + jnp.flip(v[..., n:], -1)
    return jnp.moveaxis(out, -1, axis)


def _sum(terms: list, chain: int):
    """Sum ``terms`` as chains of ``chain`` additions combined by a balanced tree.

    XLA keeps the order of floating-point additions; one long chain would make every output
    element wait for ``len(terms)`` dependent additions.
    """
    parts = []
    for i in range(0, len(terms), chain):
        acc = terms[i]
        for t in terms[i + 1 : i + chain]:
            acc = acc + t
        parts.append(acc)
    while len(parts) > 1:
        nxt = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


# --------------------------------------------------------------------------------------------
# Formulations: x (N, H, W), z (N, F, H, W), filters (F, k, k), all one dtype
# --------------------------------------------------------------------------------------------


# Above about 250 shifted slices in one loop, XLA:CPU's generated code is no longer vectorised
# (measured: 246 terms vectorised, 289 not; 8 filters 7x7 = 392 ran 10x slower than 8 x 5x5).
_MAX_TERMS = 200


def _stencil_sum(groups: list, chain: int, anchor):
    """Sum of the terms of all ``groups`` (lists of thunks), each group in its own XLA loop.

    XLA fuses every elementwise producer into its consumer, so the groups would merge back into
    one loop too long to vectorise. Every group but the last is therefore computed inside a
    one-trip ``while_loop`` whose trip count (``1 + 0 * anchor``) XLA cannot see; it is the one
    fusion boundary XLA:CPU keeps (``optimization_barrier`` is removed before fusion).
    """
    partials = []
    for i, group in enumerate(groups):
        if i == len(groups) - 1:
            partials.append(_sum([t() for t in group], chain))
            continue
        one = 1 + lax.convert_element_type(anchor * 0, jnp.int32)
        shape = jax.eval_shape(group[0])

        def body(carry, group=group):
            return carry[0] + 1, _sum([t() for t in group], chain)

        init = (one - 1, jnp.zeros(shape.shape, shape.dtype))
        partials.append(lax.while_loop(lambda c, one=one: c[0] < one, body, init)[1])
    return _sum(partials, len(partials))


def _chunks(items: list, size: int) -> list:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _corr_stencil(x, filters, boundary):
    k = filters.shape[-1]
    h, w = x.shape[-2:]
    lo, hi = _split(k)
    xp = _pad(x, lo, hi, boundary, filters[0, 0, 0])[:, None]

    def term(a, b):
        return lambda: filters[:, a, b][None, :, None, None] * xp[:, :, a : a + h, b : b + w]

    terms = [term(a, b) for a in range(k) for b in range(k)]
    return _stencil_sum(_chunks(terms, _MAX_TERMS), k, filters[0, 0, 0])


def _adj_stencil(z, filters, boundary):
    # out[i, j] = sum_{f,a,b} filters[f, a, b] * z_f[i - a + c, j - b + c]; for the reflect
    # boundary on the padded grid (i, j in -lo .. h + hi - 1, z zero outside), then folded
    nf, k = filters.shape[0], filters.shape[-1]
    h, w = z.shape[-2:]
    lo, hi = _split(k)
    if boundary == "reflect":
        zp, oh, ow = _pad(z, k - 1, k - 1, "zero", filters[0, 0, 0]), h + k - 1, w + k - 1
    else:
        zp, oh, ow = _pad(z, hi, lo, boundary, filters[0, 0, 0]), h, w

    def term(f, a, b):
        r, c = k - 1 - a, k - 1 - b
        return lambda: filters[f, a, b] * zp[:, f, r : r + oh, c : c + ow]

    # whole filters per group where possible, so each loop reads few planes
    per = max(1, _MAX_TERMS // (k * k))
    groups = []
    for fs in _chunks(list(range(nf)), per):
        groups += _chunks(
            [term(f, a, b) for f in fs for a in range(k) for b in range(k)], _MAX_TERMS
        )
    out = _stencil_sum(groups, k, filters[0, 0, 0])
    return _fold(out, lo, hi, h, w) if boundary == "reflect" else out


def _patches(x, k: int, boundary: str, anchor):
    """``(N, H, W) -> (N, k*k, H, W)``: the k*k shifted views of the once-padded images, tap
    ``(a, b)`` at index ``a * k + b`` (``correlate`` is then one matrix product)."""
    h, w = x.shape[-2:]
    lo, hi = _split(k)
    xp = _pad(x, lo, hi, boundary, anchor)
    return jnp.stack([xp[:, a : a + h, b : b + w] for a in range(k) for b in range(k)], axis=1)


def _corr_matmul(x, filters, boundary):
    nf, k = filters.shape[0], filters.shape[-1]
    cols = _patches(x, k, boundary, filters[0, 0, 0])
    return jnp.einsum("fq,nqhw->nfhw", filters.reshape(nf, k * k), cols, precision=EXACT)


def _adj_matmul(z, filters, boundary):
    # per tap, the filter-weighted sum of the responses (one matrix product), then the
    # transpose of _patches: each tap's plane shifted back and summed (k*k terms, not F*k*k)
    nf, k = filters.shape[0], filters.shape[-1]
    h, w = z.shape[-2:]
    lo, hi = _split(k)
    g = jnp.einsum("fq,nfhw->nqhw", filters.reshape(nf, k * k), z, precision=EXACT)
    if boundary == "reflect":
        gp, oh, ow = _pad(g, k - 1, k - 1, "zero", filters[0, 0, 0]), h + k - 1, w + k - 1
    else:
        gp, oh, ow = _pad(g, hi, lo, boundary, filters[0, 0, 0]), h, w

    def term(a, b):
        r, c = k - 1 - a, k - 1 - b
        return lambda: gp[:, a * k + b, r : r + oh, c : c + ow]

    terms = [term(a, b) for a in range(k) for b in range(k)]
    out = _stencil_sum(_chunks(terms, _MAX_TERMS), k, filters[0, 0, 0])
    return _fold(out, lo, hi, h, w) if boundary == "reflect" else out


def _fft_grid(h: int, w: int, k: int, boundary: str) -> tuple[int, int]:
    if boundary == "circular":
        return h, w
    # Zero boundary: embed in a grid large enough that no wrapped tap reaches the image, of a
    # size the FFT handles fast. Reflect: the same for the symmetrically padded image, whose
    # centre (the kept outputs) no wrapped tap reaches when the grid holds the padded image.
    e = k - 1 if boundary == "reflect" else max(_split(k))
    return _fft_size(h + e), _fft_size(w + e)


def _filter_spectra(filters, hp: int, wp: int):
    """rfft2 of the filters placed with their centre tap at (0, 0) on an (hp, wp) torus."""
    k = filters.shape[-1]
    c = k // 2
    rows = [(a - c) % hp for a in range(k)]
    cols = [(b - c) % wp for b in range(k)]
    kp = jnp.zeros((filters.shape[0], hp, wp), filters.dtype)
    kp = kp.at[:, jnp.array(rows)[:, None], jnp.array(cols)[None, :]].add(filters)
    return jnp.fft.rfft2(kp)


def _embed(a, hp: int, wp: int, at: int = 0):
    h, w = a.shape[-2:]
    if (hp, wp) == (h, w):
        return a
    return jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(at, hp - h - at), (at, wp - w - at)])


def _corr_fft(x, filters, boundary):
    h, w = x.shape[-2:]
    lo, hi = _split(filters.shape[-1])
    hp, wp = _fft_grid(h, w, filters.shape[-1], boundary)
    spectra = jnp.conj(_filter_spectra(filters, hp, wp))
    at = 0
    if boundary == "reflect":  # the padded image's valid part is the reflect correlation
        x, at = _pad(x, lo, hi, "reflect", filters[0, 0, 0]), lo
    z = jnp.fft.irfft2(jnp.fft.rfft2(_embed(x, hp, wp))[:, None] * spectra, s=(hp, wp))
    return z[..., at : at + h, at : at + w].astype(x.dtype)


def _adj_fft(z, filters, boundary):
    h, w = z.shape[-2:]
    k = filters.shape[-1]
    lo, hi = _split(k)
    hp, wp = _fft_grid(h, w, k, boundary)
    spectra = _filter_spectra(filters, hp, wp)
    at, oh, ow = (lo, h + k - 1, w + k - 1) if boundary == "reflect" else (0, h, w)
    zs = jnp.fft.rfft2(_embed(z, hp, wp, at))
    out = jnp.fft.irfft2(jnp.sum(zs * spectra, axis=-3), s=(hp, wp))[..., :oh, :ow]
    if boundary == "reflect":
        out = _fold(out, lo, hi, h, w)
    return out.astype(z.dtype)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _corr_conv(x, filters, boundary):
    lo, hi = _split(filters.shape[-1])
    if boundary != "zero":
        xp, padding = _pad(x, lo, hi, boundary, filters[0, 0, 0]), "VALID"
    else:
        xp, padding = x, [(lo, hi), (lo, hi)]
    kern = jnp.transpose(filters, (1, 2, 0))[:, :, None, :]  # (k, k, 1, F)
    z = lax.conv_general_dilated(
        xp[..., None], kern, (1, 1), padding, dimension_numbers=_NHWC, precision=EXACT
    )
    return jnp.transpose(z, (0, 3, 1, 2))


def _adj_conv(z, filters, boundary):
    k = filters.shape[-1]
    lo, hi = _split(k)
    zt = jnp.transpose(z, (0, 2, 3, 1))  # (N, H, W, F)
    if boundary == "circular":
        zt = jnp.pad(zt, [(0, 0), (hi, lo), (hi, lo), (0, 0)], mode="wrap")
        padding = "VALID"
    elif boundary == "reflect":  # full transposed correlation on the padded grid, then fold
        padding = [(k - 1, k - 1), (k - 1, k - 1)]
    else:
        padding = [(hi, lo), (hi, lo)]
    kern = jnp.transpose(jnp.flip(filters, (-2, -1)), (1, 2, 0))[..., None]  # (k, k, F, 1)
    out = lax.conv_general_dilated(
        zt, kern, (1, 1), padding, dimension_numbers=_NHWC, precision=EXACT
    )[..., 0]
    return _fold(out, lo, hi, *z.shape[-2:]) if boundary == "reflect" else out


_IMPLS = {
    "stencil": (_corr_stencil, _adj_stencil),
    "matmul": (_corr_matmul, _adj_matmul),
    "fft": (_corr_fft, _adj_fft),
    "conv": (_corr_conv, _adj_conv),
}


def _filter_gradient(x, z, k: int, boundary: str):
    """d<correlate(x, filters), z>/d filters, shape (F, k, k); plain JAX, so differentiable.

    ``g[f, a, b] = sum_{n,i,j} z[n, f, i, j] * xpad[n, i + a, j + b]``: one valid convolution with
    the images as input channels and the responses as (image-sized) kernels.
    """
    lo, hi = _split(k)
    mode = {"circular": "wrap", "zero": "constant", "reflect": "symmetric"}[boundary]
    xp = jnp.pad(x, [(0, 0), (lo, hi), (lo, hi)], mode=mode)
    g = lax.conv_general_dilated(
        xp[None],
        jnp.swapaxes(z, 0, 1),
        (1, 1),
        "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=EXACT,
    )
    return g[0]


# --------------------------------------------------------------------------------------------
# Primitives: x (N, H, W) -> (N, F, H, W) and back; rules for jvp, transpose and vmap
# --------------------------------------------------------------------------------------------

_corr_p = Primitive("jaxinv_correlate")
_adj_p = Primitive("jaxinv_correlate_adjoint")


def _corr_impl(x, filters, *, boundary, method):
    return _IMPLS[method][0](x, filters, boundary)


def _adj_impl(z, filters, *, boundary, method):
    return _IMPLS[method][1](z, filters, boundary)


_corr_p.def_impl(functools.partial(jax.jit, static_argnames=("boundary", "method"))(_corr_impl))
_adj_p.def_impl(functools.partial(jax.jit, static_argnames=("boundary", "method"))(_adj_impl))


def _out_aval(shape, *avals):
    """Output type: ``shape``, the inputs' dtype, and (under ``shard_map``) the manual axes the
    inputs vary over, taken from the most varying input via ``aval.update``."""

    def varying(a):
        mat = getattr(a, "manual_axis_type", None)
        return len(getattr(mat, "varying", ()))

    return max(avals, key=varying).update(shape=shape, weak_type=False)


_corr_p.def_abstract_eval(lambda x, f, **_: _out_aval((x.shape[0], f.shape[0]) + x.shape[1:], x, f))
_adj_p.def_abstract_eval(lambda z, f, **_: _out_aval((z.shape[0],) + z.shape[2:], z, f))
mlir.register_lowering(_corr_p, mlir.lower_fun(_corr_impl, multiple_results=False))
mlir.register_lowering(_adj_p, mlir.lower_fun(_adj_impl, multiple_results=False))


def _bilinear_jvp(prim):
    def jvp(primals, tangents, **params):
        a, f = primals
        da, df = tangents
        out = prim.bind(a, f, **params)
        parts = []
        if type(da) is not ad.Zero:
            parts.append(prim.bind(da, f, **params))
        if type(df) is not ad.Zero:
            parts.append(prim.bind(a, df, **params))
        if not parts:
            return out, ad.Zero(jax.typeof(out).to_tangent_aval())
        return out, functools.reduce(jnp.add, parts)

    return jvp


ad.primitive_jvps[_corr_p] = _bilinear_jvp(_corr_p)
ad.primitive_jvps[_adj_p] = _bilinear_jvp(_adj_p)


def _corr_transpose(ct, x, filters, **params):
    if type(ct) is ad.Zero:
        return None, None
    if ad.is_undefined_primal(x):
        if ad.is_undefined_primal(filters):
            raise ValueError("correlate is bilinear: transpose it in one argument at a time")
        return _adj_p.bind(ct, filters, **params), None
    return None, _filter_gradient(x, ct, filters.aval.shape[-1], params["boundary"])


def _adj_transpose(ct, z, filters, **params):
    if type(ct) is ad.Zero:
        return None, None
    if ad.is_undefined_primal(z):
        if ad.is_undefined_primal(filters):
            raise ValueError(
                "correlate_adjoint is bilinear: transpose it in one argument at a time"
            )
        return _corr_p.bind(ct, filters, **params), None
    # <adj(z, f), ct> = <z, corr(ct, f)>
    return None, _filter_gradient(ct, z, filters.aval.shape[-1], params["boundary"])


ad.primitive_transposes[_corr_p] = _corr_transpose
ad.primitive_transposes[_adj_p] = _adj_transpose


def _batch_rule(prim):
    """vmap: fold a batch of images into the leading axis, a batch of filter banks into F for
    ``correlate`` of unbatched images, and map sequentially over anything else."""

    def rule(args, dims, **params):
        a, f = args
        da, df = dims
        if df is None:
            a = jnp.moveaxis(a, da, 0)
            nb, n = a.shape[:2]
            out = prim.bind(a.reshape((nb * n,) + a.shape[2:]), f, **params)
            return out.reshape((nb, n) + out.shape[1:]), 0
        f = jnp.moveaxis(f, df, 0)
        nb, nf = f.shape[:2]
        if da is None and prim is _corr_p:
            out = prim.bind(a, f.reshape((nb * nf,) + f.shape[2:]), **params)
            return out.reshape((out.shape[0], nb, nf) + out.shape[2:]), 1
        if da is None:
            return lax.map(lambda fi: prim.bind(a, fi, **params), f), 0
        a = jnp.moveaxis(a, da, 0)
        return lax.map(lambda af: prim.bind(af[0], af[1], **params), (a, f)), 0

    return rule


batching.primitive_batchers[_corr_p] = _batch_rule(_corr_p)
batching.primitive_batchers[_adj_p] = _batch_rule(_adj_p)
