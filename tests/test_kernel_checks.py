"""The kernel dispatchers (:mod:`tinynet.kernels`) refuse inconsistent arguments before any backend runs.

The Numba loops index without bounds checks: called directly with shapes that do not agree, they read past an
array (``relu_backward`` with y of (5, 4) for gy of (4, 5) returned numbers; max-pool backward with an
``x_shape`` naming the wrong channel count returned a (2, 5, 5, 4) array where NumPy raised a broadcast error),
and a window of padding only gave NaN on NumPy but ZeroDivisionError on Numba. Now every backend raises the same
``ValueError`` naming the kernel, the argument and the shapes. One test body for every backend (``xb``).
"""
import re

import numpy as np
import pytest

from tinynet import kernels
from tinynet.kernels import CPU_KERNEL_NAMES, KERNEL_NAMES
from tinynet.kernels import numpy_kernels as ref


def _f(*shape):
    return np.ones(shape, np.float32)


P0 = (0, 0, 0, 0)
# (kernel, what is wrong, a function of the backend's array maker returning the arguments, the message)
BAD_CALLS = [
    ("im2col", "negative pad", lambda a: (a(_f(2, 5, 5, 3)), 2, 2, 1, 1, (-1, 0, 0, 0)),
     r"pads \(-1, 0, 0, 0\) \(top, bottom, left, right\) must be >= 0 and smaller than the 2x2 window"),
    ("im2col", "3-D input", lambda a: (a(_f(5, 5, 3)), 2, 2, 1, 1, P0),
     r"x must be a 4-D array \(N, H, W, C\), got shape \(5, 5, 3\)"),
    ("im2col", "window larger than the input", lambda a: (a(_f(1, 1, 5, 1)), 3, 3, 1, 1, (1, 0, 1, 1)),
     r"a 3x3 window, strides \(1, 1\) and pads \(1, 0, 1, 1\) do not fit x \(1, 1, 5, 1\) \(N, H, W, C\): "
     r".* got 0x5 outputs"),
    ("im2col", "zero stride", lambda a: (a(_f(1, 4, 4, 1)), 2, 2, 0, 1, P0),
     r"window \(2, 2\) and strides \(0, 1\) must be >= 1"),
    ("col2im", "cols for another input", lambda a: (a(_f(2, 2, 2, 3, 3, 3)), (2, 9, 9, 3), 3, 3, 1, 1, P0),
     r"cols has shape \(2, 2, 2, 3, 3, 3\), but x_shape \(2, 9, 9, 3\) with a 3x3 window, strides \(1, 1\) and "
     r"pads \(0, 0, 0, 0\) needs \(N, Ho, Wo, kh, kw, C\) = \(2, 7, 7, 3, 3, 3\)"),
    ("maxpool_forward", "window of padding only", lambda a: (a(_f(2, 5, 5, 3)), 2, 2, 1, 1, (2, 0, 0, 0)),
     r"pads \(2, 0, 0, 0\) .* smaller than the 2x2 window along their axis \(top, bottom < 2; left, right < 2\)"),
    ("maxpool_backward", "x_shape with another channel count",
     lambda a: (a(_f(2, 2, 2, 3)), a(np.zeros((2, 2, 2, 3), np.int8)), (2, 5, 5, 4), 2, 2, 2, 2, P0),
     r"gy has shape \(2, 2, 2, 3\), but x_shape \(2, 5, 5, 4\) with a 2x2 window, strides \(2, 2\) and pads "
     r"\(0, 0, 0, 0\) gives outputs of shape \(2, 2, 2, 4\)"),
    ("maxpool_backward", "argmax of another shape",
     lambda a: (a(_f(2, 2, 2, 3)), a(np.zeros((2, 2, 2, 1), np.int8)), (2, 5, 5, 3), 2, 2, 2, 2, P0),
     r"argmax has shape \(2, 2, 2, 1\) but gy has shape \(2, 2, 2, 3\): they must be equal"),
    ("avgpool_forward", "window of padding only", lambda a: (a(_f(2, 5, 5, 3)), 2, 2, 1, 1, (0, 0, 0, 2)),
     r"pads \(0, 0, 0, 2\) .* must be >= 0 and smaller than the 2x2 window"),
    ("avgpool_backward", "gy for another input", lambda a: (a(_f(2, 2, 2, 3)), (2, 9, 9, 3), 2, 2, 2, 2, P0),
     r"gy has shape \(2, 2, 2, 3\), but x_shape \(2, 9, 9, 3\) .* gives outputs of shape \(2, 4, 4, 3\)"),
    ("relu_backward", "y transposed", lambda a: (a(_f(4, 5)), a(_f(5, 4))),
     r"y has shape \(5, 4\) but gy has shape \(4, 5\): they must be equal"),
    ("bias_relu_forward", "bias too short", lambda a: (a(_f(4, 5)), a(_f(4)), True),
     r"bias has shape \(4,\) but z has shape \(4, 5\): bias must be \(C,\) = \(5,\)"),
    ("relu_bias_backward", "y of another shape", lambda a: (a(_f(4, 5)), a(_f(5, 4)), True, True),
     r"y has shape \(5, 4\) but gy has shape \(4, 5\): they must be equal"),
    ("lrn_forward", "size 0", lambda a: (a(_f(2, 3, 3, 4)), 0, 1e-4, 0.75, 1.0),
     r"size must be an integer >= 1, got 0"),
    ("lrn_forward", "k 0", lambda a: (a(_f(2, 3, 3, 4)), 5, 1e-4, 0.75, 0.0),
     r"alpha and beta must be finite numbers >= 0 and k a finite number > 0, got alpha=0.0001, beta=0.75, k=0.0"),
    ("lrn_backward", "scale of another shape",
     lambda a: (a(_f(4, 5)), a(_f(4, 5)), a(_f(4, 5)), a(_f(5, 4)), 5, 1e-4, 0.75),
     r"scale has shape \(5, 4\) but gy has shape \(4, 5\): they must be equal"),
    ("batchnorm_forward", "gamma of another channel count",
     lambda a: (a(_f(2, 5, 5, 3)), a(_f(4)), a(_f(3)), None, None, 1e-3),
     r"gamma has shape \(4,\) but x has shape \(2, 5, 5, 3\): gamma must be \(C,\) = \(3,\)"),
    ("batchnorm_forward", "mean without var", lambda a: (a(_f(2, 3)), a(_f(3)), a(_f(3)), a(_f(3)), None, 1e-3),
     r"mean and var must both be arrays \(inference\) or both None \(training\)"),
    ("batchnorm_backward", "x_hat of another shape",
     lambda a: (a(_f(4, 5)), a(_f(5, 4)), a(_f(5)), a(_f(5)), True),
     r"x_hat has shape \(5, 4\) but gy has shape \(4, 5\): they must be equal"),
    ("batchnorm_backward", "inv_std of another channel count",
     lambda a: (a(_f(4, 5)), a(_f(4, 5)), a(_f(5)), a(_f(4)), True),
     r"inv_std has shape \(4,\) but gy has shape \(4, 5\): inv_std must be \(C,\) = \(5,\)"),
    ("winograd_input", "pad as large as the 3x3 window", lambda a: (a(_f(1, 6, 6, 2)), (3, 1, 1, 1)),
     r"pads \(3, 1, 1, 1\) .* smaller than the 3x3 window"),
    ("winograd_output", "m for another output", lambda a: (a(_f(36, 4, 3)), (1, 9, 8, 3)),
     r"m has shape \(36, 4, 3\), but out_shape \(1, 9, 8, 3\) needs \(36, N·th·tw, K\) = \(36, 6, 3\)"),
    ("winograd_gradient", "3-D gradient", lambda a: (a(_f(4, 4, 3)),),
     r"gy must be a 4-D array \(N, Ho, Wo, K\), got shape \(4, 4, 3\)"),
    ("adam_update", "m of another shape",
     lambda a: (a(_f(4, 5)), a(_f(4, 5)), a(_f(5, 4)), a(_f(4, 5)), 0.9, 0.999, 1e-3, 1e-7),
     r"m has shape \(5, 4\) but w has shape \(4, 5\): they must be equal"),
    ("sgd_momentum_update", "velocity of another shape",
     lambda a: (a(_f(4, 5)), a(_f(4, 5)), a(_f(5, 4)), 0.1, 0.9, False),
     r"velocity has shape \(5, 4\) but w has shape \(4, 5\): they must be equal"),
    ("largest_magnitudes", "no arrays", lambda a: ([],),
     r"arrays must be a non-empty list of arrays, got an empty list"),
]


