"""The hot kernels compiled with Numba: same functions, signatures and results as :mod:`numpy_kernels`.

Each kernel is a thin Python wrapper (argument checks, output allocation in the input's dtype) around an
``@njit(parallel=True, cache=True)`` loop nest. Parallel loops (``prange``) run over a *safe* axis: every
thread writes only the output rows it owns, so there are no races and no atomics, and the results do not
depend on the number of threads.

* forward kernels (im2col, max/avg pool) run over output rows ``(n, i)``;
* backward kernels (col2im, max/avg pool backward) run over *input* rows ``(n, y)``: each input row gathers
  the contributions of the windows that cover it, in the same (a, b) order as the NumPy reference;
* ReLU backward runs over rows of the last axis;
* LRN forward runs over pixels ``(n, y, x)`` and backward over blocks of pixels, each pixel owning its row of
  channels.

The first call of a kernel for a dtype compiles it (cached on disk afterwards), so benchmarks warm up
first. float32 inputs stay float32 throughout.

Threads: unless ``NUMBA_THREADING_LAYER`` says otherwise, the kernels use Numba's ``workqueue`` layer, whose
threads sleep between parallel regions. The OpenMP layer's threads keep spinning after each region and take
the cores away from the BLAS matrix products that follow.
"""
from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from . import numpy_kernels
from .common import lrn_terms, pool_counts, window_output_hw

_JIT = dict(parallel=True, cache=True, nogil=True)


# --------------------------------------------------------------------------------------- im2col
@njit(**_JIT)
def _im2col(x, kh, kw, sh, sw, top, left, pad_value, out):
    n, h, w, c = x.shape
    ho, wo = out.shape[1], out.shape[2]
    for r in prange(n * ho):
        img, i = r // ho, r % ho
        for j in range(wo):
            for a in range(kh):
                y = i * sh + a - top
                for b in range(kw):
                    xx = j * sw + b - left
                    if 0 <= y < h and 0 <= xx < w:
                        for ch in range(c):
                            out[img, i, j, a, b, ch] = x[img, y, xx, ch]
                    else:
                        for ch in range(c):
                            out[img, i, j, a, b, ch] = pad_value


def im2col(x, kh, kw, sh, sw, pads, pad_value=0.0):
    """Gather every (kh, kw) window of ``x`` into one row; see :func:`numpy_kernels.im2col`.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    kh, kw, sh, sw : int
    pads : (top, bottom, left, right)
    pad_value : float

    Returns
    -------
    cols : ndarray, shape (N, Ho, Wo, kh, kw, C), dtype of ``x``
    """
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, kh, kw, sh, sw, pads)
    out = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    _im2col(x, kh, kw, sh, sw, pads[0], pads[2], x.dtype.type(pad_value), out)
    return out


# --------------------------------------------------------------------------------------- col2im
@njit(**_JIT)
def _col2im(cols, sh, sw, top, left, dx):
    n, h, w, c = dx.shape
    ho, wo, kh, kw = cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4]
    for r in prange(n * h):
        img, y = r // h, r % h
        for xx in range(w):
            for ch in range(c):
                dx[img, y, xx, ch] = 0
        for a in range(kh):  # windows i with i*sh + a - top == y
            t = y + top - a
            if t < 0 or t % sh != 0 or t // sh >= ho:
                continue
            i = t // sh
            for b in range(kw):  # (a, b) order as the reference, so float sums match
                for j in range(wo):
                    xx = j * sw + b - left
                    if 0 <= xx < w:
                        for ch in range(c):
                            dx[img, y, xx, ch] += cols[img, i, j, a, b, ch]


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    """Add every window row back onto the cells it came from (the adjoint of im2col).

    Parallel over input rows (n, y): each row sums the windows covering it, so no two threads write
    the same cell. See :func:`numpy_kernels.col2im`.

    Parameters
    ----------
    cols : ndarray, shape (N, Ho, Wo, kh, kw, C)
    x_shape : (N, H, W, C)

    Returns
    -------
    dx : ndarray, shape (N, H, W, C), dtype of ``cols``
    """
    cols = np.ascontiguousarray(cols)
    dx = np.empty(tuple(x_shape), dtype=cols.dtype)
    _col2im(cols, sh, sw, pads[0], pads[2], dx)
    return dx


