"""Checkpoints: everything a training run needs to continue exactly, as ``.npz`` arrays + JSON (no pickle).

A checkpoint is a folder:

==================  ==========================================================================================
``weights.npz``     every model weight, ``'<layer>/<weight>'`` (BatchNormalization moving statistics included)
``optimizer.npz``   the optimizer's state arrays, ``'<slot>:<layer>/<weight>'`` (velocities, Adam moments)
``checkpoint.json`` epoch, history, optimizer hyper-parameters and step count, schedule, the state of every
                    random generator (the trainer's shuffling/augmentation generator, each Dropout layer's
                    ``rng``, tinynet's global generator) and a free-form ``config`` (how to rebuild the model)
==================  ==========================================================================================

NumPy generator states are dicts of (big) integers, so JSON holds them exactly; arrays are written with
``np.savez`` and read with ``allow_pickle=False``. The JSON file is written last, by an atomic rename, so a
run interrupted while saving leaves the previous checkpoint readable.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import backend, io
from .optim import get_schedule

FORMAT_VERSION = 1
WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE = "weights.npz", "optimizer.npz", "checkpoint.json"


def dropout_layers(model):
    """The layers of ``model`` that own a random generator (``layer.rng``), by name."""
    return {layer.name: layer for layer in model.layers if isinstance(getattr(layer, "rng", None),
                                                                      np.random.Generator)}


def rng_states(model, trainer_rng=None) -> dict:
    """JSON-able states of every generator a training run draws from."""
    states = {"global": backend.global_rng().bit_generator.state,
              "layers": {name: layer.rng.bit_generator.state for name, layer in dropout_layers(model).items()}}
    if trainer_rng is not None:
        states["trainer"] = trainer_rng.bit_generator.state
    return states


def set_rng_states(model, states, trainer_rng=None):
    """Restore :func:`rng_states` into the model's layers, the global generator and ``trainer_rng``."""
    backend.global_rng().bit_generator.state = states["global"]
    layers = dropout_layers(model)
    missing = sorted(set(layers) - set(states["layers"]))
    if missing:
        raise KeyError(f"checkpoint: no generator state for layers {missing}")
    for name, layer in layers.items():
        layer.rng.bit_generator.state = states["layers"][name]
    if trainer_rng is not None and "trainer" in states:
        trainer_rng.bit_generator.state = states["trainer"]


def _write_npz(path, arrays):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def save(directory, trainer, config=None):
    """Write a checkpoint of ``trainer`` (a :class:`tinynet.training.Trainer`) into ``directory``.

    Parameters
    ----------
    directory : str
        Created if needed; files there are replaced.
    config : dict, optional
        JSON-able description of the run (model variant, input shape, classes, normalisation, ...).
    """
    os.makedirs(directory, exist_ok=True)
    model, optimizer = trainer.model, trainer.optimizer
    tmp_weights = os.path.join(directory, WEIGHTS_FILE + ".tmp")
    io.save_weights(model, tmp_weights)
    os.replace(tmp_weights, os.path.join(directory, WEIGHTS_FILE))
    opt_state = optimizer.state_dict()
    _write_npz(os.path.join(directory, OPTIMIZER_FILE), opt_state["arrays"])
    state = {
        "format": FORMAT_VERSION,
        "epoch": int(trainer.epoch),
        "history": trainer.history,
        "optimizer": {"config": opt_state["config"], "iterations": opt_state["iterations"]},
        "schedule": trainer.schedule.get_config(),
        "loss_weights": trainer.loss_weights,
        "batch_size": trainer.batch_size,
        "rng": rng_states(model, trainer.rng),
        "grad_norms": trainer.grad_norms,
        "config": config or {},
    }
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, os.path.join(directory, STATE_FILE))
    return directory


def read_state(directory) -> dict:
    """The JSON part of a checkpoint (e.g. to read ``config`` and rebuild the model first)."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint: {path} not found (no checkpoint in {directory!r})")
    with open(path) as f:
        state = json.load(f)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint: {path} has format {state.get('format')!r}, expected {FORMAT_VERSION}")
    return state


def load_weights(directory, model):
    """Load only the model weights of a checkpoint (for evaluation and prediction)."""
    io.load_weights(model, os.path.join(directory, WEIGHTS_FILE))
    return read_state(directory)


def load(directory, trainer) -> dict:
    """Restore a checkpoint into ``trainer``: weights, optimizer state, schedule, generators, epoch, history.

    The trainer must have been built on the same model architecture (layer names) and optimizer type.

    Returns
    -------
    dict : the checkpoint's JSON state (``config`` included)
    """
    state = read_state(directory)
    model = trainer.model
    io.load_weights(model, os.path.join(directory, WEIGHTS_FILE))
    with np.load(os.path.join(directory, OPTIMIZER_FILE), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    trainer.optimizer.load_state_dict({**state["optimizer"], "arrays": arrays})
    trainer.schedule = get_schedule(state["schedule"])
    trainer.loss_weights = list(state["loss_weights"])
    trainer.batch_size = int(state["batch_size"])
    set_rng_states(model, state["rng"], trainer.rng)
    trainer.epoch = int(state["epoch"])
    trainer.history = {k: list(v) for k, v in state["history"].items()}
    if state.get("grad_norms") is not None and trainer.grad_norms is not None:
        trainer.grad_norms = state["grad_norms"]
    return state


__all__ = ["save", "load", "load_weights", "read_state", "rng_states", "set_rng_states"]
