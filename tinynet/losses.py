"""Losses that return the loss and its gradient, ready for ``Model.backward``.

For scores ``z`` (N, ..., C), targets ``t`` (one-hot, or integer class ids broadcast to one-hot) and
``M`` the number of predictions (N times the middle axes), the mean losses are

softmax cross-entropy from logits (log-sum-exp, finite for logits of ±1e4):

.. math:: L = −\\frac{1}{M}\\sum t · (z − m − \\log \\sum_j e^{z_j − m}), \\quad ∂L/∂z = (softmax(z) − t) / M

categorical cross-entropy on probabilities ``p``, as Keras computes it (renormalise, clip to [ε, 1 − ε],
ε = 1e-7):

.. math:: q = clip(p / \\sum_j p_j), \\quad L = −\\frac{1}{M} \\sum t \\log q, \\quad
          ∂L/∂p_i = \\frac{1}{M\\,S}\\Big(d_i − \\sum_j d_j\\, p_j / S\\Big),\\; d = −t/q · [ε < p/S < 1−ε],\\; S = \\sum_j p_j
"""
from __future__ import annotations

from .backend import get_array_module

EPSILON = 1e-7


def targets_like(scores, labels, name="loss"):
    """Return one-hot targets shaped like ``scores`` (N, ..., C) from integer ids or one-hot labels.

    Integer labels may have shape (N,) for scores with middle axes (e.g. 4×4×C aux outputs): the label
    then applies at every position. Raises ``ValueError`` naming the shapes for a label out of range or a
    shape that does not fit.
    """
    xp = get_array_module(scores)
    labels = xp.asarray(labels)
    num_classes = scores.shape[-1]
    if labels.shape == scores.shape and labels.dtype.kind == "f":
        return labels.astype(scores.dtype, copy=False)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be integer class ids or one-hot of shape {scores.shape}, "
                         f"got dtype {labels.dtype} shape {labels.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}) for scores of shape {scores.shape}; "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    ids_shape = scores.shape[:-1]
    if labels.shape != ids_shape:
        if labels.ndim == 1 and labels.shape[0] == scores.shape[0]:
            labels = xp.broadcast_to(labels.reshape((-1,) + (1,) * (len(ids_shape) - 1)), ids_shape)
        else:
            raise ValueError(f"{name}: integer labels of shape {labels.shape} do not fit scores of shape "
                             f"{scores.shape} (expected {ids_shape} or ({scores.shape[0]},))")
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
    labels : the same labels for every output, or a list with one entry per output
    weights : list of float, default all 1
    loss : name or callable ``(output, labels) -> (loss, grad)``

    Returns
    -------
    total : float
        ``Σ_k w_k L_k``
    losses : list of float
        Each ``L_k`` unweighted.
    grads : list of ndarray
        ``w_k ∂L_k/∂output_k``, to pass to ``Model.backward``.
    """
    fn = get(loss)
    outputs = list(outputs)
    weights = [1.0] * len(outputs) if weights is None else list(weights)
    if len(weights) != len(outputs):
        raise ValueError(f"weighted_loss: {len(outputs)} outputs but {len(weights)} weights")
    per_output = labels if isinstance(labels, (list, tuple)) else [labels] * len(outputs)
    total, losses, grads = 0.0, [], []
    for out, lab, w in zip(outputs, per_output, weights):
        value, grad = fn(out, lab)
        losses.append(value)
        total += w * value
        grads.append(grad * out.dtype.type(w))
    return total, losses, grads


__all__ = ["softmax_cross_entropy", "categorical_crossentropy", "weighted_loss", "targets_like", "get"]
