"""The layer base class, symbolic tensors and graph nodes (Keras' functional API, small enough to read).

Calling a layer on a :class:`SymbolicTensor` (what :func:`Input` returns) infers the output shape, builds
the weights on first use and records a :class:`Node` (layer, input tensors, output tensor). A
:class:`tinynet.Model` later walks those nodes. Calling a layer on an array runs it eagerly.

A layer is used, for a batch of inputs, through

* ``forward(inputs, training) -> (outputs, cache)`` and
* ``backward(grad_outputs, cache) -> (grad_inputs, param_grads)``

which check their arguments (dtypes, shapes, devices; O(1) in the data) and call the layer's own
``_forward`` / ``_backward``, where the math lives. ``cache`` is a :class:`CallCache`: whatever the layer's
backward needs plus the output's shape and device; it lives with the call (the model's tape), never on the
layer, so one layer may be called several times and one tensor may feed several layers.
``param_grads`` is a list aligned with ``layer.weights`` (``None`` for non-trainable weights).
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from .. import backend
from ..checks import check_training

_NAME_COUNTS: dict = defaultdict(int)


class ShapeError(ValueError):
    """A layer got an input whose shape it cannot take (raised when the graph is built or run)."""


class NonFiniteError(FloatingPointError):
    """A layer produced NaN or inf (raised by ``Model.forward/backward(..., check_finite=True)``).

    Attributes
    ----------
    layer_name : str
        The first layer, in execution order (backward order for gradients), whose result is not finite.
    where : str
        ``'output'``, ``'input gradient'`` or ``"gradient of weight '<name>'"``.
    """

    def __init__(self, message, layer_name=None, where=None):
        super().__init__(message)
        self.layer_name = layer_name
        self.where = where


def check_finite(layer, where, array, batch_size):
    """Raise :class:`NonFiniteError` when ``array`` holds NaN or inf (one pass over it; two more to count).

    The message reads ``layer 'inception_4a_3x3' (Conv2D): non-finite output (3 NaN, 0 inf) in a batch of 8``.
    """
    xp = backend.get_array_module(array)
    if bool(xp.isfinite(array).all()):
        return
    nans, infs = int(xp.isnan(array).sum()), int(xp.isinf(array).sum())
    raise NonFiniteError(f"{layer.label}: non-finite {where} ({nans} NaN, {infs} inf) in a batch of {batch_size}",
                         layer.name, where)


def reset_names() -> None:
    """Restart automatic layer names at ``conv2d``, ``dense``, ... (like ``keras.backend.clear_session``)."""
    _NAME_COUNTS.clear()


def snake_case(name: str) -> str:
    """``'Conv2D'`` → ``'conv2d'``, ``'BatchNormalization'`` → ``'batch_normalization'`` (Keras' rule)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def valid_name(name) -> bool:
    """Whether ``name`` can name a layer or a model: a non-empty string without '/' (it separates a layer's name
    from its weight's in files) or control characters (a NUL ends a member's name inside a zip file, so two
    layers' weights would be saved under one name)."""
    return (isinstance(name, str) and bool(name) and "/" not in name
            and not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in name))


def unique_name(base: str) -> str:
    """Return ``base``, then ``base_1``, ``base_2``, ... on later calls."""
    count = _NAME_COUNTS[base]
    _NAME_COUNTS[base] += 1
    return base if count == 0 else f"{base}_{count}"


