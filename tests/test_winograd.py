"""Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions (:mod:`tinynet.layers.conv_winograd`).

* the transforms: Numba equals the NumPy reference bit for bit; the gradient transform is the adjoint of the
  output transform and the kernel's gradient the adjoint of the kernel's transform;
* the convolution against a loop convolution written here (float64, 1e-12), at sizes that are not multiples
  of the 4×4 tile, 'same' and 'valid', batch 1, non-square;
* Conv2D with Winograd equals Conv2D through im2col (forward, every gradient; float64 to 1e-12) and passes
  the gradient checker; in float32 the two agree to about 1e-5 of the output's scale;
* which layers take the path, and the settings.
"""
import numpy as np
import pytest

import tinynet
from tinynet import Model, backend, gradcheck, kernels
from tinynet.kernels import numpy_kernels
from tinynet.kernels.common import WINOGRAD_AT, WINOGRAD_BT, WINOGRAD_G
from tinynet.layers import Conv2D, Input
from tinynet.layers import conv_winograd
from tinynet.layers.conv import ConvCache

CPU_BACKENDS = ["numpy", "numba"] if backend.numba_available() else ["numpy"]

# (input shape (N, H, W, C), pads): outputs of 4×4 exactly, 5×7 (partial tiles), 1 row of tiles, 'valid'
CASES = [((2, 4, 4, 3), (1, 1, 1, 1)), ((1, 5, 7, 2), (1, 1, 1, 1)), ((3, 6, 9, 4), (0, 0, 0, 0)),
         ((1, 13, 6, 5), (1, 1, 1, 1)), ((2, 8, 3, 1), (2, 2, 1, 2))]


def loop_convolution(x, kernel, pads):
    """y[n, i, j, k] = Σ_{a, b, c} xpad[n, i + a, j + b, c] · kernel[a, b, c, k], with Python loops over the
    output cells: the definition, not the engine."""
    top, bottom, left, right = pads
    xpad = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, hp, wp, _ = xpad.shape
    ho, wo = hp - 2, wp - 2
    y = np.zeros((n, ho, wo, kernel.shape[3]))
    for i in range(ho):
        for j in range(wo):
            window = xpad[:, i:i + 3, j:j + 3, :]
            y[:, i, j, :] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return y


