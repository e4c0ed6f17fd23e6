"""The Keras bridge: what from_keras keeps, what it refuses, and that tinynet never imports Keras itself."""
import subprocess
import sys

import numpy as np
import pytest


def test_import_tinynet_does_not_import_keras():
    code = "import sys, tinynet, tinynet.interop; print('keras' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


keras = pytest.importorskip("keras")
pytestmark = pytest.mark.keras
L = keras.layers

from tinynet.interop.keras import (LocalResponseNormalization, UnsupportedKerasError, from_keras,  # noqa: E402
                                   to_keras)


def _model(*layers_, shape=(8, 8, 3)):
    x = keras.Input(shape, name="x")
    y = x
    for layer in layers_:
        y = layer(y)
    return keras.Model(x, y, name="m")


def test_names_arguments_weights_and_bn_stats_kept():
    k = _model(L.Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu", use_bias=False, name="c"),
               L.BatchNormalization(momentum=0.8, epsilon=1e-5, name="bn"),
               L.MaxPooling2D((2, 3), strides=(1, 2), padding="same", name="p"),
               L.Dropout(0.25, seed=3, name="d"), L.Flatten(name="f"), L.Dense(5, activation="tanh", name="fc"))
    k.get_layer("bn").set_weights([np.full(4, 2.0), np.full(4, 0.5), np.arange(4.0), np.arange(1.0, 5.0)])
    t = from_keras(k)
    assert t.name == "m" and [layer.name for layer in t.layers] == ["x", "c", "bn", "p", "d", "f", "fc"]
    assert t.get_layer("c").get_config() == {"name": "c", "filters": 4, "kernel_size": (3, 2), "strides": (2, 1),
                                             "padding": "same", "activation": "relu", "use_bias": False}
    assert t.get_layer("bn").get_config() == {"name": "bn", "axis": -1, "momentum": 0.8, "epsilon": 1e-5}
    assert t.get_layer("p").get_config()["pool_size"] == (2, 3)
    assert t.get_layer("d").rate == 0.25 and t.get_layer("d").seed == 3
    assert t.get_layer("fc").activation == "tanh"
    np.testing.assert_array_equal(t.get_layer("bn").weights[3], np.arange(1.0, 5.0))
    for a, b in zip(t.get_weights(), k.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert t.count_params() == k.count_params()


def test_layer_called_twice_and_multiple_inputs():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = L.Dense(3, name="shared")
    y = L.Concatenate(name="cat")([shared(a), shared(b)])
    k = keras.Model([a, b], [y, L.Softmax(name="sm")(y)])
    t = from_keras(k)
    xa, xb = np.ones((2, 4), "float32"), np.arange(8, dtype="float32").reshape(2, 4)
    for p, q in zip(t.predict([xa, xb]), k.predict([xa, xb], verbose=0)):
        np.testing.assert_allclose(p, q, atol=1e-6)


def test_lrn_layer_matches_tinynet():
    import tinynet

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 7)).astype("float32") * 10
    k = LocalResponseNormalization(5, 1e-2, 0.75, 2.0)
    t = tinynet.layers.LocalResponseNormalization(5, 1e-2, 0.75, 2.0)
    np.testing.assert_allclose(np.asarray(k(x)), t(x), rtol=1e-5)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(k)).get_config()["size"] == 5


@pytest.mark.parametrize("layer,words", [
    (lambda: L.Conv2D(2, 3, dilation_rate=2, name="dil"), ["dil", "dilation_rate"]),
    (lambda: L.Conv2D(3, 3, groups=3, name="grp"), ["grp", "groups"]),
    (lambda: L.Conv2D(2, 3, activation="gelu", name="act"), ["act", "gelu"]),
    (lambda: L.BatchNormalization(center=False, name="bnc"), ["bnc", "center"]),
    (lambda: L.ReLU(max_value=6.0, name="relu6"), ["relu6", "max_value"]),
    (lambda: L.GlobalAveragePooling2D(keepdims=True, name="gk"), ["gk", "keepdims"]),
    (lambda: L.LayerNormalization(name="ln"), ["ln", "LayerNormalization"]),
    (lambda: L.Dropout(0.5, noise_shape=(None, 1, 1, 3), name="nd"), ["nd", "noise_shape"]),
])
def test_unsupported_is_named(layer, words):
    with pytest.raises(UnsupportedKerasError) as e:
        from_keras(_model(layer()))
    for w in words:
        assert w in str(e.value)


def test_channels_first_refused():
    k = _model(L.Conv2D(2, 3, data_format="channels_first", name="cf"), shape=(3, 8, 8))
    with pytest.raises(UnsupportedKerasError, match="cf.*data_format"):
        from_keras(k)


def test_to_keras_round_trip_small():
    import tinynet
    from tinynet.layers import Input

    x = Input((9, 7, 3), name="inp")
    y = tinynet.Conv2D(4, (3, 1), strides=2, padding="same", activation="relu", name="c")(x)
    y = tinynet.LocalResponseNormalization(3, name="lrn")(y)
    y = tinynet.AvgPool2D(2, padding="same", name="ap")(y)
    y = tinynet.Dense(3, name="d4")(y)
    y = tinynet.Activation("sigmoid", name="act")(y)
    t = tinynet.Model(x, [tinynet.GlobalAveragePooling2D(name="g")(y), y], name="tiny")
    k = to_keras(t)
    assert isinstance(k.get_layer("lrn"), LocalResponseNormalization)
    data = np.random.default_rng(1).standard_normal((2, 9, 7, 3)).astype("float32")
    for p, q in zip(t.predict(data), k.predict(data, verbose=0)):
        np.testing.assert_allclose(p, q, atol=1e-6)
    back = from_keras(k)
    assert [layer.get_config() for layer in back.layers] == [layer.get_config() for layer in t.layers]
