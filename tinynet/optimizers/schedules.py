"""Learning-rate schedules: Keras' per-step schedules and the trainer's per-epoch ones.

Two families, because two loops read them:

**Per optimizer step** (Keras' ``keras.optimizers.schedules``): a :class:`LearningRateSchedule` is given to an
optimizer as its ``learning_rate``; the optimizer evaluates it at every update with ``step`` = the number of
updates already made (0 for the first), exactly as Keras does.

================================  =====================================================================
schedule                          learning rate at step ``s``
================================  =====================================================================
:class:`ExponentialDecay`         ``η₀ · r^(s / S)``; with ``staircase=True``: ``η₀ · r^floor(s / S)``
:class:`CosineDecay`              ``η₀ · ((1 − α) · ½ (1 + cos(π min(s, S) / S)) + α)`` (optional linear
                                  warm-up from ``η₀`` to ``warmup_target`` over ``warmup_steps`` first)
:class:`PiecewiseConstantDecay`   ``values[i]`` for ``boundaries[i-1] < s <= boundaries[i]``
================================  =====================================================================

The paper's schedule (×0.96 every 8 epochs) is ``ExponentialDecay(η₀, decay_steps=8 * steps_per_epoch,
decay_rate=0.96, staircase=True)``.

**Per (fractional) epoch** (:class:`tinynet.training.Trainer`'s ``schedule``): a :class:`Schedule` maps
``epoch + batch / batches_per_epoch`` to a learning rate, which the trainer sets before every step:
:class:`Constant`, :class:`StepDecay` (the paper: ×0.96 every 8 epochs) and :class:`EpochCosineDecay`
(``tinynet.optim.CosineDecay``, its older name). Checkpoints store them by :meth:`Schedule.get_config`
(``{'name': 'step', ...}``); :func:`get_schedule` rebuilds them.

Examples
--------
>>> steps_per_epoch = 23
>>> paper = ExponentialDecay(0.01, decay_steps=8 * steps_per_epoch, decay_rate=0.96, staircase=True)
>>> SGD(learning_rate=paper, momentum=0.9)
"""
from __future__ import annotations

import math
import numbers


def _number(who, name, value, low=None, low_open=False, integer=False):
    """``value`` as a float (or int), after checking it is a finite real number in range; else ``ValueError``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{who}: {name} must be {kind}{bound}, got {value!r}")
    return int(value) if integer else float(value)


# ------------------------------------------------------------------------------------ per optimizer step
class LearningRateSchedule:
    """Base class of the per-step schedules (Keras' ``keras.optimizers.schedules.LearningRateSchedule``).

    A subclass implements ``__call__(step) -> float`` and ``get_config() -> dict`` (its constructor's
    arguments, so ``type(s)(**s.get_config())`` rebuilds it).
    """

    def __call__(self, step) -> float:
        raise NotImplementedError(f"learning rate schedule '{type(self).__name__}' must override __call__(step)")

    def get_config(self) -> dict:
        raise NotImplementedError(f"learning rate schedule '{type(self).__name__}' must override get_config()")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate · decay_rate ** (step / decay_steps)``, as Keras.

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : int or float, > 0
        Optimizer steps per decay period (e.g. ``8 * steps_per_epoch`` for "every 8 epochs").
    decay_rate : float
    staircase : bool, default False
        Decay at discrete intervals: the exponent is ``floor(step / decay_steps)``.
    name : str, default 'ExponentialDecay'

    Notes
    -----
    .. math:: η(s) = η_0 \\, r^{s / S} \\quad\\text{or, staircase,}\\quad η_0 \\, r^{\\lfloor s / S \\rfloor}
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        who = "ExponentialDecay"
        self.initial_learning_rate = _number(who, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(who, "decay_steps", decay_steps, low=0, low_open=True)
        self.decay_rate = _number(who, "decay_rate", decay_rate)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step):
        p = float(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay over ``decay_steps`` optimizer steps, with an optional linear warm-up, as Keras.

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : int or float, > 0
    alpha : float, default 0
        The floor, as a fraction of the rate decayed from.
    name : str, default 'CosineDecay'
    warmup_target : float, optional
        With a warm-up, the rate rises linearly from ``initial_learning_rate`` to ``warmup_target`` over
        ``warmup_steps``, then decays from ``warmup_target``.
    warmup_steps : int, default 0

    Notes
    -----
    Without warm-up, with :math:`s' = \\min(s, S)`:

    .. math:: η(s) = η_0 \\big((1 − α) \\tfrac12 (1 + \\cos(π s' / S)) + α\\big)
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        who = "CosineDecay"
        self.initial_learning_rate = _number(who, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(who, "decay_steps", decay_steps, low=0, low_open=True)
        self.alpha = _number(who, "alpha", alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else _number(who, "warmup_target", warmup_target)
        self.warmup_steps = _number(who, "warmup_steps", warmup_steps, low=0)

    def _decay(self, step, start):
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        step = float(step)
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return (self.warmup_target - self.initial_learning_rate) * fraction + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` up to step ``boundaries[0]`` (included), ``values[1]`` up to ``boundaries[1]``, ..., as Keras.

    Parameters
    ----------
    boundaries : list of int, increasing
    values : list of float, one more than ``boundaries``
    name : str, default 'PiecewiseConstant'
    """

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        who = "PiecewiseConstantDecay"
        self.boundaries = [_number(who, "boundaries", b) for b in boundaries]
        self.values = [_number(who, "values", v) for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"{who}: values must have one more entry than boundaries, got {len(self.values)} values "
                             f"and {len(self.boundaries)} boundaries")
        if any(b >= a for a, b in zip(self.boundaries[1:], self.boundaries)):
            raise ValueError(f"{who}: boundaries must increase, got {self.boundaries}")
        self.name = name

    def __call__(self, step):
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


STEP_SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, CosineDecay, PiecewiseConstantDecay)}


