"""Every kernel on every backend against the NumPy reference (:mod:`tinynet.kernels.numpy_kernels`).

One test body per kernel, parametrized over shapes (odd, non-square, strided, 'same' and asymmetric pads),
dtypes and backends (``xb``: numpy, numba, and cupy marked ``gpu``). Tolerances: float64 1e-12, float32 1e-5,
relative to the largest magnitude of the reference (sums of window contributions may cancel).

Beyond the tolerances: the CPU backends must give the reference's window kernels bit for bit on every window
case of the layer tests (ties, negatives, NaN), the fused bias + ReLU kernels exactly (NaN, ±inf, −0), and
Numba the same bits on one thread as on several.

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

from tinynet import backend, kernels
from tinynet.kernels import numpy_kernels as ref
from tinynet.kernels.common import argmax_dtype, lrn_safe_scales, lrn_terms, window_output_hw

from helpers import cuda_source
from window_cases import WINDOW_CASES
from window_cases import case_id as window_case_id

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
    # the Numba kernels store it in the smallest type that holds ph·pw − 1 (kept for backward: memory)
    assert xb.numpy(argmax).dtype == (argmax_dtype(ph, pw) if xb.name == "numba" else np.int32)
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


# ---------------------------------------------------------------------- the fused bias + ReLU kernels
BIAS_SHAPES = [(2, 3, 5, 7), (9, 4), (1, 1, 1, 3), (3, 300, 5), (2, 40, 40, 24)]  # (3, 300, 5): 4 blocks of rows


def shape_id(shape):
    return "x".join(map(str, shape))


@pytest.fixture
def jit_at_every_size(monkeypatch):
    """Numba's fused kernels run their compiled loops even on the small shapes (not NumPy, as below
    ``_NUMPY_BELOW`` elements), so that the tests reach them."""
    if backend.numba_available():
        from tinynet.kernels import numba_kernels

        monkeypatch.setattr(numba_kernels, "_NUMPY_BELOW", 0)


@pytest.mark.parametrize("bias, relu", [(True, True), (True, False), (False, True), (False, False)],
                         ids=["bias-relu", "bias", "relu", "neither"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", BIAS_SHAPES, ids=shape_id)
def test_bias_relu_forward(xb, jit_at_every_size, shape, dtype, bias, relu):
    """In place ``max(z + b, 0)``, exactly as ``z += b; np.maximum(z, 0, out=z)``: NaN stays NaN (with its
    sign), −0 becomes +0, ±inf as any number; the argument itself is returned."""
    rng = np.random.default_rng(4)
    z = rng.standard_normal(shape).astype(dtype)
    z.flat[::7], z.flat[1::11], z.flat[2::13], z.flat[3::17], z.flat[4::19] = np.nan, -0.0, -np.inf, np.inf, -np.nan
    b = rng.standard_normal(shape[-1]).astype(dtype) if bias else None
    expected = z.copy()
    if bias:
        expected += b
    if relu:
        expected = np.maximum(expected, dtype(0))
    np.testing.assert_array_equal(ref.bias_relu_forward(z.copy(), b, relu), expected)
    zd = xb(z)
    out = kernels.bias_relu_forward(zd, None if b is None else xb(b), relu)
    assert out is zd
    got = xb.numpy(zd)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("relu, want_bias", [(True, True), (True, False), (False, True), (False, False)],
                         ids=["relu-bias", "relu", "bias", "neither"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", BIAS_SHAPES, ids=shape_id)
def test_relu_bias_backward(xb, jit_at_every_size, shape, dtype, relu, want_bias):
    """``gz = gy · [y > 0]`` exactly (gy itself without ReLU), ``gbias = gz.sum`` over every axis but the last,
    in the dtype of gy; a NaN or inf gradient gives NaN where y <= 0, as ``relu_backward``."""
    gy, y = relu_inputs(dtype, shape)
    gyd = xb(gy)
    gz, gb = kernels.relu_bias_backward(gyd, xb(y), relu, want_bias)
    expected = gy * (y > 0) if relu else gy
    if not relu:
        assert gz is gyd
    assert xb.numpy(gz).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(xb.numpy(gz), expected)
    if want_bias:
        assert xb.numpy(gb).shape == (shape[-1],)
        assert_close(xb.numpy(gb), expected.reshape(-1, shape[-1]).sum(axis=0), dtype)
    else:
        assert gb is None
    if relu:
        gy = gy.copy()
        gy.flat[1::7], gy.flat[2::11] = np.nan, -np.inf
        with np.errstate(invalid="ignore"):
            expected = ref.relu_backward(gy, y)
            gz, _ = kernels.relu_bias_backward(xb(gy), xb(y), relu, want_bias)
        assert np.isnan(expected).any()
        np.testing.assert_array_equal(xb.numpy(gz), expected)


# -------------------------------------------------------------------------------------------------- LRN
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size, alpha, beta, k, channels", [
    (5, 1e-4, 0.75, 1.0, 64), (5, 0.5, 0.75, 1.0, 3), (4, 0.3, 0.6, 2.0, 9), (1, 0.5, 0.75, 1.0, 3),
    (9, 0.9, 0.5, 1.5, 6), (3, 2.0, 0.75, 1.0, 16)])
def test_lrn(xb, dtype, size, alpha, beta, k, channels):
    """LRN forward and backward against the reference: the paper's size 5 (its own fused loop in Numba),
    windows clipped at both channel ends, even sizes, windows wider than C, other betas."""
    rng = np.random.default_rng(size + channels)
    x = (rng.standard_normal((2, 3, 5, channels)) * 3).astype(dtype)
    x[0, 0, 0, :] = 0.0
    y_ref, scale_ref = ref.lrn_forward(x, size, alpha, beta, k)
    y, scale = kernels.lrn_forward(xb(x), size, alpha, beta, k)
    assert_close(xb.numpy(y), y_ref, dtype)
    assert_close(xb.numpy(scale), scale_ref, dtype)
    if xb.name == "numba":  # the same window sums in the same order
        np.testing.assert_array_equal(xb.numpy(scale), scale_ref)
    gy = rng.standard_normal(x.shape).astype(dtype)
    gx = kernels.lrn_backward(xb(gy), xb(x), xb(y_ref), xb(scale_ref), size, alpha, beta)
    assert_close(xb.numpy(gx), ref.lrn_backward(gy, x, y_ref, scale_ref, size, alpha, beta), dtype)


# ---------------------------------------------------------------------------------- batch normalisation
# (70, 1): one channel (NumPy sums a lone column pairwise, not row by row); (1, 17): one row (variance 0)
BN_SHAPES = [(2, 3, 5, 7), (9, 4), (1, 1, 1, 3), (3, 300, 5), (2, 40, 40, 24), (70, 1), (1, 17), (4, 3, 19)]


def bn_inputs(shape, dtype, training):
    rng = np.random.default_rng(sum(shape))
    c = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    stats = (None, None) if training else (rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype))
    return x, gamma, beta, stats, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=shape_id)
def test_batchnorm(xb, jit_at_every_size, shape, dtype, training):
    """Batch normalisation forward and backward against the reference. On the CPU the per-channel sums run in
    NumPy's order (row by row), so every result is the reference's bit for bit (but for a single channel,
    which NumPy sums pairwise)."""
    x, gamma, beta, stats, gy = bn_inputs(shape, dtype, training)
    expected = ref.batchnorm_forward(x, gamma, beta, *stats, 1e-3)
    got = kernels.batchnorm_forward(xb(x), xb(gamma), xb(beta), *(None if s is None else xb(s) for s in stats), 1e-3)
    exact = xb.name != "cupy" and shape[-1] > 1
    assert len(got) == 5
    for a, e in zip(got, expected):
        assert_close(xb.numpy(a), e, dtype)
        if exact:
            np.testing.assert_array_equal(xb.numpy(a), e)
    x_hat, inv_std = expected[1], expected[4]
    expected = ref.batchnorm_backward(gy, x_hat, gamma, inv_std, training)
    got = kernels.batchnorm_backward(xb(gy), xb(x_hat), xb(gamma), xb(inv_std), training)
    assert len(got) == 3
    for a, e in zip(got, expected):
        assert_close(xb.numpy(a), e, dtype)
        if exact:
            np.testing.assert_array_equal(xb.numpy(a), e)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batchnorm_reference_is_the_textbook_formula(training):
    """The reference in float64 against the formulas written out (statistics over every leading axis), and its
    backward against the directional derivative of its forward."""
    x, gamma, beta, stats, gy = bn_inputs((3, 4, 5, 6), np.float64, training)
    eps = 1e-3
    rows = x.reshape(-1, 6)
    mean, var = (rows.mean(axis=0), rows.var(axis=0)) if training else stats
    y, x_hat, m, v, inv_std = ref.batchnorm_forward(x, gamma, beta, *stats, eps)
    np.testing.assert_allclose(m, mean, rtol=1e-12)
    np.testing.assert_allclose(v, var, rtol=1e-12)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(var + eps), rtol=1e-12)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + eps) * gamma + beta, rtol=1e-12, atol=1e-12)
    gx, g_gamma, g_beta = ref.batchnorm_backward(gy, x_hat, gamma, inv_std, training)
    np.testing.assert_allclose(g_gamma, (gy * x_hat).reshape(-1, 6).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(g_beta, gy.reshape(-1, 6).sum(axis=0), rtol=1e-12)
    direction = np.random.default_rng(1).standard_normal(x.shape)
    h = 1e-6
    loss = [np.sum(gy * ref.batchnorm_forward(x + s * h * direction, gamma, beta, *stats, eps)[0]) for s in (1, -1)]
    np.testing.assert_allclose(np.sum(gx * direction), (loss[0] - loss[1]) / (2 * h), rtol=1e-6)


# ------------------------------------------------------ window kernels on every shape the layer tests use
def keras_pads(n, k, s, padding):
    """(pad_before, pad_after) of one axis: Keras 'same' (out = ceil(n/s)) or 'valid'."""
    if padding == "valid":
        return 0, 0
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", WINDOW_CASES, ids=window_case_id)
def test_window_kernels_on_every_window_case(xb, case, dtype):
    """im2col, col2im and max pooling on every window case of the layer tests (non-square windows and
    strides, asymmetric 'same', batch 1), on an input full of ties and negative values with a few NaN.
    The CPU backends give the reference's results bit for bit (the sums run in the same order)."""
    k, s, padding, (n, h, w) = case
    (kh, kw), (sh, sw) = ((k, k) if isinstance(k, int) else k), ((s, s) if isinstance(s, int) else s)
    pads = keras_pads(h, kh, sh, padding) + keras_pads(w, kw, sw, padding)
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 3, (n, h, w, 3)).astype(dtype)  # ties everywhere, negatives
    x.flat[rng.random(x.size) < 0.03] = np.nan
    exact = xb.name != "cupy"
    check = np.testing.assert_array_equal if exact else (lambda a, b: assert_close(a, b, dtype))

    cols_ref = ref.im2col(x, kh, kw, sh, sw, pads)
    np.testing.assert_array_equal(xb.numpy(kernels.im2col(xb(x), kh, kw, sh, sw, pads)), cols_ref)
    g = rng.standard_normal(cols_ref.shape).astype(dtype)
    check(xb.numpy(kernels.col2im(xb(g), x.shape, kh, kw, sh, sw, pads)),
          ref.col2im(g, x.shape, kh, kw, sh, sw, pads))

    y_ref, arg_ref = ref.maxpool_forward(x, kh, kw, sh, sw, pads)
    y, arg = kernels.maxpool_forward(xb(x), kh, kw, sh, sw, pads)
    np.testing.assert_array_equal(xb.numpy(y), y_ref)
    np.testing.assert_array_equal(xb.numpy(arg), arg_ref)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx = kernels.maxpool_backward(xb(gy), xb(arg_ref), x.shape, kh, kw, sh, sw, pads)
    check(xb.numpy(gx), ref.maxpool_backward(gy, arg_ref, x.shape, kh, kw, sh, sw, pads))


