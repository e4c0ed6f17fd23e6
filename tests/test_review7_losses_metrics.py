"""Review 7: defects found in the losses and metrics by a hostile review (each test says what was wrong)."""
import numpy as np
import pytest

from tinynet import losses, metrics

PROBS = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])


# ------------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("fn", [metrics.sparse_categorical_accuracy, metrics.sparse_top_k_categorical_accuracy])
@pytest.mark.parametrize("bad", [-1, 3])
def test_sparse_metrics_refuse_class_ids_out_of_range(fn, bad):
    """A label of -1 silently read the last class's score (top-k counted it found), a label of C raised a bare
    IndexError from NumPy (top-k) or counted as a miss; now a ValueError names the range and the bad value."""
    with pytest.raises(ValueError, match=rf"\[0, 3\).*first: {bad} at index \(0,\)"):
        fn(np.array([bad, 0]), PROBS)


def test_top_k_with_k_beyond_the_classes_still_refuses_a_label_out_of_range():
    """With k >= C every label counted as found, even one that is no class at all (Keras: not found)."""
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.sparse_top_k_categorical_accuracy(np.array([7, 0]), PROBS, k=10)
    assert list(metrics.sparse_top_k_categorical_accuracy(np.array([2, 0]), PROBS, k=10)) == [1.0, 1.0]


@pytest.mark.parametrize("labels", [np.array([np.nan, 0.0]), np.array([2.5, 0.0]), np.array([np.inf, 0.0])])
def test_sparse_accuracy_refuses_float_labels_that_are_not_class_ids(labels):
    """Float labels were cast to int64 without a check: 2.5 counted as class 2 (a hit; Keras: a miss) and NaN
    became -2**63, a silent miss; now ValueError, as the losses' check of class indices."""
    with pytest.raises(ValueError, match="whole numbers"):
        metrics.sparse_categorical_accuracy(labels, PROBS)
    assert list(metrics.sparse_categorical_accuracy(np.array([2.0, 0.0]), PROBS)) == [1.0, 1.0]


def test_a_refused_batch_leaves_the_metric_unchanged():
    """Bad labels raise before the metric's state changes."""
    m = metrics.SparseTopKCategoricalAccuracy(k=1)
    m.update_state(np.array([2, 0]), PROBS)
    with pytest.raises(ValueError):
        m.update_state(np.array([3, 0]), PROBS)
    assert (m.total, m.count, m.result()) == (2.0, 2.0, 1.0)


def test_top_k_treats_nan_scores_as_keras():
    """Keras' in_top_k ranks the label by how many scores are strictly greater, a NaN at the label counting as
    -inf; tinynet's partition ranked a NaN elsewhere above every score, so a correct top-1 counted as a miss."""
    pred = np.array([[0.5, np.nan, 0.1], [0.5, np.nan, 0.1], [0.2, 0.2, 0.6]])
    assert list(metrics.sparse_top_k_categorical_accuracy(np.array([0, 1, 1]), pred, k=1)) == [1.0, 0.0, 0.0]
    assert list(metrics.sparse_top_k_categorical_accuracy(np.array([0, 1, 1]), pred, k=2)) == [1.0, 0.0, 1.0]
    one_hot = np.eye(3)[[0, 1, 1]]
    assert list(metrics.top_k_categorical_accuracy(one_hot, pred, k=1)) == [1.0, 0.0, 0.0]


def test_top_k_ties_and_large_k_still_follow_keras():
    """Unchanged by the fix above: ties at the k-th score count as found; k >= C finds every valid label."""
    pred = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    assert list(metrics.sparse_top_k_categorical_accuracy(np.array([0, 1]), pred, k=2)) == [1.0, 1.0]
    assert list(metrics.sparse_top_k_categorical_accuracy(np.array([0, 1]), pred, k=1)) == [0.0, 0.0]
    assert list(metrics.sparse_top_k_categorical_accuracy(np.array([0, 1]), pred, k=3)) == [1.0, 1.0]


