"""The older name of :mod:`tinynet.optimizers`, kept so existing code runs unchanged.

Everything here is re-exported: ``SGD``, ``Adam``, ``Optimizer``, ``get_optimizer`` and the trainer's per-epoch
schedules ``Schedule``, ``Constant``, ``StepDecay`` and ``CosineDecay`` (which is
:class:`tinynet.optimizers.schedules.EpochCosineDecay`: cosine annealing over *epochs*, not Keras' per-step
``tinynet.optimizers.schedules.CosineDecay``), ``get_schedule`` and the registries. ``lr=`` still works in
the optimizers (a deprecated alias of ``learning_rate``), and ``optimizer.lr`` reads and sets the rate.

Examples
--------
>>> opt = SGD(0.01, momentum=0.9).attach(model)
>>> model.forward(x); model.backward(grads); opt.step()
"""
from __future__ import annotations

from .optimizers import OPTIMIZERS, SGD, Adam, Optimizer
from .optimizers import get as get_optimizer
from .optimizers.schedules import SCHEDULES, Constant, Schedule, StepDecay, get_schedule
from .optimizers.schedules import EpochCosineDecay as CosineDecay

__all__ = ["Optimizer", "SGD", "Adam", "get_optimizer", "Schedule", "Constant", "StepDecay", "CosineDecay",
           "get_schedule", "SCHEDULES", "OPTIMIZERS"]