# ------------------------------------------------------------------------------------- max pool
@njit(**_JIT)
def _maxpool_forward(x, n, h, w, ph, pw, sh, sw, top, left, ho, wo, y, argmax):
    # x: (N*H*W, C); y, argmax: (N*Ho*Wo, C): each (row, channel) loop below is branch-free and vectorises
    c = x.shape[1]
    for r in prange(n * ho):
        img, i = r // ho, r % ho
        for j in range(wo):
            out = (img * ho + i) * wo + j
            for ch in range(c):
                y[out, ch] = -np.inf
                argmax[out, ch] = 0
            for a in range(ph):
                yy = i * sh + a - top
                if yy < 0 or yy >= h:
                    continue  # a padding row: -inf never wins
                for b in range(pw):
                    xx = j * sw + b - left
                    if xx < 0 or xx >= w:
                        continue
                    k = np.int32(a * pw + b)
                    src = (img * h + yy) * w + xx
                    for ch in range(c):
                        v = x[src, ch]
                        best = y[out, ch]
                        # strict: the first maximum wins ties; the first NaN wins and stays (NaN propagates)
                        better = (v > best) | ((v != v) & (best == best))
                        y[out, ch] = v if better else best
                        argmax[out, ch] = k if better else argmax[out, ch]


def maxpool_forward(x, ph, pw, sh, sw, pads):
    """Max pooling with −inf padding and the window-local argmax ``a * pw + b`` (first max wins; a window
    holding NaN gives NaN, its argmax the first NaN, as :func:`numpy_kernels.maxpool_forward`).

    Returns
    -------
    y : ndarray, shape (N, Ho, Wo, C), dtype of ``x``
    argmax : ndarray of int32, shape (N, Ho, Wo, C)
    """
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    argmax = np.empty((n, ho, wo, c), dtype=np.int32)
    _maxpool_forward(x.reshape(-1, c), n, h, w, ph, pw, sh, sw, pads[0], pads[2], ho, wo,
                     y.reshape(-1, c), argmax.reshape(-1, c))
    return y, argmax


@njit(**_JIT)
def _maxpool_backward(gy, argmax, ph, pw, sh, sw, top, left, gx):
    n, h, w, c = gx.shape
    ho, wo = gy.shape[1], gy.shape[2]
    for r in prange(n * h):
        img, y = r // h, r % h
        for xx in range(w):
            for ch in range(c):
                gx[img, y, xx, ch] = 0
        for a in range(ph):
            t = y + top - a
            if t < 0 or t % sh != 0 or t // sh >= ho:
                continue
            i = t // sh
            for b in range(pw):
                k = a * pw + b
                for j in range(wo):
                    xx = j * sw + b - left
                    if 0 <= xx < w:
                        for ch in range(c):
                            if argmax[img, i, j, ch] == k:
                                gx[img, y, xx, ch] += gy[img, i, j, ch]