def test_numba_results_do_not_depend_on_the_thread_count(monkeypatch):
    """Every Numba kernel gives the same bits from its one-thread build and its threaded build, the latter on
    one thread or several (each cell and each partial sum is computed by one task in a fixed order; the bias
    gradient adds fixed blocks of rows in block order)."""
    if not backend.numba_available():
        pytest.skip("numba not installed")
    import numba

    from tinynet.kernels import numba_kernels as nk

    most = numba.config.NUMBA_NUM_THREADS
    if most < 2:
        pytest.skip("numba has one thread here")
    monkeypatch.setattr(nk, "_NUMPY_BELOW", 0)  # the fused kernels' loops even on these small arrays
    rng = np.random.default_rng(8)
    x = np.maximum(rng.standard_normal((3, 23, 21, 70)), 0).astype(np.float32)  # post-ReLU: ties at zero
    y, arg = nk.maxpool_forward(x, 3, 3, 2, 2, (0, 1, 0, 1))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    g = rng.standard_normal((5, 30, 30, 40)).astype(np.float32)  # 4500 rows: 18 blocks of the bias gradient
    cols = nk.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1))
    gcols = rng.standard_normal(cols.shape).astype(np.float32)
    bn_gamma = rng.standard_normal(70).astype(np.float32)
    gy_bn = rng.standard_normal(x.shape).astype(np.float32)
    tiles = nk.winograd_input(x, (1, 1, 1, 1))
    m = rng.standard_normal((36, tiles.shape[1], 9)).astype(np.float32)

    def run():
        y_lrn, scale = nk.lrn_forward(x, 5, 1e-4, 0.75, 1.0)
        return [*nk.maxpool_forward(x, 3, 3, 2, 2, (0, 1, 0, 1)),
                nk.maxpool_backward(gy, arg, x.shape, 3, 3, 2, 2, (0, 1, 0, 1)),
                nk.avgpool_forward(x, 3, 3, 2, 2, (0, 1, 0, 1)),
                nk.avgpool_backward(gy, x.shape, 3, 3, 2, 2, (0, 1, 0, 1)),
                nk.relu_backward(g, np.maximum(g, 0)), nk.bias_relu_forward(g.copy(), g[0, 0, 0], True),
                nk.bias_relu_forward(g.copy(), None, True),
                *nk.relu_bias_backward(g, np.maximum(g, 0), True, True), nk.relu_bias_backward(g, g, False, True)[1],
                y_lrn, scale, nk.lrn_backward(x, x, y_lrn, scale, 5, 1e-4, 0.75),
                nk.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1)), nk.col2im(gcols, x.shape, 3, 3, 1, 1, (1, 1, 1, 1)),
                *nk.batchnorm_forward(x, bn_gamma, bn_gamma[::-1].copy(), None, None, 1e-3),  # 70 channels: 9 blocks
                *nk.batchnorm_backward(gy_bn, x, bn_gamma, bn_gamma, True),
                *nk.batchnorm_backward(gy_bn, x, bn_gamma, bn_gamma, False),
                nk.winograd_input(x, (1, 1, 1, 1)), nk.winograd_output(m, (3, 23, 21, 9)), nk.winograd_gradient(g)]

    before = numba.get_num_threads()
    results = {}
    try:
        for label, way, threads in [("one-thread build", "serial", most), ("threaded build, 1 thread", "parallel", 1),
                                    (f"threaded build, {most} threads", "parallel", most)]:
            monkeypatch.setattr(nk._Kernel, "forced", way)
            numba.set_num_threads(threads)
            results[label] = run()
    finally:
        numba.set_num_threads(before)
    first, *others = results.values()
    for label, other in list(results.items())[1:]:
        for i, (a, b) in enumerate(zip(first, other)):
            assert a.tobytes() == b.tobytes(), f"{label}: result {i} differs from the one-thread build's"


