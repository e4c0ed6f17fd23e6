"""Bad inputs to layers and models fail early and clearly; NaN and empty batches behave as documented.

Every error names the layer (its name and type), the argument and the shapes, and leaves nothing half-updated:

* input dtypes at the layer and model boundary (integers and booleans cast, complex and object refused),
  and the kernels' own refusal of anything but float32/float64; float16 refused with the reason;
* ``Layer.backward`` checks the gradient against the cache of its forward (shape with the batch, dtype,
  device);
* constructor arguments, checked where Keras 3 checks them, and more strictly where Keras would accept a
  value that breaks the math (a negative epsilon, a dropout rate of 1, ...);
* ``Concatenate`` on every axis Keras accepts, with Keras' result, and a clear error on the batch axis;
* ``Input`` with a variable size (None); empty batches in models and losses;
* NaN through max pooling (propagates, gradient to the first NaN) and BatchNormalization (moving statistics
  untouched); labels and weights of ``losses.weighted_loss``;
* ``Model.forward/backward(check_finite=True)``, :class:`tinynet.NonFiniteError`, ``first_nonfinite_weight``;
* property-based fuzzing (hypothesis) of window layers and Concatenate: a graph builds and runs with the
  inferred shapes, or a ShapeError/ValueError/TypeError naming the layer is raised, never anything else.
"""
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import tinynet
from tinynet import Model, NonFiniteError, kernels, losses
from tinynet.layers import (Activation, AvgPool2D, BatchNormalization, Concatenate, Conv2D, Dense, Dropout,
                            Flatten, GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D, ReLU,
                            ShapeError, Softmax, concatenate)

from conftest import CPU_BACKENDS

esc = re.escape


@pytest.fixture
def rng():
    return np.random.default_rng(5)


def on_backend(layer_or_model, xb):
    layer_or_model.to("gpu" if xb.name == "cupy" else "cpu")
    return layer_or_model


def built(layer, *shapes):
    layer([Input(s) for s in shapes] if len(shapes) > 1 else Input(shapes[0]))
    return layer


# ================================================================================== 1. input dtypes
EAGER_LAYERS = [
    (lambda: MaxPool2D(2, name="l"), "MaxPool2D", (4, 5, 2)),
    (lambda: MaxPool2D(3, strides=2, padding="same", name="l"), "MaxPool2D", (5, 5, 2)),
    (lambda: AvgPool2D(2, padding="same", name="l"), "AvgPool2D", (5, 4, 2)),
    (lambda: Conv2D(3, (2, 3), name="l"), "Conv2D", (4, 5, 2)),
    (lambda: LocalResponseNormalization(3, name="l"), "LocalResponseNormalization", (2, 3, 5)),
    (lambda: BatchNormalization(name="l"), "BatchNormalization", (2, 3, 4)),
    (lambda: Dense(3, activation="relu", name="l"), "Dense", (2, 4)),
    (lambda: GlobalAveragePooling2D(name="l"), "GlobalAveragePooling2D", (3, 3, 2)),
]


@pytest.mark.parametrize("dtype", ["int8", "int64", "uint8", "bool"])
@pytest.mark.parametrize("make, type_name, shape", EAGER_LAYERS,
                         ids=[c[1] + str(i) for i, c in enumerate(EAGER_LAYERS)])
def test_integer_and_bool_inputs_are_cast_to_the_layer_dtype(make, type_name, shape, dtype, xb, rng):
    """MaxPool2D on an integer array used to return uninitialised memory with the Numba kernels."""
    layer = on_backend(built(make(), shape), xb)
    ints = rng.integers(0, 2 if dtype == "bool" else 100, (2,) + shape).astype(dtype)
    for run in (lambda a: layer(a), lambda a: layer.forward(a)[0], lambda a: layer.forward(a, training=True)[0]):
        expected = xb.numpy(run(xb(ints.astype(np.float32))))
        y = run(xb(ints))
        assert y.dtype == np.float32
        np.testing.assert_allclose(xb.numpy(y), expected, rtol=1e-6, atol=1e-6)


def test_a_list_is_a_list_of_inputs_and_a_tuple_of_numbers_an_array():
    layer = built(MaxPool2D(2, name="p"), (2, 2, 1))
    with pytest.raises(TypeError, match=esc("layer 'p' (MaxPool2D): takes one input, got a list of 1 (pass one "
                                            "array, not a list)")):
        layer([[[[1], [5]], [[3], [2]]]])
    dense = built(Concatenate(name="c"), (2,), (1,))
    np.testing.assert_array_equal(dense([((1, 2),), [[3]]]), [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("bad", [np.zeros((1, 4, 4, 2), complex), np.full((1, 4, 4, 2), None, object),
                                 np.full((1, 4, 4, 2), "a"), np.zeros((1, 4, 4, 2), "datetime64[s]")],
                         ids=["complex", "object", "str", "datetime"])
def test_complex_object_and_text_inputs_are_refused_naming_the_layer(bad):
    layer = built(Conv2D(2, 3, name="c"), (4, 4, 2))
    message = esc(f"layer 'c' (Conv2D): input 0 has dtype {bad.dtype}")
    with pytest.raises(TypeError, match=message):
        layer(bad)
    with pytest.raises(TypeError, match=message):
        layer.forward(bad)


@pytest.mark.parametrize("bad", [np.zeros((1, 4, 4, 2), complex), np.full((1, 4, 4, 2), None, object)],
                         ids=["complex", "object"])
def test_models_refuse_complex_and_object_inputs(bad):
    x = Input((4, 4, 2), name="pixels")
    model = Model(x, Conv2D(2, 3)(x), name="m")
    message = esc(f"Model 'm': input 'pixels' has dtype {bad.dtype}")
    for run in (model.predict, model, model.forward):
        with pytest.raises(TypeError, match=message):
            run(bad)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool", "float16"])
def test_models_cast_integer_bool_and_float16_inputs(dtype, rng):
    x = Input((5, 5, 2))
    model = Model(x, Dense(3)(Flatten()(MaxPool2D(2)(Conv2D(2, 3, padding="same")(x)))))
    data = rng.integers(0, 2 if dtype == "bool" else 50, (3, 5, 5, 2)).astype(dtype)
    expected = model(data.astype(np.float32))
    for out in (model(data), model.predict(data, batch_size=2), model.forward(data, training=True)):
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((1, 2, 2, 1), np.int64), np.zeros((1, 2, 2, 1), bool),
                                 np.zeros((1, 2, 2, 1), np.float16), np.zeros((1, 2, 2, 1), complex)],
                         ids=["int64", "bool", "float16", "complex"])
def test_kernel_dispatch_refuses_non_float_arrays(bad, xb):
    for call in (lambda: kernels.maxpool_forward(xb(bad), 2, 2, 2, 2, (0, 0, 0, 0)),
                 lambda: kernels.im2col(xb(bad), 1, 1, 1, 1, (0, 0, 0, 0)),
                 lambda: kernels.avgpool_forward(xb(bad), 2, 2, 1, 1, (0, 0, 0, 0)),
                 lambda: kernels.lrn_forward(xb(bad), 3, 1e-4, 0.75, 1.0)):
        with pytest.raises(TypeError, match=f"tinynet.kernels.*must be float32 or float64, got {bad.dtype}"):
            call()


