"""Convert models between Keras 3 and tinynet: same layer names, arguments, weights and BN statistics.

>>> from tinynet.interop.keras import from_keras, to_keras
>>> tiny = from_keras(keras_model)        # a tinynet Model computing the same function
>>> back = to_keras(tiny)                 # and a Keras functional Model again

Supported Keras layers and the arguments that must keep their default (anything else raises
:class:`UnsupportedKerasError` naming the layer and the argument):

==========================  ====================================================================
Keras layer                 tinynet layer; arguments checked
==========================  ====================================================================
InputLayer                  Input (shape, dtype)
Conv2D                      Conv2D; data_format channels_last, dilation_rate 1, groups 1, no LoRA
MaxPooling2D                MaxPool2D; data_format channels_last
AveragePooling2D            AvgPool2D; data_format channels_last
GlobalAveragePooling2D      GlobalAveragePooling2D; data_format channels_last, keepdims False
Dense                       Dense; no LoRA, not quantized
Flatten                     Flatten; data_format channels_last
Dropout                     Dropout; noise_shape None
BatchNormalization          BatchNormalization; center and scale True, renorm False
Concatenate                 Concatenate
Activation, ReLU, Softmax   Activation, ReLU (plain: max_value None, slope 0, threshold 0), Softmax
LocalResponseNormalization  :class:`LocalResponseNormalization` below (the Caffe LRN written with keras.ops)
==========================  ====================================================================

Activations must be one of linear, relu, sigmoid, tanh, softmax. Initialisers, regularisers and constraints
are ignored: they do not change what the model computes. A frozen layer with weights (``trainable=False``) and
a mixed-precision dtype policy (computing in another dtype than the weights') are refused.

Importing this module imports Keras (set ``KERAS_BACKEND`` first if you care which backend).
"""
from __future__ import annotations

import keras
from keras import ops

from .. import layers as tl
from ..layers.base import Node
from ..model import Model

__all__ = ["from_keras", "to_keras", "LocalResponseNormalization", "UnsupportedKerasError", "SUPPORTED_ACTIVATIONS"]

SUPPORTED_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")


class UnsupportedKerasError(ValueError):
    """A Keras layer, or one of its arguments, has no tinynet equivalent."""