def weight_list(values, owner) -> list:
    """``values`` (what ``set_weights`` got) as a list of arrays; raise ``TypeError`` naming ``owner`` for None, a
    number, a string or a dict (whose iteration would give its keys), rather than Python's bare message."""
    if values is None or isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{owner}: set_weights takes a list of arrays (as get_weights returns), got "
                        f"{type(values).__name__}")
    return list(values)


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
    """One call of a layer in the graph: ``output = layer(inputs)``.

    A layer takes one value or, when ``layer.num_inputs`` is ``None`` (Concatenate), a list; the node keeps
    its inputs as a list either way. :meth:`layer_args` and :meth:`unpack_input_grads` translate between
    the two, so every graph walker (the model, the summary, the Keras bridge, Table 1) does it one way.

    Attributes
    ----------
    layer : Layer
    inputs : list of SymbolicTensor
        Empty for an :func:`Input` node.
    output : SymbolicTensor
    """

    def __init__(self, layer, inputs, output):
        self.layer = layer
        self.inputs = list(inputs)
        self.output = output

    @staticmethod
    def args_for(layer, values):
        """``values`` (one per input, in order) as ``layer`` takes them: the list itself for a layer with
        several inputs (``layer.num_inputs is None``), else its one element."""
        values = list(values)
        return values if layer.num_inputs is None else values[0]

    def layer_args(self, values):
        """``values`` (one per input tensor of this node, e.g. arrays or shapes) as the node's layer takes
        them; see :meth:`args_for`."""
        return Node.args_for(self.layer, values)

    def unpack_input_grads(self, grad_inputs):
        """The gradients a layer's ``backward`` returned for this call as a list aligned with ``inputs``."""
        return list(grad_inputs) if self.layer.num_inputs is None else [grad_inputs]

    @property
    def input_shapes(self):
        """The per-example input shape(s) as the layer takes them (one tuple, or a list for several inputs);
        ``None`` for an :func:`Input` node."""
        return self.layer_args([t.example_shape for t in self.inputs]) if self.inputs else None

    def count_macs(self) -> int:
        """Multiply-adds of this call for one example (:meth:`Layer.count_macs` on the node's shapes; 0 for an
        :func:`Input` node)."""
        if not self.inputs:
            return 0
        return int(self.layer.count_macs(self.input_shapes, self.output.example_shape))


class CallCache:
    """What one :meth:`Layer.forward` leaves for :meth:`Layer.backward`.

    Attributes
    ----------
    layer : Layer
        The layer that ran (a cache only fits its own layer's backward).
    data : NamedTuple or None
        What the layer's ``_backward`` needs, as the layer's own named tuple (``ConvCache``, ``DenseCache``,
        ...: defined beside each layer, read by field name).
    output_shape : tuple
        The full output shape, batch axis included: the gradient must have exactly this shape.
    output_dtype : numpy.dtype
    on_gpu : bool
    """

    __slots__ = ("layer", "data", "output_shape", "output_dtype", "on_gpu")

    def __init__(self, layer, data, output):
        self.layer = layer
        self.data = data
        self.output_shape = tuple(output.shape)
        self.output_dtype = output.dtype
        self.on_gpu = backend.is_gpu_array(output)