def test_numba_kernels_choose_their_threads_by_size(monkeypatch):
    """A kernel runs on the calling thread below its size and on the threads from it (im2col from 16 M
    elements, max pooling forward from 64 K); one Numba thread always means the one-thread build."""
    if not backend.numba_available():
        pytest.skip("numba not installed")
    import numba

    from tinynet.kernels import numba_kernels as nk

    calls = []
    for name in ("_im2col", "_maxpool_forward"):
        kernel = getattr(nk, name)
        for way in ("serial", "parallel"):
            monkeypatch.setattr(kernel, way, lambda *args, _n=name, _w=way: calls.append((_n, _w)))
    x = np.ones((1, 4, 4, 2), np.float32)
    big = np.ones((1, 128, 128, 4), np.float32)  # 64 K elements: max pooling's threads
    nk.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1))
    nk.maxpool_forward(big, 3, 3, 1, 1, (1, 1, 1, 1))
    monkeypatch.setattr(nk._im2col, "parallel_from", 4 * 4 * 9 * 2)  # the im2col matrix's 288 elements
    nk.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1))
    nk.maxpool_forward(x, 3, 3, 1, 1, (1, 1, 1, 1))
    threaded = calls[:]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        nk.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1))
        nk.maxpool_forward(x, 3, 3, 1, 1, (1, 1, 1, 1))
    finally:
        numba.set_num_threads(before)
    threads = "parallel" if before > 1 else "serial"
    assert threaded == [("_im2col", "serial"), ("_maxpool_forward", threads), ("_im2col", threads),
                        ("_maxpool_forward", "serial")]
    assert calls[4:] == [("_im2col", "serial"), ("_maxpool_forward", "serial")]


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
          t(k), t(alpha / size), t(-beta), *lrn_safe_scales(dtype, beta))
    assert_close(y, y_ref, dtype)
    assert_close(scale, scale_ref, dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    gx = np.empty_like(x)
    _call(lib, "lrn_backward", dtype, gy, x, y_ref, scale_ref, gx, gx.size, channels, before, size - 1 - before,
          t(alpha / size), t(-beta), t(2.0 * alpha * beta / size), *lrn_safe_scales(dtype, beta))
    assert_close(gx, ref.lrn_backward(gy, x, y_ref, scale_ref, size, alpha, beta), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cuda_bias_relu_sources_on_cpu(cuda_on_cpu, dtype):
    """The GPU bias + ReLU forward (in place; NaN stays NaN, −0 becomes +0) and the ReLU part of its backward
    give the reference's results bit for bit."""
    lib = cuda_on_cpu[dtype]
    rng = np.random.default_rng(5)
    z = rng.standard_normal((2, 3, 4, 6)).astype(dtype)
    z.flat[::7], z.flat[1::11], z.flat[2::13] = np.nan, -0.0, -np.inf
    bias = rng.standard_normal(6).astype(dtype)
    for b in (bias, np.zeros(6, dtype)):  # the CuPy function passes zeros when there is no bias
        for relu in (1, 0):
            got = z.copy()
            _call(lib, "bias_relu_forward", dtype, got, b, got.size, 6, relu)
            expected = ref.bias_relu_forward(z.copy(), b, bool(relu))
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
    got = z.copy()
    _call(lib, "bias_relu_forward", dtype, got, np.zeros(6, dtype), got.size, 6, 1)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref.bias_relu_forward(z.copy(), None, True)))
    gy, y = relu_inputs(dtype)
    gy.flat[1::7], gy.flat[2::11] = np.nan, np.inf
    gz = np.empty_like(gy)
    _call(lib, "relu_bias_backward", dtype, gy, y, gz, gz.size)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(gz, ref.relu_bias_backward(gy, y, True, False)[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (5, 1), (1, 9)], ids=shape_id)
