"""Element-wise activations with their derivatives, shared by Activation, ReLU, Conv2D and Dense.

Each activation is ``forward(z, overwrite=False) -> y`` and ``backward(gy, y) -> gz`` written from the output
``y`` (all of them can be, which saves keeping ``z``). ``overwrite=True`` says the caller owns ``z`` and no
longer needs it (Conv2D and Dense pass their fresh pre-activations), so the forward may write ``y`` into it:
ReLU does, the others compute a new array.

=========  ====================================================  ==========================================
name       forward                                               backward
=========  ====================================================  ==========================================
linear     y = z                                                 gz = gy
relu       y = max(z, 0)                                         gz = gy · [y > 0]
sigmoid    y = 1 / (1 + e^{-z})                                  gz = gy · y (1 − y)
tanh       y = tanh z                                            gz = gy · (1 − y²)
softmax    y_i = e^{z_i − m} / Σ_j e^{z_j − m}, m = max_j z_j    gz = y · (gy − Σ_j y_j gy_j) (along ``axis``)
=========  ====================================================  ==========================================
"""
from __future__ import annotations

from .. import backend, kernels
from ..backend import get_array_module


# ------------------------------------------------------------------------- ReLU: forward and backward
def relu(z, overwrite=False):
    """``y = max(z, 0)``.

    Parameters
    ----------
    z : ndarray, any shape, float32 or float64
    overwrite : bool
        Write ``y`` into ``z`` (no second array of that size) when the caller no longer needs ``z``.

    Returns
    -------
    y : ndarray, shape and dtype of ``z`` (``z`` itself with ``overwrite``)
    """
    return get_array_module(z).maximum(z, z.dtype.type(0), out=z if overwrite else None)


def relu_grad(gy, y):
    """``gz = gy · [y > 0]``, from the output ``y`` of :func:`relu`.

    Runs :func:`tinynet.kernels.relu_backward`, the backend's kernel: the NumPy expression, one fused
    parallel pass with Numba, one CUDA kernel on CuPy.

    Parameters
    ----------
    gy, y : ndarray, same shape

    Returns
    -------
    gz : ndarray, shape and dtype of ``gy``
    """
    return kernels.relu_backward(gy, y)


# ------------------------------------------------- bias + activation, for the layers that multiply
def bias_activation(z, bias, name, act):
    """``y = act(z + bias)`` for a layer's fresh pre-activation ``z`` (Conv2D, Dense), written into ``z``.

    With fast paths on (:func:`tinynet.set_fast_paths`) and ``name`` 'relu' or 'linear', one pass of
    :func:`tinynet.kernels.bias_relu_forward`; otherwise the plain two steps ``z += bias`` then ``act(z)``.

    Parameters
    ----------
    z : ndarray (..., K), C-contiguous; overwritten
    bias : ndarray (K,) or None
    name : str, the activation's canonical name
    act : the activation's forward function

    Returns
    -------
    y : ndarray, shape of ``z``
    """
    if name in _FUSED and backend.fast_paths_enabled():
        return kernels.bias_relu_forward(z, bias, name == "relu")
    if bias is not None:
        z += bias
    return act(z, overwrite=True)  # ReLU: in place, no second array


def activation_bias_backward(gy, y, name, act_grad, want_bias):
    """``gz = ∂L/∂z`` from the layer output's gradient, and ``∂L/∂bias = Σ_rows gz`` when ``want_bias``.

    With fast paths on and ``name`` 'relu' or 'linear', one pass of :func:`tinynet.kernels.relu_bias_backward`;
    otherwise the activation's derivative, then ``gz.sum`` over every axis but the last.

    Parameters
    ----------
    gy, y : ndarray (..., K), the gradient and the output of the forward pass
    name : str, the activation's canonical name
    act_grad : the activation's derivative ``(gy, y) -> gz``
    want_bias : bool

    Returns
    -------
    gz : ndarray (..., K)
    gbias : ndarray (K,), or None when not ``want_bias``
    """
    if name in _FUSED and backend.fast_paths_enabled():
        return kernels.relu_bias_backward(gy, y, name == "relu", want_bias)
    gz = act_grad(gy, y)
    return gz, (gz.reshape(-1, gz.shape[-1]).sum(axis=0) if want_bias else None)


_FUSED = ("relu", "linear")


# ------------------------------------------------------------------------------------- the others
def _linear(z, overwrite=False):
    return z


def _linear_grad(gy, y):
    return gy


def _sigmoid(z, overwrite=False):
    xp = get_array_module(z)
    one = z.dtype.type(1)
    return one / (one + xp.exp(-z))


def _sigmoid_grad(gy, y):
    return gy * y * (y.dtype.type(1) - y)


def _tanh(z, overwrite=False):
    return get_array_module(z).tanh(z)


def _tanh_grad(gy, y):
    return gy * (y.dtype.type(1) - y * y)


def softmax(z, axis=-1, overwrite=False):
    """Numerically stable softmax: subtract the max along ``axis`` before exponentiating (always a new array;
    ``overwrite`` is the activation table's argument)."""
    xp = get_array_module(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_grad(gy, y, axis=-1):
    """Vector-Jacobian product of softmax: ``gz = y · (gy − Σ y·gy)``."""
    return y * (gy - (gy * y).sum(axis=axis, keepdims=True))


ACTIVATIONS = {
    "linear": (_linear, _linear_grad),
    "relu": (relu, relu_grad),
    "sigmoid": (_sigmoid, _sigmoid_grad),
    "tanh": (_tanh, _tanh_grad),
    "softmax": (softmax, softmax_grad),
}


def get(name, who="?"):
    """Return ``(forward, backward)`` for an activation name (``None`` means linear).

    Names are case-sensitive, as in Keras (``'relu'``, not ``'ReLU'``); ``who`` names the layer in the error.
    """
    key = "linear" if name is None else name
    if not isinstance(key, str) or key not in ACTIVATIONS:
        raise ValueError(f"{who}: unknown activation {name!r}; supported: {sorted(ACTIVATIONS)} or None")
    return ACTIVATIONS[key]


def canonical(name):
    """The activation's name as Keras writes it in a config (``None`` → ``'linear'``)."""
    return "linear" if name is None else name
