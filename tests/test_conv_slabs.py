"""Large k×k convolutions through im2col in slabs of rows (:mod:`tinynet.layers.conv_slabs`).

* the slabs cover every output row of every image once, and each input slab with its pads gives exactly its
  output rows (row blocks of one image and groups of whole images, strides, 'valid' rows no window reads);
* Conv2D through slabs equals a loop convolution written here and its own plain path (forward, the kernel's,
  the bias' and the input's gradients; float64 to 1e-12): non-square kernels and strides, asymmetric 'same'
  padding, odd sizes, batch 1, several activations, no bias, no input gradient;
* the whole im2col matrix is never built (im2col is called on slabs only), and which settings take the path.
"""
import numpy as np
import pytest

import tinynet
from tinynet import Model, backend, kernels
from tinynet.kernels.common import window_output_hw
from tinynet.layers import Conv2D, Input, conv_slabs
from tinynet.layers.conv_utils import output_and_padding


def loop_convolution(x, kernel, strides, pads):
    """z[n, i, j, k] = Σ_{a, b, c} xpad[n, i·sh + a, j·sw + b, c] · kernel[a, b, c, k] with Python loops over
    the output cells: the definition, not the engine."""
    kh, kw = kernel.shape[:2]
    top, bottom, left, right = pads
    xpad = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    ho = (xpad.shape[1] - kh) // strides[0] + 1
    wo = (xpad.shape[2] - kw) // strides[1] + 1
    z = np.zeros((x.shape[0], ho, wo, kernel.shape[3]))
    for i in range(ho):
        for j in range(wo):
            window = xpad[:, i * strides[0]:i * strides[0] + kh, j * strides[1]:j * strides[1] + kw, :]
            z[:, i, j, :] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return z


# (input (N, H, W, C), kernel, strides, padding): non-square, strided, asymmetric 'same' (7×7/2 on an even
# size pads 2 and 3), 'valid' whose last input rows no window reads, batch 1, odd sizes
CASES = [((2, 12, 11, 3), (7, 7), (2, 2), "same"), ((1, 9, 13, 2), (5, 3), (1, 2), "same"),
         ((3, 10, 8, 4), (3, 5), (3, 1), "valid"), ((2, 8, 8, 5), (5, 5), (1, 1), "same"),
         ((1, 7, 6, 1), (2, 4), (2, 3), "same")]


def _pads(x_shape, kernel, strides, padding):
    (_, top, bottom), (_, left, right) = (output_and_padding(x_shape[1 + a], kernel[a], strides[a], padding)
                                          for a in range(2))
    return top, bottom, left, right


@pytest.mark.parametrize("x_shape, kernel, strides, padding", CASES)
@pytest.mark.parametrize("slab_rows", [1, 2, 5, "images"])
def test_the_slabs_cover_every_output_row_once(x_shape, kernel, strides, padding, slab_rows):
    kh, kw = kernel
    pads = _pads(x_shape, kernel, strides, padding)
    ho, wo = window_output_hw(x_shape[1], x_shape[2], kh, kw, *strides, pads)
    row_bytes = 100
    budget = row_bytes * (ho * 2 if slab_rows == "images" else slab_rows)
    seen = np.zeros((x_shape[0], ho), int)
    for slab in conv_slabs.slabs(x_shape, (ho, wo), kh, strides[0], pads, row_bytes, budget):
        seen[slab.n0:slab.n1, slab.i0:slab.i1] += 1
        top, bottom = slab.pads[:2]
        assert 0 <= slab.r0 < slab.r1 <= x_shape[1] and min(top, bottom) >= 0
        rows, _ = window_output_hw(slab.r1 - slab.r0, x_shape[2], kh, kw, *strides, slab.pads)
        assert rows == slab.i1 - slab.i0
        if slab_rows == "images":
            assert (slab.i0, slab.i1, slab.n1 - slab.n0) == (0, ho, min(2, x_shape[0] - slab.n0))
        else:
            assert slab.n1 - slab.n0 == 1 and slab.i1 - slab.i0 <= slab_rows
    assert (seen == 1).all()


def _model(x_shape, kernel, strides, padding, activation, use_bias):
    x = Input(x_shape[1:])
    return Model(x, Conv2D(4, kernel, strides=strides, padding=padding, activation=activation,
                           use_bias=use_bias, name="conv")(x))


def _run(model, x, upstream, input_grads):
    y = model.forward(x, training=True)
    gx = model.backward(upstream, input_grads=input_grads)
    return [backend.to_numpy(a) for a in [y, gx, *model.layers[-1].grads] if a is not None]


@pytest.mark.parametrize("x_shape, kernel, strides, padding", CASES)
@pytest.mark.parametrize("activation, use_bias, input_grads",
                         [("relu", True, True), ("sigmoid", False, True), (None, True, False),
                          ("softmax", True, True)])
