"""The layer base class, symbolic tensors and graph nodes (Keras' functional API, small enough to read).

Calling a layer on a :class:`SymbolicTensor` (what :func:`Input` returns) infers the output shape, builds
the weights on first use and records a :class:`Node` (layer, input tensors, output tensor). A
:class:`tinynet.Model` later walks those nodes. Calling a layer on an array runs it eagerly.

A layer implements, for a batch of inputs,

* ``forward(inputs, training) -> (outputs, cache)`` and
* ``backward(grad_outputs, cache) -> (grad_inputs, param_grads)``

where ``cache`` is whatever backward needs; it lives with the call (the model's tape), never on the
layer, so one layer may be called several times and one tensor may feed several layers.
``param_grads`` is a list aligned with ``layer.weights`` (``None`` for non-trainable weights).
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from .. import backend

_NAME_COUNTS: dict = defaultdict(int)


class ShapeError(ValueError):
    """A layer got an input whose shape it cannot take (raised when the graph is built or run)."""


def reset_names() -> None:
    """Restart automatic layer names at ``conv2d``, ``dense``, ... (like ``keras.backend.clear_session``)."""
    _NAME_COUNTS.clear()


def snake_case(name: str) -> str:
    """``'Conv2D'`` → ``'conv2d'``, ``'BatchNormalization'`` → ``'batch_normalization'`` (Keras' rule)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    """Return ``base``, then ``base_1``, ``base_2``, ... on later calls."""
    count = _NAME_COUNTS[base]
    _NAME_COUNTS[base] += 1
    return base if count == 0 else f"{base}_{count}"


def format_shape(shape) -> str:
    """Format a per-example shape with the batch axis, Keras style: ``(None, 28, 28, 3)``."""
    return str((None,) + tuple(shape))


class SymbolicTensor:
    """A placeholder for a batch of arrays in a graph being built.

    Attributes
    ----------
    shape : tuple
        Full shape with ``None`` for the batch axis, e.g. ``(None, 224, 224, 3)``.
    dtype : str
    node : Node
        The call that produced it.
    """

    def __init__(self, shape, dtype, node=None):
        self.example_shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.node = node

    @property
    def shape(self):
        return (None,) + self.example_shape

    @property
    def name(self):
        return self.node.layer.name if self.node is not None else "?"

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype} from '{self.name}'>"


class Node:
    """One call of a layer in the graph: ``output = layer(inputs)``."""

    def __init__(self, layer, inputs, output):
        self.layer = layer
        self.inputs = list(inputs)
        self.output = output


