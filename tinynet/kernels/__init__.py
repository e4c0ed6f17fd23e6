"""Hot kernels behind one signature, dispatched to NumPy, Numba or CuPy.

A call such as ``kernels.im2col(x, ...)`` runs the CuPy kernel when ``x`` is a CuPy array, else the
CPU kernels chosen with :func:`tinynet.set_cpu_kernels` (Numba by default when installed).
Every backend module (``numpy_kernels``, ``numba_kernels``, ``cupy_kernels``) implements each name in
:data:`KERNEL_NAMES`, with the signatures and the math of :mod:`tinynet.kernels.numpy_kernels`; what they
share (window output sizes, pooling counts, LRN constants) is in :mod:`tinynet.kernels.common`.

The dispatchers below check their arguments before any backend runs, so that every backend sees only
consistent ones (the Numba loops index without bounds checks, and a mismatched shape read past an array):
the dtype of the first array (:func:`implementation`, ``TypeError``), then, with a few O(1) comparisons of
shapes and integers (never a pass over the data), ``ValueError`` naming the kernel, the argument and the
shapes when

* an array that must match another does not (``y`` of ``relu_backward`` and ``gy``, the (C,) vectors of
  batch normalisation, ``cols`` and the im2col shape of ``x_shape``, ...);
* a window's geometry is not one Keras' 'valid' or 'same' could give: window and strides >= 1, every pad
  >= 0 and smaller than the window along its axis (top, bottom < kh; left, right < kw), H, W >= 1 and at
  least one output along each axis. Then every window holds at least one real cell (the first window ends
  past row 0 since top < kh, the last starts before row H since bottom < kh), so a max pool always has a real
  argmax and an average pool a count >= 1 (a window of padding only gave NaN on NumPy and
  ZeroDivisionError on Numba).
"""
from __future__ import annotations

import importlib
import math
import operator

from .. import backend
from . import numpy_kernels
from .common import winograd_tiles

#: The kernels, in the order of this module; the one list of them (tests check every backend against it).
KERNEL_NAMES = (
    "im2col", "col2im", "maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward",
    "relu_backward", "bias_relu_forward", "relu_bias_backward", "lrn_forward", "lrn_backward",
    "batchnorm_forward", "batchnorm_backward", "adam_update", "sgd_momentum_update",
)
#: Kernels only the CPU backends implement (NumPy and Numba): the Winograd transforms of
#: :mod:`tinynet.layers.conv_winograd`, a CPU fast path (on a GPU, 3×3 convolutions stay im2col + cuBLAS), and
#: the optimizers' largest magnitudes (on a GPU :mod:`tinynet.optimizers.optimizer` reduces them with CuPy).
CPU_KERNEL_NAMES = ("winograd_input", "winograd_output", "winograd_gradient", "largest_magnitudes")
_MODULES = {"numpy": numpy_kernels}


def numba_environment_problem():
    """Why Numba would refuse to start under this process's environment, in one line, or None.

    ``NUMBA_NUM_THREADS`` set to an integer below 1 makes ``import numba`` raise ``ValueError`` (a value that is
    not an integer, Numba warns about and ignores). The command lines call this before any work, so that such a
    variable ends in one line naming it rather than in a traceback once the first kernel runs.

    Returns
    -------
    str or None
    """
    import os

    value = os.environ.get("NUMBA_NUM_THREADS")
    if value is None:
        return None
    try:
        threads = int(value)
    except ValueError:
        return None
    if threads >= 1:
        return None
    return (f"NUMBA_NUM_THREADS={value!r}: Numba needs 1 or more threads; unset the variable or set it to a "
            f"positive number")


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


# ------------------------------------------------------------------------------------ argument checks
# Each dispatcher compares shapes and integers inline (0.25-0.95 µs a call); the functions below build the
# error only once a comparison has failed.
def _error(kernel, message):
    return ValueError(f"tinynet.kernels.{kernel}: {message}")


def _shape(kernel, name, a):
    """``a.shape``, or a ``TypeError`` naming the argument when ``a`` is not an array."""
    try:
        return a.shape
    except AttributeError:
        raise TypeError(f"tinynet.kernels.{kernel}: {name} must be an array, got {type(a).__name__}") from None


def _same_shape(kernel, reference_name, reference, *named):
    """Raise for the first ``(name, array)`` of ``named`` whose shape is not the one of ``reference``."""
    for name, a in named:
        shape = _shape(kernel, name, a)
        if shape != reference.shape:
            raise _error(kernel, f"{name} has shape {shape} but {reference_name} has shape {reference.shape}: "
                                 f"they must be equal")


