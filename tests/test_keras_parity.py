"""tinynet against Keras 3 (JAX backend): outputs and gradients of GoogLeNet and of small mixed models.

Each Keras model is converted with ``from_keras`` and both are run on the same batch
(:func:`inception.keras_reference.compare_with_keras`). Tolerances: float32 outputs 1e-5 absolute; float64
outputs and BN statistics 1e-10 absolute; float64 gradients (input and every weight) 1e-8 relative.
Training mode means BatchNormalization on batch statistics and dropout rates of 0.
"""
import contextlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
jax = pytest.importorskip("jax")
if keras.backend.backend() != "jax":
    pytest.skip("the parity tests need KERAS_BACKEND=jax", allow_module_level=True)

from inception.keras_reference import (LocalResponseNormalization, compare_with_keras, float64_mode,  # noqa: E402
                                       keras_googlenet, randomize_weights)

pytestmark = pytest.mark.keras
L = keras.layers


def _dtype_mode(dtype):
    return float64_mode() if dtype == "float64" else contextlib.nullcontext()


#: float32 outputs in training mode: Keras on JAX's CPU backend is not bit-deterministic there (two identical runs
#: of the blog variant's aux1 head differ by ~2e-6, and a run within the full suite measured 1.2e-5), while
#: tinynet repeats itself bit for bit; batch norm over a batch of 2 amplifies float32 rounding. Inference stays 1e-5.
FLOAT32_TRAINING_TOL = 5e-5


def _check(report, dtype, gradients, training=False):
    print(report.table("summary"))
    out_tol = (FLOAT32_TRAINING_TOL if training else 1e-5) if dtype == "float32" else 1e-10
    assert report.max_error("output") < out_tol, report.worst("output")
    assert report.max_error("bn stat") < out_tol, report.worst("bn stat")
    if gradients:
        assert report.max_error("grad", relative=True) < 1e-8, report.worst("grad", relative=True)


def _run(build, input_shape, dtype, training, gradients, batch, seed=0):
    with _dtype_mode(dtype):
        model = build(training)
        randomize_weights(model, seed=seed)
        x = np.random.default_rng(seed + 1).standard_normal((batch,) + tuple(input_shape)).astype(dtype)
        report = compare_with_keras(model, x, training=training, gradients=gradients, seed=seed)
    _check(report, dtype, gradients, training)
    return report


# ------------------------------------------------------------------------------------------ GoogLeNet
# 224 and one other size per variant. The blog variant needs ≥ 193 (its AvgPool2D(7) 'valid' needs a 7×7
# map); 200 gives odd sizes on the way (100, 50, 25, 13, 7) and 3×3 aux outputs. Every size is checked in
# inference and in training mode (dropout 0, BatchNorm on batch statistics), float32 on the outputs and
# float64 on the outputs and on the gradients w.r.t. the input and every weight.
SIZES = {"paper": (224, 160), "blog": (224, 200)}
GOOGLENET_CASES = [(variant, size, dtype, training, dtype == "float64", 2 if training else 1)
                   for variant, sizes in SIZES.items() for size in sizes
                   for dtype in ("float32", "float64") for training in (False, True)]


@pytest.mark.slow
@pytest.mark.parametrize("variant,size,dtype,training,gradients,batch", GOOGLENET_CASES,
                         ids=[f"{v}-{s}-{d}-{'train' if t else 'infer'}{'-grad' if g else ''}"
                              for v, s, d, t, g, _ in GOOGLENET_CASES])
def test_googlenet_matches_keras(variant, size, dtype, training, gradients, batch):
    def build(training):
        return keras_googlenet((size, size, 3), num_classes=10, variant=variant, dropout=not training)

    report = _run(build, (size, size, 3), dtype, training, gradients, batch)
    assert len([r for r in report.rows if r.kind == "output"]) == 3