def test_cuda_batchnorm_sources_on_cpu(cuda_on_cpu, dtype, shape):
    """The GPU batch-normalisation kernels (the element-wise parts; the sums are CuPy's reductions, given
    here by the reference) against the reference, in training and inference."""
    lib = cuda_on_cpu[dtype]
    rows, c = int(np.prod(shape[:-1])), shape[-1]
    for training in (True, False):
        x, gamma, beta, stats, gy = bn_inputs(shape, dtype, training)
        y_ref, x_hat_ref, mean, _, inv_std = ref.batchnorm_forward(x, gamma, beta, *stats, 1e-3)
        y, x_hat = np.empty_like(x), np.empty_like(x)
        _call(lib, "batchnorm_forward", dtype, x, mean, inv_std, gamma, beta, y, x_hat, x.size, c)
        assert_close(y, y_ref, dtype)
        assert_close(x_hat, x_hat_ref, dtype)
        gx_ref, g_gamma, g_beta = ref.batchnorm_backward(gy, x_hat_ref, gamma, inv_std, training)
        gx = np.empty_like(gy)
        _call(lib, "batchnorm_backward", dtype, gy, x_hat_ref, g_beta, g_gamma, gamma, inv_std, gx, gx.size, c,
              rows, int(training))
        assert_close(gx, gx_ref, dtype)