# ================================================================================== 2. float16: refused
def test_float16_is_refused_with_the_reason():
    reason = "float16 is not supported: the Numba and CUDA kernels are compiled for float32 and float64 only"
    with pytest.raises(ValueError, match=esc(f"set_floatx: {reason}")):
        tinynet.set_floatx("float16")
    assert tinynet.floatx() == "float32"
    with pytest.raises(ValueError, match=esc(reason)):
        with tinynet.floatx_scope(np.float16):
            pass
    assert tinynet.floatx() == "float32"
    with pytest.raises(ValueError, match=esc(f"layer 'h' (Dense): {reason}")):
        Dense(2, dtype="float16", name="h")
    with pytest.raises(ValueError, match=esc(f"layer 'x' (InputLayer): {reason}")):
        Input((3,), dtype=np.float16, name="x")
    with pytest.raises(ValueError, match=esc("layer 'i' (Conv2D): dtype must be one of ('float32', 'float64'), "
                                             "got 'int32'")):
        Conv2D(2, 3, dtype="int32", name="i")


def test_float16_arrays_are_computed_in_the_layer_dtype(xb, rng):
    layer = on_backend(built(MaxPool2D(2), (4, 4, 3)), xb)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float16)
    y = layer(xb(x))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(xb.numpy(y), xb.numpy(layer(xb(x.astype(np.float32)))))


# ================================================================================== 3. backward checks
BACKWARD_LAYERS = EAGER_LAYERS + [
    (lambda: Flatten(name="l"), "Flatten", (2, 3)),
    (lambda: Dropout(0.5, seed=0, name="l"), "Dropout", (3, 2)),
    (lambda: Softmax(name="l"), "Softmax", (4,)),
    (lambda: Activation("tanh", name="l"), "Activation", (4,)),
]


@pytest.mark.parametrize("make, type_name, shape", BACKWARD_LAYERS,
                         ids=[c[1] + str(i) for i, c in enumerate(BACKWARD_LAYERS)])
def test_backward_checks_the_gradient_against_its_cache(make, type_name, shape, xb, rng):
    layer = on_backend(built(make(), shape), xb)
    y, cache = layer.forward(xb(rng.standard_normal((3,) + shape).astype(np.float32)), training=True)
    out = tuple(y.shape)
    assert cache.output_shape == out
    prefix = esc(f"layer 'l' ({type_name}): the gradient has shape")
    for wrong in [(2,) + out[1:], (4,) + out[1:], out[:-1] + (out[-1] + 1,), out + (1,), out[1:]]:
        with pytest.raises(ShapeError, match=prefix + ".*" + esc(f"{wrong}, but the output it belongs to has "
                                                                 f"shape {out}")):
            layer.backward(xb(np.ones(wrong, np.float32)), cache)
    with pytest.raises(TypeError, match=esc(f"layer 'l' ({type_name}): the gradient has dtype int64")):
        layer.backward(xb(np.ones(out, np.int64)), cache)
    with pytest.raises(TypeError, match=esc(f"layer 'l' ({type_name}): backward needs the cache returned by "
                                            f"this layer's forward, got a tuple")):
        layer.backward(xb(np.ones(out, np.float32)), cache.data if isinstance(cache.data, tuple) else (1,))
    other = make()
    other.name = "other"
    built(other, shape)
    with pytest.raises(TypeError, match=esc("got the cache of layer 'l'")):
        other.backward(xb(np.ones(out, np.float32)), cache)
    gx, _ = layer.backward(xb(np.ones(out, np.float64)), cache)  # any floating dtype is fine
    assert gx.shape == (3,) + shape


@pytest.mark.gpu
def test_backward_refuses_a_gradient_on_another_device():
    cp = pytest.importorskip("cupy")
    layer = built(MaxPool2D(2, name="p"), (4, 4, 1))
    _, cache = layer.forward(np.ones((1, 4, 4, 1), np.float32))
    with pytest.raises(TypeError, match=esc("layer 'p' (MaxPool2D): the gradient is on gpu but the output is on cpu")):
        layer.backward(cp.ones((1, 2, 2, 1), cp.float32), cache)


def test_a_cache_serves_one_backward_per_call_and_the_layer_keeps_no_state(rng):
    """Two calls of one layer keep two caches; each backward uses its own (the per-call cache design)."""
    layer = built(MaxPool2D(2, name="p"), (4, 4, 1))
    a, b = rng.standard_normal((2, 4, 4, 1)), rng.standard_normal((5, 4, 4, 1))
    _, cache_a = layer.forward(a)
    _, cache_b = layer.forward(b)
    assert layer.backward(np.ones((2, 2, 2, 1)), cache_a)[0].shape == a.shape
    assert layer.backward(np.ones((5, 2, 2, 1)), cache_b)[0].shape == b.shape


def test_a_layer_called_on_an_array_of_the_wrong_rank_names_itself():
    layer = built(MaxPool2D(2, name="p"), (4, 4, 1))
    with pytest.raises(ShapeError, match=esc("layer 'p' (MaxPool2D): expected a 4-D input")):
        layer(np.ones((4, 4, 1), np.float32))
    with pytest.raises(ShapeError, match=esc("layer 'p' (MaxPool2D): input 0 is a 0-d array")):
        layer(np.float32(1.0))


def test_concatenate_inputs_of_different_batch_sizes():
    layer = built(Concatenate(name="cat"), (2, 1), (2, 3))
    with pytest.raises(ShapeError, match=esc("layer 'cat' (Concatenate): inputs have different batch sizes "
                                             "((2, 2, 1), (3, 2, 3))")):
        layer([np.ones((2, 2, 1)), np.ones((3, 2, 3))])


def test_model_inputs_of_different_batch_sizes():
    a, b = Input((3,), name="a"), Input((2,), name="b")
    model = Model([a, b], concatenate([a, b]), name="m")
    with pytest.raises(ShapeError, match=esc("Model 'm': the inputs have different batch sizes: 'a' (2, 3), "
                                             "'b' (3, 2)")):
        model.predict([np.ones((2, 3)), np.ones((3, 2))])


def test_model_gradient_of_the_wrong_dtype_or_type():
    x = Input((3,))
    model = Model(x, Dense(2, name="d")(x), name="m")
    model.forward(np.ones((4, 3)))
    with pytest.raises(TypeError, match=esc("Model 'm': gradient for output 'd' has dtype int64")):
        model.backward(np.ones((4, 2), np.int64))
    with pytest.raises(ShapeError, match=esc("has shape (4,), expected (4, 2)")):
        model.backward([1.0, 2.0, 3.0, 4.0])


