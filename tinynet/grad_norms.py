"""The auxiliary-head experiment: how much gradient reaches each block with and without the aux losses.

The paper adds two auxiliary classifiers "to increase the gradient signal that gets propagated back". To see
it, :class:`GradNormRecorder` measures, every few training steps and at the same weights, the L2 norm of the
weight gradients of each group of layers twice: from the main loss alone (as a network without aux heads would
get) and from the full weighted loss:

.. math:: \\lVert \\partial L_{main} / \\partial w_{group} \\rVert \\quad\\text{vs}\\quad
          \\lVert \\partial (L_{main} + 0.3 L_{aux1} + 0.3 L_{aux2}) / \\partial w_{group} \\rVert

The trainer (:class:`tinynet.training.Trainer`, ``grad_norm_groups=...``) calls it; the record is a plain
dict that a checkpoint stores as JSON.
"""
from __future__ import annotations

import numpy as np


def layer_groups(model, prefixes):
    """Map each group name to the model's layers whose names start with one of its prefixes.

    Parameters
    ----------
    prefixes : list of (group name, tuple of name prefixes), e.g. ``[('stem', ('conv1', 'conv2')), ...]``
    """
    return {group: [layer for layer in model.layers if layer.name.startswith(tuple(p + "_" for p in pre))
                    and any(layer.trainable_flags)]
            for group, pre in prefixes}


def group_grad_norms(groups) -> dict:
    """The L2 norm of all trainable-weight gradients of each group: ``sqrt(Σ ‖g‖²)``."""
    out = {}
    for group, layers in groups.items():
        total = 0.0
        for layer in layers:
            for g, trainable in zip(layer.grads, layer.trainable_flags):
                if trainable and g is not None:
                    total += float((g.astype(np.float64) ** 2).sum())
        out[group] = float(np.sqrt(total))
    return out


class GradNormRecorder:
    """Records, every ``every`` steps, each group's gradient norm from the main loss alone and from all losses.

    Parameters
    ----------
    model : tinynet.Model
        Its last output is the main head.
    groups : list of (name, prefixes)
        See :func:`layer_groups`.
    every : int
        Record on steps 0, every, 2·every, ...

    Attributes
    ----------
    record : dict
        ``{'step': [...], 'with_aux': {group: [...]}, 'main_only': {group: [...]}}``.
    """

    def __init__(self, model, groups, every):
        self.groups = layer_groups(model, groups)
        self.every = int(every)
        self.record = {"step": [], "with_aux": {g: [] for g in self.groups},
                       "main_only": {g: [] for g in self.groups}}

    def due(self, step) -> bool:
        return step % self.every == 0

    def measure(self, step, backward, grads):
        """Run ``backward`` on the main head's gradient alone, then on all of ``grads``; record both norms.

        ``backward(output_grads)`` is the model's backward pass; after this call the layers hold the gradients
        of the full loss, as after a plain step.
        """
        backward([None] * (len(grads) - 1) + [grads[-1]])
        main_only = group_grad_norms(self.groups)
        backward(grads)
        with_aux = group_grad_norms(self.groups)
        self.record["step"].append(step)
        for g in self.groups:
            self.record["main_only"][g].append(main_only[g])
            self.record["with_aux"][g].append(with_aux[g])


def grad_norm_table(grad_norms) -> str:
    """A text table: per group, the mean gradient norm with aux heads, main only, and their ratio."""
    lines = [f"{'block':<8}{'with aux':>12}{'main only':>12}{'ratio':>8}"]
    for group in grad_norms["with_aux"]:
        a = float(np.mean(grad_norms["with_aux"][group]))
        m = float(np.mean(grad_norms["main_only"][group]))
        lines.append(f"{group:<8}{a:>12.4g}{m:>12.4g}{a / m if m else float('nan'):>8.2f}")
    return "\n".join(lines)


__all__ = ["GradNormRecorder", "layer_groups", "group_grad_norms", "grad_norm_table"]
