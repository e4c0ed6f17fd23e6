"""Saving and loading model weights as ``.npz`` files: atomic writes, bounded all-or-nothing reads, no pickle.

(This module was ``tinynet.io``; the name shadowed the standard library's :mod:`io`.)

File format
-----------
An uncompressed ``.npz`` (a zip of ``.npy`` arrays, as ``np.savez`` writes it) with one member per weight,
named ``'<layer name>/<weight name>'`` (``'conv1/kernel'``, ``'conv1_bn/moving_mean'``, ...), in the
model's layer order. BatchNormalization's moving statistics are weights like any other.

Guarantees
----------
Writing (:func:`save_weights`, hence :meth:`tinynet.Model.save_weights`) refuses, before writing anything, a
weight that reading would refuse (step 5 below: NaN, inf, a negative moving variance), and goes through
:func:`tinynet.fileio.atomic_write`: a kill, a full disk or any error while writing leaves the previous
file at ``path`` whole (and no temporary file behind, except after a ``SIGKILL`` or power loss, where a
``.<name>.<random>.tmp`` may remain beside it).

Reading (:func:`load_weights`, hence :meth:`tinynet.Model.load_weights`) checks, in this order, and
decompresses no data before step 4:

1. the zip directory: only ``.npy`` members, each named ``'<layer>/<weight>'``;
2. which member is which weight: by name when the names are the model's; otherwise *by layer order*, as
   Keras loads a legacy HDF5 file without ``by_name`` (below); a file that fits neither is refused, and the
   message says why;
3. every member's ``.npy`` header: no object dtype (pickle), a declared size equal to the member's size
   in the zip directory (so a small file cannot declare a huge array, nor a huge one a small array);
   every shape equals the model's and every dtype is floating-point; no weight of the model is missing;
4. the data, with its CRC-32 checked, is converted to each weight's dtype;
5. every value is one its layer accepts (:meth:`tinynet.layers.Layer.prepare_weights`): finite once cast
   (a diverged run's NaN or inf are refused, not loaded), BatchNormalization's ``moving_variance`` >= 0;

and only then assigns, so on any error the model is exactly as it was. Errors are
:class:`tinynet.fileio.FileFormatError` (a ``ValueError``) and name the file; a missing or unexpected
weight is also a ``KeyError`` and a wrong shape also a :class:`tinynet.layers.base.ShapeError`.

Loading by layer order
----------------------
Automatic layer names count up within a process (``conv2d``, then ``conv2d_1``, ...), so the same
architecture built twice gets different names, and a file saved from the first does not name the second's
layers. When the names differ, the file is still loaded if its layers, in the order they were saved (the
model's layer order), and the model's layers that have weights match one to one: as many layers, each with
the same weight names in the same order and every shape equal, and no layer name that both sides use paired
with another layer. Otherwise the file is refused; naming the layers (``Conv2D(..., name='conv1')``) or
calling :func:`tinynet.layers.reset_names` before building each model makes the names agree.
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


def check_loadable(model, arrays, who="save_weights"):
    """Raise ``ValueError`` unless :func:`load_weights` would take ``arrays`` (as :func:`weight_arrays` returns
    them) back into ``model``: every layer's values pass its own check (:meth:`tinynet.layers.Layer.
    prepare_weights`: finite once cast to the layer's dtype; BatchNormalization's ``moving_variance`` >= 0).
    The message names ``who``, the layer and the weight, and says that nothing was written."""
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            layer.prepare_weights([arrays[weight_key(layer, name)] for name in layer.weight_names])
        except ValueError as error:
            raise ValueError(f"{who}: cannot save {error}; load_weights would refuse such a file, so nothing was "
                             f"written") from None


def save_weights(model, path) -> str:
    """Write every weight of ``model`` to ``path`` as an uncompressed ``.npz``, atomically; return ``path``.

    The folder must exist. See the module notes for the format and the guarantees. A weight that
    :func:`load_weights` would refuse (NaN or inf, a negative moving variance) is refused here first, with
    ``ValueError`` naming the layer and the weight, and nothing is written.
    """
    arrays = weight_arrays(model)
    check_loadable(model, arrays)
    return fileio.save_npz(path, arrays)


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
        Every weight of the model (keyed by the model's names, also when the file was matched by layer
        order), with the model's shape and dtype (NumPy arrays): ready for :func:`assign_weights`.

    Raises
    ------
    WeightsKeyError, WeightsShapeError, FileFormatError
    """
    path = os.fspath(path)
    expected = expected_weights(model)
    names = fileio.npz_names(path, data=data)                                 # 1. the zip directory
    hint = ""
    if set(names) == set(expected):                                           # 2. which member is which
        keys = {key: key for key in expected}
        headers = fileio.npz_headers(path, allowed=expected, max_bytes=max_bytes, data=data)
    else:
        headers = fileio.npz_headers(path, max_bytes=max_bytes, data=data)
        keys, why_not = _keys_by_layer_order(model, names, headers)
        if keys is None:  # by name as far as the names go, for the errors below
            keys = {key: key for key in expected if key in headers}
            hint = (f"; nor does it fit the model by layer order ({why_not}). Automatic layer names (conv2d, "
                    f"conv2d_1, ...) count up within a process, so the same architecture built twice gets "
                    f"different names: name the layers, or call tinynet.layers.reset_names() before building "
                    f"each model")
            unexpected = [n for n in names if n not in expected]
            if unexpected:
                raise WeightsKeyError(f"load_weights: {path} has weights no layer of this model owns, "
                                      f"e.g. {unexpected[:5]}" + (f" ({len(unexpected)} in all)"
                                                                  if len(unexpected) > 5 else "") + hint)
    for key, file_key in keys.items():                                        # 3. shapes, dtypes, names
        (shape, _), (got_shape, got_dtype) = expected[key], headers[file_key]
        if got_shape != shape:
            layer, name = key.rsplit("/", 1)
            raise WeightsShapeError(f"load_weights: layer '{layer}' weight '{name}' has shape {shape} "
                                    f"but {path} holds {got_shape}")
        if got_dtype.kind != "f":
            raise FileFormatError(f"load_weights: {path}: weight {file_key!r} has dtype {got_dtype}, "
                                  f"expected a floating-point array")
    missing = [k for k in expected if k not in keys]
    if missing:
        raise WeightsKeyError(f"load_weights: {path} lacks {len(missing)} weights, e.g. {missing[:5]}" + hint)
    stored = fileio.read_npz(path, expected={keys[k]: (s, None) for k, (s, _) in expected.items()},
                             max_bytes=max_bytes, data=data)                   # 4. the data, CRC checked
    with np.errstate(over="ignore", invalid="ignore"):  # a float64 beyond float32's range: refused just below
        # C order, as the model built them: a file may store Fortran-ordered arrays
        arrays = {key: np.ascontiguousarray(stored[keys[key]], dtype=dtype) for key, (_, dtype) in expected.items()}
    for layer in model.layers:                                                # 5. the values
        try:
            layer.prepare_weights([arrays[weight_key(layer, name)] for name in layer.weight_names])
        except ValueError as error:
            raise FileFormatError(f"load_weights: {path}: {error}") from None
    return arrays


def _layers_in_order(keys):
    """``[(layer name, [weight name, ...]), ...]`` for ``'<layer>/<weight>'`` keys, in their order; ``None``
    when a key has no ``'/'`` or a layer's weights are not together."""
    layers = []
    for key in keys:
        if "/" not in key:
            return None
        layer, weight = key.rsplit("/", 1)
        if layers and layers[-1][0] == layer:
            layers[-1][1].append(weight)
        elif any(name == layer for name, _ in layers):
            return None
        else:
            layers.append((layer, [weight]))
    return layers


def _keys_by_layer_order(model, names, headers):
    """``({model key: file key}, '')`` pairing the file's layers (in its order) with the model's layers that have
    weights (see "Loading by layer order" in the module notes), or ``(None, why not)``."""
    saved = _layers_in_order(names)
    if saved is None:
        return None, "its members are not grouped by layer"
    mine = [layer for layer in model.layers if layer.weights]
    if len(saved) != len(mine):
        return None, f"it has {len(saved)} layers with weights, the model {len(mine)}"
    both = {name for name, _ in saved} & {layer.name for layer in mine}
    keys = {}
    for position, ((saved_name, saved_weights), layer) in enumerate(zip(saved, mine)):
        where = f"layer {position} with weights: '{saved_name}' in the file, '{layer.name}' in the model"
        if saved_name != layer.name and (saved_name in both or layer.name in both):
            return None, f"{where}, though both names are on both sides"
        if saved_weights != layer.weight_names:
            return None, f"{where}, weights {saved_weights} vs {layer.weight_names}"
        for weight_name, w in zip(layer.weight_names, layer.weights):
            file_key = f"{saved_name}/{weight_name}"
            if headers[file_key][0] != tuple(w.shape):
                return None, f"{where}, weight '{weight_name}' of shape {headers[file_key][0]} vs {tuple(w.shape)}"
            keys[weight_key(layer, weight_name)] = file_key
    return keys, ""


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
           "check_loadable",
           "weight_key", "WeightsKeyError", "WeightsShapeError", "FileFormatError"]