# ================================================================================== 4. constructor arguments
NAME_RULE = "name must be a non-empty string without '/' or control characters"
BAD_ARGUMENTS = [
    (lambda: Conv2D(2.5, 3, name="x"), "layer 'x' (Conv2D): filters must be an integer >= 1, got 2.5"),
    (lambda: Conv2D(2.0, 3, name="x"), "layer 'x' (Conv2D): filters must be an integer >= 1, got 2.0"),
    (lambda: Conv2D(True, 3, name="x"), "layer 'x' (Conv2D): filters must be an integer >= 1, got True"),
    (lambda: Conv2D("2", 3, name="x"), "layer 'x' (Conv2D): filters must be an integer >= 1, got '2'"),
    (lambda: Conv2D(-1, 3, name="x"), "layer 'x' (Conv2D): filters must be an integer >= 1, got -1"),
    (lambda: Conv2D(2, 3.0, name="x"), "layer 'x' (Conv2D): kernel_size must be an int or a pair of ints"),
    (lambda: Conv2D(2, (3, 2.5), name="x"), "layer 'x' (Conv2D): kernel_size must be an int or a pair of ints"),
    (lambda: Conv2D(2, (3, 0), name="x"), "layer 'x' (Conv2D): kernel_size must be >= 1, got (3, 0)"),
    (lambda: Conv2D(2, -1, name="x"), "layer 'x' (Conv2D): kernel_size must be >= 1, got -1"),
    (lambda: Conv2D(2, "3", name="x"), "layer 'x' (Conv2D): kernel_size must be an int or a pair of ints"),
    (lambda: Conv2D(2, 3, strides=(1, 0), name="x"), "layer 'x' (Conv2D): strides must be >= 1"),
    (lambda: Conv2D(2, 3, padding="causal", name="x"), "layer 'x' (Conv2D): padding must be 'valid' or 'same'"),
    (lambda: Conv2D(2, 3, padding=None, name="x"), "layer 'x' (Conv2D): padding must be 'valid' or 'same', got None"),
    (lambda: Conv2D(2, 3, activation="RELU", name="x"), "layer 'x' (Conv2D): unknown activation 'RELU'"),
    (lambda: Conv2D(2, 3, activation=np.tanh, name="x"), "layer 'x' (Conv2D): unknown activation"),
    (lambda: Dense(2.0, name="x"), "layer 'x' (Dense): units must be an integer >= 1, got 2.0"),
    (lambda: Dense(-3, name="x"), "layer 'x' (Dense): units must be an integer >= 1, got -3"),
    (lambda: MaxPool2D(0, name="x"), "layer 'x' (MaxPool2D): pool_size must be >= 1, got 0"),
    (lambda: MaxPool2D(2.0, name="x"), "layer 'x' (MaxPool2D): pool_size must be an int or a pair of ints"),
    (lambda: MaxPool2D(2, strides=0, name="x"), "layer 'x' (MaxPool2D): strides must be >= 1"),
    (lambda: MaxPool2D(2, padding="full", name="x"), "layer 'x' (MaxPool2D): padding must be 'valid' or 'same'"),
    (lambda: AvgPool2D((2, 2, 2), name="x"), "layer 'x' (AvgPool2D): pool_size must be an int or a pair of ints"),
    (lambda: AvgPool2D(2, strides=-2, name="x"), "layer 'x' (AvgPool2D): strides must be >= 1"),
    (lambda: BatchNormalization(epsilon=-1e-3, name="x"),
     "layer 'x' (BatchNormalization): epsilon must be a number in [0, inf), got -0.001"),
    (lambda: BatchNormalization(epsilon=float("nan"), name="x"), "layer 'x' (BatchNormalization): epsilon must be"),
    (lambda: BatchNormalization(momentum=1.5, name="x"),
     "layer 'x' (BatchNormalization): momentum must be a number in [0, 1], got 1.5"),
    (lambda: BatchNormalization(momentum=-0.1, name="x"), "layer 'x' (BatchNormalization): momentum must be"),
    (lambda: BatchNormalization(axis=1.5, name="x"), "layer 'x' (BatchNormalization): axis must be an integer"),
    (lambda: Dropout(1.0, name="x"), "layer 'x' (Dropout): rate must be a number in [0, 1), got 1.0"),
    (lambda: Dropout(-0.1, name="x"), "layer 'x' (Dropout): rate must be a number in [0, 1), got -0.1"),
    (lambda: Dropout(float("nan"), name="x"), "layer 'x' (Dropout): rate must be a number in [0, 1), got nan"),
    (lambda: Dropout("0.5", name="x"), "layer 'x' (Dropout): rate must be a number in [0, 1), got '0.5'"),
    (lambda: Dropout(0.5, seed=1.5, name="x"), "layer 'x' (Dropout): seed must be an integer >= 0, got 1.5"),
    (lambda: LocalResponseNormalization(0, name="x"),
     "layer 'x' (LocalResponseNormalization): size must be an integer >= 1, got 0"),
    (lambda: LocalResponseNormalization(2.5, name="x"), "layer 'x' (LocalResponseNormalization): size must be"),
    (lambda: LocalResponseNormalization(alpha=-1e-4, name="x"),
     "layer 'x' (LocalResponseNormalization): alpha must be a number in [0, inf), got -0.0001"),
    (lambda: LocalResponseNormalization(beta=-0.75, name="x"), "layer 'x' (LocalResponseNormalization): beta must be"),
    (lambda: LocalResponseNormalization(beta=float("inf"), name="x"), "(LocalResponseNormalization): beta must be"),
    (lambda: LocalResponseNormalization(k=0.0, name="x"),
     "layer 'x' (LocalResponseNormalization): k must be a number in (0, inf), got 0.0"),
    (lambda: Softmax(axis="1", name="x"), "layer 'x' (Softmax): axis must be an integer, got '1'"),
    (lambda: Concatenate(axis=1.0, name="x"), "layer 'x' (Concatenate): axis must be an integer, got 1.0"),
    (lambda: Activation("swish9", name="x"), "layer 'x' (Activation): unknown activation 'swish9'"),
    (lambda: Dense(2, name="a/b"), f"Dense: {NAME_RULE}, got 'a/b'"),
    (lambda: Dense(2, name=3), f"Dense: {NAME_RULE}, got 3"),
    (lambda: Dense(2, name="dense\x00two"), f"Dense: {NAME_RULE}, got 'dense\\x00two'"),  # zip cuts at NUL
    (lambda: Conv2D(2, 3, name="c\tx"), f"Conv2D: {NAME_RULE}, got 'c\\tx'"),
    (lambda: Conv2D(4, 3, use_bias="False", name="x"),
     "layer 'x' (Conv2D): use_bias must be True or False, got 'False'"),
    (lambda: Dense(4, use_bias=None, name="x"), "layer 'x' (Dense): use_bias must be True or False, got None"),
    (lambda: Dense(4, use_bias=2, name="x"), "layer 'x' (Dense): use_bias must be True or False, got 2"),
]