def test_every_kernel_has_a_refused_call():
    """Each kernel of both lists checks its arguments (a new kernel needs its case here)."""
    assert {case[0] for case in BAD_CALLS} == set(KERNEL_NAMES + CPU_KERNEL_NAMES)


@pytest.mark.parametrize("kernel, wrong, make, message", BAD_CALLS, ids=[f"{c[0]}-{c[1]}" for c in BAD_CALLS])
def test_inconsistent_arguments_are_refused_before_any_backend_runs(xb, kernel, wrong, make, message):
    if kernel in CPU_KERNEL_NAMES and xb.name == "cupy":
        pytest.skip("a CPU-only kernel (it refuses a CuPy array first)")
    args = make(xb)
    copies = [np.array(xb.numpy(a)) for a in args if hasattr(a, "shape")]
    with pytest.raises(ValueError, match=re.escape(f"tinynet.kernels.{kernel}: ") + message):
        getattr(kernels, kernel)(*args)
    for before, a in zip(copies, [a for a in args if hasattr(a, "shape")]):  # nothing ran: nothing written
        np.testing.assert_array_equal(xb.numpy(a), before)


def test_window_arguments_must_be_integers(xb):
    x = xb(_f(1, 4, 4, 1))
    for args in ((2.0, 2, 1, 1, P0), (2, 2, 1, 1, (0, 0, 0, 0.5))):
        with pytest.raises(TypeError, match=r"tinynet.kernels.maxpool_forward: x \(1, 4, 4, 1\), the window .* "
                                            r"must be integers"):
            kernels.maxpool_forward(x, *args)
    with pytest.raises(TypeError, match=r"tinynet.kernels.relu_backward: y must be an array, got list"):
        kernels.relu_backward(x, [[1.0]])


