"""Large k×k convolutions through im2col in slabs of rows: a fast path of :class:`Conv2D` on the CPU.

The plain path builds the whole im2col matrix ``X`` (N·Ho·Wo, kh·kw·C) and multiplies it once,
``Z = X Wm``. For GoogLeNet's first layer (7×7/2 over 224×224×3) at batch 8, ``X`` is 59 MB: im2col writes it
to memory and the product reads it back, larger than any cache. The rows of ``Z`` are independent, so the
same product can run a slab of rows at a time,

.. math::

    Z[r_0:r_1] = X[r_0:r_1] \\, Wm, \\qquad r_1 - r_0 \\text{ rows of a few MiB of } X,

each slab gathered by im2col from the input rows its windows read, multiplied while it is still in the
cache, and given its bias and activation there too. A slab is either a block of output rows of one image
(when an image's windows are more than a slab's bytes) or a group of whole images. Backward runs over slabs
too, larger ones (:data:`BACKWARD_SLAB_BYTES` against :data:`FORWARD_SLAB_BYTES`), gathering each again from
the input:

.. math::

    ∂L/∂Wm = \\sum_{\\text{slabs}} X_s^T G_s, \\qquad ∂L/∂x = \\sum_{\\text{slabs}} \\mathrm{col2im}(G_s Wm^T),

where the input rows of two neighbouring blocks of one image overlap by ``kh − sh`` rows, whose gradients
add. The whole matrix never exists, so the memory of a step drops by its size as well.

It runs for a k×k convolution on the CPU whose im2col matrix is larger than what it keeps for backward
(:func:`tinynet.set_keep_im2col`, default 4 MiB: a kept matrix is built whole anyway) and at least
:data:`MIN_BYTES` (16 MiB: GoogLeNet's conv1 and 3b's 5×5 at batch 8, more at batch 32). The results equal the
plain path's up to the order of floating-point additions (the weight gradient sums slab by slab);
``tests/test_conv_slabs.py`` checks it to 1e-12 in float64, and :func:`tinynet.set_fast_paths` turns it off
with the other fast paths. On the GPU the whole matrix stays: one large product suits cuBLAS better than many
small ones.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from .. import backend, kernels

#: the im2col bytes of one forward slab: the product of a slab while im2col's rows are still in the cache
#: (measured on GoogLeNet's 7×7/2 layer at batch 8: 0.86 of the whole matrix's time at 4 MiB, 0.89 at 2 and
#: 8 MiB, 0.93 at 16; its 5×5 layers 0.83–0.99 at 4 MiB, up to 1.18 at 1–2 MiB)
FORWARD_SLAB_BYTES = 4 * 2 ** 20
#: the im2col bytes of one backward slab: ``X_s^T G_s`` is a thin product (kh·kw·C × K) summed over the
#: slab's rows, which BLAS runs well only over many rows (7×7/2 layer: 0.87–0.91 of the whole matrix's time
#: at 16–32 MiB, 1.01–1.06 at 2–4 MiB; the 5×5 layers alike within the noise)
BACKWARD_SLAB_BYTES = 16 * 2 ** 20

def _product(a, b, out=None):
    """``a @ b`` (into ``out`` when given): every product of the slabs goes through here, one place for
    ``benchmarks/profile_step.py`` to time."""
    return np.matmul(a, b, out=out)


class Slab(NamedTuple):
    """Images ``[n0, n1)``, output rows ``[i0, i1)`` and the input rows ``[r0, r1)`` with the pads that
    their windows read (``r0``/``r1`` clipped to the image; ``pads`` the cells of padding left beyond)."""

    n0: int
    n1: int
    i0: int
    i1: int
    r0: int
    r1: int
    pads: tuple   # (top, bottom, left, right) of the input slab x[n0:n1, r0:r1]


def available(x) -> bool:
    """Whether slabs may be used for ``x``: a CPU array with fast paths on (:func:`tinynet.set_fast_paths`)."""
    return backend.fast_paths_enabled() and not backend.is_gpu_array(x)


#: the smallest im2col matrix that goes through slabs: a smaller one fits in the last-level cache (32 MiB on
#: this project's machine) next to its product, and slabs measured no faster there (the small GoogLeNet's one
#: such layer, 13 MiB at batch 32: 1.01× its train step, alternating)
MIN_BYTES = 16 * 2 ** 20


def applies(x, cols_bytes) -> bool:
    """Whether a k×k convolution of ``x`` streams its im2col matrix of ``cols_bytes`` (forward, and backward
    when forward did not keep it): :func:`available`, a matrix of at least :data:`MIN_BYTES`, and larger than
    what :func:`tinynet.set_keep_im2col` keeps."""
    return available(x) and cols_bytes >= MIN_BYTES and not backend.keeps_im2col(cols_bytes)


def slabs(x_shape, out_hw, kh, sh, pads, row_bytes, budget) -> Iterator[Slab]:
    """The slabs of a convolution of an input of ``x_shape`` (N, H, W, C) with output ``out_hw`` (Ho, Wo):
    groups of whole images when an image's windows (``Ho · row_bytes``) fit in ``budget`` bytes, else blocks
    of output rows of one image. ``row_bytes`` is the im2col size of one output row (Wo·kh·kw·C elements)."""
    n, h = x_shape[0], x_shape[1]
    ho = out_hw[0]
    top, bottom, left, right = pads
    if ho * row_bytes <= budget:
        per = budget // (ho * row_bytes)
        for n0 in range(0, n, per):
            yield Slab(n0, min(n, n0 + per), 0, ho, 0, h, pads)
        return
    rows = max(1, budget // row_bytes)
    for img in range(n):
        for i0 in range(0, ho, rows):
            i1 = min(ho, i0 + rows)
            first, last = i0 * sh - top, (i1 - 1) * sh - top + kh  # input rows the windows cover
            r0, r1 = max(first, 0), min(last, h)
            yield Slab(img, img + 1, i0, i1, r0, r1, (r0 - first, last - r1, left, right))


def _windows(x, slab, kh, kw, sh, sw):
    """The slab's windows as rows, (rows of the slab, kh·kw·C)."""
    part = x[slab.n0:slab.n1, slab.r0:slab.r1]
    cols = kernels.im2col(part, kh, kw, sh, sw, slab.pads)
    return cols.reshape(-1, kh * kw * x.shape[-1])


