"""Backends: the array module of an array, the float type, the CPU kernel choice and device moves.

tinynet runs one code path for every backend. A layer asks :func:`get_array_module` for ``xp``
(NumPy or CuPy, whichever owns its input) and does its plain array math with ``xp``. Only the hot
loops go through :mod:`tinynet.kernels`, which picks NumPy, Numba (CPU) or CuPy (GPU) kernels.

Settings
--------
``set_floatx('float32' | 'float64')``
    The dtype of weights created afterwards and of model inputs (as ``keras.config.set_floatx``). float16 is
    refused with the reason: the compiled kernels exist for float32 and float64 only.
``set_cpu_kernels('numpy' | 'numba')``, ``with cpu_kernels('numpy'): ...``, env ``TINYNET_CPU_KERNELS``
    Which CPU kernels run. Numba is the default when it is installed; without it tinynet falls back
    to NumPy with a one-line warning.
``set_fast_paths(True | False)``, ``with fast_paths(False): ...``, env ``TINYNET_FAST_PATHS=0``
    Whether layers take their fused paths (one pass for a convolution's bias + ReLU forward, one for ReLU's
    derivative + the bias gradient backward). On by default; off runs the plain layer code, the readable
    reference the fused paths are tested against (float64, to 1e-12).
``set_winograd(True | False)``, ``with winograd(False): ...``, env ``TINYNET_WINOGRAD=0``
    Whether 3×3 stride-1 convolutions on the CPU run as Winograd F(4×4, 3×3) (:mod:`tinynet.layers.conv_winograd`) when
    fast paths are on: 2.25 times fewer multiplications in the three products of a training step. On by
    default. Its rounding error follows the largest value of each 6×6 input tile, not each output:
    ``|error| ≲ ε · max_tile |x| · Σ|kernel of that filter|`` (ε the dtype's machine epsilon). On data of one
    scale float32 results differ from im2col's by about 1e-5 of the output's scale (im2col: about 1e-6), but a
    small output beside a value 10⁵ times larger in its tile is off by percents; forward inputs whose largest
    value exceeds 10³ typical ones therefore take im2col (``conv_winograd.range_fits``), and backward's
    gradients follow the tile's largest upstream gradient the same way. In float64 it equals im2col to 1e-12.
    ``set_winograd(False)`` gives every convolution im2col's own precision.
``tinynet.blas.set_sharing('blas' | 'threads')``, env ``TINYNET_BLAS_SHARING``
    How Winograd's 36 stacked products use the cores: BLAS's own threads (default, the faster on a quiet
    machine) or one share per core with a one-thread BLAS each (the steadier when another process takes a
    core); ``with tinynet.blas.shared('threads'): ...`` for a block. See :mod:`tinynet.blas`.
``set_keep_im2col(4 | True | False | MiB)``, env ``TINYNET_KEEP_IM2COL`` (MiB; ``inf`` all, 0 none)
    What a k×k convolution keeps for its backward pass: the im2col matrix itself (kh·kw times the input's
    size) or only its input, from which backward gathers the windows again (one im2col, a few percent of a
    step). A number keeps the matrices of at most that many MiB (default 4: recomputing a small one costs
    more than it saves, the large ones are most of the memory: about a quarter of GoogLeNet's at batch 8);
    ``True`` keeps every one, ``False`` none.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings

import numpy as np

_FLOATX = "float32"
_VALID_FLOATX = ("float32", "float64")
_VALID_CPU_KERNELS = ("numpy", "numba")

#: the dtypes layers and kernels compute in; anything else is cast (integers, booleans) or refused
COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

FLOAT16_REASON = ("float16 is not supported: the Numba and CUDA kernels are compiled for float32 and float64 only, "
                  "and float16 training would need loss scaling, which tinynet does not implement; use 'float32'")


# ----------------------------------------------------------------------------------------- floatx
def check_float_dtype(value, who: str) -> str:
    """Return ``value`` as ``'float32'`` or ``'float64'``; raise ``ValueError`` naming ``who`` otherwise.

    float16 is refused with the reason (:data:`FLOAT16_REASON`), as are integer and other types.
    """
    try:
        name = str(np.dtype(value))
    except TypeError:
        raise ValueError(f"{who}: dtype must be one of {_VALID_FLOATX}, got {value!r}") from None
    if name == "float16":
        raise ValueError(f"{who}: {FLOAT16_REASON}")
    if name not in _VALID_FLOATX:
        raise ValueError(f"{who}: dtype must be one of {_VALID_FLOATX}, got {value!r}")
    return name


def floatx() -> str:
    """Return the default float type as a string, ``'float32'`` unless changed."""
    return _FLOATX


def set_floatx(value: str) -> None:
    """Set the default float type for weights and inputs created afterwards (as Keras).

    Only ``'float32'`` and ``'float64'``; ``'float16'`` raises ``ValueError`` with the reason.
    """
    global _FLOATX
    _FLOATX = check_float_dtype(value, "set_floatx")


@contextlib.contextmanager
def _temporarily(get, set_, value):
    """Context manager: ``set_(value)`` inside, the value ``get()`` had before on the way out."""
    old = get()
    set_(value)
    try:
        yield
    finally:
        set_(old)


def floatx_scope(value: str):
    """Temporarily set the default float type: ``with floatx_scope('float64'): ...``."""
    return _temporarily(floatx, set_floatx, value)


# ------------------------------------------------------------------------------------------- cupy
def _cupy_problem():
    """Why the GPU can't be used, in one line, or ``None`` when CuPy imports and sees a CUDA device."""
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
        return "CuPy is installed but sees no CUDA device"
    except Exception as error:  # CUDA driver missing or too old, no device, broken install, ...
        return f"CuPy is installed but no CUDA device is available ({type(error).__name__}: {error})"


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _cupy_problem() is None