@keras.saving.register_keras_serializable(package="tinynet")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels, Caffe's formula, for Keras (channels last).

    .. math::

        y_c = x_c \\Big(k + \\frac{α}{size} \\sum_{j=c-⌊(size-1)/2⌋}^{c+⌈(size-1)/2⌉} x_j^2\\Big)^{-β}

    Parameters
    ----------
    size : int, default 5
    alpha : float, default 1e-4 (divided by ``size``, as Caffe)
    beta : float, default 0.75
    k : float, default 1.0
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, x):
        before = (self.size - 1) // 2
        after = self.size - 1 - before
        channels = x.shape[-1]
        squared = ops.pad(ops.square(x), [[0, 0]] * (len(x.shape) - 1) + [[before, after]])
        window_sum = squared[..., 0:channels]
        for d in range(1, self.size):
            window_sum = window_sum + squared[..., d:d + channels]
        scale = self.k + (self.alpha / self.size) * window_sum
        return x * ops.power(scale, -self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


# ------------------------------------------------------------------------------------- Keras → tinynet
def _fail(layer, message):
    raise UnsupportedKerasError(f"Keras layer '{layer.name}' ({type(layer).__name__}): {message}")


def _require(layer, config, key, allowed):
    """Raise unless ``config[key]`` (when present) is one of ``allowed``."""
    if key not in config:
        return
    value = config[key]
    if isinstance(value, list):
        value = tuple(value)
    if value not in allowed:
        _fail(layer, f"argument {key}={value!r} is not supported (tinynet supports {', '.join(map(repr, allowed))})")


def _activation(layer, config):
    name = config.get("activation", "linear")
    if not isinstance(name, str) or name not in SUPPORTED_ACTIVATIONS:
        _fail(layer, f"activation {name!r} is not supported (tinynet supports {', '.join(SUPPORTED_ACTIVATIONS)})")
    return name


def _no_lora_or_quantization(layer, config):
    if config.get("lora_rank"):
        _fail(layer, f"argument lora_rank={config['lora_rank']!r} is not supported")
    if getattr(layer, "quantization_mode", None) is not None:
        _fail(layer, f"quantization_mode={layer.quantization_mode!r} is not supported")


def _channels_last(layer, config):
    _require(layer, config, "data_format", (None, "channels_last"))


def _convert_layer(layer):
    """A new tinynet layer with the Keras layer's name, arguments and dtype (weights are set later)."""
    config = layer.get_config()
    kind = type(layer).__name__
    if layer.weights and not layer.trainable:
        # tinynet has no frozen layers: the weights would train, and a frozen BatchNormalization runs in inference
        # mode even in a training call (a different function from tinynet's)
        _fail(layer, "trainable=False (a frozen layer) is not supported: tinynet would train its weights and, for "
                     "BatchNormalization, use batch statistics in training where Keras keeps the moving ones; set "
                     "trainable=True first")
    compute_dtype = getattr(layer, "compute_dtype", layer.dtype)
    if compute_dtype != layer.dtype:
        _fail(layer, f"dtype policy {getattr(layer, 'dtype_policy', compute_dtype)!s} (computing in {compute_dtype}, "
                     f"weights in {layer.dtype}) is not supported: tinynet computes in its weights' dtype")
    common = {"name": layer.name, "dtype": layer.dtype}
    if isinstance(layer, LocalResponseNormalization):
        return tl.LocalResponseNormalization(config["size"], config["alpha"], config["beta"], config["k"], **common)
    if kind == "Conv2D":
        _channels_last(layer, config)
        _require(layer, config, "dilation_rate", ((1, 1), 1))
        _require(layer, config, "groups", (1,))
        _no_lora_or_quantization(layer, config)
        return tl.Conv2D(config["filters"], tuple(config["kernel_size"]), strides=tuple(config["strides"]),
                         padding=config["padding"], activation=_activation(layer, config),
                         use_bias=config["use_bias"], **common)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        _channels_last(layer, config)
        cls = tl.MaxPool2D if kind == "MaxPooling2D" else tl.AvgPool2D
        strides = config["strides"]
        return cls(tuple(config["pool_size"]), strides=tuple(strides) if strides is not None else None,
                   padding=config["padding"], **common)
    if kind == "GlobalAveragePooling2D":
        _channels_last(layer, config)
        _require(layer, config, "keepdims", (False,))
        return tl.GlobalAveragePooling2D(**common)
    if kind == "Dense":
        _no_lora_or_quantization(layer, config)
        return tl.Dense(config["units"], activation=_activation(layer, config), use_bias=config["use_bias"],
                        **common)
    if kind == "Flatten":
        _channels_last(layer, config)
        return tl.Flatten(**common)
    if kind == "Dropout":
        _require(layer, config, "noise_shape", (None,))
        return tl.Dropout(config["rate"], seed=config.get("seed"), **common)
    if kind == "BatchNormalization":
        _require(layer, config, "center", (True,))
        _require(layer, config, "scale", (True,))
        _require(layer, config, "renorm", (False,))
        axis = config["axis"]
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                _fail(layer, f"argument axis={axis!r} is not supported (one feature axis only)")
            axis = axis[0]
        return tl.BatchNormalization(axis=axis, momentum=config["momentum"], epsilon=config["epsilon"], **common)
    if kind == "Concatenate":
        return tl.Concatenate(axis=config["axis"], **common)
    if kind == "Activation":
        return tl.Activation(_activation(layer, config), **common)
    if kind == "ReLU":
        _require(layer, config, "max_value", (None,))
        _require(layer, config, "negative_slope", (0, 0.0))
        _require(layer, config, "threshold", (0, 0.0))
        return tl.ReLU(**common)
    if kind == "Softmax":
        axis = config.get("axis", -1)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                _fail(layer, f"argument axis={axis!r} is not supported (one axis only)")
            axis = axis[0]
        return tl.Softmax(axis=axis, **common)
    supported = ("InputLayer, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Dense, Flatten, "
                 "Dropout, BatchNormalization, Concatenate, Activation, ReLU, Softmax, LocalResponseNormalization")
    _fail(layer, f"layer type {kind} is not supported by tinynet (supported: {supported})")


def _keras_history(tensor):
    """``(operation, node index, tensor index)`` of a Keras tensor: the layer call that made it.

    Keras 3 has no public accessor for it (nor for a layer's inbound nodes); every such access is here and in
    :func:`_inbound_node`, so a change in Keras' internals touches two lines.
    """
    return tensor._keras_history


def _inbound_node(layer, node_index):
    """The Keras ``Node`` of ``layer``'s call number ``node_index`` (its ``input_tensors``, in order)."""
    return layer._inbound_nodes[node_index]


def _is_single(structure, count):
    """Whether a Keras model was built on one tensor rather than a list (or dict) of them.

    ``structure`` is the model's ``input`` / ``output`` as given to its constructor; ``None`` when the model
    does not expose it, in which case one tensor counts as single.
    """
    if structure is None:
        return count == 1
    return not isinstance(structure, (list, tuple, dict))


def _keras_input(tensor):
    """The tinynet Input for a Keras input tensor, named as its InputLayer."""
    layer = _keras_history(tensor).operation
    return tl.Input(tuple(tensor.shape[1:]), dtype=tensor.dtype, name=layer.name)


def _copy_weights(pairs):
    """Set each tinynet layer's weights from its Keras twin (same order: kernel, bias / gamma, beta, mean, var)."""
    for keras_layer, tiny_layer in pairs:
        values = keras_layer.get_weights()
        if len(values) != len(tiny_layer.weights):
            _fail(keras_layer, f"has {len(values)} weights, tinynet's {type(tiny_layer).__name__} has "
                               f"{len(tiny_layer.weights)}")
        if values:
            tiny_layer.set_weights(values)


def _from_sequential(model):
    try:
        built_inputs = model.inputs
    except (AttributeError, ValueError):  # Keras raises for a Sequential model with no Input yet
        built_inputs = None
    if not built_inputs:
        raise UnsupportedKerasError(f"Keras Sequential '{model.name}' is not built: give it an Input first")
    x = inputs = _keras_input(model.inputs[0])
    pairs = []
    for layer in model.layers:
        tiny = _convert_layer(layer)
        x = tiny(x)
        pairs.append((layer, tiny))
    _copy_weights(pairs)
    return Model(inputs, x, name=model.name)


def from_keras(model):
    """Build the tinynet :class:`~tinynet.Model` computing what a Keras 3 model computes.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model made of the supported layers (see the module docstring).

    Returns
    -------
    Model
        Same inputs and outputs (order kept), layer names, arguments, weights and BatchNormalization statistics.

    Raises
    ------
    UnsupportedKerasError
        For a layer or argument tinynet has no equivalent for, naming it: also a frozen layer with weights
        (``trainable=False``) and a mixed-precision dtype policy.
    TypeError
        If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"from_keras: model must be a keras.Model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential):
        return _from_sequential(model)
    converted = {}   # id(Keras layer) → tinynet layer (a layer called twice is converted once)
    tensors = {}     # id(KerasTensor) → tinynet SymbolicTensor
    for t in model.inputs:
        tensors[id(t)] = _keras_input(t)

    def visit(tensor):
        if id(tensor) in tensors:
            return tensors[id(tensor)]
        op, node_index, tensor_index = _keras_history(tensor)
        if not isinstance(op, keras.layers.Layer):
            raise UnsupportedKerasError(f"Keras operation '{op.name}' ({type(op).__name__}) is not a layer "
                                        "tinynet supports (write it as a layer)")
        if isinstance(op, keras.layers.InputLayer):
            raise UnsupportedKerasError(f"Keras input '{op.name}' is not among the model's inputs")
        if isinstance(op, keras.Model):
            raise UnsupportedKerasError(f"Keras layer '{op.name}' is a nested model; flatten it first")
        node = _inbound_node(op, node_index)
        args = [visit(t) for t in node.input_tensors]
        if id(op) not in converted:
            converted[id(op)] = (op, _convert_layer(op))
        tiny = converted[id(op)][1]
        out = tiny(Node.args_for(tiny, args))
        tensors[id(tensor)] = out
        return out

    outputs = [visit(t) for t in model.outputs]
    _copy_weights(converted.values())
    inputs = [tensors[id(t)] for t in model.inputs]
    # a functional model's public ``input`` / ``output`` are the structures it was built with
    single_in = _is_single(getattr(model, "input", None), len(inputs))
    single_out = _is_single(getattr(model, "output", None), len(outputs))
    return Model(inputs[0] if single_in else inputs, outputs[0] if single_out else outputs, name=model.name)


# ------------------------------------------------------------------------------------- tinynet → Keras
def _keras_layer(layer):
    """A new Keras layer with the tinynet layer's name, arguments and dtype."""
    c = layer.get_config()
    common = {"name": layer.name, "dtype": layer.dtype}
    kl = keras.layers
    if isinstance(layer, tl.Conv2D):
        return kl.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                         activation=c["activation"], use_bias=c["use_bias"], **common)
    if isinstance(layer, tl.MaxPool2D):
        return kl.MaxPooling2D(c["pool_size"], strides=c["strides"], padding=c["padding"], **common)
    if isinstance(layer, tl.AvgPool2D):
        return kl.AveragePooling2D(c["pool_size"], strides=c["strides"], padding=c["padding"], **common)
    if isinstance(layer, tl.GlobalAveragePooling2D):
        return kl.GlobalAveragePooling2D(**common)
    if isinstance(layer, tl.Dense):
        return kl.Dense(c["units"], activation=c["activation"], use_bias=c["use_bias"], **common)
    if isinstance(layer, tl.Flatten):
        return kl.Flatten(**common)
    if isinstance(layer, tl.Dropout):
        return kl.Dropout(c["rate"], seed=c["seed"], **common)
    if isinstance(layer, tl.BatchNormalization):
        return kl.BatchNormalization(axis=c["axis"], momentum=c["momentum"], epsilon=c["epsilon"], **common)
    if isinstance(layer, tl.Concatenate):
        return kl.Concatenate(axis=c["axis"], **common)
    if isinstance(layer, tl.ReLU):
        return kl.ReLU(**common)
    if isinstance(layer, tl.Activation):
        return kl.Activation(c["activation"], **common)
    if isinstance(layer, tl.Softmax):
        return kl.Softmax(axis=c["axis"], **common)
    if isinstance(layer, tl.LocalResponseNormalization):
        return LocalResponseNormalization(c["size"], c["alpha"], c["beta"], c["k"], **common)
    raise UnsupportedKerasError(f"tinynet layer '{layer.name}' ({type(layer).__name__}) has no Keras equivalent here")