@pytest.mark.parametrize("make, message", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_constructor_arguments_name_the_layer_and_the_argument(make, message):
    with pytest.raises(ValueError, match=esc(message)):
        make()


GOOD_ARGUMENTS = [  # the boundaries, and what Keras also accepts
    lambda: Conv2D(np.int64(2), np.int32(3), strides=(np.int64(1), 2), padding="SAME"),
    lambda: Conv2D(1, [3, 1], padding="Valid", activation=None, use_bias=0),
    lambda: MaxPool2D(np.array([2, 3])),
    lambda: Dense(1, activation="linear"),
    lambda: BatchNormalization(epsilon=0, momentum=0),
    lambda: BatchNormalization(momentum=1, axis=np.int64(-1)),
    lambda: Dropout(0),
    lambda: Dropout(np.float32(0.999), seed=np.int64(3)),
    lambda: LocalResponseNormalization(1, alpha=0, beta=0, k=1e-9),
    lambda: LocalResponseNormalization(np.int64(4)),
]


@pytest.mark.parametrize("make", GOOD_ARGUMENTS)
def test_boundary_arguments_are_accepted(make):
    make()


@pytest.mark.keras
@pytest.mark.parametrize("make, refused", [
    ("Conv2D(0, 3)", True), ("Conv2D(2, 0)", True), ("Conv2D(2, -1)", True), ("Conv2D(2, 3, strides=0)", True),
    ("Conv2D(2, (1, 2, 3))", True), ("Conv2D(2, 3.0)", True), ("Conv2D(2, 3, padding='full')", True),
    ("Conv2D(2, 3, activation='swish9')", True), ("Conv2D(2, 3, activation='RELU')", True),
    ("Dense(0)", True), ("Dense(-1)", True), ("Dense(2.5)", True), ("Dense(2.0)", True),
    ("MaxPooling2D(0)", True), ("MaxPooling2D(2.0)", True), ("AveragePooling2D(0)", True),
    ("Dropout(-0.1)", True), ("Dropout(1.5)", True), ("Dropout(float('nan'))", True),
    ("Conv2D(2, 3, padding='SAME')", False), ("Conv2D(2, (3, 5), strides=(2, 1))", False),
    ("BatchNormalization(epsilon=0, momentum=1)", False), ("Dropout(0)", False),
])
def test_keras_agrees_on_the_boundaries(make, refused):
    """Where Keras 3 refuses an argument, tinynet refuses it too, and where it accepts, tinynet accepts.

    tinynet is stricter than Keras on a few values Keras accepts at construction but which break the math
    or silently change a type: BatchNormalization epsilon < 0 or momentum outside [0, 1], Dropout(1.0)
    (1/(1 − rate) is infinite), Conv2D(2.0) and kernel_size (3.0, 2) (float sizes), MaxPooling2D strides=0
    and padding='full' (Keras 3.15 does not check pooling arguments); see BAD_ARGUMENTS. It is more lenient
    in one place: NumPy integers are integers everywhere (Keras takes ``Conv2D(np.int64(2), 3)`` but
    refuses ``Dense(np.int64(2))``).
    """
    keras = pytest.importorskip("keras")
    namespace = {"np": np, "MaxPooling2D": MaxPool2D, "AveragePooling2D": AvgPool2D, "Conv2D": Conv2D,
                 "Dense": Dense, "Dropout": Dropout, "BatchNormalization": BatchNormalization}
    keras_namespace = {"np": np, **{k: getattr(keras.layers, k) for k in namespace if k != "np"}}

    def verdict(ns):
        try:
            eval(make, ns)
        except ValueError:
            return True
        return False

    assert verdict(keras_namespace) is refused
    assert verdict(namespace) is refused


# ================================================================================== 5. Concatenate axes
SHAPES_BY_AXIS = {  # per-example shapes of three inputs that differ only on the axis
    1: [(2, 3, 4), (1, 3, 4), (3, 3, 4)], 2: [(2, 3, 4), (2, 1, 4), (2, 2, 4)], 3: [(2, 3, 4), (2, 3, 1), (2, 3, 2)]}
AXES = [1, 2, 3, -1, -2, -3]


def concat_inputs(axis, rng, batch=2):
    shapes = SHAPES_BY_AXIS[axis % 4]
    return shapes, [rng.standard_normal((batch,) + s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("axis", AXES)
def test_concatenate_on_every_feature_axis(axis, xb, rng):
    shapes, xs = concat_inputs(axis, rng)
    layer = on_backend(Concatenate(axis=axis, name="cat"), xb)
    out = layer([Input(s) for s in shapes])
    y, cache = layer.forward([xb(x) for x in xs])
    expected = np.concatenate(xs, axis=axis)
    assert out.shape == (None,) + expected.shape[1:]
    np.testing.assert_array_equal(xb.numpy(y), expected)
    g = rng.standard_normal(expected.shape).astype(np.float32)
    gxs, params = layer.backward(xb(g), cache)
    assert params == []
    offsets = np.cumsum([x.shape[axis] for x in xs])[:-1]
    for gx, part in zip(gxs, np.split(g, offsets, axis=axis)):
        np.testing.assert_array_equal(xb.numpy(gx), part)


@pytest.mark.parametrize("axis, message", [
    (0, "axis 0 is the batch axis"), (-4, "axis -4 is the batch axis"),
    (4, "axis 4 is out of range for 4-D inputs"), (-5, "axis -5 is out of range for 4-D inputs"),
])
def test_concatenate_on_the_batch_axis_or_out_of_range(axis, message):
    with pytest.raises(ShapeError, match=esc(f"layer 'cat' (Concatenate): {message}") + ".*"
                       + esc("input shape (None, 2, 3, 4), (None, 2, 3, 4)")):
        Concatenate(axis=axis, name="cat")([Input((2, 3, 4)), Input((2, 3, 4))])
    with pytest.raises(ShapeError, match=esc(f"layer 'cat' (Concatenate): {message}")):
        Concatenate(axis=axis, name="cat")([np.ones((1, 2, 3, 4)), np.ones((1, 2, 3, 4))])


def test_concatenate_axis_counts_the_batch_on_2d_inputs(rng):
    a, b = rng.standard_normal((3, 2), dtype=np.float32), rng.standard_normal((3, 5), dtype=np.float32)
    for axis in (1, -1):
        np.testing.assert_array_equal(Concatenate(axis=axis)([a, b]), np.concatenate([a, b], axis=1))
    with pytest.raises(ShapeError, match="axis -2 is the batch axis"):
        Concatenate(axis=-2)([a, b])


@pytest.mark.keras
@pytest.mark.parametrize("axis", AXES)
def test_concatenate_matches_keras(axis, rng):
    keras = pytest.importorskip("keras")
    shapes, xs = concat_inputs(axis, rng, batch=3)
    k_inputs = [keras.Input(s) for s in shapes]
    k_model = keras.Model(k_inputs, keras.layers.Concatenate(axis=axis)(k_inputs))
    t_inputs = [Input(s) for s in shapes]
    t_model = Model(t_inputs, Concatenate(axis=axis)(t_inputs))
    expected = np.asarray(k_model(xs))
    assert t_model.outputs[0].shape == tuple(k_model.outputs[0].shape)
    np.testing.assert_array_equal(t_model.predict(xs), expected)


# ================================================================================== 6. Input with None
@pytest.mark.parametrize("shape", [(None, None, 3), (224, None, 3), (None,)])
def test_variable_sizes_are_refused_naming_input_and_the_shape(shape):
    with pytest.raises(ValueError, match=esc(f"Input 'img' (InputLayer): variable sizes are not supported: "
                                             f"shape {shape} has None")):
        Input(shape, name="img")


@pytest.mark.parametrize("shape, message", [
    (3, "shape must be a tuple of per-example sizes such as (224, 224, 3) or (10,), got 3"),
    ((3.0, 2), "every dimension must be an integer >= 1, got shape (3.0, 2)"),
    ((0, 3), "every dimension must be an integer >= 1, got shape (0, 3)"),
    ((-1, 3), "every dimension must be an integer >= 1, got shape (-1, 3)"),
    ((True, 3), "every dimension must be an integer >= 1, got shape (True, 3)"),
])
def test_other_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=esc(f"Input 'img' (InputLayer): {message}")):
        Input(shape, name="img")


def test_input_shape_may_be_a_list_of_numpy_ints():
    assert Input([np.int64(4), 3]).shape == (None, 4, 3)


# ================================================================================== 7. empty batches
def two_output_model():
    x = Input((6, 6, 3))
    y = BatchNormalization()(Conv2D(4, 3, padding="same", activation="relu")(x))
    a = Dense(5, activation="softmax")(GlobalAveragePooling2D()(MaxPool2D(2)(y)))
    b = Dense(2)(Flatten()(LocalResponseNormalization(3)(AvgPool2D(3)(y))))
    return Model(x, [a, b], name="two")


def test_predict_and_call_on_an_empty_batch_give_empty_outputs(xb):
    model = on_backend(two_output_model(), xb)
    empty = xb(np.zeros((0, 6, 6, 3), np.float32))
    for outs in (model.predict(empty), model.predict(empty, batch_size=4), model(empty), model(empty, training=True)):
        assert [tuple(o.shape) for o in outs] == [(0, 5), (0, 2)]
        assert all(o.dtype == np.float32 for o in outs)
        assert all(type(o) is type(empty) for o in outs)


def test_predict_on_an_empty_batch_still_checks_the_shape():
    with pytest.raises(ShapeError, match=esc("input 'input_layer' expects shape (None, 6, 6, 3), got (0, 6, 6, 2)")):
        two_output_model().predict(np.zeros((0, 6, 6, 2)))


def test_forward_on_an_empty_batch_raises_and_keeps_the_model_as_it_was():
    model = two_output_model()
    before = model.get_weights()
    for training in (True, False):
        with pytest.raises(ValueError, match=esc("Model 'two': forward got an empty batch (shape (0, 6, 6, 3))")):
            model.forward(np.zeros((0, 6, 6, 3)), training=training)
    for u, v in zip(before, model.get_weights()):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(RuntimeError, match="call forward"):
        model.backward([np.zeros((0, 5)), np.zeros((0, 2))])


@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.categorical_crossentropy])
def test_losses_on_an_empty_batch_raise(loss):
    with pytest.raises(ValueError, match=esc("empty batch (scores of shape (0, 3))")):
        loss(np.zeros((0, 3), np.float32), np.zeros((0,), np.int64))
    with pytest.raises(ValueError, match="empty batch"):
        losses.weighted_loss([np.zeros((0, 3), np.float32)] * 2, np.zeros((0,), np.int64), [1.0, 0.3])