def _cupy_module():
    """Return the cupy module if it is already imported (never imports it)."""
    return sys.modules.get("cupy")


def is_gpu_array(array) -> bool:
    """True when ``array`` is a CuPy array (checked without importing CuPy)."""
    cp = _cupy_module()
    return cp is not None and isinstance(array, cp.ndarray)


def get_array_module(*arrays):
    """Return ``cupy`` if any of ``arrays`` is a CuPy array, else ``numpy``."""
    for a in arrays:
        if is_gpu_array(a):
            return _cupy_module()
    return np


def require_gpu():
    """Import and return CuPy, or raise a clear error when there is no CuPy or no CUDA device."""
    if importlib.util.find_spec("cupy") is None:
        raise RuntimeError(
            "tinynet: the GPU backend needs CuPy, which is not installed "
            "(from a clone of this repository: pip install -e '.[gpu]', or a cupy-cudaXXx wheel matching your "
            "CUDA; the name 'tinynet' on the package index is another project)."
        )
    problem = _cupy_problem()
    if problem is not None:
        raise RuntimeError(f"tinynet: {problem}.")
    import cupy

    return cupy


def to_device(array, device: str):
    """Move an array to ``'cpu'`` (NumPy) or ``'gpu'`` (CuPy); ``None`` stays ``None``."""
    if array is None:
        return None
    if device == "cpu":
        return array.get() if is_gpu_array(array) else np.asarray(array)
    if device == "gpu":
        cp = require_gpu()
        return cp.asarray(array)
    raise ValueError(f"to_device: device must be 'cpu' or 'gpu', got {device!r}")


def to_numpy(array):
    """Return ``array`` as a NumPy array (copies from the GPU when needed)."""
    return to_device(array, "cpu")