@pytest.mark.parametrize("slab_rows", [1, 3, "images"])
def test_conv2d_through_slabs_equals_its_plain_path(xb, monkeypatch, x_shape, kernel, strides, padding,
                                                    activation, use_bias, input_grads, slab_rows):
    tinynet.set_floatx("float64")
    model = _model(x_shape, kernel, strides, padding, activation, use_bias)
    if xb.name == "cupy":
        model.to("gpu")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape)
    upstream = rng.standard_normal((x_shape[0], *model.outputs[0].shape[1:]))
    with tinynet.fast_paths(False):
        plain = _run(model, xb(x), xb(upstream), input_grads)
    ho, wo = model.outputs[0].shape[1:3]
    row_bytes = wo * kernel[0] * kernel[1] * x_shape[3] * 8
    budget = row_bytes * (ho if slab_rows == "images" else slab_rows)
    monkeypatch.setattr(conv_slabs, "FORWARD_SLAB_BYTES", budget)
    monkeypatch.setattr(conv_slabs, "BACKWARD_SLAB_BYTES", budget)
    monkeypatch.setattr(conv_slabs, "MIN_BYTES", 0)  # the tests' matrices are small
    calls = []
    im2col = kernels.im2col
    monkeypatch.setattr(kernels, "im2col", lambda a, *args, **kw: calls.append(a.shape) or im2col(a, *args, **kw))
    tinynet.set_keep_im2col(False)
    fast = _run(model, xb(x), xb(upstream), input_grads)
    assert len(fast) == len(plain) == 2 + input_grads + use_bias
    for f, p in zip(fast, plain):
        np.testing.assert_allclose(f, p, rtol=1e-12, atol=1e-14)
    if xb.name == "cupy":  # no slabs on the GPU: one im2col of the whole batch in forward and one in backward
        assert calls == [x_shape] * 2
        return
    # forward and backward each gather every slab once; no call sees the whole batch unless it is one slab
    rows = ho if slab_rows == "images" else slab_rows
    per_pass = x_shape[0] if slab_rows == "images" else x_shape[0] * -(-ho // rows)
    assert len(calls) == 2 * per_pass
    assert all(shape[0] == 1 for shape in calls)


@pytest.mark.parametrize("x_shape, kernel, strides, padding", CASES[:3])
def test_slabs_equal_a_loop_convolution(x_shape, kernel, strides, padding, monkeypatch):
    rng = np.random.default_rng(4)
    x, weights = rng.standard_normal(x_shape), rng.standard_normal((*kernel, x_shape[3], 5))
    pads = _pads(x_shape, kernel, strides, padding)
    expected = loop_convolution(x, weights, strides, pads)
    monkeypatch.setattr(conv_slabs, "FORWARD_SLAB_BYTES", 1)  # one output row per slab
    monkeypatch.setattr(conv_slabs, "BACKWARD_SLAB_BYTES", 1)
    y = conv_slabs.forward(x, weights, expected.shape, pads, strides, lambda z: z)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-13)
    # backward: the loop convolution is linear, so its gradients are ⟨g, z⟩'s derivatives, checked on random
    # directions: d⟨g, conv(x + t dx, W)⟩/dt = ⟨gx, dx⟩ and likewise for the kernel
    g = rng.standard_normal(expected.shape)
    gkernel, gx = conv_slabs.backward(x, g, weights, pads, strides, input_grad=True)
    dx, dw = rng.standard_normal(x.shape), rng.standard_normal(weights.shape)
    np.testing.assert_allclose(np.sum(gx * dx), np.sum(g * loop_convolution(dx, weights, strides, pads)),
                               rtol=1e-11)
    np.testing.assert_allclose(np.sum(gkernel * dw), np.sum(g * loop_convolution(x, dw, strides, pads)),
                               rtol=1e-11)


def test_which_convolutions_take_slabs(monkeypatch):
    """Over the keep limit and MIN_BYTES on the CPU with fast paths on; not when the matrix is kept or smaller
    than MIN_BYTES, not with fast paths off, and a 1×1 convolution never (it multiplies a view of its input)."""
    big = np.zeros((2, 40, 40, 8), np.float32)
    model = _model(big.shape, (5, 5), (1, 1), "same", "relu", True)
    pointwise = _model(big.shape, (1, 1), (1, 1), "same", "relu", True)
    calls = []
    monkeypatch.setattr(conv_slabs, "forward", lambda *a: calls.append(a) or np.zeros((2, 40, 40, 4), np.float32))
    tinynet.set_keep_im2col(0.5)   # the 5×5 matrix is 2·40·40·200·4 bytes = 2.4 MiB
    model.forward(big)             # under MIN_BYTES (16 MiB): the whole matrix
    assert calls == []
    monkeypatch.setattr(conv_slabs, "MIN_BYTES", 2 * 2 ** 20)
    model.forward(big)
    pointwise.forward(big)
    assert len(calls) == 1
    tinynet.set_keep_im2col(4)
    model.forward(big)
    with tinynet.fast_paths(False):
        tinynet.set_keep_im2col(0.5)
        model.forward(big)
    assert len(calls) == 1