def _vectors(kernel, x_name, x, *named):
    """Raise unless ``x`` has a last axis C and every ``(name, vector)`` of ``named`` has shape (C,)."""
    if x.ndim == 0:
        raise _error(kernel, f"{x_name} must have a channel axis (..., C), got shape ()")
    expected = x.shape[-1:]
    for name, v in named:
        shape = _shape(kernel, name, v)
        if shape != expected:
            raise _error(kernel, f"{name} has shape {shape} but {x_name} has shape {x.shape}: {name} must be "
                                 f"(C,) = {expected}")


def _geometry_text(kh, kw, sh, sw, pads):
    return f"a {kh}x{kw} window, strides ({sh}, {sw}) and pads {tuple(pads)}"


def _window(kernel, shape, kh, kw, sh, sw, pads, shape_name="x"):
    """Check the geometry of a window kernel over an input of ``shape`` (N, H, W, C); return
    ``(N, H, W, C, Ho, Wo)`` (see the module's docstring for the rules)."""
    try:
        n, h, w, c = shape
        top, bottom, left, right = pads
    except (TypeError, ValueError):
        return _window_error(kernel, shape, kh, kw, sh, sw, pads, shape_name)
    if (type(n) is type(h) is type(w) is type(c) is type(kh) is type(kw) is type(sh) is type(sw) is type(top)
            is type(bottom) is type(left) is type(right) is int and kh >= 1 and kw >= 1 and sh >= 1 and sw >= 1
            and 0 <= top < kh and 0 <= bottom < kh and 0 <= left < kw and 0 <= right < kw and n >= 0 and h >= 1
            and w >= 1 and c >= 0):
        ho = (h + top + bottom - kh) // sh + 1
        wo = (w + left + right - kw) // sw + 1
        if ho >= 1 and wo >= 1:
            return n, h, w, c, ho, wo
    return _window_error(kernel, shape, kh, kw, sh, sw, pads, shape_name)


def _window_error(kernel, shape, kh, kw, sh, sw, pads, shape_name):
    """:func:`_window` for arguments its fast path did not take: NumPy integers (converted and checked again),
    or the error that names what is wrong."""
    try:
        n, h, w, c = shape
    except (TypeError, ValueError):
        what = "a 4-D array (N, H, W, C), got shape" if shape_name == "x" else "4 integers (N, H, W, C), got"
        raise _error(kernel, f"{shape_name} must be {what} {shape!r}") from None
    try:
        top, bottom, left, right = pads
    except (TypeError, ValueError):
        raise _error(kernel, f"pads must be 4 integers (top, bottom, left, right), got {pads!r}") from None
    try:
        values = tuple(map(operator.index, (n, h, w, c, kh, kw, sh, sw, top, bottom, left, right)))
    except TypeError:
        raise TypeError(f"tinynet.kernels.{kernel}: {shape_name} {tuple(shape)!r}, the window ({kh!r}, {kw!r}), "
                        f"strides ({sh!r}, {sw!r}) and pads {tuple(pads)!r} must be integers") from None
    n, h, w, c, ikh, ikw, ish, isw, top, bottom, left, right = values
    if ikh < 1 or ikw < 1 or ish < 1 or isw < 1:
        raise _error(kernel, f"window ({kh}, {kw}) and strides ({sh}, {sw}) must be >= 1")
    if top < 0 or bottom < 0 or left < 0 or right < 0 or top >= ikh or bottom >= ikh or left >= ikw or right >= ikw:
        raise _error(kernel, f"pads {tuple(pads)} (top, bottom, left, right) must be >= 0 and smaller than the "
                             f"{kh}x{kw} window along their axis (top, bottom < {kh}; left, right < {kw}): a larger "
                             f"pad makes windows of padding only, which Keras' 'valid' and 'same' never do")
    ho = (h + top + bottom - ikh) // ish + 1
    wo = (w + left + right - ikw) // isw + 1
    if n < 0 or c < 0 or h < 1 or w < 1 or ho < 1 or wo < 1:
        raise _error(kernel, f"{_geometry_text(kh, kw, sh, sw, pads)} do not fit {shape_name} {tuple(shape)} "
                             f"(N, H, W, C): H and W must be >= 1 and the padded input hold at least one window, "
                             f"got {ho}x{wo} outputs")
    return n, h, w, c, ho, wo  # NumPy integers, all valid


def _window_output(kernel, gy, x_shape, kh, kw, sh, sw, pads):
    """A pooling backward: ``gy`` has the output shape (N, Ho, Wo, C) of the window over ``x_shape``."""
    n, _, _, c, ho, wo = _window(kernel, x_shape, kh, kw, sh, sw, pads, "x_shape")
    if gy.shape != (n, ho, wo, c):
        raise _error(kernel, f"gy has shape {gy.shape}, but x_shape {tuple(x_shape)} with "
                             f"{_geometry_text(kh, kw, sh, sw, pads)} gives outputs of shape {(n, ho, wo, c)}")


