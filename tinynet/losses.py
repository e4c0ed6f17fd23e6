"""Losses that return the loss and its gradient, ready for ``Model.backward``.

For scores ``z`` (N, ..., C), targets ``t`` (one-hot, or integer class ids broadcast to one-hot) and
``M`` the number of predictions (N times the middle axes), the mean losses are

softmax cross-entropy from logits (log-sum-exp, finite for logits of ±1e4):

.. math:: L = −\\frac{1}{M}\\sum t · (z − m − \\log \\sum_j e^{z_j − m}), \\quad ∂L/∂z = (softmax(z) − t) / M

categorical cross-entropy on probabilities ``p``, as Keras computes it (renormalise, clip to [ε, 1 − ε],
ε = 1e-7):

.. math:: q = clip(p / \\sum_j p_j), \\quad L = −\\frac{1}{M} \\sum t \\log q, \\quad
          ∂L/∂p_i = \\frac{1}{M\\,S}\\Big(d_i − \\sum_j d_j\\, p_j / S\\Big),\\;
          d = −c\\, t/q,\\; S = \\sum_j p_j

with ``c`` the derivative of the clip at ``p/S``: 1 inside (ε, 1 − ε), 0 outside, ½ on a bound (as Keras on JAX
takes it, and as :class:`BinaryCrossentropy` below)

Two ways to use them:

* the functions :func:`softmax_cross_entropy` and :func:`categorical_crossentropy` take ``(scores, labels)``
  (class indices or one-hot) and return ``(loss, gradient)``; :func:`weighted_loss` sums them over several
  outputs. :class:`tinynet.training.Trainer` uses these.
* Keras' loss objects, for :meth:`tinynet.Model.compile`: :class:`CategoricalCrossentropy` (one-hot labels),
  :class:`SparseCategoricalCrossentropy` (class indices), :class:`BinaryCrossentropy` (targets in [0, 1]), the
  three with ``from_logits``, :class:`MeanSquaredError` and :class:`MeanAbsoluteError`; :func:`get` builds them
  from Keras' names ``'categorical_crossentropy'``, ``'sparse_categorical_crossentropy'``,
  ``'binary_crossentropy'``, ``'mean_squared_error'`` / ``'mse'``, ``'mean_absolute_error'`` / ``'mae'``. Called
  as Keras does, ``loss(y_true, y_pred, sample_weight=None)``, they return the mean loss;
  :meth:`Loss.value_and_grad` also gives the gradient ∂L/∂y_pred, which is all the training loop asks of a loss
  (:meth:`tinynet.engine.Engine.weighted_loss` feeds it to ``Model.backward``), and :meth:`Loss.check_labels`
  checks a whole label array before training.

For outputs ``y`` (N, ..., K) with K units, targets ``t`` of the same shape and ``M`` = N times the middle axes,
the two element-wise losses average over the units, then over the predictions, as Keras:

mean squared error:

.. math:: L = \\frac{1}{M}\\sum_m \\frac{1}{K}\\sum_k (y_{mk} − t_{mk})^2, \\qquad
          ∂L/∂y_{mk} = \\frac{2 (y_{mk} − t_{mk})}{M K}

binary cross-entropy on probabilities ``p`` (clipped as Keras, ``q = clip(p, ε, 1 − ε)``, ε = 1e-7):

.. math:: L = −\\frac{1}{MK}\\sum \\big(t \\log q + (1 − t) \\log(1 − q)\\big), \\qquad
          ∂L/∂p = −\\frac{c}{MK}\\Big(\\frac{t}{q} − \\frac{1 − t}{1 − q}\\Big)

with ``c`` = 1 inside (ε, 1 − ε), 0 outside and ½ on the bounds themselves (the derivative of ``clip`` that
Keras on JAX takes); and from logits ``z`` (finite for any logits: ``softplus(x) = max(x, 0) +
log1p(e^{−|x|})``):

.. math:: L = \\frac{1}{MK}\\sum t\\,\\mathrm{softplus}(−z) + (1 − t)\\,\\mathrm{softplus}(z), \\qquad
          ∂L/∂z = \\frac{σ(z) − t}{MK}

Sample weights follow Keras' default reduction, ``'sum_over_batch_size'``: with per-prediction losses
``l_m`` and weights ``w_m``, ``L = Σ_m w_m l_m / M`` (divided by the number of predictions, not by ``Σ w``)
and ``∂L/∂z_m = w_m ∂l_m/∂z_m / M``. Both categorical cross-entropies are linear in the targets, so their
objects weight the targets: ``t_m → w_m t_m`` gives exactly that value and gradient; the element-wise losses
multiply each prediction's loss and gradient by ``w_m``.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from .backend import get_array_module
from .checks import check_flag

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


def sample_weights_like(scores, sample_weight, name="loss"):
    """Weights of shape ``scores.shape[:-1]`` (one per prediction) from a ``sample_weight``.

    Accepted, as the labels (:func:`targets_like`): a number (every prediction), ``(N,)`` (one per example,
    at every position), ``scores.shape[:-1]`` (one per prediction) or that with a trailing 1. Values must be
    finite, in ``scores``' dtype too. Anything else raises naming ``name`` and both shapes.
    """
    xp = get_array_module(scores)
    weights = xp.asarray(sample_weight)
    if weights.dtype.kind not in "iuf":
        raise TypeError(f"{name}: sample_weight must be numbers, got dtype {weights.dtype}")
    ids_shape = scores.shape[:-1]
    accepted = [(), (scores.shape[0],), ids_shape, ids_shape + (1,)]
    if tuple(weights.shape) not in accepted:
        listed = ", ".join(str(a) for i, a in enumerate(accepted) if a and a not in accepted[:i])
        raise ValueError(f"{name}: sample_weight of shape {tuple(weights.shape)} does not fit outputs of shape "
                         f"{tuple(scores.shape)}; it must be a number or of shape {listed}")
    if not bool(xp.isfinite(weights).all()):
        raise ValueError(f"{name}: sample_weight holds NaN or inf")
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        weights = weights.astype(scores.dtype)
    if not bool(xp.isfinite(weights).all()):  # finite as given, but beyond the range of the scores' dtype
        raise ValueError(f"{name}: sample_weight holds values beyond the range of {scores.dtype}, the outputs' "
                         f"dtype, which become inf once cast to it")
    if weights.ndim == len(ids_shape) + 1:  # a trailing 1
        weights = weights[..., 0]
    weights = weights.reshape(weights.shape + (1,) * (len(ids_shape) - weights.ndim))
    return xp.broadcast_to(weights, ids_shape)


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

    Class ids outside [0, C) raise naming the range found and the first bad value with its index; floating
    targets that hold NaN or inf (once cast to the scores' dtype) raise too. An empty batch raises (a mean over
    no example is undefined).
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
            with np.errstate(over="ignore"):  # an overflow to inf is reported just below
                targets = labels.astype(scores.dtype, copy=False)
            if not bool(xp.isfinite(targets).all()):  # a NaN target would make the loss NaN whatever its weight
                raise ValueError(f"{name}: targets hold NaN or inf (in {scores.dtype}, the scores' dtype); labels "
                                 f"of shape {labels.shape}, dtype {labels.dtype}")
            return targets
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


def smooth_targets(t, label_smoothing, num_classes=None):
    """Keras' label smoothing of targets ``t`` (N, ..., C): ``t · (1 − s) + s / C``, in ``t``'s dtype.

    ``C`` is ``num_classes``, by default the last axis of ``t``; :class:`BinaryCrossentropy` gives 2 (each of its
    targets is one probability, as Keras' ``t · (1 − s) + 0.5 · s``).

    Each row keeps its sum when it sums to 1, and the true class of a one-hot row gets ``1 − s + s/C``, every
    other ``s/C``: the loss then rewards a confident but not certain prediction (Szegedy et al. 2016, *Rethinking
    the Inception Architecture*, §7: ε = 0.1). ``s = 0`` returns ``t`` itself. As Keras, ``1 − s`` is computed
    in float64 and rounded to ``t``'s dtype once (the same float32 bits). ``s`` outside [0, 1] (or not a
    number) and, for ``s > 0``, targets that are not floating (``s`` would round to 0 in their dtype) raise
    ``ValueError``.
    """
    return _smoothed(t, _check_smoothing("smooth_targets", label_smoothing), num_classes)


def _smoothed(t, label_smoothing, num_classes=None):
    """:func:`smooth_targets` for a ``label_smoothing`` its caller has checked (a float in [0, 1])."""
    if not label_smoothing:
        return t
    if t.dtype.kind != "f":
        raise ValueError(f"smooth_targets: targets must be floating, got dtype {t.dtype} (targets_like gives "
                         f"one-hot targets in the scores' dtype)")
    f = t.dtype.type
    return t * f(1.0 - label_smoothing) + f(label_smoothing) / f(t.shape[-1] if num_classes is None else num_classes)


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy from logits and its gradient.

    .. math:: L = -\\frac{1}{M} \\sum_{m,c} t_{mc} \\log p_{mc}, \\qquad
              \\frac{∂L}{∂z_{mc}} = \\frac{1}{M}\\Big(p_{mc} \\sum_{c'} t_{mc'} - t_{mc}\\Big)

    with ``p = softmax(z)`` over the last axis, ``M`` the number of rows and ``0 · log 0 = 0`` (a logit of −inf,
    a masked class, adds nothing where its target is 0). For one-hot or smoothed labels
    ``Σ t = 1`` and the gradient is the familiar ``p − t``; soft targets that do not sum to 1 (a multi-hot row,
    an all-zero row) get their exact gradient too, as autodiff (Keras on JAX, PyTorch) gives it.

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
    # 0 · log p = 0 where the target is 0, even for a masked logit of −inf (log p = −inf): not 0 · (−inf) = NaN
    loss = float(-(t * xp.where(t == 0, logits.dtype.type(0), log_p)).sum() / m)
    grad = (xp.exp(log_p) * t.sum(axis=-1, keepdims=True) - t) / logits.dtype.type(m)
    return loss, grad


def categorical_crossentropy(probs, labels, label_smoothing=0.0):
    """Keras' categorical cross-entropy on probabilities (renormalised and clipped) and its gradient.

    Parameters
    ----------
    probs : ndarray (N, ..., C), e.g. a softmax output
    labels : int ndarray or one-hot, as :func:`softmax_cross_entropy`
    label_smoothing : float in [0, 1], default 0
        The targets become ``t · (1 − s) + s / C`` (:func:`smooth_targets`), as Keras'
        ``CategoricalCrossentropy(label_smoothing=s)`` does, here for class ids too.

    Returns
    -------
    loss : float
    grad : ndarray like ``probs``: ∂L/∂probs (zero where clipping is active, as in Keras; on a bound of the
        clip, ``p/S`` equal to ε or 1 − ε, half of it, the derivative of ``clip`` Keras on JAX takes)
    """
    t = targets_like(probs, labels, "categorical_crossentropy")
    t = _smoothed(t, _check_smoothing("categorical_crossentropy", label_smoothing))
    xp = get_array_module(probs)
    s = probs.sum(axis=-1, keepdims=True)
    p = probs / s
    eps = probs.dtype.type(EPSILON)
    q = xp.clip(p, eps, probs.dtype.type(1) - eps)
    m = probs.size // probs.shape[-1]
    loss = float(-(t * xp.log(q)).sum() / m)
    one = probs.dtype.type(1)
    # the derivative of the clip as Keras on JAX takes it (as BinaryCrossentropy): 1 inside, ½ on a bound, 0 out
    c = xp.where((p > eps) & (p < one - eps), one,
                 xp.where((p == eps) | (p == one - eps), probs.dtype.type(0.5), probs.dtype.type(0)))
    d = -t / q * c
    grad = (d - (d * p).sum(axis=-1, keepdims=True)) / s / probs.dtype.type(m)
    return loss, grad


FUNCTIONS = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "categorical_crossentropy": categorical_crossentropy,
}
LOSSES = FUNCTIONS  # its older name


def _function(loss):
    """A ``(scores, labels) -> (loss, grad)`` function by name, or the callable itself (:func:`weighted_loss`)."""
    if callable(loss):
        return loss
    if loss not in FUNCTIONS:
        raise ValueError(f"unknown loss {loss!r}; available: {sorted(FUNCTIONS)}")
    return FUNCTIONS[loss]


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
    fn = _function(loss)
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


# ------------------------------------------------------------------------------------------ Keras' loss objects
def label_problem(y, output_shape, mode):
    """Why the label array ``y`` (N, ...) does not fit outputs of per-example shape ``output_shape``, or None.

    ``mode``: ``'one_hot'`` (shape ``(N, *output_shape)``, floats, or integers that are 0 or 1), ``'ids'``
    (integer class ids in [0, C), shape ``(N, *output_shape[:-1])``, with a trailing 1, or ``(N,)``),
    ``'either'``, ``'values'`` (finite targets of shape ``(N, *output_shape)``, or ``(N, *output_shape[:-1])``
    for outputs of one unit, as Keras squeezes that axis: :class:`MeanSquaredError`) or ``'probabilities'``
    (as ``'values'``, in [0, 1]: :class:`BinaryCrossentropy`).
    """
    output_shape = tuple(output_shape)
    classes = output_shape[-1]
    full = (len(y),) + output_shape
    if y.dtype.kind not in "biuf":
        return f"labels have dtype {y.dtype}; expected numbers"
    if mode in ("values", "probabilities"):
        return _target_problem(y, full, mode == "probabilities")
    one_hot = tuple(y.shape) == full
    if mode == "either":
        mode = "one_hot" if one_hot else "ids"
    if mode == "one_hot":
        if not one_hot:
            hint = (f"; these look like class indices: use 'sparse_categorical_crossentropy', or one-hot encode them "
                    f"with tinynet.utils.to_categorical(y, {classes})") if y.dtype.kind in "iu" else ""
            return f"takes one-hot labels of shape {full}, got shape {tuple(y.shape)}{hint}"
        if y.dtype.kind == "f":
            if not bool(np.isfinite(y).all()):
                return "one-hot labels hold NaN or inf"
        elif bool(((y != 0) & (y != 1)).any()):
            return f"integer labels of the outputs' shape are read as one-hot and must hold only 0 and 1; got " \
                   f"values in [{int(y.min())}, {int(y.max())}]"
        return None
    accepted = [full[:-1], full[:-1] + (1,), full[:1]]
    if tuple(y.shape) not in accepted:
        hint = "; these look one-hot: use 'categorical_crossentropy'" if one_hot else ""
        listed = ", ".join(str(a) for i, a in enumerate(accepted) if a not in accepted[:i])
        return f"takes integer class indices of shape {listed}, got shape {tuple(y.shape)}{hint}"
    if y.dtype.kind == "f":
        if not bool(np.isfinite(y).all()) or bool((np.mod(y, 1) != 0).any()):
            return f"class indices must be integers, got {y.dtype} values that are not whole numbers"
    elif y.dtype.kind == "b":
        return "class indices must be integers, got booleans"
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        bad = np.argwhere((y < 0) | (y >= classes))[0]
        return (f"class indices must lie in [0, {classes}) for outputs of {classes} classes; got values in "
                f"[{int(y.min())}, {int(y.max())}] (first: {int(y[tuple(bad)])} at index {tuple(int(i) for i in bad)})")
    return None


def _target_problem(y, full, probabilities):
    """:func:`label_problem` for element-wise targets: shape ``full`` (or ``full[:-1]`` for one unit), finite,
    in [0, 1] when ``probabilities``."""
    accepted = [full] + ([full[:-1]] if full[-1] == 1 else [])
    if tuple(y.shape) not in accepted:
        hint = ""
        if y.dtype.kind in "iu" and tuple(y.shape) in (full[:-1], full[:-1] + (1,)):
            hint = (f"; these look like class indices: one-hot encode them with tinynet.utils.to_categorical(y, "
                    f"{full[-1]})")
        return (f"takes targets of the outputs' shape {full}" + (f" (or {full[:-1]})" if len(accepted) > 1 else "")
                + f", got shape {tuple(y.shape)}{hint}")
    if y.dtype.kind == "f" and not bool(np.isfinite(y).all()):
        return "targets hold NaN or inf"
    if probabilities and y.size and (float(y.min()) < 0 or float(y.max()) > 1):
        bad = tuple(int(i) for i in np.argwhere((y < 0) | (y > 1))[0])
        return (f"takes targets in [0, 1] (probabilities of the positive class); got values in [{float(y.min()):g}, "
                f"{float(y.max()):g}] (first: {float(y[bad]):g} at index {bad})")
    return None


def cast_problem(y, dtype):
    """Why the label (target) array ``y`` is not finite once cast to the output's float ``dtype`` (the losses
    compare labels and outputs in the outputs' dtype: a float64 1e39 is inf in float32), with the first bad
    value and its index; None when it is, or when ``y`` is not floating-point (integers fit any float type the
    outputs use) or ``dtype`` is not. Two reductions; the index is searched only on failure."""
    y = np.asarray(y)
    dtype = np.dtype(dtype)
    if y.dtype.kind != "f" or dtype.kind != "f" or y.size == 0 or np.finfo(y.dtype).max <= np.finfo(dtype).max:
        return None
    largest = float(np.finfo(dtype).max)
    high, low = float(y.max()), float(y.min())
    if not (math.isfinite(high) and math.isfinite(low)) or max(high, -low) <= largest:
        return None  # NaN and inf are the loss's own check (Loss.check_labels)
    bad = tuple(int(i) for i in np.argwhere(np.abs(y) > largest)[0])
    return (f"targets hold values beyond the range of {dtype} (largest {largest:g}), the outputs' dtype, which "
            f"become inf once cast to it (first: {float(y[bad]):g} at index {bad})")


class Loss:
    """Base class of the loss objects (Keras' ``keras.losses.Loss``), which also give the gradient.

    ``loss(y_true, y_pred, sample_weight=None)`` (Keras' argument order) returns the mean loss over the batch
    (Keras' default reduction, ``'sum_over_batch_size'``: ``Σ w_m l_m / M`` with weights); :meth:`value_and_grad`
    also returns ``∂L/∂y_pred`` for :meth:`tinynet.Model.backward`; :meth:`check_labels` checks a whole label
    array before training.

    Parameters
    ----------
    name : str

    Attributes
    ----------
    label_mode : str
        The labels it takes, as :func:`label_problem` reads them.
    takes_sample_weight : bool
        Whether :meth:`value_and_grad` takes ``sample_weight`` (``fit(sample_weight=...)`` checks it before
        training); a subclass whose ``value_and_grad`` has two arguments is read as False too.
    """

    label_mode = "either"
    takes_sample_weight = True

    def __init__(self, name=None):
        self.name = name or type(self).__name__

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        if sample_weight is None:  # a subclass written before sample weights may take two arguments
            return self.value_and_grad(y_true, y_pred)[0]
        return self.value_and_grad(y_true, y_pred, sample_weight)[0]

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        """``(mean loss as a float, ∂L/∂y_pred)`` for one batch.

        ``sample_weight``: a number, ``(N,)`` or one weight per prediction (see :func:`sample_weights_like`).
        """
        raise NotImplementedError

    def check_labels(self, y_true, output_shape, where="labels"):
        """Raise ``ValueError`` unless the array ``y_true`` (N, ...) fits outputs of per-example ``output_shape``.

        One pass over the labels (shape, dtype, values: class indices in range, one-hot values 0/1 or finite).
        """
        problem = label_problem(np.asarray(y_true), output_shape, self.label_mode)
        if problem is not None:
            raise ValueError(f"{where}: loss '{self.name}': {problem}")

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class _Crossentropy(Loss):
    """The two cross-entropy objects' shared part: ``from_logits``, sample weights, the loss function.

    A subclass turns its labels into targets shaped like ``y_pred`` (:meth:`targets`).
    """

    def __init__(self, from_logits, name):
        super().__init__(name)
        check_flag(type(self).__name__, "from_logits", from_logits)  # 'no' is truthy: refuse it, not read True
        self.from_logits = bool(from_logits)

    def targets(self, y_true, y_pred):
        """One-hot (or soft) targets shaped like ``y_pred`` from ``y_true``, checked and named by this loss."""
        raise NotImplementedError

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        _check_scores(y_pred, self.name)
        t = self.targets(y_true, y_pred)
        if sample_weight is not None:
            t = t * sample_weights_like(y_pred, sample_weight, self.name)[..., None]
        fn = softmax_cross_entropy if self.from_logits else categorical_crossentropy
        return fn(y_pred, t)


class CategoricalCrossentropy(_Crossentropy):
    """Cross-entropy with one-hot labels (Keras' ``CategoricalCrossentropy``).

    Parameters
    ----------
    from_logits : bool, default False
        False: ``y_pred`` are probabilities (a softmax output), renormalised and clipped to [1e-7, 1 − 1e-7]
        as Keras does (:func:`categorical_crossentropy`). True: ``y_pred`` are logits, and the softmax is fused
        in (:func:`softmax_cross_entropy`, finite for any logits). Anything but a bool raises ``TypeError``.
    label_smoothing : float in [0, 1], default 0
        Targets become ``t · (1 − s) + s / C``.
    name : str, default 'categorical_crossentropy'

    Labels are one-hot (or soft) of the outputs' shape ``(N, ..., C)``; class indices are refused with a
    pointer to :class:`SparseCategoricalCrossentropy` and :func:`tinynet.utils.to_categorical`.
    """

    label_mode = "one_hot"

    def __init__(self, from_logits=False, label_smoothing=0.0, name="categorical_crossentropy"):
        super().__init__(from_logits, name)
        self.label_smoothing = _check_smoothing(type(self).__name__, label_smoothing)

    def targets(self, y_true, y_pred):
        t = get_array_module(y_pred).asarray(y_true)
        if tuple(t.shape) != tuple(y_pred.shape):
            raise ValueError(f"{self.name}: takes one-hot labels of the outputs' shape {tuple(y_pred.shape)}, got "
                             f"shape {tuple(t.shape)} (class indices: use 'sparse_categorical_crossentropy')")
        return smooth_targets(targets_like(y_pred, t, self.name), self.label_smoothing)

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "name": self.name}


class SparseCategoricalCrossentropy(_Crossentropy):
    """Cross-entropy with integer class indices (Keras' ``SparseCategoricalCrossentropy``).

    Parameters
    ----------
    from_logits : bool, default False
        As :class:`CategoricalCrossentropy`.
    name : str, default 'sparse_categorical_crossentropy'

    Labels are class indices in ``[0, C)`` of shape ``(N, ...)`` (the outputs' shape without its last axis),
    optionally with a trailing axis of 1, or ``(N,)`` for outputs with middle axes (one label per example,
    applied at every position). Whole-number floats are accepted as indices, as Keras casts them.
    """

    label_mode = "ids"

    def __init__(self, from_logits=False, name="sparse_categorical_crossentropy"):
        super().__init__(from_logits, name)

    def targets(self, y_true, y_pred):
        xp = get_array_module(y_pred)
        labels = xp.asarray(y_true)
        if labels.dtype.kind == "f":
            if not bool(xp.isfinite(labels).all()) or bool((labels != xp.floor(labels)).any()):  # inf: no int
                raise ValueError(f"{self.name}: class indices must be whole numbers, got {labels.dtype} values "
                                 f"that are not (fractions, NaN or inf)")
            labels = labels.astype(np.int64)
        if tuple(labels.shape) == tuple(y_pred.shape) and y_pred.shape[-1] != 1:
            raise ValueError(f"{self.name}: takes integer class indices, got labels of the outputs' shape "
                             f"{tuple(y_pred.shape)} (one-hot labels: use 'categorical_crossentropy')")
        return targets_like(y_pred, labels, self.name)

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name}


class _ElementwiseLoss(Loss):
    """The element-wise losses' shared part (Keras' mean over the last axis): targets, sample weights, the mean.

    A subclass gives :meth:`elements`, the loss of every output unit and its derivative. With ``e`` (N, ..., K)
    those losses, ``w`` the weight of each of the ``M`` predictions (1 without ``sample_weight``):

    .. math:: L = \\frac{1}{M}\\sum_m w_m \\frac{1}{K}\\sum_k e_{mk}, \\qquad
              ∂L/∂y_{mk} = \\frac{w_m}{MK}\\, ∂e_{mk}/∂y_{mk}
    """

    label_mode = "values"

    def targets(self, y_true, y_pred):
        """``y_true`` as targets of ``y_pred``'s shape and dtype; labels ``(N, ...)`` without the last axis fit
        an output of one unit (Keras squeezes it). Another shape, a non-numeric dtype or a non-finite value
        raise ``ValueError`` naming this loss and both shapes."""
        xp = get_array_module(y_pred)
        t = xp.asarray(y_true)
        full = tuple(y_pred.shape)
        if t.dtype.kind not in "biuf":
            raise ValueError(f"{self.name}: targets must be numbers, got dtype {t.dtype} shape {tuple(t.shape)}")
        if tuple(t.shape) != full:
            if full[-1] != 1 or tuple(t.shape) != full[:-1]:
                raise ValueError(f"{self.name}: targets of shape {tuple(t.shape)} do not fit outputs of shape "
                                 f"{full}; give targets of the outputs' shape"
                                 + (f" (or {full[:-1]})" if full[-1] == 1 else ""))
            t = t[..., None]
        t = t.astype(y_pred.dtype, copy=False)
        if not bool(xp.isfinite(t).all()):
            raise ValueError(f"{self.name}: targets hold NaN or inf")
        return t

    def elements(self, t, y):
        """``(e, ∂e/∂y)``: the loss of every unit and its derivative, both shaped like ``y``."""
        raise NotImplementedError

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        _check_scores(y_pred, self.name)
        t = self.targets(y_true, y_pred)
        e, de = self.elements(t, y_pred)
        units = y_pred.shape[-1]
        m = y_pred.size // units
        per_prediction = e.mean(axis=-1)  # (N, ...), Keras' values before the reduction
        scale = y_pred.dtype.type(m * units)
        if sample_weight is None:
            return float(per_prediction.sum() / m), de / scale
        w = sample_weights_like(y_pred, sample_weight, self.name)
        return float((per_prediction * w).sum() / m), de * w[..., None] / scale


class MeanSquaredError(_ElementwiseLoss):
    """Mean squared error (Keras' ``MeanSquaredError``, ``'mean_squared_error'``, ``'mse'``).

    .. math:: e = (y − t)^2, \\qquad ∂e/∂y = 2 (y − t)

    averaged over the last axis, then over the predictions; with ``w_m`` the weight of each of the ``M``
    predictions (1 without ``sample_weight``) and K units:

    .. math:: L = \\frac{1}{M}\\sum_m w_m \\frac{1}{K}\\sum_k e_{mk}, \\qquad
              ∂L/∂y_{mk} = \\frac{w_m}{MK}\\, ∂e_{mk}/∂y_{mk}

    Parameters
    ----------
    name : str, default 'mean_squared_error'

    Targets are finite numbers of the outputs' shape ``(N, ..., K)``, or ``(N, ...)`` for an output of one unit.
    """

    def __init__(self, name="mean_squared_error"):
        super().__init__(name)

    def elements(self, t, y):
        d = y - t
        return d * d, d + d


class MeanAbsoluteError(_ElementwiseLoss):
    """Mean absolute error (Keras' ``MeanAbsoluteError``, ``'mean_absolute_error'``, ``'mae'``).

    .. math:: e = |y − t|, \\qquad ∂e/∂y = \\begin{cases} 1 & y > t \\\\ −1 & y \\le t \\end{cases}

    averaged over the last axis, then over the predictions, with the sample weights (see
    :class:`MeanSquaredError`). At ``y = t`` the derivative is the one Keras on JAX takes: −1 (it writes
    ``|t − y|``, and JAX's derivative of ``|u|`` at 0 is 1).

    Parameters
    ----------
    name : str, default 'mean_absolute_error'

    Targets are finite numbers of the outputs' shape ``(N, ..., K)``, or ``(N, ...)`` for an output of one unit.
    """

    def __init__(self, name="mean_absolute_error"):
        super().__init__(name)

    def elements(self, t, y):
        d = y - t
        one = y.dtype.type(1)
        return get_array_module(y).abs(d), get_array_module(y).where(d > 0, one, -one)


class BinaryCrossentropy(_ElementwiseLoss):
    """Binary cross-entropy (Keras' ``BinaryCrossentropy``, ``'binary_crossentropy'``), each output unit a
    probability (or a logit) of its own: one sigmoid unit for two classes, K for K independent labels.

    On probabilities ``p`` (a sigmoid output), clipped to [ε, 1 − ε] with ε = 1e-7 as Keras:

    .. math:: e = −t \\log q − (1 − t) \\log(1 − q), \\quad q = clip(p, ε, 1 − ε), \\qquad
              ∂e/∂p = −c\\Big(\\frac{t}{q} − \\frac{1 − t}{1 − q}\\Big)

    where ``c`` is the derivative of the clip as Keras on JAX takes it: 1 inside (ε, 1 − ε), 0 outside, ½ on a
    bound. On logits ``z`` (``from_logits=True``) the sigmoid is fused in, finite for any logit:

    .. math:: e = t\\,\\mathrm{softplus}(−z) + (1 − t)\\,\\mathrm{softplus}(z), \\qquad
              ∂e/∂z = (1 − t)\\,σ(z) − t\\,σ(−z) = σ(z) − t

    with ``softplus(x) = max(x, 0) + log1p(exp(−|x|))`` and both ``σ(z)`` and ``σ(−z)`` computed from
    ``exp(−|z|)``. The loss is ``e`` averaged over the last axis, then over the predictions, with the sample
    weights (see :class:`MeanSquaredError`).

    Parameters
    ----------
    from_logits : bool, default False
        Whether ``y_pred`` are logits (True) or probabilities (False). Anything but a bool raises ``TypeError``.
    label_smoothing : float in [0, 1], default 0
        Targets become ``t · (1 − s) + s / 2``, as Keras.
    name : str, default 'binary_crossentropy'

    Targets are in [0, 1] (0/1 labels or soft ones), of the outputs' shape ``(N, ..., K)``, or ``(N, ...)`` for
    an output of one unit; others raise ``ValueError`` naming the loss and the values or shapes.
    """

    label_mode = "probabilities"

    def __init__(self, from_logits=False, label_smoothing=0.0, name="binary_crossentropy"):
        super().__init__(name)
        check_flag(type(self).__name__, "from_logits", from_logits)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(type(self).__name__, label_smoothing)

    def targets(self, y_true, y_pred):
        t = super().targets(y_true, y_pred)
        xp = get_array_module(y_pred)
        bad = (t < 0) | (t > 1)
        if bool(bad.any()):
            index = tuple(int(i) for i in xp.argwhere(bad)[0])
            raise ValueError(f"{self.name}: takes targets in [0, 1], got values in [{float(t.min()):g}, "
                             f"{float(t.max()):g}] (first: {float(t[index]):g} at index {index})")
        return smooth_targets(t, self.label_smoothing, num_classes=2)

    def elements(self, t, y):
        xp = get_array_module(y)
        one = y.dtype.type(1)
        if self.from_logits:
            small = xp.exp(-xp.abs(y))  # e^{-|z|} in (0, 1]: no overflow for any logit
            tail = xp.log1p(small)
            zero = y.dtype.type(0)
            e = t * (xp.maximum(-y, zero) + tail) + (one - t) * (xp.maximum(y, zero) + tail)
            positive = y >= 0
            sig = xp.where(positive, one / (one + small), small / (one + small))  # σ(z)
            sig_neg = xp.where(positive, small / (one + small), one / (one + small))  # σ(−z)
            return e, (one - t) * sig - t * sig_neg
        eps = y.dtype.type(EPSILON)
        q = xp.clip(y, eps, one - eps)
        e = -(t * xp.log(q) + (one - t) * xp.log(one - q))
        half = y.dtype.type(0.5)
        c = xp.where((y > eps) & (y < one - eps), one, xp.where((y == eps) | (y == one - eps), half, y.dtype.type(0)))
        return e, c * ((one - t) / (one - q) - t / q)

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "name": self.name}


def _check_smoothing(who, label_smoothing):
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{who}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)


class LossFunctionWrapper(Loss):
    """A loss object around a function ``fn(y_pred, labels) -> (loss, grad)`` (tinynet's convention, as
    :func:`categorical_crossentropy` and :func:`softmax_cross_entropy`, which take class indices or one-hot).
    It takes no ``sample_weight`` (:attr:`takes_sample_weight` is False).

    Parameters
    ----------
    fn : callable
    name : str, optional
        Default: the function's name.
    """

    takes_sample_weight = False

    def __init__(self, fn, name=None):
        if not callable(fn):
            raise TypeError(f"LossFunctionWrapper: fn must be callable, got {type(fn).__name__}")
        super().__init__(name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise TypeError(f"loss '{self.name}': a loss function (y_pred, labels) -> (loss, gradient) takes no "
                            f"sample_weight; use a loss object (CategoricalCrossentropy, "
                            f"SparseCategoricalCrossentropy, BinaryCrossentropy, MeanSquaredError)")
        result = self.fn(y_pred, y_true)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"loss '{self.name}': a loss function must return (loss, gradient), got "
                            f"{type(result).__name__}; tinynet computes no gradients by itself")
        return float(result[0]), result[1]

    def get_config(self):
        return {"name": self.name}


#: the loss classes :func:`get` rebuilds from a config ``{'class_name': ..., 'config': {...}}``
CLASSES = {cls.__name__: cls for cls in (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy,
                                         MeanSquaredError, MeanAbsoluteError)}

#: Keras' names (and tinynet's older ones) -> a function building the loss object
NAMES = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "CategoricalCrossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "BinaryCrossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "MeanSquaredError": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "MeanAbsoluteError": MeanAbsoluteError,
    "softmax_cross_entropy": lambda: LossFunctionWrapper(softmax_cross_entropy),
}


def get(identifier) -> Loss:
    """A loss object from a name, a config, a function or a :class:`Loss` (returned as it is).

    Parameters
    ----------
    identifier : str, dict, callable or Loss
        ``'categorical_crossentropy'`` / ``'CategoricalCrossentropy'`` (one-hot labels),
        ``'sparse_categorical_crossentropy'`` / ``'SparseCategoricalCrossentropy'`` (class indices),
        ``'binary_crossentropy'`` / ``'BinaryCrossentropy'`` (targets in [0, 1]), ``'mean_squared_error'`` /
        ``'mse'`` / ``'MeanSquaredError'``, ``'mean_absolute_error'`` / ``'mae'`` / ``'MeanAbsoluteError'``,
        ``'softmax_cross_entropy'`` (logits; indices or one-hot);
        ``{'class_name': ..., 'config': {...}}`` for the classes of :data:`CLASSES`;
        a function ``fn(y_pred, labels) -> (loss, grad)`` (wrapped in :class:`LossFunctionWrapper`).

    Raises
    ------
    ValueError
        For an unknown name, naming the ones there are; for a class (``MeanSquaredError`` rather than
        ``MeanSquaredError()``), saying to pass an instance.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type):
        name = identifier.__name__
        raise ValueError(f"loss is the class {name}, not a loss; pass an instance, e.g. {name}()"
                         if issubclass(identifier, Loss) else
                         f"loss is the class {name}; a loss must be a name ({sorted(NAMES)}), a Loss instance "
                         f"(e.g. MeanSquaredError()), or a function (y_pred, labels) -> (loss, grad)")
    if isinstance(identifier, str):
        if identifier not in NAMES:
            raise ValueError(f"unknown loss {identifier!r}; available: {sorted(NAMES)}")
        return NAMES[identifier]()
    if isinstance(identifier, dict) and identifier.get("class_name") in CLASSES:
        return CLASSES[identifier["class_name"]].from_config(dict(identifier.get("config", {})))
    if callable(identifier):
        return LossFunctionWrapper(identifier)
    raise ValueError(f"a loss must be a name ({sorted(NAMES)}), a Loss, or a function (y_pred, labels) -> "
                     f"(loss, grad); got {identifier!r}")


def accepts_sample_weight(loss) -> bool:
    """Whether ``loss.value_and_grad(y_true, y_pred, sample_weight)`` can be called: its
    :attr:`Loss.takes_sample_weight` and its signature (a subclass written with two arguments cannot)."""
    if not getattr(loss, "takes_sample_weight", True):
        return False
    try:
        inspect.signature(loss.value_and_grad).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): let the call say
        return True
    return True


def serialize(loss) -> dict:
    """``{'class_name': ..., 'config': {...}}`` of a loss object."""
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


__all__ = ["softmax_cross_entropy", "categorical_crossentropy", "weighted_loss", "targets_like",
           "sample_weights_like", "Loss",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy", "MeanSquaredError",
           "MeanAbsoluteError", "LossFunctionWrapper", "get", "serialize", "accepts_sample_weight", "label_problem",
           "cast_problem",
           "FUNCTIONS", "NAMES",
           "CLASSES"]