def forward(x, kernel, out_shape, pads, strides, finish):
    """``y = finish(X Wm)`` slab by slab.

    Parameters
    ----------
    x : ndarray (N, H, W, C)
    kernel : ndarray (kh, kw, C, K)
    out_shape : (N, Ho, Wo, K)
    pads : (top, bottom, left, right)
    strides : (sh, sw)
    finish : callable, ``z (rows, K) -> y`` the bias and activation, in place (or returning a new array)

    Returns
    -------
    y : ndarray, ``out_shape``
    """
    kh, kw, c, k = kernel.shape
    sh, sw = strides
    wm = kernel.reshape(kh * kw * c, k)
    y = np.empty(out_shape, dtype=np.result_type(x.dtype, kernel.dtype))
    row_bytes = out_shape[2] * kh * kw * c * x.itemsize
    for slab in slabs(x.shape, out_shape[1:3], kh, sh, pads, row_bytes, FORWARD_SLAB_BYTES):
        z = y[slab.n0:slab.n1, slab.i0:slab.i1].reshape(-1, k)  # a view: whole images or one image's rows
        _product(_windows(x, slab, kh, kw, sh, sw), wm, out=z)
        done = finish(z)
        if done is not z:
            z[...] = done
    return y


def backward(x, gz, kernel, pads, strides, input_grad):
    """``∂L/∂kernel`` and, when ``input_grad``, ``∂L/∂x``, slab by slab.

    Parameters
    ----------
    x : ndarray (N, H, W, C), the forward's input
    gz : ndarray (N, Ho, Wo, K), ``∂L/∂z`` (after the activation's derivative)
    kernel : ndarray (kh, kw, C, K)
    pads, strides : as in :func:`forward`
    input_grad : bool

    Returns
    -------
    gkernel : ndarray (kh, kw, C, K)
    gx : ndarray (N, H, W, C), or None
    """
    kh, kw, c, k = kernel.shape
    sh, sw = strides
    wm = kernel.reshape(kh * kw * c, k)
    gwm = np.zeros_like(wm, dtype=gz.dtype)
    gx = np.zeros(x.shape, dtype=gz.dtype) if input_grad else None
    row_bytes = gz.shape[2] * kh * kw * c * x.itemsize
    for slab in slabs(x.shape, gz.shape[1:3], kh, sh, pads, row_bytes, BACKWARD_SLAB_BYTES):
        g = gz[slab.n0:slab.n1, slab.i0:slab.i1].reshape(-1, k)
        gwm += _product(_windows(x, slab, kh, kw, sh, sw).T, g)
        if input_grad:
            part_shape = (slab.n1 - slab.n0, slab.r1 - slab.r0, x.shape[2], c)
            gcols = _product(g, wm.T).reshape(part_shape[0], slab.i1 - slab.i0, gz.shape[2], kh, kw, c)
            gx[slab.n0:slab.n1, slab.r0:slab.r1] += kernels.col2im(gcols, part_shape, kh, kw, sh, sw, slab.pads)
    return gwm.reshape(kernel.shape), gx