def test_maxpool_argmax_type_holds_every_window_cell(xb):
    """A 12×12 window (144 cells) does not fit int8: its argmax is int32 and routes gradients right; the
    reference's backward also takes the Numba kernels' int8 argmax."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 13, 12, 3))
    y, argmax = kernels.maxpool_forward(xb(x), 12, 12, 1, 1, (0, 0, 0, 0))
    y_ref, argmax_ref = ref.maxpool_forward(x, 12, 12, 1, 1, (0, 0, 0, 0))
    assert xb.numpy(argmax).max() > 127 and np.dtype(xb.numpy(argmax).dtype).itemsize >= 4
    np.testing.assert_array_equal(xb.numpy(argmax), argmax_ref)
    g = rng.standard_normal(y_ref.shape)
    gx = kernels.maxpool_backward(xb(g), argmax, x.shape, 12, 12, 1, 1, (0, 0, 0, 0))
    np.testing.assert_allclose(xb.numpy(gx), ref.maxpool_backward(g, argmax_ref, x.shape, 12, 12, 1, 1,
                                                                   (0, 0, 0, 0)), rtol=1e-12)
    _, small = kernels.maxpool_forward(xb(x), 3, 3, 2, 2, (0, 1, 0, 1))
    g = rng.standard_normal(small.shape)
    np.testing.assert_allclose(ref.maxpool_backward(g, xb.numpy(small), x.shape, 3, 3, 2, 2, (0, 1, 0, 1)),
                               xb.numpy(kernels.maxpool_backward(xb(g), small, x.shape, 3, 3, 2, 2, (0, 1, 0, 1))),
                               rtol=1e-12)


# ------------------------------------------------------ max pooling: windows whose real cells are all −inf
# (x shape, (ph, pw), (sh, sw), Keras 'same' pads): stride 2 and 1, a non-square window and strides, pads after
MINF_CASES = [
    ((2, 7, 6, 3), (3, 3), (2, 2), (1, 1, 0, 1)),
    ((2, 7, 6, 3), (3, 3), (1, 1), (1, 1, 1, 1)),
    ((2, 7, 7, 3), (4, 3), (3, 2), (1, 2, 1, 1)),
    ((1, 5, 5, 2), (2, 2), (2, 2), (0, 1, 0, 1)),
]


def maxpool_oracle(x, ph, pw, sh, sw, pads):
    """Max pooling window by window, in Python: the real cells in row-major order; the first NaN if there is
    one, else the first maximum (the first real cell when they are all −inf)."""
    n, h, w, c = x.shape
    top, _, left, _ = pads
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    y, arg = np.empty((n, ho, wo, c), x.dtype), np.empty((n, ho, wo, c), np.int64)
    for i in range(ho):
        for j in range(wo):
            cells = [(a, b) for a in range(ph) for b in range(pw)
                     if 0 <= i * sh + a - top < h and 0 <= j * sw + b - left < w]
            rows = [i * sh + a - top for a, _ in cells]
            cols = [j * sw + b - left for _, b in cells]
            values = x[:, rows, cols, :]  # (N, cells, C)
            nan = np.isnan(values)
            best = np.where(nan.any(axis=1), nan.argmax(axis=1), np.argmax(np.where(nan, 0, values), axis=1))
            y[:, i, j] = np.take_along_axis(values, best[:, None, :], axis=1)[:, 0]
            arg[:, i, j] = [[cells[k][0] * pw + cells[k][1] for k in row] for row in best]
    return y, arg


def minus_inf_input(shape, dtype):
    """Mostly −inf, with ties at −1 and 1, a few NaN and one channel all −inf."""
    rng = np.random.default_rng(16)
    x = rng.choice(np.array([-np.inf, -1.0, 1.0], dtype), size=shape, p=[0.75, 0.15, 0.1])
    x[rng.random(shape) < 0.03] = np.nan
    x[0, :, :, 0] = -np.inf
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", MINF_CASES, ids=case_id)
def test_maxpool_windows_of_minus_infinity_keep_their_gradient(xb, case, dtype):
    """A 'same' window whose real cells are all −inf names its first real cell, never a padding cell (whose
    gradient backward drops): no gradient is lost. Ties still go to the first maximum, NaN to the first NaN."""
    shape, (ph, pw), (sh, sw), pads = case
    x = minus_inf_input(shape, dtype)
    y_expected, arg_expected = maxpool_oracle(x, ph, pw, sh, sw, pads)
    all_minus_inf = np.isneginf(y_expected)
    if pads[0] or pads[2]:  # windows whose first real cell is not cell 0: padding there (was their argmax)
        assert (arg_expected[all_minus_inf] > 0).any()
    y, arg = kernels.maxpool_forward(xb(x), ph, pw, sh, sw, pads)
    np.testing.assert_array_equal(xb.numpy(y), y_expected)
    np.testing.assert_array_equal(xb.numpy(arg), arg_expected)
    gy = np.random.default_rng(1).standard_normal(y_expected.shape).astype(dtype)
    gx = xb.numpy(kernels.maxpool_backward(xb(gy), arg, shape, ph, pw, sh, sw, pads))
    expected = ref.maxpool_backward(gy, arg_expected, shape, ph, pw, sh, sw, pads)
    assert_close(gx, expected, dtype)
    # every output's gradient lands on a real cell: the sums per image and channel are kept
    np.testing.assert_allclose(gx.sum(axis=(1, 2)), gy.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", MINF_CASES, ids=case_id)
def test_cuda_maxpool_source_minus_infinity_windows_on_cpu(cuda_on_cpu, case, dtype):
    """The CUDA max pooling names the first real cell of an all −inf window too."""
    shape, (kh, kw), (sh, sw), pads = case
    n, h, w, c = shape
    x = minus_inf_input(shape, dtype)
    y_expected, arg_expected = maxpool_oracle(x, kh, kw, sh, sw, pads)
    ho, wo = y_expected.shape[1:3]
    y, arg = np.empty_like(y_expected), np.empty(y_expected.shape, np.int32)
    _call(cuda_on_cpu[dtype], "maxpool_forward", dtype, x, y, arg, y.size, h, w, c, ho, wo, kh, kw, sh, sw,
          pads[0], pads[2], -np.inf)
    np.testing.assert_array_equal(y, y_expected)
    np.testing.assert_array_equal(arg, arg_expected)


# ------------------------------------------------------------------------------ LRN of large float32 values
def large_lrn_input(dtype):
    """Ordinary values, the review's row (x² overflows float32 from 1.8e19: the scale was inf and the whole
    channel window ±0), one huge value among ordinary ones, and one whose scale is past the safe bound though
    its square is finite; 154 pixels, so in three of Numba's blocks of 64 (the last one partial)."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 7, 11, 9)) * 3).astype(dtype)
    x[0, 0, 0, :7] = [1e38, -1e38, 3e19, 1.0, 2e19, 0.5, 1e10]
    x[0, 6, 9, 4] = 5e20
    x[1, 6, 10, 0] = 1e12
    x[1, 0, 1, 8] = -4e25
    return x


