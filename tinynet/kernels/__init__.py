"""Hot kernels behind one signature, dispatched to NumPy, Numba or CuPy.

A call such as ``kernels.im2col(x, ...)`` runs the CuPy kernel when ``x`` is a CuPy array, else the
CPU kernels chosen with :func:`tinynet.set_cpu_kernels` (Numba by default when installed).
Every backend module (``numpy_kernels``, ``numba_kernels``, ``cupy_kernels``) implements each name in
:data:`KERNEL_NAMES`, with the signatures and the math of :mod:`tinynet.kernels.numpy_kernels`; what they
share (window output sizes, pooling counts, LRN constants) is in :mod:`tinynet.kernels.common`.
"""
from __future__ import annotations

import importlib

from .. import backend
from . import numpy_kernels

#: The kernels, in the order of this module; the one list of them (tests check every backend against it).
KERNEL_NAMES = (
    "im2col", "col2im", "maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward",
    "relu_backward", "bias_relu_forward", "relu_bias_backward", "lrn_forward", "lrn_backward",
    "batchnorm_forward", "batchnorm_backward",
)
#: Kernels only the CPU backends implement (NumPy and Numba): the Winograd transforms of
#: :mod:`tinynet.layers.conv_winograd`, a CPU fast path (on a GPU, 3×3 convolutions stay im2col + cuBLAS), and
#: the optimizers' fused updates (on a GPU they run as the optimizers' plain array code).
CPU_KERNEL_NAMES = ("winograd_input", "winograd_output", "winograd_gradient", "adam_update", "sgd_momentum_update")
_MODULES = {"numpy": numpy_kernels}


def backend_module(name: str):
    """Return the kernel module ``'numpy'``, ``'numba'`` or ``'cupy'`` (imported on first use)."""
    if name not in _MODULES:
        _MODULES[name] = importlib.import_module(f"{__name__}.{name}_kernels")
    return _MODULES[name]


def implementation(kernel: str, array):
    """Return the function that runs ``kernel`` for ``array`` under the current settings.

    Raises ``TypeError`` for an array that is not float32 or float64: the kernels allocate their outputs in
    the input's dtype, so an integer array would come back truncated (or, in Numba's max pooling, as
    uninitialised memory). Layers cast their inputs before they get here; this is the second line of defence.
    """
    dtype = getattr(array, "dtype", None)
    if dtype not in backend.COMPUTE_DTYPES:
        raise TypeError(f"tinynet.kernels.{kernel}: arrays must be float32 or float64, got "
                        f"{dtype if dtype is not None else type(array).__name__}; cast first "
                        f"(layers cast integer and boolean inputs to their dtype)")
    if backend.is_gpu_array(array):
        return getattr(backend_module("cupy"), kernel)
    module = backend_module(backend.get_cpu_kernels())
    return getattr(module, kernel, getattr(numpy_kernels, kernel))  # the reference if a CPU module lacks one


def im2col(x, kh, kw, sh, sw, pads, pad_value=0.0):
    return implementation("im2col", x)(x, kh, kw, sh, sw, pads, pad_value)


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    return implementation("col2im", cols)(cols, x_shape, kh, kw, sh, sw, pads)


def maxpool_forward(x, ph, pw, sh, sw, pads):
    return implementation("maxpool_forward", x)(x, ph, pw, sh, sw, pads)


def maxpool_backward(gy, argmax, x_shape, ph, pw, sh, sw, pads):
    return implementation("maxpool_backward", gy)(gy, argmax, x_shape, ph, pw, sh, sw, pads)


def avgpool_forward(x, ph, pw, sh, sw, pads):
    return implementation("avgpool_forward", x)(x, ph, pw, sh, sw, pads)


def avgpool_backward(gy, x_shape, ph, pw, sh, sw, pads):
    return implementation("avgpool_backward", gy)(gy, x_shape, ph, pw, sh, sw, pads)


def relu_backward(gy, y):
    return implementation("relu_backward", gy)(gy, y)


def bias_relu_forward(z, bias, relu):
    return implementation("bias_relu_forward", z)(z, bias, relu)


def relu_bias_backward(gy, y, relu, want_bias):
    return implementation("relu_bias_backward", gy)(gy, y, relu, want_bias)


def lrn_forward(x, size, alpha, beta, k):
    return implementation("lrn_forward", x)(x, size, alpha, beta, k)


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    return implementation("lrn_backward", gy)(gy, x, y, scale, size, alpha, beta)


def batchnorm_forward(x, gamma, beta, mean, var, epsilon):
    return implementation("batchnorm_forward", x)(x, gamma, beta, mean, var, epsilon)


def batchnorm_backward(gy, x_hat, gamma, inv_std, training):
    return implementation("batchnorm_backward", gy)(gy, x_hat, gamma, inv_std, training)


def _cpu_implementation(kernel: str, array):
    if backend.is_gpu_array(array):
        raise TypeError(f"tinynet.kernels.{kernel} runs on the CPU only (NumPy arrays), got a CuPy array")
    return implementation(kernel, array)


def winograd_input(x, pads):
    return _cpu_implementation("winograd_input", x)(x, pads)


def winograd_output(m, out_shape):
    return _cpu_implementation("winograd_output", m)(m, out_shape)


def winograd_gradient(gy):
    return _cpu_implementation("winograd_gradient", gy)(gy)


def adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon):
    return _cpu_implementation("adam_update", w)(w, g, m, v, beta_1, beta_2, alpha, epsilon)


def sgd_momentum_update(w, g, velocity, lr, momentum, nesterov):
    return _cpu_implementation("sgd_momentum_update", w)(w, g, velocity, lr, momentum, nesterov)


for _name in KERNEL_NAMES + CPU_KERNEL_NAMES:
    globals()[_name].__doc__ = getattr(numpy_kernels, _name).__doc__
