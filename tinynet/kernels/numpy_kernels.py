"""Reference kernels in vectorised NumPy (the readable version of every hot loop).

Every kernel here has the same signature in :mod:`numba_kernels` and :mod:`cupy_kernels`; the list of them is
:data:`tinynet.kernels.KERNEL_NAMES`. Layout is NHWC. ``pads = (top, bottom, left, right)`` are the cells
added around the input, and ``(Ho, Wo)`` is :func:`~tinynet.kernels.common.window_output_hw`
(``Ho = (H + top + bottom - kh) // sh + 1`` and likewise ``Wo``).

Loops in this module run over the ``kh * kw`` offsets of a window (at most 49 for GoogLeNet),
never over images, pixels or channels: each iteration is one strided array operation.
"""
from __future__ import annotations

import contextlib

import math

import numpy as np

from .common import (first_real_cells, lrn_safe_scales, lrn_terms, pool_counts, window_output_hw, winograd_constants,
                     winograd_input_tiles, winograd_rows_a, winograd_rows_at, winograd_rows_bt, winograd_tiles)


def _pad(x, pads, value):
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="constant", constant_values=value)


def im2col(x, kh, kw, sh, sw, pads, pad_value=0.0):
    """Gather every (kh, kw) window of ``x`` into one row.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    kh, kw : int
        Window height and width.
    sh, sw : int
        Strides.
    pads : tuple of 4 int
        (top, bottom, left, right) padding, filled with ``pad_value``.

    Returns
    -------
    cols : ndarray, shape (N, Ho, Wo, kh, kw, C), C-contiguous
        ``cols[n, i, j, a, b, c] = xpad[n, i*sh + a, j*sw + b, c]``; reshaped to
        (N*Ho*Wo, kh*kw*C) it multiplies a Keras kernel reshaped to (kh*kw*C, K).
    """
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, kh, kw, sh, sw, pads)
    xp = _pad(x, pads, pad_value)
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))  # (N, Hp-kh+1, Wp-kw+1, C, kh, kw)
    windows = windows[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3))


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    """Transpose of :func:`im2col`: add every window row back onto the cells it came from.

    Overlapping windows accumulate (``+=``), so this is the adjoint of im2col, not its inverse:
    ``dx[n, y, x, c] = sum over (i, j, a, b) with i*sh + a - top = y, j*sw + b - left = x of cols[n, i, j, a, b, c]``.

    Parameters
    ----------
    cols : ndarray, shape (N, Ho, Wo, kh, kw, C)
    x_shape : tuple (N, H, W, C)
        Shape of the unpadded input.

    Returns
    -------
    dx : ndarray, shape (N, H, W, C), dtype of ``cols``
    """
    n, h, w, c = x_shape
    top, bottom, left, right = pads
    ho, wo = cols.shape[1], cols.shape[2]
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=cols.dtype)
    for a in range(kh):
        for b in range(kw):
            dxp[:, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw, :] += cols[:, :, :, a, b, :]
    return dxp[:, top : top + h, left : left + w, :]


def maxpool_forward(x, ph, pw, sh, sw, pads):
    """Max pooling with −inf padding; also returns which cell of each window won.

    Ties go to the first maximum in row-major window order (like PyTorch and cuDNN). A window holding a NaN
    outputs NaN, as in PyTorch and Keras; its argmax is the first NaN, so backward routes the gradient there:
    tinynet's own convention (PyTorch routes it to the last NaN, Keras and JAX differently again). In the loop
    a cell wins when ``v > y`` or when ``v`` is NaN and ``y`` is not. The argmax starts at the window's first
    real cell (:func:`~tinynet.kernels.common.first_real_cells`), so a window whose real cells are all −inf
    (a tie at −inf) names its first real cell, never a padding cell: its gradient is kept.

    Returns
    -------
    y : ndarray, shape (N, Ho, Wo, C)
    argmax : ndarray of int32, shape (N, Ho, Wo, C)
        ``a * pw + b`` for the winning window cell (a, b).
    """
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    xp = _pad(x, pads, -np.inf)
    y = np.full((n, ho, wo, c), -np.inf, dtype=x.dtype)
    if pads[0] or pads[2]:  # some windows start in the padding
        argmax = np.empty((n, ho, wo, c), dtype=np.int32)
        argmax[...] = first_real_cells(ph, pw, sh, sw, pads[0], pads[2], ho, wo)[None, :, :, None]
    else:
        argmax = np.zeros((n, ho, wo, c), dtype=np.int32)
    for a in range(ph):
        for b in range(pw):
            v = xp[:, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw, :]
            better = (v > y) | (np.isnan(v) & ~np.isnan(y))
            np.copyto(y, v, where=better)
            argmax[better] = a * pw + b
    return y, argmax