class Layer:
    """Base class: weights, their gradients, shape inference and the call protocol.

    Attributes
    ----------
    name : str
    weights : list of ndarray
        Keras order (e.g. Conv2D: kernel, bias; BatchNormalization: gamma, beta, moving_mean, moving_variance).
    grads : list of ndarray or None
        Gradients from the last ``Model.backward``, aligned with ``weights``; ``None`` for non-trainable weights.
    weight_names : list of str
    trainable_flags : list of bool
    """

    #: number of inputs the layer takes (None: a list of any length >= 2, as Concatenate)
    num_inputs = 1

    def __init__(self, name=None, dtype=None):
        self.name = name if name is not None else unique_name(snake_case(type(self).__name__))
        self.dtype = str(np.dtype(dtype)) if dtype is not None else backend.floatx()
        self.built = False
        self.weights: list = []
        self.grads: list = []
        self.weight_names: list = []
        self.trainable_flags: list = []
        self.input_shape = None   # per-example shape(s) seen at build time
        self.output_shape = None

    # ---------------------------------------------------------------- weights
    def add_weight(self, name, value, trainable=True):
        """Register a weight (a NumPy array cast to the layer dtype) and its gradient slot."""
        self.weights.append(np.asarray(value, dtype=self.dtype))
        self.weight_names.append(name)
        self.trainable_flags.append(bool(trainable))
        self.grads.append(None)
        return len(self.weights) - 1

    @property
    def trainable_weights(self):
        return [w for w, t in zip(self.weights, self.trainable_flags) if t]

    def count_params(self) -> int:
        """Number of weights, non-trainable ones included (Keras' count)."""
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    def get_weights(self):
        """Copies of the weights as NumPy arrays, in Keras order."""
        return [backend.to_numpy(w).copy() for w in self.weights]

    def set_weights(self, values):
        """Replace all weights at once; shapes are checked first so nothing is half-updated."""
        values = list(values)
        if len(values) != len(self.weights):
            raise ValueError(
                f"layer '{self.name}': set_weights got {len(values)} arrays, expected {len(self.weights)} "
                f"({', '.join(self.weight_names) or 'no weights'})"
            )
        for name, old, new in zip(self.weight_names, self.weights, values):
            if tuple(np.shape(new)) != tuple(old.shape):
                raise ShapeError(
                    f"layer '{self.name}': weight '{name}' has shape {tuple(old.shape)}, got {tuple(np.shape(new))}"
                )
        xp = backend.get_array_module(*self.weights)
        self.weights = [xp.asarray(backend.to_numpy(v) if xp is np else v, dtype=old.dtype)
                        for v, old in zip(values, self.weights)]
        self.grads = [None] * len(self.weights)

    def to(self, device: str):
        """Move weights and gradients to ``'cpu'`` or ``'gpu'``."""
        self.weights = [backend.to_device(w, device) for w in self.weights]
        self.grads = [backend.to_device(g, device) for g in self.grads]
        return self

    # ---------------------------------------------------------------- shapes
    def build(self, input_shape):
        """Create the weights for a per-example ``input_shape`` (no batch axis). Default: none."""

    def compute_output_shape(self, input_shape):
        """Per-example output shape; raise :class:`ShapeError` naming the layer for a bad input."""
        return tuple(input_shape)

    def _shape_error(self, message, input_shape):
        shapes = (", ".join(format_shape(s) for s in input_shape)
                  if input_shape and isinstance(input_shape[0], (tuple, list)) else format_shape(input_shape))
        return ShapeError(f"layer '{self.name}' ({type(self).__name__}): {message}; input shape {shapes}")

    def _require_rank(self, input_shape, rank, what):
        if len(input_shape) != rank:
            raise self._shape_error(f"expected a {rank + 1}-D input {what}, got {len(input_shape) + 1}-D",
                                    input_shape)

    def _build_for(self, input_shape):
        output_shape = self.compute_output_shape(input_shape)
        if not self.built:
            self.build(input_shape)
            self.built = True
            self.input_shape = input_shape
        elif self.num_inputs == 1 and self.weights and tuple(input_shape) != tuple(self.input_shape):
            # weights fix the input shape's trailing axis: a reused layer must see the same features
            if input_shape[-1] != self.input_shape[-1]:
                raise self._shape_error(
                    f"was built for {format_shape(self.input_shape)} and cannot take another channel count",
                    input_shape)
        self.output_shape = output_shape
        return output_shape

    # ---------------------------------------------------------------- calling
    def __call__(self, inputs, training=False):
        """Symbolic call (records a graph node) or eager call on arrays (returns the output array)."""
        many = isinstance(inputs, (list, tuple))
        items = list(inputs) if many else [inputs]
        if self.num_inputs == 1 and many:
            raise TypeError(f"layer '{self.name}' takes one input, got a list of {len(items)}")
        if self.num_inputs is None and not many:
            raise TypeError(f"layer '{self.name}' takes a list of inputs")
        if all(isinstance(t, SymbolicTensor) for t in items):
            shapes = [t.example_shape for t in items]
            out_shape = self._build_for(shapes if many else shapes[0])
            out = SymbolicTensor(out_shape, self.dtype)
            out.node = Node(self, items, out)
            return out
        if any(isinstance(t, SymbolicTensor) for t in items):
            raise TypeError(f"layer '{self.name}': cannot mix symbolic tensors and arrays in one call")
        shapes = [tuple(np.shape(a))[1:] for a in items]
        self._build_for(shapes if many else shapes[0])
        y, _ = self.forward(items if many else items[0], training)
        return y

    def forward(self, inputs, training=False):
        """Return ``(outputs, cache)`` for a batch."""
        raise NotImplementedError

    def backward(self, grad_output, cache):
        """Return ``(grad_inputs, param_grads)`` given the gradient of the loss w.r.t. the outputs."""
        raise NotImplementedError

    # ---------------------------------------------------------------- description
    def count_macs(self, input_shape, output_shape) -> int:
        """Multiply-adds for one example (convolutions and dense layers; 0 elsewhere, as the paper counts)."""
        return 0

    def get_config(self) -> dict:
        """The constructor arguments (Keras names), for summaries and the Keras bridge."""
        return {"name": self.name}

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"
