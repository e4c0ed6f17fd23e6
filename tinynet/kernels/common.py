"""Arithmetic every kernel backend shares (no loops over the data): window output sizes, the number of real
cells in each pooling window, and the constants of LRN.

The layers use :func:`window_output_size` too (through :mod:`tinynet.layers.conv_utils`), so a window's
output size is computed in this one place. This module imports nothing from tinynet, so anything may import it.
"""
from __future__ import annotations

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
