"""Arithmetic every kernel backend shares (no loops over the data): window output sizes, the number of real
cells in each pooling window, and the constants of LRN.

The layers use :func:`window_output_size` too (through :mod:`tinynet.layers.conv_utils`), so a window's
output size is computed in this one place. This module imports nothing from tinynet, so anything may import it.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np


def window_output_size(n, k, s, pad_before=0, pad_after=0):
    """Number of positions of a window of ``k`` cells, stride ``s``, along an axis of ``n`` cells padded with
    ``pad_before`` and ``pad_after``.

    .. math:: n_o = \\left\\lfloor \\frac{n + p_{before} + p_{after} - k}{s} \\right\\rfloor + 1

    The result is below 1 when the window is larger than the padded axis (``conv_utils`` reports that as
    an empty output; the kernels are only called with windows that fit).
    """
    return (n + pad_before + pad_after - k) // s + 1


def window_output_hw(h, w, kh, kw, sh, sw, pads):
    """``(Ho, Wo)`` of a (kh, kw) window with strides (sh, sw) over an H×W input padded by
    ``pads = (top, bottom, left, right)``; :func:`window_output_size` along each axis."""
    top, bottom, left, right = pads
    return window_output_size(h, kh, sh, top, bottom), window_output_size(w, kw, sw, left, right)


def pool_counts(h, w, ph, pw, sh, sw, pads):
    """Number of real (unpadded) cells in each pooling window, shape (Ho, Wo), as float64.

    Keras' average pooling with 'same' padding divides by this count, not by ph*pw.
    """
    top, bottom, left, right = pads
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    rows = np.arange(ho) * sh - top
    cols = np.arange(wo) * sw - left
    row_count = np.minimum(rows + ph, h) - np.maximum(rows, 0)
    col_count = np.minimum(cols + pw, w) - np.maximum(cols, 0)
    return np.outer(row_count, col_count).astype(np.float64)


@functools.lru_cache(maxsize=64)
def first_real_cells(ph, pw, sh, sw, top, left, ho, wo):
    """``a0 · pw + b0`` of the first real (unpadded) cell (a0, b0), in row-major window order, of each pooling
    window: int32, shape (Ho, Wo), read-only (cached). ``a0 = max(top − i·sh, 0)``, ``b0 = max(left − j·sw, 0)``.

    A max pool's argmax starts there, so that a window whose real cells are all −inf routes its gradient to
    its first real cell (not to a padding cell, whose gradient would be dropped). Every window has a real
    cell when each pad is smaller than the window (:mod:`tinynet.kernels` checks it).
    """
    rows = np.maximum(top - np.arange(ho) * sh, 0)
    cols = np.maximum(left - np.arange(wo) * sw, 0)
    cells = (rows[:, None] * pw + cols[None, :]).astype(np.int32)
    cells.flags.writeable = False
    return cells


class LRNTerms(NamedTuple):
    """What every LRN kernel derives from (size, alpha, beta, k): the window and the constants."""

    before: int          # channels before c in the window of channel c: ⌊(size − 1)/2⌋
    after: int           # channels after c: size − 1 − before
    k: np.floating
    alpha_over_size: np.floating
    minus_beta: np.floating
    coef: np.floating    # 2 · alpha · beta / size, the backward's factor


def argmax_dtype(ph, pw):
    """The integer type the CPU kernels store a max pool's window-local argmax ``a·pw + b`` in: int8 when the
    window has at most 127 cells (every pool of GoogLeNet), int32 otherwise."""
    return np.dtype(np.int8) if ph * pw <= 127 else np.dtype(np.int32)


def lrn_terms(dtype, size, alpha, beta, k=0.0):
    """The :class:`LRNTerms` of an LRN, its constants rounded to ``dtype`` (the NumPy, Numba and CUDA
    kernels all use these, so they agree to the last bit on them)."""
    t = np.dtype(dtype).type
    before = (size - 1) // 2
    return LRNTerms(before, size - 1 - before, t(k), t(alpha / size), t(-beta), t(2.0 * alpha * beta / size))


def lrn_safe_scales(dtype, beta):
    """``(lo, hi)`` in ``dtype``: the scales ``s`` an LRN computes in ``dtype`` itself; the others it computes again
    in float64.

    float32: ``2^(∓100 / (1 + beta))``. Within, ``s``, ``s^(−beta)`` and ``s^(−beta−1)`` all lie in
    [2^−100, 2^100], so no intermediate of forward (``x·s^(−beta)``) or backward (``gy·y/s``) overflows or
    loses bits to underflow. Outside (and for NaN), float32 can go wrong: ``x²`` overflows from
    ``|x| = 1.8e19``, and then the scale is inf and every output of the channel window ±0; or ``s^(−beta)``
    underflows. Those elements take the float64 formula (with the float32 constants of :func:`lrn_terms`),
    rounded once to float32, so a result is finite and right wherever it is representable. For the paper's LRN
    (k = 1, alpha = 1e-4, size 5, beta = 0.75) the float64 path starts at a window sum of squares of 8e21
    (``|x|`` about 9e10).

    float64: ``(−inf, inf)``: every scale but NaN is computed as it always was (and a NaN stays NaN).
    """
    t = np.dtype(dtype).type
    if np.dtype(dtype) != np.float32:
        return t(-np.inf), t(np.inf)
    e = 100.0 / (1.0 + beta)
    return t(2.0 ** -e), t(2.0 ** e)


# ------------------------------------------------------------------- Winograd F(4×4, 3×3) (layers.conv_winograd)
#: Winograd's F(4×4, 3×3) matrices (Lavin & Gray 2016, interpolation points 0, ±1, ±2, ∞): a 6×6 input tile
#: ``d`` and a 3×3 kernel ``g`` give the 4×4 output tile ``A^T [(G g G^T) ⊙ (B^T d B)] A``. The kernels apply
#: ``B^T``, ``A^T`` and ``A`` through the three functions below (one formula for NumPy and Numba alike);
#: the matrices themselves are for the kernel's transform (``G``) and the tests.
WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0],
                        [0, -4, -4, 1, 1, 0],
                        [0, 4, -4, -1, 1, 0],
                        [0, -2, -1, 2, 1, 0],
                        [0, 2, -1, -2, 1, 0],
                        [0, 4, 0, -5, 0, 1]], dtype=np.float64)
WINOGRAD_G = np.array([[1 / 4, 0, 0],
                       [-1 / 6, -1 / 6, -1 / 6],
                       [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6],
                       [1 / 24, -1 / 12, 1 / 6],
                       [0, 0, 1]], dtype=np.float64)
WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0],
                        [0, 1, -1, 2, -2, 0],
                        [0, 1, 1, 4, 4, 0],
                        [0, 1, -1, 8, -8, 1]], dtype=np.float64)
#: the output tile's height and width in F(4×4, 3×3)
WINOGRAD_TILE = 4


def winograd_tiles(ho, wo):
    """``(th, tw)``: the 4×4 output tiles that cover an Ho×Wo output, ``ceil(Ho / 4)`` by ``ceil(Wo / 4)``."""
    return -(-ho // WINOGRAD_TILE), -(-wo // WINOGRAD_TILE)


def winograd_input_tiles(h, w, pads):
    """``(th, tw)`` of a 3×3 stride-1 window over an H×W input padded by ``pads``: the tiles of its output."""
    return winograd_tiles(*window_output_hw(h, w, 3, 3, 1, 1, pads))


def winograd_rows_bt(d0, d1, d2, d3, d4, d5, two, four, five):
    """``B^T`` applied to six values (one row or column of a 6×6 input tile): six values.

    Works on scalars (Numba) and on arrays (NumPy) alike; ``two``, ``four``, ``five`` are 2, 4, 5 in the data's
    dtype, so float32 stays float32 under Numba (an integer literal would promote to float64).
    """
    return (four * d0 - five * d2 + d4,
            d3 + d4 - four * (d1 + d2),
            four * (d1 - d2) - d3 + d4,
            two * (d3 - d1) - d2 + d4,
            two * (d1 - d3) - d2 + d4,
            four * d1 - five * d3 + d5)


def winograd_rows_at(m0, m1, m2, m3, m4, m5, two, four, eight):
    """``A^T`` applied to six values (one row or column of a 6×6 product tile): the four output values."""
    a, b, c, d = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + a + c, b + two * d, a + four * c, b + eight * d + m5


def winograd_rows_a(q0, q1, q2, q3, two, four, eight):
    """``A`` applied to four values (one row or column of a 4×4 output-gradient tile): six values, the
    adjoint of :func:`winograd_rows_at`."""
    even, odd = q0 + q2, q1 + q3
    even4, odd4 = q0 + four * q2, two * q1 + eight * q3
    return q0, even + odd, even - odd, even4 + odd4, even4 - odd4, q3


def winograd_constants(dtype):
    """``(2, 4, 5, 8)`` in ``dtype``, the factors of the three transforms."""
    t = np.dtype(dtype).type
    return t(2), t(4), t(5), t(8)
