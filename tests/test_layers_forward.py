"""Forward passes of every layer against naive Python-loop references written here, never against the engine.

Each reference states the layer's definition as plainly as possible (loops over output cells and window
offsets, explicit bounds checks instead of padding), so a bug in the engine's vectorised code, its padding
arithmetic or its index order shows up as a mismatch. Shapes are tiny; the parametrizations cover kernel
sizes 1, 2, 3, 5, 7 and non-square, strides 1-3 including sh != sw, 'valid' and 'same' (with the asymmetric
'same' cases), odd and even sizes, batch 1 and 2, on every array backend.
"""
import math

import numpy as np
import pytest

import tinynet
from tinynet.layers import (Activation, AvgPool2D, BatchNormalization, Concatenate, Conv2D, Dense, Dropout,
                            Flatten, GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D, ReLU,
                            Softmax)
from tinynet.kernels import numpy_kernels
from tinynet.kernels.common import window_output_size
from tinynet.layers.conv_utils import output_and_padding
from window_cases import WINDOW_CASES, case_id


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ----------------------------------------------------------------------------------------------- references
def keras_axis(n, k, s, padding):
    """(out, pad_before) for one axis, from Keras' documented rule (written out independently here)."""
    if padding == "valid":
        return (n - k) // s + 1, 0
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2


def window_cells(h, w, i, j, kh, kw, sh, sw, top, left):
    """The real (in-bounds) input cells (p, q) under output cell (i, j), in row-major window order."""
    cells = []
    for a in range(kh):
        for b in range(kw):
            p, q = i * sh - top + a, j * sw - left + b
            if 0 <= p < h and 0 <= q < w:
                cells.append((a, b, p, q))
    return cells


def conv2d_ref(x, kernel, bias, strides, padding):
    """y[n,i,j,k] = b[k] + sum over real cells (p,q) = (i sh - top + a, j sw - left + b) of x[n,p,q,:] . W[a,b,:,k]."""
    n, h, w, _ = x.shape
    kh, kw, _, k = kernel.shape
    sh, sw = strides
    ho, top = keras_axis(h, kh, sh, padding)
    wo, left = keras_axis(w, kw, sw, padding)
    y = np.zeros((n, ho, wo, k))
    for b_ in range(n):
        for i in range(ho):
            for j in range(wo):
                acc = np.array(bias, dtype=np.float64)
                for a, b, p, q in window_cells(h, w, i, j, kh, kw, sh, sw, top, left):
                    acc = acc + x[b_, p, q, :] @ kernel[a, b]
                y[b_, i, j] = acc
    return y


