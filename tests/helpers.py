"""Builders and readers shared by several test files: test files import this module, never one another.

* :func:`tiny_model`, :func:`toy_data`: a two-headed model small enough to train in a test, and data it learns;
* :func:`cuda_source`, :func:`cuda_kernel_signatures`: the CUDA C of ``cupy_kernels.py`` and its kernels'
  parameter lists, read without CuPy;
* :func:`load_cupy_kernels`: ``cupy_kernels.py`` imported with NumPy standing in for CuPy.
"""
import ast
import importlib.util
import pathlib
import re
import sys
import types

import numpy as np
import pytest

import tinynet
from tinynet import Model, data
from tinynet.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D, Input,
                            MaxPool2D)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUPY_KERNELS_PY = ROOT / "tinynet" / "kernels" / "cupy_kernels.py"


# ------------------------------------------------------------------------------------------ training
def tiny_model(num_classes=3, seed=0):
    """8×8×1 → conv/BN (block 'low') → aux head; → conv → pool → dropout → main head. Outputs [aux1, main]."""
    tinynet.layers.reset_names()
    tinynet.set_seed(seed)
    x = Input((8, 8, 1))
    h = Conv2D(4, 3, padding="same", activation="relu", name="low_conv")(x)
    h = BatchNormalization(momentum=0.9, name="low_bn")(h)
    a = Dense(num_classes, activation="softmax", name="aux1_output")(Flatten(name="aux1_flatten")(h))
    h = Conv2D(6, 3, padding="same", activation="relu", name="high_conv")(h)
    h = GlobalAveragePooling2D(name="gap")(MaxPool2D(2, name="pool")(h))
    h = Dropout(0.3, name="dropout")(h)
    return Model(x, [a, Dense(num_classes, activation="softmax", name="output")(h)])


def toy_data(n=48, num_classes=3, seed=0):
    """Class k is a bright bar in row k·8/num_classes (plus noise): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    x = rng.random((n, 8, 8, 1)).astype(np.float32) * 0.3
    x[np.arange(n), (8 * y) // num_classes, :, 0] += 1.0
    return data.Dataset(x, y)


# ------------------------------------------------------------------------------------- the CUDA kernels
def cuda_source():
    """The CUDA C strings of cupy_kernels.py (``_PRELUDE + _SOURCE``), read without importing CuPy."""
    found = {}
    for node in ast.parse(CUPY_KERNELS_PY.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("_PRELUDE", "_SOURCE"):
                found[node.targets[0].id] = node.value.value
    return found["_PRELUDE"] + found["_SOURCE"]


def cuda_kernel_signatures(code):
    """``{name: [(C type, parameter name), ...]}`` of the ``extern "C" __global__`` functions in ``code``."""
    code = re.sub(r"//[^\n]*", "", code)
    found = {}
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', code):
        parsed = []
        for p in params.split(","):
            m = re.fullmatch(r"\s*(.*?)\s*\b(\w+)\s*", p)
            parsed.append((" ".join(m.group(1).replace("*", " * ").split()).replace(" *", "*"), m.group(2)))
        found[name] = parsed
    return found


def load_cupy_kernels(raw_module):
    """Import ``cupy_kernels.py`` with a NumPy stand-in for CuPy whose ``RawModule`` is ``raw_module``.

    ``cp.empty``, ``cp.int32``, ... are NumPy's, so the launchers run on the CPU and hand their kernel
    launches to ``raw_module(code=...).get_function(name)``; nothing reaches a GPU. The stand-in is in
    ``sys.modules`` only while the module loads.
    """
    fake = types.ModuleType("cupy")
    fake.__getattr__ = lambda name: getattr(np, name)
    fake.RawModule = raw_module
    spec = importlib.util.spec_from_file_location("tinynet.kernels._cupy_kernels_on_numpy", CUPY_KERNELS_PY)
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cupy", fake)
        spec.loader.exec_module(module)
    assert module.cp is fake
    return module
