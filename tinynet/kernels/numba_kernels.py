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
* batch normalisation sums each channel over the rows in row order (as NumPy), in parallel over blocks of
  channels; its element-wise passes run over blocks of rows.

The inner loops run over the channels (the contiguous axis) with branch-free selects and indices that start
at 0, so that LLVM vectorises them. A conditional store stops it, and so does an index LLVM cannot prove
non-negative (such as ``base + t``: Numba wraps negative indices), which measured 3x slower on a plain add.

The first call of a kernel for a dtype compiles it (cached on disk afterwards), so benchmarks warm up
first. float32 inputs stay float32 throughout.

Threads: unless ``NUMBA_THREADING_LAYER`` says otherwise, the kernels use Numba's ``workqueue`` layer, whose
threads sleep between parallel regions. The OpenMP layer's threads keep spinning after each region and take
the cores away from the BLAS matrix products that follow. Waking the sleeping threads is what a parallel
region costs, and on this project's 2-core virtual machine it costs more than small work: an im2col of a
32×32 one-channel image took 358 µs (median 997) with the threads against 18 µs on the calling thread. So
each loop nest is compiled twice (:class:`_Kernel`), with threads and without (``prange`` then runs as
``range``), and a call takes the threads only when its largest array is large enough for them to pay
(:data:`MEMORY_BOUND`, :data:`COMPUTE_BOUND`). The two give the same bits: the parallel loops already do not
depend on the number of threads.
"""
from __future__ import annotations

import os
import types

from . import numba_environment_problem

if numba_environment_problem() is not None:  # numba's own import would fail with a line that names no variable
    raise ValueError(numba_environment_problem())

import numba  # noqa: E402
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from . import numpy_kernels
from .common import (argmax_dtype, lrn_safe_scales, lrn_terms, pool_counts, window_output_hw, winograd_constants,
                     winograd_input_tiles, winograd_rows_a, winograd_rows_at, winograd_rows_bt, winograd_tiles)

_JIT = dict(parallel=True, cache=True, nogil=True)

#: A kernel that mostly moves memory (im2col, col2im, the element-wise passes, max-pool backward, batch
#: normalisation, the Winograd transforms) wakes Numba's threads only for a call whose largest array has at
#: least this many elements. On this project's 2-core virtual machine one core nearly saturates the memory:
#: timed on every call of a paper GoogLeNet train step at batch 8, one thread was as fast or faster up to
#: 6.4 M elements (im2col of conv1, 14.7 M: 18.0 against 18.6 ms), and on the small GoogLeNet's calls (all
#: under 1.2 M) the threads took twice as long.
MEMORY_BOUND = 1 << 24
#: A kernel that computes more than it moves (max-pool forward, LRN) takes the threads from this many elements:
#: its one-thread build runs 3-4 times slower than its threaded one, but waking the threads is slower still on
#: the smallest calls (max pooling of the small GoogLeNet: 26 K elements, 0.07 against 0.10 ms a call; from
#: 61 K elements the threads were faster; timed as above).
COMPUTE_BOUND = 1 << 16


def _renamed(func, suffix):
    """A copy of the Python function ``func`` under another name (its own entry in Numba's disk cache)."""
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix, func.__defaults__,
                              func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__doc__ = func.__doc__
    return copy


class _Kernel:
    """One loop nest compiled twice: ``parallel`` shares its ``prange`` loop among Numba's threads, ``serial``
    runs it on the calling thread (``prange`` as ``range``). A call takes ``parallel`` when its largest array
    argument has at least ``parallel_from`` elements and Numba has more than one thread, else ``serial``; the
    two give the same bits (the loops do not depend on the number of threads)."""

    #: ``'serial'`` or ``'parallel'`` runs every kernel that way (for tests); ``None`` chooses by size
    forced = None

    def __init__(self, func, parallel_from):
        self.parallel = njit(**_JIT)(func)
        self.serial = njit(cache=True, nogil=True)(_renamed(func, "_serial"))
        self.parallel_from = parallel_from
        self.__name__, self.__doc__ = func.__name__, func.__doc__

    def __call__(self, *args):
        way = _Kernel.forced
        if way is None:
            work = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
            way = "parallel" if work >= self.parallel_from and numba.get_num_threads() > 1 else "serial"
        return getattr(self, way)(*args)


def _kernel(parallel_from):
    """Decorator: the loop nest as a :class:`_Kernel` that wakes the threads from ``parallel_from`` elements."""
    return lambda func: _Kernel(func, parallel_from)


# --------------------------------------------------------------------------------------- im2col
# A window row (a fixed a) of an output cell (i, j) is kw·C consecutive values in ``cols`` and, when the window
# lies inside the image along the width, kw·C consecutive values of an input row too: one contiguous copy,
# which vectorises even for conv1's C = 3 (3.4x faster there than a copy per cell). The kernel sees the arrays
# as 2-D rows: x as (N·H, W·C) and cols as (N·Ho·Wo·kh, kw·C). (col2im written the same way, as contiguous
# adds, measured no faster than the gather below, so it stays as it was.)
@_kernel(MEMORY_BOUND)
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
@_kernel(MEMORY_BOUND)
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
@_kernel(COMPUTE_BOUND)
def _maxpool_forward(x, n, h, w, ph, pw, sh, sw, top, left, ho, wo, y, argmax):
    # x: (N*H*W, C); y, argmax: (N*Ho*Wo, C): each (row, channel) loop below is branch-free and vectorises.
    # The winner is tracked in an int32 row (a select between int32 and a float32 compare vectorises; one
    # into int8 does not) and stored once per output cell in argmax's own (smaller) type. It starts at the
    # window's first real cell (common.first_real_cells), so all −inf real cells name that one, not padding.
    c = x.shape[1]
    for r in prange(n * ho):
        img, i = r // ho, r % ho
        won = np.empty(c, np.int32)
        a0 = max(top - i * sh, 0)
        for j in range(wo):
            out = (img * ho + i) * wo + j
            first = np.int32(a0 * pw + max(left - j * sw, 0))
            for ch in range(c):
                y[out, ch] = -np.inf
                won[ch] = first
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
    holding NaN gives NaN, its argmax the first NaN; one whose real cells are all −inf names its first real
    cell; as :func:`numpy_kernels.maxpool_forward`).

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
@_kernel(MEMORY_BOUND)
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
@_kernel(MEMORY_BOUND)
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


