"""Weight initialisers (Keras defaults), drawn from tinynet's seeded global generator."""
from __future__ import annotations

import numpy as np

from ..backend import global_rng


def glorot_uniform(shape, fan_in, fan_out):
    """Uniform on [−l, l] with ``l = sqrt(6 / (fan_in + fan_out))`` (Keras' default kernel initialiser)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return global_rng().uniform(-limit, limit, size=shape)