class Layer:
    """Base class: weights, their gradients, shape inference, argument checks and the call protocol.

    A subclass implements ``_forward(inputs, training) -> (outputs, data)`` and
    ``_backward(grad_output, data) -> (grad_inputs, param_grads)`` on arrays that are already checked. The
    public :meth:`forward` and :meth:`backward` wrap them: forward checks and casts the inputs and returns a
    :class:`CallCache` (``data`` plus the output's shape and device), backward checks the gradient against
    that cache before calling ``_backward``.

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

    #: whether the weights fix the input's last axis, so that a reused layer must see the same size there (the
    #: check in :meth:`_build_for`); False for a layer whose ``compute_output_shape`` checks its own feature axis
    #: (BatchNormalization with ``axis=1``: its weights fix axis 1, and the last axis may change)
    weights_fix_last_axis = True

    def __init__(self, name=None, dtype=None):
        if name is not None and not valid_name(name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string without '/' or control "
                             f"characters, got {name!r}")
        self.name = name if name is not None else unique_name(snake_case(type(self).__name__))
        self.dtype = backend.check_float_dtype(dtype, self.label) if dtype is not None else backend.floatx()
        self.built = False
        self.weights: list = []
        self.grads: list = []
        self.weight_names: list = []
        self.trainable_flags: list = []
        self.input_shape = None   # per-example shape(s) seen at build time
        self.output_shape = None

    @property
    def label(self) -> str:
        """How messages name the layer: ``layer 'conv1' (Conv2D)``."""
        return f"layer '{self.name}' ({type(self).__name__})"

    # ---------------------------------------------------------------- constructor arguments
    def _check_int(self, argument, value, low=1):
        """Return ``value`` as an int; raise ``ValueError`` naming the layer unless it is an integer >= ``low``.

        Booleans and floats (even ``2.0``) are refused, as Keras refuses them for ``units``.
        """
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{self.label}: {argument} must be an integer >= {low}, got {value!r}")
        return int(value)

    def _check_float(self, argument, value, low=None, high=None, low_open=False, high_open=False):
        """Return ``value`` as a float; raise ``ValueError`` naming the layer unless it is a finite real number
        in the interval given by ``low``/``high`` (closed unless ``low_open``/``high_open``)."""
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        ok = ok and bool(np.isfinite(value))
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            interval = ("a finite number" if low is None and high is None else
                        f"a number in {'(' if low_open or low is None else '['}"
                        f"{'-inf' if low is None else format(low, 'g')}, {'inf' if high is None else format(high, 'g')}"
                        f"{')' if high_open or high is None else ']'}")
            raise ValueError(f"{self.label}: {argument} must be {interval}, got {value!r}")
        return float(value)

    def _check_axis(self, value):
        """Return ``axis`` as an int (ranges are checked against the input's rank when the layer is built)."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{self.label}: axis must be an integer, got {value!r}")
        return int(value)

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

    def prepare_weights(self, values):
        """Check ``values`` as new weights and return them converted, without changing the layer.

        Every value must have its weight's shape, hold real numbers (bool, integer or float; complex, text and
        object arrays are refused) and be finite once cast to the layer's dtype (``1e40`` is ``inf`` in float32).
        The result is a fresh copy on the layer's device, so later changes to ``values`` do not reach the layer.

        Raises
        ------
        ValueError, ShapeError, TypeError
            Naming the layer and the weight.
        """
        values = weight_list(values, f"layer '{self.name}'")
        if len(values) != len(self.weights):
            raise ValueError(
                f"layer '{self.name}': set_weights got {len(values)} arrays, expected {len(self.weights)} "
                f"({', '.join(self.weight_names) or 'no weights'})"
            )
        xp = backend.get_array_module(*self.weights)
        prepared = []
        for name, old, new in zip(self.weight_names, self.weights, values):
            if not hasattr(new, "shape"):  # a nested list: one array, or the reason it is not one
                try:
                    new = np.asarray(new)
                except (ValueError, TypeError) as error:
                    raise ValueError(f"layer '{self.name}': weight '{name}' is not an array of shape "
                                     f"{tuple(old.shape)} ({error})") from None
            if tuple(np.shape(new)) != tuple(old.shape):
                raise ShapeError(
                    f"layer '{self.name}': weight '{name}' has shape {tuple(old.shape)}, got {tuple(np.shape(new))}"
                )
            kind = new.dtype.kind if hasattr(new, "dtype") else np.asarray(new).dtype.kind
            if kind not in "biuf":
                raise TypeError(f"layer '{self.name}': weight '{name}' must hold real numbers, got dtype "
                                f"{getattr(new, 'dtype', np.asarray(new).dtype)}")
            with np.errstate(over="ignore"):
                value = xp.array(backend.to_numpy(new) if xp is np else new, dtype=old.dtype, copy=True)
            if not bool(xp.isfinite(value).all()):
                raise ValueError(f"layer '{self.name}': weight '{name}' holds NaN or infinite values "
                                 f"(as {old.dtype})")
            prepared.append(value)
        return prepared

    def set_weights(self, values):
        """Replace all weights at once; everything is checked first (:meth:`prepare_weights`), so nothing is
        half-updated."""
        self.assign_prepared_weights(self.prepare_weights(values))

    def assign_prepared_weights(self, prepared):
        """Install what :meth:`prepare_weights` returned (no checks; gradients are cleared)."""
        self.weights = list(prepared)
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
        return ShapeError(f"{self.label}: {message}; input shape {shapes}")

    def _require_rank(self, input_shape, rank, what):
        if len(input_shape) != rank:
            raise self._shape_error(f"expected a {rank + 1}-D input {what}, got {len(input_shape) + 1}-D",
                                    input_shape)

    def _build_for(self, input_shape):
        output_shape = self.compute_output_shape(input_shape)
        if not self.built:
            saved = (list(self.weights), list(self.grads), list(self.weight_names), list(self.trainable_flags))
            try:
                self.build(input_shape)
            except BaseException:  # a build that fails halfway (e.g. out of memory after the kernel) adds nothing
                self.weights, self.grads, self.weight_names, self.trainable_flags = saved
                raise
            self.built = True
            self.input_shape = input_shape
        elif (self.num_inputs == 1 and self.weights and self.weights_fix_last_axis
              and tuple(input_shape) != tuple(self.input_shape)):
            # weights fix the input shape's trailing axis: a reused layer must see the same features
            if tuple(input_shape[-1:]) != tuple(self.input_shape[-1:]):
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
        self._check_input_count(many, len(items))
        if all(isinstance(t, SymbolicTensor) for t in items):
            shapes = [t.example_shape for t in items]
            out_shape = self._build_for(shapes if many else shapes[0])
            out = SymbolicTensor(out_shape, self.dtype)
            out.node = Node(self, items, out)
            return out
        if any(isinstance(t, SymbolicTensor) for t in items):
            raise TypeError(f"{self.label}: cannot mix symbolic tensors and arrays in one call")
        y, _ = self.forward(inputs, training)
        return y

    def _check_input_count(self, many, count):
        if self.num_inputs == 1 and many:
            raise TypeError(f"{self.label}: takes one input, got a list of {count} (pass one array, not a list)")
        if self.num_inputs is None and not many:
            raise TypeError(f"{self.label}: takes a list of inputs, got one")

    def _input_array(self, array, what):
        """``array`` as an array of the layer's dtype on its device: a list becomes a NumPy array, and any other
        real dtype (integers, booleans, float16, and the other of float32/float64) is cast to the layer's
        dtype, as Keras casts a layer's inputs to its compute dtype; complex, object and text arrays are
        refused. A float32 layer fed float64 computes in float32 and returns float32, whatever the batch."""
        if not isinstance(array, np.ndarray) and not backend.is_gpu_array(array):
            try:
                array = np.asarray(array)
            except (ValueError, TypeError) as error:
                raise TypeError(f"{self.label}: {what} is not an array ({type(array).__name__}: {error})") from None
        if array.dtype != self.dtype:
            if array.dtype.kind not in "biuf":
                raise TypeError(f"{self.label}: {what} has dtype {array.dtype}; layers take real numbers "
                                f"(cast to the layer's {self.dtype})")
            array = array.astype(self.dtype)
        if array.ndim == 0:
            raise ShapeError(f"{self.label}: {what} is a 0-d array; layers take a batch of shape (N, ...)")
        return array

    def forward(self, inputs, training=False):
        """Run the layer on a batch; return ``(outputs, cache)`` for :meth:`backward`.

        The inputs are checked first: real arrays of another dtype (integers, booleans, the other float
        type) are cast to the layer's dtype, complex and object arrays raise ``TypeError``, shapes are
        checked against the layer (building it on first use), and inputs and weights must share a device.
        All of it is O(1) in the data, but for a cast.

        Parameters
        ----------
        inputs : array (N, ...), or a list of arrays for a layer with several inputs
        training : bool or None
            None reads as False (inference), as Keras; anything else raises ``TypeError``.

        Returns
        -------
        outputs : array
        cache : CallCache
        """
        training = check_training(self.label, training)
        many = isinstance(inputs, (list, tuple))
        items = list(inputs) if many else [inputs]
        self._check_input_count(many, len(items))
        items = [self._input_array(a, f"input {i}") for i, a in enumerate(items)]
        named = {f"input {i}": a for i, a in enumerate(items)}
        named.update(zip(self.weight_names, self.weights))
        backend.check_same_device(self.label, named)
        shapes = [tuple(a.shape[1:]) for a in items]
        if len({a.shape[0] for a in items}) > 1:
            raise self._shape_error("inputs have different batch sizes "
                                    f"({', '.join(str(tuple(a.shape)) for a in items)})", shapes)
        if any(0 in s for s in shapes):  # as Input refuses them: a mean or a product over an empty axis is no answer
            raise self._shape_error("every per-example size must be >= 1 (only the batch may be empty), got "
                                    + ", ".join(str(tuple(a.shape)) for a in items), shapes if many else shapes[0])
        if not self.built:
            self._build_for(shapes if many else shapes[0])
        else:
            self.compute_output_shape(shapes if many else shapes[0])
        outputs, data = self._forward(items if many else items[0], training)
        return outputs, CallCache(self, data, outputs)

    #: True where ``_backward`` takes ``input_grad=False`` and then skips ∂L/∂inputs (Conv2D, Dense): the model
    #: asks for that on layers that read only model inputs, when nobody needs the inputs' gradient (training)
    can_skip_input_grad = False

    def backward(self, grad_output, cache, input_grad=True):
        """Return ``(grad_inputs, param_grads)`` given ``∂L/∂outputs`` and the cache of the matching forward.

        The gradient must have exactly the output's shape (batch size included), a floating dtype (cast to the
        output's, so a float64 gradient into a float32 layer gives float32 gradients, as PyTorch's autograd
        does) and the output's device; anything else raises naming the layer and both shapes before any
        arithmetic.
        ``input_grad=False`` says ∂L/∂inputs is not needed: layers that can skip it
        (:attr:`can_skip_input_grad`) return ``None`` for it and save its work (for a first convolution, a
        matrix product and a col2im); the others compute it as usual.
        """
        if not isinstance(cache, CallCache) or cache.layer is not self:
            if isinstance(cache, CallCache):
                got = f"the cache of {cache.layer.label}"
            elif isinstance(cache, tuple) and type(cache) is not tuple:  # a layer's named tuple: CallCache.data
                got = f"a tuple ({type(cache).__name__}, the data inside a CallCache; pass the CallCache itself)"
            else:
                got = f"a {type(cache).__name__}"
            raise TypeError(f"{self.label}: backward needs the cache returned by this layer's forward, got {got}")
        g = grad_output
        if not isinstance(g, np.ndarray) and not backend.is_gpu_array(g):
            g = np.asarray(g)
        if g.dtype.kind != "f":
            raise TypeError(f"{self.label}: the gradient has dtype {g.dtype}, expected a floating dtype "
                            f"(the output's is {cache.output_dtype})")
        if tuple(g.shape) != cache.output_shape:
            raise ShapeError(f"{self.label}: the gradient has shape {tuple(g.shape)}, but the output it belongs "
                             f"to has shape {cache.output_shape}")
        if backend.is_gpu_array(g) != cache.on_gpu:
            raise TypeError(f"{self.label}: the gradient is on {'gpu' if not cache.on_gpu else 'cpu'} but the "
                            f"output is on {'gpu' if cache.on_gpu else 'cpu'}")
        if g.dtype != cache.output_dtype:  # float64 into a float32 layer runs in float32, as with fast paths
            g = g.astype(cache.output_dtype)
        if not input_grad and self.can_skip_input_grad:
            return self._backward(g, cache.data, input_grad=False)
        return self._backward(g, cache.data)

    def _forward(self, inputs, training):
        """Return ``(outputs, data)``: the layer's math on checked arrays (``data``: what backward needs)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _forward")

    def _backward(self, grad_output, data):
        """Return ``(grad_inputs, param_grads)`` from the upstream gradient and what ``_forward`` kept."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _backward")

    # ---------------------------------------------------------------- description
    def count_macs(self, input_shape, output_shape) -> int:
        """Multiply-adds for one example (convolutions and dense layers; 0 elsewhere, as the paper counts)."""
        return 0

    def get_config(self) -> dict:
        """The constructor arguments (Keras names), for summaries and the Keras bridge."""
        return {"name": self.name}

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"
