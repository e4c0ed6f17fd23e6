"""Shared test setup: the Keras backend, backend parametrization and GPU skipping."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

import tinynet
from tinynet import backend

CPU_BACKENDS = ["numpy", "numba"] if backend.numba_available() else ["numpy"]
ALL_BACKENDS = CPU_BACKENDS + ["cupy"]


def pytest_collection_modifyitems(config, items):
    if backend.cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts with float32, fresh layer names, a fixed seed and the default CPU kernels."""
    old_kernels = backend.get_cpu_kernels()
    old_fast, old_keep, old_winograd = backend.fast_paths_enabled(), backend.keep_im2col(), backend.winograd_enabled()
    tinynet.set_floatx("float32")
    tinynet.layers.reset_names()
    tinynet.set_seed(0)
    yield
    tinynet.set_floatx("float32")
    backend.set_cpu_kernels(old_kernels)
    backend.set_fast_paths(old_fast)
    backend.set_keep_im2col(old_keep)
    backend.set_winograd(old_winograd)


@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.gpu) if b == "cupy" else b for b in ALL_BACKENDS])
def xb(request):
    """The array backend under test: yields a function moving a NumPy array there, with kernels selected.

    ``xb.name`` is 'numpy', 'numba' or 'cupy'; ``xb(a)`` moves ``a``; ``xb.numpy(a)`` brings it back.
    """
    name = request.param
    if name == "cupy":
        backend.require_gpu()
        backend.set_cpu_kernels("numpy")
    else:
        backend.set_cpu_kernels(name)

    class _Backend:
        def __call__(self, a):
            return backend.to_device(np.asarray(a), "gpu" if name == "cupy" else "cpu")

        @staticmethod
        def numpy(a):
            return backend.to_numpy(a)

    b = _Backend()
    b.name = name
    return b