def test_numba_lrn_large_values_same_bits_on_any_threads(monkeypatch):
    """The float64 rows of Numba's LRN (flagged per block of 64 pixels) give the same bits whichever build
    runs them, and the reference's scales."""
    if not backend.numba_available():
        pytest.skip("numba not installed")
    from tinynet.kernels import numba_kernels as nk

    x = large_lrn_input(np.float32)
    gy = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    results = []
    for way in ("serial", "parallel"):
        monkeypatch.setattr(nk._Kernel, "forced", way)
        y, scale = nk.lrn_forward(x, 5, 1e-4, 0.25, 1.0)
        results.append((y, scale, nk.lrn_backward(gy, x, y, scale, 5, 1e-4, 0.25)))
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(results[0][1], ref.lrn_forward(x, 5, 1e-4, 0.25, 1.0)[1])
    # y and gx are not compared bit for bit with NumPy's: y = x·s^(−0.25) is a float32 power, NumPy's from a
    # vector library on some machines (SVML with AVX-512: on an H200 host 131 of these 1386 values were 1 or 2 ulp
    # from Numba's libm power). test_lrn_float32_stays_finite_and_right_for_large_values checks both against the
    # float64 formula.


def lrn_terms_sizes(gy, x, y, scale, size, alpha, beta):
    """|gy s^(−β)| + |coef x Σ gy y / s|, in float64: the size of the two terms backward subtracts."""
    w = lrn_terms(np.float64, size, alpha, beta)
    spread = ref._channel_window_sum(gy * y / scale, w.after, w.before)
    return np.abs(gy * scale ** w.minus_beta) + np.abs(w.coef * x * spread)