def maxpool_backward(gy, argmax, x_shape, ph, pw, sh, sw, pads):
    """Route each output gradient to the cell that won its window (a gather per input row).

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    gy = np.ascontiguousarray(gy)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    gx = np.empty(tuple(x_shape), dtype=gy.dtype)
    _maxpool_backward(gy, argmax, ph, pw, sh, sw, pads[0], pads[2], gx)
    return gx


# ------------------------------------------------------------------------------------- avg pool
@njit(**_JIT)
def _avgpool_forward(x, ph, pw, sh, sw, top, left, y):
    n, h, w, c = x.shape
    ho, wo = y.shape[1], y.shape[2]
    for r in prange(n * ho):
        img, i = r // ho, r % ho
        y0, y1 = max(i * sh - top, 0), min(i * sh - top + ph, h)
        for j in range(wo):
            x0, x1 = max(j * sw - left, 0), min(j * sw - left + pw, w)
            count = (y1 - y0) * (x1 - x0)
            for ch in range(c):
                y[img, i, j, ch] = 0
            for yy in range(y0, y1):
                for xx in range(x0, x1):
                    for ch in range(c):
                        y[img, i, j, ch] += x[img, yy, xx, ch]
            for ch in range(c):
                y[img, i, j, ch] /= count


def avgpool_forward(x, ph, pw, sh, sw, pads):
    """Average pooling dividing by the number of real (unpadded) cells of each window.

    Returns
    -------
    y : ndarray, shape (N, Ho, Wo, C), dtype of ``x``
    """
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    _avgpool_forward(x, ph, pw, sh, sw, pads[0], pads[2], y)
    return y


@njit(**_JIT)
def _avgpool_backward(share, ph, pw, sh, sw, top, left, gx):
    n, h, w, c = gx.shape
    ho, wo = share.shape[1], share.shape[2]
    for r in prange(n * h):
        img, y = r // h, r % h
        for xx in range(w):
            for ch in range(c):
                gx[img, y, xx, ch] = 0
        for a in range(ph):
            t = y + top - a
            if t < 0 or t % sh != 0 or t // sh >= ho:
                continue
            i = t // sh
            for b in range(pw):
                for j in range(wo):
                    xx = j * sw + b - left
                    if 0 <= xx < w:
                        for ch in range(c):
                            gx[img, y, xx, ch] += share[img, i, j, ch]


def avgpool_backward(gy, x_shape, ph, pw, sh, sw, pads):
    """Spread ``gy / count`` over the real cells of each window (a gather per input row).

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    n, h, w, c = x_shape
    counts = pool_counts(h, w, ph, pw, sh, sw, pads).astype(gy.dtype)
    share = np.ascontiguousarray(gy / counts[None, :, :, None])  # divided first, as the reference
    gx = np.empty(tuple(x_shape), dtype=gy.dtype)
    _avgpool_backward(share, ph, pw, sh, sw, pads[0], pads[2], gx)
    return gx


# ------------------------------------------------------------------ element-wise and channel kernels
@njit(**_JIT)
def _relu_backward(gy, y, gz, zero, one):
    rows, c = gy.shape
    for r in prange(rows):
        for ch in range(c):  # a product, as the reference: NaN or inf in gy stays NaN where y <= 0
            gz[r, ch] = gy[r, ch] * (one if y[r, ch] > 0 else zero)


def relu_backward(gy, y):
    """``gz = gy · [y > 0]`` in one parallel pass; see :func:`numpy_kernels.relu_backward`."""
    if gy.size == 0 or gy.ndim == 0:
        return gy * (y > 0)
    gy = np.ascontiguousarray(gy)
    y = np.ascontiguousarray(y)
    gz = np.empty_like(gy)
    last = gy.shape[-1]
    _relu_backward(gy.reshape(-1, last), y.reshape(-1, last), gz.reshape(-1, last), gy.dtype.type(0),
                   gy.dtype.type(1))
    return gz


# --------------------------------------------------------------------------------------------- LRN
# The power s^(-beta) dominates LRN. For the paper's beta = 0.75 it is 1 / (√s · √√s): two square roots,
# which vectorise, instead of a scalar pow. It differs from NumPy's power by an ulp or two, far inside the
# backends' agreement tolerances.
_LRN_BLOCK = 256  # rows per parallel task in the backward pass (each task owns one scratch row)


@njit(inline="always")
def _window_sum_row(v, before, after, zero, out):
    """``out[c] = Σ_{d=-before..after} v[c + d]`` over the channels that exist, in increasing d."""
    c = v.shape[0]
    for ch in range(c):
        out[ch] = zero
    for d in range(-before, after + 1):
        for ch in range(max(0, -d), min(c, c - d)):
            out[ch] += v[ch + d]


