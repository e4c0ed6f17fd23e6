"""Optimizers (SGD with momentum / Nesterov / weight decay, Adam) and learning-rate schedules.

An optimizer reads ``layer.grads[i]`` (left by :meth:`tinynet.Model.backward`) and updates
``layer.weights[i]`` in place, for trainable weights only (BatchNormalization's moving statistics are
left alone). Its per-weight state (velocities, moments) is keyed ``'<layer name>/<weight name>'`` so it
can be saved as plain arrays and restored into a rebuilt model.

The update rules are Keras 3's. With ``g`` the gradient, ``η`` the learning rate and ``t`` the step count
(starting at 1):

SGD, momentum ``μ`` (velocity ``v`` starts at 0):

.. math:: v ← μ v − η g, \\qquad w ← w + v \\quad\\text{or, Nesterov,}\\quad w ← w + μ v − η g

(``μ = 0``: ``w ← w − η g``).

Adam (``m``, ``v`` start at 0):

.. math:: m ← m + (1 − β_1)(g − m), \\quad v ← v + (1 − β_2)(g^2 − v), \\quad
          w ← w − η \\frac{\\sqrt{1 − β_2^t}}{1 − β_1^t} \\frac{m}{\\sqrt{v} + ε}

Weight decay ``λ`` is decoupled, as Keras applies it before the update: ``w ← w − η λ w``. For plain SGD
this equals an L2 penalty ``λ/2 ‖w‖²`` in the loss.

Schedules map an epoch number (a float: ``epoch + batch / batches_per_epoch``) to a learning rate:
:class:`Constant`, :class:`StepDecay` (the paper: ×0.96 every 8 epochs) and :class:`CosineDecay`.

Examples
--------
>>> opt = SGD(lr=0.01, momentum=0.9).attach(model)
>>> model.forward(x); model.backward(grads); opt.step()
"""
from __future__ import annotations

import math

import numpy as np

from . import backend


# ------------------------------------------------------------------------------------------ schedules
class Schedule:
    """A learning rate as a function of the (fractional) epoch: ``schedule(epoch) -> lr``."""

    name = "schedule"

    def __call__(self, epoch: float) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        """JSON-able constructor arguments plus ``'name'``; :func:`get_schedule` rebuilds from it."""
        raise NotImplementedError


class Constant(Schedule):
    """``lr(epoch) = lr``."""

    name = "constant"

    def __init__(self, lr: float):
        self.lr = float(lr)

    def __call__(self, epoch):
        return self.lr

    def get_config(self):
        return {"name": self.name, "lr": self.lr}


class StepDecay(Schedule):
    """The paper's schedule: ``lr(epoch) = lr · factor ** floor(epoch / every)`` (×0.96 every 8 epochs).

    Parameters
    ----------
    lr : float
        Initial learning rate.
    factor : float, default 0.96
    every : float, default 8
        Epochs between two decays.
    """

    name = "step"

    def __init__(self, lr: float, factor: float = 0.96, every: float = 8):
        if every <= 0:
            raise ValueError(f"StepDecay: every must be > 0, got {every!r}")
        self.lr, self.factor, self.every = float(lr), float(factor), float(every)

    def __call__(self, epoch):
        return self.lr * self.factor ** math.floor(epoch / self.every + 1e-9)

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "factor": self.factor, "every": self.every}


class CosineDecay(Schedule):
    """Cosine annealing from ``lr`` to ``min_lr`` over ``epochs``, constant at ``min_lr`` afterwards.

    .. math:: lr(e) = lr_{min} + \\tfrac12 (lr − lr_{min}) (1 + \\cos(π \\min(e, E) / E))
    """

    name = "cosine"

    def __init__(self, lr: float, epochs: float, min_lr: float = 0.0):
        if epochs <= 0:
            raise ValueError(f"CosineDecay: epochs must be > 0, got {epochs!r}")
        self.lr, self.epochs, self.min_lr = float(lr), float(epochs), float(min_lr)

    def __call__(self, epoch):
        progress = min(max(float(epoch), 0.0), self.epochs) / self.epochs
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "epochs": self.epochs, "min_lr": self.min_lr}


SCHEDULES = {cls.name: cls for cls in (Constant, StepDecay, CosineDecay)}


