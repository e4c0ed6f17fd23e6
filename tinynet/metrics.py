"""Metrics with Keras' names and semantics, for :meth:`tinynet.Model.compile`.

A metric object accumulates over batches (``update_state``), reports a Python float (``result``) and starts
over (``reset_state``); :meth:`tinynet.Model.fit` resets them at every epoch, so a logged value is the mean
over the epoch's examples, as in Keras.

=========================================  =====================================================================
name (string for ``compile``)              per example
=========================================  =====================================================================
``'accuracy'`` / ``'acc'``                 resolved from the shapes, as Keras 3 (whatever the loss):
                                           ``binary_accuracy`` for a one-unit output (a sigmoid with
                                           ``'binary_crossentropy'``), else ``sparse_categorical_accuracy`` for
                                           class indices, ``categorical_accuracy`` for labels of the outputs'
                                           shape; logged under the name given
``'categorical_accuracy'``                 ``argmax(y_true) == argmax(y_pred)`` (one-hot labels)
``'sparse_categorical_accuracy'``          ``y_true == argmax(y_pred)`` (class indices)
``'top_k_categorical_accuracy'``           ``argmax(y_true)`` among the ``k = 5`` highest scores (one-hot labels)
``'sparse_top_k_categorical_accuracy'``    ``y_true`` among the ``k = 5`` highest scores (class indices)
``'binary_accuracy'``                      ``mean(y_true == [y_pred > 0.5])`` over the last axis (a target that
                                           is neither 0 nor 1 never matches, as in Keras)
``'mean_squared_error'`` / ``'mse'``       ``mean((y_pred − y_true)²)`` over the last axis
``'mean_absolute_error'`` / ``'mae'``      ``mean(|y_pred − y_true|)`` over the last axis
=========================================  =====================================================================

The element-wise metrics (binary accuracy, MSE, MAE) take targets of the outputs' shape ``(N, ..., K)``, or
``(N, ...)`` for an output of one unit.

Top-k uses Keras' (and TensorFlow's ``in_top_k``) rule for ties: the label counts as found when its score is
at least the k-th highest score, so classes tied at the boundary are all "in the top k". ``argmax`` takes the
first of equal maxima, as Keras.

Values at several positions per example (outputs of shape ``(N, ..., C)``) are averaged per example first,
then over examples, as Keras' ``MeanMetricWrapper``.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .checks import check_number
from .losses import label_problem


def _arrays(y_true, y_pred):
    return np.asarray(backend.to_numpy(y_true)), np.asarray(backend.to_numpy(y_pred))


def _class_arrays(y_true, y_pred, who):
    """:func:`_arrays` for the class metrics, whose predictions need a batch and a class axis (else the argmax
    would run over the batch) and labels a batch axis: ``ValueError`` naming ``who`` and the shape otherwise."""
    y_true, y_pred = _arrays(y_true, y_pred)
    if y_pred.ndim < 2 or y_pred.shape[-1] == 0:
        raise ValueError(f"{who}: predictions must have shape (N, ..., classes) with classes >= 1, got shape "
                         f"{y_pred.shape}")
    if y_true.ndim == 0:
        raise ValueError(f"{who}: labels must have a batch axis, shape (N, ...), got a single value {y_true!r}")
    return y_true, y_pred


def _for_metric(problem, fn_name=None):
    """A :func:`tinynet.losses.label_problem` message, its hint pointing to the metric for the other label kind.

    ``fn_name`` (a metric function's name, e.g. ``'sparse_categorical_accuracy'``) names that metric too.
    """
    other = None
    if fn_name:
        other = fn_name[len("sparse_"):] if fn_name.startswith("sparse_") else f"sparse_{fn_name}"
    named = f" ('{other}', {NAMES[other].__name__})" if other in NAMES else ""
    return problem.replace("use 'sparse_categorical_crossentropy'", f"use the 'sparse_' metric{named}").replace(
        "use 'categorical_crossentropy'", f"use the metric without 'sparse_'{named}")


def _shape_error(y_true, y_pred, mode, who):
    """``ValueError`` for labels whose shape does not fit the predictions, saying what the metric takes."""
    problem = label_problem(y_true, y_pred.shape[1:], mode) or (
        f"labels of shape {y_true.shape} do not fit predictions of shape {y_pred.shape}")
    return ValueError(f"{who}: {_for_metric(problem, who)}")


def _ids(y_true, y_pred, who):
    """Class indices shaped like ``y_pred.shape[:-1]`` from indices (N, ...), (N, ..., 1) or (N,).

    Labels that are not class ids of ``y_pred`` (another shape, floats that are not whole numbers, NaN, values
    outside ``[0, C)``) raise ``ValueError`` naming ``who``, as :func:`tinynet.losses.label_problem` words it.
    """
    problem = label_problem(y_true, y_pred.shape[1:], "ids")
    if problem is not None:
        raise ValueError(f"{who}: {_for_metric(problem, who)}")
    ids = y_true
    if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
        ids = ids[..., 0]
    if ids.shape != y_pred.shape[:-1]:  # (N,): one label per example, at every position
        ids = np.broadcast_to(ids.reshape(ids.shape + (1,) * (y_pred.ndim - 2)), y_pred.shape[:-1])
    return ids.astype(np.int64)


def _one_hot_ids(y_true, y_pred, who):
    """``argmax(y_true)`` of one-hot labels of ``y_pred``'s shape; other shapes, NaN or inf, and integer labels
    that are not 0 or 1 raise ``ValueError`` naming ``who``, as :func:`tinynet.losses.label_problem` words it."""
    problem = label_problem(y_true, y_pred.shape[1:], "one_hot")
    if problem is not None:
        raise ValueError(f"{who}: {_for_metric(problem, who)}")
    return y_true.argmax(axis=-1)


def _in_top_k(ids, y_pred, k):
    """Keras' ``in_top_k``: fewer than ``k`` scores are strictly greater than the label's (so the label's score
    is at least the k-th highest); a NaN score at the label counts as −inf, a NaN elsewhere as no greater."""
    scores = np.take_along_axis(y_pred, ids[..., None], axis=-1)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return (y_pred > scores).sum(axis=-1) < k


def categorical_accuracy(y_true, y_pred):
    """Per-prediction 1.0 where ``argmax(y_true) == argmax(y_pred)``, else 0.0 (one-hot labels)."""
    y_true, y_pred = _class_arrays(y_true, y_pred, "categorical_accuracy")
    return (_one_hot_ids(y_true, y_pred, "categorical_accuracy") == y_pred.argmax(axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """Per-prediction 1.0 where ``y_true == argmax(y_pred)``, else 0.0 (class indices)."""
    y_true, y_pred = _class_arrays(y_true, y_pred, "sparse_categorical_accuracy")
    ids = _ids(y_true, y_pred, "sparse_categorical_accuracy")
    return (ids == y_pred.argmax(axis=-1)).astype(np.float64)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """Per-prediction 1.0 where ``argmax(y_true)`` is among the ``k`` highest scores (one-hot labels)."""
    y_true, y_pred = _class_arrays(y_true, y_pred, "top_k_categorical_accuracy")
    ids = _one_hot_ids(y_true, y_pred, "top_k_categorical_accuracy")
    return _in_top_k(ids, y_pred, k).astype(np.float64)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """Per-prediction 1.0 where ``y_true`` is among the ``k`` highest scores (class indices)."""
    y_true, y_pred = _class_arrays(y_true, y_pred, "sparse_top_k_categorical_accuracy")
    return _in_top_k(_ids(y_true, y_pred, "sparse_top_k_categorical_accuracy"), y_pred, k).astype(np.float64)


def _targets(y_true, y_pred, who):
    """``y_true`` as float64 targets of ``y_pred``'s shape (labels without the last axis fit one unit)."""
    if y_true.shape != y_pred.shape:
        if y_pred.shape[-1:] != (1,) or y_true.shape != y_pred.shape[:-1]:
            raise _shape_error(y_true, y_pred, "values", who)
        y_true = y_true[..., None]
    return y_true.astype(np.float64)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Per prediction, the fraction of units where ``y_true`` equals ``[y_pred > threshold]`` (1.0 or 0.0), as
    Keras: a target that is neither 0 nor 1 never matches."""
    threshold = check_number("binary_accuracy", "threshold", threshold)  # a NaN would compare False
    y_true, y_pred = _arrays(y_true, y_pred)
    t = _targets(y_true, y_pred, "binary_accuracy")
    return (t == (y_pred > threshold).astype(np.float64)).astype(np.float64).mean(axis=-1)


def mean_squared_error(y_true, y_pred):
    """Per prediction, ``mean((y_pred − y_true)²)`` over the last axis."""
    y_true, y_pred = _arrays(y_true, y_pred)
    d = y_pred.astype(np.float64) - _targets(y_true, y_pred, "mean_squared_error")
    return (d * d).mean(axis=-1)


def mean_absolute_error(y_true, y_pred):
    """Per prediction, ``mean(|y_pred − y_true|)`` over the last axis."""
    y_true, y_pred = _arrays(y_true, y_pred)
    return np.abs(y_pred.astype(np.float64) - _targets(y_true, y_pred, "mean_absolute_error")).mean(axis=-1)


# ------------------------------------------------------------------------------------------ metric objects
class Metric:
    """Base class: a value accumulated over batches (Keras' ``keras.metrics.Metric``).

    Parameters
    ----------
    name : str

    Attributes
    ----------
    direction : {'up', 'down'} or None
        Which way is better; ``mode='auto'`` in the callbacks reads it. None (a metric of the user's, or a
        function wrapped by :func:`get`): unknown, so ``mode='auto'`` on it raises, as in Keras; set it, or give
        the callback ``mode='min'`` or ``'max'``.
    label_mode : {'one_hot', 'ids', None}
        The labels it takes (checked before training); ``None``: any.
    """

    direction = None
    label_mode = None

    def __init__(self, name=None):
        self.name = name or type(self).__name__

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def reset_state(self):
        raise NotImplementedError

    def __call__(self, *args, **kwargs) -> float:
        """Update with one batch and return the result, as Keras: ``metric(y_true, y_pred, sample_weight=None)``
        (``Mean()(values, sample_weight=None)``): the arguments of :meth:`update_state`."""
        self.update_state(*args, **kwargs)
        return self.result()

    def check_labels(self, y_true, output_shape, where="labels"):
        """Raise ``ValueError`` unless the label array fits this metric and outputs of ``output_shape``."""
        if self.label_mode is None:
            return
        problem = label_problem(np.asarray(y_true), output_shape, self.label_mode)
        if problem is not None:
            fn_name = getattr(getattr(self, "fn", None), "__name__", None)
            raise ValueError(f"{where}: metric '{self.name}': {_for_metric(problem, fn_name)}")

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        """The metric that :meth:`get_config` describes (Keras' ``Metric.from_config``): ``cls(**config)``."""
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class Mean(Metric):
    """The (weighted) mean of the values given to :meth:`update_state` (Keras' ``Mean``).

    ``update_state(values, sample_weight=None)``: a number or an array; ``sample_weight`` a number (the
    weight of every value, e.g. a batch size) or an array that broadcasts to ``values``' shape once its axes are
    aligned with ``values``' leading ones, as Keras (weights ``(N,)`` for values ``(N, K)`` weight each row,
    never each column, even when ``N == K``). Weights that
    are not finite numbers, or of another shape, raise naming the metric and both shapes.
    """

    direction = "down"

    def __init__(self, name="mean"):
        super().__init__(name)
        self.reset_state()

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        values = np.asarray(backend.to_numpy(values), dtype=np.float64)
        if sample_weight is None:
            self.total += float(values.sum())
            self.count += float(values.size)
        else:
            self._add_weighted(values, sample_weight, f"values of shape {values.shape}")

    def _add_weighted(self, values, sample_weight, what, flatten=False):
        """Add ``Σ w·values`` and ``Σ w``; ``sample_weight`` (flattened first when ``flatten``), its axes aligned
        with ``values``' leading ones, must broadcast to ``values``' shape, else ``ValueError`` naming the metric,
        the weights' shape and ``what``."""
        weights = np.asarray(backend.to_numpy(sample_weight))
        if weights.dtype.kind not in "iuf":
            raise TypeError(f"metric '{self.name}': sample_weight must be numbers, got dtype {weights.dtype}")
        shape = weights.shape
        weights = weights.reshape(-1) if flatten else weights
        if 0 < weights.ndim < values.ndim:  # one weight per example (N,) or per row: align the leading axes, as Keras
            weights = weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim))
        try:
            weights = np.broadcast_to(weights.astype(np.float64), values.shape)
        except ValueError:
            raise ValueError(f"metric '{self.name}': sample_weight of shape {shape} does not fit {what}") from None
        if not np.isfinite(weights).all():
            raise ValueError(f"metric '{self.name}': sample_weight holds NaN or inf")
        self.total += float((values * weights).sum())
        self.count += float(weights.sum())

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """The mean over examples of ``fn(y_true, y_pred, **kwargs)`` (per-prediction values), as Keras.

    Parameters
    ----------
    fn : callable ``(y_true, y_pred, **kwargs) -> array`` of shape ``(N, ...)``
    name : str, optional
    **kwargs
        Passed to ``fn`` (e.g. ``k``).

    Its :attr:`direction` is None (a function's better way cannot be told); the accuracies built on it say
    ``'up'``, the errors ``'down'``.
    """

    direction = None

    def __init__(self, fn, name=None, **kwargs):
        super().__init__(name or getattr(fn, "__name__", "metric"))
        self.fn, self.fn_kwargs = fn, kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = np.asarray(self.fn(y_true, y_pred, **self.fn_kwargs), dtype=np.float64)
        n = len(values) if values.ndim else 1
        per_example = values.reshape(n, int(np.prod(values.shape[1:]))).mean(axis=1) if values.ndim > 1 \
            else values.reshape(n)  # the size, not -1: an empty batch (0, H, W) has no -1 to infer
        if sample_weight is None:
            self.total += float(per_example.sum())
            self.count += float(n)
        else:
            self._add_weighted(per_example, sample_weight, f"{n} examples (predictions of shape "
                               f"{np.shape(y_pred)}); give a number or one weight per example, shape ({n},)",
                               flatten=True)

    def get_config(self):
        return dict(super().get_config(), **self.fn_kwargs)


class CategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_true) == argmax(y_pred)`` (one-hot labels)."""

    direction = "up"
    label_mode = "one_hot"

    def __init__(self, name="categorical_accuracy"):
        super().__init__(categorical_accuracy, name)

    def get_config(self):
        return {"name": self.name}


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often ``y_true == argmax(y_pred)`` (class indices)."""

    direction = "up"
    label_mode = "ids"

    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(sparse_categorical_accuracy, name)

    def get_config(self):
        return {"name": self.name}


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_true)`` is among the ``k`` highest scores (one-hot labels; Keras' tie rule)."""

    direction = "up"
    label_mode = "one_hot"

    def __init__(self, k=5, name="top_k_categorical_accuracy"):
        _check_k(k, type(self).__name__)
        super().__init__(top_k_categorical_accuracy, name, k=int(k))


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often ``y_true`` is among the ``k`` highest scores (class indices; Keras' tie rule)."""

    direction = "up"
    label_mode = "ids"

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy"):
        _check_k(k, type(self).__name__)
        super().__init__(sparse_top_k_categorical_accuracy, name, k=int(k))


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_true == [y_pred > threshold]`` (targets of the outputs' shape, or without a last axis of 1)."""

    direction = "up"
    label_mode = "values"

    def __init__(self, name="binary_accuracy", threshold=0.5):
        super().__init__(binary_accuracy, name, threshold=check_number(type(self).__name__, "threshold", threshold))


class MeanSquaredError(MeanMetricWrapper):
    """The mean of ``(y_pred − y_true)²`` (Keras' ``MeanSquaredError``, ``'mse'``): lower is better."""

    direction = "down"
    label_mode = "values"

    def __init__(self, name="mean_squared_error"):
        super().__init__(mean_squared_error, name)


class MeanAbsoluteError(MeanMetricWrapper):
    """The mean of ``|y_pred − y_true|`` (Keras' ``MeanAbsoluteError``, ``'mae'``): lower is better."""

    direction = "down"
    label_mode = "values"

    def __init__(self, name="mean_absolute_error"):
        super().__init__(mean_absolute_error, name)


def _check_k(k, who):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{who}: k must be an integer >= 1, got {k!r}")


#: Keras' names -> metric class
NAMES = {
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
}
NAMES.update({cls.__name__: cls for cls in list(NAMES.values())})
#: Keras' short names -> the metric they build (named by the short name, as Keras' compile names it)
ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
ACCURACY_NAMES = ("accuracy", "acc")


def resolve_accuracy(name, label_shape, output_shape):
    """The metric Keras picks for ``'accuracy'``/``'acc'`` from the shapes, named ``name``.

    Parameters
    ----------
    name : str
        ``'accuracy'`` or ``'acc'`` (kept as the logged name).
    label_shape : tuple
        Of the whole label array, ``(N, ...)``.
    output_shape : tuple
        Per-example output shape, ``(..., C)``.
    """
    pred_rank = len(output_shape) + 1
    if output_shape[-1] == 1:
        return BinaryAccuracy(name=name)
    sparse = len(label_shape) < pred_rank or (label_shape[-1] == 1 and output_shape[-1] > 1)
    return SparseCategoricalAccuracy(name=name) if sparse else CategoricalAccuracy(name=name)


def get(identifier) -> Metric:
    """A metric object from a name, a function or a :class:`Metric` (returned as it is).

    ``'accuracy'`` and ``'acc'`` need the labels to be resolved (see :func:`resolve_accuracy`);
    :meth:`tinynet.Model.fit` does that when it first sees them.

    Raises
    ------
    ValueError
        For an unknown name, naming the ones there are; for ``'accuracy'``/``'acc'``, pointing to
        :func:`resolve_accuracy`.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        if identifier in ALIASES:
            return NAMES[ALIASES[identifier]](name=identifier)
        if identifier in ACCURACY_NAMES:
            raise ValueError(f"metric {identifier!r} is resolved from the labels' and outputs' shapes (Model.fit "
                             f"does it); call resolve_accuracy({identifier!r}, label_shape, output_shape), or name "
                             f"the metric itself, e.g. 'sparse_categorical_accuracy'")
        if identifier not in NAMES:
            raise ValueError(f"unknown metric {identifier!r}; available: "
                             f"{sorted(set(NAMES) | set(ALIASES) | set(ACCURACY_NAMES))}")
        return NAMES[identifier]()
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise ValueError(f"a metric must be a name, a Metric or a function (y_true, y_pred) -> values; "
                     f"got {identifier!r}")


__all__ = ["Metric", "Mean", "MeanMetricWrapper", "CategoricalAccuracy", "SparseCategoricalAccuracy",
           "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "BinaryAccuracy", "MeanSquaredError",
           "MeanAbsoluteError", "categorical_accuracy", "sparse_categorical_accuracy", "top_k_categorical_accuracy",
           "sparse_top_k_categorical_accuracy", "binary_accuracy", "mean_squared_error", "mean_absolute_error", "get",
           "resolve_accuracy", "NAMES", "ALIASES"]
