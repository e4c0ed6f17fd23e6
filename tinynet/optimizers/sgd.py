"""Stochastic gradient descent with momentum, Nesterov momentum and decoupled weight decay (Keras' ``SGD``).

With ``g`` the gradient, ``η`` the learning rate and momentum ``μ`` (velocity ``v`` starts at 0):

.. math:: v ← μ v − η g, \\qquad w ← w + v \\quad\\text{or, Nesterov,}\\quad w ← w + μ v − η g

(``μ = 0``: ``w ← w − η g``). Weight decay ``λ`` first: ``w ← w − η λ w``; for plain SGD this equals an L2
penalty ``λ/2 ‖w‖²`` in the loss.
"""
from __future__ import annotations

import numbers
from .. import kernels
from .optimizer import Optimizer, _resolve_lr, fused_update


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay (Keras' SGD).

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.01
    momentum : float in [0, 1), default 0
    nesterov : bool, default False
    weight_decay : float, default 0
    lr : float, optional
        Deprecated name of ``learning_rate``.

    Examples
    --------
    >>> opt = SGD(learning_rate=0.01, momentum=0.9).attach(model)
    >>> model.forward(x); model.backward(grads); opt.step()
    """

    name = "sgd"
    slot_names = ("velocity",)

    def __init__(self, learning_rate=None, momentum=0.0, nesterov=False, weight_decay=0.0, *, lr=None):
        super().__init__(learning_rate=_resolve_lr("SGD", learning_rate, lr, 0.01), weight_decay=weight_decay)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, key, w, g, lr):
        lr = w.dtype.type(lr)
        if self.momentum == 0.0:
            w -= lr * g
            return
        v = self._slot("velocity", key, w)
        if fused_update():  # one pass (kernels.sgd_momentum_update), the same bits as the lines below
            kernels.sgd_momentum_update(w, g, v, lr, self.momentum, self.nesterov)
            return
        mu = w.dtype.type(self.momentum)
        v *= mu
        v -= lr * g
        if self.nesterov:
            w += mu * v - lr * g
        else:
            w += v

    def _update_bounds(self, w_max, g_max, slot_max, lr, dtype):
        """Bounds of :meth:`_update` from the largest magnitudes (see :meth:`Optimizer._update_bounds`):
        ``|η g| ≤ η max|g|``, ``|v'| ≤ μ max|v| + η max|g|`` and ``|w'| ≤ max|w|(1 + ηλ) + |v'|`` (Nesterov:
        ``+ μ|v'| + η max|g|``)."""
        decayed = self._decayed(w_max, lr)
        step = lr * g_max
        if self.momentum == 0.0:
            return [decayed + step]
        velocity = self.momentum * slot_max["velocity"] + step
        return [decayed + (self.momentum * velocity + step if self.nesterov else velocity), velocity]

    def slots_in_use(self, config=None) -> tuple:
        """``('velocity',)`` with momentum, ``()`` without (plain SGD keeps no state)."""
        momentum = self.momentum if config is None else config.get("momentum", self.momentum)
        return ("velocity",) if momentum else ()

    def get_config(self):
        return dict(super().get_config(), momentum=self.momentum, nesterov=self.nesterov)


__all__ = ["SGD"]
