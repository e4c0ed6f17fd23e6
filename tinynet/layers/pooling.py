"""Max, average and global-average pooling on NHWC arrays.

Notation: x (N, H, W, C), window (ph, pw), strides (sh, sw), y (N, Ho, Wo, C); ``win(i, j)`` is the set of
real (unpadded) input cells under output cell (i, j).

Max pooling (padding cells are −∞, so they never win):

.. math::

    y[n,i,j,c] = \\max_{(p,q) \\in win(i,j)} x[n,p,q,c], \\qquad
    ∂L/∂x[n,p,q,c] = \\sum_{(i,j): (p,q) = argmax_{win(i,j)}} ∂L/∂y[n,i,j,c]

Ties go to the first maximum in row-major window order. A window holding a NaN outputs NaN, as in PyTorch
and Keras; its gradient goes to the window's first NaN, tinynet's own convention (PyTorch routes it to the
last NaN, Keras and JAX differently again). Average pooling divides by the number of real cells,
``|win(i, j)|``, as Keras does with 'same' padding:

.. math::

    y[n,i,j,c] = \\frac{1}{|win(i,j)|} \\sum_{(p,q) \\in win(i,j)} x[n,p,q,c], \\qquad
    ∂L/∂x[n,p,q,c] = \\sum_{(i,j): (p,q) \\in win(i,j)} \\frac{∂L/∂y[n,i,j,c]}{|win(i,j)|}
"""
from __future__ import annotations

from typing import NamedTuple

from .. import kernels
from ..backend import get_array_module
from .base import Layer, unique_name
from .conv_utils import normalize_padding, normalize_pair, window_geometry


class MaxPoolCache(NamedTuple):
    """What :meth:`MaxPool2D._forward` keeps for the backward pass of one call."""

    x_shape: tuple   # (N, H, W, C) of the input
    argmax: object   # int8 or int32 (N, Ho, Wo, C): a * pw + b, the window cell (a, b) that won


class AvgPoolCache(NamedTuple):
    """What :meth:`AvgPool2D._forward` keeps for the backward pass of one call."""

    x_shape: tuple   # (N, H, W, C) of the input


class GlobalAvgPoolCache(NamedTuple):
    """What :meth:`GlobalAveragePooling2D._forward` keeps for the backward pass of one call."""

    x_shape: tuple   # (N, H, W, C) of the input


class _Pool2D(Layer):
    #: automatic name, as Keras names these layers (``max_pooling2d``, ``average_pooling2d``)
    keras_name = None

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", name=None, dtype=None):
        if name is None and self.keras_name is not None:
            name = unique_name(self.keras_name)
        super().__init__(name=name, dtype=dtype)
        self.pool_size = normalize_pair(pool_size, "pool_size", self)
        self.strides = normalize_pair(strides if strides is not None else self.pool_size, "strides", self)
        self.padding = normalize_padding(padding, self)

    def compute_output_shape(self, input_shape):
        (ho, wo), _ = window_geometry(self, input_shape, self.pool_size, self.strides, self.padding)
        return (ho, wo, input_shape[-1])

    def _window_args(self, x_shape):
        _, pads = window_geometry(self, tuple(x_shape[1:]), self.pool_size, self.strides, self.padding)
        return (*self.pool_size, *self.strides, pads)

    def get_config(self):
        return {"name": self.name, "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}


class MaxPool2D(_Pool2D):
    """Max pooling (Keras' ``MaxPooling2D``); 'same' pads with −inf; a window with a NaN gives NaN.

    Parameters
    ----------
    pool_size : int or (ph, pw), default (2, 2)
    strides : int or (sh, sw), default ``pool_size``
    padding : {'valid', 'same'}

    Shapes
    ------
    (N, H, W, C) → (N, Ho, Wo, C)
    """

    keras_name = "max_pooling2d"

    def _forward(self, x, training=False):
        args = self._window_args(x.shape)
        y, argmax = kernels.maxpool_forward(x, *args)
        return y, MaxPoolCache(x.shape, argmax)

    def _backward(self, gy, cache: MaxPoolCache):
        return kernels.maxpool_backward(gy, cache.argmax, cache.x_shape, *self._window_args(cache.x_shape)), []


class AvgPool2D(_Pool2D):
    """Average pooling (Keras' ``AveragePooling2D``); 'same' divides by the number of real cells.

    Parameters
    ----------
    pool_size : int or (ph, pw), default (2, 2)
    strides : int or (sh, sw), default ``pool_size``
    padding : {'valid', 'same'}

    Shapes
    ------
    (N, H, W, C) → (N, Ho, Wo, C)
    """

    keras_name = "average_pooling2d"

    def _forward(self, x, training=False):
        return kernels.avgpool_forward(x, *self._window_args(x.shape)), AvgPoolCache(x.shape)

    def _backward(self, gy, cache: AvgPoolCache):
        return kernels.avgpool_backward(gy, cache.x_shape, *self._window_args(cache.x_shape)), []


class GlobalAveragePooling2D(Layer):
    """Mean over height and width: (N, H, W, C) → (N, C).

    .. math:: y[n,c] = \\frac{1}{HW} \\sum_{p,q} x[n,p,q,c], \\qquad ∂L/∂x[n,p,q,c] = \\frac{∂L/∂y[n,c]}{HW}
    """

    def compute_output_shape(self, input_shape):
        self._require_rank(input_shape, 3, "(batch, height, width, channels)")
        return (input_shape[-1],)

    def _forward(self, x, training=False):
        return x.mean(axis=(1, 2)), GlobalAvgPoolCache(x.shape)

    def _backward(self, gy, cache: GlobalAvgPoolCache):
        n, h, w, c = cache.x_shape
        share = gy / gy.dtype.type(h * w)
        xp = get_array_module(gy)
        return xp.broadcast_to(share[:, None, None, :], cache.x_shape).copy(), []


MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