def test_the_matrices_are_lavins_f43():
    """A^T [(G g G^T) ⊙ (B^T d B)] A is the 1-D correlation of a 6-vector with a 3-vector, for any values."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    expected = [d[i:i + 3] @ g for i in range(4)]
    np.testing.assert_allclose(WINOGRAD_AT @ ((WINOGRAD_G @ g) * (WINOGRAD_BT @ d)), expected, rtol=1e-13)


@pytest.mark.parametrize("x_shape, pads", CASES)
def test_winograd_convolution_equals_a_loop_convolution(x_shape, pads):
    tinynet.set_floatx("float64")
    rng = np.random.default_rng(1)
    x, kernel = rng.standard_normal(x_shape), rng.standard_normal((3, 3, x_shape[3], 6))
    expected = loop_convolution(x, kernel, pads)
    for name in CPU_BACKENDS:
        with tinynet.cpu_kernels(name):
            z, tiles = conv_winograd.convolve(x, kernel, pads, expected.shape)
        assert z.shape == expected.shape and z.flags.c_contiguous
        np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="Numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, pads", CASES)
def test_numba_transforms_equal_the_reference_bit_for_bit(x_shape, pads, dtype):
    numba_kernels = kernels.backend_module("numba")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(dtype)
    v = numpy_kernels.winograd_input(x, pads)
    np.testing.assert_array_equal(numba_kernels.winograd_input(x, pads), v)
    ho, wo = x_shape[1] + pads[0] + pads[1] - 2, x_shape[2] + pads[2] + pads[3] - 2
    m = rng.standard_normal((36, v.shape[1], 5)).astype(dtype)
    out_shape = (x_shape[0], ho, wo, 5)
    y = numba_kernels.winograd_output(m, out_shape)
    assert y.dtype == dtype and y.shape == out_shape
    np.testing.assert_array_equal(y, numpy_kernels.winograd_output(m, out_shape))
    gy = rng.standard_normal(out_shape).astype(dtype)
    gm = numba_kernels.winograd_gradient(gy)
    assert gm.dtype == dtype and gm.shape == m.shape
    np.testing.assert_array_equal(gm, numpy_kernels.winograd_gradient(gy))


@pytest.mark.parametrize("x_shape, pads", CASES)
def test_the_backward_transforms_are_the_adjoints(x_shape, pads):
    """<output(m), gy> = <m, gradient(gy)> (cells outside the output included) and
    <transform(g), gu> = <g, kernel_gradient(gu)>: the backward pass differentiates the forward exactly."""
    rng = np.random.default_rng(3)
    ho, wo = x_shape[1] + pads[0] + pads[1] - 2, x_shape[2] + pads[2] + pads[3] - 2
    tiles = -(-ho // 4) * -(-wo // 4) * x_shape[0]
    m, gy = rng.standard_normal((36, tiles, 3)), rng.standard_normal((x_shape[0], ho, wo, 3))
    lhs = np.sum(numpy_kernels.winograd_output(m, gy.shape) * gy)
    np.testing.assert_allclose(lhs, np.sum(m * numpy_kernels.winograd_gradient(gy)), rtol=1e-12)
    g, gu = rng.standard_normal((3, 3, 4, 5)), rng.standard_normal((36, 4, 5))
    np.testing.assert_allclose(np.sum(conv_winograd.kernel_transform(g) * gu),
                               np.sum(g * conv_winograd.kernel_gradient(gu)), rtol=1e-12)


@pytest.fixture
def any_size(monkeypatch):
    """Winograd for every 3×3 stride-1 convolution, whatever its size (the tests' shapes are small)."""
    monkeypatch.setattr(conv_winograd, "MIN_TILES", 1)
    monkeypatch.setattr(conv_winograd, "MIN_WORK", 1)


def _conv_model(x_shape, filters, padding, activation, use_bias):
    x = Input(x_shape[1:])
    return Model(x, Conv2D(filters, 3, padding=padding, activation=activation, use_bias=use_bias, name="conv")(x))


def _conv_cache(model):
    """The ConvCache of the model's one convolution, from the tape the last forward recorded."""
    return next(c.data for _, c in model._tape if isinstance(getattr(c, "data", None), ConvCache))


def _run(model, x, upstream):
    y = model.forward(x, training=True)
    cache = _conv_cache(model)
    gx = model.backward(upstream)
    return cache.winograd, tinynet.to_numpy(y), tinynet.to_numpy(gx), [tinynet.to_numpy(g) for g in
                                                                        model.layers[-1].grads]


def _both_paths(model, x, upstream):
    """``(whether the Winograd run took that path, its [y, ∂x, ∂kernel, ∂bias...], im2col's)``."""
    with tinynet.winograd(True):
        used, y, gx, grads = _run(model, x, upstream)
    with tinynet.winograd(False):
        plain_used, py, pgx, pgrads = _run(model, x, upstream)
    assert not plain_used
    return used, [y, gx, *grads], [py, pgx, *pgrads]


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
@pytest.mark.parametrize("x_shape, padding, activation, use_bias",
                         [((2, 9, 7, 8), "same", "relu", True), ((1, 6, 11, 9), "valid", None, True),
                          ((3, 4, 4, 8), "same", "sigmoid", False), ((1, 12, 5, 10), "same", "relu", False)])
def test_conv2d_with_winograd_equals_conv2d_with_im2col(backend_name, x_shape, padding, activation, use_bias,
                                                        any_size):
    tinynet.set_floatx("float64")
    backend.set_cpu_kernels(backend_name)
    model = _conv_model(x_shape, 8, padding, activation, use_bias)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    upstream = rng.standard_normal((x_shape[0],) + model.outputs[0].example_shape)
    used, fast, plain = _both_paths(model, x, upstream)
    assert used, "the layer should have taken the Winograd path"
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("keep", [True, False])
def test_winograd_gradients_pass_the_gradient_checker(keep, any_size):
    """Float64, a random upstream gradient, the input's and every parameter's gradient; the input tiles kept
    for backward or transformed again."""
    tinynet.set_floatx("float64")
    tinynet.set_keep_im2col(keep)
    model = _conv_model((2, 5, 6, 8), 8, "same", "linear", True)
    gradcheck.check_model(model, np.random.default_rng(5).standard_normal((2, 5, 6, 8)), training=True)


def test_float32_agrees_with_im2col_to_about_1e5(any_size):
    """A GoogLeNet-sized layer (3a's 3×3: 96 → 128 channels, 28×28)."""
    rng = np.random.default_rng(6)
    model = _conv_model((2, 28, 28, 96), 128, "same", None, True)
    x = rng.standard_normal((2, 28, 28, 96)).astype(np.float32)
    upstream = rng.standard_normal((2, 28, 28, 128)).astype(np.float32)
    used, fast, plain = _both_paths(model, x, upstream)
    assert used and fast[0].dtype == np.float32
    for a, b in zip(fast, plain):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.parametrize("kernel_size, strides, channels, size, expected",
                         [(3, 1, 8, 8, True), (3, 2, 8, 8, False), (5, 1, 8, 8, False), ((3, 1), 1, 8, 8, False)])
def test_which_convolutions_take_the_winograd_path(kernel_size, strides, channels, size, expected, any_size):
    x = Input((size, size, channels))
    layer = Conv2D(8, kernel_size, strides=strides, padding="same")
    model = Model(x, layer(x))
    model.forward(np.ones((1, size, size, channels), np.float32), training=True)
    assert _conv_cache(model).winograd is expected
    with tinynet.fast_paths(False):  # every fast path off turns Winograd off too
        model.forward(np.ones((1, size, size, channels), np.float32), training=True)
        assert not _conv_cache(model).winograd


@pytest.mark.parametrize("batch, size, channels, filters, expected",
                         [(8, 56, 64, 192, True),     # GoogLeNet's conv2 at batch 8: 1568 tiles
                          (8, 14, 112, 224, True),    # 4b: 128 tiles, T·C·K = 3.2 M
                          (8, 7, 160, 320, False),    # 5a: 32 tiles
                          (1, 28, 96, 128, False),    # 3a at batch 1: 49 tiles
                          (32, 16, 16, 48, False),    # the small GoogLeNet's conv2: T·C·K = 0.4 M
                          (32, 8, 32, 48, False)])    # its 3b: 128 tiles, T·C·K = 0.2 M
def test_the_size_rule(batch, size, channels, filters, expected):
    """Winograd where it measured faster than im2col (see the module's docstring), im2col elsewhere."""
    layer = Conv2D(filters, 3, padding="same")
    layer.build((size, size, channels))
    x = np.empty((batch, size, size, channels), np.float32)
    assert conv_winograd.applies(layer, x, (size, size), (1, 1, 1, 1)) is expected


def test_winograd_settings(monkeypatch):
    with pytest.raises(TypeError, match="expected True or False"):
        tinynet.set_winograd("yes")
    assert tinynet.winograd_enabled()
    with tinynet.winograd(False):
        assert not tinynet.winograd_enabled()
    assert tinynet.winograd_enabled()
    monkeypatch.setenv("TINYNET_WINOGRAD", "0")
    assert backend._env_flag("TINYNET_WINOGRAD", True) is False


def test_the_cpu_only_kernels_refuse_a_gpu_array(monkeypatch):
    monkeypatch.setattr(backend, "is_gpu_array", lambda a: True)
    with pytest.raises(TypeError, match="winograd_input runs on the CPU only"):
        kernels.winograd_input(np.zeros((1, 4, 4, 1), np.float32), (1, 1, 1, 1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_non_finite_and_huge_values_take_im2col(bad, any_size):
    """A NaN, an infinity or a value whose square overflows, in the input (forward) or in the upstream
    gradient (backward), sends the call through im2col: the same non-finite cells as the plain path, not a
    whole 4×4 tile of them."""
    model = _conv_model((2, 8, 8, 8), 8, "same", None, True)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    upstream = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    assert _both_paths(model, x, upstream)[0]
    x_bad = x.copy()
    x_bad[0, 2, 5, 3] = bad
    # inf · 0 in the products is NaN on purpose; NumPy warns of it only when BLAS's calling thread met it
    with np.errstate(invalid="ignore", over="ignore"):
        used, fast, plain = _both_paths(model, x_bad, upstream)
    assert not used
    for a, b in zip(fast, plain):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    upstream_bad = upstream.copy()
    upstream_bad[1, 6, 1, 2] = bad
    with np.errstate(invalid="ignore", over="ignore"):
        used, fast, plain = _both_paths(model, x, upstream_bad)
    assert used  # the forward took Winograd; its backward, given a bad gradient, took im2col
    for a, b in zip(fast[1:], plain[1:]):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        np.testing.assert_allclose(np.where(np.isfinite(b), a, 0), np.where(np.isfinite(b), b, 0), rtol=1e-4,
                                   atol=1e-4 * np.abs(b[np.isfinite(b)]).max())


@pytest.mark.parametrize("where", ["kernel", "input", "upstream"])
def test_finite_values_whose_products_could_overflow_take_im2col(where, any_size):
    """Finite float32 values large enough that a transform could overflow where im2col does not (a kernel of
    scale 3e35, which set_weights accepts; inputs or gradients of scale 1e18 with such a kernel): im2col,
    whose outputs and gradients stay what the plain path gives (finite here)."""
    model = _conv_model((2, 8, 8, 8), 8, "same", None, True)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32) * 1e-3
    upstream = rng.standard_normal((2, 8, 8, 8)).astype(np.float32) * 1e-3
    kernel, bias = model.get_weights()
    scale = {"kernel": 3e35, "input": 1e24, "upstream": 1e24}[where]
    if where == "kernel":
        model.set_weights([kernel / np.abs(kernel).max() * scale, bias])
    else:
        model.set_weights([kernel * 1e6, bias])
        (x if where == "input" else upstream)[...] *= scale
    used, fast, plain = _both_paths(model, x, upstream)
    assert used == (where == "upstream")  # the forward went Winograd only when its own products fit
    for a, b in zip(fast, plain):
        assert np.isfinite(b).all()
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_products_fit():
    assert conv_winograd.products_fit(1.0, 1.0, np.float32)
    assert not conv_winograd.products_fit(1e17, 1e17, np.float32)  # 1e34 · 1e6 > 3.4e38
    assert conv_winograd.products_fit(1e17, 1e17, np.float64)
    assert not conv_winograd.products_fit(np.nan, 1.0, np.float64)
    assert not conv_winograd.products_fit(np.inf, 0.0, np.float64)  # inf · 0 is nan


def test_moderate():
    assert conv_winograd.moderate(np.ones((3, 4), np.float32))
    for bad in (np.nan, np.inf, -np.inf, 3e19):
        a = np.ones((3, 4), np.float32)
        a[1, 2] = bad
        assert not conv_winograd.moderate(a)
    assert conv_winograd.moderate(np.full((3, 4), 3e19))  # float64: its square is finite


def test_a_network_trains_the_same_with_winograd(any_size):
    """The small GoogLeNet (every 3×3 stride-1 convolution on the Winograd path, conv1's single channel
    included), two SGD steps in float64: the same weights as through im2col."""
    from tinynet import losses
    from inception import googlenet

    tinynet.set_floatx("float64")
    rng = np.random.default_rng(8)
    x, y = rng.random((4, 32, 32, 1)), np.arange(4) % 3
    results = []
    for use in (True, False):
        tinynet.set_winograd(use)
        tinynet.set_seed(0)
        model = googlenet(input_shape=(32, 32, 1), num_classes=3, variant="small")
        opt = tinynet.optimizers.SGD(learning_rate=0.05, momentum=0.9).attach(model)
        for _ in range(2):
            _, _, grads = losses.weighted_loss(model.forward(x, training=True), y, [0.3, 0.3, 1.0])
            model.backward(grads, input_grads=False)
            opt.step()
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- a batch in chunks of images
@pytest.fixture
def small_chunks(monkeypatch, any_size):
    """A chunk limit that the tests' small shapes pass: every batch of more than a few images runs in chunks."""
    monkeypatch.setattr(conv_winograd, "CHUNK_BYTES", 36 * 6 * 8 * 8 * 2)


@pytest.mark.parametrize("n, h, w, c, k, expected", [(8, 8, 8, 8, 8, 8), (8, 8, 8, 8, 200, 1),
                                                     (3, 4, 4, 2, 2, 3), (5, 9, 9, 8, 8, 3), (0, 4, 4, 2, 2, 1)])
def test_images_per_chunk(monkeypatch, n, h, w, c, k, expected):
    """All the images when the larger of V (36, T, C) and M (36, T, K) fits the limit; else as many as fit
    it; never fewer than one (a single image over the limit runs alone)."""
    monkeypatch.setattr(conv_winograd, "CHUNK_BYTES", 36 * 4 * 8 * 8 * 8)  # 8 images of 4 tiles, 8 channels
    assert conv_winograd.images_per_chunk((n, h, w, c), (n, h, w, k), 8) == expected


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
@pytest.mark.parametrize("x_shape, pads", [((7, 9, 7, 6), (1, 1, 1, 1)), ((5, 6, 9, 8), (0, 0, 0, 0)),
                                           ((4, 8, 3, 5), (2, 2, 1, 2)), ((1, 13, 6, 5), (1, 1, 1, 1))])
def test_chunked_convolution_equals_a_loop_convolution(backend_name, x_shape, pads, small_chunks):
    """Chunks that do not divide the batch, asymmetric pads, batch 1; no tiles come back from a chunked batch."""
    tinynet.set_floatx("float64")
    rng = np.random.default_rng(11)
    x, kernel = rng.standard_normal(x_shape), rng.standard_normal((3, 3, x_shape[3], 8))
    expected = loop_convolution(x, kernel, pads)
    step = conv_winograd.images_per_chunk(x.shape, expected.shape, 8)
    with tinynet.cpu_kernels(backend_name):
        z, tiles = conv_winograd.convolve(x, kernel, pads, expected.shape)
    assert (tiles is None) == (step < x_shape[0])
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
@pytest.mark.parametrize("x_shape, padding", [((7, 9, 7, 8), "same"), ((5, 6, 11, 9), "valid")])
def test_chunked_winograd_equals_im2col_and_the_whole_batch(monkeypatch, backend_name, x_shape, padding, any_size):
    """Conv2D forward and every gradient in float64: chunked Winograd against im2col (1e-12) and against one
    pass over the whole batch (1e-12: only the order of the kernel gradient's sum over the chunks differs)."""
    tinynet.set_floatx("float64")
    backend.set_cpu_kernels(backend_name)
    model = _conv_model(x_shape, 8, padding, "relu", True)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape)
    upstream = rng.standard_normal((x_shape[0],) + model.outputs[0].example_shape)
    whole = _run(model, x, upstream)
    monkeypatch.setattr(conv_winograd, "CHUNK_BYTES", 36 * 6 * 8 * 8 * 2)
    assert conv_winograd.images_per_chunk(x_shape, (x_shape[0],) + model.outputs[0].example_shape, 8) < x_shape[0]
    used, fast, plain = _both_paths(model, x, upstream)
    assert used and whole[0]
    for a, b, c in zip(fast, plain, [whole[1], whole[2], *whole[3]]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12 * np.abs(c).max())


def test_chunked_winograd_passes_the_gradient_checker(small_chunks):
    tinynet.set_floatx("float64")
    model = _conv_model((6, 5, 6, 8), 8, "same", "linear", True)
    gradcheck.check_model(model, np.random.default_rng(13).standard_normal((6, 5, 6, 8)), training=True)


def test_no_pass_allocates_more_than_the_chunk_limit(monkeypatch, small_chunks):
    """Every product array (M forward, ∂U's parts backward, the input gradient's M) stays within the limit
    when one image fits it, and the layer keeps no tiles."""
    from tinynet.layers import conv_winograd as module
    sizes = []
    real = module.batched_matmul

    def spy(a, b):
        out = real(a, b)
        sizes.append(max(a.nbytes, out.nbytes))
        return out
    monkeypatch.setattr(module, "batched_matmul", spy)
    tinynet.set_floatx("float64")
    model = _conv_model((7, 8, 8, 8), 8, "same", "relu", True)
    rng = np.random.default_rng(14)
    model.forward(rng.standard_normal((7, 8, 8, 8)), training=True)
    assert _conv_cache(model).winograd and _conv_cache(model).tiles is None
    model.backward(rng.standard_normal((7, 8, 8, 8)))
    assert len(sizes) == 3 * 3  # chunks of 3, 3 and 1 images: forward, the kernel's and the input's gradient
    assert max(sizes) <= conv_winograd.CHUNK_BYTES


# ------------------------------------------------------------------------------------ the dynamic-range guard
def test_an_extreme_dynamic_range_takes_im2col(any_size):
    """A transform mixes a 6×6 tile into all 16 of its outputs, so in float32 a pixel of 1e5 among values below 1
    left errors of 1-3 % on small outputs of its tile whose windows do not read it (im2col: 1e-7). Such an
    input now takes im2col; a pixel 100 times the others still takes Winograd."""
    rng = np.random.default_rng(20)
    model = _conv_model((1, 8, 8, 4), 4, "same", None, False)
    kernel = np.asarray(model.get_weights()[0], np.float64)
    far = np.ones((8, 8), bool)
    far[4:7, 4:7] = False                      # outputs whose 3×3 window does not hold the pixel (5, 5)
    for big, expected in ((1e5, False), (100.0, True)):
        x = rng.random((1, 8, 8, 4)).astype(np.float32)
        x[0, 5, 5, :] = big
        y = model.forward(x, training=True)
        assert _conv_cache(model).winograd is expected
        exact = loop_convolution(x.astype(np.float64), kernel, (1, 1, 1, 1))[0][far]
        error = np.abs(np.asarray(y, np.float64)[0][far] - exact) / np.abs(exact).max()
        assert error.max() < (1e-6 if not expected else 1e-3)


def test_typical_and_range_fits():
    rng = np.random.default_rng(21)
    normal = rng.standard_normal((8, 28, 28, 96)).astype(np.float32)
    assert 1.5 < conv_winograd.typical(normal) < 2.5                      # 95th percentile of |N(0, 1)|: 1.96
    assert conv_winograd.range_fits(normal) and conv_winograd.range_fits(np.maximum(normal, 0))
    spiked = normal.copy()
    spiked.reshape(-1)[::1000] = 1e4                                       # 0.1 % outliers: typical unmoved
    assert 1.5 < conv_winograd.typical(spiked) < 2.5 and not conv_winograd.range_fits(spiked)
    assert conv_winograd.range_fits(np.zeros((2, 4, 4, 3), np.float32))
    assert not conv_winograd.range_fits(np.full((2, 4, 4, 3), np.nan, np.float32))
    one_dead = np.ones((1, 256, 256, 8), np.float32)
    one_dead[..., 0] = 0                      # a stride that is a multiple of 8 would read only channel 0
    assert conv_winograd.typical(one_dead) == 1 and conv_winograd.range_fits(one_dead)


@pytest.mark.parametrize("shape", [(8, 56, 56, 64), (8, 28, 28, 96), (8, 28, 28, 128), (8, 14, 14, 96),
                                   (8, 14, 14, 160)])
def test_googlenets_activations_stay_on_the_winograd_path(shape):
    """The inputs of GoogLeNet's 3×3 layers at batch 8 (ReLU outputs; measured on the paper GoogLeNet with
    random normal images: largest value 2-3 times the typical one) pass the guard by a wide margin."""
    x = np.maximum(np.random.default_rng(22).standard_normal(shape).astype(np.float32), 0)
    assert np.abs(x).max() < 0.01 * conv_winograd.DYNAMIC_RANGE * conv_winograd.typical(x)
    assert conv_winograd.range_fits(x)
