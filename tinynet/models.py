"""Keras' ``keras.models``: the functional :class:`Model` and :class:`Sequential`.

``Sequential`` is a :class:`~tinynet.model.Model` whose graph is a chain: each layer takes the previous one's
output. Start it with ``Input(shape)`` (as Keras 3 does), or give no input and let the first :meth:`~Sequential.build`
(or ``fit`` / ``predict`` / ``model(x)``) fix the input shape from the data.

Examples
--------
>>> from tinynet import layers, models
>>> model = models.Sequential([
...     layers.Input((28, 28, 1)),
...     layers.Conv2D(32, 3, activation="relu"),
...     layers.MaxPooling2D(2),
...     layers.Flatten(),
...     layers.Dense(10, activation="softmax"),
... ])
>>> model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
"""
from __future__ import annotations

import numpy as np

from .layers.base import Layer, SymbolicTensor
from .layers.core import Input, InputLayer
from .model import Model


class Sequential(Model):
    """A linear stack of layers (Keras' ``Sequential``).

    Parameters
    ----------
    layers : list, optional
        Optionally first an ``Input(shape)`` tensor (or an :class:`~tinynet.layers.core.InputLayer`), then
        layers, each called on the previous one's output.
    name : str, default 'sequential'

    Notes
    -----
    Until it has an input shape the model has no graph: :attr:`built` is False, and ``summary``, ``fit`` or
    ``predict`` build it first (``fit`` and ``predict`` from their data's shape).
    """

    def __init__(self, layers=None, name="sequential"):
        self.name = name
        self._stack = []
        self._input = None
        self._output = None
        self.built = False
        self._init_empty()
        for item in layers or []:
            self.add(item)

    def _init_empty(self):
        """Attributes a graph-less model still answers (an empty graph)."""
        self._single_input = self._single_output = True
        self.inputs, self.outputs, self.layers, self._nodes = [], [], [], []
        self._tape, self._batch_size, self._tape_on_gpu, self._groups = None, 0, False, None
        self._last_read_positions = None
        self.device = "cpu"
        self._device_listeners = []
        self._training = None
        self.stop_training = False
        self.history = None

    def add(self, layer):
        """Append a layer (or, first, an ``Input(shape)`` tensor / an InputLayer).

        Raises
        ------
        TypeError
            For something that is not a layer or an input.
        ValueError
            For a second input, or a layer name already in the model.
        """
        if isinstance(layer, SymbolicTensor) and isinstance(layer.node.layer, InputLayer) \
                or isinstance(layer, InputLayer):
            if self._input is not None or self._stack:
                raise ValueError(f"Sequential '{self.name}': an Input can only come first")
            self._input = layer if isinstance(layer, SymbolicTensor) else _input_tensor(layer)
            self._output = self._input
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential '{self.name}': add() takes a layer or an Input(shape), got "
                            f"{type(layer).__name__}")
        if any(existing.name == layer.name for existing in self._stack):
            raise ValueError(f"Sequential '{self.name}': layer names must be unique, {layer.name!r} is already in it")
        self._stack.append(layer)
        if self._input is not None:
            self._output = layer(self._output)
            self._rebuild()

    def pop(self):
        """Remove the last layer (the graph is rebuilt from the input)."""
        if not self._stack:
            raise IndexError(f"Sequential '{self.name}': there is no layer to remove")
        layer = self._stack.pop()
        if self._input is not None:
            self._output = self._input
            for kept in self._stack:
                self._output = kept(self._output)
            self._rebuild()
        return layer

    def _rebuild(self):
        """Rebuild the graph after a change; a compiled configuration no longer fits it (compile again)."""
        listeners, device = self._device_listeners, self.device
        if self._stack:
            Model.__init__(self, self._input, self._output, name=self.name)
            self.built = True
        else:
            self._init_empty()
        self._training, self._device_listeners, self.device = None, listeners, device

    def build(self, input_shape):
        """Give the model its input: ``input_shape`` is ``(None, *per_example)`` or the per-example shape."""
        if self._input is not None:
            return self
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        self._input = Input(shape)
        self._output = self._input
        for layer in self._stack:
            self._output = layer(self._output)
        self._rebuild()
        return self

    def _build_from(self, x):
        if not self.built and self._input is None and x is not None:
            array = x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x
            self.build(np.shape(array)[1:])
        if not self.built:
            raise ValueError(f"Sequential '{self.name}' has no layers with an input yet: start it with "
                             f"Input(shape) and add layers")

    def fit(self, x=None, y=None, *args, **kwargs):
        self._build_from(x)
        return super().fit(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._build_from(x)
        return super().predict(x, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._build_from(x)
        return super().evaluate(x, y, *args, **kwargs)

    def compile(self, *args, **kwargs):
        if not self.built:
            raise ValueError(f"Sequential '{self.name}': build it before compile() (start it with Input(shape), "
                             f"or call build(input_shape))")
        return super().compile(*args, **kwargs)

    def __call__(self, x, training=False):
        self._build_from(x)
        return super().__call__(x, training=training)

    def summary(self, *args, **kwargs):
        self._build_from(None)
        return super().summary(*args, **kwargs)

    def __repr__(self):
        if not self.built:
            return f"<Sequential '{self.name}': {len(self._stack)} layers, not built>"
        return super().__repr__()


def _input_tensor(input_layer):
    """The symbolic tensor of an InputLayer given in a layer list."""
    return Input(input_layer.shape, dtype=input_layer.dtype, name=input_layer.name)


__all__ = ["Model", "Sequential"]
