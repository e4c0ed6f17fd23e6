"""Input, Dense, Flatten, Activation, ReLU, Softmax, Dropout and Concatenate.

Dense contracts the last axis of an input of any rank (as Keras): x (N, ..., D) → y (N, ..., U),

.. math::

    z = x W + b, \\quad y = f(z), \\qquad ∂L/∂W = X^T G,\\; ∂L/∂b = \\sum_{rows} G,\\; ∂L/∂x = G W^T

with X the input reshaped to (rows, D) and G = ∂L/∂z reshaped to (rows, U).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..checks import check_flag
from . import activations
from .base import Layer, Node, ShapeError, SymbolicTensor, format_shape
from .initializers import glorot_uniform


class InputLayer(Layer):
    """The graph's entry point; holds the per-example shape and dtype of the input."""

    def __init__(self, shape, dtype=None, name=None):
        super().__init__(name=name, dtype=dtype)
        self.shape = self._check_shape(shape)
        self.built = True
        self.output_shape = self.shape

    def _check_shape(self, shape):
        """The per-example shape as a tuple of ints >= 1; ``None`` (a variable size) is refused with the reason."""
        where = f"Input '{self.name}' (InputLayer)"
        if isinstance(shape, (int, np.integer)) or not isinstance(shape, (tuple, list)):
            raise ValueError(f"{where}: shape must be a tuple of per-example sizes such as (224, 224, 3) or (10,), "
                             f"got {shape!r}")
        shape = tuple(shape)
        if any(d is None for d in shape):
            raise ValueError(f"{where}: variable sizes are not supported: shape {shape} has None; give every "
                             f"per-example size (e.g. {tuple(224 if d is None else d for d in shape)}) and build "
                             f"one model per input size")
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 1
                   for d in shape):
            raise ValueError(f"{where}: every dimension must be an integer >= 1, got shape {shape}")
        return tuple(int(d) for d in shape)

    def __call__(self, inputs, training=False):
        """An InputLayer starts a graph; calling it on a tensor would put a second entry point inside one (which
        the model then calls disconnected), so that is refused, as Keras refuses it. On an array of its shape it
        is the identity."""
        if any(isinstance(t, SymbolicTensor) for t in (inputs if isinstance(inputs, (list, tuple)) else [inputs])):
            raise TypeError(f"{self.label}: an InputLayer is not called on tensors; Input(shape) makes a model's "
                            f"input, and the layers that follow are called on it")
        return super().__call__(inputs, training)

    def compute_output_shape(self, input_shape):
        if tuple(input_shape) != self.shape:
            raise self._shape_error(f"expected inputs of shape {format_shape(self.shape)}", input_shape)
        return self.shape

    def _forward(self, x, training=False):
        return x, None

    def _backward(self, gy, cache):
        return gy, []

    def get_config(self):
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype}


def Input(shape, dtype=None, name=None):
    """Return a symbolic tensor for a batch of inputs of per-example ``shape`` (Keras' ``Input``).

    ``dtype`` defaults to :func:`tinynet.floatx`; model inputs are cast to it. Every size must be fixed:
    ``Input((None, None, 3))`` raises ``ValueError`` (variable sizes are not supported).
    """
    layer = InputLayer(shape, dtype=dtype, name=name)
    tensor = SymbolicTensor(layer.shape, layer.dtype)
    tensor.node = Node(layer, [], tensor)
    return tensor


class DenseCache(NamedTuple):
    """What :meth:`Dense._forward` keeps for the backward pass of one call."""

    x: object   # the input (N, ..., D): X in ∂L/∂W = X^T G
    y: object   # the output (N, ..., U): the activation's derivative reads it