def _lrn_constants(kernel, size, alpha, beta, k=1.0):
    """LRN's constants as the layer accepts them: an integer size >= 1, alpha, beta >= 0 and k > 0, finite."""
    try:
        if type(size) is int and size >= 1 and alpha >= 0 and beta >= 0 and 0 < k < math.inf > alpha + beta:
            return
    except TypeError:
        pass
    try:
        ok = operator.index(size) >= 1
    except TypeError:
        ok = False
    if not ok:
        raise _error(kernel, f"size must be an integer >= 1, got {size!r}")
    try:
        ok = alpha >= 0 and beta >= 0 and k > 0 and math.isfinite(alpha + beta + k)
    except TypeError:
        ok = False
    if not ok:
        raise _error(kernel, f"alpha and beta must be finite numbers >= 0 and k a finite number > 0, got "
                             f"alpha={alpha!r}, beta={beta!r}" + (f", k={k!r}" if kernel == "lrn_forward" else ""))


# ------------------------------------------------------------------------------------------ dispatchers
def im2col(x, kh, kw, sh, sw, pads, pad_value=0.0):
    run = implementation("im2col", x)
    _window("im2col", x.shape, kh, kw, sh, sw, pads)
    return run(x, kh, kw, sh, sw, pads, pad_value)


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    run = implementation("col2im", cols)
    n, _, _, c, ho, wo = _window("col2im", x_shape, kh, kw, sh, sw, pads, "x_shape")
    if cols.shape != (n, ho, wo, kh, kw, c):
        raise _error("col2im", f"cols has shape {cols.shape}, but x_shape {tuple(x_shape)} with "
                               f"{_geometry_text(kh, kw, sh, sw, pads)} needs (N, Ho, Wo, kh, kw, C) = "
                               f"{(n, ho, wo, kh, kw, c)}")
    return run(cols, x_shape, kh, kw, sh, sw, pads)


def maxpool_forward(x, ph, pw, sh, sw, pads):
    run = implementation("maxpool_forward", x)
    _window("maxpool_forward", x.shape, ph, pw, sh, sw, pads)
    return run(x, ph, pw, sh, sw, pads)


def maxpool_backward(gy, argmax, x_shape, ph, pw, sh, sw, pads):
    run = implementation("maxpool_backward", gy)
    _window_output("maxpool_backward", gy, x_shape, ph, pw, sh, sw, pads)
    if getattr(argmax, "shape", None) != gy.shape:
        _same_shape("maxpool_backward", "gy", gy, ("argmax", argmax))
    return run(gy, argmax, x_shape, ph, pw, sh, sw, pads)


def avgpool_forward(x, ph, pw, sh, sw, pads):
    run = implementation("avgpool_forward", x)
    _window("avgpool_forward", x.shape, ph, pw, sh, sw, pads)
    return run(x, ph, pw, sh, sw, pads)


def avgpool_backward(gy, x_shape, ph, pw, sh, sw, pads):
    run = implementation("avgpool_backward", gy)
    _window_output("avgpool_backward", gy, x_shape, ph, pw, sh, sw, pads)
    return run(gy, x_shape, ph, pw, sh, sw, pads)


def relu_backward(gy, y):
    run = implementation("relu_backward", gy)
    if getattr(y, "shape", None) != gy.shape:
        _same_shape("relu_backward", "gy", gy, ("y", y))
    return run(gy, y)


def bias_relu_forward(z, bias, relu):
    run = implementation("bias_relu_forward", z)
    if bias is not None and (z.ndim == 0 or getattr(bias, "shape", None) != z.shape[-1:]):
        _vectors("bias_relu_forward", "z", z, ("bias", bias))
    return run(z, bias, relu)


def relu_bias_backward(gy, y, relu, want_bias):
    run = implementation("relu_bias_backward", gy)
    if want_bias and gy.ndim == 0:
        raise _error("relu_bias_backward", "gy must have a channel axis (..., K) for the bias gradient, got shape ()")
    if relu and getattr(y, "shape", None) != gy.shape:
        _same_shape("relu_bias_backward", "gy", gy, ("y", y))
    return run(gy, y, relu, want_bias)


def lrn_forward(x, size, alpha, beta, k):
    run = implementation("lrn_forward", x)
    if x.ndim == 0:
        raise _error("lrn_forward", "x must have a channel axis (..., C), got shape ()")
    _lrn_constants("lrn_forward", size, alpha, beta, k)
    return run(x, size, alpha, beta, k)


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    run = implementation("lrn_backward", gy)
    if gy.ndim == 0:
        raise _error("lrn_backward", "gy must have a channel axis (..., C), got shape ()")
    if not (getattr(x, "shape", None) == getattr(y, "shape", None) == getattr(scale, "shape", None) == gy.shape):
        _same_shape("lrn_backward", "gy", gy, ("x", x), ("y", y), ("scale", scale))
    _lrn_constants("lrn_backward", size, alpha, beta)
    return run(gy, x, y, scale, size, alpha, beta)


