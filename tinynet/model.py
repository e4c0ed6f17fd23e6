"""The functional ``Model``: a graph of layer calls walked forward and, in reverse, backward.

``forward`` runs the nodes in topological order and keeps a tape of ``(node, cache)``; ``backward``
walks the tape in reverse, adding gradients where a tensor fans out (``+=``) and handing each layer
the gradient of its output. Parameter gradients are summed over every call of a layer and left in
``layer.grads``.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .layers.base import ShapeError, SymbolicTensor, format_shape
from .layers.core import InputLayer


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class Model:
    """A Keras-style functional model with one or several inputs and outputs.

    Parameters
    ----------
    inputs : SymbolicTensor or list of SymbolicTensor
        What :func:`tinynet.layers.Input` returned.
    outputs : SymbolicTensor or list of SymbolicTensor
    name : str, optional

    Examples
    --------
    >>> x = Input((32, 32, 3)); y = Conv2D(8, 3, activation='relu')(x)
    >>> m = Model(x, [Dense(10)(Flatten()(y)), GlobalAveragePooling2D()(y)])
    """

    def __init__(self, inputs, outputs, name="model"):
        self.name = name
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        self.inputs = _as_list(inputs)
        self.outputs = _as_list(outputs)
        for t in self.inputs + self.outputs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"Model '{name}': inputs and outputs must be symbolic tensors, got {type(t).__name__}")
        for t in self.inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"Model '{name}': input '{t.name}' is not an Input(...) tensor")
        self._nodes = self._topological_nodes()
        self.layers = []
        for node in self._nodes:
            if node.layer not in self.layers:
                self.layers.append(node.layer)
        names = [layer.name for layer in self.layers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"Model '{name}': layer names must be unique, repeated: {duplicated}")
        self._tape = None
        self.device = "cpu"
        self._device_listeners = []  # e.g. optimizers whose state must move with the model

    # ------------------------------------------------------------------ graph
    def _topological_nodes(self):
        order, state = [], {}
        input_ids = {id(t) for t in self.inputs}

        def visit(tensor, path):
            node = tensor.node
            key = id(node)
            if state.get(key) == "done":
                return
            if state.get(key) == "active":
                raise ValueError(f"Model '{self.name}': the graph has a cycle at '{node.layer.name}'")
            state[key] = "active"
            if isinstance(node.layer, InputLayer) and id(tensor) not in input_ids:
                raise ValueError(
                    f"Model '{self.name}': graph disconnected: output needs input '{node.layer.name}' "
                    f"{format_shape(tensor.example_shape)}, which is not among the model's inputs")
            for t in node.inputs:
                visit(t, path + [node.layer.name])
            state[key] = "done"
            order.append(node)

        for t in self.inputs:  # inputs first, in the order given
            visit(t, [])
        for t in self.outputs:
            visit(t, [])
        return order

    def get_layer(self, name):
        """Return the layer called ``name``; raise ``ValueError`` listing the names otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"Model '{self.name}': no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    # ------------------------------------------------------------------ running
    def _prepare_inputs(self, x):
        xs = _as_list(x) if not self._single_input or isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.inputs):
            raise ValueError(f"Model '{self.name}': expected {len(self.inputs)} input arrays, got {len(xs)}")
        prepared = []
        for t, a in zip(self.inputs, xs):
            xp = backend.get_array_module(a)
            a = xp.asarray(a, dtype=t.dtype)
            if tuple(a.shape[1:]) != t.example_shape:
                raise ShapeError(
                    f"Model '{self.name}': input '{t.name}' expects shape {format_shape(t.example_shape)}, "
                    f"got {tuple(a.shape)}")
            prepared.append(a)
        return prepared

    def _run(self, x, training, record):
        values = {}
        for t, a in zip(self.inputs, self._prepare_inputs(x)):
            values[id(t)] = a
        if record:
            self._batch_size = len(values[id(self.inputs[0])])
        tape = [] if record else None
        for node in self._nodes:
            if isinstance(node.layer, InputLayer):
                continue
            args = [values[id(t)] for t in node.inputs]
            named = {f"input {i}": a for i, a in enumerate(args)}
            named.update({w: a for w, a in zip(node.layer.weight_names, node.layer.weights)})
            backend.check_same_device(node.layer.name, named)
            y, cache = node.layer.forward(args if node.layer.num_inputs is None else args[0], training)
            values[id(node.output)] = y
            if record:
                tape.append((node, cache))
        outs = [values[id(t)] for t in self.outputs]
        return outs, tape

    def forward(self, x, training=True):
        """Run the model and keep what :meth:`backward` needs.

        Parameters
        ----------
        x : array or list of arrays
            One batch per input, shapes (N, *input_shape); cast to each Input's dtype.
        training : bool
            Dropout active and BatchNormalization on batch statistics (updating its moving ones) when True.

        Returns
        -------
        array, or list of arrays in the order of ``outputs``
        """
        outs, self._tape = self._run(x, training, record=True)
        return outs[0] if self._single_output else outs

    def backward(self, output_grads):
        """Back-propagate ``∂L/∂outputs`` through the last :meth:`forward`.

        Parameters
        ----------
        output_grads : array or list of arrays (None for an output that does not enter the loss)

        Returns
        -------
        ∂L/∂inputs : array or list of arrays. Each layer's parameter gradients are left in ``layer.grads``
        (summed over every call of the layer; ``None`` for non-trainable weights).
        """
        if self._tape is None:
            raise RuntimeError(f"Model '{self.name}': call forward(x) before backward(...)")
        grads_out = _as_list(output_grads) if not self._single_output else [output_grads]
        if len(grads_out) != len(self.outputs):
            raise ValueError(f"Model '{self.name}': expected {len(self.outputs)} output gradients, got {len(grads_out)}")
        grads = {}
        for t, g in zip(self.outputs, grads_out):
            if g is None:
                continue
            if tuple(g.shape[1:]) != t.example_shape or len(g) != self._batch_size:
                raise ShapeError(f"Model '{self.name}': gradient for output '{t.name}' has shape "
                                 f"{tuple(g.shape)}, expected {(self._batch_size,) + t.example_shape}")
            self._accumulate(grads, t, g)
        for layer in self.layers:
            layer.grads = [None] * len(layer.weights)
        for node, cache in reversed(self._tape):
            g = grads.pop(id(node.output), None)
            if g is None:
                continue
            layer = node.layer
            gx, pgrads = layer.backward(g, cache)
            for i, pg in enumerate(pgrads):
                if pg is not None:
                    layer.grads[i] = pg if layer.grads[i] is None else layer.grads[i] + pg
            for t, gi in zip(node.inputs, gx if layer.num_inputs is None else [gx]):
                self._accumulate(grads, t, gi)
        for layer in self.layers:  # a layer that no gradient reached gets zeros, never stale values
            for i, (w, trainable) in enumerate(zip(layer.weights, layer.trainable_flags)):
                if trainable and layer.grads[i] is None:
                    layer.grads[i] = backend.get_array_module(w).zeros_like(w)
        input_grads = []
        for t in self.inputs:
            g = grads.get(id(t))
            if g is None:  # the loss does not depend on this input
                g = backend.get_array_module(*self.weights).zeros((self._batch_size,) + t.example_shape, t.dtype)
            input_grads.append(g)
        return input_grads[0] if self._single_input else input_grads

    @staticmethod
    def _accumulate(grads, tensor, g):
        key = id(tensor)
        grads[key] = g if key not in grads else grads[key] + g

    def predict(self, x, batch_size=32):
        """Inference in batches (no caches kept); returns NumPy or CuPy arrays like the input."""
        xs = _as_list(x) if not self._single_input or isinstance(x, (list, tuple)) else [x]
        n = len(xs[0])
        chunks = []
        for start in range(0, n, batch_size):
            part = [a[start:start + batch_size] for a in xs]
            outs, _ = self._run(part if not self._single_input else part[0], training=False, record=False)
            chunks.append(outs)
        xp = backend.get_array_module(*chunks[0]) if chunks else np
        outs = [xp.concatenate([c[i] for c in chunks], axis=0) for i in range(len(self.outputs))]
        return outs[0] if self._single_output else outs

    def __call__(self, x, training=False):
        """Run on a whole batch without keeping caches."""
        outs, _ = self._run(x, training=training, record=False)
        return outs[0] if self._single_output else outs

    # ------------------------------------------------------------------ weights
    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self) -> int:
        """Total number of weights, non-trainable ones (BN moving statistics) included, as Keras counts."""
        return sum(layer.count_params() for layer in self.layers)

    def count_trainable_params(self) -> int:
        return sum(int(np.prod(w.shape)) for layer in self.layers for w in layer.trainable_weights)

    def get_weights(self):
        """All weights as NumPy copies, layer by layer in Keras order."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, values):
        """Set all weights from a list as returned by :meth:`get_weights` (all shapes checked first)."""
        values = list(values)
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(values) != expected:
            raise ValueError(f"Model '{self.name}': set_weights got {len(values)} arrays, expected {expected}")
        plan, i = [], 0
        for layer in self.layers:
            part = values[i:i + len(layer.weights)]
            i += len(layer.weights)
            for name, old, new in zip(layer.weight_names, layer.weights, part):
                if tuple(np.shape(new)) != tuple(old.shape):
                    raise ShapeError(f"layer '{layer.name}': weight '{name}' has shape {tuple(old.shape)}, "
                                     f"got {tuple(np.shape(new))}")
            plan.append((layer, part))
        for layer, part in plan:
            if part:
                layer.set_weights(part)

    def save_weights(self, path):
        """Write every weight to an ``.npz`` file, keyed ``'<layer name>/<weight name>'``."""
        from . import io

        io.save_weights(self, path)

    def load_weights(self, path):
        """Read weights saved by :meth:`save_weights` (no pickle); every key and shape is checked first."""
        from . import io

        io.load_weights(self, path)

    def to(self, device):
        """Move weights, gradients (and registered optimizer state) to ``'cpu'`` or ``'gpu'``."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"Model.to: device must be 'cpu' or 'gpu', got {device!r}")
        if device == "gpu":
            backend.require_gpu()
        for layer in self.layers:
            layer.to(device)
        for listener in self._device_listeners:
            listener.to(device)
        self.device = device
        self._tape = None
        return self

    # ------------------------------------------------------------------ description
    def summary(self, print_fn=print, line_length=98):
        """Print a Keras-like table: layer (type), output shape, parameters, multiply-adds; then totals."""
        from .summary import summary_text

        text = summary_text(self, line_length=line_length)
        if print_fn is not None:
            print_fn(text)
        return text

    def count_macs(self) -> int:
        """Multiply-adds for one example (convolutions and dense layers)."""
        total = 0
        for node in self._nodes:
            if isinstance(node.layer, InputLayer):
                continue
            shapes = [t.example_shape for t in node.inputs]
            total += node.layer.count_macs(shapes if node.layer.num_inputs is None else shapes[0],
                                           node.output.example_shape)
        return total

    @property
    def nodes(self):
        """The layer calls in the order they run."""
        return list(self._nodes)

    def __repr__(self):
        return f"<Model '{self.name}': {len(self.layers)} layers, {self.count_params():,} parameters>"