# ------------------------------------------------------------------------------------------ small models
def _mixed_functional(training):
    """Odd sizes, stride-2 'same' on odd inputs, non-square kernels and strides, every supported layer."""
    inputs = keras.Input((13, 11, 3), name="x")
    a = L.Conv2D(6, (3, 5), strides=(2, 1), padding="same", activation="relu", name="conv_3x5_s21")(inputs)
    a = L.BatchNormalization(momentum=0.9, epsilon=1e-4, name="bn")(a)
    b = L.Conv2D(5, (1, 3), strides=(2, 1), padding="same", activation="tanh", name="conv_1x3_s21")(inputs)
    b = L.AveragePooling2D((2, 3), strides=1, padding="same", name="avg_same")(b)
    b = L.Conv2D(6, 2, padding="same", use_bias=False, name="conv_nobias")(b)
    b = L.ReLU(name="relu")(b)
    c = L.MaxPooling2D((3, 2), strides=(2, 1), padding="same", name="max_same")(inputs)
    c = LocalResponseNormalization(3, 2e-2, 0.75, 2.0, name="lrn")(c)
    c = L.Conv2D(4, 1, activation="sigmoid", name="conv_1x1")(c)
    m = L.Concatenate(axis=-1, name="concat")([a, b, c])
    d = L.Dense(7, activation="relu", name="dense_4d")(m)               # Dense on a 4-D tensor
    d = L.Dropout(0.0 if training else 0.3, name="drop")(d)
    flat = L.Dense(5, name="logits")(L.Flatten(name="flatten")(d))
    out1 = L.Softmax(name="softmax")(flat)
    out2 = L.Activation("softmax", name="pixel_softmax")(L.Dense(3, name="dense_pixels")(d))
    e = L.Conv2D(3, (4, 2), strides=(3, 2), padding="valid", name="conv_4x2_valid")(m)     # (2, 5)
    e = L.AveragePooling2D((2, 2), strides=1, padding="valid", name="avg_valid")(e)       # (1, 4)
    out3 = L.Dense(2, activation="sigmoid", name="pooled")(L.GlobalAveragePooling2D(name="gap")(e))
    return keras.Model(inputs, [out1, out2, out3], name="mixed")


def _sequential(training):
    return keras.Sequential([
        keras.Input((9, 10, 2)),
        L.Conv2D(4, (3, 2), strides=(2, 3), padding="same", activation="relu", name="c1"),
        L.BatchNormalization(name="bn"),
        L.MaxPooling2D(2, padding="same", name="pool"),
        L.Flatten(name="flat"),
        L.Dense(6, activation="tanh", name="fc"),
        L.Dropout(0.0 if training else 0.5, name="drop"),
        L.Dense(3, activation="softmax", name="out"),
    ], name="seq")


SMALL_CASES = [(dtype, training) for dtype in ("float32", "float64") for training in (False, True)]


@pytest.mark.parametrize("build,shape", [(_mixed_functional, (13, 11, 3)), (_sequential, (9, 10, 2))],
                         ids=["functional", "sequential"])
@pytest.mark.parametrize("dtype,training", SMALL_CASES,
                         ids=[f"{d}-{'train' if t else 'infer'}" for d, t in SMALL_CASES])
def test_small_models_match_keras(build, shape, dtype, training):
    _run(build, shape, dtype, training, gradients=dtype == "float64", batch=3)


def test_to_keras_round_trip():
    """tinynet GoogLeNet → Keras → tinynet: same outputs in Keras, same layers and weights back."""
    from inception.googlenet import googlenet
    from tinynet.interop.keras import from_keras, to_keras

    tiny = googlenet((96, 96, 3), num_classes=10)
    x = np.random.default_rng(0).standard_normal((2, 96, 96, 3)).astype("float32")
    k = to_keras(tiny)
    assert k.count_params() == tiny.count_params()
    assert sorted(layer.name for layer in k.layers) == sorted(layer.name for layer in tiny.layers)
    for a, b in zip(k(x), tiny.predict(x)):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)
    back = from_keras(k)
    for layer in tiny.layers:
        twin = back.get_layer(layer.name)
        assert twin.get_config() == layer.get_config()
        for a, b in zip(twin.get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["paper", "blog"])
def test_keras_reference_is_googlenet(variant):
    """The Keras reference and tinynet's googlenet() are the same network: names, arguments, parameter count."""
    from inception.googlenet import googlenet
    from tinynet.interop.keras import from_keras

    k = keras_googlenet((224, 224, 3), num_classes=1000, variant=variant)
    converted, ours = from_keras(k), googlenet((224, 224, 3), num_classes=1000, variant=variant)
    assert k.count_params() == ours.count_params() == {"paper": 13_378_280, "blog": 9_121_976}[variant]
    assert [layer.get_config() for layer in converted.layers] == [layer.get_config() for layer in ours.layers]