def pool_ref(x, pool, strides, padding, reduce):
    """Pooling over the real cells of each window only (max: padding never wins; mean: divide by real count)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = pool, strides
    ho, top = keras_axis(h, kh, sh, padding)
    wo, left = keras_axis(w, kw, sw, padding)
    y = np.zeros((n, ho, wo, c))
    for b_ in range(n):
        for i in range(ho):
            for j in range(wo):
                cells = window_cells(h, w, i, j, kh, kw, sh, sw, top, left)
                for ch in range(c):
                    values = [x[b_, p, q, ch] for _, _, p, q in cells]
                    y[b_, i, j, ch] = max(values) if reduce == "max" else math.fsum(values) / len(values)
    return y


def dense_ref(x, kernel, bias):
    """y[..., u] = b[u] + sum_d x[..., d] W[d, u], looping over every leading position."""
    lead = x.shape[:-1]
    y = np.zeros(lead + (kernel.shape[1],))
    for idx in np.ndindex(*lead):
        for u in range(kernel.shape[1]):
            y[idx + (u,)] = bias[u] + math.fsum(x[idx + (d,)] * kernel[d, u] for d in range(kernel.shape[0]))
    return y


def softmax_ref(v):
    """Softmax of a 1-D vector with the max subtracted, in Python floats."""
    m = max(v)
    e = [math.exp(t - m) for t in v]
    s = math.fsum(e)
    return np.array([t / s for t in e])


def softmax_along(x, axis):
    y = np.empty_like(x, dtype=np.float64)
    moved_x, moved_y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    for idx in np.ndindex(*moved_x.shape[:-1]):
        moved_y[idx] = softmax_ref(list(moved_x[idx]))
    return y


def lrn_ref(x, size, alpha, beta, k):
    """Caffe ACROSS_CHANNELS: y_c = x_c (k + alpha/size sum_{j=c-(size-1)//2}^{c+size-1-(size-1)//2} x_j^2)^-beta."""
    c = x.shape[-1]
    before = (size - 1) // 2
    y = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(*x.shape[:-1]):
        for ch in range(c):
            lo, hi = max(0, ch - before), min(c, ch - before + size)
            s = k + alpha / size * math.fsum(float(x[idx + (j,)]) ** 2 for j in range(lo, hi))
            y[idx + (ch,)] = x[idx + (ch,)] * s ** (-beta)
    return y


def batchnorm_ref(x, gamma, beta, mean, var, eps):
    """y = gamma (x - mean) / sqrt(var + eps) + beta, channel by channel."""
    y = np.zeros_like(x, dtype=np.float64)
    for ch in range(x.shape[-1]):
        y[..., ch] = gamma[ch] * (x[..., ch] - mean[ch]) / math.sqrt(var[ch] + eps) + beta[ch]
    return y


# ----------------------------------------------------------------------------------------------- helpers
def built(layer, example_shape):
    """Build ``layer`` symbolically for a per-example shape (its weights appear) and return it."""
    shapes = example_shape if isinstance(example_shape, list) else [example_shape]
    tensors = [Input(s) for s in shapes]
    layer(tensors if isinstance(example_shape, list) else tensors[0])
    return layer


def run(layer, x, xb, training=False):
    """Forward ``x`` (NumPy, or a list of arrays) through a built layer on the backend ``xb``; NumPy result."""
    layer.to("gpu" if xb.name == "cupy" else "cpu")
    arg = [xb(a) for a in x] if isinstance(x, list) else xb(x)
    y, _ = layer.forward(arg, training)
    return xb.numpy(y)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tie_free(rng, shape):
    """Distinct values in random order (no two cells equal, so max pooling has a unique winner)."""
    return rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.37 - 20.0


# ----------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("n, k, s, padding, expected", [
    (224, 7, 2, "same", (112, 2, 3)),   # GoogLeNet conv1: 2 before, 3 after
    (112, 3, 2, "same", (56, 0, 1)),    # maxpool 3x3/2 on an even size: the odd cell at the bottom/right
    (8, 7, 2, "same", (4, 2, 3)),
    (7, 3, 2, "same", (4, 1, 1)),
    (5, 3, 1, "same", (5, 1, 1)),
    (4, 2, 1, "same", (4, 0, 1)),
    (5, 5, 3, "same", (2, 1, 2)),
    (6, 1, 3, "same", (2, 0, 0)),
    (3, 7, 1, "same", (3, 3, 3)),       # window larger than the input: 'same' still pads
    (7, 3, 2, "valid", (3, 0, 0)),
    (8, 2, 3, "valid", (3, 0, 0)),
    (7, 7, 1, "valid", (1, 0, 0)),
    (14, 5, 3, "valid", (4, 0, 0)),     # aux head avgpool 5x5/3 on 14x14 -> 4x4
])
def test_output_and_padding_follows_keras(n, k, s, padding, expected):
    assert output_and_padding(n, k, s, padding) == expected


def test_output_and_padding_valid_window_too_large_gives_zero():
    assert output_and_padding(4, 5, 1, "valid")[0] == 0


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_layers_and_kernels_size_windows_alike(padding):
    """The layers' sizes (conv_utils' Keras rules) and the kernels' (window_output_size on the padded axis)
    agree with Keras' formulas, ceil(n / s) for 'same' and floor((n - k) / s) + 1 for 'valid', and with the
    outputs the kernels return, over every n <= 24, k <= 9, s <= 5."""
    for n in range(1, 25):
        for k in range(1, 10):
            for s in range(1, 6):
                out, before, after = output_and_padding(n, k, s, padding)
                keras = math.ceil(n / s) if padding == "same" else max(math.floor((n - k) / s) + 1, 0)
                assert out == keras, (n, k, s, padding)
                if out == 0:
                    continue
                assert window_output_size(n, k, s, before, after) == out, (n, k, s, padding)
                assert (out - 1) * s + k <= n + before + after < out * s + k  # the last window fits, no more
                x = np.zeros((1, n, 2, 1), np.float32)
                pads = (before, after, 0, 0)
                assert numpy_kernels.im2col(x, k, 1, s, 1, pads).shape == (1, out, 2, k, 1, 1)
                assert numpy_kernels.maxpool_forward(x, k, 1, s, 1, pads)[0].shape == (1, out, 2, 1)


