"""The hot kernels compiled with Numba: same functions, signatures and results as :mod:`numpy_kernels`.

Each kernel is a thin Python wrapper (argument checks, output allocation in the input's dtype) around an
``@njit(parallel=True, cache=True)`` loop nest. Parallel loops (``prange``) run over a *safe* axis: every
thread writes only the output rows it owns, so there are no races and no atomics, and the results do not
depend on the number of threads.

* forward kernels (im2col, max/avg pool) run over output rows ``(n, i)``;
* backward kernels (col2im, max/avg pool backward) run over *input* rows ``(n, y)``: each input row gathers
  the contributions of the windows that cover it, in the same (a, b) order as the NumPy reference (so the
  sums are the reference's bit for bit);
* ReLU backward runs over rows of the last axis; the fused bias + ReLU kernels over fixed blocks of rows,
  the bias gradient as per-block partial sums added in block order;
* LRN forward and backward run over blocks of pixels, each pixel owning its row of channels.

The inner loops run over the channels (the contiguous axis) with branch-free selects and indices that start
at 0, so that LLVM vectorises them. A conditional store stops it, and so does an index LLVM cannot prove
non-negative (such as ``base + t``: Numba wraps negative indices), which measured 3x slower on a plain add.

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
from .common import argmax_dtype, lrn_terms, pool_counts, window_output_hw

_JIT = dict(parallel=True, cache=True, nogil=True)


# --------------------------------------------------------------------------------------- im2col
# A window row (a fixed a) of an output cell (i, j) is kw·C consecutive values in ``cols`` and, when the window
# lies inside the image along the width, kw·C consecutive values of an input row too: one contiguous copy,
# which vectorises even for conv1's C = 3 (3.4x faster there than a copy per cell). The kernel sees the arrays
# as 2-D rows: x as (N·H, W·C) and cols as (N·Ho·Wo·kh, kw·C). (col2im written the same way, as contiguous
# adds, measured no faster than the gather below, so it stays as it was.)
@njit(**_JIT)
def _im2col(x, n, h, w, c, kh, kw, sh, sw, top, left, ho, wo, pad_value, out):
    run = kw * c
    for r in prange(n * ho):
        img, i = r // ho, r % ho
        for j in range(wo):
            x0 = j * sw - left
            inside = x0 >= 0 and x0 + kw <= w
            for a in range(kh):
                dst = out[((img * ho + i) * wo + j) * kh + a]  # views: the loops index from 0, which vectorises
                y = i * sh + a - top
                if y < 0 or y >= h:
                    for t in range(run):
                        dst[t] = pad_value
                elif inside:
                    src = x[img * h + y, x0 * c:x0 * c + run]
                    for t in range(run):
                        dst[t] = src[t]
                else:
                    for b in range(kw):
                        xx = x0 + b
                        cell = dst[b * c:(b + 1) * c]
                        if 0 <= xx < w:
                            src = x[img * h + y, xx * c:(xx + 1) * c]
                            for ch in range(c):
                                cell[ch] = src[ch]
                        else:
                            for ch in range(c):
                                cell[ch] = pad_value


def im2col(x, kh, kw, sh, sw, pads, pad_value=0.0):
    """Gather every (kh, kw) window of ``x`` into one row; see :func:`numpy_kernels.im2col`.

    Parallel over output rows (n, i); each window row is one contiguous copy of kw·C values where the
    window lies inside the image.

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
    if out.size:
        _im2col(x.reshape(n * h, w * c), n, h, w, c, kh, kw, sh, sw, pads[0], pads[2], ho, wo,
                x.dtype.type(pad_value), out.reshape(n * ho * wo * kh, kw * c))
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
    # x: (N*H*W, C); y, argmax: (N*Ho*Wo, C): each (row, channel) loop below is branch-free and vectorises.
    # The winner is tracked in an int32 row (a select between int32 and a float32 compare vectorises; one
    # into int8 does not) and stored once per output cell in argmax's own (smaller) type.
    c = x.shape[1]
    for r in prange(n * ho):
        img, i = r // ho, r % ho
        won = np.empty(c, np.int32)
        for j in range(wo):
            out = (img * ho + i) * wo + j
            for ch in range(c):
                y[out, ch] = -np.inf
                won[ch] = 0
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
                        won[ch] = k if better else won[ch]
            for ch in range(c):
                argmax[out, ch] = won[ch]


