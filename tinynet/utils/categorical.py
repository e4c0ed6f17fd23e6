"""Class indices as one-hot rows, as ``keras.utils.to_categorical``."""
from __future__ import annotations

import numpy as np


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot encode integer class indices.

    Parameters
    ----------
    y : array-like of int, shape (N,) or (N, ..., 1)
        Class indices in ``[0, num_classes)``. A trailing axis of size 1 is dropped, as Keras does.
    num_classes : int, optional
        Default: ``max(y) + 1``.
    dtype : str, default 'float32'

    Returns
    -------
    ndarray, shape ``y.shape + (num_classes,)`` (after dropping a trailing 1)

    Raises
    ------
    ValueError
        For non-integer values, negative indices or indices ``>= num_classes``.
    """
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.size and (y.dtype.kind not in "biu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0))):
        raise ValueError(f"to_categorical: class indices must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
        raise ValueError(f"to_categorical: num_classes must be a non-negative integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: class indices must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out


__all__ = ["to_categorical"]
