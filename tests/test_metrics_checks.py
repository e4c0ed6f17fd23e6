"""Metric objects refuse bad sample weights and labels with messages that name the metric and the shapes."""
import numpy as np
import pytest

from tinynet import metrics

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
IDS = np.array([0, 1, 1])


@pytest.mark.parametrize("metric, y_true", [(metrics.SparseCategoricalAccuracy(), IDS),
                                            (metrics.CategoricalAccuracy(), np.eye(3)[IDS]),
                                            (metrics.SparseTopKCategoricalAccuracy(k=1), IDS)])
def test_a_sample_weight_of_another_length_names_the_metric_and_both_shapes(metric, y_true):
    with pytest.raises(ValueError, match=rf"^metric '{metric.name}': sample_weight of shape \(2,\) does not fit 3 "
                                         rf"examples \(predictions of shape \(3, 3\)\); give a number or one weight "
                                         rf"per example, shape \(3,\)"):
        metric.update_state(y_true, PROBS, sample_weight=np.ones(2))
    assert metric.count == 0  # nothing half-updated


def test_mean_sample_weight_must_fit_the_values():
    mean = metrics.Mean()
    with pytest.raises(ValueError, match=r"^metric 'mean': sample_weight of shape \(2,\) does not fit values of "
                                         r"shape \(3,\)"):
        mean.update_state(np.ones(3), sample_weight=np.ones(2))
    with pytest.raises(ValueError, match="^metric 'mean': sample_weight holds NaN or inf"):
        mean.update_state(np.ones(3), sample_weight=[1.0, np.nan, 1.0])
    with pytest.raises(TypeError, match="^metric 'mean': sample_weight must be numbers, got dtype <U1"):
        mean.update_state(np.ones(3), sample_weight=["a", "b", "c"])
    assert (mean.total, mean.count) == (0.0, 0.0)


def test_weights_that_fit_are_used_as_keras():
    assert metrics.Mean()(np.array([1.0, 3.0]), sample_weight=[3, 1]) == pytest.approx(1.5)  # Keras' Mean()(values)
    assert metrics.Mean()(2.0, sample_weight=4) == 2.0
    accuracy = metrics.SparseCategoricalAccuracy()  # hits: 1, 1, 0
    assert accuracy(IDS, PROBS, sample_weight=np.array([[1.0], [1.0], [2.0]])) == pytest.approx(0.5)
    assert metrics.SparseCategoricalAccuracy()(IDS, PROBS, sample_weight=2.0) == pytest.approx(2 / 3)


@pytest.mark.parametrize("metric, y_true, message", [
    (metrics.SparseCategoricalAccuracy(), np.eye(3)[IDS],
     r"^sparse_categorical_accuracy: takes integer class indices of shape \(3,\), \(3, 1\), got shape \(3, 3\); "
     r"these look one-hot: use the metric without 'sparse_' \('categorical_accuracy', CategoricalAccuracy\)"),
    (metrics.SparseTopKCategoricalAccuracy(k=2), np.eye(3)[IDS],
     r"these look one-hot: .*\('top_k_categorical_accuracy', TopKCategoricalAccuracy\)"),
    (metrics.CategoricalAccuracy(), IDS,
     r"^categorical_accuracy: takes one-hot labels of shape \(3, 3\), got shape \(3,\); these look like class "
     r"indices: use the 'sparse_' metric \('sparse_categorical_accuracy', SparseCategoricalAccuracy\)"),
    (metrics.SparseCategoricalAccuracy(), np.zeros((3, 2), np.int64), r"got shape \(3, 2\)$"),
])
def test_labels_of_the_other_kind_point_to_the_right_metric(metric, y_true, message):
    with pytest.raises(ValueError, match=message):
        metric(y_true, PROBS)


def test_check_labels_points_to_the_right_metric_too():
    with pytest.raises(ValueError, match=r"^fit: metric 'accuracy': .*these look one-hot: use the metric without "
                                         r"'sparse_' \('categorical_accuracy', CategoricalAccuracy\)"):
        metrics.SparseCategoricalAccuracy(name="accuracy").check_labels(np.eye(3)[IDS], (3,), "fit")
