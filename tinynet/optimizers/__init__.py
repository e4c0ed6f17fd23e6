"""Optimizers with Keras' names and arguments: :class:`SGD`, :class:`Adam`, and :mod:`.schedules`.

==========================  ==============================================================================
name                        what
==========================  ==============================================================================
:class:`SGD`                ``SGD(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0)``
:class:`Adam`               ``Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0)``
:mod:`.schedules`           per-step schedules (``ExponentialDecay``, ``CosineDecay``, ``PiecewiseConstantDecay``)
                            and the trainer's per-epoch ones (``Constant``, ``StepDecay``, ``EpochCosineDecay``)
:func:`get`                 an optimizer from a name (``'sgd'``, ``'adam'``), a config dict, or itself
==========================  ==============================================================================

A ``learning_rate`` may be a number or a per-step schedule (evaluated at every update, as Keras). ``lr=`` is
accepted as a deprecated alias. :mod:`tinynet.optim` is the older module name and re-exports all of this.

Examples
--------
>>> from tinynet import optimizers
>>> schedule = optimizers.schedules.ExponentialDecay(0.01, decay_steps=8 * 23, decay_rate=0.96, staircase=True)
>>> model.compile(optimizer=optimizers.SGD(learning_rate=schedule, momentum=0.9), loss="categorical_crossentropy")
"""
from __future__ import annotations

from . import schedules
from .adam import Adam
from .optimizer import NonFiniteGradientError, NonFiniteUpdateError, Optimizer
from .sgd import SGD

OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam)}


def get(identifier) -> Optimizer:
    """An optimizer from a name with defaults (``'sgd'``, ``'adam'``; any case), a config as
    :meth:`Optimizer.get_config` returns it (``{'name': 'sgd', 'learning_rate': 0.1, ...}``), or an
    :class:`Optimizer` (returned as it is).

    Raises
    ------
    ValueError
        For an unknown name, naming the ones there are.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        identifier = {"name": identifier}
    if not isinstance(identifier, dict):
        raise ValueError(f"optimizer must be a name ({sorted(OPTIMIZERS)}), a config dict or an Optimizer, "
                         f"got {type(identifier).__name__}")
    config = dict(identifier)
    name = str(config.get("name", "")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.get('name')!r}; available: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name].from_config(config)


def serialize(optimizer) -> dict:
    """The optimizer's JSON-able config (:meth:`Optimizer.get_config`)."""
    return optimizer.get_config()


def deserialize(config) -> Optimizer:
    """Rebuild an optimizer from :func:`serialize`'s dict."""
    return get(config)


get_optimizer = get  # the name tinynet.optim used

__all__ = ["Optimizer", "NonFiniteGradientError", "NonFiniteUpdateError", "SGD", "Adam", "schedules", "get",
           "serialize", "deserialize", "OPTIMIZERS"]
