"""Backends: every layer's forward and backward agree with the NumPy reference on numba (and cupy, ``gpu``);
choosing kernels (setter, context manager, environment variable, fallback without Numba); device errors.

Tolerances, relative to the largest magnitude of the reference: float64 1e-12, float32 1e-5.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tinynet
from tinynet import backend, gradcheck
from tinynet.layers import (AvgPool2D, BatchNormalization, Conv2D, Dense, Input, LocalResponseNormalization,
                            MaxPool2D, ReLU)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = {"float32": 1e-5, "float64": 1e-12}

# (name, factory, per-example input shape): odd, non-square, strided and 'same' shapes
LAYERS = [
    ("conv3x2_s2x1_same", lambda: Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu"), (7, 9, 3)),
    ("conv7_s2_same", lambda: Conv2D(3, 7, strides=2, padding="same"), (11, 10, 2)),
    ("conv5_valid", lambda: Conv2D(5, 5, activation="relu"), (9, 8, 3)),
    ("conv1x1_s2", lambda: Conv2D(4, 1, strides=2), (7, 7, 3)),
    ("conv1x1_relu", lambda: Conv2D(6, 1, activation="relu"), (5, 6, 4)),
    ("maxpool3_s2_same", lambda: MaxPool2D(3, strides=2, padding="same"), (8, 7, 3)),
    ("maxpool3_s1_same", lambda: MaxPool2D(3, strides=1, padding="same"), (5, 6, 2)),
    ("maxpool2x3_valid", lambda: MaxPool2D((2, 3), strides=(1, 2)), (7, 9, 2)),
    ("avgpool5_s3_valid", lambda: AvgPool2D(5, strides=3), (14, 13, 3)),
    ("avgpool3_s2_same", lambda: AvgPool2D(3, strides=2, padding="same"), (7, 8, 2)),
    ("lrn5", lambda: LocalResponseNormalization(5, alpha=1e-1), (4, 5, 7)),
    ("lrn4_beta06", lambda: LocalResponseNormalization(4, alpha=0.3, beta=0.6, k=2.0), (3, 2, 9)),
    ("batchnorm", lambda: BatchNormalization(), (4, 5, 3)),
    ("dense_relu", lambda: Dense(7, activation="relu"), (6,)),
    ("relu", lambda: ReLU(), (4, 3, 5)),
]


def relerr(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def run_layer(layer, x, gy, xb):
    """Forward (training) and backward of ``layer`` on backend ``xb``; returns NumPy arrays."""
    if xb.name == "cupy":
        layer.to("gpu")
    y, cache = layer.forward(xb(x), training=True)
    gx, grads = layer.backward(xb(gy), cache)
    out = [xb.numpy(y), xb.numpy(gx)] + [xb.numpy(g) for g in grads if g is not None]
    layer.to("cpu")
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_forward_backward_matches_numpy(xb, name, factory, shape, dtype):
    tinynet.set_floatx(dtype)
    layer = factory()
    layer(Input(shape))  # build
    rng = np.random.default_rng(1)
    n = 2
    # distinct values: no ties for max pooling, no exact zeros for ReLU
    x = (rng.permutation(n * int(np.prod(shape))).reshape((n,) + shape) / (n * np.prod(shape)) - 0.45)
    x = (x * 4).astype(dtype)
    y_shape = (n,) + layer.compute_output_shape(shape)
    gy = rng.standard_normal(y_shape).astype(dtype)
    weights = [w.copy() for w in layer.weights]
    with tinynet.cpu_kernels("numpy"):
        expected = run_layer(layer, x, gy, _numpy_backend())
    layer.weights = [w.copy() for w in weights]
    actual = run_layer(layer, x, gy, xb)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == np.dtype(dtype), f"{name}: dtype {a.dtype} leaked into a {dtype} run"
        assert relerr(a, e) <= TOL[dtype], f"{name} on {xb.name}: rel err {relerr(a, e):.2e}"


def _numpy_backend():
    class _B:
        name = "numpy"

        def __call__(self, a):
            return a

        @staticmethod
        def numpy(a):
            return np.asarray(a)
    return _B()


@pytest.mark.parametrize("factory, shape", [
    (lambda: Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="relu"), (2, 5, 6, 2)),
    (lambda: MaxPool2D(3, strides=2, padding="same"), (2, 5, 6, 2)),
    (lambda: AvgPool2D(3, strides=2, padding="same"), (2, 5, 6, 2)),
    (lambda: LocalResponseNormalization(3, alpha=0.5), (1, 2, 3, 6)),
    (lambda: BatchNormalization(), (3, 2, 3, 4)),
], ids=["conv", "maxpool", "avgpool", "lrn", "batchnorm"])
def test_gradcheck_on_every_backend(xb, factory, shape):
    """The gradient checker in float64, with the layer's forward and backward on numpy, numba or cupy."""
    tinynet.set_floatx("float64")
    device = "gpu" if xb.name == "cupy" else "cpu"
    report = gradcheck.check_layer(factory(), shape, training=True, device=device)
    assert report.passed and report.device == device, str(report)