def test_batchnorm_refuses_batch_statistics_of_an_empty_batch():
    layer = built(BatchNormalization(name="bn"), (3,))
    with pytest.raises(ValueError, match=esc("layer 'bn' (BatchNormalization): empty batch")):
        layer.forward(np.zeros((0, 3)), training=True)
    assert layer.forward(np.zeros((0, 3)))[0].shape == (0, 3)  # inference on nothing is nothing


# ================================================================================== 8. NaN
def test_max_pool_propagates_nan_and_routes_the_gradient_to_the_first_nan(xb):
    x = np.array([[1.0, np.nan, 7.0, -1.0],
                  [np.nan, 9.0, 2.0, 3.0],
                  [4.0, 5.0, np.nan, np.inf],
                  [6.0, -np.inf, 8.0, np.nan]]).reshape(1, 4, 4, 1)
    for padding, strides in (("valid", 2), ("same", 1)):
        layer = on_backend(built(MaxPool2D(2, strides=strides, padding=padding, dtype="float64"), (4, 4, 1)), xb)
        y, cache = layer.forward(xb(x))
        y = xb.numpy(y)
        # reference: a window with a NaN gives NaN, else its max
        n, ho, wo, _ = y.shape
        for i in range(ho):
            for j in range(wo):
                window = x[0, i * strides:i * strides + 2, j * strides:j * strides + 2, 0]
                if np.isnan(window).any():
                    assert np.isnan(y[0, i, j, 0])
                else:
                    assert y[0, i, j, 0] == window.max()
        if padding == "valid":
            gx = xb.numpy(layer.backward(xb(np.array([10.0, 20.0, 30.0, 40.0]).reshape(1, 2, 2, 1)), cache)[0])
            expected = np.zeros((4, 4))
            expected[0, 1] = 10.0   # first NaN of window (0, 0) in row-major order: (0, 1), not (1, 0)
            expected[0, 2] = 20.0   # window (0, 1) has no NaN: its max 7
            expected[3, 0] = 30.0   # window (1, 0): max 6
            expected[2, 2] = 40.0   # window (1, 1): the NaN at (2, 2) beats inf and comes before (3, 3)
            np.testing.assert_array_equal(gx.reshape(4, 4), expected)


def test_max_pool_nan_in_the_last_cell_and_all_nan(xb):
    x = np.array([[[1.0], [2.0]], [[3.0], [np.nan]]])[None]
    layer = on_backend(built(MaxPool2D(2), (2, 2, 1)), xb)
    y, cache = layer.forward(xb(x.astype(np.float32)))
    assert np.isnan(xb.numpy(y)).all()
    np.testing.assert_array_equal(xb.numpy(layer.backward(xb(np.ones((1, 1, 1, 1), np.float32)), cache)[0]).ravel(),
                                  [0, 0, 0, 1])
    y, cache = layer.forward(xb(np.full((1, 2, 2, 1), np.nan, np.float32)))
    np.testing.assert_array_equal(xb.numpy(layer.backward(xb(np.ones((1, 1, 1, 1), np.float32)), cache)[0]).ravel(),
                                  [1, 0, 0, 0])


@pytest.mark.keras
def test_max_pool_nan_matches_keras(rng):
    keras = pytest.importorskip("keras")
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    x[0, 1, 2, 0] = x[1, 5, 5, 2] = x[1, 0, 0, 1] = np.nan
    for pool, strides, padding in ((3, 2, "same"), ((2, 3), (1, 2), "valid")):
        expected = np.asarray(keras.layers.MaxPooling2D(pool, strides=strides, padding=padding)(x))
        ours = built(MaxPool2D(pool, strides=strides, padding=padding), (7, 6, 3))(x)
        np.testing.assert_array_equal(ours, expected)  # NaN where Keras has NaN (assert_array_equal equates NaNs)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN and inf, as intended
def test_batchnorm_keeps_its_moving_statistics_after_a_non_finite_batch(xb, rng):
    layer = on_backend(built(BatchNormalization(momentum=0.5, name="bn"), (2, 3)), xb)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    layer.forward(xb(x), training=True)
    stats = [xb.numpy(w).copy() for w in layer.weights[2:]]
    for bad_value in (np.nan, np.inf):
        bad = x.copy()
        bad[1, 0, 2] = bad_value
        y, _ = layer.forward(xb(bad), training=True)
        assert np.isnan(xb.numpy(y)[:, :, 2]).all() and np.isfinite(xb.numpy(y)[:, :, :2]).all()
        for old, new in zip(stats, layer.weights[2:]):
            np.testing.assert_array_equal(xb.numpy(new), old)
    layer.forward(xb(x), training=True)  # a finite batch updates them again
    assert not np.array_equal(xb.numpy(layer.weights[2]), stats[0])