@njit(inline="always")
def _inverse_power_row(s, minus_beta, one, three_quarters, out):
    """``out = s^(−beta)`` along a row (``minus_beta`` = −beta and ``one`` in the dtype of ``s``)."""
    if three_quarters:
        for ch in range(s.shape[0]):
            q = np.sqrt(s[ch])
            out[ch] = one / (q * np.sqrt(q))
    else:
        for ch in range(s.shape[0]):
            out[ch] = s[ch] ** minus_beta


@njit(**_JIT)
def _lrn_forward(x, before, after, consts, three_quarters, y, scale):
    k, alpha_over_size, minus_beta, zero, one = consts[0], consts[1], consts[2], consts[4], consts[5]
    for r in prange(x.shape[0]):
        xr, sr, yr = x[r], scale[r], y[r]
        for ch in range(xr.shape[0]):
            yr[ch] = xr[ch] * xr[ch]                  # the squares, in y until y is written
        _window_sum_row(yr, before, after, zero, sr)
        for ch in range(xr.shape[0]):
            sr[ch] = k + alpha_over_size * sr[ch]
        _inverse_power_row(sr, minus_beta, one, three_quarters, yr)
        for ch in range(xr.shape[0]):
            yr[ch] = xr[ch] * yr[ch]


def _lrn_constants(dtype, terms):
    """k, alpha/size, −beta, 2·alpha·beta/size (:func:`~tinynet.kernels.common.lrn_terms`), 0 and 1, as one
    array of ``dtype`` (so that the jitted loops compute in ``dtype``)."""
    return np.array([terms.k, terms.alpha_over_size, terms.minus_beta, terms.coef, 0.0, 1.0], dtype=dtype)


def _rows(a):
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across channels, one pass per pixel; see :func:`numpy_kernels.lrn_forward`.

    Returns
    -------
    y, scale : ndarray, shape and dtype of ``x``
    """
    if x.size == 0:
        return numpy_kernels.lrn_forward(x, size, alpha, beta, k)
    terms = lrn_terms(x.dtype, size, alpha, beta, k)
    y, scale = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    _lrn_forward(_rows(x), terms.before, terms.after, _lrn_constants(x.dtype, terms), beta == 0.75,
                 _rows(y), _rows(scale))
    return y, scale


@njit(**_JIT)
def _lrn_backward(gy, x, y, scale, before, after, consts, three_quarters, gx):
    minus_beta, coef, zero, one = consts[2], consts[3], consts[4], consts[5]
    rows, c = gy.shape
    for block in prange((rows + _LRN_BLOCK - 1) // _LRN_BLOCK):
        ratio = np.empty(c, gy.dtype)
        power = np.empty(c, gy.dtype)
        for r in range(block * _LRN_BLOCK, min(rows, (block + 1) * _LRN_BLOCK)):
            gyr, xr, yr, sr, gxr = gy[r], x[r], y[r], scale[r], gx[r]
            for ch in range(c):
                ratio[ch] = gyr[ch] * yr[ch] / sr[ch]
            _window_sum_row(ratio, after, before, zero, gxr)  # the transposed window: the spread, in gx for now
            _inverse_power_row(sr, minus_beta, one, three_quarters, power)
            for ch in range(c):
                gxr[ch] = gyr[ch] * power[ch] - coef * xr[ch] * gxr[ch]


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    """Backward of :func:`lrn_forward`, one pass per pixel; see :func:`numpy_kernels.lrn_backward`.

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    if gy.size == 0:
        return numpy_kernels.lrn_backward(gy, x, y, scale, size, alpha, beta)
    terms = lrn_terms(gy.dtype, size, alpha, beta)
    gx = np.empty(gy.shape, gy.dtype)
    _lrn_backward(_rows(gy), _rows(x), _rows(y), _rows(scale), terms.before, terms.after,
                  _lrn_constants(gy.dtype, terms), beta == 0.75, _rows(gx))
    return gx