@pytest.mark.gpu
def test_gradcheck_on_cupy_float64():
    """The gradient checker's model on the GPU: forward/backward with CuPy arrays in float64."""
    cp = backend.require_gpu()
    tinynet.set_floatx("float64")
    x = Input((6, 5, 2))
    y = Conv2D(3, 3, strides=2, padding="same", activation="relu")(x)
    y = MaxPool2D(2, padding="same")(y)
    model = tinynet.Model(x, Dense(4)(tinynet.layers.Flatten()(y)))
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 6, 5, 2))
    u = rng.standard_normal((2, 4))
    model.forward(xs, training=True)
    gx_cpu = model.backward(u)
    g_cpu = [backend.to_numpy(g) for layer in model.layers for g in layer.grads if g is not None]
    model.to("gpu")
    model.forward(cp.asarray(xs), training=True)
    gx_gpu = model.backward(cp.asarray(u))
    g_gpu = [backend.to_numpy(g) for layer in model.layers for g in layer.grads if g is not None]
    assert relerr(backend.to_numpy(gx_gpu), gx_cpu) <= 1e-12
    for a, e in zip(g_gpu, g_cpu):
        assert relerr(a, e) <= 1e-12
    report = gradcheck.check_model(model, xs, training=True)   # and central differences, on the GPU
    assert report.passed and report.device == "gpu", str(report)
    assert all(backend.is_gpu_array(w) for layer in model.layers for w in layer.weights)


# ----------------------------------------------------------------------------------------- choosing
def test_set_cpu_kernels_and_context_manager():
    tinynet.set_cpu_kernels("numpy")
    assert tinynet.get_cpu_kernels() == "numpy"
    if backend.numba_available():
        with tinynet.cpu_kernels("numba"):
            assert tinynet.get_cpu_kernels() == "numba"
        assert tinynet.get_cpu_kernels() == "numpy"
    with pytest.raises(ValueError, match="set_cpu_kernels"):
        tinynet.set_cpu_kernels("fortran")


