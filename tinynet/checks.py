"""Argument checks shared by the engine, the trainer, the callbacks, the data tools and the gradient checker.

A leaf module (it imports nothing from tinynet), so that any of them can use it without an import cycle.
"""
from __future__ import annotations

import numpy as np


def short_repr(value, limit=80) -> str:
    """``repr(value)``, cut to about ``limit`` characters with its full length (a hand-edited manifest may hold a
    number of 4,000 digits, a zip member a name of 64 KiB): for error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:max(limit - 20, 10)]}... ({len(text)} characters)"


def check_number(who, name, value, low=None, high=None, integer=False, low_open=False):
    """``value`` as a float (or int) after checking it is a finite real number in the range; else ``ValueError``
    ``'<who>: <name> must be ...'``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        number = float(value)
        ok = np.isfinite(number) and (low is None or (number > low if low_open else number >= low)) \
            and (high is None or number <= high)
    if not ok:
        bound = ("" if low is None else f" {'>' if low_open else '>='} {low:g}") + \
                ("" if high is None else f" and <= {high:g}")
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{who}: {name} must be {kind}{bound}, got {value!r}")
    return int(value) if integer else float(value)


def check_flag(who, name, value, error=TypeError, integers=False):
    """``value`` as a bool, after checking it is ``True`` or ``False`` (NumPy's too; with ``integers`` also the
    integers 0 and 1, which Keras' layers take for their flags); else ``error``
    ``'<who>: <name> must be True or False'`` (a string such as ``'no'`` would otherwise read as True)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if integers and isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise error(f"{who}: {name} must be True or False, got {value!r}")


def check_training(who, value):
    """The ``training`` argument of a layer or model call as a bool: ``True``, ``False`` (NumPy's too) or
    ``None`` (inference, as Keras reads it); anything else raises ``TypeError`` naming ``who`` (a string such
    as ``'False'`` would otherwise run Dropout and update BatchNormalization's statistics)."""
    if value is None:
        return False
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: training must be True, False or None, got {value!r}")
    return bool(value)


__all__ = ["check_number", "check_flag", "check_training"]