@pytest.mark.parametrize("beta, size", [(0.75, 5), (0.25, 5), (0.6, 4), (2.0, 3)])
def test_lrn_float32_stays_finite_and_right_for_large_values(xb, beta, size):
    """float32 LRN agrees with the float64 formula wherever its result is representable: forward (the review's
    input gave ±0 for every output; beta = 0.25 gives 1.26e20, −1.26e20, 37.7, 1.5e-18, 4.98e10, 1.7e-9,
    33.4) and backward (it gave 0), on every backend; Numba's scales are the reference's bit for bit."""
    alpha = 1e-4
    x = large_lrn_input(np.float32)
    x64 = x.astype(np.float64)
    # the float64 formula with the float32 layer's constants (beta = 0.6 is 0.6000000238 in float32, which moves
    # s^(-beta) by 2.4e-8·ln s, 4e-6 at s = 1e72: on both paths of the float32 kernels alike)
    alpha32, beta32 = float(np.float32(alpha / size)) * size, float(np.float32(beta))
    y64, s64 = ref.lrn_forward(x64, size, alpha32, beta32, 1.0)
    y, scale = (xb.numpy(a) for a in kernels.lrn_forward(xb(x), size, alpha, beta, 1.0))
    assert y.dtype == scale.dtype == np.float32
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, y64, rtol=2e-6, atol=1e-44)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(scale, s64.astype(np.float32), rtol=2e-6)  # inf above float32's largest
    assert np.isinf(scale).any()
    if beta == 0.25 and size == 5:
        np.testing.assert_allclose(y[0, 0, 0, :7], [1.25743341e20, -1.25743341e20, 3.77230048e1, 1.49534881e-18,
                                                    4.98065721e10, 1.67185076e-9, 3.34370153e1], rtol=1e-6)
    if xb.name == "numba":
        np.testing.assert_array_equal(scale, ref.lrn_forward(x, size, alpha, beta, 1.0)[1])
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    gx = xb.numpy(kernels.lrn_backward(xb(gy), xb(x), xb(y), xb(scale), size, alpha, beta))
    assert gx.dtype == np.float32 and np.isfinite(gx).all()
    gy64 = gy.astype(np.float64)
    gx64 = ref.lrn_backward(gy64, x64, y64, s64, size, alpha32, beta32)
    normal = np.abs(gx64) > np.finfo(np.float32).tiny
    assert normal[0, 0, 0, :7].any() or beta > 0.5  # (beta 0.75: those gradients are below float32's range)
    assert (gx[normal] != 0).all()  # were 0 in the huge values' channel windows
    np.testing.assert_array_less(np.abs(gx - gx64),
                                 1e-5 * lrn_terms_sizes(gy64, x64, y64, s64, size, alpha32, beta32) + 1e-44)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lrn_keeps_its_arithmetic_where_it_was_right(xb, dtype):
    """Ordinary float32 values, and float64 (even where its squares overflow), keep the dtype's own formula:
    the scale is the plain expression's bit for bit on the CPU backends (float64: inf where x² overflows)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 4, 7)) * 30).astype(dtype)
    if dtype == np.float64:
        x[0, 0, 0, 2] = 1e200
    w = lrn_terms(dtype, 5, 1e-4, 0.75, 1.0)
    with np.errstate(over="ignore"):
        plain_scale = w.k + w.alpha_over_size * ref._channel_window_sum(x * x, w.before, w.after)
        plain_y = x * plain_scale ** w.minus_beta
        y, scale = (xb.numpy(a) for a in kernels.lrn_forward(xb(x), 5, 1e-4, 0.75, 1.0))
    if xb.name != "cupy":
        np.testing.assert_array_equal(scale, plain_scale)
    else:
        assert_close(scale[np.isfinite(plain_scale)], plain_scale[np.isfinite(plain_scale)], dtype)
    if xb.name == "numpy":
        np.testing.assert_array_equal(y, plain_y)
    assert np.isinf(scale).any() == (dtype == np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("beta, size", [(0.75, 5), (0.25, 5), (0.6, 4)])
def test_cuda_lrn_source_large_values_on_cpu(cuda_on_cpu, dtype, beta, size):
    """The CUDA LRN kernels take the same float64 path as the reference for unsafe float32 scales."""
    lib, t = cuda_on_cpu[dtype], np.dtype(dtype).type
    alpha, k = 1e-4, 1.0
    x = large_lrn_input(dtype)
    channels = x.shape[-1]
    before = (size - 1) // 2
    y_ref, scale_ref = ref.lrn_forward(x, size, alpha, beta, k)
    y, scale = np.empty_like(x), np.empty_like(x)
    _call(lib, "lrn_forward", dtype, x, y, scale, x.size, channels, before, size - 1 - before,
          t(k), t(alpha / size), t(-beta), *lrn_safe_scales(dtype, beta))
    np.testing.assert_allclose(y, y_ref, rtol=2e-6, atol=1e-44)
    np.testing.assert_allclose(scale, scale_ref, rtol=2e-6)
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    gx = np.empty_like(x)
    _call(lib, "lrn_backward", dtype, gy, x, y_ref, scale_ref, gx, gx.size, channels, before, size - 1 - before,
          t(alpha / size), t(-beta), t(2.0 * alpha * beta / size), *lrn_safe_scales(dtype, beta))
    x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
    y64, s64 = ref.lrn_forward(x64, size, alpha, beta, k)
    expected = ref.lrn_backward(gy, x, y_ref, scale_ref, size, alpha, beta)
    assert np.isfinite(gx).all() and np.isfinite(expected).all()
    np.testing.assert_array_less(np.abs(gx - expected),
                                 1e-5 * lrn_terms_sizes(gy64, x64, y64, s64, size, alpha, beta) + 1e-44)


# ------------------------------------------------- largest magnitudes (the optimizer's bounds, Numba only)
@pytest.mark.parametrize("name", ["numpy", "numba"] if backend.numba_available() else ["numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_largest_magnitudes_equal_numpys_and_flag_nan_and_inf(dtype, name):
    """max |a| of one to four arrays in one call, equal to NumPy's; NaN for an array holding NaN, +inf or -inf
    (also -0.0, subnormals and the dtype's largest value are magnitudes like any other); 0 for an empty one."""
    rng = np.random.default_rng(21)
    tiny, largest = np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max
    arrays = [rng.standard_normal((3, 5, 7)).astype(dtype), -np.abs(rng.standard_normal(1001)).astype(dtype),
              np.array([-0.0, tiny, -tiny], dtype), np.array([-largest, 1.0], dtype)]
    module = kernels.backend_module(name)
    found = module.largest_magnitudes(arrays)
    assert found == [float(np.abs(a).max()) for a in arrays]
    assert module.largest_magnitudes([np.zeros(0, dtype)]) == [0.0]
    assert kernels.largest_magnitudes(arrays) == found  # the dispatcher
    for bad in (np.nan, np.inf, -np.inf):
        a = rng.standard_normal(257).astype(dtype)
        a[200] = bad
        first, second = module.largest_magnitudes([a, arrays[0]])
        assert np.isnan(first) and second == float(np.abs(arrays[0]).max())


@pytest.mark.skipif(not backend.numba_available(), reason="Numba is not installed")
def test_numbas_largest_magnitudes_pass_what_their_loop_cannot_read_to_the_reference():
    """Mixed dtypes, a strided view, more than four arrays: NumPy's reductions give the answer."""
    numba_kernels = kernels.backend_module("numba")
    a = np.arange(24, dtype=np.float32).reshape(4, 6) - 30
    for arrays in ([a, a.astype(np.float64)], [a[:, ::2]], [a] * 5):
        assert numba_kernels.largest_magnitudes(arrays) == ref.largest_magnitudes(arrays)
        assert numba_kernels.largest_magnitudes(arrays) == [float(np.abs(x).max()) for x in arrays]


def test_the_largest_magnitudes_dispatcher_refuses_what_is_not_a_list_of_float_arrays():
    with pytest.raises(ValueError, match="largest_magnitudes"):
        kernels.largest_magnitudes([])
    with pytest.raises(ValueError, match="largest_magnitudes"):
        kernels.largest_magnitudes(np.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.largest_magnitudes([np.ones(3), np.ones(3, np.int32)])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cuda_update_sources_on_cpu(cuda_on_cpu, dtype):
    """The GPU optimizer updates (Adam; SGD with momentum, plain and Nesterov), in place, give the reference's
    weights and state bit for bit, constants rounded to T as the CuPy launcher passes them."""
    lib = cuda_on_cpu[dtype]
    rng = np.random.default_rng(6)
    f = np.dtype(dtype).type
    w, g, m = (rng.standard_normal((3, 5, 7)).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(w.shape)).astype(dtype) * f(1e-3)
    beta_1, beta_2, alpha, epsilon = 0.8, 0.995, 0.003, 1e-6
    want = [a.copy() for a in (w, g, m, v)]
    ref.adam_update(*want, beta_1, beta_2, alpha, epsilon)
    got = [a.copy() for a in (w, g, m, v)]
    _call(lib, "adam_update", dtype, *got, w.size, f(1.0 - beta_1), f(1.0 - beta_2), f(alpha), f(epsilon))
    for name, a, b in zip("wgmv", got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)
    for nesterov in (0, 1):
        want = [a.copy() for a in (w, g, m)]
        ref.sgd_momentum_update(*want, 0.05, 0.9, bool(nesterov))
        got = [a.copy() for a in (w, g, m)]
        _call(lib, "sgd_momentum_update", dtype, *got, w.size, f(0.05), f(0.9), nesterov)
        for name, a, b in zip(("w", "g", "velocity"), got, want):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, nesterov={nesterov}")