def test_an_empty_batch_with_middle_axes_adds_nothing():
    """An empty batch of outputs (0, 4, 4, C) crashed with NumPy's 'cannot reshape array of size 0'; an empty
    batch of (0, C) outputs already added nothing, as in Keras."""
    m = metrics.SparseCategoricalAccuracy()
    m.update_state(np.zeros((0,), int), np.zeros((0, 4, 4, 3)))
    assert (m.total, m.count, m.result()) == (0.0, 0.0, 0.0)
    m.update_state(np.zeros((1,), int), np.eye(3)[None, None, None, [0]].repeat(4, 1).repeat(4, 2))
    assert m.result() == 1.0


def test_get_accuracy_says_it_needs_the_labels():
    """``metrics.get('accuracy')`` said "unknown metric 'accuracy'" while listing 'accuracy' as available."""
    for name in ("accuracy", "acc"):
        with pytest.raises(ValueError, match="resolve_accuracy") as info:
            metrics.get(name)
        assert "unknown" not in str(info.value)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), "high", None, True])
def test_binary_accuracy_refuses_a_threshold_that_is_not_a_finite_number(threshold):
    """A NaN threshold was accepted and every prediction silently compared False (accuracy = share of 0s)."""
    with pytest.raises((ValueError, TypeError), match="threshold"):
        metrics.BinaryAccuracy(threshold=threshold)
    with pytest.raises((ValueError, TypeError), match="threshold"):
        metrics.binary_accuracy(np.array([1.0]), np.array([[0.7]]), threshold=threshold)
    assert metrics.BinaryAccuracy(threshold=0.7).get_config() == {"name": "binary_accuracy", "threshold": 0.7}


# -------------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("make", [lambda: losses.CategoricalCrossentropy(),
                                  lambda: losses.CategoricalCrossentropy(from_logits=True)])
def test_crossentropy_refuses_non_finite_soft_targets(make, bad):
    """One-hot (soft) float targets holding NaN gave a NaN loss, even under a sample weight of 0, where
    MeanSquaredError and BinaryCrossentropy raise; now a ValueError naming the loss."""
    y = np.array([[bad, 0.0, 1.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="categorical_crossentropy.*NaN or inf"):
        make().value_and_grad(y, PROBS, np.array([0.0, 1.0]))


@pytest.mark.parametrize("fn", [losses.softmax_cross_entropy, losses.categorical_crossentropy])
def test_loss_functions_refuse_non_finite_soft_targets(fn):
    """The functions took NaN soft targets and returned a NaN loss and gradient."""
    with pytest.raises(ValueError, match=f"{fn.__name__}.*NaN or inf"):
        fn(PROBS, np.array([[np.nan, 0.0, 1.0], [0.0, 0.0, 1.0]]))


@pytest.mark.parametrize("loss", [losses.MeanSquaredError(), losses.CategoricalCrossentropy()])
def test_sample_weight_that_overflows_the_outputs_dtype_is_refused(loss):
    """A float64 weight of 1e39 passed the finiteness check, then became inf once cast to float32 outputs: an
    inf loss (inf·0 = NaN in the gradient); now a ValueError naming the dtype."""
    y = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    p = np.array([[0.3, 0.7], [0.6, 0.4]], np.float32)
    with pytest.raises(ValueError, match="sample_weight.*float32"):
        loss.value_and_grad(y, p, np.array([1e39, 1.0]))
    value, grad = loss.value_and_grad(y, p, np.array([1e30, 1.0]))
    assert np.isfinite(value) and np.isfinite(grad).all()


def test_softmax_cross_entropy_with_masked_logits_is_finite():
    """A logit of -inf (a masked class) whose target is 0 made the loss NaN (0 · -inf) while its gradient was
    finite; the loss is now the limit, 0 · log 0 = 0, as PyTorch's cross_entropy gives."""
    z = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]])
    value, grad = losses.softmax_cross_entropy(z, np.array([0, 1]))
    finite = np.array([[0.0, 1.0], [2.0, 0.5]])
    expected = -np.mean([finite[0, 0] - np.log(np.exp(finite[0]).sum()),
                         finite[1, 1] - np.log(np.exp(finite[1]).sum())])
    assert value == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(grad).all() and grad[0, 1] == 0.0 and grad[1, 2] == 0.0
    # a -inf logit on the labelled class is an infinite loss, not hidden
    assert losses.softmax_cross_entropy(z, np.array([1, 2]))[0] == np.inf


