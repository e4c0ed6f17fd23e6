"""Losses that return the loss and its gradient, ready for ``Model.backward``.

For scores ``z`` (N, ..., C), targets ``t`` (one-hot, or integer class ids broadcast to one-hot) and
``M`` the number of predictions (N times the middle axes), the mean losses are

softmax cross-entropy from logits (log-sum-exp, finite for logits of ±1e4):

.. math:: L = −\\frac{1}{M}\\sum t · (z − m − \\log \\sum_j e^{z_j − m}), \\quad ∂L/∂z = (softmax(z) − t) / M

categorical cross-entropy on probabilities ``p``, as Keras computes it (renormalise, clip to [ε, 1 − ε],
ε = 1e-7):

.. math:: q = clip(p / \\sum_j p_j), \\quad L = −\\frac{1}{M} \\sum t \\log q, \\quad
          ∂L/∂p_i = \\frac{1}{M\\,S}\\Big(d_i − \\sum_j d_j\\, p_j / S\\Big),\\;
          d = −t/q · [ε < p/S < 1−ε],\\; S = \\sum_j p_j
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module

EPSILON = 1e-7


def _check_scores(scores, name):
    """Raise unless ``scores`` is a floating array (N, ..., C) with N >= 1 and C >= 1."""
    dtype = getattr(scores, "dtype", None)
    if dtype is None or dtype.kind != "f":
        raise TypeError(f"{name}: scores must be a floating array (N, ..., classes), got "
                        f"{dtype if dtype is not None else type(scores).__name__}")
    if scores.ndim < 2 or scores.shape[-1] == 0:
        raise ValueError(f"{name}: scores must have shape (N, ..., classes) with classes >= 1, got {scores.shape}")
    if scores.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (scores of shape {scores.shape}); a mean loss needs at least "
                         f"one example")


def _first_bad(xp, labels, bad):
    """``' (first: 7 at index (1, 1))'`` for the first True of ``bad``."""
    index = tuple(int(i) for i in xp.argwhere(bad)[0])
    return f" (first: {int(labels[index])} at index {index})"


def targets_like(scores, labels, name="loss"):
    """Return one-hot targets shaped like ``scores`` (N, ..., C) from integer ids or one-hot labels.

    Labels are read by their shape and dtype, and anything else raises ``ValueError`` naming both shapes:

    ========================================  ====================================================
    labels                                    read as
    ========================================  ====================================================
    shape (N, ..., C), floating               targets as given (one-hot or soft)
    shape (N, ..., C), integer or boolean     one-hot; every value must be 0 or 1
    shape (N, ...), integer                   class ids in [0, C)
    shape (N, ..., 1), integer                class ids (Keras' sparse labels with a trailing 1)
    shape (N,), integer                       one id per example, for scores with middle axes (the
                                              4×4×C aux outputs): it applies at every position
    ========================================  ====================================================

    Class ids outside [0, C) raise naming the range found and the first bad value with its index.
    An empty batch raises (a mean over no example is undefined).
    """
    _check_scores(scores, name)
    xp = get_array_module(scores)
    labels = xp.asarray(labels)
    num_classes = scores.shape[-1]
    ids_shape = scores.shape[:-1]
    kind = labels.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"{name}: labels must be integer class ids or one-hot of shape {scores.shape}, "
                         f"got dtype {labels.dtype} shape {labels.shape}")
    if labels.shape == scores.shape:
        if kind == "f":
            return labels.astype(scores.dtype, copy=False)
        bad = (labels != 0) & (labels != 1)
        if bool(bad.any()):
            raise ValueError(f"{name}: {labels.dtype} labels of the scores' shape {scores.shape} are read as "
                             f"one-hot and must hold only 0 and 1; got values in [{int(labels.min())}, "
                             f"{int(labels.max())}]" + _first_bad(xp, labels, bad))
        return labels.astype(scores.dtype)
    if kind in "bf":
        raise ValueError(f"{name}: labels must be integer class ids or one-hot of shape {scores.shape}, "
                         f"got dtype {labels.dtype} shape {labels.shape} ({'floating' if kind == 'f' else 'boolean'} "
                         f"labels must be one-hot of the scores' shape; class ids must be integers)")
    accepted = [ids_shape, ids_shape + (1,), (scores.shape[0],)]
    if labels.shape not in accepted:
        listed = ", ".join(str(a) for i, a in enumerate(accepted) if a not in accepted[:i])
        raise ValueError(f"{name}: integer labels of shape {labels.shape} do not fit scores of shape "
                         f"{scores.shape}: class ids need one of the shapes {listed}, one-hot labels the "
                         f"shape {scores.shape}")
    bad = (labels < 0) | (labels >= num_classes)  # checked on the labels as given, so the index is theirs
    if bool(bad.any()):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}) for scores of shape {scores.shape}; "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]" + _first_bad(xp, labels, bad))
    if labels.shape != ids_shape:  # (N, ..., 1), or (N,): one id per example, at every position
        labels = xp.broadcast_to(labels.reshape(labels.shape[:1] + (1,) * (len(ids_shape) - 1)), ids_shape)
    eye = xp.eye(num_classes, dtype=scores.dtype)
    return eye[labels]


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy from logits and its gradient.

    Parameters
    ----------
    logits : ndarray (N, ..., C)
    labels : int ndarray (N, ...) or (N,), or one-hot (N, ..., C)

    Returns
    -------
    loss : float
    grad : ndarray like ``logits``: ∂L/∂logits
    """
    t = targets_like(logits, labels, "softmax_cross_entropy")
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_sum = xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
    log_p = shifted - log_sum
    m = logits.size // logits.shape[-1]
    loss = float(-(t * log_p).sum() / m)
    grad = (xp.exp(log_p) - t) / logits.dtype.type(m)
    return loss, grad


def categorical_crossentropy(probs, labels):
    """Keras' categorical cross-entropy on probabilities (renormalised and clipped) and its gradient.

    Parameters
    ----------
    probs : ndarray (N, ..., C), e.g. a softmax output
    labels : int ndarray or one-hot, as :func:`softmax_cross_entropy`

    Returns
    -------
    loss : float
    grad : ndarray like ``probs``: ∂L/∂probs (zero where clipping is active, as in Keras)
    """
    t = targets_like(probs, labels, "categorical_crossentropy")
    xp = get_array_module(probs)
    s = probs.sum(axis=-1, keepdims=True)
    p = probs / s
    eps = probs.dtype.type(EPSILON)
    q = xp.clip(p, eps, probs.dtype.type(1) - eps)
    m = probs.size // probs.shape[-1]
    loss = float(-(t * xp.log(q)).sum() / m)
    inside = (p > eps) & (p < probs.dtype.type(1) - eps)
    d = xp.where(inside, -t / q, probs.dtype.type(0))
    grad = (d - (d * p).sum(axis=-1, keepdims=True)) / s / probs.dtype.type(m)
    return loss, grad


LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "categorical_crossentropy": categorical_crossentropy,
}


