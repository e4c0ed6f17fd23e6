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

from .checks import check_number

#: How many layer names an error message lists.
SHOWN_NAMES = 12


def matches_prefix(name, prefixes) -> bool:
    """True when the layer name ``name`` is one of ``prefixes`` or starts with one of them and ``'_'``
    (``'conv1'`` matches ``conv1`` and ``conv1_bn``, not ``conv10``)."""
    return any(name == prefix or name.startswith(prefix + "_") for prefix in prefixes)


def _check_group(entry, seen):
    """``(group name, tuple of prefixes)`` from one entry of the groups; ``ValueError`` naming what is wrong."""
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ValueError(f"grad_norm_groups: each group must be a (name, prefixes) pair, got {entry!r}")
    group, prefixes = entry
    if not isinstance(group, str) or not group:
        raise ValueError(f"grad_norm_groups: a group's name must be a non-empty string, got {group!r}")
    if group in seen:
        raise ValueError(f"grad_norm_groups: the group name {group!r} is given twice")
    if isinstance(prefixes, str) or not isinstance(prefixes, (list, tuple)) or not prefixes or \
            not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError(f"grad_norm_groups: group {group!r}: prefixes must be a non-empty list or tuple of layer "
                         f"name prefixes (strings), e.g. ('conv1', 'conv2'), got {prefixes!r}")
    return group, tuple(prefixes)


def layer_groups(model, prefixes):
    """Map each group name to the model's layers with trainable weights whose names match one of its prefixes.

    Parameters
    ----------
    model : tinynet.Model
    prefixes : list of (group name, tuple of name prefixes), e.g. ``[('stem', ('conv1', 'conv2')), ...]``
        A prefix matches a layer named exactly like it or starting with it and ``'_'`` (see
        :func:`matches_prefix`): ``'conv1'`` takes ``conv1`` and ``conv1_bn``, not ``conv10``.

    Returns
    -------
    dict of str -> list of Layer
        In the order of ``prefixes``; each group's layers in the model's order.

    Raises
    ------
    ValueError
        When ``prefixes`` is not a list or tuple, an entry is not a ``(name, prefixes)`` pair of a non-empty
        string and a non-empty list of strings, a group name repeats, or a group matches no layer with
        trainable weights (its norm would be 0 at every step); the message names the group and lists the
        model's layers with trainable weights.
    """
    if not isinstance(prefixes, (list, tuple)):
        raise ValueError(f"grad_norm_groups must be a list of (name, prefixes) pairs, got {prefixes!r}")
    trainable = [layer for layer in model.layers if any(layer.trainable_flags)]
    groups = {}
    for entry in prefixes:
        group, pre = _check_group(entry, groups)
        groups[group] = [layer for layer in trainable if matches_prefix(layer.name, pre)]
        if not groups[group]:
            names = [layer.name for layer in trainable]
            shown = ", ".join(names[:SHOWN_NAMES]) + (f", ... ({len(names)} in all)" if len(names) > SHOWN_NAMES
                                                      else "")
            raise ValueError(f"grad_norm_groups: group {group!r} (prefixes {list(pre)}) matches no layer with "
                             f"trainable weights; a prefix matches a layer named like it or starting with it and "
                             f"'_'. The layers with trainable weights are: {shown or 'none'}")
    return groups


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
        See :func:`layer_groups`; checked here, so a group that matches no layer with trainable weights fails
        before training (``ValueError``).
    every : int >= 1
        Record on steps 0, every, 2·every, ...

    Attributes
    ----------
    record : dict
        ``{'step': [...], 'with_aux': {group: [...]}, 'main_only': {group: [...]}}``.
    """

    def __init__(self, model, groups, every):
        self.every = check_number("GradNormRecorder", "every", every, low=1, integer=True)
        self.groups = layer_groups(model, groups)
        self.record = {"step": [], "with_aux": {g: [] for g in self.groups},
                       "main_only": {g: [] for g in self.groups}}

    def due(self, step) -> bool:
        return step % self.every == 0

    def forget(self, step):
        """Drop the last measurement if it is of ``step``: the engine calls this when that step's update is
        refused (nothing of a refused step is kept)."""
        if self.record["step"] and self.record["step"][-1] == step:
            self.record["step"].pop()
            for g in self.groups:
                self.record["main_only"][g].pop()
                self.record["with_aux"][g].pop()

    def measure(self, step, backward, grads):
        """Run ``backward`` on the main head's gradient alone, then on all of ``grads``; record both norms.

        ``backward(output_grads)`` is the model's backward pass; after this call the layers hold the gradients
        of the full loss, as after a plain step.

        A step measured again (its update was refused, e.g. as diverged, so the optimizer's step count did not
        move, and training went on or was resumed from there) replaces the earlier measurement of that step,
        so the record holds each step once, in order.
        """
        backward([None] * (len(grads) - 1) + [grads[-1]])
        main_only = group_grad_norms(self.groups)
        backward(grads)
        with_aux = group_grad_norms(self.groups)
        self.forget(step)
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


__all__ = ["GradNormRecorder", "layer_groups", "matches_prefix", "group_grad_norms", "grad_norm_table"]