@pytest.mark.parametrize("value", ["numpy", "numba", ""])
def test_environment_variable(value):
    env = dict(os.environ, TINYNET_CPU_KERNELS=value, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", "import tinynet; print(tinynet.get_cpu_kernels())"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = value or ("numba" if backend.numba_available() else "numpy")
    if value == "numba" and not backend.numba_available():
        expected = "numpy"
    assert out.stdout.strip() == expected


def test_fallback_warning_without_numba(monkeypatch):
    monkeypatch.setattr(backend, "numba_available", lambda: False)
    with pytest.warns(UserWarning, match="Numba is not installed"):
        tinynet.set_cpu_kernels("numba")
    assert tinynet.get_cpu_kernels() == "numpy"
    # and the layers still run, on the NumPy kernels
    y = MaxPool2D(2)(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
    assert y.shape == (1, 2, 2, 1)


def test_kernels_without_a_numba_version_fall_back_to_numpy(monkeypatch):
    from tinynet import kernels
    from tinynet.kernels import numpy_kernels

    if backend.numba_available():
        monkeypatch.delattr(kernels.backend_module("numba"), "lrn_forward")
    with tinynet.cpu_kernels("numba" if backend.numba_available() else "numpy"):
        assert kernels.implementation("lrn_forward", np.zeros(1)) is numpy_kernels.lrn_forward
        assert kernels.implementation("im2col", np.zeros(1)) is kernels.backend_module(backend.get_cpu_kernels()).im2col


# ----------------------------------------------------------------------------------------- devices
def test_asking_for_the_gpu_without_cupy_raises_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cupy" else real(name, *a))
    with pytest.raises(RuntimeError, match="CuPy"):
        backend.require_gpu()
    x = Input((4, 4, 1))
    model = tinynet.Model(x, Conv2D(2, 3)(x))
    with pytest.raises(RuntimeError, match="CuPy"):
        model.to("gpu")
    with pytest.raises(RuntimeError, match="CuPy"):
        tinynet.to_device(np.zeros(3), "gpu")


def test_cupy_without_a_device_raises_the_cause(monkeypatch):
    """CuPy installed but no usable driver (as on a CPU machine): the error carries CuPy's own reason."""
    import importlib.util
    import types

    class CUDARuntimeError(RuntimeError):
        pass

    def no_driver():
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake = types.SimpleNamespace(ndarray=type("ndarray", (), {}),
                                 cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver)))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "cupy" else real(name, *a))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert not backend.cupy_available()
    x = Input((4, 4, 1))
    model = tinynet.Model(x, Conv2D(2, 3)(x))
    cause = "no CUDA device is available .CUDARuntimeError: cudaErrorInsufficientDriver"
    with pytest.raises(RuntimeError, match=cause):
        model.to("gpu")
    assert model.device == "cpu" and not any(backend.is_gpu_array(w) for w in model.get_weights())


@pytest.mark.gpu
def test_mixing_numpy_and_cupy_names_the_layer_and_the_array():
    cp = backend.require_gpu()
    x = Input((5, 5, 2))
    model = tinynet.Model(x, Conv2D(3, 3, name="mixed_conv")(x))
    with pytest.raises(TypeError, match=r"mixed_conv.*input 0 on gpu.*kernel on cpu"):
        model.predict(cp.zeros((1, 5, 5, 2), dtype=cp.float32))


@pytest.mark.gpu
def test_model_to_gpu_and_back_gives_the_same_predictions():
    backend.require_gpu()
    x = Input((9, 9, 3))
    y = Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    y = MaxPool2D(3, strides=2, padding="same")(y)
    y = AvgPool2D(2, padding="same")(y)
    y = LocalResponseNormalization()(y)
    model = tinynet.Model(x, Dense(5, activation="softmax")(tinynet.layers.Flatten()(y)))
    data = np.random.default_rng(0).standard_normal((3, 9, 9, 3)).astype(np.float32)
    before = model.predict(data)
    model.to("gpu")
    on_gpu = backend.to_numpy(model.predict(backend.to_device(data, "gpu")))
    model.to("cpu")
    after = model.predict(data)
    np.testing.assert_array_equal(before, after)
    assert relerr(on_gpu, before) <= 1e-5


def test_no_float64_leak_in_numba_kernels():
    if not backend.numba_available():
        pytest.skip("numba not installed")
    from tinynet.kernels import numba_kernels as nk

    x = np.ones((1, 5, 5, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = [nk.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1)), nk.maxpool_forward(x, 3, 3, 2, 2, (1, 1, 1, 1))[0],
                nk.avgpool_forward(x, 3, 3, 2, 2, (1, 1, 1, 1)), nk.relu_backward(x, x),
                nk.avgpool_backward(x[:, :3, :3], x.shape, 3, 3, 2, 2, (1, 1, 1, 1)),
                *nk.lrn_forward(x, 5, 1e-4, 0.75, 1.0), *nk.lrn_forward(x, 4, 1e-4, 0.6, 2.0),
                nk.lrn_backward(x, x, x, x + 1, 5, 1e-4, 0.75), nk.lrn_backward(x, x, x, x + 1, 3, 1e-4, 0.5)]
    assert all(o.dtype == np.float32 for o in outs)