@_kernel(MEMORY_BOUND)
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
@_kernel(MEMORY_BOUND)
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
# Below this many elements the fused kernels hand over to the NumPy reference: NumPy's two passes over a
# (8, 1000) Dense output take ~10 µs. (Chosen when a launch always woke the threads; with the one-thread build
# below 16 M elements the two measured the same on the small GoogLeNet: 63 and 64 ms a train step, median.)
_NUMPY_BELOW = 1 << 16


@_kernel(MEMORY_BOUND)
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


@_kernel(MEMORY_BOUND)
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


@_kernel(MEMORY_BOUND)
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
    ``_NUMPY_BELOW`` (65536) elements take the reference.

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
#
# float32: the loop that takes the power also notes whether a scale falls outside common.lrn_safe_scales (an
# or of three compares, vectorised with it), and each task stores one flag for its block of rows. After the
# parallel pass the rows of the flagged blocks, if any, compute their unsafe elements again in float64, as the
# reference does (_lrn_forward_rows64, _lrn_backward_rows64): the same sums in the same order, so the scales
# agree with the reference's bit for bit there too. Such rows need |x| ~ 1e11 for the paper's LRN: they never
# slow a real network down. (Timed at batch 8 on 56×56×64: a flag per block costs 0-10%, about the noise;
# a flag per row 15-25%, and a call of the float64 code inside the parallel loop 35%.)
_LRN_ROWS = 64  # pixels per parallel task


@njit(cache=True, nogil=True)
def _lrn_forward_row64(xr, before, after, consts64, lo, hi, yr, sr):
    """One row's elements whose float32 scale ``sr`` is outside [lo, hi], in float64; ``consts64`` k,
    alpha/size, −beta (float32's, widened)."""
    k, alpha_over_size, minus_beta = consts64[0], consts64[1], consts64[2]
    c = xr.shape[0]
    width = before + after + 1
    if ((sr >= lo) & (sr <= hi)).all():
        return
    sq = np.zeros(c + width - 1, np.float64)  # the squares, after `before` zeros and before `after`
    for ch in range(c):
        v = np.float64(xr[ch])
        sq[before + ch] = v * v
    for ch in range(c):
        s = sr[ch]
        if (s >= lo) & (s <= hi):
            continue
        total = sq[ch]
        for d in range(1, width):
            total += sq[ch + d]
        s64 = k + alpha_over_size * total
        sr[ch] = s64  # rounded to float32 (inf above its largest value)
        yr[ch] = np.float64(xr[ch]) * s64 ** minus_beta


@njit(cache=True, nogil=True)
def _lrn_forward_rows64(x, blocks, before, after, consts64, lo, hi, y, scale):
    """:func:`_lrn_forward_row64` on every row of the flagged ``blocks`` of _LRN_ROWS rows."""
    for block in blocks:
        for r in range(block * _LRN_ROWS, min(x.shape[0], (block + 1) * _LRN_ROWS)):
            _lrn_forward_row64(x[r], before, after, consts64, lo, hi, y[r], scale[r])


