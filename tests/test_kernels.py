"""Every kernel on every backend against the NumPy reference (:mod:`tinynet.kernels.numpy_kernels`).

One test body per kernel, parametrized over shapes (odd, non-square, strided, 'same' and asymmetric pads),
dtypes and backends (``xb``: numpy, numba, and cupy marked ``gpu``). Tolerances: float64 1e-12, float32 1e-5,
relative to the largest magnitude of the reference (sums of window contributions may cancel).

``test_cuda_source_on_cpu`` compiles the CUDA C of :mod:`tinynet.kernels.cupy_kernels` as plain C++ (one
"thread" walking the grid-stride loop) and checks it against the reference, so the GPU index arithmetic is
exercised on machines without a GPU.
"""
import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from tinynet import kernels
from tinynet.kernels import numpy_kernels as ref

from helpers import cuda_source

TOL = {np.float32: 1e-5, np.float64: 1e-12}

# (x shape NHWC, (kh, kw), (sh, sw), pads (top, bottom, left, right))
CASES = [
    ((2, 7, 9, 3), (3, 2), (2, 3), (1, 1, 0, 1)),     # non-square kernel and strides, asymmetric pads
    ((3, 8, 8, 4), (3, 3), (1, 1), (1, 1, 1, 1)),     # 'same' 3×3/1
    ((2, 10, 11, 5), (5, 5), (3, 3), (0, 0, 0, 0)),   # 'valid' 5×5/3 (the aux pool)
    ((1, 9, 9, 2), (7, 7), (2, 2), (2, 3, 2, 3)),     # conv1's 7×7/2 'same' (2 before, 3 after)
    ((2, 6, 5, 1), (2, 5), (1, 2), (0, 1, 2, 2)),     # kw = W
    ((1, 5, 7, 3), (1, 1), (2, 1), (0, 0, 0, 0)),     # 1×1 strided
]
DTYPES = [np.float32, np.float64]


def case_id(case):
    shape, k, s, pads = case
    return f"x{'x'.join(map(str, shape))}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, pads))}"


def assert_close(actual, expected, dtype):
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-30)
    err = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()) / scale
    assert err <= TOL[dtype], f"relative error {err:.3e} > {TOL[dtype]}"


