"""Builders and readers shared by several test files: test files import this module, never one another.

* :func:`tiny_model`, :func:`toy_data`: a two-headed model small enough to train in a test, and data it learns;
* :func:`cuda_source`, :func:`cuda_kernel_signatures`: the CUDA C of ``cupy_kernels.py`` and its kernels'
  parameter lists, read without CuPy;
* :func:`load_cupy_kernels`: ``cupy_kernels.py`` imported with NumPy standing in for CuPy;
* :func:`npy_header`, :func:`npy_bytes`, :func:`write_zip`, :func:`zip_bomb`, :func:`refused_quickly`: hostile
  ``.npz`` files crafted by hand, and a check that a loader refuses one fast and without allocating.
"""
import ast
import importlib.util
import pathlib
import re
import struct
import sys
import time
import tracemalloc
import types
import zipfile
import zlib

import numpy as np
import pytest

import tinynet
from tinynet import Model, data
from tinynet.fileio import FileFormatError
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


# ------------------------------------------------------------------------------------ crafting hostile files
def npy_header(shape, descr="<f4", version=(1, 0), header_len=None):
    """The bytes of an .npy header (magic, length, dict), optionally lying about the header's length."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    fmt = "<H" if version == (1, 0) else "<I"
    prefix = 8 + struct.calcsize(fmt)
    text += b" " * ((-(prefix + len(text) + 1)) % 64) + b"\n"
    length = len(text) if header_len is None else header_len
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, length) + text


def npy_bytes(array):
    """A whole .npy file for ``array``, as np.save writes it."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """An .npz from ``{member name: bytes}`` (names given with their '.npy')."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_bomb(path, key="conv/kernel", gib=1):
    """An .npz of about 1 MB whose one deflated member really expands to ``gib`` GiB of zeros.

    Built from one compressed MiB repeated (after a full flush a deflate stream restarts from scratch, so
    the same input compresses to the same bytes): no GiB is ever held or compressed here. The CRC is
    left 0 (a reader that got that far would have decompressed everything already).
    """
    count = gib << 28  # float32 elements
    header = npy_header((count,))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(1 << 20)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == block
    stream = head + block * (gib << 10) + c.flush(zlib.Z_FINISH)
    name = (key + ".npy").encode()
    size = len(header) + 4 * count
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, 0, len(stream), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, 0, len(stream), size,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    with open(path, "wb") as f:
        f.write(local + stream + central + end)
    return path


def refused_quickly(call, match, seconds=0.5, max_mib=64):
    """``call()`` raises FileFormatError matching ``match`` within ``seconds``, allocating under ``max_mib``."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(FileFormatError, match=match) as info:
            call()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < max_mib << 20, f"allocated {peak / 2**20:.0f} MiB"
    return info.value


# ------------------------------------------------------------------------------------------------- writing


# ------------------------------------------------------------------------------------------ small models
def readme_model():
    """README's "A taste of the API": one tensor fans out to Conv2D and MaxPool2D, concatenated, two heads."""
    from tinynet.layers import concatenate

    x = Input((32, 32, 3))
    a = Conv2D(16, 3, padding="same", activation="relu")(x)
    b = MaxPool2D(3, strides=1, padding="same")(x)
    y = concatenate([a, b])
    main = Dense(10, activation="softmax")(GlobalAveragePooling2D()(y))
    aux = Dense(10, activation="softmax")(GlobalAveragePooling2D()(a))
    return Model(x, [aux, main])


def toy_vectors(n=40, seed=0):
    """(n, 8) float32 vectors whose class (n % 3) is a bump in feature ``y``, and the labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0, 0.3, (n, 8)).astype(np.float32)
    x[np.arange(n), y] += 1.5
    return x, y
