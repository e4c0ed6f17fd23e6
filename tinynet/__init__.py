"""tinynet: a from-scratch deep-learning engine on NumPy, Numba and CuPy, written to be read.

Keras' module layout: layers (NHWC, Keras names) in :mod:`tinynet.layers`; :class:`Model` (functional) and
:class:`Sequential` in :mod:`tinynet.models` (``compile`` / ``fit`` / ``evaluate`` / ``predict``);
:mod:`tinynet.optimizers` (with :mod:`tinynet.optimizers.schedules`), :mod:`tinynet.losses`,
:mod:`tinynet.metrics`, :mod:`tinynet.callbacks`, :mod:`tinynet.utils`; the gradient checker in
:mod:`tinynet.gradcheck`. Importing tinynet loads NumPy only (Numba when the kernels first run; tqdm,
matplotlib and scikit-learn when first used).
"""
from . import callbacks, gradcheck, layers, losses, metrics, models, optimizers, utils
from .backend import (cpu_kernels, cupy_available, fast_paths, fast_paths_enabled, floatx, floatx_scope,
                      get_array_module, get_cpu_kernels, keep_im2col, set_cpu_kernels, set_fast_paths, set_floatx,
                      set_keep_im2col, set_seed, set_winograd, to_device, to_numpy, winograd, winograd_enabled)
from .layers import *  # noqa: F401,F403  (Input, Conv2D, ... at the top level, as keras.layers)
from .layers import __all__ as _layer_names
from .layers.base import NonFiniteError, ShapeError  # noqa: F401  (tinynet.NonFiniteError for the trainer)
from .model import Model
from .models import Sequential

__version__ = "0.1.0"

__all__ = ["Model", "Sequential", "layers", "models", "optimizers", "losses", "metrics", "callbacks", "utils",
           "gradcheck", "floatx", "set_floatx", "floatx_scope", "set_seed", "set_cpu_kernels", "get_cpu_kernels",
           "cpu_kernels", "fast_paths", "fast_paths_enabled", "set_fast_paths", "keep_im2col", "set_keep_im2col",
           "winograd", "winograd_enabled", "set_winograd",
           "get_array_module", "to_device", "to_numpy",
           "cupy_available"] + list(_layer_names)  # layers' names include ShapeError and NonFiniteError