def inputs(case, dtype, seed=0):
    """A tie-free input (a permutation of distinct values) and the reference forward results."""
    shape, k, s, pads = case
    rng = np.random.default_rng(seed)
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) - 0.5).astype(dtype)
    return x, rng


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_col2im(xb, case, dtype):
    shape, (kh, kw), (sh, sw), pads = case
    x, rng = inputs(case, dtype)
    cols = kernels.im2col(xb(x), kh, kw, sh, sw, pads)
    expected = ref.im2col(x, kh, kw, sh, sw, pads)
    assert_close(xb.numpy(cols), expected, dtype)
    g = rng.standard_normal(expected.shape).astype(dtype)
    dx = kernels.col2im(xb(g), shape, kh, kw, sh, sw, pads)
    assert_close(xb.numpy(dx), ref.col2im(g, shape, kh, kw, sh, sw, pads), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_maxpool(xb, case, dtype):
    shape, (ph, pw), (sh, sw), pads = case
    x, rng = inputs(case, dtype)
    y, argmax = kernels.maxpool_forward(xb(x), ph, pw, sh, sw, pads)
    y_ref, argmax_ref = ref.maxpool_forward(x, ph, pw, sh, sw, pads)
    assert_close(xb.numpy(y), y_ref, dtype)
    assert xb.numpy(argmax).dtype == np.int32
    np.testing.assert_array_equal(xb.numpy(argmax), argmax_ref)
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    gx = kernels.maxpool_backward(xb(g), argmax, shape, ph, pw, sh, sw, pads)
    assert_close(xb.numpy(gx), ref.maxpool_backward(g, argmax_ref, shape, ph, pw, sh, sw, pads), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_avgpool(xb, case, dtype):
    shape, (ph, pw), (sh, sw), pads = case
    x, rng = inputs(case, dtype)
    y = kernels.avgpool_forward(xb(x), ph, pw, sh, sw, pads)
    y_ref = ref.avgpool_forward(x, ph, pw, sh, sw, pads)
    assert_close(xb.numpy(y), y_ref, dtype)
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    gx = kernels.avgpool_backward(xb(g), shape, ph, pw, sh, sw, pads)
    assert_close(xb.numpy(gx), ref.avgpool_backward(g, shape, ph, pw, sh, sw, pads), dtype)


def relu_inputs(dtype, shape=(2, 3, 5, 7)):
    """A gradient and a ReLU output with positive cells, exact zeros and (as a stray input) negative ones."""
    rng = np.random.default_rng(3)
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    y.flat[::5] = -1.0
    return rng.standard_normal(shape).astype(dtype), y


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_relu_backward(xb, dtype):
    """``gy · [y > 0]``: zero where y is zero or negative, gy itself elsewhere, exactly."""
    gy, y = relu_inputs(dtype)
    assert (y == 0).any() and (y < 0).any()
    gz = xb.numpy(kernels.relu_backward(xb(gy), xb(y)))
    assert gz.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(gz, ref.relu_backward(gy, y))
    np.testing.assert_array_equal(gz, np.where(y > 0, gy, 0))


def test_maxpool_padding_is_minus_infinity_and_ties_go_first(xb):
    """All-negative input with padding never returns 0; on ties the first cell of the window wins."""
    x = -np.ones((1, 3, 3, 1), dtype=np.float32)
    y, argmax = kernels.maxpool_forward(xb(x), 3, 3, 1, 1, (1, 1, 1, 1))
    np.testing.assert_array_equal(xb.numpy(y), -1)
    # window of output (0, 0) covers padded rows/cols -1..1: its first real cell is (a, b) = (1, 1)
    assert int(xb.numpy(argmax)[0, 0, 0, 0]) == 1 * 3 + 1
    assert int(xb.numpy(argmax)[0, 1, 1, 0]) == 0


def nan_input(case, dtype):
    """``inputs(case)`` with NaN in about one window in two, two NaNs side by side, and an inf."""
    x, rng = inputs(case, dtype)
    x = x.copy()
    ph, pw = case[1]
    x[rng.random(x.shape) < 0.5 / (ph * pw)] = np.nan
    x[0, 0, :2, 0] = np.nan
    x[-1, -1, -1, -1] = np.inf
    return x, rng


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_maxpool_propagates_nan(xb, case, dtype):
    """A window holding NaN outputs NaN (PyTorch and Keras do); its argmax is the first NaN, so the gradient
    goes there. Every backend gives the reference's outputs and argmax exactly."""
    shape, (ph, pw), (sh, sw), pads = case
    x, rng = nan_input(case, dtype)
    y_ref, arg_ref = ref.maxpool_forward(x, ph, pw, sh, sw, pads)
    windows = ref.im2col(x, ph, pw, sh, sw, pads, pad_value=-np.inf)  # (N, Ho, Wo, ph, pw, C)
    flat = windows.transpose(0, 1, 2, 5, 3, 4).reshape(y_ref.shape + (ph * pw,))
    has_nan = np.isnan(flat).any(axis=-1)
    assert has_nan.any()
    np.testing.assert_array_equal(np.isnan(y_ref), has_nan)
    np.testing.assert_array_equal(arg_ref[has_nan], np.isnan(flat).argmax(axis=-1)[has_nan])
    y, arg = kernels.maxpool_forward(xb(x), ph, pw, sh, sw, pads)
    np.testing.assert_array_equal(xb.numpy(y), y_ref)  # NaN where the reference has NaN
    np.testing.assert_array_equal(xb.numpy(arg), arg_ref)
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    gx = kernels.maxpool_backward(xb(g), xb(arg_ref), shape, ph, pw, sh, sw, pads)
    assert_close(xb.numpy(gx), ref.maxpool_backward(g, arg_ref, shape, ph, pw, sh, sw, pads), dtype)


@pytest.mark.parametrize("kernel, args", [
    ("im2col", (1, 1, 1, 1, (0, 0, 0, 0))), ("maxpool_forward", (2, 2, 2, 2, (0, 0, 0, 0))),
    ("avgpool_forward", (2, 2, 2, 2, (0, 0, 0, 0))), ("lrn_forward", (3, 1e-4, 0.75, 1.0)),
])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.float16, np.complex64])
def test_kernels_refuse_anything_but_float32_and_float64(xb, kernel, args, dtype):
    """The dispatch refuses other dtypes with the reason (Numba's max pooling returned uninitialised memory
    for integers): layers cast their inputs first, this is the second line of defence."""
    x = xb(np.ones((1, 4, 4, 2), dtype))
    with pytest.raises(TypeError, match=f"tinynet.kernels.{kernel}: arrays must be float32 or float64, "
                                        f"got {np.dtype(dtype)}"):
        getattr(kernels, kernel)(x, *args)


