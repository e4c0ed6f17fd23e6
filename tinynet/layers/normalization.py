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

from .. import backend, kernels
from ..backend import get_array_module, to_numpy
from ..checks import check_flag
from .base import Layer


class BatchNormCache(NamedTuple):
    """What :meth:`BatchNormalization._forward` keeps for the backward pass of one call."""

    x_hat: object        # (x − μ) / √(σ² + ε), shape of the input
    inv_std: object      # 1 / √(σ² + ε), (C,)
    axis: int            # the feature axis of the arrays (batch axis counted)
    reduce_axes: tuple   # every other axis: the statistics' and the parameter gradients' sums run over them
    training: bool       # batch statistics (their gradient flows back) or the moving ones (constants)
    communicator: object = None  # synchronized: the communicator the statistics were summed over (None: local)
    count: int = 0       # synchronized: m, the values per channel over every rank


class BatchNormalization(Layer):
    """Batch normalisation (Keras' ``BatchNormalization``), optionally synchronized across processes.

    Parameters
    ----------
    axis : int, default -1
        The feature axis (channels for NHWC); not the batch axis.
    momentum : float in [0, 1], default 0.99
    epsilon : float >= 0, default 1e-3
    synchronized : bool, default False
        Keras' argument. In data-parallel training (:mod:`tinynet.distributed`) the batch statistics are those
        of the global batch, over every rank, rather than of each rank's share; N ranks with B examples each then
        train exactly as one process with N·B. Without a communicator (one process) the layer is plain batch
        normalisation, bit for bit.

    Attributes
    ----------
    communicator : tinynet.distributed.Communicator or None
        Set by the training loop (or :func:`tinynet.distributed.synchronize_batch_norm`) for the duration of a
        data-parallel run when ``synchronized``; ``None`` otherwise.

    Notes
    -----
    **Synchronized statistics.** Rank r holds :math:`m_r` values per channel (its examples times the other
    axes), with mean :math:`\\mu_r` and sum of squared deviations :math:`M_r = \\sum (x − \\mu_r)^2` computed
    locally in two passes. The ranks exchange :math:`(m_r, \\mu_r, M_r)` (an all-gather of 2C + 1 numbers
    each, in float64) and each combines them in rank order (Chan et al.'s parallel variance, no cancellation
    of large sums):

    .. math::

        m = \\sum_r m_r, \\quad μ = \\frac{1}{m} \\sum_r m_r μ_r, \\quad
        σ^2 = \\frac{1}{m} \\Big( \\sum_r M_r + \\sum_r m_r (μ_r − μ)^2 \\Big)

    so every rank gets the same μ and σ² bit for bit, and its moving statistics stay equal to every other
    rank's. Backward needs two more sums over all ranks, :math:`\\sum g` and :math:`\\sum g \\hat x` (an
    all-gather of 2C numbers each, summed in rank order):

    .. math::

        ∂L/∂x_i = \\frac{γ}{\\sqrt{σ^2+ε}} \\Big( g_i − \\frac{1}{m}\\sum_{\\text{all ranks}} g
                  − \\hat x_i \\frac{1}{m} \\sum_{\\text{all ranks}} g \\hat x \\Big)

    The parameter gradients :math:`∂L/∂γ = \\sum g \\hat x`, :math:`∂L/∂β = \\sum g` are returned as the local
    sums: the gradient all-reduce that follows the backward pass adds them over the ranks, like every other
    weight's. A rank with no example in a (last, small) global batch still takes part in both exchanges with
    zeros (:meth:`join_forward_without_data`, :meth:`join_backward_without_data`).

    **Fast path.** With :func:`tinynet.set_fast_paths` on, the feature axis last, a C-contiguous input of the
    weights' dtype and no communicator, forward and backward run :func:`tinynet.kernels.batchnorm_forward` and
    :func:`tinynet.kernels.batchnorm_backward` (three passes over the data forward, two backward, not seven each);
    they do what the code below does, in the same order, so the numbers are the same. Anything else runs the
    code below, which stays the reference.

    Shapes
    ------
    any (N, ..., C) → same; weights gamma, beta (trainable), moving_mean, moving_variance (not trainable), each (C,).
    """

    weights_fix_last_axis = False  # they fix the feature axis, which compute_output_shape checks

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, synchronized=False, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.axis = self._check_axis(axis)
        self.momentum = self._check_float("momentum", momentum, low=0.0, high=1.0)
        self.epsilon = self._check_float("epsilon", epsilon, low=0.0)
        check_flag(self.label, "synchronized", synchronized, ValueError)
        self.synchronized = bool(synchronized)
        self.communicator = None

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

    def prepare_weights(self, values):
        """:meth:`Layer.prepare_weights`, and ``moving_variance`` must be a variance: every value >= 0, and > 0
        where ``epsilon`` is 0 (else inference divides by ``sqrt(moving_variance + epsilon)`` of a negative
        number or of 0, and predicts NaN or inf).

        Raises
        ------
        ValueError
            Naming the layer and the weight, with the smallest value; the layer is unchanged.
        """
        prepared = super().prepare_weights(values)
        if not prepared:  # not built yet: no weights to check
            return prepared
        variance = prepared[self.weight_names.index("moving_variance")]
        smallest = float(get_array_module(variance).min(variance)) if variance.size else 0.0
        if smallest < 0 or (self.epsilon == 0 and smallest == 0):
            bound = ">= 0" if self.epsilon > 0 else "> 0 (epsilon is 0)"
            raise ValueError(f"{self.label}: weight 'moving_variance' must be {bound}, a variance; got a smallest "
                             f"value of {smallest:g}")
        return prepared

    def _broadcast(self, v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)

    def _sync_communicator(self):
        """The communicator to sum the statistics over, or None (not synchronized, or a single process)."""
        comm = self.communicator if self.synchronized else None
        return comm if comm is not None and comm.size > 1 else None

    @staticmethod
    def _combine_moments(gathered, channels):
        """``(m, μ, σ²)`` from every rank's ``[m_r, μ_r (C), M_r (C)]`` (rows in rank order; float64)."""
        counts, means, m2 = gathered[:, 0], gathered[:, 1:1 + channels], gathered[:, 1 + channels:]
        total = counts.sum()
        mean = (counts[:, None] * means).sum(axis=0) / total
        var = (m2.sum(axis=0) + (counts[:, None] * (means - mean) ** 2).sum(axis=0)) / total
        return int(total), mean, var

    def _update_moving(self, xp, mean, var):
        """``moving = moving · momentum + batch · (1 − momentum)``, unless the batch's statistics are not finite."""
        _, _, moving_mean, moving_var = self.weights
        # a batch with a non-finite mean or variance leaves both statistics alone; xp.where keeps this
        # on the device (no synchronisation), the test is O(C)
        m = self.momentum
        finite = xp.isfinite(mean).all() & xp.isfinite(var).all()
        self.weights[2] = xp.where(finite, moving_mean * m + mean.astype(moving_mean.dtype) * (1.0 - m), moving_mean)
        self.weights[3] = xp.where(finite, moving_var * m + var.astype(moving_var.dtype) * (1.0 - m), moving_var)

    def _fused(self, x, axis):
        """Whether :func:`tinynet.kernels.batchnorm_forward` runs this call: fast paths on, the features on the
        last axis of a C-contiguous array, and the input and the four weights of one dtype (not synchronized
        across ranks: the caller checks that)."""
        return (backend.fast_paths_enabled() and axis == x.ndim - 1 and x.flags.c_contiguous
                and all(w.dtype == x.dtype for w in self.weights))

    def _forward(self, x, training=False):
        xp = get_array_module(x)
        axis = self._feature_axis(x.ndim)
        reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
        gamma, beta, moving_mean, moving_var = self.weights
        comm = self._sync_communicator() if training else None
        count = 0
        if training and x.shape[0] == 0:
            raise ValueError(f"{self.label}: empty batch: batch statistics need at least one example")
        if comm is None and self._fused(x, axis):  # the same numbers as the code below, in fewer passes
            y, x_hat, mean, var, inv_std = kernels.batchnorm_forward(
                x, gamma, beta, None if training else moving_mean, None if training else moving_var, self.epsilon)
            if training:
                self._update_moving(xp, mean, var)
            return y, BatchNormCache(x_hat, inv_std, axis, reduce_axes, training)
        if training:
            mean = x.mean(axis=reduce_axes)
            x_hat = x - self._broadcast(mean, x.ndim, axis)  # x − μ for now: normalised in place below
            var = (x_hat * x_hat).mean(axis=reduce_axes)
            if comm is not None:  # this rank's (m_r, μ_r, M_r) → the global batch's μ, σ² (see the notes)
                local_count = x.size // x.shape[axis]
                mine = np.concatenate([[float(local_count)], to_numpy(mean).astype(np.float64),
                                       to_numpy(var).astype(np.float64) * local_count])
                count, mean64, var64 = self._combine_moments(comm.allgather(mine), x.shape[axis])
                mean, var = xp.asarray(mean64.astype(x.dtype)), xp.asarray(var64.astype(x.dtype))
                x_hat = x - self._broadcast(mean, x.ndim, axis)
        else:
            mean, var = moving_mean, moving_var
            x_hat = x - self._broadcast(mean, x.ndim, axis)
        inv_std = 1.0 / xp.sqrt(var + x.dtype.type(self.epsilon))
        x_hat *= self._broadcast(inv_std, x.ndim, axis)  # in place: one array of the input's size, not three
        y = x_hat * self._broadcast(gamma, x.ndim, axis)
        y += self._broadcast(beta, x.ndim, axis)
        if training:
            self._update_moving(xp, mean, var)
        return y, BatchNormCache(x_hat, inv_std, axis, reduce_axes, training, comm, count)

    def _backward(self, gy, cache: BatchNormCache):
        x_hat, axis, reduce_axes = cache.x_hat, cache.axis, cache.reduce_axes
        gamma = self.weights[0]
        if (cache.communicator is None and axis == gy.ndim - 1 and backend.fast_paths_enabled()
                and gy.dtype == x_hat.dtype == gamma.dtype == cache.inv_std.dtype):
            gx, g_gamma, g_beta = kernels.batchnorm_backward(gy, x_hat, gamma, cache.inv_std, cache.training)
            return gx, [g_gamma, g_beta, None, None]
        g_gamma = (gy * x_hat).sum(axis=reduce_axes)
        g_beta = gy.sum(axis=reduce_axes)
        scale = self._broadcast(gamma * cache.inv_std, gy.ndim, axis)
        if cache.training:
            m = gy.size // gy.shape[axis]
            sum_g, sum_g_xhat = g_beta, g_gamma
            if cache.communicator is not None:  # Σ g and Σ g·x̂ over every rank (the parameter gradients stay local)
                m = cache.count
                sums = self._sum_over_ranks(cache.communicator, np.concatenate(
                    [to_numpy(g_beta).astype(np.float64), to_numpy(g_gamma).astype(np.float64)]))
                xp = get_array_module(gy)
                channels = gy.shape[axis]
                sum_g = xp.asarray(sums[:channels].astype(gy.dtype))
                sum_g_xhat = xp.asarray(sums[channels:].astype(gy.dtype))
            gx = gy - self._broadcast(sum_g / m, gy.ndim, axis)  # the same operations in the same order,
            gx -= x_hat * self._broadcast(sum_g_xhat / m, gy.ndim, axis)  # in place where they can be
            gx *= scale
        else:
            gx = gy * scale
        return gx, [g_gamma, g_beta, None, None]

    @staticmethod
    def _sum_over_ranks(comm, values):
        """``Σ_r values_r`` in rank order (an all-gather, then a sum every rank does alike: the same bits
        everywhere)."""
        return comm.allgather(values).sum(axis=0)

    # ------------------------------------------------------------- a rank without examples
    def join_forward_without_data(self):
        """Take part in the forward exchange of a synchronized training step on a rank that holds no example of
        the global batch (it contributes :math:`m_r = 0`), and update the moving statistics as every other rank
        does. A no-op when the layer is not synchronized or runs in one process."""
        comm = self._sync_communicator()
        if comm is None:
            return
        channels = self.weights[0].shape[0]
        _, mean64, var64 = self._combine_moments(comm.allgather(np.zeros(2 * channels + 1)), channels)
        xp = get_array_module(self.weights[0])
        dtype = self.weights[0].dtype
        self._update_moving(xp, xp.asarray(mean64.astype(dtype)), xp.asarray(var64.astype(dtype)))

    def join_backward_without_data(self):
        """Take part in the backward exchange (:math:`\\sum g`, :math:`\\sum g \\hat x`) with zeros, on a rank that
        holds no example of the global batch. A no-op when the layer is not synchronized or runs in one process."""
        comm = self._sync_communicator()
        if comm is not None:
            self._sum_over_ranks(comm, np.zeros(2 * self.weights[0].shape[0]))

    def get_config(self):
        config = {"name": self.name, "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon}
        if self.synchronized:  # only when set, so the configs of every existing model are unchanged
            config["synchronized"] = True
        return config


class LRNCache(NamedTuple):
    """What :meth:`LocalResponseNormalization._forward` keeps for the backward pass of one call: the input only.

    Backward needs the scale ``s`` and the output ``y`` too; it computes them again from ``x`` with the same
    kernel (the same bits), which costs one forward pass of the layer (under 1 % of a GoogLeNet train step)
    and saves two arrays of the input's size per layer: keeping them took 45 MiB of the 258 MiB that the paper
    GoogLeNet's forward keeps for backward at batch 8 (its second LRN's output is read by a max pool, which
    keeps only its argmax, so nothing else holds it)."""

    x: object       # the input (N, H, W, C)


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
        y, _ = kernels.lrn_forward(x, self.size, self.alpha, self.beta, self.k)
        return y, LRNCache(x)

    def _backward(self, gy, cache: LRNCache):
        y, scale = kernels.lrn_forward(cache.x, self.size, self.alpha, self.beta, self.k)  # as the forward's
        return kernels.lrn_backward(gy, cache.x, y, scale, self.size, self.alpha, self.beta), []

    def get_config(self):
        return {"name": self.name, "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