def get(loss):
    """A loss function by name, or the callable itself."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; available: {sorted(LOSSES)}")
    return LOSSES[loss]


def weighted_loss(outputs, labels, weights=None, loss="categorical_crossentropy"):
    """A weighted sum of one loss over several outputs (the paper weights the two aux heads 0.3).

    Parameters
    ----------
    outputs : list of ndarray
    labels : array (the same labels for every output), or a list/tuple with one array per output
        A list of plain numbers counts as one label array for every output.
    weights : list of float, default all 1
        One finite weight per output.
    loss : name or callable ``(output, labels) -> (loss, grad)``

    Returns
    -------
    total : float
        ``Σ_k w_k L_k``
    losses : list of float
        Each ``L_k`` unweighted.
    grads : list of ndarray
        ``w_k ∂L_k/∂output_k``, to pass to ``Model.backward``.

    Raises
    ------
    ValueError
        When the numbers of outputs, label arrays and weights differ (naming the counts), and for the
        labels and empty batches as :func:`targets_like`.
    """
    fn = get(loss)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if not outputs:
        raise ValueError("weighted_loss: no outputs")
    weights = [1.0] * len(outputs) if weights is None else list(weights)
    if len(weights) != len(outputs):
        raise ValueError(f"weighted_loss: {len(outputs)} outputs but {len(weights)} weights")
    for k, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not np.isfinite(w):
            raise ValueError(f"weighted_loss: weight {k} must be a finite number, got {w!r}")
    per_output = isinstance(labels, (list, tuple)) and not all(np.ndim(lab) == 0 for lab in labels)
    if per_output:
        if len(labels) != len(outputs):
            raise ValueError(f"weighted_loss: {len(outputs)} outputs but {len(labels)} label arrays (give one "
                             f"array for every output, or a list with one per output)")
        per_output = list(labels)
    else:
        per_output = [labels] * len(outputs)
    total, losses, grads = 0.0, [], []
    for out, lab, w in zip(outputs, per_output, weights):
        value, grad = fn(out, lab)
        losses.append(value)
        total += w * value
        grads.append(grad * out.dtype.type(w))
    return total, losses, grads


__all__ = ["softmax_cross_entropy", "categorical_crossentropy", "weighted_loss", "targets_like", "get"]