def test_dispatch_follows_the_cpu_setting():
    import tinynet

    with tinynet.cpu_kernels("numpy"):
        assert kernels.implementation("im2col", np.zeros(1)) is ref.im2col
    if tinynet.backend.numba_available():
        from tinynet.kernels import numba_kernels

        with tinynet.cpu_kernels("numba"):
            assert kernels.implementation("col2im", np.zeros(1)) is numba_kernels.col2im


def test_importing_tinynet_never_imports_cupy():
    import sys

    code = "import sys, tinynet, tinynet.kernels; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------- the CUDA source, compiled for the CPU
_HARNESS = r"""
#include <cmath>
#include <algorithm>
struct Dim { long long x; };
static Dim blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};  // one thread walks every index
#define __global__
#define __device__
#define __forceinline__ inline
"""


@pytest.fixture(scope="module")
def cuda_on_cpu(tmp_path_factory):
    """``lib[dtype]``: the kernels compiled with g++ for float32 and float64 (skips without a compiler)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    libs = {}
    for dtype, ctype in ((np.float32, "float"), (np.float64, "double")):
        folder = tmp_path_factory.mktemp(ctype)
        src = folder / "kernels.cpp"
        src.write_text(_HARNESS + f"typedef {ctype} T;\n" + cuda_source())
        so = folder / "kernels.so"
        subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(so), str(src)], check=True, timeout=120)
        libs[dtype] = ctypes.CDLL(str(so))
    return libs


def _call(lib, name, dtype, *args):
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    converted = []
    for a in args:
        if isinstance(a, np.ndarray):
            converted.append(a.ctypes.data_as(ctypes.c_void_p))
        elif isinstance(a, (int, np.integer)):
            converted.append(ctypes.c_longlong(int(a)))
        else:
            converted.append(scalar(a))
    getattr(lib, name)(*converted)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cuda_source_on_cpu(cuda_on_cpu, case, dtype):
    """The GPU kernels' index arithmetic (im2col, gathers, pools) against the reference, run on the CPU."""
    lib = cuda_on_cpu[dtype]
    shape, (kh, kw), (sh, sw), pads = case
    n, h, w, c = shape
    x, rng = inputs(case, dtype)
    cols_ref = ref.im2col(x, kh, kw, sh, sw, pads)
    ho, wo = cols_ref.shape[1:3]
    geo = (h, w, c, ho, wo, kh, kw, sh, sw, pads[0], pads[2])

    cols = np.empty_like(cols_ref)
    _call(lib, "im2col", dtype, x, cols, cols.size, *geo, 0.0)
    assert_close(cols, cols_ref, dtype)
    g = rng.standard_normal(cols.shape).astype(dtype)
    dx = np.empty_like(x)
    _call(lib, "col2im", dtype, g, dx, dx.size, *geo)
    assert_close(dx, ref.col2im(g, shape, kh, kw, sh, sw, pads), dtype)

    y_ref, arg_ref = ref.maxpool_forward(x, kh, kw, sh, sw, pads)
    y, arg = np.empty_like(y_ref), np.empty(y_ref.shape, np.int32)
    _call(lib, "maxpool_forward", dtype, x, y, arg, y.size, *geo, -np.inf)
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(arg, arg_ref)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = np.empty_like(x)
    _call(lib, "maxpool_backward", dtype, gy, arg, gx, gx.size, *geo)
    assert_close(gx, ref.maxpool_backward(gy, arg_ref, shape, kh, kw, sh, sw, pads), dtype)

    y = np.empty_like(y_ref)
    _call(lib, "avgpool_forward", dtype, x, y, y.size, *geo)
    assert_close(y, ref.avgpool_forward(x, kh, kw, sh, sw, pads), dtype)
    _call(lib, "avgpool_backward", dtype, gy, gx, gx.size, *geo)
    assert_close(gx, ref.avgpool_backward(gy, shape, kh, kw, sh, sw, pads), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cuda_maxpool_source_propagates_nan_on_cpu(cuda_on_cpu, case, dtype):
    """The CUDA max pooling with NaN inputs: NaN out, the first NaN as argmax, as the reference."""
    lib = cuda_on_cpu[dtype]
    shape, (kh, kw), (sh, sw), pads = case
    n, h, w, c = shape
    x, rng = nan_input(case, dtype)
    y_ref, arg_ref = ref.maxpool_forward(x, kh, kw, sh, sw, pads)
    ho, wo = y_ref.shape[1:3]
    geo = (h, w, c, ho, wo, kh, kw, sh, sw, pads[0], pads[2])
    y, arg = np.empty_like(y_ref), np.empty(y_ref.shape, np.int32)
    _call(lib, "maxpool_forward", dtype, x, y, arg, y.size, *geo, -np.inf)
    assert np.isnan(y_ref).any()
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cuda_relu_source_on_cpu(cuda_on_cpu, dtype):
    """The GPU ReLU backward gives the reference's result bit for bit, NaN and inf in the gradient included
    (``gy · [y > 0]``, as NumPy: a NaN or inf gradient gives NaN where y <= 0)."""
    gy, y = relu_inputs(dtype)
    gy.flat[1::7], gy.flat[2::11] = np.nan, np.inf
    gz = np.empty_like(gy)
    _call(cuda_on_cpu[dtype], "relu_backward", dtype, gy, y, gz, gz.size)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(gz, ref.relu_backward(gy, y))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size, alpha, beta, k, channels", [
    (5, 1e-4, 0.75, 1.0, 7), (4, 0.3, 0.6, 2.0, 9), (1, 0.5, 0.75, 1.0, 3), (9, 0.9, 0.5, 1.5, 6)])
def test_cuda_lrn_source_on_cpu(cuda_on_cpu, dtype, size, alpha, beta, k, channels):
    """The GPU LRN kernels (windows clipped at both channel ends, even sizes, windows wider than C)."""
    lib, t = cuda_on_cpu[dtype], np.dtype(dtype).type
    rng = np.random.default_rng(size)
    x = (rng.standard_normal((2, 3, 4, channels)) * 2).astype(dtype)
    before = (size - 1) // 2
    y_ref, scale_ref = ref.lrn_forward(x, size, alpha, beta, k)
    y, scale = np.empty_like(x), np.empty_like(x)
    _call(lib, "lrn_forward", dtype, x, y, scale, x.size, channels, before, size - 1 - before,
          t(k), t(alpha / size), t(-beta))
    assert_close(y, y_ref, dtype)
    assert_close(scale, scale_ref, dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    gx = np.empty_like(x)
    _call(lib, "lrn_backward", dtype, gy, x, y_ref, scale_ref, gx, gx.size, channels, before, size - 1 - before,
          t(-beta), t(2.0 * alpha * beta / size))
    assert_close(gx, ref.lrn_backward(gy, x, y_ref, scale_ref, size, alpha, beta), dtype)
