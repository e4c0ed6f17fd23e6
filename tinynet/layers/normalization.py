"""Batch normalisation and local response normalisation (across channels).

BatchNormalization, with statistics over every axis but ``axis`` (m values each):

.. math::

    \\hat x = (x − μ) / \\sqrt{σ^2 + ε}, \\quad y = γ \\hat x + β

In training μ, σ² are the batch mean and (biased) variance and the moving statistics follow Keras' rule
``moving = moving · momentum + batch · (1 − momentum)``, except after a batch whose mean or variance holds a
NaN or an inf: then both moving statistics stay as they were (the output still shows the NaN); otherwise
μ, σ² are the moving statistics.
Backward, with ``g = ∂L/∂y``:

.. math::

    ∂L/∂γ = \\sum g \\hat x, \\quad ∂L/∂β = \\sum g, \\quad
    ∂L/∂x = \\frac{γ}{m\\sqrt{σ^2+ε}} \\left(m g − \\sum g − \\hat x \\sum g \\hat x\\right) \\text{ (training)},
    \\quad ∂L/∂x = \\frac{γ g}{\\sqrt{σ^2+ε}} \\text{ (inference)}.

LocalResponseNormalization (Caffe's ACROSS_CHANNELS, as the GoogLeNet paper uses), over a window W(c) of
``size`` channels centred on c (⌊(size−1)/2⌋ before):

.. math::

    s_c = k + \\frac{α}{size} \\sum_{j \\in W(c)} x_j^2, \\quad y_c = x_c s_c^{−β}, \\qquad
    ∂L/∂x_i = g_i s_i^{−β} − \\frac{2αβ}{size} x_i \\sum_{j: i \\in W(j)} g_j x_j s_j^{−β−1}
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from ..backend import get_array_module
from .base import Layer


class BatchNormCache(NamedTuple):
    """What :meth:`BatchNormalization._forward` keeps for the backward pass of one call."""

    x_hat: object        # (x − μ) / √(σ² + ε), shape of the input
    inv_std: object      # 1 / √(σ² + ε), (C,)
    axis: int            # the feature axis of the arrays (batch axis counted)
    reduce_axes: tuple   # every other axis: the statistics' and the parameter gradients' sums run over them
    training: bool       # batch statistics (their gradient flows back) or the moving ones (constants)


class BatchNormalization(Layer):
    """Batch normalisation (Keras' ``BatchNormalization``).

    Parameters
    ----------
    axis : int, default -1
        The feature axis (channels for NHWC); not the batch axis.
    momentum : float in [0, 1], default 0.99
    epsilon : float >= 0, default 1e-3

    Shapes
    ------
    any (N, ..., C) → same; weights gamma, beta (trainable), moving_mean, moving_variance (not trainable), each (C,).
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.axis = self._check_axis(axis)
        self.momentum = self._check_float("momentum", momentum, low=0.0, high=1.0)
        self.epsilon = self._check_float("epsilon", epsilon, low=0.0)

    def _feature_axis(self, ndim):
        axis = self.axis % ndim
        if axis == 0:
            raise ValueError(f"{self.label}: axis {self.axis} is the batch axis")
        return axis

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise self._shape_error(f"axis {self.axis} is not a feature axis", input_shape)
        if self.built and input_shape[self.axis % rank - 1] != self.weights[0].shape[0]:
            raise self._shape_error(f"expected {self.weights[0].shape[0]} features on axis {self.axis}",
                                    input_shape)
        return tuple(input_shape)

    def build(self, input_shape):
        c = input_shape[self.axis % (len(input_shape) + 1) - 1]
        self.add_weight("gamma", np.ones(c))
        self.add_weight("beta", np.zeros(c))
        self.add_weight("moving_mean", np.zeros(c), trainable=False)
        self.add_weight("moving_variance", np.ones(c), trainable=False)

    def _broadcast(self, v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)

    def _forward(self, x, training=False):
        xp = get_array_module(x)
        axis = self._feature_axis(x.ndim)
        reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
        gamma, beta, moving_mean, moving_var = self.weights
        if training:
            if x.shape[0] == 0:
                raise ValueError(f"{self.label}: empty batch: batch statistics need at least one example")
            mean = x.mean(axis=reduce_axes)
            var = ((x - self._broadcast(mean, x.ndim, axis)) ** 2).mean(axis=reduce_axes)
        else:
            mean, var = moving_mean, moving_var
        inv_std = 1.0 / xp.sqrt(var + x.dtype.type(self.epsilon))
        x_hat = (x - self._broadcast(mean, x.ndim, axis)) * self._broadcast(inv_std, x.ndim, axis)
        y = x_hat * self._broadcast(gamma, x.ndim, axis) + self._broadcast(beta, x.ndim, axis)
        if training:
            # a batch with a non-finite mean or variance leaves both statistics alone; xp.where keeps this
            # on the device (no synchronisation), the test is O(C)
            m = self.momentum
            finite = xp.isfinite(mean).all() & xp.isfinite(var).all()
            self.weights[2] = xp.where(finite, moving_mean * m + mean.astype(moving_mean.dtype) * (1.0 - m),
                                       moving_mean)
            self.weights[3] = xp.where(finite, moving_var * m + var.astype(moving_var.dtype) * (1.0 - m),
                                       moving_var)
        return y, BatchNormCache(x_hat, inv_std, axis, reduce_axes, training)

    def _backward(self, gy, cache: BatchNormCache):
        x_hat, axis, reduce_axes = cache.x_hat, cache.axis, cache.reduce_axes
        gamma = self.weights[0]
        g_gamma = (gy * x_hat).sum(axis=reduce_axes)
        g_beta = gy.sum(axis=reduce_axes)
        scale = self._broadcast(gamma * cache.inv_std, gy.ndim, axis)
        if cache.training:
            m = gy.size // gy.shape[axis]
            gx = scale * (gy - self._broadcast(g_beta / m, gy.ndim, axis)
                          - x_hat * self._broadcast(g_gamma / m, gy.ndim, axis))
        else:
            gx = gy * scale
        return gx, [g_gamma, g_beta, None, None]

    def get_config(self):
        return {"name": self.name, "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon}


class LRNCache(NamedTuple):
    """What :meth:`LocalResponseNormalization._forward` keeps for the backward pass of one call."""

    x: object       # the input (N, H, W, C)
    scale: object   # s = k + α/size · Σ_{W(c)} x², shape of x
    y: object       # the output x · s^(−β)


class LocalResponseNormalization(Layer):
    """Local response normalisation across channels (the GoogLeNet paper's Caffe LRN).

    Parameters
    ----------
    size : int >= 1, default 5
        Channels in each window.
    alpha : float >= 0, default 1e-4
        Divided by ``size`` (Caffe's definition).
    beta : float >= 0, default 0.75
    k : float > 0, default 1.0
        With ``alpha >= 0`` it keeps the scale ``s >= k > 0``, so ``s^(−beta)`` is always finite.

    Shapes
    ------
    (N, H, W, C) → (N, H, W, C); channels on the last axis.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.size = self._check_int("size", size)
        self.alpha = self._check_float("alpha", alpha, low=0.0)
        self.beta = self._check_float("beta", beta, low=0.0)
        self.k = self._check_float("k", k, low=0.0, low_open=True)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise self._shape_error("expected channels on the last axis", input_shape)
        return tuple(input_shape)

    def _forward(self, x, training=False):
        y, scale = kernels.lrn_forward(x, self.size, self.alpha, self.beta, self.k)
        return y, LRNCache(x, scale, y)

    def _backward(self, gy, cache: LRNCache):
        return kernels.lrn_backward(gy, cache.x, cache.y, cache.scale, self.size, self.alpha, self.beta), []

    def get_config(self):
        return {"name": self.name, "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
