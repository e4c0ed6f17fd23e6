"""Argument normalisation and Keras' padding rules, shared by convolution and pooling layers.

Keras' rules (``padding='valid'`` or ``'same'``), for an axis of length ``n``, window ``k``, stride ``s``:

* valid: no padding, so ``out = floor((n - k) / s) + 1`` (an error when ``n < k``);
* same: the padding that gives ``out = ceil(n / s)``: in total ``p = max((out - 1) s + k - n, 0)``,
  ``floor(p/2)`` before and the rest after (so the odd cell goes to the bottom/right; conv1 7×7/2 on 224
  pads 2 and 3).

Either way the output size is :func:`tinynet.kernels.common.window_output_size` of the padded axis, the
function the kernels size their outputs with.
"""
from __future__ import annotations

import numpy as np

from ..kernels.common import window_output_size


def normalize_pair(value, name: str, layer):
    """``3`` → ``(3, 3)``; ``(3, 5)`` stays; raise ``ValueError`` naming ``layer`` for anything else.

    Each entry must be an integer >= 1 (NumPy integers too; booleans and floats such as ``3.0`` are refused,
    where Keras would silently keep a float). Keras' messages say "a tuple of 2 integers"; so do these.
    """
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if is_int(value):
        pair = (value, value)
    elif (isinstance(value, (tuple, list, np.ndarray)) and np.ndim(value) == 1 and len(value) == 2
          and all(is_int(v) for v in value)):
        pair = tuple(value)
    else:
        raise ValueError(f"{layer.label}: {name} must be an int or a pair of ints (a tuple of 2 integers), "
                         f"got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{layer.label}: {name} must be >= 1, got {value!r}")
    return tuple(int(v) for v in pair)


def normalize_padding(value, layer) -> str:
    """``'valid'`` or ``'same'``, in any case (as Keras); raise ``ValueError`` naming ``layer`` otherwise."""
    padding = value.lower() if isinstance(value, str) else None
    if padding not in ("valid", "same"):
        raise ValueError(f"{layer.label}: padding must be 'valid' or 'same', got {value!r}")
    return padding


def same_padding(n: int, k: int, s: int):
    """``(pad_before, pad_after)`` of Keras' 'same' padding for one axis: the fewest cells that make
    ``ceil(n / s)`` windows fit, the odd one after."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def output_and_padding(n: int, k: int, s: int, padding: str):
    """Return ``(out, pad_before, pad_after)`` for one axis, as Keras computes them (``out`` is 0 when a
    'valid' window is larger than the axis)."""
    before, after = same_padding(n, k, s) if padding == "same" else (0, 0)
    return max(window_output_size(n, k, s, before, after), 0), before, after


def window_geometry(layer, input_shape, kernel, strides, padding):
    """Output (Ho, Wo) and pads (top, bottom, left, right) of a 2-D window over an (H, W, C) input.

    Raises the layer's :class:`ShapeError` when the window does not fit the (padded) input.
    """
    layer._require_rank(input_shape, 3, "(batch, height, width, channels)")
    h, w = input_shape[0], input_shape[1]
    ho, top, bottom = output_and_padding(h, kernel[0], strides[0], padding)
    wo, left, right = output_and_padding(w, kernel[1], strides[1], padding)
    if ho < 1 or wo < 1:
        raise layer._shape_error(
            f"window {kernel[0]}x{kernel[1]} is larger than the {padding}-padded input {h}x{w}", input_shape)
    return (ho, wo), (top, bottom, left, right)
