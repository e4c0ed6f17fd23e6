"""tinynet: a from-scratch deep-learning engine on NumPy, Numba and CuPy, written to be read.

Layers (NHWC, Keras names) live in :mod:`tinynet.layers`, the functional :class:`Model` in
:mod:`tinynet.model`, losses in :mod:`tinynet.losses`, the gradient checker in :mod:`tinynet.gradcheck`.
"""
from . import gradcheck, layers, losses
from .backend import (cpu_kernels, cupy_available, floatx, floatx_scope, get_array_module, get_cpu_kernels,
                      set_cpu_kernels, set_floatx, set_seed, to_device, to_numpy)
from .layers import *  # noqa: F401,F403  (Input, Conv2D, ... at the top level, as keras.layers)
from .layers import __all__ as _layer_names
from .layers.base import NonFiniteError, ShapeError  # noqa: F401  (tinynet.NonFiniteError for the trainer)
from .model import Model

__version__ = "0.1.0"

__all__ = ["Model", "layers", "losses", "gradcheck", "floatx", "set_floatx", "floatx_scope", "set_seed",
           "set_cpu_kernels", "get_cpu_kernels", "cpu_kernels", "get_array_module", "to_device", "to_numpy",
           "cupy_available"] + list(_layer_names)  # layers' names include ShapeError and NonFiniteError
