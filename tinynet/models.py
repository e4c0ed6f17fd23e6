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

import copy

import numpy as np

from .layers.base import Layer, SymbolicTensor, valid_name
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
        if not valid_name(name):
            raise ValueError(f"Sequential: name must be a non-empty string without '/' or control characters, "
                             f"got {name!r}")
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
        self.running_engine = None

    def add(self, layer):
        """Append a layer (or, first, an ``Input(shape)`` tensor / an InputLayer).

        On a model with an input the layer is called on the last output at once, so a layer that cannot take
        it fails here; a failed ``add`` leaves the model (and the layer) as they were.

        Raises
        ------
        TypeError
            For something that is not a layer or an input.
        ValueError
            For a second input, or a layer name already in the model.
        ShapeError
            For a layer that cannot take the last layer's output (naming the layer and the shapes).
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
        self._assemble(self._input, self._stack + [layer])

    def pop(self):
        """Remove the last layer (the graph is rebuilt from the input); a failed ``pop`` changes nothing."""
        if not self._stack:
            raise IndexError(f"Sequential '{self.name}': there is no layer to remove")
        layer = self._stack[-1]
        self._assemble(self._input, self._stack[:-1])
        return layer

    def _assemble(self, input_tensor, stack):
        """Make ``stack`` called in a chain on ``input_tensor`` (``None``: no input yet) the model's graph.

        All or nothing: should a layer refuse its input (a :class:`ShapeError` naming it and the shapes) or the
        graph be refused, the model is put back as it was, and so is every layer that this call built.
        """
        saved_model = dict(self.__dict__)
        saved_layers = [(layer, _build_state(layer)) for layer in stack]
        try:
            self._input, self._stack, self._output = input_tensor, list(stack), input_tensor
            if input_tensor is not None:
                for layer in stack:
                    self._output = layer(self._output)
                self._rebuild()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved_model)
            for layer, state in saved_layers:
                for attribute, value in state.items():
                    setattr(layer, attribute, value)
            raise

    def _rebuild(self):
        """Rebuild the graph after a change; a compiled configuration no longer fits it (compile again)."""
        listeners, device = self._device_listeners, self.device
        if self._stack:
            Model.__init__(self, self._input, self._output, name=self.name)
            self.built = True
        else:  # an input and no layer: nothing to run until a layer is added
            self._init_empty()
            self.built = False
        self._training, self._device_listeners, self.device = None, listeners, device

    def build(self, input_shape=None):
        """Give the model its input: ``input_shape`` is ``(None, *per_example)`` or the per-example shape.

        A layer that cannot take its input raises (a :class:`ShapeError` naming it and the shapes) and leaves
        the model unbuilt, as it was.
        """
        if input_shape is None and self._input is not None:  # Keras' model.build() on a built model
            return self
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"Sequential '{self.name}': build takes an input shape, a tuple such as "
                            f"(None, 32, 32, 3), got {input_shape!r}")
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        if self._input is not None:  # as Keras: the same shape again is a no-op, another one is refused
            if shape != self._input.example_shape:
                raise ValueError(f"Sequential '{self.name}' already takes inputs of shape {self._input.shape}; it "
                                 f"cannot be built for {tuple(input_shape)}")
            return self
        self._assemble(Input(shape), self._stack)
        return self

    def _build_from(self, x):
        """Build a model without an input from the shape of the data ``x`` (one array, or a list of one)."""
        if not self.built and self._input is None and x is not None and not isinstance(x, dict):
            # [array] is the list of one input's array; any other list (e.g. [[1., 2., 3.]], one row) is the data
            # itself, as Model reads it once built (so one row builds Input((3,)), as two rows do)
            array = x[0] if isinstance(x, (list, tuple)) and len(x) == 1 and hasattr(x[0], "shape") else x
            self._refuse_symbolic([array])
            self.build(np.shape(array)[1:])
        if not self.built:
            if self._input is not None:
                raise ValueError(f"Sequential '{self.name}' has an input but no layers: add a layer")
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


#: what building a layer changes (``Layer.__call__`` on a symbolic tensor): saved and put back by a failed assembly
_BUILD_ATTRIBUTES = ("built", "weights", "grads", "weight_names", "trainable_flags", "input_shape", "output_shape")


def _build_state(layer):
    """The attributes a symbolic call may change on ``layer``, lists copied (building appends to them)."""
    return {name: copy.copy(getattr(layer, name)) for name in _BUILD_ATTRIBUTES}


def _input_tensor(input_layer):
    """The symbolic tensor of an InputLayer given in a layer list."""
    return Input(input_layer.shape, dtype=input_layer.dtype, name=input_layer.name)


__all__ = ["Model", "Sequential"]