def get_schedule(config) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.get_config` (or pass a Schedule through)."""
    if isinstance(config, Schedule):
        return config
    config = dict(config)
    name = config.pop("name")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; available: {sorted(SCHEDULES)}")
    return SCHEDULES[name](**config)


# ----------------------------------------------------------------------------------------- optimizers
class Optimizer:
    """Base class: walks the trainable weights of a model and keeps per-weight state.

    Parameters
    ----------
    lr : float
        Learning rate (a trainer may overwrite ``self.lr`` each step from a schedule).
    weight_decay : float, default 0
        Decoupled decay: ``w ← w − lr · weight_decay · w`` before the update.

    Attributes
    ----------
    iterations : int
        Number of :meth:`step` calls so far.
    slots : dict of str -> dict of str -> ndarray
        ``slots[slot_name]['<layer>/<weight>']``: the state arrays (e.g. ``'velocity'``).
    """

    name = "optimizer"
    slot_names: tuple = ()

    def __init__(self, lr=0.01, weight_decay=0.0):
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.iterations = 0
        self.slots = {slot: {} for slot in self.slot_names}
        self.model = None

    # ------------------------------------------------------------- model and device
    def attach(self, model):
        """Bind to ``model`` and register with it, so ``model.to(device)`` also moves this state."""
        self.model = model
        if self not in model._device_listeners:
            model._device_listeners.append(self)
        return self

    def to(self, device):
        """Move every state array to ``'cpu'`` or ``'gpu'``."""
        for slot in self.slots.values():
            for key in slot:
                slot[key] = backend.to_device(slot[key], device)
        return self

    def _trainable(self, model):
        """Yield ``(key, layer, index)`` for every trainable weight of ``model``."""
        for layer in model.layers:
            for i, (name, trainable) in enumerate(zip(layer.weight_names, layer.trainable_flags)):
                if trainable:
                    yield f"{layer.name}/{name}", layer, i

    def _slot(self, slot, key, like):
        """The state array ``slots[slot][key]``, created as zeros shaped (and placed) like ``like``."""
        table = self.slots[slot]
        if key not in table:
            table[key] = backend.get_array_module(like).zeros_like(like)
        return table[key]

    # ------------------------------------------------------------- updating
    def step(self, model=None):
        """Apply one update to every trainable weight of ``model`` (default: the attached one)."""
        model = model if model is not None else self.model
        if model is None:
            raise RuntimeError(f"{type(self).__name__}.step: no model; call attach(model) or pass it")
        self.iterations += 1
        for key, layer, i in self._trainable(model):
            g = layer.grads[i]
            if g is None:
                raise RuntimeError(f"{type(self).__name__}: no gradient for '{key}'; run model.backward first")
            w = layer.weights[i]
            dtype = w.dtype.type
            if self.weight_decay:
                w -= dtype(self.lr * self.weight_decay) * w
            self._update(key, w, g.astype(w.dtype, copy=False))

    def _update(self, key, w, g):
        """Update ``w`` in place from gradient ``g``."""
        raise NotImplementedError

    # ------------------------------------------------------------- state
    def get_config(self) -> dict:
        """JSON-able hyper-parameters plus ``'name'``."""
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict:
        """The full state: ``{'config': {...}, 'iterations': int, 'arrays': {'slot:layer/weight': ndarray}}``.

        ``config`` and ``iterations`` are JSON-able; ``arrays`` are NumPy arrays (copied from the GPU if needed),
        ready for ``np.savez``.
        """
        arrays = {f"{slot}:{key}": backend.to_numpy(value).copy()
                  for slot, table in self.slots.items() for key, value in table.items()}
        return {"config": self.get_config(), "iterations": int(self.iterations), "arrays": arrays}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (arrays go to the attached model's device)."""
        config = dict(state["config"])
        if config.pop("name", self.name) != self.name:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state is for a {state['config']['name']!r}")
        for k, v in config.items():
            setattr(self, k, v)
        self.iterations = int(state["iterations"])
        device = self.model.device if self.model is not None else "cpu"
        self.slots = {slot: {} for slot in self.slot_names}
        for full_key, value in state["arrays"].items():
            slot, key = full_key.split(":", 1)
            if slot not in self.slots:
                raise ValueError(f"{type(self).__name__}.load_state_dict: unknown slot {slot!r}")
            self.slots[slot][key] = backend.to_device(np.array(value), device)
        return self


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay (Keras' SGD).

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0
    nesterov : bool, default False
    weight_decay : float, default 0
    """

    name = "sgd"
    slot_names = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, key, w, g):
        lr = w.dtype.type(self.lr)
        if self.momentum == 0.0:
            w -= lr * g
            return
        mu = w.dtype.type(self.momentum)
        v = self._slot("velocity", key, w)
        v *= mu
        v -= lr * g
        if self.nesterov:
            w += mu * v - lr * g
        else:
            w += v

    def get_config(self):
        return dict(super().get_config(), momentum=self.momentum, nesterov=self.nesterov)


class Adam(Optimizer):
    """Adam (Kingma & Ba), with Keras' defaults and its bias correction folded into the step size.

    Parameters
    ----------
    lr : float, default 0.001
    beta_1 : float, default 0.9
    beta_2 : float, default 0.999
    epsilon : float, default 1e-7
    weight_decay : float, default 0
    """

    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, key, w, g):
        t = self.iterations
        alpha = self.lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        f = w.dtype.type
        m = self._slot("m", key, w)
        v = self._slot("v", key, w)
        m += (g - m) * f(1.0 - self.beta_1)
        v += (g * g - v) * f(1.0 - self.beta_2)
        xp = backend.get_array_module(w)
        w -= (m * f(alpha)) / (xp.sqrt(v) + f(self.epsilon))

    def get_config(self):
        return dict(super().get_config(), beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam)}


def get_optimizer(config) -> Optimizer:
    """Build an optimizer from :meth:`Optimizer.get_config` (or a name with defaults)."""
    if isinstance(config, Optimizer):
        return config
    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; available: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](**config)


__all__ = ["Optimizer", "SGD", "Adam", "get_optimizer", "Schedule", "Constant", "StepDecay", "CosineDecay",
           "get_schedule", "SCHEDULES", "OPTIMIZERS"]
