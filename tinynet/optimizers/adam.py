"""Adam (Kingma & Ba) with Keras' defaults and its bias correction folded into the step size.

With ``g`` the gradient, ``η`` the learning rate and ``t`` the step count (starting at 1), ``m`` and ``v``
starting at 0:

.. math:: m ← m + (1 − β_1)(g − m), \\quad v ← v + (1 − β_2)(g^2 − v), \\quad
          w ← w − η \\frac{\\sqrt{1 − β_2^t}}{1 − β_1^t} \\frac{m}{\\sqrt{v} + ε}
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend, kernels
from .optimizer import Optimizer, _resolve_lr, fused_update


class Adam(Optimizer):
    """Adam, as Keras computes it.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
    beta_1 : float, default 0.9
    beta_2 : float, default 0.999
    epsilon : float, default 1e-7
    weight_decay : float, default 0
    lr : float, optional
        Deprecated name of ``learning_rate``.
    """

    name = "adam"
    slot_names = ("m", "v")
    non_negative_slots = ("v",)

    def __init__(self, learning_rate=None, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0, *, lr=None):
        super().__init__(learning_rate=_resolve_lr("Adam", learning_rate, lr, 0.001), weight_decay=weight_decay)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
                raise ValueError(f"Adam: {name} must be in [0, 1), got {value!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
            raise ValueError(f"Adam: epsilon must be > 0, got {epsilon!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, key, w, g, lr):
        t = self.iterations
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        f = w.dtype.type
        m = self._slot("m", key, w)
        v = self._slot("v", key, w)
        if fused_update():  # one pass (kernels.adam_update), the same bits as the lines below
            kernels.adam_update(w, g, m, v, self.beta_1, self.beta_2, alpha, self.epsilon)
            return
        m += (g - m) * f(1.0 - self.beta_1)
        v += (g * g - v) * f(1.0 - self.beta_2)
        xp = backend.get_array_module(w)
        w -= (m * f(alpha)) / (xp.sqrt(v) + f(self.epsilon))

    def _update_bounds(self, w_max, g_max, slot_max, lr, dtype):
        """Bounds of :meth:`_update` from the largest magnitudes (see :meth:`Optimizer._update_bounds`): the
        moments are convex combinations, ``|m'| ≤ max(max|m|, max|g|)`` and ``v' ≤ max(max v, max g²)``; the
        intermediates ``g − m`` and ``g²`` are bounded by ``max|g| + max|m|`` and ``max|g|²``; and the step by
        ``α |m'| / ε`` (``√v' ≥ 0``), so ``|w'| ≤ max|w|(1 + ηλ) + α |m'| / ε``. The step size ``α`` itself,
        rounded to the dtype, must be finite: it exceeds ``η`` when ``1 − β_1^t`` is small (``β_1`` near 1), and an
        infinite ``α`` times ``m' = 0`` is NaN."""
        t = self.iterations + 1
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        m = max(slot_max["m"], g_max)
        v = max(slot_max["v"], g_max * g_max)
        epsilon = float(np.dtype(dtype).type(self.epsilon))
        step = m * alpha / epsilon if epsilon > 0 else math.inf
        return [alpha, g_max + slot_max["m"], g_max * g_max, m, v, m * alpha, self._decayed(w_max, lr) + step]

    def get_config(self):
        return dict(super().get_config(), beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)


__all__ = ["Adam"]