def test_same_padding_puts_odd_cell_bottom_right_against_jax():
    """An independent implementation (XLA's 'SAME') agrees on the asymmetric 7x7/2 case on an even size."""
    lax = pytest.importorskip("jax.lax")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 10, 2))
    layer = built(Conv2D(3, 7, strides=2, padding="same", dtype="float64"), (8, 10, 2))
    kernel, bias = layer.get_weights()
    expected = np.asarray(lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))) + bias
    y, _ = layer.forward(x)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)  # JAX computes in float32


# ----------------------------------------------------------------------------------------------- conv
@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_conv2d_matches_loop_reference(case, xb, rng):
    kernel_size, strides, padding, (n, h, w) = case
    c, k = 2, 3
    x = rng.standard_normal((n, h, w, c))
    layer = built(Conv2D(k, kernel_size, strides=strides, padding=padding, dtype="float64"), (h, w, c))
    kernel, _ = layer.get_weights()
    bias = rng.standard_normal(k)
    layer.set_weights([kernel, bias])
    y = run(layer, x, xb)
    expected = conv2d_ref(x, kernel, bias, pair(strides), padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation, fn", [
    ("relu", lambda z: np.maximum(z, 0)),
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
    ("tanh", np.tanh),
    ("softmax", lambda z: softmax_along(z, -1)),
])
def test_conv2d_and_dense_activation_applied_after_bias(activation, fn, rng):
    x = rng.standard_normal((2, 5, 4, 3))
    conv = built(Conv2D(4, (3, 2), padding="same", activation=activation, dtype="float64"), (5, 4, 3))
    conv.set_weights([conv.weights[0], rng.standard_normal(4)])
    z = conv2d_ref(x, conv.weights[0], conv.weights[1], (1, 1), "same")
    np.testing.assert_allclose(conv.forward(x)[0], fn(z), rtol=1e-10, atol=1e-12)
    dense = built(Dense(4, activation=activation, dtype="float64"), (5, 4, 3))
    dense.set_weights([dense.weights[0], rng.standard_normal(4)])
    z = dense_ref(x, *dense.weights)
    np.testing.assert_allclose(dense.forward(x)[0], fn(z), rtol=1e-10, atol=1e-12)


def test_conv2d_without_bias_has_one_weight(rng):
    layer = built(Conv2D(2, 3, use_bias=False, dtype="float64"), (4, 4, 1))
    assert [w.shape for w in layer.weights] == [(3, 3, 1, 2)]
    x = rng.standard_normal((1, 4, 4, 1))
    np.testing.assert_allclose(layer.forward(x)[0], conv2d_ref(x, layer.weights[0], np.zeros(2), (1, 1), "valid"))


# ----------------------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_max_pool_matches_loop_reference(case, xb, rng):
    pool, strides, padding, (n, h, w) = case
    x = tie_free(rng, (n, h, w, 2))
    layer = built(MaxPool2D(pool, strides=strides, padding=padding, dtype="float64"), (h, w, 2))
    np.testing.assert_array_equal(run(layer, x, xb), pool_ref(x, pair(pool), pair(strides), padding, "max"))


@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_avg_pool_divides_by_real_cells(case, xb, rng):
    pool, strides, padding, (n, h, w) = case
    x = rng.standard_normal((n, h, w, 2))
    layer = built(AvgPool2D(pool, strides=strides, padding=padding, dtype="float64"), (h, w, 2))
    np.testing.assert_allclose(run(layer, x, xb), pool_ref(x, pair(pool), pair(strides), padding, "mean"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool, strides, size", [(3, 2, (6, 6)), (3, 1, (5, 4)), ((2, 5), (1, 2), (4, 7)),
                                                 (7, 2, (8, 8))])