def serialize(schedule) -> dict:
    """``{'class_name': ..., 'config': {...}}`` of a per-step schedule (JSON-able), as Keras."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"serialize: expected a LearningRateSchedule, got {type(schedule).__name__}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config, custom_objects=None) -> LearningRateSchedule:
    """Rebuild a per-step schedule from :func:`serialize`'s dict.

    Parameters
    ----------
    config : dict ``{'class_name': str, 'config': dict}``
    custom_objects : dict of name -> class, optional
        Schedules of your own (subclasses of :class:`LearningRateSchedule`).

    Raises
    ------
    ValueError
        For an unknown class name or a config its constructor refuses.
    """
    known = dict(STEP_SCHEDULES, **(custom_objects or {}))
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str) \
            or not isinstance(config.get("config"), dict):
        raise ValueError(f"a serialized learning rate schedule is {{'class_name': str, 'config': dict}}, "
                         f"got {config!r}")
    name = config["class_name"]
    if name not in known:
        raise ValueError(f"unknown learning rate schedule {name!r}; available: {sorted(known)}")
    try:
        return known[name].from_config(dict(config["config"]))
    except TypeError as error:
        raise ValueError(f"learning rate schedule {name!r}: bad config ({error})") from None


# ------------------------------------------------------------------------------------ per epoch (Trainer)
class Schedule:
    """A learning rate as a function of the (fractional) epoch: ``schedule(epoch) -> lr`` (the trainer's)."""

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
        self.lr = _number("Constant", "lr", lr, low=0)

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
        self.lr = _number("StepDecay", "lr", lr, low=0)
        self.factor = _number("StepDecay", "factor", factor, low=0, low_open=True)
        self.every = _number("StepDecay", "every", every, low=0, low_open=True)

    def __call__(self, epoch):
        return self.lr * self.factor ** math.floor(epoch / self.every + 1e-9)

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "factor": self.factor, "every": self.every}


class EpochCosineDecay(Schedule):
    """Cosine annealing from ``lr`` to ``min_lr`` over ``epochs``, constant at ``min_lr`` afterwards.

    ``tinynet.optim.CosineDecay`` is this class (its name before Keras' per-step :class:`CosineDecay` arrived).

    .. math:: lr(e) = lr_{min} + \\tfrac12 (lr − lr_{min}) (1 + \\cos(π \\min(e, E) / E))
    """

    name = "cosine"

    def __init__(self, lr: float, epochs: float, min_lr: float = 0.0):
        self.lr = _number("CosineDecay", "lr", lr, low=0)
        self.epochs = _number("CosineDecay", "epochs", epochs, low=0, low_open=True)
        self.min_lr = _number("CosineDecay", "min_lr", min_lr, low=0)

    def __call__(self, epoch):
        progress = min(max(float(epoch), 0.0), self.epochs) / self.epochs
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "epochs": self.epochs, "min_lr": self.min_lr}


SCHEDULES = {cls.name: cls for cls in (Constant, StepDecay, EpochCosineDecay)}


def get_schedule(config) -> Schedule:
    """Rebuild a per-epoch schedule from :meth:`Schedule.get_config` (or pass a Schedule through).

    Raises
    ------
    TypeError
        For anything else, saying what it takes; a per-step :class:`LearningRateSchedule` (Keras',
        e.g. :class:`ExponentialDecay`) is pointed to the optimizer, which takes it as its learning rate.
    ValueError
        For an unknown name or arguments its class refuses.
    """
    if isinstance(config, Schedule):
        return config
    if isinstance(config, LearningRateSchedule):
        raise TypeError(f"{type(config).__name__} is a per-step schedule (Keras'): give it to the optimizer as its "
                        f"learning_rate, e.g. SGD(learning_rate={type(config).__name__}(...)); a per-epoch "
                        f"schedule is one of {sorted(SCHEDULES)}")
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise TypeError(f"expected a per-epoch schedule ({', '.join(c.__name__ for c in SCHEDULES.values())}) or "
                        f"its get_config() dict, got {type(config).__name__}")
    config = dict(config)
    name = config.pop("name")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; available: {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[name](**config)
    except TypeError as error:
        raise ValueError(f"schedule {name!r}: bad config ({error})") from None


__all__ = ["LearningRateSchedule", "ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay", "serialize",
           "deserialize", "Schedule", "Constant", "StepDecay", "EpochCosineDecay", "get_schedule", "SCHEDULES",
           "STEP_SCHEDULES"]
