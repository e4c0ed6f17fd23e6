"""Saving and loading model weights as ``.npz`` files: atomic writes, bounded all-or-nothing reads, no pickle.

(This module was ``tinynet.io``; the name shadowed the standard library's :mod:`io`.)

File format
-----------
An uncompressed ``.npz`` (a zip of ``.npy`` arrays, as ``np.savez`` writes it) with one member per weight,
named ``'<layer name>/<weight name>'`` (``'conv1/kernel'``, ``'conv1_bn/moving_mean'``, ...), in the
model's layer order. BatchNormalization's moving statistics are weights like any other.

Guarantees
----------
Writing (:func:`save_weights`, hence :meth:`tinynet.Model.save_weights`) goes through
:func:`tinynet.fileio.atomic_write`: a kill, a full disk or any error while writing leaves the previous
file at ``path`` whole (and no temporary file behind, except after a ``SIGKILL`` or power loss, where a
``.<name>.<random>.tmp`` may remain beside it).

Reading (:func:`load_weights`, hence :meth:`tinynet.Model.load_weights`) checks, in this order, and
decompresses no data before the last step:

1. the zip directory: only ``.npy`` members, and none that the model has no weight for (refused by name);
2. every member's ``.npy`` header: no object dtype (pickle), a declared size equal to the member's size
   in the zip directory (so a small file cannot declare a huge array, nor a huge one a small array);
3. every shape equals the model's and every dtype is floating-point; no weight of the model is missing;
4. the data, with its CRC-32 checked, is converted to each weight's dtype;

and only then assigns, so on any error the model is exactly as it was. Non-finite values (NaN, inf) are
loaded as they are (a diverged run's weights are still a faithful record). Errors are
:class:`tinynet.fileio.FileFormatError` (a ``ValueError``) and name the file; a missing or unexpected
weight is also a ``KeyError`` and a wrong shape also a :class:`tinynet.layers.base.ShapeError`.
"""
from __future__ import annotations

import os

import numpy as np

from . import backend, fileio
from .fileio import FileFormatError
from .layers.base import ShapeError


class WeightsKeyError(FileFormatError, KeyError):
    """A weights file lacks weights of the model or holds weights the model does not have."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class WeightsShapeError(FileFormatError, ShapeError):
    """A weights file holds a weight whose shape differs from the model's."""


def weight_key(layer, weight_name) -> str:
    """The name of a weight in a file: ``'<layer name>/<weight name>'``."""
    return f"{layer.name}/{weight_name}"


def weight_arrays(model) -> dict:
    """``{'<layer>/<weight>': NumPy array}`` for every weight of ``model`` (copied from the GPU if needed)."""
    return {weight_key(layer, name): np.ascontiguousarray(backend.to_numpy(w))
            for layer in model.layers for name, w in zip(layer.weight_names, layer.weights)}


def expected_weights(model) -> dict:
    """``{'<layer>/<weight>': (shape, dtype)}`` for every weight of ``model``, in layer order."""
    return {weight_key(layer, name): (tuple(w.shape), np.dtype(w.dtype))
            for layer in model.layers for name, w in zip(layer.weight_names, layer.weights)}


def save_weights(model, path) -> str:
    """Write every weight of ``model`` to ``path`` as an uncompressed ``.npz``, atomically; return ``path``.

    The folder must exist. See the module notes for the format and the guarantees.
    """
    return fileio.save_npz(path, weight_arrays(model))


def read_weights(model, path, max_bytes=None, data=None) -> dict:
    """Read and check a weights file against ``model`` without changing the model.

    Parameters
    ----------
    model : tinynet.Model
    path : str or os.PathLike
    max_bytes : int, optional
        Cap on the file's total declared array size (default: :func:`tinynet.fileio.memory_bound`);
        the model's own shapes bound it anyway.
    data : bytes, optional
        The file's content, already read (and e.g. checksummed); ``path`` then only names it.

    Returns
    -------
    dict of '<layer>/<weight>' -> ndarray
        Every weight of the model, with the model's shape and dtype (NumPy arrays): ready for
        :func:`assign_weights`.

    Raises
    ------
    WeightsKeyError, WeightsShapeError, FileFormatError
    """
    path = os.fspath(path)
    expected = expected_weights(model)
    names = fileio.npz_names(path, data=data)                                 # 1. the zip directory
    unexpected = [n for n in names if n not in expected]
    if unexpected:
        raise WeightsKeyError(f"load_weights: {path} has weights no layer of this model owns, "
                              f"e.g. {unexpected[:5]}" + (f" ({len(unexpected)} in all)" if len(unexpected) > 5
                                                          else ""))
    headers = fileio.npz_headers(path, allowed=expected, max_bytes=max_bytes, data=data)  # 2. the headers
    for key, (got_shape, got_dtype) in headers.items():                         # 3. shapes, dtypes, names
        shape = expected[key][0]
        if got_shape != shape:
            layer, name = key.rsplit("/", 1)
            raise WeightsShapeError(f"load_weights: layer '{layer}' weight '{name}' has shape {shape} "
                                    f"but {path} holds {got_shape}")
        if got_dtype.kind != "f":
            raise FileFormatError(f"load_weights: {path}: weight {key!r} has dtype {got_dtype}, "
                                  f"expected a floating-point array")
    missing = [k for k in expected if k not in headers]
    if missing:
        raise WeightsKeyError(f"load_weights: {path} lacks {len(missing)} weights, e.g. {missing[:5]}")
    stored = fileio.read_npz(path, expected={k: (s, None) for k, (s, _) in expected.items()},
                             max_bytes=max_bytes, data=data)                   # 4. the data, CRC checked
    return {key: np.asarray(stored[key], dtype=dtype) for key, (_, dtype) in expected.items()}


def assign_weights(model, arrays):
    """Set every weight of ``model`` from ``{'<layer>/<weight>': array}`` as :func:`read_weights` returns it.

    Every key and shape is checked before anything changes; should a layer still fail (e.g. out of GPU
    memory), the layers already set are put back, so the model is wholly updated or not at all.
    """
    expected = expected_weights(model)
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise KeyError(f"assign_weights: no value for {len(missing)} weights, e.g. {missing[:5]}")
    for key, (shape, _) in expected.items():
        if tuple(np.shape(arrays[key])) != shape:
            raise ShapeError(f"assign_weights: weight {key!r} has shape {shape}, got {tuple(np.shape(arrays[key]))}")
    saved = [(layer, list(layer.weights), list(layer.grads)) for layer in model.layers if layer.weights]
    try:
        for layer, _, _ in saved:
            layer.set_weights([arrays[weight_key(layer, name)] for name in layer.weight_names])
    except BaseException:
        for layer, weights, grads in saved:
            layer.weights, layer.grads = weights, grads
        raise


def load_weights(model, path, max_bytes=None, data=None):
    """Load weights written by :func:`save_weights` into ``model``, all or nothing.

    See the module notes for the checks (every one runs before any weight changes) and the errors.
    Returns ``model``.
    """
    assign_weights(model, read_weights(model, path, max_bytes=max_bytes, data=data))
    return model


__all__ = ["save_weights", "load_weights", "read_weights", "assign_weights", "weight_arrays", "expected_weights",
           "weight_key", "WeightsKeyError", "WeightsShapeError", "FileFormatError"]