def check_same_device(who: str, named_arrays: dict) -> None:
    """Raise when NumPy and CuPy arrays are mixed, naming the layer and the arrays.

    Parameters
    ----------
    who : str
        The layer that is about to compute, as messages name it (``layer 'conv1' (Conv2D)``).
    named_arrays : dict of str -> array or None
        What it is about to combine, by a readable name ('input', 'kernel', ...).
    """
    if _cupy_module() is None:  # no CuPy array can exist: nothing to mix (the common CPU case, O(1))
        return
    kinds = {name: ("gpu" if is_gpu_array(a) else "cpu") for name, a in named_arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        detail = ", ".join(f"{name} on {dev}" for name, dev in kinds.items())
        raise TypeError(
            f"{who}: arrays on different devices ({detail}); "
            f"move the model with model.to('gpu'|'cpu') and pass inputs on the same device."
        )


# ------------------------------------------------------------------------------------ CPU kernels
def numba_available() -> bool:
    """True when Numba is installed."""
    return importlib.util.find_spec("numba") is not None


def _initial_cpu_kernels() -> str:
    requested = os.environ.get("TINYNET_CPU_KERNELS", "").strip().lower()
    if requested and requested not in _VALID_CPU_KERNELS:
        warnings.warn(
            f"TINYNET_CPU_KERNELS={requested!r} is not one of {_VALID_CPU_KERNELS}; using the default.",
            stacklevel=2,
        )
        requested = ""
    if requested == "numpy":
        return "numpy"
    if numba_available():
        return "numba"
    # Numba is the default (or was asked for) but is missing: say so once, in one line
    warnings.warn("tinynet: Numba is not installed; falling back to NumPy CPU kernels.", stacklevel=2)
    return "numpy"


_CPU_KERNELS = _initial_cpu_kernels()


def get_cpu_kernels() -> str:
    """Return the name of the CPU kernels in use: ``'numpy'`` or ``'numba'``."""
    return _CPU_KERNELS


def set_cpu_kernels(name: str) -> None:
    """Choose the CPU kernels: ``'numpy'`` (reference) or ``'numba'`` (compiled, parallel)."""
    global _CPU_KERNELS
    name = str(name).lower()
    if name not in _VALID_CPU_KERNELS:
        raise ValueError(f"set_cpu_kernels: expected one of {_VALID_CPU_KERNELS}, got {name!r}")
    if name == "numba" and not numba_available():
        warnings.warn("tinynet: Numba is not installed; falling back to NumPy CPU kernels.", stacklevel=2)
        name = "numpy"
    _CPU_KERNELS = name


def cpu_kernels(name: str):
    """Context manager: ``with cpu_kernels('numpy'): model.predict(x)``."""
    return _temporarily(get_cpu_kernels, set_cpu_kernels, name)


# ------------------------------------------------------------------------------- speed and memory
def _env_flag(name, default):
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    warnings.warn(f"tinynet: ignoring {name}={os.environ[name]!r} (expected 0 or 1)", stacklevel=3)
    return default


_FAST_PATHS = _env_flag("TINYNET_FAST_PATHS", True)
DEFAULT_KEEP_IM2COL_MIB = 4.0


def _check_keep(who, value):
    """``True`` / ``False`` / a size in MiB (≥ 0) as the limit in MiB (``inf`` / 0 / the size)."""
    if isinstance(value, (bool, np.bool_)):
        return float("inf") if value else 0.0
    if isinstance(value, (int, float, np.integer, np.floating)) and value >= 0:  # NaN fails the comparison
        return float(value)
    raise TypeError(f"{who}: expected True, False or a size in MiB (a number >= 0), got {value!r}")


def _env_keep():
    value = os.environ.get("TINYNET_KEEP_IM2COL", "").strip()
    try:
        return _check_keep("TINYNET_KEEP_IM2COL", float(value)) if value else DEFAULT_KEEP_IM2COL_MIB
    except (TypeError, ValueError):
        warnings.warn(f"tinynet: ignoring TINYNET_KEEP_IM2COL={value!r} (expected a size in MiB, inf or 0)",
                      stacklevel=3)
        return DEFAULT_KEEP_IM2COL_MIB


_KEEP_IM2COL_MIB = _env_keep()


def _check_bool(who, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: expected True or False, got {value!r}")
    return bool(value)


def fast_paths_enabled() -> bool:
    """Whether layers take their fused fast paths (see :func:`set_fast_paths`)."""
    return _FAST_PATHS


def set_fast_paths(enabled: bool) -> None:
    """Turn the layers' fused paths on (default) or off (the plain layer code, the reference they equal)."""
    global _FAST_PATHS
    _FAST_PATHS = _check_bool("set_fast_paths", enabled)


def fast_paths(enabled: bool):
    """Context manager: ``with fast_paths(False): model.forward(x)`` runs the plain layer code."""
    return _temporarily(fast_paths_enabled, set_fast_paths, enabled)


_WINOGRAD = _env_flag("TINYNET_WINOGRAD", True)


def winograd_enabled() -> bool:
    """Whether 3×3 stride-1 convolutions on the CPU take the Winograd path while fast paths are on (see
    :func:`set_winograd`)."""
    return _WINOGRAD


def set_winograd(enabled: bool) -> None:
    """Turn Winograd F(4×4, 3×3) for 3×3 stride-1 CPU convolutions on (default) or off (im2col); it only runs
    while fast paths are on (:func:`set_fast_paths`).

    Winograd's rounding error is relative to the largest value of each 6×6 input tile (backward: of each
    tile's upstream gradient), not to each output: ``|error| ≲ ε · max_tile |x| · Σ |g|`` over the filter's
    3×3×C kernel ``g``, ε the dtype's machine epsilon. On data of one scale that is about 1e-5 of the output's
    scale in float32 (im2col: about 1e-6); a small output in the tile of a much larger value loses more (a
    forward input whose largest value exceeds 10³ typical ones takes im2col instead). ``set_winograd(False)``
    gives every convolution im2col's precision. See :mod:`tinynet.layers.conv_winograd`."""
    global _WINOGRAD
    _WINOGRAD = _check_bool("set_winograd", enabled)


def winograd(enabled: bool):
    """Context manager: ``with winograd(False): model.forward(x)`` runs 3×3 convolutions through im2col."""
    return _temporarily(winograd_enabled, set_winograd, enabled)


def keep_im2col() -> float:
    """The largest im2col matrix (MiB) a k×k convolution keeps for backward: ``inf`` keeps all, 0 none (see
    :func:`set_keep_im2col`)."""
    return _KEEP_IM2COL_MIB


def keeps_im2col(nbytes: int) -> bool:
    """Whether an im2col matrix of ``nbytes`` is kept for backward under the current setting."""
    return nbytes <= _KEEP_IM2COL_MIB * 2 ** 20


def set_keep_im2col(keep) -> None:
    """What k×k convolutions keep for backward: ``True`` every im2col matrix (one im2col per layer faster,
    kh·kw times the input's memory), ``False`` none (backward gathers the windows from the input again), or a
    number: the matrices of at most that many MiB (default 4)."""
    global _KEEP_IM2COL_MIB
    _KEEP_IM2COL_MIB = _check_keep("set_keep_im2col", keep)


# ----------------------------------------------------------------------------------------- random
_GLOBAL_RNG = np.random.default_rng(0)


def set_seed(seed: int) -> None:
    """Seed tinynet's global generator, used for weight initialisation (like ``keras.utils.set_random_seed``)."""
    global _GLOBAL_RNG
    _GLOBAL_RNG = np.random.default_rng(seed)


def global_rng() -> np.random.Generator:
    """Return tinynet's global NumPy generator."""
    return _GLOBAL_RNG