def test_the_largest_pads_keras_gives_and_numpy_integers_pass(xb):
    """'same' pads (at most the window − 1, here 6 on a 7×7 window of stride 7 over 8 cells: 0 before, 6 after),
    NumPy integers, an empty batch and no channels all run, on every backend, as before."""
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    y, argmax = kernels.maxpool_forward(xb(x), 7, 7, 7, 7, (0, 6, 0, 6))
    assert xb.numpy(y).shape == (2, 2, 2, 3)
    gx = kernels.maxpool_backward(y, argmax, x.shape, np.int64(7), 7, 7, 7, (np.int64(0), 6, 0, 6))
    assert xb.numpy(gx).shape == x.shape
    for shape in ((0, 8, 8, 3), (2, 8, 8, 0)):
        cols = kernels.im2col(xb(np.zeros(shape, np.float32)), 3, 3, 1, 1, (1, 1, 1, 1))
        assert xb.numpy(cols).shape == shape[:3] + (3, 3, shape[3])
        assert xb.numpy(kernels.avgpool_forward(xb(np.zeros(shape, np.float32)), 2, 2, 2, 2, P0)).shape == \
            (shape[0], 4, 4, shape[3])


@pytest.mark.parametrize("pads", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)])
def test_a_window_with_one_real_cell_agrees_across_backends(xb, pads):
    """The smallest windows the checks let through (pads of window − 1: one real row or column) average their
    real cells and pick a real argmax on every backend (the window of padding only is what they refuse)."""
    x = np.arange(1, 1 + 2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
    y = xb.numpy(kernels.avgpool_forward(xb(x), 2, 2, 2, 2, pads))
    expected = ref.avgpool_forward(x, 2, 2, 2, 2, pads)
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(y, expected)
    m, argmax = kernels.maxpool_forward(xb(x), 2, 2, 2, 2, pads)
    np.testing.assert_array_equal(xb.numpy(m), ref.maxpool_forward(x, 2, 2, 2, 2, pads)[0])