def batchnorm_forward(x, gamma, beta, mean, var, epsilon):
    run = implementation("batchnorm_forward", x)
    if (mean is None) != (var is None):
        raise _error("batchnorm_forward", "mean and var must both be arrays (inference) or both None (training)")
    c = x.shape[-1:]
    if x.ndim == 0 or not (getattr(gamma, "shape", None) == getattr(beta, "shape", None) == c and
                           (mean is None or getattr(mean, "shape", None) == getattr(var, "shape", None) == c)):
        _vectors("batchnorm_forward", "x", x, ("gamma", gamma), ("beta", beta),
                 *(() if mean is None else (("mean", mean), ("var", var))))
    return run(x, gamma, beta, mean, var, epsilon)


def batchnorm_backward(gy, x_hat, gamma, inv_std, training):
    run = implementation("batchnorm_backward", gy)
    if getattr(x_hat, "shape", None) != gy.shape:
        _same_shape("batchnorm_backward", "gy", gy, ("x_hat", x_hat))
    if gy.ndim == 0 or not getattr(gamma, "shape", None) == getattr(inv_std, "shape", None) == gy.shape[-1:]:
        _vectors("batchnorm_backward", "gy", gy, ("gamma", gamma), ("inv_std", inv_std))
    return run(gy, x_hat, gamma, inv_std, training)


def _cpu_implementation(kernel: str, array):
    if backend.is_gpu_array(array):
        raise TypeError(f"tinynet.kernels.{kernel} runs on the CPU only (NumPy arrays), got a CuPy array")
    return implementation(kernel, array)


def winograd_input(x, pads):
    run = _cpu_implementation("winograd_input", x)
    _window("winograd_input", x.shape, 3, 3, 1, 1, pads)
    return run(x, pads)


def winograd_output(m, out_shape):
    run = _cpu_implementation("winograd_output", m)
    try:
        n, ho, wo, k = map(operator.index, out_shape)
    except (TypeError, ValueError):
        raise _error("winograd_output", f"out_shape must be 4 integers (N, Ho, Wo, K), got {out_shape!r}") from None
    if n < 0 or k < 0 or ho < 1 or wo < 1:
        raise _error("winograd_output", f"out_shape {tuple(out_shape)} (N, Ho, Wo, K) needs Ho, Wo >= 1 and N, K >= 0")
    th, tw = winograd_tiles(ho, wo)
    if m.shape != (36, n * th * tw, k):
        raise _error("winograd_output", f"m has shape {m.shape}, but out_shape {tuple(out_shape)} needs "
                                        f"(36, N·th·tw, K) = {(36, n * th * tw, k)} ({th}x{tw} tiles of 4x4)")
    return run(m, out_shape)


def winograd_gradient(gy):
    run = _cpu_implementation("winograd_gradient", gy)
    if gy.ndim != 4:
        raise _error("winograd_gradient", f"gy must be a 4-D array (N, Ho, Wo, K), got shape {gy.shape}")
    return run(gy)


def largest_magnitudes(arrays):
    if not isinstance(arrays, (list, tuple)) or len(arrays) == 0:
        raise _error("largest_magnitudes", f"arrays must be a non-empty list of arrays, got "
                                           f"{'an empty ' if isinstance(arrays, (list, tuple)) else 'a '}"
                                           f"{type(arrays).__name__}")
    run = _cpu_implementation("largest_magnitudes", arrays[0])
    for a in arrays[1:]:
        _cpu_implementation("largest_magnitudes", a)  # float32 or float64, on the CPU
    return run(list(arrays))


def adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon):
    run = implementation("adam_update", w)
    if not (getattr(g, "shape", None) == getattr(m, "shape", None) == getattr(v, "shape", None) == w.shape):
        _same_shape("adam_update", "w", w, ("g", g), ("m", m), ("v", v))
    return run(w, g, m, v, beta_1, beta_2, alpha, epsilon)


def sgd_momentum_update(w, g, velocity, lr, momentum, nesterov):
    run = implementation("sgd_momentum_update", w)
    if not (getattr(g, "shape", None) == getattr(velocity, "shape", None) == w.shape):
        _same_shape("sgd_momentum_update", "w", w, ("g", g), ("velocity", velocity))
    return run(w, g, velocity, lr, momentum, nesterov)


for _name in KERNEL_NAMES + CPU_KERNEL_NAMES:
    globals()[_name].__doc__ = getattr(numpy_kernels, _name).__doc__
