"""float32 in → float32 out, forward and backward (parameter gradients included), for every layer and kernel;
``tinynet.set_floatx('float64')`` gives float64 weights and outputs. A stray ``np.zeros(shape)`` without a
dtype inside a layer or kernel would leak float64 and fail here.
"""
import numpy as np
import pytest

import tinynet
from tinynet import Model, losses
from tinynet.layers import (Activation, AvgPool2D, BatchNormalization, Concatenate, Conv2D, Dense, Dropout,
                            Flatten, GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D, ReLU,
                            Softmax, concatenate)

# (factory, per-example input shape(s)); one entry per layer type and per distinct code path
LAYERS = [
    (lambda: Conv2D(3, 3, padding="same", activation="relu"), (5, 6, 2)),
    (lambda: Conv2D(3, (2, 3), strides=(2, 1)), (5, 6, 2)),
    (lambda: Conv2D(3, 1), (5, 6, 2)),                         # pointwise: no im2col
    (lambda: Conv2D(3, 1, strides=2, use_bias=False), (5, 6, 2)),
    (lambda: MaxPool2D(3, strides=2, padding="same"), (5, 6, 2)),
    (lambda: AvgPool2D(3, strides=2, padding="same"), (5, 6, 2)),
    (lambda: GlobalAveragePooling2D(), (5, 6, 2)),
    (lambda: Dense(3, activation="softmax"), (4,)),
    (lambda: Dense(3, activation="sigmoid"), (2, 2, 4)),
    (lambda: Flatten(), (2, 3, 2)),
    (lambda: Dropout(0.5, seed=1), (2, 3, 2)),
    (lambda: BatchNormalization(), (2, 3, 2)),
    (lambda: LocalResponseNormalization(), (2, 3, 7)),
    (lambda: ReLU(), (2, 3)),
    (lambda: Activation("tanh"), (2, 3)),
    (lambda: Softmax(axis=1), (2, 3)),
    (lambda: Concatenate(), [(2, 3, 1), (2, 3, 2)]),
]
LAYER_IDS = ["conv-relu", "conv-nonsquare", "conv1x1", "conv1x1-s2", "maxpool", "avgpool", "gap", "dense",
             "dense-4d", "flatten", "dropout", "bn", "lrn", "relu", "tanh", "softmax", "concat"]


def run_both_ways(layer, example_shape, dtype, xb, training):
    """Build, forward and backward a layer on arrays of ``dtype``; return (weights, y, gx list, param grads)."""
    many = isinstance(example_shape, list)
    shapes = example_shape if many else [example_shape]
    layer([Input(s) for s in shapes] if many else Input(shapes[0]))
    layer.to("gpu" if xb.name == "cupy" else "cpu")
    rng = np.random.default_rng(0)
    xs = [xb(rng.standard_normal((2,) + s).astype(dtype)) for s in shapes]
    y, cache = layer.forward(xs if many else xs[0], training)
    gy = xb(rng.standard_normal(y.shape).astype(dtype))
    gx, pgrads = layer.backward(gy, cache)
    return layer.weights, y, (gx if many else [gx]), pgrads


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("make, shape", LAYERS, ids=LAYER_IDS)
def test_float32_in_float32_out(make, shape, training, xb):
    weights, y, gxs, pgrads = run_both_ways(make(), shape, "float32", xb, training)
    assert all(w.dtype == np.float32 for w in weights)
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in gxs)
    assert len(pgrads) == len(weights)
    assert all(g.dtype == np.float32 for g in pgrads if g is not None)


@pytest.mark.parametrize("make, shape", LAYERS, ids=LAYER_IDS)
def test_set_floatx_float64_gives_float64_everywhere(make, shape, xb):
    tinynet.set_floatx("float64")
    weights, y, gxs, pgrads = run_both_ways(make(), shape, "float64", xb, training=True)
    assert all(w.dtype == np.float64 for w in weights)
    assert y.dtype == np.float64 and all(g.dtype == np.float64 for g in gxs)
    assert all(g.dtype == np.float64 for g in pgrads if g is not None)


def test_floatx_applies_to_layers_built_afterwards():
    assert tinynet.floatx() == "float32"
    tinynet.set_floatx("float64")
    x = Input((3,))
    dense = Dense(2)
    assert x.dtype == "float64" and dense.dtype == "float64"
    dense(x)
    assert dense.weights[0].dtype == np.float64
    tinynet.set_floatx("float32")
    later = Dense(2)
    later(Input((3,)))
    assert later.weights[0].dtype == np.float32 and dense.weights[0].dtype == np.float64


def test_floatx_scope_restores():
    with tinynet.floatx_scope("float64"):
        assert tinynet.floatx() == "float64"
    assert tinynet.floatx() == "float32"


def test_set_floatx_rejects_other_types():
    with pytest.raises(ValueError):
        tinynet.set_floatx("int32")


@pytest.mark.parametrize("floatx", ["float32", "float64"])
def test_model_keeps_its_dtype_through_forward_backward_and_losses(floatx):
    tinynet.set_floatx(floatx)
    x = Input((6, 6, 3))
    a = Conv2D(4, 3, padding="same", activation="relu")(x)
    b = MaxPool2D(3, strides=1, padding="same")(x)
    merged = BatchNormalization()(concatenate([a, b]))
    head = Dense(5, activation="softmax")(GlobalAveragePooling2D()(merged))
    aux = Dense(5)(Flatten()(AvgPool2D(3, strides=3)(merged)))
    model = Model(x, [head, aux])
    data = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 3))  # integers in: cast to the Input's dtype
    outs = model.forward(data, training=True)
    assert [o.dtype for o in outs] == [np.dtype(floatx)] * 2
    ids = np.array([1, 4])
    _, _, grads = losses.weighted_loss(outs, ids, [1.0, 0.3])
    _, g_aux = losses.softmax_cross_entropy(outs[1], ids)
    assert grads[0].dtype == np.dtype(floatx) and g_aux.dtype == np.dtype(floatx)
    gx = model.backward([grads[0], g_aux])
    assert gx.dtype == np.dtype(floatx)
    for layer in model.layers:
        for w, g in zip(layer.weights, layer.grads):
            assert w.dtype == np.dtype(floatx)
            assert g is None or g.dtype == np.dtype(floatx), layer.name
    assert all(o.dtype == np.dtype(floatx) for o in model.predict(data.astype(np.float64)))


@pytest.mark.parametrize("fast", [True, False], ids=["fast paths", "plain"])
def test_a_float64_gradient_into_a_float32_model_gives_float32_gradients(fast):
    """The upstream gradient is cast to each output's dtype, with or without fast paths (the fused 1×1 pair cast
    it, the plain path kept float64 through the whole backward), and the two give the same values."""
    tinynet.set_floatx("float32")
    tinynet.layers.reset_names()
    tinynet.set_seed(0)
    x = Input((4, 4, 2))
    y = concatenate([Conv2D(3, 1, activation="relu")(x), Conv2D(3, 1, activation="relu")(x),
                     Conv2D(2, 3, padding="same")(x)])
    model = Model(x, y)
    xb = np.random.default_rng(0).standard_normal((2, 4, 4, 2)).astype(np.float32)
    gy = np.random.default_rng(1).standard_normal((2, 4, 4, 8))  # float64
    results = {}
    for way in (fast, not fast):
        with tinynet.fast_paths(way):
            model.forward(xb)
            gx = model.backward(gy)
        results[way] = [gx] + [g for layer in model.layers for g in layer.grads]
        assert all(g.dtype == np.float32 for g in results[way]), [g.dtype for g in results[way]]
    for a, b in zip(results[True], results[False]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