def test_max_pool_same_padding_on_all_negative_input_never_returns_zero(pool, strides, size, xb, rng):
    x = -1.0 - rng.random((2,) + size + (3,))
    layer = built(MaxPool2D(pool, strides=strides, padding="same", dtype="float64"), size + (3,))
    y = run(layer, x, xb)
    assert np.all(y < -1.0 + 1e-12)
    np.testing.assert_array_equal(y, pool_ref(x, pair(pool), pair(strides), "same", "max"))


def maxpool_backward_ref(x, gy, pool, strides, padding):
    """Each output gradient goes to the first maximum of its window in row-major order (the tie rule)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = pool, strides
    ho, top = keras_axis(h, kh, sh, padding)
    wo, left = keras_axis(w, kw, sw, padding)
    gx = np.zeros_like(x)
    for b_ in range(n):
        for i in range(ho):
            for j in range(wo):
                cells = window_cells(h, w, i, j, kh, kw, sh, sw, top, left)
                for ch in range(c):
                    best = max(x[b_, p, q, ch] for _, _, p, q in cells)
                    p, q = next((p, q) for _, _, p, q in cells if x[b_, p, q, ch] == best)
                    gx[b_, p, q, ch] += gy[b_, i, j, ch]
    return gx


@pytest.mark.parametrize("pool, strides, padding", [(2, 2, "valid"), (3, 1, "same"), (3, 2, "same"),
                                                    ((2, 3), (1, 2), "same"), (3, (2, 1), "valid")])
def test_max_pool_ties_go_to_the_first_maximum_in_row_major_order(pool, strides, padding, xb, rng):
    x = rng.integers(0, 3, (2, 6, 7, 2)).astype(np.float64)  # three values: ties in nearly every window
    x[0, :, :, 0] = 1.0                                        # and one channel that is all ties
    layer = built(MaxPool2D(pool, strides=strides, padding=padding, dtype="float64"), (6, 7, 2))
    layer.to("gpu" if xb.name == "cupy" else "cpu")
    y, cache = layer.forward(xb(x))
    gy = rng.standard_normal(y.shape)
    gx = xb.numpy(layer.backward(xb(gy), cache)[0])
    np.testing.assert_allclose(gx, maxpool_backward_ref(x, gy, pair(pool), pair(strides), padding), rtol=1e-12)


def test_max_pool_tie_rule_on_one_window():
    x = np.array([[0.0, 2.0], [2.0, 1.0]]).reshape(1, 2, 2, 1)
    layer = built(MaxPool2D(2, dtype="float64"), (2, 2, 1))
    y, cache = layer.forward(x)
    gx = layer.backward(np.full((1, 1, 1, 1), 5.0), cache)[0]
    np.testing.assert_array_equal(gx.reshape(2, 2), [[0.0, 5.0], [0.0, 0.0]])


def test_max_pool_same_padding_gradient_never_reaches_the_padding(rng):
    """On an all-negative input every gradient lands on a real cell: nothing is lost to the −inf border."""
    x = -1.0 - rng.random((1, 4, 5, 2))
    layer = built(MaxPool2D(3, strides=2, padding="same", dtype="float64"), (4, 5, 2))
    y, cache = layer.forward(x)
    gy = rng.random(y.shape)
    gx = layer.backward(gy, cache)[0]
    np.testing.assert_allclose(gx.sum(axis=(1, 2)), gy.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(gx, maxpool_backward_ref(x, gy, (3, 3), (2, 2), "same"), rtol=1e-12)


def test_max_pool_default_strides_equal_pool_size(rng):
    x = tie_free(rng, (1, 6, 6, 1))
    layer = built(MaxPool2D(3, dtype="float64"), (6, 6, 1))
    np.testing.assert_array_equal(layer.forward(x)[0], pool_ref(x, (3, 3), (3, 3), "valid", "max"))


def test_avg_pool_same_corner_divides_by_four_not_nine():
    """A 3x3/1 'same' window at a corner covers 4 real cells: their mean, not their sum / 9."""
    x = np.ones((1, 3, 3, 1))
    layer = built(AvgPool2D(3, strides=1, padding="same", dtype="float64"), (3, 3, 1))
    np.testing.assert_array_equal(layer.forward(x)[0], np.ones((1, 3, 3, 1)))


@pytest.mark.parametrize("shape", [(1, 3, 5, 2), (3, 4, 4, 1)])
def test_global_average_pooling(shape, xb, rng):
    x = rng.standard_normal(shape)
    layer = built(GlobalAveragePooling2D(dtype="float64"), shape[1:])
    expected = np.array([[math.fsum(x[n, :, :, c].ravel()) / (shape[1] * shape[2]) for c in range(shape[3])]
                         for n in range(shape[0])])
    np.testing.assert_allclose(run(layer, x, xb), expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------- dense, flatten
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (2, 3, 2, 4), (1, 2, 3, 2)])
def test_dense_contracts_last_axis_of_any_rank(shape, rng):
    x = rng.standard_normal(shape)
    layer = built(Dense(3, dtype="float64"), shape[1:])
    layer.set_weights([layer.weights[0], rng.standard_normal(3)])
    y, _ = layer.forward(x)
    assert y.shape == shape[:-1] + (3,)
    np.testing.assert_allclose(y, dense_ref(x, *layer.weights), rtol=1e-12, atol=1e-12)


def test_flatten_is_height_width_channel_order(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    expected = np.array([[x[n, h, w, c] for h in range(3) for w in range(4) for c in range(5)] for n in range(2)])
    layer = built(Flatten(dtype="float64"), (3, 4, 5))
    np.testing.assert_array_equal(layer.forward(x)[0], expected)


# ----------------------------------------------------------------------------------------------- activations
@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((2, 3, 3, 5), -1), ((2, 3, 4, 2), 1), ((2, 3, 4, 2), 2)])
def test_softmax_matches_reference(shape, axis, rng):
    x = rng.standard_normal(shape) * 3
    layer = built(Softmax(axis=axis, dtype="float64"), shape[1:])
    np.testing.assert_allclose(layer.forward(x)[0], softmax_along(x, axis), rtol=1e-12, atol=1e-15)


def test_softmax_of_huge_logits_is_finite_and_exact():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
    layer = built(Softmax(dtype="float64"), (3,))
    y, cache = layer.forward(x)
    np.testing.assert_array_equal(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    gy = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [4.0, -2.0, 7.0]])
    gx = layer.backward(gy, cache)[0]
    # gx = y (gy − Σ y gy): zero for a one-hot row, exact for the others
    expected = [[0.0, 0.0, 0.0], [(0.5 - 0.5) / 3, (-1.0 - 0.5) / 3, (2.0 - 0.5) / 3], [1.5, -1.5, 0.0]]
    np.testing.assert_allclose(gx, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layer_fn, fn", [
    (lambda: ReLU(dtype="float64"), lambda v: v if v > 0 else 0.0),
    (lambda: Activation("relu", dtype="float64"), lambda v: v if v > 0 else 0.0),
    (lambda: Activation("sigmoid", dtype="float64"), lambda v: 1 / (1 + math.exp(-v))),
    (lambda: Activation("tanh", dtype="float64"), math.tanh),
    (lambda: Activation("linear", dtype="float64"), lambda v: v),
    (lambda: Activation(None, dtype="float64"), lambda v: v),
])
def test_elementwise_activations(layer_fn, fn, rng):
    x = rng.standard_normal((2, 3, 4))
    layer = built(layer_fn(), (3, 4))
    expected = np.vectorize(fn, otypes=[np.float64])(x)
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("size, alpha, beta, k", [(5, 1e-4, 0.75, 1.0), (5, 0.8, 0.75, 1.0), (3, 0.5, 0.6, 2.0),
                                                  (4, 0.7, 0.75, 1.0), (1, 0.3, 0.5, 1.5), (9, 0.9, 0.75, 1.0)])
def test_lrn_matches_caffe_formula(size, alpha, beta, k, xb, rng):
    x = rng.standard_normal((2, 2, 3, 7)) * 2
    layer = built(LocalResponseNormalization(size, alpha, beta, k, dtype="float64"), (2, 3, 7))
    np.testing.assert_allclose(run(layer, x, xb), lrn_ref(x, size, alpha, beta, k), rtol=1e-12, atol=1e-14)


def test_lrn_defaults_are_the_papers():
    layer = LocalResponseNormalization()
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 5, 3), (1, 2, 2, 2)])
def test_batchnorm_training_uses_batch_statistics_and_keras_moving_average(shape, xb, rng):
    c = shape[-1]
    x = rng.standard_normal(shape) * 2 + 1
    layer = built(BatchNormalization(momentum=0.9, epsilon=1e-3, dtype="float64"), shape[1:])
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    moving_mean, moving_var = rng.standard_normal(c), rng.random(c) + 0.5
    layer.set_weights([gamma, beta, moving_mean, moving_var])
    flat = x.reshape(-1, c)
    mean = np.array([math.fsum(flat[:, j]) / len(flat) for j in range(c)])
    var = np.array([math.fsum((flat[:, j] - mean[j]) ** 2) / len(flat) for j in range(c)])  # biased, as Keras
    y = run(layer, x, xb, training=True)
    np.testing.assert_allclose(y, batchnorm_ref(x, gamma, beta, mean, var, 1e-3), rtol=1e-10, atol=1e-12)
    new = layer.get_weights()
    np.testing.assert_allclose(new[2], 0.9 * moving_mean + 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(new[3], 0.9 * moving_var + 0.1 * var, rtol=1e-12)
    np.testing.assert_array_equal(new[0], gamma)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 2)])
def test_batchnorm_inference_uses_moving_statistics(shape, xb, rng):
    c = shape[-1]
    x = rng.standard_normal(shape)
    layer = built(BatchNormalization(dtype="float64"), shape[1:])
    weights = [rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c), rng.random(c) + 0.1]
    layer.set_weights(weights)
    y = run(layer, x, xb, training=False)
    np.testing.assert_allclose(y, batchnorm_ref(x, *weights, 1e-3), rtol=1e-12, atol=1e-12)
    for old, new in zip(weights, layer.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_batchnorm_on_channel_axis_1(rng):
    x = rng.standard_normal((3, 2, 4, 5))
    layer = built(BatchNormalization(axis=1, dtype="float64"), (2, 4, 5))
    assert [w.shape for w in layer.weights] == [(2,)] * 4
    weights = [rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal(2), rng.random(2) + 0.1]
    layer.set_weights(weights)
    expected = np.moveaxis(batchnorm_ref(np.moveaxis(x, 1, -1), *weights, 1e-3), -1, 1)
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- dropout, concat
def test_dropout_is_identity_at_inference(rng):
    x = rng.standard_normal((4, 5))
    layer = built(Dropout(0.5, dtype="float64"), (5,))
    np.testing.assert_array_equal(layer.forward(x, training=False)[0], x)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.7])
def test_dropout_training_zeroes_or_scales(rate, rng):
    x = rng.random((200, 50)) + 1.0
    layer = built(Dropout(rate, seed=3, dtype="float64"), (50,))
    y = layer.forward(x, training=True)[0]
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-12)
    assert abs(1 - kept.mean() - rate) < 0.02  # 10,000 draws: 4+ standard deviations of slack


def test_dropout_seed_makes_masks_reproducible_and_calls_differ():
    x = np.ones((10, 10))
    a = built(Dropout(0.5, seed=7, dtype="float64"), (10,))
    b = built(Dropout(0.5, seed=7, dtype="float64"), (10,))
    first = a.forward(x, training=True)[0]
    np.testing.assert_array_equal(first, b.forward(x, training=True)[0])
    assert not np.array_equal(first, a.forward(x, training=True)[0])


@pytest.mark.parametrize("shapes, axis", [([(2, 3, 3, 1), (2, 3, 3, 4), (2, 3, 3, 2)], -1),
                                          ([(2, 2, 3, 2), (2, 1, 3, 2)], 1), ([(3, 2), (3, 5)], -1)])
def test_concatenate_forward(shapes, axis, xb, rng):
    xs = [rng.standard_normal(s) for s in shapes]
    layer = built(Concatenate(axis=axis, dtype="float64"), [s[1:] for s in shapes])
    y = run(layer, xs, xb)
    ax = axis % len(shapes[0])
    offset = 0
    for x in xs:
        index = [slice(None)] * x.ndim
        index[ax] = slice(offset, offset + x.shape[ax])
        np.testing.assert_array_equal(y[tuple(index)], x)
        offset += x.shape[ax]
    assert y.shape[ax] == offset


def test_layers_are_exported_at_the_top_level():
    assert tinynet.Conv2D is Conv2D and tinynet.layers.MaxPooling2D is MaxPool2D
    assert tinynet.layers.AveragePooling2D is AvgPool2D