# ================================================================================== 9. labels and weights
def test_weighted_loss_counts_of_labels_and_weights():
    outs = [np.full((2, 3), 1 / 3, np.float32)] * 3
    ids = np.array([0, 2])
    with pytest.raises(ValueError, match=esc("weighted_loss: 3 outputs but 2 label arrays")):
        losses.weighted_loss(outs, [ids, ids])
    with pytest.raises(ValueError, match=esc("weighted_loss: 3 outputs but 4 label arrays")):
        losses.weighted_loss(outs, (ids,) * 4)
    with pytest.raises(ValueError, match=esc("weighted_loss: 3 outputs but 4 weights")):
        losses.weighted_loss(outs, ids, [1, 1, 1, 1])
    with pytest.raises(ValueError, match=esc("weighted_loss: weight 1 must be a finite number, got nan")):
        losses.weighted_loss(outs, ids, [1, float("nan"), 1])
    with pytest.raises(ValueError, match="no outputs"):
        losses.weighted_loss([], ids)
    shared = losses.weighted_loss(outs, ids, [1.0, 0.3, 0.3])
    per_output = losses.weighted_loss(outs, [ids, ids, ids], [1.0, 0.3, 0.3])
    as_list = losses.weighted_loss(outs, [0, 2], [1.0, 0.3, 0.3])  # a list of numbers: one label array
    assert shared[0] == per_output[0] == as_list[0] == pytest.approx(1.6 * np.log(3), rel=1e-6)


@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.categorical_crossentropy])
def test_label_shapes_and_dtypes(loss, rng):
    scores = rng.random((4, 3)).astype(np.float32) + 0.1
    ids = np.array([0, 2, 1, 2])
    reference = loss(scores, ids)
    for same in (np.eye(3)[ids], np.eye(3, dtype=np.int64)[ids], np.eye(3, dtype=bool)[ids], ids.reshape(4, 1),
                 ids.astype(np.uint8)):
        value, grad = loss(scores, same)
        assert value == pytest.approx(reference[0], rel=1e-6)
        np.testing.assert_allclose(grad, reference[1], rtol=1e-6)
    name = loss.__name__
    with pytest.raises(ValueError, match=esc(f"{name}: int64 labels of the scores' shape (4, 3) are read as one-hot "
                                             f"and must hold only 0 and 1; got values in [0, 2] "
                                             f"(first: 2 at index (0, 0))")):
        loss(scores, np.eye(3, dtype=np.int64)[ids] * 2)
    with pytest.raises(ValueError, match=esc(f"{name}: labels must lie in [0, 3) for scores of shape (4, 3); "
                                             f"got values in [-1, 2] (first: -1 at index (2,))")):
        loss(scores, np.array([0, 2, -1, 2]))
    with pytest.raises(ValueError, match=esc("got values in [0, 3] (first: 3 at index (1, 0))")):
        loss(scores, np.array([[0], [3], [1], [2]]))
    with pytest.raises(ValueError, match=esc(f"{name}: integer labels of shape (4, 2) do not fit scores of shape "
                                             f"(4, 3): class ids need one of the shapes (4,), (4, 1), one-hot "
                                             f"labels the shape (4, 3)")):
        loss(scores, np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="floating labels must be one-hot of the scores' shape"):
        loss(scores, ids.astype(np.float32))
    with pytest.raises(ValueError, match="boolean labels must be one-hot"):
        loss(scores, ids > 0)
    with pytest.raises(ValueError, match="labels must be integer class ids or one-hot"):
        loss(scores, np.array(["a", "b", "c", "d"]))
    with pytest.raises(TypeError, match=f"{name}: scores must be a floating array"):
        loss(np.ones((4, 3), np.int64), ids)


def test_labels_out_of_range_on_scores_with_middle_axes():
    scores = np.full((2, 2, 2, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match=esc("got values in [1, 5] (first: 5 at index (1,))")):
        losses.softmax_cross_entropy(scores, np.array([1, 5]))
    with pytest.raises(ValueError, match=esc("class ids need one of the shapes (2, 2, 2), (2, 2, 2, 1), (2,)")):
        losses.softmax_cross_entropy(scores, np.zeros((2, 2), np.int64))


# ================================================================================== 10. check_finite
def chain_model():
    x = Input((4,), name="x")
    y = Dense(3, name="d1")(x)
    y = Dense(3, name="d2")(y)
    y = ReLU(name="r")(y)
    return Model(x, Dense(2, name="d3")(y), name="chain")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN and inf, as intended
def test_forward_check_finite_names_the_first_layer_in_execution_order(rng):
    model = chain_model()
    d2, d3 = model.get_layer("d2"), model.get_layer("d3")
    d2.weights[0][1, 2] = np.nan
    d3.weights[0][0, 0] = np.inf
    x = rng.standard_normal((5, 4))
    out = model.forward(x)  # default: no check, the hot path unchanged
    assert np.isnan(out).any()
    with pytest.raises(NonFiniteError, match=esc("layer 'd2' (Dense): non-finite output (5 NaN, 0 inf) in a batch "
                                                 "of 5")) as info:
        model.forward(x, check_finite=True)
    assert (info.value.layer_name, info.value.where) == ("d2", "output")
    assert isinstance(info.value, FloatingPointError)
    with pytest.raises(RuntimeError, match="call forward"):  # the failed forward left no tape
        model.backward(np.ones((5, 2), np.float32))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN and inf, as intended
def test_forward_check_finite_counts_inf(rng):
    model = chain_model()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    x[0, 0] = np.inf
    message = "layer 'd1' (Dense): non-finite output (0 NaN, 3 inf) in a batch of 3"
    with pytest.raises(NonFiniteError, match=esc(message)):
        model.forward(x, check_finite=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN and inf, as intended
def test_a_failed_forward_restores_batchnorm_statistics(rng):
    x = Input((3,))
    bn = BatchNormalization(momentum=0.5, name="bn")
    head = Dense(2, name="head")
    model = Model(x, head(bn(x)))
    head.weights[0][0, 0] = np.nan
    before = bn.get_weights()
    with pytest.raises(NonFiniteError, match="'head'"):
        model.forward(rng.standard_normal((4, 3)), training=True, check_finite=True)
    for u, v in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(u, v)
    model.forward(rng.standard_normal((4, 3)), training=True)  # without the check the statistics move
    assert not np.array_equal(before[2], bn.get_weights()[2])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN and inf, as intended
def test_backward_check_finite_names_the_first_layer_in_backward_order(rng):
    model = chain_model()
    x = rng.standard_normal((2, 4))
    model.forward(x)
    g = np.ones((2, 2), np.float32)
    model.backward(g)
    grads = {layer.name: [None if v is None else v.copy() for v in layer.grads] for layer in model.layers}
    g[1, 1] = np.nan
    with pytest.raises(NonFiniteError, match=esc("layer 'd3' (Dense): non-finite input gradient (3 NaN, 0 inf) "
                                                 "in a batch of 2")) as info:
        model.backward(g, check_finite=True)
    assert (info.value.layer_name, info.value.where) == ("d3", "input gradient")
    for layer in model.layers:  # nothing half-updated: the gradients of the last good backward are intact
        for old, new in zip(grads[layer.name], layer.grads):
            assert (old is None and new is None) or np.array_equal(old, new)
    assert model.first_nonfinite_weight() is None
    model.backward(g)  # default: no check; the gradients hold the NaN and first_nonfinite_weight finds them
    assert model.first_nonfinite_weight() == ("d1", "kernel")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN and inf, as intended
def test_backward_check_finite_on_a_weight_gradient():
    """float32 overflow: the kernel gradient x^T g is inf while the input gradient g W^T stays finite."""
    x = Input((2,))
    dense = Dense(1, use_bias=False, name="d")
    model = Model(x, dense(x))
    dense.set_weights([np.array([[0.5], [0.5]])])
    model.forward(np.array([[3e38, 1.0]], np.float32))
    with pytest.raises(NonFiniteError, match=esc("layer 'd' (Dense): non-finite gradient of weight 'kernel' "
                                                 "(0 NaN, 1 inf) in a batch of 1")) as info:
        model.backward(np.array([[10.0]], np.float32), check_finite=True)
    assert info.value.where == "gradient of weight 'kernel'"


def test_first_nonfinite_weight_reports_weights_then_gradients():
    model = chain_model()
    assert model.first_nonfinite_weight() is None
    model.get_layer("d3").weights[1][0] = np.inf
    assert model.first_nonfinite_weight() == ("d3", "bias")
    model.get_layer("d2").weights[0][0, 0] = np.nan
    assert model.first_nonfinite_weight() == ("d2", "kernel")


def test_nonfinite_error_is_exported():
    assert tinynet.NonFiniteError is NonFiniteError and issubclass(NonFiniteError, FloatingPointError)
    error = NonFiniteError("message", "conv", "output")
    assert (str(error), error.layer_name, error.where) == ("message", "conv", "output")


# ================================================================================== 11. fuzzing
# Each example has at most one bad argument (drawn as `bad`), so most graphs build and run and every kind of
# bad value still comes up; the input's spatial size may be smaller than the window ('valid': a ShapeError).
GOOD_SIZE = st.integers(1, 5)
BAD_SIZE = st.one_of(st.integers(-2, 0), st.sampled_from([2.0, True, "2", None, (1, 2, 3), (2, 0), (2, True)]))
GOOD_WINDOW = st.one_of(GOOD_SIZE, st.tuples(GOOD_SIZE, GOOD_SIZE))
ARGUMENTS = {  # name: (good values, bad values)
    "filters": (GOOD_SIZE, BAD_SIZE),
    "window": (GOOD_WINDOW, BAD_SIZE),
    "strides": (st.one_of(st.none(), GOOD_WINDOW), BAD_SIZE),
    "padding": (st.sampled_from(["valid", "same", "SAME", "Valid"]), st.sampled_from(["full", "causal", None, 1])),
    "activation": (st.sampled_from([None, "relu", "tanh", "softmax", "linear"]),
                   st.sampled_from(["Relu", "swish9", 1])),
}
EXAMPLE_SHAPE = st.one_of(st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3)),
                          st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3)),
                          st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple))