@_kernel(COMPUTE_BOUND)
def _lrn_forward(x, before, after, consts, three_quarters, y, scale, unsafe_blocks):
    k, alpha_over_size, minus_beta, zero, one = consts[0], consts[1], consts[2], consts[4], consts[5]
    lo, hi = consts[6], consts[7]
    rows, c = x.shape
    width = before + after + 1
    for block in prange((rows + _LRN_ROWS - 1) // _LRN_ROWS):
        sq = np.empty(c + width - 1, x.dtype)  # squares of one row, after `before` zeros and before `after`
        for t in range(before):
            sq[t] = zero
        for t in range(before + c, c + width - 1):
            sq[t] = zero
        body = sq[before:before + c]
        unsafe = False  # a scale outside [lo, hi] in the block
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
                    s = sr[ch]
                    q = np.sqrt(s)
                    yr[ch] = xr[ch] * (one / (q * np.sqrt(q)))
                    unsafe |= (s < lo) | (s > hi) | (s != s)
            else:
                for ch in range(c):
                    s = sr[ch]
                    yr[ch] = xr[ch] * s ** minus_beta
                    unsafe |= (s < lo) | (s > hi) | (s != s)
        unsafe_blocks[block] = unsafe


def _lrn_constants(dtype, terms, beta):
    """k, alpha/size, −beta, 2·alpha·beta/size (:func:`~tinynet.kernels.common.lrn_terms`), 0, 1 and the safe
    scales' bounds (:func:`~tinynet.kernels.common.lrn_safe_scales`), as one array of ``dtype`` (so that the
    jitted loops compute in ``dtype``); and the first four widened to float64 (the unsafe elements' formula)."""
    consts = np.array([terms.k, terms.alpha_over_size, terms.minus_beta, terms.coef, 0.0, 1.0,
                       *lrn_safe_scales(dtype, beta)], dtype=dtype)
    return consts, consts[:4].astype(np.float64)


def _rows(a):
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across channels, one pass per pixel; see :func:`numpy_kernels.lrn_forward`.

    .. math:: s_c = k + \\frac{\\alpha}{size} \\sum_{j = c - before}^{c + after} x_j^2, \\qquad
              y_c = x_c\\, s_c^{-\\beta}

    Parallel over blocks of 64 pixels; ``scale`` is the reference's bit for bit, ``y`` within an ulp or two.
    In float32, the elements whose scale is outside :func:`~tinynet.kernels.common.lrn_safe_scales` are
    computed again in float64, as in the reference.

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
    consts, consts64 = _lrn_constants(x.dtype, terms, beta)
    x_rows, y_rows, scale_rows = _rows(x), _rows(y), _rows(scale)
    unsafe = np.empty((x_rows.shape[0] + _LRN_ROWS - 1) // _LRN_ROWS, np.bool_)
    _lrn_forward(x_rows, terms.before, terms.after, consts, beta == 0.75, y_rows, scale_rows, unsafe)
    if x.dtype == np.float32 and unsafe.any():
        _lrn_forward_rows64(x_rows, np.flatnonzero(unsafe), terms.before, terms.after, consts64, consts[6],
                            consts[7], y_rows, scale_rows)
    return y, scale


@njit(cache=True, nogil=True)
def _lrn_backward_row64(gyr, xr, yr, sr, before, after, consts64, lo, hi, gxr):
    """One row's elements whose transposed window holds a float32 scale outside [lo, hi], in float64 (see
    :func:`numpy_kernels.lrn_backward`); ``consts64`` k, alpha/size, −beta, coef (float32's, widened)."""
    alpha_over_size, minus_beta, coef = consts64[1], consts64[2], consts64[3]
    c = gyr.shape[0]
    width = before + after + 1
    if ((sr >= lo) & (sr <= hi)).all():
        return
    s64 = np.empty(c, np.float64)
    ratio = np.zeros(c + width - 1, np.float64)  # gy·y/s, after `after` zeros and before `before`
    over = False
    for ch in range(c):
        s64[ch] = sr[ch]
        over |= np.isinf(sr[ch])
    if over:  # an inf scale (float32's overflowed): alpha/size · Σ x² again, in float64
        sq = np.zeros(c + width - 1, np.float64)
        for ch in range(c):
            v = np.float64(xr[ch])
            sq[before + ch] = v * v
        for ch in range(c):
            if np.isinf(sr[ch]):
                total = sq[ch]
                for d in range(1, width):
                    total += sq[ch + d]
                s64[ch] = alpha_over_size * total
    for ch in range(c):
        ratio[after + ch] = np.float64(gyr[ch]) * np.float64(yr[ch]) / s64[ch]
    for ch in range(c):
        near = False  # an unsafe scale among the s_j of gx_i: j in [ch − after, ch + before]
        for j in range(max(ch - after, 0), min(ch + before + 1, c)):
            s = sr[j]
            near |= not ((s >= lo) & (s <= hi))
        if near:
            spread = ratio[ch]
            for d in range(1, width):
                spread += ratio[ch + d]
            gxr[ch] = np.float64(gyr[ch]) * s64[ch] ** minus_beta - coef * np.float64(xr[ch]) * spread


@njit(cache=True, nogil=True)
def _lrn_backward_rows64(gy, x, y, scale, blocks, before, after, consts64, lo, hi, gx):
    """:func:`_lrn_backward_row64` on every row of the flagged ``blocks`` of _LRN_ROWS rows."""
    for block in blocks:
        for r in range(block * _LRN_ROWS, min(gy.shape[0], (block + 1) * _LRN_ROWS)):
            _lrn_backward_row64(gy[r], x[r], y[r], scale[r], before, after, consts64, lo, hi, gx[r])


@_kernel(COMPUTE_BOUND)
def _lrn_backward(gy, x, y, scale, before, after, consts, three_quarters, gx, unsafe_blocks):
    minus_beta, coef, zero, one = consts[2], consts[3], consts[4], consts[5]
    lo, hi = consts[6], consts[7]
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
        unsafe = False  # a scale outside [lo, hi] in the block, as forward
        for r in range(block * _LRN_ROWS, min(rows, (block + 1) * _LRN_ROWS)):
            gyr, xr, yr, sr, gxr = gy[r], x[r], y[r], scale[r], gx[r]
            for ch in range(c):
                body[ch] = gyr[ch] * yr[ch] / sr[ch]
            if three_quarters:
                for ch in range(c):
                    s = sr[ch]
                    q = np.sqrt(s)
                    power[ch] = one / (q * np.sqrt(q))
                    unsafe |= (s < lo) | (s > hi) | (s != s)
            else:
                for ch in range(c):
                    s = sr[ch]
                    power[ch] = s ** minus_beta
                    unsafe |= (s < lo) | (s > hi) | (s != s)
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
        unsafe_blocks[block] = unsafe


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    """Backward of :func:`lrn_forward`, one pass per pixel; see :func:`numpy_kernels.lrn_backward`.

    .. math:: gx_i = gy_i\\, s_i^{-\\beta} - \\frac{2 \\alpha \\beta}{size}\\, x_i
              \\sum_{j = i - after}^{i + before} \\frac{gy_j\\, y_j}{s_j}

    Parallel over blocks of 64 pixels. In float32, the elements whose transposed window holds a scale outside
    :func:`~tinynet.kernels.common.lrn_safe_scales` are computed again in float64, as in the reference.

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
    consts, consts64 = _lrn_constants(gy.dtype, terms, beta)
    rows = _rows(gy), _rows(x), _rows(y), _rows(scale)
    unsafe = np.empty((rows[0].shape[0] + _LRN_ROWS - 1) // _LRN_ROWS, np.bool_)
    _lrn_backward(*rows, terms.before, terms.after, consts, beta == 0.75, _rows(gx), unsafe)
    if gy.dtype == np.float32 and unsafe.any():
        _lrn_backward_rows64(*rows, np.flatnonzero(unsafe), terms.before, terms.after, consts64, consts[6],
                             consts[7], _rows(gx))
    return gx


# ---------------------------------------------------------------------------------- batch normalisation
# The per-channel sums (the batch mean and variance forward, Σ g and Σ g·x̂ backward) run as NumPy runs a
# reduction over the leading axes: each channel's values added one row after the other, in row order, in
# the dtype of the input (so the float32 statistics are NumPy's bit for bit, not merely close). A channel's
# sum is one sequential chain, so the parallel tasks take blocks of _BN_CHANNELS channels (one AVX vector of
# float32), each summing its block over all the rows into a small local array; no sum depends on how the
# channels are split or on the number of threads. The element-wise passes run over blocks of _BIAS_ROWS rows.
# On 2 cores, (32, 32, 32, 16) float32: mean and variance 0.25 ms, normalisation 0.19 ms (NumPy: 1.4 ms for
# the mean alone, whose inner loop is only C values long).
_BN_CHANNELS = 8  # channels per task of the per-channel sums


@_kernel(MEMORY_BOUND)
def _batchnorm_statistics(x, count, mean, var):
    rows, c = x.shape
    for block in prange((c + _BN_CHANNELS - 1) // _BN_CHANNELS):
        lo = block * _BN_CHANNELS
        width = min(c, lo + _BN_CHANNELS) - lo
        acc = np.zeros(_BN_CHANNELS, x.dtype)  # local: LLVM keeps it apart from x, and the chain vectorises
        for r in range(rows):
            xr = x[r, lo:lo + width]
            for ch in range(width):
                acc[ch] += xr[ch]
        for ch in range(width):  # the sum / m in float64 and rounded once, as NumPy's mean divides by an intp
            mean[lo + ch] = acc[ch] / count
        mu = mean[lo:lo + width]
        for ch in range(width):
            acc[ch] = 0
        for r in range(rows):
            xr = x[r, lo:lo + width]
            for ch in range(width):
                d = xr[ch] - mu[ch]
                acc[ch] += d * d
        for ch in range(width):
            var[lo + ch] = acc[ch] / count


@_kernel(MEMORY_BOUND)
def _batchnorm_normalize(x, mean, inv_std, gamma, beta, y, x_hat):
    rows, c = x.shape
    for block in prange((rows + _BIAS_ROWS - 1) // _BIAS_ROWS):
        for r in range(block * _BIAS_ROWS, min(rows, (block + 1) * _BIAS_ROWS)):
            xr, hr, yr = x[r], x_hat[r], y[r]
            for ch in range(c):  # the reference's operations in its order: ((x − μ)·s)·γ + β
                h = (xr[ch] - mean[ch]) * inv_std[ch]
                hr[ch] = h
                yr[ch] = h * gamma[ch] + beta[ch]


def _same_vectors(dtype, c, *vectors):
    """Whether every vector is a ``(c,)`` array of ``dtype``."""
    return all(isinstance(v, np.ndarray) and v.dtype == dtype and v.shape == (c,) for v in vectors)


def batchnorm_forward(x, gamma, beta, mean, var, epsilon):
    """Batch normalisation over every axis but the last in three parallel passes; see
    :func:`numpy_kernels.batchnorm_forward`.

    .. math::

        μ_c = \\frac{1}{m} \\sum_r x_{rc}, \\quad σ^2_c = \\frac{1}{m} \\sum_r (x_{rc} − μ_c)^2, \\quad
        \\hat x_{rc} = \\frac{x_{rc} − μ_c}{\\sqrt{σ^2_c + ε}}, \\quad y_{rc} = \\hat x_{rc} γ_c + β_c

    In training (``mean`` and ``var`` None) one pass sums each channel's values and one its squared
    deviations (parallel over blocks of 8 channels, every channel summed in row order as NumPy does: the
    statistics are the reference's bit for bit), then one pass over blocks of rows writes ``x_hat`` and
    ``y``. An ``x`` of fewer than ``_NUMPY_BELOW`` (65536) elements or under 2 axes, or vectors that are not
    (C,) arrays of the dtype of ``x``, take the reference.

    Parameters
    ----------
    x : ndarray, shape (..., C)
    gamma, beta : ndarray, shape (C,)
    mean, var : ndarray, shape (C,), or both None (the batch statistics)
    epsilon : float

    Returns
    -------
    y, x_hat : ndarray, shape and dtype of ``x``
    mean, var, inv_std : ndarray, shape (C,)
    """
    c = x.shape[-1] if x.ndim else 0
    given = () if mean is None else (mean, var)
    if x.size < _NUMPY_BELOW or x.ndim < 2 or not _same_vectors(x.dtype, c, gamma, beta, *given):
        return numpy_kernels.batchnorm_forward(x, gamma, beta, mean, var, epsilon)
    rows = _rows(x)
    if mean is None:
        mean, var = np.empty(c, x.dtype), np.empty(c, x.dtype)
        _batchnorm_statistics(rows, float(rows.shape[0]), mean, var)
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(epsilon))  # (C,): the reference's expression
    y, x_hat = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    _batchnorm_normalize(rows, np.ascontiguousarray(mean), inv_std, np.ascontiguousarray(gamma),
                         np.ascontiguousarray(beta), y.reshape(-1, c), x_hat.reshape(-1, c))
    return y, x_hat, mean, var, inv_std


@_kernel(MEMORY_BOUND)
def _batchnorm_sums(gy, x_hat, g_gamma, g_beta):
    rows, c = gy.shape
    for block in prange((c + _BN_CHANNELS - 1) // _BN_CHANNELS):
        lo = block * _BN_CHANNELS
        width = min(c, lo + _BN_CHANNELS) - lo
        acc = np.zeros(2 * _BN_CHANNELS, gy.dtype)  # Σ g, then Σ g·x̂ (one array: 17% faster than two)
        for r in range(rows):
            gr, hr = gy[r, lo:lo + width], x_hat[r, lo:lo + width]
            for ch in range(width):
                g = gr[ch]
                acc[ch] += g
                acc[_BN_CHANNELS + ch] += g * hr[ch]
        for ch in range(width):
            g_beta[lo + ch] = acc[ch]
            g_gamma[lo + ch] = acc[_BN_CHANNELS + ch]


@_kernel(MEMORY_BOUND)
def _batchnorm_input_grad(gy, x_hat, mean_g, mean_gh, scale, training, gx):
    rows, c = gy.shape
    for block in prange((rows + _BIAS_ROWS - 1) // _BIAS_ROWS):
        for r in range(block * _BIAS_ROWS, min(rows, (block + 1) * _BIAS_ROWS)):
            gr, hr, out = gy[r], x_hat[r], gx[r]
            if training:  # the reference's operations in its order: ((g − Σg/m) − x̂·(Σg·x̂/m))·γs
                for ch in range(c):
                    out[ch] = ((gr[ch] - mean_g[ch]) - hr[ch] * mean_gh[ch]) * scale[ch]
            else:
                for ch in range(c):
                    out[ch] = gr[ch] * scale[ch]


def batchnorm_backward(gy, x_hat, gamma, inv_std, training):
    """Backward of :func:`batchnorm_forward` in two parallel passes; see :func:`numpy_kernels.batchnorm_backward`.

    .. math::

        ∂L/∂γ_c = \\sum_r g_{rc} \\hat x_{rc}, \\quad ∂L/∂β_c = \\sum_r g_{rc}, \\quad
        ∂L/∂x_{rc} = \\Big(g_{rc} − \\frac{∂L/∂β_c}{m} − \\hat x_{rc} \\frac{∂L/∂γ_c}{m}\\Big)\\, γ_c s_c
        \\text{ (training; } g_{rc} γ_c s_c \\text{ in inference)}

    One pass sums ``g`` and ``g·x̂`` per channel (blocks of 8 channels, each summed in row order, as NumPy),
    one pass over blocks of rows writes ``gx``. Arrays of fewer than ``_NUMPY_BELOW`` (65536) elements, of
    different dtypes or shapes, take the reference.

    Parameters
    ----------
    gy, x_hat : ndarray, shape (..., C)
    gamma, inv_std : ndarray, shape (C,)
    training : bool

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    g_gamma, g_beta : ndarray, shape (C,)
    """
    c = gy.shape[-1] if gy.ndim else 0
    if (gy.size < _NUMPY_BELOW or gy.ndim < 2 or x_hat.shape != gy.shape or x_hat.dtype != gy.dtype
            or not _same_vectors(gy.dtype, c, gamma, inv_std)):
        return numpy_kernels.batchnorm_backward(gy, x_hat, gamma, inv_std, training)
    g_rows, h_rows = _rows(gy), _rows(x_hat)
    g_gamma, g_beta = np.empty(c, gy.dtype), np.empty(c, gy.dtype)
    _batchnorm_sums(g_rows, h_rows, g_gamma, g_beta)
    m = g_rows.shape[0]
    scale = gamma * inv_std  # (C,) vectors: the reference's expressions
    gx = np.empty(gy.shape, gy.dtype)
    _batchnorm_input_grad(g_rows, h_rows, g_beta / m, g_gamma / m, scale, bool(training), gx.reshape(-1, c))
    return gx, g_gamma, g_beta


# ------------------------------------------------------------------- Winograd F(4×4, 3×3) (layers.conv_winograd)
# One task per tile row (n, ti); inside, per tile, the 1-D transform runs along one axis of the tile into a
# small buffer and then along the other, each time over all channels in the innermost loop (contiguous, and
# vectorised). The formulas are :mod:`common`'s, the NumPy reference's own.
# The input transform inlines its formula into the kernel's IR (25 % faster measured); the other two leave
# inlining to LLVM (as fast) and compile in half the time.
_rows_bt = njit(inline="always")(winograd_rows_bt)
_rows_at = njit(winograd_rows_at)
_rows_a = njit(winograd_rows_a)


@_kernel(MEMORY_BOUND)
def _winograd_input(x, top, left, th, tw, two, four, five, v):
    n_images, h, w, c = x.shape
    for task in prange(n_images * th):
        n, ti = task // th, task % th
        rows = np.zeros((6, 4 * tw + 2, c), dtype=x.dtype)  # the tile row's six padded input rows
        for a in range(6):
            y = 4 * ti - top + a
            if 0 <= y < h:
                rows[a, left:left + w] = x[n, y]
        db = np.empty((6, 6, c), dtype=x.dtype)  # d B of one tile: row a, column j
        for tj in range(tw):
            t, x0 = task * tw + tj, 4 * tj
            for a in range(6):
                row, out = rows[a], db[a]
                r0, r1, r2, r3, r4, r5 = row[x0], row[x0 + 1], row[x0 + 2], row[x0 + 3], row[x0 + 4], row[x0 + 5]
                for ch in range(c):
                    q = _rows_bt(r0[ch], r1[ch], r2[ch], r3[ch], r4[ch], r5[ch], two, four, five)
                    out[0, ch], out[1, ch], out[2, ch], out[3, ch], out[4, ch], out[5, ch] = q
            for j in range(6):
                b0, b1, b2, b3, b4, b5 = db[0, j], db[1, j], db[2, j], db[3, j], db[4, j], db[5, j]
                v0, v1, v2, v3, v4, v5 = v[j, t], v[6 + j, t], v[12 + j, t], v[18 + j, t], v[24 + j, t], v[30 + j, t]
                for ch in range(c):
                    q = _rows_bt(b0[ch], b1[ch], b2[ch], b3[ch], b4[ch], b5[ch], two, four, five)
                    v0[ch], v1[ch], v2[ch], v3[ch], v4[ch], v5[ch] = q


def winograd_input(x, pads):
    """``V = B^T d B`` of every 6×6 input tile, one parallel pass; see :func:`numpy_kernels.winograd_input`.

    Each task pads the six input rows of its tile row into a small buffer (no padded copy of ``x``)."""
    n, h, w, c = x.shape
    th, tw = winograd_input_tiles(h, w, pads)
    v = np.empty((36, n * th * tw, c), dtype=x.dtype)
    two, four, five, _ = winograd_constants(x.dtype)
    _winograd_input(np.ascontiguousarray(x), pads[0], pads[2], th, tw, two, four, five, v)
    return v


@_kernel(MEMORY_BOUND)
def _winograd_output(m, n_images, th, tw, two, four, eight, y):
    ho, wo, k = y.shape[1], y.shape[2], y.shape[3]
    for task in prange(n_images * th):
        n, ti = task // th, task % th
        ma = np.empty((6, 4, k), dtype=m.dtype)  # M A of one tile: row ξ, column j
        for tj in range(tw):
            t = task * tw + tj
            for xi in range(6):
                m0, m1, m2, m3, m4, m5 = (m[6 * xi, t], m[6 * xi + 1, t], m[6 * xi + 2, t], m[6 * xi + 3, t],
                                          m[6 * xi + 4, t], m[6 * xi + 5, t])
                out = ma[xi]
                for ch in range(k):
                    q = _rows_at(m0[ch], m1[ch], m2[ch], m3[ch], m4[ch], m5[ch], two, four, eight)
                    out[0, ch], out[1, ch], out[2, ch], out[3, ch] = q
            rows = min(4, ho - 4 * ti)
            for j in range(min(4, wo - 4 * tj)):
                b0, b1, b2, b3, b4, b5 = ma[0, j], ma[1, j], ma[2, j], ma[3, j], ma[4, j], ma[5, j]
                if rows == 4:
                    y0, y1, y2, y3 = (y[n, 4 * ti, 4 * tj + j], y[n, 4 * ti + 1, 4 * tj + j],
                                      y[n, 4 * ti + 2, 4 * tj + j], y[n, 4 * ti + 3, 4 * tj + j])
                    for ch in range(k):
                        y0[ch], y1[ch], y2[ch], y3[ch] = _rows_at(b0[ch], b1[ch], b2[ch], b3[ch], b4[ch], b5[ch],
                                                                  two, four, eight)
                else:  # the last tile row of an output whose height is not a multiple of 4
                    for ch in range(k):
                        q = _rows_at(b0[ch], b1[ch], b2[ch], b3[ch], b4[ch], b5[ch], two, four, eight)
                        for i in range(rows):
                            y[n, 4 * ti + i, 4 * tj + j, ch] = q[i]


def winograd_output(m, out_shape):
    """``Y = A^T M A`` of every tile, cropped, one parallel pass; see :func:`numpy_kernels.winograd_output`."""
    n, ho, wo, k = out_shape
    th, tw = winograd_tiles(ho, wo)
    y = np.empty((n, ho, wo, k), dtype=m.dtype)
    two, four, _, eight = winograd_constants(m.dtype)
    _winograd_output(np.ascontiguousarray(m), n, th, tw, two, four, eight, y)
    return y


# its largest call (conv2 at batch 8, 10.8 M elements) took 5.1 ms on the threads against 8.8 ms on one
@_kernel(1 << 23)
def _winograd_gradient(gy, th, tw, two, four, eight, gm):
    n_images, ho, wo, k = gy.shape
    for task in prange(n_images * th):
        n, ti = task // th, task % th
        ga = np.zeros((4, 6, k), dtype=gy.dtype)    # G A^T of one tile: row i, column ν
        zeros = np.zeros(k, dtype=gy.dtype)
        for tj in range(tw):
            t = task * tw + tj
            for i in range(4):
                out = ga[i]
                if 4 * ti + i >= ho:  # below the output: a zero row
                    out[:] = 0
                    continue
                row = gy[n, 4 * ti + i]
                c0 = row[4 * tj] if 4 * tj < wo else zeros
                c1 = row[4 * tj + 1] if 4 * tj + 1 < wo else zeros
                c2 = row[4 * tj + 2] if 4 * tj + 2 < wo else zeros
                c3 = row[4 * tj + 3] if 4 * tj + 3 < wo else zeros
                for ch in range(k):
                    q = _rows_a(c0[ch], c1[ch], c2[ch], c3[ch], two, four, eight)
                    out[0, ch], out[1, ch], out[2, ch], out[3, ch], out[4, ch], out[5, ch] = q
            for nu in range(6):
                a0, a1, a2, a3 = ga[0, nu], ga[1, nu], ga[2, nu], ga[3, nu]
                g0, g1, g2, g3, g4, g5 = (gm[nu, t], gm[6 + nu, t], gm[12 + nu, t], gm[18 + nu, t], gm[24 + nu, t],
                                          gm[30 + nu, t])
                for ch in range(k):
                    g0[ch], g1[ch], g2[ch], g3[ch], g4[ch], g5[ch] = _rows_a(a0[ch], a1[ch], a2[ch], a3[ch],
                                                                             two, four, eight)


def winograd_gradient(gy):
    """``A G_t A^T`` of every 4×4 output-gradient tile, one parallel pass; see
    :func:`numpy_kernels.winograd_gradient`."""
    n, ho, wo, k = gy.shape
    th, tw = winograd_tiles(ho, wo)
    gm = np.empty((36, n * th * tw, k), dtype=gy.dtype)
    two, four, _, eight = winograd_constants(gy.dtype)
    _winograd_gradient(np.ascontiguousarray(gy), th, tw, two, four, eight, gm)
    return gm


# ------------------------------------------------------------------------ largest magnitudes (optimizer)
# An optimizer step bounds its update from the largest |value| of each weight, gradient and state array
# (tinynet.optimizers.Optimizer.step). Read as unsigned integers with the sign bit cleared, IEEE floats order as
# their magnitudes, and every NaN or infinity is at least the infinity's pattern; an integer max has no NaN
# rule, so the loop vectorises: one pass at memory speed (NumPy's max and min: two passes).
@njit(inline="always")
def _largest_bits32(bits):
    m = np.uint32(0)
    for i in range(bits.size):
        x = bits[i] & np.uint32(0x7FFFFFFF)
        m = x if x > m else m
    return m


@njit(inline="always")
def _largest_bits64(bits):
    m = np.uint64(0)
    for i in range(bits.size):
        x = bits[i] & np.uint64(0x7FFFFFFFFFFFFFFF)
        m = x if x > m else m
    return m


@njit(inline="always")
def _as_magnitudes(bits, floats, infinity):
    """The four largest bit patterns as float64 magnitudes, NaN for one at or above +inf's pattern."""
    values = bits.view(floats)
    out = np.empty(4)
    for k in range(4):
        out[k] = values[k] if bits[k] < infinity else np.nan
    return out[0], out[1], out[2], out[3]


@njit(cache=True, nogil=True)
def _largest4_32(a, b, c, d):
    bits = np.empty(4, np.uint32)
    bits[0], bits[1], bits[2], bits[3] = _largest_bits32(a), _largest_bits32(b), _largest_bits32(c), _largest_bits32(d)
    return _as_magnitudes(bits, np.float32, np.uint32(0x7F800000))


@njit(cache=True, nogil=True)
def _largest4_64(a, b, c, d):
    bits = np.empty(4, np.uint64)
    bits[0], bits[1], bits[2], bits[3] = _largest_bits64(a), _largest_bits64(b), _largest_bits64(c), _largest_bits64(d)
    return _as_magnitudes(bits, np.float64, np.uint64(0x7FF0000000000000))


#: per float dtype: the unsigned type of its width, the loop, and an empty array of that type (unused places)
_MAGNITUDE_BITS = {np.dtype(np.float32): (np.uint32, _largest4_32, np.zeros(0, np.uint32)),
                   np.dtype(np.float64): (np.uint64, _largest4_64, np.zeros(0, np.uint64))}


def largest_magnitudes(arrays):
    """``max |a|`` of up to four C-contiguous arrays of one float dtype in one call, one pass each; see
    :func:`numpy_kernels.largest_magnitudes` (which takes any other list)."""
    count = len(arrays)
    spec = _MAGNITUDE_BITS.get(arrays[0].dtype) if 0 < count <= 4 else None
    if spec is None:
        return numpy_kernels.largest_magnitudes(arrays)
    uint, loop, empty = spec
    dtype, views = arrays[0].dtype, []
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            return numpy_kernels.largest_magnitudes(arrays)
        views.append(a.reshape(-1).view(uint))
    views += [empty] * (4 - count)
    return list(loop(*views)[:count])


# ------------------------------------------------------------------------------- optimizer updates
# One pass over each weight instead of NumPy's five to eight (each with a temporary), on one thread: a weight
# is at most a few MB, and a step updates a hundred of them, too little each to wake the other threads. The
# operations and their order are the reference's, so the results are the same bits. NumPy's error model: a
# division by zero gives inf, as in NumPy, and without Python's zero check the loop vectorises (3x faster).
@njit(cache=True, nogil=True, error_model="numpy")
def _adam_update(w, g, m, v, c1, c2, alpha, epsilon):
    for i in range(w.size):
        mi = m[i] + (g[i] - m[i]) * c1
        vi = v[i] + (g[i] * g[i] - v[i]) * c2
        m[i] = mi
        v[i] = vi
        w[i] = w[i] - (mi * alpha) / (np.sqrt(vi) + epsilon)


def _flat_views(g, *arrays):
    """1-D views of the C-contiguous arrays updated in place, all of ``g``'s shape; ``None`` if one is not
    C-contiguous (a reshape would copy, and the update would be lost) or any shape differs (the loop reads
    ``w.size`` values of each, unchecked; the reference then broadcasts or raises as NumPy does)."""
    if not all(a.flags.c_contiguous and a.shape == g.shape for a in arrays):
        return None
    return [a.reshape(-1) for a in arrays]


def adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon):
    """One fused pass of the Adam update, in place; see :func:`numpy_kernels.adam_update`."""
    flat = _flat_views(g, w, m, v)
    if flat is None:
        return numpy_kernels.adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon)
    f = w.dtype.type
    _adam_update(flat[0], np.ascontiguousarray(g, dtype=w.dtype).reshape(-1), flat[1], flat[2],
                 f(1.0 - beta_1), f(1.0 - beta_2), f(alpha), f(epsilon))
    return None


@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_momentum_update(w, g, velocity, lr, mu, nesterov):
    for i in range(w.size):
        vi = velocity[i] * mu
        vi = vi - lr * g[i]
        velocity[i] = vi
        if nesterov:
            w[i] = w[i] + (mu * vi - lr * g[i])
        else:
            w[i] = w[i] + vi


def sgd_momentum_update(w, g, velocity, lr, momentum, nesterov):
    """One fused pass of the SGD momentum update, in place; see :func:`numpy_kernels.sgd_momentum_update`."""
    flat = _flat_views(g, w, velocity)
    if flat is None:
        return numpy_kernels.sgd_momentum_update(w, g, velocity, lr, momentum, nesterov)
    f = w.dtype.type
    _sgd_momentum_update(flat[0], np.ascontiguousarray(g, dtype=w.dtype).reshape(-1), flat[1], f(lr), f(momentum),
                         bool(nesterov))
    return None