@pytest.mark.parametrize("fn", [metrics.categorical_accuracy, metrics.top_k_categorical_accuracy,
                                metrics.sparse_categorical_accuracy, metrics.sparse_top_k_categorical_accuracy])
@pytest.mark.parametrize("y_pred", [np.array([0.2, 0.8]), np.array(0.3)])
def test_class_metrics_need_predictions_with_a_class_axis(fn, y_pred):
    """Predictions without a batch and class axis gave a silent 1.0 (categorical_accuracy took the argmax over
    the whole batch of labels [0, 1]), or a bare IndexError/AxisError; now a ValueError naming the shape."""
    with pytest.raises(ValueError, match=rf"{fn.__name__}: predictions must have shape \(N, \.\.\., classes\)"):
        fn(np.array([0, 1]) if y_pred.ndim else np.array(1), y_pred)


@pytest.mark.parametrize("metric", [metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"),
                                    metrics.BinaryAccuracy(threshold=0.3), metrics.CategoricalAccuracy(name="acc"),
                                    metrics.MeanSquaredError(name="mse"), metrics.Mean(name="loss")])
def test_metric_config_round_trip(metric):
    """Metrics had get_config but no from_config (Keras' ``cls.from_config(m.get_config())`` raised
    AttributeError), unlike the losses."""
    again = type(metric).from_config(metric.get_config())
    assert type(again) is type(metric) and again.get_config() == metric.get_config()


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_sparse_crossentropy_refuses_infinite_float_labels_clearly(bad):
    """An infinite float label passed the whole-number check (inf == floor(inf)) and was cast to int64: a
    RuntimeWarning and an error quoting the cast's garbage, -9223372036854775808, as the label."""
    with pytest.raises(ValueError, match="whole numbers.*NaN or inf") as info:
        losses.SparseCategoricalCrossentropy()(np.array([bad, 0.0]), PROBS)
    assert "9223372036854775808" not in str(info.value)


@pytest.mark.parametrize("fn", [metrics.categorical_accuracy, metrics.sparse_categorical_accuracy,
                                metrics.sparse_top_k_categorical_accuracy])
def test_class_metrics_refuse_a_single_label_value(fn):
    """A 0-d label array raised a bare ``TypeError: len() of unsized object`` from the shape check's message;
    now a ValueError naming the metric."""
    with pytest.raises(ValueError, match=f"{fn.__name__}: labels must have a batch axis"):
        fn(np.array(1), PROBS[:1])


def test_mean_weights_one_value_per_row_as_keras():
    """``Mean()(values (N, K), sample_weight (N,))`` broadcast the weights along the last axis: with N == K each
    column was weighted instead of each row, silently (2.0 for Keras' 1.5); with N != K it raised."""
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert metrics.Mean()(values, sample_weight=np.array([1.0, 0.0])) == pytest.approx(1.5)  # Keras: 1.5
    cube = np.arange(12.0).reshape(2, 3, 2)
    assert metrics.Mean()(cube, sample_weight=np.array([1.0, 3.0])) == pytest.approx(7.0)  # Keras: 7.0
    assert metrics.Mean()(cube, sample_weight=np.array([[1.0, 2, 0], [0, 1, 1]])) == pytest.approx(4.9)  # Keras
    assert metrics.Mean()(values, sample_weight=np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"sample_weight of shape \(3,\) does not fit values of shape \(2, 2\)"):
        metrics.Mean()(values, sample_weight=np.ones(3))


@pytest.mark.parametrize("fn", [metrics.categorical_accuracy, metrics.top_k_categorical_accuracy])
def test_one_hot_metrics_refuse_nan_labels(fn):
    """A NaN in one-hot labels went to argmax, which picks the NaN's position: a silent hit or miss (the same
    labels raise in ``check_labels`` before fit); now ValueError, as the losses."""
    with pytest.raises(ValueError, match=f"{fn.__name__}: one-hot labels hold NaN or inf"):
        fn(np.array([[0.0, 0.0, np.nan], [1.0, 0.0, 0.0]]), PROBS)
    assert list(fn(np.array([[0, 0, 1], [1, 0, 0]]), PROBS)) == [1.0, 1.0]