# 50 examples per fuzzer keep the file fast; TINYNET_FUZZ_EXAMPLES=2000 runs a deeper search
FUZZ = settings(max_examples=int(os.environ.get("TINYNET_FUZZ_EXAMPLES", 50)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def is_size(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def as_pair(v):
    """The pair a window argument means, or None when it is not a valid one."""
    if is_size(v):
        return (v, v)
    if isinstance(v, tuple) and len(v) == 2 and all(is_size(u) for u in v):
        return v
    return None


def keras_out(n, k, s, padding):
    return (n - k) // s + 1 if padding == "valid" else -(-n // s)


def expected_window_shape(kind, args, shape):
    """The output's per-example shape, or None when Keras' rules say the layer cannot be built or run."""
    window = as_pair(args["window"])
    strides = args["strides"]
    if strides is None:  # conv: the test passes 1; pooling: Keras' default, the pool size
        strides = 1 if kind == "conv" else args["window"]
    strides = as_pair(strides)
    padding = args["padding"].lower() if isinstance(args["padding"], str) else None
    if window is None or strides is None or padding not in ("valid", "same") or len(shape) != 3:
        return None
    if kind == "conv" and not is_size(args["filters"]):
        return None
    out = [keras_out(n, k, s, padding) for n, k, s in zip(shape[:2], window, strides)]
    if min(out) < 1:
        return None
    return (*out, args["filters"] if kind == "conv" else shape[2])


def make_window_layer(kind, args):
    if kind == "conv":
        return Conv2D(args["filters"], args["window"], strides=1 if args["strides"] is None else args["strides"],
                      padding=args["padding"], activation=args["activation"], name="fz")
    cls = MaxPool2D if kind == "max" else AvgPool2D
    return cls(args["window"], strides=args["strides"], padding=args["padding"], name="fz")


def check_named(error, type_name):
    assert isinstance(error, (ShapeError, ValueError, TypeError)), repr(error)
    assert f"'fz' ({type_name})" in str(error), str(error)


@pytest.mark.parametrize("kernels_name", CPU_BACKENDS)
@FUZZ
@given(kind=st.sampled_from(["conv", "max", "avg"]), bad=st.sampled_from([None] * 6 + list(ARGUMENTS)),
       shape=EXAMPLE_SHAPE, batch=st.integers(1, 3), data=st.data())
def test_fuzz_window_layers(kernels_name, kind, bad, shape, batch, data):
    tinynet.layers.reset_names()
    args = {name: data.draw(bad_values if name == bad else good, label=name)
            for name, (good, bad_values) in ARGUMENTS.items()}
    expected = expected_window_shape(kind, args, shape)
    if kind == "conv" and args["activation"] not in (None, "relu", "tanh", "softmax", "linear"):
        expected = None
    type_name = {"conv": "Conv2D", "max": "MaxPool2D", "avg": "AvgPool2D"}[kind]
    with tinynet.cpu_kernels(kernels_name):
        try:
            layer = make_window_layer(kind, args)
            out = layer(Input(shape))
        except Exception as error:  # noqa: BLE001  (the property: only these types, naming the layer)
            check_named(error, type_name)
            assert expected is None, f"{type_name} {args} on {shape} should build: {error}"
            event(f"refused: {type(error).__name__}")
            return
        event("built")
        assert expected is not None, f"{type_name} {args} on {shape} built to {out.shape}"
        assert out.shape == (None,) + expected
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        x = rng.standard_normal((batch,) + shape)
        y, cache = layer.forward(x.astype(np.float32), training=True)
        assert y.shape == (batch,) + expected and y.dtype == np.float32 and np.isfinite(y).all()
        gx, grads = layer.backward(rng.standard_normal(y.shape).astype(np.float32), cache)
        assert gx.shape == x.shape and np.isfinite(gx).all()
        assert [g.shape for g in grads] == [w.shape for w in layer.weights]
        with pytest.raises(ShapeError, match=esc(f"layer 'fz' ({type_name}): the gradient has shape")):
            layer.backward(np.ones((batch + 1,) + expected, np.float32), cache)


@FUZZ
@given(base=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       sizes=st.one_of(st.lists(st.integers(1, 3), min_size=2, max_size=4), st.just([2])),
       mismatch=st.sampled_from([False, False, False, True]), data=st.data())
def test_fuzz_concatenate(base, sizes, mismatch, data):
    """Concatenate on any axis (mostly feature axes) of 2 to 4 inputs, sometimes of mismatched shapes."""
    tinynet.layers.reset_names()
    rank = len(base) + 1
    axis = data.draw(st.one_of(st.integers(1, rank - 1), st.integers(1 - rank, -1), st.integers(-6, 6)), label="axis")
    feature = 1 <= axis % rank if -rank <= axis < rank else False
    shapes = []
    for size in sizes:
        s = list(base)
        if feature:
            s[axis % rank - 1] = size
        shapes.append(tuple(s))
    if mismatch and len(shapes) > 1 and len(base) > 1:
        other = (axis % rank - 1 + 1) % len(base) if feature else 0
        shapes[-1] = tuple(v + 1 if i == other else v for i, v in enumerate(shapes[-1]))
    valid = feature and len(shapes) >= 2 and not (mismatch and len(base) > 1)
    layer = Concatenate(axis=axis, name="fz")
    try:
        out = layer([Input(s) for s in shapes])
    except Exception as error:  # noqa: BLE001
        check_named(error, "Concatenate")
        assert not valid, f"axis {axis} on {shapes} should build: {error}"
        event(f"refused: {type(error).__name__}")
        return
    event("built")
    assert valid, f"axis {axis} on {shapes} built to {out.shape}"
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    xs = [rng.standard_normal((2,) + s, dtype=np.float32) for s in shapes]
    y, cache = layer.forward(xs)
    expected = np.concatenate(xs, axis=axis)
    assert out.shape == (None,) + expected.shape[1:]
    np.testing.assert_array_equal(y, expected)
    gxs, _ = layer.backward(expected, cache)
    for gx, x in zip(gxs, xs):
        np.testing.assert_array_equal(gx, x)


NUMBERS = st.one_of(st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([True, False, None, "1", 0.5, 1.0, 0, 1]))
CONSTRUCTORS = {  # kind: (type name, make from the drawn values, good values of each argument)
    "dense": ("Dense", lambda v: Dense(v[0], name="fz"), [GOOD_SIZE]),
    "bn": ("BatchNormalization", lambda v: BatchNormalization(momentum=v[0], epsilon=v[1], name="fz"),
           [st.floats(0, 1), st.floats(0, 1)]),
    "dropout": ("Dropout", lambda v: Dropout(v[0], name="fz"), [st.floats(0, 1, exclude_max=True)]),
    "lrn": ("LocalResponseNormalization", lambda v: LocalResponseNormalization(*v, name="fz"),
            [GOOD_SIZE, st.floats(0, 1), st.floats(0, 2), st.floats(1e-3, 3)]),
}


def valid_constructor(kind, v):
    def number(x, low, high=None, low_open=False, high_open=False):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x):
            return False
        return (x > low if low_open else x >= low) and (high is None or (x < high if high_open else x <= high))

    return {"dense": lambda: is_size(v[0]),
            "bn": lambda: number(v[0], 0, 1) and number(v[1], 0),
            "dropout": lambda: number(v[0], 0, 1, high_open=True),
            "lrn": lambda: is_size(v[0]) and number(v[1], 0) and number(v[2], 0) and number(v[3], 0, low_open=True),
            }[kind]()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # BN with epsilon 0 on a constant batch: 0/0, as intended
@FUZZ
@given(kind=st.sampled_from(list(CONSTRUCTORS)), bad=st.sampled_from([None, None, 0, 1, 2, 3]), data=st.data())
def test_fuzz_constructor_arguments(kind, bad, data):
    type_name, make, good = CONSTRUCTORS[kind]
    values = [data.draw(NUMBERS if i == bad else strategy, label=f"argument {i}") for i, strategy in enumerate(good)]
    valid = valid_constructor(kind, values)
    try:
        layer = make(values)
    except Exception as error:  # noqa: BLE001
        check_named(error, type_name)
        assert not valid, f"{kind} {values}: {error}"
        event(f"refused: {type(error).__name__}")
        return
    event("built")
    assert valid, f"{kind} {values} was accepted"
    shape = (2, 3, 4)
    y, cache = layer.forward(np.ones((2,) + shape, np.float32), training=True)
    gx, _ = layer.backward(np.ones(y.shape, np.float32), cache)
    assert gx.shape == (2,) + shape
    if kind in ("dense", "dropout"):  # BN with epsilon 0 divides a constant batch by 0, LRN with k = 0.5 and
        assert np.isfinite(y).all() and np.isfinite(gx).all()  # beta = 127 overflows: inf or NaN is right there


def test_every_fuzzed_layer_type_is_covered():
    """The fuzzers and the tables above cover every layer the package exports."""
    covered = {Conv2D, MaxPool2D, AvgPool2D, Concatenate, Dense, BatchNormalization, Dropout,
               LocalResponseNormalization, Flatten, Softmax, Activation, GlobalAveragePooling2D, ReLU}
    exported = {getattr(tinynet.layers, n) for n in tinynet.layers.__all__
                if isinstance(getattr(tinynet.layers, n), type) and issubclass(getattr(tinynet.layers, n),
                                                                               tinynet.layers.Layer)}
    assert exported - covered - {tinynet.layers.Layer, tinynet.layers.InputLayer} == set()



def test_relu_backward_keeps_non_finite_gradients_as_the_reference_does(xb):
    """``gy · [y > 0]`` is a product on every backend: NaN or inf in gy stays NaN where y <= 0 (was: the Numba
    kernel took its zero from gy[0, 0], so one NaN there turned every masked cell into NaN)."""
    from tinynet import kernels
    from tinynet.kernels import numpy_kernels

    rng = np.random.default_rng(0)
    gy = rng.standard_normal((2, 3, 4, 5))
    y = rng.standard_normal((2, 3, 4, 5))
    gy.flat[0], gy.flat[7], gy.flat[11] = np.nan, np.inf, -np.inf
    expected = numpy_kernels.relu_backward(gy, y)
    with np.errstate(invalid="ignore"):
        got = xb.numpy(kernels.relu_backward(xb(gy), xb(y)))
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).sum() == np.isnan(expected).sum() <= 3


# ------------------------------------------------------------------------------ BatchNormalization statistics
def bn_model(epsilon=1e-3):
    x = Input((3,))
    return Model(x, Dense(2, name="head")(BatchNormalization(epsilon=epsilon, name="bn")(x)))


@pytest.mark.parametrize("variance, epsilon", [([1.0, -0.5, 1.0], 1e-3), ([1.0, -1e-5, 1.0], 1e-3),
                                               ([1.0, 0.0, 1.0], 0.0)],
                         ids=["negative", "slightly negative", "zero with epsilon 0"])
def test_a_moving_variance_that_is_no_variance_is_refused(variance, epsilon, tmp_path):
    """set_weights used to take a negative moving_variance, after which predict returned NaN silently; loading
    a weights file goes through the same check (and names the file). The model is unchanged either way."""
    from tinynet import saving

    model = bn_model(epsilon)
    before = model.get_weights()
    bad = [w.copy() for w in before]
    bad[3] = np.array(variance, np.float32)                             # gamma, beta, moving_mean, moving_variance
    message = r"layer 'bn' \(BatchNormalization\): weight 'moving_variance' must be (>= 0|> 0 \(epsilon is 0\))"
    with pytest.raises(ValueError, match=message):
        model.set_weights(bad)
    with pytest.raises(ValueError, match=message):
        model.get_layer("bn").set_weights(bad[:4])
    path = tmp_path / "bad_variance.npz"
    np.savez(path, **dict(zip(saving.weight_arrays(model), bad)))
    with pytest.raises(ValueError, match=re.escape(f"load_weights: {path}: ") + message):
        model.load_weights(path)
    for u, v in zip(before, model.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert np.isfinite(model.predict(np.ones((2, 3)))).all()


def test_a_zero_moving_variance_is_a_variance_when_epsilon_is_positive():
    model = bn_model()
    weights = model.get_weights()
    weights[3] = np.zeros(3, np.float32)
    model.set_weights(weights)
    assert np.isfinite(model.predict(np.ones((2, 3)))).all()
