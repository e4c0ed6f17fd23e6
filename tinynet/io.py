"""Saving and loading weights as ``.npz`` (no pickle, ever)."""
from __future__ import annotations

import numpy as np

from . import backend
from .layers.base import ShapeError


def weight_key(layer, weight_name):
    return f"{layer.name}/{weight_name}"


def save_weights(model, path):
    """Write each weight of ``model`` as ``'<layer name>/<weight name>'`` in an uncompressed ``.npz``."""
    arrays = {weight_key(layer, name): backend.to_numpy(w)
              for layer in model.layers for name, w in zip(layer.weight_names, layer.weights)}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_weights(model, path):
    """Load weights written by :func:`save_weights` into ``model``.

    Every expected key must be present with the right shape; all checks run before any weight changes,
    so a bad file leaves the model as it was. The file is read with ``allow_pickle=False``.
    """
    with np.load(path, allow_pickle=False) as data:
        stored = {k: data[k] for k in data.files}
    plan = []
    missing = []
    for layer in model.layers:
        values = []
        for name, w in zip(layer.weight_names, layer.weights):
            key = weight_key(layer, name)
            if key not in stored:
                missing.append(key)
                continue
            if stored[key].shape != tuple(w.shape):
                raise ShapeError(f"load_weights: layer '{layer.name}' weight '{name}' has shape {tuple(w.shape)} "
                                 f"but {path} holds {stored[key].shape}")
            values.append(stored[key])
        if layer.weights:
            plan.append((layer, values))
    if missing:
        raise KeyError(f"load_weights: {path} lacks {len(missing)} weights, e.g. {missing[:5]}")
    unexpected = sorted(set(stored) - {weight_key(l, n) for l in model.layers for n in l.weight_names})
    if unexpected:
        raise KeyError(f"load_weights: {path} has weights no layer of this model owns, e.g. {unexpected[:5]}")
    for layer, values in plan:
        layer.set_weights(values)