def maxpool_backward(gy, argmax, x_shape, ph, pw, sh, sw, pads):
    """Route each output gradient to the input cell that won its window (same padded windows as forward).

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    n, h, w, c = x_shape
    top, bottom, left, right = pads
    ho, wo = gy.shape[1], gy.shape[2]
    gxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=gy.dtype)
    zero = gy.dtype.type(0)
    for a in range(ph):
        for b in range(pw):
            gxp[:, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw, :] += np.where(
                argmax == a * pw + b, gy, zero
            )
    return gxp[:, top : top + h, left : left + w, :]


def avgpool_forward(x, ph, pw, sh, sw, pads):
    """Average pooling that divides each window's sum by its count of real cells.

    Returns
    -------
    y : ndarray, shape (N, Ho, Wo, C), dtype of ``x``
    """
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    xp = _pad(x, pads, 0)
    total = np.zeros((n, ho, wo, c), dtype=x.dtype)
    for a in range(ph):
        for b in range(pw):
            total += xp[:, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw, :]
    counts = pool_counts(h, w, ph, pw, sh, sw, pads).astype(x.dtype)
    return total / counts[None, :, :, None]


def avgpool_backward(gy, x_shape, ph, pw, sh, sw, pads):
    """Spread ``gy / count`` evenly over the real cells of each window (accumulating overlaps).

    Returns
    -------
    gx : ndarray, shape ``x_shape``, dtype of ``gy``
    """
    n, h, w, c = x_shape
    top, bottom, left, right = pads
    ho, wo = gy.shape[1], gy.shape[2]
    counts = pool_counts(h, w, ph, pw, sh, sw, pads).astype(gy.dtype)
    share = gy / counts[None, :, :, None]
    gxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=gy.dtype)
    for a in range(ph):
        for b in range(pw):
            gxp[:, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw, :] += share
    return gxp[:, top : top + h, left : left + w, :]


# ------------------------------------------------------------------ element-wise and channel kernels
def relu_backward(gy, y):
    """``gz = gy · [y > 0]``: ReLU's backward from its output.

    Parameters
    ----------
    gy, y : ndarray, same shape

    Returns
    -------
    gz : ndarray, shape and dtype of ``gy``
    """
    return gy * (y > 0)


def bias_relu_forward(z, bias, relu):
    """A layer's bias and ReLU on its matrix product, in place: ``z ← max(z + b, 0)``.

    .. math:: z_{\\ldots k} \\leftarrow \\max(z_{\\ldots k} + b_k,\\ 0)

    (without ``relu`` only the bias is added; without a bias only the ReLU is applied). NaN stays NaN, as
    with ``np.maximum``, and ``max(−0, 0) = +0``.

    Parameters
    ----------
    z : ndarray, shape (..., K)
        Pre-activations (``cols @ W`` of a convolution, (N, Ho, Wo, K), or of a Dense layer, (N, K));
        overwritten.
    bias : ndarray, shape (K,), or None
    relu : bool

    Returns
    -------
    z : ndarray
        The argument itself.
    """
    if bias is not None:
        z += bias
    if relu:
        np.maximum(z, z.dtype.type(0), out=z)
    return z


def relu_bias_backward(gy, y, relu, want_bias):
    """Backward of :func:`bias_relu_forward`: the gradient of ``z`` and of the bias, from the output ``y``.

    .. math::
        gz = gy \\cdot [y > 0] \\quad (gz = gy \\text{ without ReLU}), \\qquad
        gb_k = \\sum_{\\text{all leading indices}} gz_{\\ldots k}

    ``gz`` is a product, so a NaN or inf in ``gy`` gives NaN where ``y <= 0`` (as :func:`relu_backward`).

    Parameters
    ----------
    gy, y : ndarray, shape (..., K)
    relu, want_bias : bool

    Returns
    -------
    gz : ndarray, shape and dtype of ``gy`` (``gy`` itself without ``relu``)
    gbias : ndarray, shape (K,), dtype of ``gy``, or None without ``want_bias``
    """
    gz = relu_backward(gy, y) if relu else gy
    gbias = gz.reshape(-1, gz.shape[-1]).sum(axis=0) if want_bias else None
    return gz, gbias


def _channel_window_sum(v, before, after):
    """``out[..., c] = Σ_{d=-before..after} v[..., c + d]`` (zero outside), summed in increasing d."""
    vp = np.pad(v, [(0, 0)] * (v.ndim - 1) + [(before, after)])
    c = v.shape[-1]
    total = vp[..., 0:c].copy()
    for d in range(1, before + after + 1):
        total += vp[..., d:d + c]
    return total


def _outside(scale, lo, hi):
    """The mask of the scales outside [lo, hi] (NaN included), or None when there is none (two reductions)."""
    if scale.size == 0 or (lo <= scale.min() and scale.max() <= hi):
        return None
    return ~((scale >= lo) & (scale <= hi))


def _float32_errors(dtype):
    """Quiet float32's overflows and invalid operations: the elements they touch are computed again."""
    if dtype == np.float32:
        return np.errstate(over="ignore", invalid="ignore")
    return contextlib.nullcontext()


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across channels (Caffe's ACROSS_CHANNELS, alpha divided by size).

    ``s_c = k + alpha/size · Σ_{j ∈ [c − ⌊(size−1)/2⌋, c + size − 1 − ⌊(size−1)/2⌋]} x_j²`` and ``y = x · s^(−beta)``.

    In float32, an element whose scale falls outside :func:`~tinynet.kernels.common.lrn_safe_scales` (its
    ``x²`` overflowed, or ``s^(−beta)`` would underflow; NaN too) is computed again with the float64 formula
    and rounded once: ``y`` then is finite and right wherever it is representable, and ``scale`` is the
    float64 scale rounded (inf above float32's largest value). The squares are summed in float64 in the same
    order, with the float32 constants of every float32 element (so the two paths meet at the bound: a beta
    float32 does not hold, 0.6, moves ``s^(−beta)`` by 2.4e-8·ln s on both). Every other element, and
    float64, take the dtype's own arithmetic, as before.

    Parameters
    ----------
    x : ndarray, shape (..., C)
    size : int
    alpha, beta, k : float

    Returns
    -------
    y, scale : ndarray, shape and dtype of ``x``
    """
    w = lrn_terms(x.dtype, size, alpha, beta, k)
    with _float32_errors(x.dtype):
        scale = w.k + w.alpha_over_size * _channel_window_sum(x * x, w.before, w.after)
        y = x * scale ** w.minus_beta
        unsafe = _outside(scale, *lrn_safe_scales(x.dtype, beta)) if x.dtype == np.float32 else None
        if unsafe is not None:
            f64 = np.float64
            x64 = x.astype(f64)
            s64 = f64(w.k) + f64(w.alpha_over_size) * _channel_window_sum(x64 * x64, w.before, w.after)
            y = np.where(unsafe, (x64 * s64 ** f64(w.minus_beta)).astype(x.dtype), y)
            scale = np.where(unsafe, s64.astype(x.dtype), scale)
    return y, scale


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    """Backward of :func:`lrn_forward`.

    ``gx_i = gy_i s_i^(−beta) − (2 alpha beta / size) x_i Σ_{j: i ∈ W(j)} gy_j y_j / s_j``; the transpose of a
    window (before, after) is the window (after, before).

    In float32, an element whose transposed window holds a scale outside
    :func:`~tinynet.kernels.common.lrn_safe_scales` is computed again in float64 (the float32 constants, the
    sums in the same order) and rounded once. There a scale of inf (the forward's float32 scale overflowed)
    is computed again as ``alpha/size · Σ x²`` in float64: without ``k``, which backward is not given and
    which is below float32's resolution of a scale over 3.4e38 (for any k < 1e30).

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    """
    w = lrn_terms(x.dtype, size, alpha, beta)
    with _float32_errors(gy.dtype):
        spread = _channel_window_sum(gy * y / scale, w.after, w.before)
        gx = gy * scale ** w.minus_beta - w.coef * x * spread
        unsafe = _outside(scale, *lrn_safe_scales(gy.dtype, beta)) if gy.dtype == np.float32 else None
        if unsafe is not None:
            f64 = np.float64
            near = _channel_window_sum(unsafe, w.after, w.before)  # an unsafe scale among the s_j of gx_i
            x64, s64, gy64 = x.astype(f64), scale.astype(f64), gy.astype(f64)
            over = np.isinf(scale)
            if over.any():
                s64 = np.where(over, f64(w.alpha_over_size) * _channel_window_sum(x64 * x64, w.before, w.after), s64)
            spread64 = _channel_window_sum(gy64 * y.astype(f64) / s64, w.after, w.before)
            gx64 = gy64 * s64 ** f64(w.minus_beta) - f64(w.coef) * x64 * spread64
            gx = np.where(near, gx64.astype(gy.dtype), gx)
    return gx


# --------------------------------------------------------------------------------- batch normalisation
def batchnorm_forward(x, gamma, beta, mean, var, epsilon):
    """Batch normalisation over every axis but the last (the channels), in the layer's order of operations.

    With :math:`m` rows (the product of the leading axes) and, in training (``mean`` and ``var`` None), the
    batch statistics computed in two passes:

    .. math::

        μ_c = \\frac{1}{m} \\sum_r x_{rc}, \\quad σ^2_c = \\frac{1}{m} \\sum_r (x_{rc} − μ_c)^2, \\quad
        s_c = \\frac{1}{\\sqrt{σ^2_c + ε}}, \\quad \\hat x_{rc} = (x_{rc} − μ_c)\\, s_c, \\quad
        y_{rc} = \\hat x_{rc} γ_c + β_c

    (biased variance; each sum in the dtype of ``x``, as NumPy's ``mean``). Given ``mean`` and ``var`` (the
    moving statistics, inference) only the last three steps run.

    Parameters
    ----------
    x : ndarray, shape (..., C)
        (N, H, W, C) after a convolution, (N, C) after a Dense layer; viewed as (m, C) rows.
    gamma, beta : ndarray, shape (C,), dtype of ``x``
    mean, var : ndarray, shape (C,), dtype of ``x``, or both None
        The statistics to normalise with; None: the batch's.
    epsilon : float

    Returns
    -------
    y, x_hat : ndarray, shape and dtype of ``x``
    mean, var : ndarray, shape (C,)
        The statistics used (the arguments themselves when given).
    inv_std : ndarray, shape (C,)
        :math:`1 / \\sqrt{σ^2 + ε}`.
    """
    if mean is None:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes)
        x_hat = x - mean  # x − μ for now: normalised in place below
        var = (x_hat * x_hat).mean(axis=axes)
    else:
        x_hat = x - mean
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(epsilon))
    x_hat *= inv_std
    y = x_hat * gamma
    y += beta
    return y, x_hat, mean, var, inv_std


def batchnorm_backward(gy, x_hat, gamma, inv_std, training):
    """Backward of :func:`batchnorm_forward`: the gradients of ``x``, ``gamma`` and ``beta``.

    With :math:`g = ∂L/∂y`, sums over the :math:`m` rows and :math:`s = 1/\\sqrt{σ^2+ε}`:

    .. math::

        ∂L/∂γ_c = \\sum_r g_{rc} \\hat x_{rc}, \\quad ∂L/∂β_c = \\sum_r g_{rc}, \\quad
        ∂L/∂x_{rc} = \\Big(\\big(g_{rc} − \\tfrac{1}{m} ∂L/∂β_c\\big)
                     − \\hat x_{rc} \\tfrac{1}{m} ∂L/∂γ_c\\Big)\\, γ_c s_c \\text{ (training)}, \\quad
        ∂L/∂x_{rc} = g_{rc}\\, γ_c s_c \\text{ (inference: the statistics are constants)}.

    Parameters
    ----------
    gy, x_hat : ndarray, shape (..., C)
        The gradient of ``y`` and the normalised input of :func:`batchnorm_forward`.
    gamma, inv_std : ndarray, shape (C,)
    training : bool
        Whether the forward pass used the batch statistics (their gradient flows back to ``x``).

    Returns
    -------
    gx : ndarray, shape and dtype of ``gy``
    g_gamma, g_beta : ndarray, shape (C,)
    """
    axes = tuple(range(gy.ndim - 1))
    g_gamma = (gy * x_hat).sum(axis=axes)
    g_beta = gy.sum(axis=axes)
    scale = gamma * inv_std
    if training:
        m = gy.size // gy.shape[-1]
        gx = gy - g_beta / m
        gx -= x_hat * (g_gamma / m)
        gx *= scale
    else:
        gx = gy * scale
    return gx, g_gamma, g_beta


# ------------------------------------------------------------------- Winograd F(4×4, 3×3) (layers.conv_winograd)
# A 3×3 stride-1 convolution computed on 4×4 output tiles: each tile reads a 6×6 input tile d and is
# y = A^T [U ⊙ (B^T d B)] A, with U = G g G^T per (input channel, filter) pair and the sum over the input
# channels done by 36 matrix products, one per position (ξ, ν) of the 6×6 tile. The loops below run over
# the 6 rows or columns of a tile (the transforms' coefficients), each iteration one strided array operation.
def winograd_input(x, pads):
    """The Winograd F(4×4, 3×3) transform of every 6×6 input tile: ``V = B^T d B``.

    Tile (ti, tj) of image n reads the padded input's rows ``4 ti … 4 ti + 5`` and columns ``4 tj … 4 tj + 5``
    (zeros where that lies outside ``x``); the tiles cover the output of a 3×3 stride-1 window.

    .. math:: V[6 i + j,\\ t,\\ c] = \\sum_{a, b} B^T_{i a} \\, d_t[a, b, c] \\, B^T_{j b}

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    pads : tuple of 4 int >= 0
        (top, bottom, left, right) zero padding.

    Returns
    -------
    v : ndarray, shape (36, N·th·tw, C), C-contiguous, with ``th = ceil(Ho / 4)``, ``tw = ceil(Wo / 4)``,
        ``(Ho, Wo)`` the window's output size; tiles in (n, ti, tj) order.
    """
    n, h, w, c = x.shape
    th, tw = winograd_input_tiles(h, w, pads)
    top, _, left, _ = pads
    xpad = np.zeros((n, 4 * th + 2, 4 * tw + 2, c), dtype=x.dtype)  # every tile's 6×6 cells, zeros outside x
    xpad[:, top:top + h, left:left + w] = x
    two, four, five, _ = winograd_constants(x.dtype)
    # d B: the six columns of every tile column combined, (N, 4 th + 2, tw, C) each (column j of d B)
    tile_columns = winograd_rows_bt(*(xpad[:, :, b:b + 4 * tw:4] for b in range(6)), two, four, five)
    v = np.empty((6, 6, n, th, tw, c), dtype=x.dtype)
    for j, column in enumerate(tile_columns):  # then B^T (d B): the six rows combined
        for i, vij in enumerate(winograd_rows_bt(*(column[:, a:a + 4 * th:4] for a in range(6)), two, four, five)):
            v[i, j] = vij
    return v.reshape(36, n * th * tw, c)


def winograd_output(m, out_shape):
    """The inverse transform of 6×6 product tiles, ``Y = A^T M A``, cropped to the output.

    .. math:: y[n, 4 t_i + i, 4 t_j + j, k] = \\sum_{ξ, ν} A^T_{i ξ} \\, M[6 ξ + ν,\\ t,\\ k] \\, A^T_{j ν}

    Parameters
    ----------
    m : ndarray, shape (36, N·th·tw, K)
        The products ``M[ξν] = V[ξν] U[ξν]``, tiles as :func:`winograd_input` orders them.
    out_shape : tuple (N, Ho, Wo, K)

    Returns
    -------
    y : ndarray, shape (N, Ho, Wo, K), C-contiguous
    """
    n, ho, wo, k = out_shape
    th, tw = winograd_tiles(ho, wo)
    two, four, _, eight = winograd_constants(m.dtype)
    m6 = m.reshape(6, 6, n, th, tw, k)
    right = [winograd_rows_at(*m6[xi], two, four, eight) for xi in range(6)]  # M A: right[ξ][j], j < 4
    y = np.empty((n, th, 4, tw, 4, k), dtype=m.dtype)
    for j in range(4):
        for i, yij in enumerate(winograd_rows_at(*(right[xi][j] for xi in range(6)), two, four, eight)):
            y[:, :, i, :, j] = yij
    return np.ascontiguousarray(y.reshape(n, 4 * th, 4 * tw, k)[:, :ho, :wo])


def winograd_gradient(gy):
    """The transform of every 4×4 output-gradient tile, ``A G_t A^T`` (the adjoint of :func:`winograd_output`).

    .. math:: ∂M[6 ξ + ν,\\ t,\\ k] = \\sum_{i, j} A^T_{i ξ} \\, gy[n, 4 t_i + i, 4 t_j + j, k] \\, A^T_{j ν}

    with ``gy`` zero beyond (Ho, Wo). It gives the kernel's gradient, ``∂U[ξν] = V[ξν]^T ∂M[ξν]``.

    Parameters
    ----------
    gy : ndarray, shape (N, Ho, Wo, K)

    Returns
    -------
    gm : ndarray, shape (36, N·th·tw, K), C-contiguous
    """
    n, ho, wo, k = gy.shape
    th, tw = winograd_tiles(ho, wo)
    two, four, _, eight = winograd_constants(gy.dtype)
    tiles = np.zeros((n, th, 4, tw, 4, k), dtype=gy.dtype)
    tiles.reshape(n, 4 * th, 4 * tw, k)[:, :ho, :wo] = gy
    right = [winograd_rows_a(*(tiles[:, :, i, :, j] for j in range(4)), two, four, eight) for i in range(4)]
    gm = np.empty((6, 6, n, th, tw, k), dtype=gy.dtype)
    for nu in range(6):  # G A^T: right[i][ν]; then A along the rows
        for xi, value in enumerate(winograd_rows_a(*(right[i][nu] for i in range(4)), two, four, eight)):
            gm[xi, nu] = value
    return gm.reshape(36, n * th * tw, k)


# ------------------------------------------------------------------------------- optimizer updates
def largest_magnitudes(arrays):
    """The largest magnitude of each array, what an optimizer step bounds its update by
    (:meth:`tinynet.optimizers.Optimizer.step`).

    .. math:: m_i = \\max_j |a_{i,j}|

    Parameters
    ----------
    arrays : list of ndarray
        Float arrays of any shapes.

    Returns
    -------
    list of float
        ``m_i`` per array: ``nan`` for an array holding NaN or ±inf, ``0.0`` for an empty one.
    """
    found = []
    for a in arrays:
        if a.size == 0:
            found.append(0.0)
            continue
        high, low = float(a.max()), -float(a.min())  # two reductions, no temporary array; NaN propagates
        # abs: all -0.0 gives max(-0.0, 0.0) = -0.0; a magnitude is +0.0 (the Numba kernel's)
        found.append(abs(max(high, low)) if math.isfinite(high) and math.isfinite(low) else math.nan)
    return found


def adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon):
    """One Adam update of a weight, in place: the math of :class:`tinynet.optimizers.Adam`.

    .. math:: m ← m + (1 − β_1)(g − m), \\quad v ← v + (1 − β_2)(g^2 − v), \\quad
              w ← w − \\frac{α\\, m}{\\sqrt{v} + ε}

    with ``α`` the step size after bias correction. Every constant is rounded to ``w``'s dtype first, so a
    float32 update stays float32.

    Parameters
    ----------
    w, m, v : ndarray, same shape and float dtype; updated in place
    g : ndarray, shape and dtype of ``w``
    beta_1, beta_2, alpha, epsilon : float

    Returns
    -------
    None
    """
    f = w.dtype.type
    m += (g - m) * f(1.0 - beta_1)
    v += (g * g - v) * f(1.0 - beta_2)
    w -= (m * f(alpha)) / (np.sqrt(v) + f(epsilon))


def sgd_momentum_update(w, g, velocity, lr, momentum, nesterov):
    """One SGD update with momentum ``μ`` of a weight, in place: the math of :class:`tinynet.optimizers.SGD`.

    .. math:: v ← μ v − η g, \\qquad w ← w + v \\quad\\text{or, Nesterov,}\\quad w ← w + μ v − η g

    Parameters
    ----------
    w, velocity : ndarray, same shape and float dtype; updated in place
    g : ndarray, shape and dtype of ``w``
    lr, momentum : float
        ``η`` and ``μ``, rounded to ``w``'s dtype.
    nesterov : bool

    Returns
    -------
    None
    """
    lr, mu = w.dtype.type(lr), w.dtype.type(momentum)
    velocity *= mu
    velocity -= lr * g
    if nesterov:
        w += mu * velocity - lr * g
    else:
        w += velocity
