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
        model.add_device_listener(self)
        return self

    def to(self, device):
        """Move every state array to ``'cpu'`` or ``'gpu'``."""
        for slot in self.slots.values():
            for key in slot:
                slot[key] = backend.to_device(slot[key], device)
        return self

    @staticmethod
    def trainable_entries(model):
        """Yield ``(key, layer, index)`` for every trainable weight of ``model``: ``key`` is
        ``'<layer name>/<weight name>'``, the key of the weight's state in :attr:`slots`, and the weight is
        ``layer.weights[index]``."""
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
        for key, layer, i in self.trainable_entries(model):
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
        ready for ``np.savez``. A slot that has been used holds one array per trainable weight.
        """
        arrays = {f"{slot}:{key}": backend.to_numpy(value).copy()
                  for slot, table in self.slots.items() for key, value in table.items()}
        return {"config": self.get_config(), "iterations": int(self.iterations), "arrays": arrays}

    def validate_state_dict(self, state) -> dict:
        """Check ``state`` (as :meth:`state_dict` returns it) against this optimizer and its model; change nothing.

        Checked: the three fields; ``config`` has this optimizer's name and exactly its keys, with values of
        the right types that its constructor accepts; ``iterations`` is a non-negative integer; every array
        key is ``'<slot>:<layer>/<weight>'`` with one of this optimizer's slots and, when a model is
        attached, a trainable weight of that model with the same shape, and a slot that is present covers
        every trainable weight (so state from another model is refused here, with the keys that differ,
        not at the first step); every array is floating-point.

        Returns
        -------
        dict
            ``{'config': {...}, 'iterations': int, 'slots': {slot: {key: array}}}``, arrays converted to the
            weights' dtypes and placed on the model's device: what :meth:`load_state_dict` assigns.

        Raises
        ------
        ValueError
            Naming what is wrong.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise ValueError(f"{where}: expected a dict with 'config', 'iterations' and 'arrays', "
                             f"got {type(state).__name__}")
        missing = [k for k in ("config", "iterations", "arrays") if k not in state]
        if missing:
            raise ValueError(f"{where}: the state lacks {missing}")
        config = state["config"]
        if not isinstance(config, dict):
            raise ValueError(f"{where}: 'config' must be a dict, got {type(config).__name__}")
        name = config.get("name", self.name)
        if name != self.name:
            raise ValueError(f"{where}: the state is for a {name!r} optimizer, this one is {self.name!r}")
        current = {k: v for k, v in self.get_config().items() if k != "name"}
        given = {k: v for k, v in config.items() if k != "name"}
        if set(given) != set(current):
            raise ValueError(f"{where}: config keys differ: missing {sorted(set(current) - set(given))}, "
                             f"unknown {sorted(set(given) - set(current))}")
        clean = {}
        for key, value in given.items():
            if isinstance(current[key], bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"{where}: config {key!r} must be a bool, got {value!r}")
                clean[key] = bool(value)
            elif isinstance(current[key], (int, float)):
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                        or not math.isfinite(value):
                    raise ValueError(f"{where}: config {key!r} must be a finite number, got {value!r}")
                clean[key] = type(current[key])(value)
            else:
                clean[key] = value
        try:
            type(self)(**clean)  # the constructor's own range checks (e.g. SGD's momentum in [0, 1))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: bad config: {error}") from None
        iterations = state["iterations"]
        if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise ValueError(f"{where}: 'iterations' must be a non-negative integer, got {iterations!r}")
        arrays = state["arrays"]
        if not isinstance(arrays, dict):
            raise ValueError(f"{where}: 'arrays' must be a dict, got {type(arrays).__name__}")
        trainable = ({key: layer.weights[i] for key, layer, i in self.trainable_entries(self.model)}
                     if self.model is not None else None)
        slots = {slot: {} for slot in self.slot_names}
        unknown, wrong_shape = [], []
        for full_key, value in arrays.items():
            if not isinstance(full_key, str) or ":" not in full_key:
                raise ValueError(f"{where}: array key {full_key!r} is not '<slot>:<layer>/<weight>'")
            slot, key = full_key.split(":", 1)
            if slot not in slots:
                raise ValueError(f"{where}: unknown slot {slot!r} in {full_key!r}; {type(self).__name__} has "
                                 f"{list(self.slot_names) or 'none'}")
            value = np.asarray(value)
            if value.dtype.kind != "f":
                raise ValueError(f"{where}: {full_key!r} has dtype {value.dtype}, expected a floating-point array")
            if trainable is not None:
                if key not in trainable:
                    unknown.append(full_key)
                    continue
                if value.shape != tuple(trainable[key].shape):
                    wrong_shape.append(f"{full_key} {value.shape} (weight {tuple(trainable[key].shape)})")
                    continue
                value = value.astype(trainable[key].dtype)
            else:
                value = value.copy()
            slots[slot][key] = value
        incomplete = []
        if trainable is not None:
            for slot, table in slots.items():
                if table:
                    incomplete += [f"{slot}:{key}" for key in trainable if key not in table]
        if unknown or wrong_shape or incomplete:
            parts = []
            if unknown:
                parts.append(f"{len(unknown)} key(s) for weights that are not trainable weights of this model, "
                             f"e.g. {unknown[:5]}")
            if wrong_shape:
                parts.append(f"{len(wrong_shape)} shape(s) that differ, e.g. {wrong_shape[:5]}")
            if incomplete:
                parts.append(f"no state for {len(incomplete)} trainable weight(s), e.g. {incomplete[:5]}")
            raise ValueError(f"{where}: the state is not for this model: " + "; ".join(parts))
        device = self.model.device if self.model is not None else "cpu"
        slots = {slot: {key: backend.to_device(v, device) for key, v in table.items()} for slot, table in slots.items()}
        return {"config": clean, "iterations": int(iterations), "slots": slots}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, all or nothing (arrays go to the attached model's device).

        Everything is checked first (see :meth:`validate_state_dict`); on any error this optimizer is left
        exactly as it was. Attach the optimizer to its model before loading, so the keys and shapes are
        checked against it.
        """
        prepared = self.validate_state_dict(state)
        for key, value in prepared["config"].items():
            setattr(self, key, value)
        self.iterations = prepared["iterations"]
        self.slots = prepared["slots"]
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