def to_keras(model):
    """Build the Keras 3 functional model computing what a tinynet :class:`~tinynet.Model` computes.

    Local response normalisation becomes :class:`LocalResponseNormalization` (this module's Keras layer).
    Weights and BatchNormalization statistics are copied.

    Raises
    ------
    UnsupportedKerasError
        For a tinynet layer without a Keras equivalent.
    TypeError
        If ``model`` is not a tinynet :class:`~tinynet.Model`.
    """
    if not isinstance(model, Model):
        raise TypeError(f"to_keras: model must be a tinynet Model, got {type(model).__name__}")
    tensors = {}   # id(tinynet SymbolicTensor) → KerasTensor
    made = {}      # id(tinynet layer) → (tinynet layer, Keras layer)
    for node in model.nodes:
        layer = node.layer
        if isinstance(layer, tl.InputLayer):
            tensors[id(node.output)] = keras.Input(shape=layer.shape, dtype=layer.dtype, name=layer.name)
            continue
        if id(layer) not in made:
            made[id(layer)] = (layer, _keras_layer(layer))
        keras_layer = made[id(layer)][1]
        args = [tensors[id(t)] for t in node.inputs]
        tensors[id(node.output)] = keras_layer(node.layer_args(args))
    inputs = [tensors[id(t)] for t in model.inputs]
    outputs = [tensors[id(t)] for t in model.outputs]
    result = keras.Model(inputs[0] if model.single_input else inputs,
                         outputs[0] if model.single_output else outputs, name=model.name)
    for layer, keras_layer in made.values():
        if layer.weights:
            keras_layer.set_weights(layer.get_weights())
    return result