class Dense(Layer):
    """Fully connected layer on the last axis (Keras' ``Dense``).

    Parameters
    ----------
    units : int
    activation : {None, 'relu', 'softmax', 'sigmoid', 'tanh', 'linear'}
    use_bias : bool

    Shapes
    ------
    (N, ..., D) → (N, ..., units); kernel (D, units), bias (units,).
    """

    def __init__(self, units, activation=None, use_bias=True, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.units = self._check_int("units", units)
        self.activation = activations.canonical(activation)
        self._act, self._act_grad = activations.get(activation, self.label)
        self.use_bias = check_flag(self.label, "use_bias", use_bias, ValueError, integers=True)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise self._shape_error("expected an input of rank >= 2 (batch, ..., features)", input_shape)
        if self.built and input_shape[-1] != self.weights[0].shape[0]:
            raise self._shape_error(f"expected {self.weights[0].shape[0]} input features", input_shape)
        return tuple(input_shape[:-1]) + (self.units,)

    def build(self, input_shape):
        d = input_shape[-1]
        self.add_weight("kernel", glorot_uniform((d, self.units), d, self.units))
        if self.use_bias:
            self.add_weight("bias", np.zeros(self.units))

    def _forward(self, x, training=False):
        if x.shape[-1] != self.weights[0].shape[0]:
            raise self._shape_error(f"expected {self.weights[0].shape[0]} input features", tuple(x.shape[1:]))
        z = x @ self.weights[0]
        bias = self.weights[1] if self.use_bias else None
        y = activations.bias_activation(z, bias, self.activation, self._act)
        return y, DenseCache(x, y)

    can_skip_input_grad = True

    def _backward(self, gy, cache: DenseCache, input_grad=True):
        gz, gbias = activations.activation_bias_backward(gy, cache.y, self.activation, self._act_grad,
                                                         self.use_bias)
        x = cache.x
        x2d = x.reshape(-1, x.shape[-1])
        gz2d = gz.reshape(-1, self.units)
        grads = [x2d.T @ gz2d]
        if self.use_bias:
            grads.append(gbias)
        return (gz @ self.weights[0].T if input_grad else None), grads

    def count_macs(self, input_shape, output_shape):
        return int(np.prod(input_shape)) * self.units

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": self.activation, "use_bias": self.use_bias}


class FlattenCache(NamedTuple):
    """What :meth:`Flatten._forward` keeps for the backward pass of one call."""

    x_shape: tuple   # (N, d1, d2, ...) of the input


class Flatten(Layer):
    """Flatten each example in (H, W, C) order: (N, d1, d2, ...) → (N, d1·d2·...)."""

    def compute_output_shape(self, input_shape):
        return (math.prod(int(d) for d in input_shape),)  # Python ints: np.prod wraps past 2**63 to a wrong size

    def _forward(self, x, training=False):
        y = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # not -1: an empty batch has 0 rows
        return y, FlattenCache(x.shape)

    def _backward(self, gy, cache: FlattenCache):
        return gy.reshape(cache.x_shape), []


class ActivationCache(NamedTuple):
    """What :meth:`Activation._forward` (and :class:`ReLU`'s) keeps for the backward pass of one call."""

    y: object   # the output: every activation's derivative is written from it


class Activation(Layer):
    """Apply an activation by name: 'relu', 'softmax' (last axis), 'sigmoid', 'tanh', 'linear'."""

    def __init__(self, activation, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.activation = activations.canonical(activation)
        self._act, self._act_grad = activations.get(activation, self.label)

    def compute_output_shape(self, input_shape):
        if self.activation == "softmax" and len(input_shape) < 1:  # as Softmax(): never across the batch
            raise self._shape_error("softmax runs along the last axis, which for a 1-D input is the batch axis "
                                    "(each output would depend on the other examples); give the input a feature "
                                    "axis, e.g. Input((n,)) rather than Input(())", input_shape)
        return tuple(input_shape)

    def _forward(self, x, training=False):
        y = self._act(x)  # not overwrite: x belongs to the caller
        return y, ActivationCache(y)

    def _backward(self, gy, cache: ActivationCache):
        return self._act_grad(gy, cache.y), []

    def get_config(self):
        return {"name": self.name, "activation": self.activation}


class ReLU(Activation):
    """``y = max(x, 0)``; ``∂L/∂x = ∂L/∂y · [y > 0]`` (:func:`activations.relu` and
    :func:`activations.relu_grad`, as Conv2D and Dense with ``activation='relu'``)."""

    def __init__(self, name=None, dtype=None):
        super().__init__("relu", name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name}


class SoftmaxCache(NamedTuple):
    """What :meth:`Softmax._forward` keeps for the backward pass of one call."""

    y: object   # the output: ∂L/∂x = y (g − Σ y g)


class Softmax(Layer):
    """Softmax along ``axis``: ``y = e^{x - max} / Σ e^{x - max}``; ``∂L/∂x = y (g − Σ y g)``."""

    def __init__(self, axis=-1, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.axis = self._check_axis(axis)

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1
        if not -rank <= self.axis < rank or self.axis == 0 or self.axis == -rank:
            raise self._shape_error(f"axis {self.axis} is not a feature axis", input_shape)
        return tuple(input_shape)

    def _forward(self, x, training=False):
        y = activations.softmax(x, axis=self.axis)
        return y, SoftmaxCache(y)

    def _backward(self, gy, cache: SoftmaxCache):
        return activations.softmax_grad(gy, cache.y, axis=self.axis), []

    def get_config(self):
        return {"name": self.name, "axis": self.axis}


class DropoutCache(NamedTuple):
    """What :meth:`Dropout._forward` keeps for the backward pass of one call."""

    mask: object   # m / (1 − r), shape of the input; None when the call was the identity (inference, rate 0)


class Dropout(Layer):
    """Inverted dropout: in training keep each value with probability 1 − rate and scale it by 1/(1 − rate);
    at inference the identity.

    .. math:: y = x · m / (1 − r), \\quad m \\sim Bernoulli(1 − r), \\qquad ∂L/∂x = ∂L/∂y · m / (1 − r)

    Parameters
    ----------
    rate : float in [0, 1)
    seed : int, optional
        Seeds this layer's own generator (drawn from tinynet's global generator when None).
    """

    def __init__(self, rate, seed=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.rate = self._check_float("rate", rate, low=0.0, high=1.0, high_open=True)
        if seed is not None:
            seed = self._check_int("seed", seed, low=0)
        self.seed = seed
        self.rng = np.random.default_rng(seed if seed is not None else backend.global_rng().integers(2**63))

    def _forward(self, x, training=False):
        if not training or self.rate == 0.0:
            return x, DropoutCache(None)
        xp = get_array_module(x)
        keep = self.rng.random(x.shape) >= self.rate
        mask = xp.asarray(keep.astype(x.dtype) / x.dtype.type(1.0 - self.rate))
        return x * mask, DropoutCache(mask)

    def _backward(self, gy, cache: DropoutCache):
        return (gy if cache.mask is None else gy * cache.mask), []

    def get_config(self):
        return {"name": self.name, "rate": self.rate, "seed": self.seed}


class ConcatenateCache(NamedTuple):
    """What :meth:`Concatenate._forward` keeps for the backward pass of one call."""

    axis: int     # the concatenation axis of the arrays, batch axis counted, >= 1
    sizes: list   # each input's extent along ``axis``: the gradient is split at their cumulative sums


class Concatenate(Layer):
    """Join tensors along ``axis`` (channels by default); backward splits at the cumulative offsets.

    ``axis`` counts the batch axis, as in Keras: for 4-D inputs 1, 2, 3 (or -3, -2, -1) are the height, width
    and channel axes. The batch axis (0 or -4) is refused, since a layer keeps the batch.

    Shapes
    ------
    [(N, ..., C1, ...), (N, ..., C2, ...), ...] → (N, ..., C1 + C2 + ..., ...); all other axes must match.
    """

    num_inputs = None

    def __init__(self, axis=-1, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.axis = self._check_axis(axis)

    def _example_axis(self, shapes):
        """The concatenation axis in the per-example shapes (batch removed); raise for the batch axis or an
        axis out of range."""
        rank = len(shapes[0]) + 1  # with the batch axis
        if not -rank <= self.axis < rank:
            raise self._shape_error(f"axis {self.axis} is out of range for {rank}-D inputs "
                                    f"(feature axes: 1 to {rank - 1} or -{rank - 1} to -1)", shapes)
        if self.axis % rank == 0:
            raise self._shape_error(f"axis {self.axis} is the batch axis; concatenate along a feature axis "
                                    f"(1 to {rank - 1} or -{rank - 1} to -1)", shapes)
        return self.axis % rank - 1

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2:
            raise ShapeError(f"{self.label}: needs a list of at least two inputs, got {len(shapes)}"
                             + (f" (input shape {format_shape(shapes[0])})" if shapes else ""))
        if len({len(s) for s in shapes}) != 1:
            raise self._shape_error("inputs have different ranks", shapes)
        axis = self._example_axis(shapes)
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(rest) != 1:
            raise self._shape_error(
                f"shapes must match except on the concatenation axis {self.axis}, got "
                + ", ".join(format_shape(s) for s in shapes), shapes)
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)

    def _forward(self, xs, training=False):
        xp = get_array_module(*xs)
        axis = self.axis % xs[0].ndim  # checked by compute_output_shape: never the batch axis
        return xp.concatenate(xs, axis=axis), ConcatenateCache(axis, [x.shape[axis] for x in xs])

    def _backward(self, gy, cache: ConcatenateCache):
        xp = get_array_module(gy)
        offsets = np.cumsum(cache.sizes)[:-1].tolist()
        return [xp.ascontiguousarray(g) for g in xp.split(gy, offsets, axis=cache.axis)], []

    def get_config(self):
        return {"name": self.name, "axis": self.axis}


def concatenate(inputs, axis=-1, name=None):
    """Functional form: ``concatenate([a, b, c])`` = ``Concatenate(axis)([a, b, c])``."""
    return Concatenate(axis=axis, name=name)(inputs)
