"""2-D convolution on NHWC arrays through im2col and one matrix product.

Notation: input x (N, H, W, C); kernel W (kh, kw, C, K); bias b (K,); strides (sh, sw);
output y (N, Ho, Wo, K). With ``xpad`` the padded input (zeros):

.. math::

    z[n, i, j, k] = b_k + \\sum_{a, b, c} xpad[n, i s_h + a, j s_w + b, c] \\; W[a, b, c, k], \\qquad y = f(z)

im2col gathers each window into a row, so with ``X = cols.reshape(N Ho Wo, kh kw C)`` and
``Wm = W.reshape(kh kw C, K)`` the forward pass is ``Z = X Wm + b``. Backward, with ``G = ∂L/∂Z``
(after the activation's derivative):

.. math::

    ∂L/∂Wm = X^T G, \\qquad ∂L/∂b = \\sum_{rows} G, \\qquad ∂L/∂X = G Wm^T,

and ``∂L/∂x = col2im(∂L/∂X)``, which adds overlapping windows back (the transpose of im2col).
A 1×1 convolution without padding needs no im2col: it is ``x[:, ::sh, ::sw].reshape(-1, C) @ W[0, 0]``.

Backward needs ``X`` again. A k×k convolution keeps it when it is small (:func:`tinynet.set_keep_im2col`,
default up to 4 MiB) and otherwise keeps only ``x`` and runs im2col once more in backward: ``X`` is kh·kw times
the input's size, and keeping every one was half of what GoogLeNet's forward kept for backward. On the CPU with
fast paths on, such a matrix is never built whole: forward and backward gather and multiply it a slab of rows
at a time (:mod:`tinynet.layers.conv_slabs`). With fast
paths on (:func:`tinynet.set_fast_paths`) the bias and the ReLU are one pass forward and one backward
(:func:`~tinynet.layers.activations.bias_activation`), and a layer that reads only model inputs skips ``∂L/∂x``
when training asks it to (``input_grad=False``). Large enough 3×3 stride-1 convolutions on the CPU take
Winograd's F(4×4, 3×3) instead of im2col (:mod:`tinynet.layers.conv_winograd`, a fast path too), in forward
and in backward.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend, kernels
from ..backend import get_array_module
from ..checks import check_flag
from . import activations, conv_slabs, conv_winograd
from .base import Layer
from .conv_utils import normalize_padding, normalize_pair, window_geometry
from .initializers import glorot_uniform


class ConvCache(NamedTuple):
    """What :meth:`Conv2D._forward` keeps for the backward pass of one call."""

    x: object        # the input (N, H, W, C): backward gathers its windows again when cols2d is None
    pads: tuple      # (top, bottom, left, right)
    cols2d: object   # the input's windows as rows, (N·Ho·Wo, kh·kw·C): X in ∂L/∂Wm = X^T G; None for a k×k
                     # convolution whose matrix is over tinynet.set_keep_im2col's limit (a 1×1 keeps its view)
    y: object        # the output (N, Ho, Wo, K): the activation's derivative reads it
    tiles: object = None  # the Winograd path's input tiles V (36, T, C), when forward took it (else None) and
                          # they are within set_keep_im2col's limit; backward transforms x again otherwise
    winograd: bool = False  # whether forward took the Winograd path (conv_winograd), which backward follows
    x_norm: float = 0.0     # ‖x‖ when forward took the Winograd path: backward's overflow bound reads it


class Conv2D(Layer):
    """2-D convolution (Keras' ``Conv2D``, channels_last).

    Parameters
    ----------
    filters : int
        K, the number of output channels.
    kernel_size : int or (kh, kw)
    strides : int or (sh, sw), default 1
    padding : {'valid', 'same'}
        'same' pads as Keras: out = ceil(n / s), the odd padding cell at the bottom/right.
    activation : {None, 'relu', 'softmax', 'sigmoid', 'tanh', 'linear'}
    use_bias : bool
    name : str, optional

    Shapes
    ------
    input (N, H, W, C) → output (N, Ho, Wo, K); weights: kernel (kh, kw, C, K), bias (K,).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.filters = self._check_int("filters", filters)
        self.kernel_size = normalize_pair(kernel_size, "kernel_size", self)
        self.strides = normalize_pair(strides, "strides", self)
        self.padding = normalize_padding(padding, self)
        self.activation = activations.canonical(activation)
        self._act, self._act_grad = activations.get(activation, self.label)
        self.use_bias = check_flag(self.label, "use_bias", use_bias, ValueError, integers=True)

    def compute_output_shape(self, input_shape):
        (ho, wo), _ = window_geometry(self, input_shape, self.kernel_size, self.strides, self.padding)
        return (ho, wo, self.filters)

    def build(self, input_shape):
        kh, kw = self.kernel_size
        c = input_shape[-1]
        shape = (kh, kw, c, self.filters)
        self.add_weight("kernel", glorot_uniform(shape, kh * kw * c, kh * kw * self.filters))
        if self.use_bias:
            self.add_weight("bias", np.zeros(self.filters))

    def _geometry(self, x_shape):
        return window_geometry(self, tuple(x_shape[1:]), self.kernel_size, self.strides, self.padding)

    def _is_pointwise(self, pads):
        return self.kernel_size == (1, 1) and not any(pads)

    def _windows(self, x, pads):
        """The input's windows as the rows of a matrix: ``X`` (N·Ho·Wo, kh·kw·C), by im2col, or for a 1×1
        convolution without padding by a reshape (a view of ``x`` when the strides are 1)."""
        kh, kw = self.kernel_size
        sh, sw = self.strides
        if self._is_pointwise(pads):
            sub = x[:, ::sh, ::sw, :]
            return sub.reshape(-1, sub.shape[-1])
        cols = kernels.im2col(x, kh, kw, sh, sw, pads)
        return cols.reshape(-1, kh * kw * x.shape[-1])

    def _forward(self, x, training=False):
        if x.shape[-1] != self.weights[0].shape[2]:
            raise self._shape_error(f"expected {self.weights[0].shape[2]} input channels", tuple(x.shape[1:]))
        (ho, wo), pads = self._geometry(x.shape)
        kh, kw = self.kernel_size
        n, c = x.shape[0], x.shape[-1]
        bias = self.weights[1] if self.use_bias else None
        if conv_winograd.applies(self, x, (ho, wo), pads):
            dense = np.ascontiguousarray(x)  # a column block of a fused 1×1 group's output is a strided view
            x_norm = conv_winograd.norm(dense)
            if (conv_winograd.products_fit(x_norm, conv_winograd.norm(self.weights[0]), dense.dtype)
                    and conv_winograd.range_fits(dense)):
                z, tiles = conv_winograd.convolve(dense, self.weights[0], pads, (n, ho, wo, self.filters))
                y = activations.bias_activation(z, bias, self.activation, self._act)
                keep = tiles if tiles is not None and backend.keeps_im2col(tiles.nbytes) else None
                return y, ConvCache(x, pads, None, y, keep, True, x_norm)
        if not self._is_pointwise(pads) and conv_slabs.applies(x, n * ho * wo * kh * kw * c * x.itemsize):
            y = conv_slabs.forward(x, self.weights[0], (n, ho, wo, self.filters), pads, self.strides,
                                   lambda z: activations.bias_activation(z, bias, self.activation, self._act))
            return y, ConvCache(x, pads, None, y)
        cols2d = self._windows(x, pads)
        z = cols2d @ self.weights[0].reshape(kh * kw * c, self.filters)
        y = activations.bias_activation(z, bias, self.activation, self._act).reshape(n, ho, wo, self.filters)
        keep = self._is_pointwise(pads) or backend.keeps_im2col(cols2d.nbytes)
        return y, ConvCache(x, pads, cols2d if keep else None, y)

    can_skip_input_grad = True

    def _backward(self, gy, cache: ConvCache, input_grad=True):
        kh, kw = self.kernel_size
        sh, sw = self.strides
        x_shape, pads = cache.x.shape, cache.pads
        n, h, w, c = x_shape
        ho, wo = cache.y.shape[1], cache.y.shape[2]
        gz, gbias = activations.activation_bias_backward(gy, cache.y, self.activation, self._act_grad,
                                                         self.use_bias)
        if cache.winograd and self._winograd_backward_fits(gz, cache):  # else im2col, from the kept input
            return self._backward_winograd(gz, gbias, cache, input_grad)
        if cache.cols2d is None and conv_slabs.applies(cache.x, n * ho * wo * kh * kw * c * cache.x.itemsize):
            gkernel, gx = conv_slabs.backward(cache.x, gz.reshape(cache.y.shape), self.weights[0], pads,
                                              self.strides, input_grad)
            return gx, [gkernel] + ([gbias] if self.use_bias else [])
        gz = gz.reshape(-1, self.filters)
        cols2d = cache.cols2d if cache.cols2d is not None else self._windows(cache.x, pads)
        grads = [(cols2d.T @ gz).reshape(self.weights[0].shape)]
        del cols2d  # a rebuilt im2col matrix is freed before the input gradient's
        if self.use_bias:
            grads.append(gbias)
        if not input_grad:
            return None, grads
        gcols = gz @ self.weights[0].reshape(kh * kw * c, self.filters).T
        if self._is_pointwise(pads):
            if (sh, sw) == (1, 1):
                gx = gcols.reshape(x_shape)
            else:
                xp = get_array_module(gcols)
                gx = xp.zeros(x_shape, dtype=gcols.dtype)
                gx[:, ::sh, ::sw, :] = gcols.reshape(n, ho, wo, c)
        else:
            gx = kernels.col2im(gcols.reshape(n, ho, wo, kh, kw, c), x_shape, kh, kw, sh, sw, pads)
        return gx, grads

    def _winograd_backward_fits(self, gz, cache: ConvCache):
        """Whether backward's Winograd products stay finite: ``∂L/∂z`` with the kernel (the input's gradient)
        and with the input (the kernel's gradient), by :func:`conv_winograd.products_fit`. (The dynamic-range
        guard, :func:`conv_winograd.range_fits`, reads forward's input only; see :mod:`.conv_winograd`.)"""
        g_norm = conv_winograd.norm(gz)
        return (conv_winograd.products_fit(g_norm, conv_winograd.norm(self.weights[0]), gz.dtype)
                and conv_winograd.products_fit(g_norm, cache.x_norm, gz.dtype))

    def _backward_winograd(self, gz, gbias, cache: ConvCache, input_grad):
        """Backward of a forward that took the Winograd path (see :mod:`.conv_winograd`)."""
        gz = gz.reshape(cache.y.shape)
        grads = [conv_winograd.kernel_gradient_of(gz, cache.tiles, cache.x, cache.pads)]
        if self.use_bias:
            grads.append(gbias)
        if not input_grad:
            return None, grads
        return conv_winograd.input_gradient(gz, self.weights[0], cache.pads, cache.x.shape), grads

    def count_macs(self, input_shape, output_shape):
        kh, kw = self.kernel_size
        return int(np.prod(output_shape)) * kh * kw * int(input_shape[-1])

    def get_config(self):
        return {"name": self.name, "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "activation": self.activation,
                "use_bias": self.use_bias}