def maxpool_forward(x, ph, pw, sh, sw, pads):
    """Max pooling with −inf padding and the window-local argmax ``a * pw + b`` (first max wins; a window
    holding NaN gives NaN, its argmax the first NaN, as :func:`numpy_kernels.maxpool_forward`).

    Returns
    -------
    y : ndarray, shape (N, Ho, Wo, C), dtype of ``x``
    argmax : ndarray of int8 (int32 for windows of more than 127 cells), shape (N, Ho, Wo, C)
        The smallest integer type that holds ``ph·pw − 1``: the argmax is kept for backward, and int8 keeps a
        quarter of what int32 would (GoogLeNet's max pools: 11 MiB instead of 43 MiB at batch 8).
    """
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    argmax = np.empty((n, ho, wo, c), dtype=argmax_dtype(ph, pw))
    _maxpool_forward(x.reshape(-1, c), n, h, w, ph, pw, sh, sw, pads[0], pads[2], ho, wo,
                     y.reshape(-1, c), argmax.reshape(-1, c))
    return y, argmax


# Max-pool backward. The natural scatter (each output cell adds its gradient to the one cell its argmax names)
# is a scalar read-modify-write per element at a data-dependent address; on a 2-core Zen 3 it measured 2.3x
# slower than this gather, whose inner loop over the channels is a branch-free select that vectorises:
# gx[p, c] += (argmax[o, c] == a*pw + b) ? gy[o, c] : 0 for the few windows o that cover p (at most
# ceil(ph/sh)·ceil(pw/sw)). The old gather had `if argmax == k: gx += gy`, a conditional store that does not.
@njit(**_JIT)
def _maxpool_backward(gy, argmax, n, h, w, ho, wo, ph, pw, sh, sw, top, left, zero, cells, gx):
    # gy, argmax: (N*Ho*Wo, C); gx: (N*H*W, C)
    c = gx.shape[1]
    for r in prange(n * h):  # input row (img, y): no two iterations write the same cell
        img, y = r // h, r % h
        for xx in range(w):
            p = r * w + xx
            for ch in range(c):
                gx[p, ch] = zero
            for a in range(ph):  # windows i with i*sh + a - top == y, in the reference's (a, b) order
                t = y + top - a
                if t < 0 or t % sh != 0 or t // sh >= ho:
                    continue
                for b in range(pw):
                    u = xx + left - b
                    if u < 0 or u % sw != 0 or u // sw >= wo:
                        continue
                    o = (img * ho + t // sh) * wo + u // sw
                    k = cells[a * pw + b]  # in argmax's own type, so the channel loop vectorises
                    for ch in range(c):
                        g = gy[o, ch]
                        gx[p, ch] += g if argmax[o, ch] == k else zero


def maxpool_backward(gy, argmax, x_shape, ph, pw, sh, sw, pads):
    """Route each output gradient to the cell that won its window; see :func:`numpy_kernels.maxpool_backward`.

    .. math:: gx_{n,y,x,c} = \\sum_{(i, a):\\, i s_h + a - top = y} \\; \\sum_{(j, b):\\, j s_w + b - left = x}
              [\\mathrm{argmax}_{n,i,j,c} = a \\cdot pw + b] \\; gy_{n,i,j,c}

    Parallel over input rows (n, y); each cell starts at zero and adds its windows' selected gradients in
    the reference's (a, b) order, so the result is the reference's bit for bit and does not depend on the
    number of threads.

    Parameters
    ----------
    gy : ndarray, shape (N, Ho, Wo, C)
    argmax : ndarray of integers (int8 or int32), shape (N, Ho, Wo, C)
        ``a * pw + b`` of each window's winning cell, from :func:`maxpool_forward`.
    x_shape : (N, H, W, C)

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    n, h, w, c = x_shape
    gy = np.ascontiguousarray(gy)
    argmax = np.ascontiguousarray(argmax)
    if argmax.dtype.kind not in "iu":
        argmax = argmax.astype(np.int32)
    gx = np.empty(tuple(x_shape), dtype=gy.dtype)
    if gx.size:
        ho, wo = gy.shape[1], gy.shape[2]
        _maxpool_backward(gy.reshape(-1, c), argmax.reshape(-1, c), n, h, w, ho, wo, ph, pw, sh, sw, pads[0],
                          pads[2], gy.dtype.type(0), np.arange(ph * pw, dtype=argmax.dtype), gx.reshape(-1, c))
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


# Bias + ReLU forward and backward. Parallel over fixed blocks of rows (the leading axes flattened); the bias
# gradient is summed per block, then the blocks' partial sums are added in block order, so its value depends
# on the block size only, never on the number of threads.
_BIAS_ROWS = 256  # rows per parallel task
# Below this many elements the NumPy reference is faster: a parallel launch costs ~50 µs (measured on 2 cores),
# NumPy's two passes over a (8, 1000) Dense output ~10 µs.
_NUMPY_BELOW = 1 << 16


@njit(**_JIT)
def _bias_relu_forward(z, bias, relu, zero):
    rows, c = z.shape
    for block in prange((rows + _BIAS_ROWS - 1) // _BIAS_ROWS):
        for r in range(block * _BIAS_ROWS, min(rows, (block + 1) * _BIAS_ROWS)):
            zr = z[r]
            if relu:  # max(v, 0) as np.maximum: NaN stays NaN, and -0 becomes +0
                for ch in range(c):
                    v = zr[ch] + bias[ch]
                    zr[ch] = v if (v > zero) | (v != v) else zero
            else:
                for ch in range(c):
                    zr[ch] += bias[ch]


@njit(**_JIT)
def _relu_forward(z, zero):
    rows, c = z.shape
    for block in prange((rows + _BIAS_ROWS - 1) // _BIAS_ROWS):
        for r in range(block * _BIAS_ROWS, min(rows, (block + 1) * _BIAS_ROWS)):
            zr = z[r]
            for ch in range(c):
                v = zr[ch]
                zr[ch] = v if (v > zero) | (v != v) else zero


def bias_relu_forward(z, bias, relu):
    """``z ← max(z + b, 0)`` in place, one parallel pass; see :func:`numpy_kernels.bias_relu_forward`.

    .. math:: z_{\\ldots k} \\leftarrow \\max(z_{\\ldots k} + b_k,\\ 0)

    Parameters
    ----------
    z : ndarray, shape (..., K)
        Overwritten. A z of fewer than ``_NUMPY_BELOW`` (65536) elements, one that is not C-contiguous, or a
        bias of another dtype takes the reference's NumPy expressions (in place as well).
    bias : ndarray, shape (K,), or None
    relu : bool

    Returns
    -------
    z : ndarray
        The argument itself.
    """
    if bias is None and not relu:
        return z
    if (z.size < _NUMPY_BELOW or z.ndim == 0 or not z.flags.c_contiguous
            or (bias is not None and (bias.dtype != z.dtype or bias.shape != z.shape[-1:]))):
        return numpy_kernels.bias_relu_forward(z, bias, relu)
    rows = z.reshape(-1, z.shape[-1])
    if bias is None:
        _relu_forward(rows, z.dtype.type(0))
    else:
        _bias_relu_forward(rows, np.ascontiguousarray(bias), relu, z.dtype.type(0))
    return z


@njit(**_JIT)
def _relu_bias_backward(gy, y, relu, want_bias, zero, one, gz, partial):
    rows, c = gy.shape
    for block in prange((rows + _BIAS_ROWS - 1) // _BIAS_ROWS):
        acc = partial[block]
        for ch in range(c):
            acc[ch] = zero
        for r in range(block * _BIAS_ROWS, min(rows, (block + 1) * _BIAS_ROWS)):
            gyr = gy[r]
            if relu:
                yr, gzr = y[r], gz[r]
                if want_bias:
                    for ch in range(c):  # a product, as the reference: NaN or inf in gy stays NaN where y <= 0
                        g = gyr[ch] * (one if yr[ch] > 0 else zero)
                        gzr[ch] = g
                        acc[ch] += g
                else:
                    for ch in range(c):
                        gzr[ch] = gyr[ch] * (one if yr[ch] > 0 else zero)
            elif want_bias:
                for ch in range(c):
                    acc[ch] += gyr[ch]
    if want_bias:  # the blocks' partial sums, in block order
        total = partial[0]
        for block in range(1, partial.shape[0]):
            for ch in range(c):
                total[ch] += partial[block, ch]


def relu_bias_backward(gy, y, relu, want_bias):
    """``gz = gy · [y > 0]`` and ``gbias = Σ_rows gz`` in one parallel pass; see
    :func:`numpy_kernels.relu_bias_backward`.

    .. math:: gz = gy \\cdot [y > 0], \\qquad gb_k = \\sum_{\\text{all leading indices}} gz_{\\ldots k}

    The bias gradient sums blocks of 256 rows in row order, in the dtype of ``gy`` (as NumPy does), then the
    blocks' sums in block order: the result does not depend on the number of threads. Arrays of fewer than
    ``_NUMPY_BELOW`` (65536) elements take the reference (NumPy is faster than waking the threads there).

    Parameters
    ----------
    gy, y : ndarray, shape (..., K)
    relu, want_bias : bool

    Returns
    -------
    gz : ndarray, shape and dtype of ``gy`` (``gy`` itself without ``relu``)
    gbias : ndarray, shape (K,), dtype of ``gy``, or None without ``want_bias``
    """
    if not relu and not want_bias:
        return gy, None
    if gy.size < _NUMPY_BELOW or gy.ndim == 0 or (relu and gy.shape != y.shape):
        return numpy_kernels.relu_bias_backward(gy, y, relu, want_bias)
    c = gy.shape[-1]
    rows = np.ascontiguousarray(gy).reshape(-1, c)
    partial = np.empty(((rows.shape[0] + _BIAS_ROWS - 1) // _BIAS_ROWS, c), gy.dtype)
    if relu:
        gz = np.empty(gy.shape, gy.dtype)
        y_rows, gz_rows = np.ascontiguousarray(y).reshape(-1, c), gz.reshape(-1, c)
    else:
        gz, y_rows, gz_rows = gy, rows, rows  # gz is gy: only the sum is computed
    _relu_bias_backward(rows, y_rows, relu, want_bias, gy.dtype.type(0), gy.dtype.type(1), gz_rows, partial)
    return gz, (partial[0].copy() if want_bias else None)


# --------------------------------------------------------------------------------------------- LRN
# Each parallel task takes a block of pixels (rows of C channels) and one scratch row: the row's squares (or,
# backward, its ratios) with zeros on both sides, so the window sum of channel c is the plain sum of
# scratch[c .. c + size - 1] in increasing order, as the reference's padded sum: the same float32 result, bit
# for bit, with no bounds tests, and loops over the channels that vectorise. The window sum is added term by
# term in the scratch row (direct sums, not a running sum, which would drift in float32); for the paper's
# size 5 it is one pass of five terms, fused with what follows.
#
# The power s^(-beta): for the paper's beta = 0.75 it is 1 / (√s · √√s), two square roots and a division,
# which vectorise, instead of a scalar pow. It differs from NumPy's power by an ulp or two, far inside the
# backends' agreement tolerances.
_LRN_ROWS = 64  # pixels per parallel task


@njit(**_JIT)
def _lrn_forward(x, before, after, consts, three_quarters, y, scale):
    k, alpha_over_size, minus_beta, zero, one = consts[0], consts[1], consts[2], consts[4], consts[5]
    rows, c = x.shape
    width = before + after + 1
    for block in prange((rows + _LRN_ROWS - 1) // _LRN_ROWS):
        sq = np.empty(c + width - 1, x.dtype)  # squares of one row, after `before` zeros and before `after`
        for t in range(before):
            sq[t] = zero
        for t in range(before + c, c + width - 1):
            sq[t] = zero
        body = sq[before:before + c]
        for r in range(block * _LRN_ROWS, min(rows, (block + 1) * _LRN_ROWS)):
            xr, sr, yr = x[r], scale[r], y[r]
            for ch in range(c):
                body[ch] = xr[ch] * xr[ch]
            if width == 5:
                s0, s1, s2, s3, s4 = sq[0:c], sq[1:1 + c], sq[2:2 + c], sq[3:3 + c], sq[4:4 + c]
                for ch in range(c):
                    sr[ch] = k + alpha_over_size * ((((s0[ch] + s1[ch]) + s2[ch]) + s3[ch]) + s4[ch])
            else:
                for ch in range(c):
                    sr[ch] = sq[ch]
                for d in range(1, width):
                    for ch in range(c):
                        sr[ch] += sq[ch + d]
                for ch in range(c):
                    sr[ch] = k + alpha_over_size * sr[ch]
            if three_quarters:
                for ch in range(c):
                    q = np.sqrt(sr[ch])
                    yr[ch] = xr[ch] * (one / (q * np.sqrt(q)))
            else:
                for ch in range(c):
                    yr[ch] = xr[ch] * sr[ch] ** minus_beta


def _lrn_constants(dtype, terms):
    """k, alpha/size, −beta, 2·alpha·beta/size (:func:`~tinynet.kernels.common.lrn_terms`), 0 and 1, as one
    array of ``dtype`` (so that the jitted loops compute in ``dtype``)."""
    return np.array([terms.k, terms.alpha_over_size, terms.minus_beta, terms.coef, 0.0, 1.0], dtype=dtype)


def _rows(a):
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across channels, one pass per pixel; see :func:`numpy_kernels.lrn_forward`.

    .. math:: s_c = k + \\frac{\\alpha}{size} \\sum_{j = c - before}^{c + after} x_j^2, \\qquad
              y_c = x_c\\, s_c^{-\\beta}

    Parallel over blocks of 64 pixels; ``scale`` is the reference's bit for bit, ``y`` within an ulp or two.

    Parameters
    ----------
    x : ndarray, shape (..., C)
    size : int
    alpha, beta, k : float

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
    width = before + after + 1
    for block in prange((rows + _LRN_ROWS - 1) // _LRN_ROWS):
        ratio = np.empty(c + width - 1, gy.dtype)  # gy·y/s of one row, after `after` zeros and before `before`
        for t in range(after):
            ratio[t] = zero
        for t in range(after + c, c + width - 1):
            ratio[t] = zero
        body = ratio[after:after + c]
        power = np.empty(c, gy.dtype)
        for r in range(block * _LRN_ROWS, min(rows, (block + 1) * _LRN_ROWS)):
            gyr, xr, yr, sr, gxr = gy[r], x[r], y[r], scale[r], gx[r]
            for ch in range(c):
                body[ch] = gyr[ch] * yr[ch] / sr[ch]
            if three_quarters:
                for ch in range(c):
                    q = np.sqrt(sr[ch])
                    power[ch] = one / (q * np.sqrt(q))
            else:
                for ch in range(c):
                    power[ch] = sr[ch] ** minus_beta
            if width == 5:  # the transposed window's sum (the spread), fused with the gradient
                r0, r1, r2, r3, r4 = ratio[0:c], ratio[1:1 + c], ratio[2:2 + c], ratio[3:3 + c], ratio[4:4 + c]
                for ch in range(c):
                    spread = (((r0[ch] + r1[ch]) + r2[ch]) + r3[ch]) + r4[ch]
                    gxr[ch] = gyr[ch] * power[ch] - coef * xr[ch] * spread
            else:  # the spread summed in gx, then the gradient
                for ch in range(c):
                    gxr[ch] = ratio[ch]
                for d in range(1, width):
                    for ch in range(c):
                        gxr[ch] += ratio[ch + d]
                for ch in range(c):
                    gxr[ch] = gyr[ch] * power[ch] - coef * xr[ch] * gxr[ch]


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    """Backward of :func:`lrn_forward`, one pass per pixel; see :func:`numpy_kernels.lrn_backward`.

    .. math:: gx_i = gy_i\\, s_i^{-\\beta} - \\frac{2 \\alpha \\beta}{size}\\, x_i
              \\sum_{j = i - after}^{i + before} \\frac{gy_j\\, y_j}{s_j}

    Parallel over blocks of 64 pixels.

    Parameters
    ----------
    gy, x, y, scale : ndarray, shape (..., C)
        The gradient of ``y``, and the input and both outputs of :func:`lrn_forward`.

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
