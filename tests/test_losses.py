"""Losses against Python-float references and central differences; huge logits stay finite."""
import math

import numpy as np
import pytest

import tinynet
from tinynet import Model, losses
from tinynet.layers import Dense, Input, Softmax


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def rows(a):
    """Iterate over the class vectors of an (N, ..., C) array."""
    return a.reshape(-1, a.shape[-1])


def softmax_ce_ref(logits, ids):
    """mean over predictions of log Σ exp(z) − z[label], with log-sum-exp in Python floats."""
    total = []
    for z, label in zip(rows(logits), ids.reshape(-1)):
        m = max(z)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in z))
        total.append(lse - z[label])
    return math.fsum(total) / len(total)


def categorical_ce_ref(probs, ids, eps=1e-7):
    """Keras: renormalise each row to sum 1, clip to [eps, 1 − eps], mean of −log q[label]."""
    total = []
    for p, label in zip(rows(probs), ids.reshape(-1)):
        s = math.fsum(p)
        q = min(max(p[label] / s, eps), 1 - eps)
        total.append(-math.log(q))
    return math.fsum(total) / len(total)


def numeric_grad(fn, x, eps=1e-6):
    """Central differences of the scalar ``fn(x)`` element by element."""
    g = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        g[i] = (fn(plus) - fn(minus)) / (2 * eps)
    return g


def one_hot(ids, c):
    return np.eye(c)[ids]


LABEL_SHAPES = [((4, 5), (4,)), ((2, 3, 3, 4), (2, 3, 3)), ((2, 2, 2, 3), (2,))]  # (2,): one label per example


@pytest.mark.parametrize("scores_shape, ids_shape", LABEL_SHAPES)
def test_softmax_cross_entropy_value_and_gradient(scores_shape, ids_shape, rng):
    logits = rng.standard_normal(scores_shape) * 3
    ids = rng.integers(0, scores_shape[-1], ids_shape)
    full_ids = np.broadcast_to(ids.reshape(ids_shape + (1,) * (len(scores_shape) - 1 - len(ids_shape))),
                               scores_shape[:-1])
    loss, grad = losses.softmax_cross_entropy(logits, ids)
    assert loss == pytest.approx(softmax_ce_ref(logits, full_ids), rel=1e-12)
    expected = numeric_grad(lambda z: softmax_ce_ref(z, full_ids), logits)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)
    loss_oh, grad_oh = losses.softmax_cross_entropy(logits, one_hot(full_ids, scores_shape[-1]))
    assert loss_oh == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(grad_oh, grad, rtol=1e-14)


def soft_ce_ref(logits, targets):
    """mean over rows of −Σ t log softmax(z), in Python floats (targets need not sum to 1)."""
    total = []
    for z, t in zip(rows(logits), rows(targets)):
        m = max(z)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in z))
        total.append(math.fsum(-ti * (zi - lse) for zi, ti in zip(z, t)))
    return math.fsum(total) / len(total)


def test_softmax_cross_entropy_of_soft_targets_that_do_not_sum_to_one(rng):
    """A multi-hot row, an all-zero row (loss 0, gradient 0) and a row of weights: the gradient is
    ``p · Σt − t``, the derivative of the loss itself (it was ``p − t``, right only where Σt = 1)."""
    logits = rng.standard_normal((4, 3)) * 2
    targets = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.2, 0.3, 0.1], [0.0, 0.0, 1.0]])
    loss, grad = losses.softmax_cross_entropy(logits, targets)
    assert loss == pytest.approx(soft_ce_ref(logits, targets), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda z: soft_ce_ref(z, targets), logits), rtol=1e-6, atol=1e-9)
    assert not grad[1].any()
    z = np.array([[1.0, 2.0, 3.0]])  # the reviewer's case, against PyTorch's autograd: [-0.820, -0.511, 1.331]
    np.testing.assert_allclose(losses.softmax_cross_entropy(z, np.array([[1.0, 1.0, 0.0]]))[1],
                               [[-0.820, -0.511, 1.331]], atol=1e-3)


@pytest.mark.parametrize("scores_shape, ids_shape", LABEL_SHAPES)
def test_categorical_crossentropy_value_and_gradient(scores_shape, ids_shape, rng):
    probs = (rng.random(scores_shape) + 0.1) * 1.7  # not normalised: the loss renormalises, as Keras
    ids = rng.integers(0, scores_shape[-1], ids_shape)
    full_ids = np.broadcast_to(ids.reshape(ids_shape + (1,) * (len(scores_shape) - 1 - len(ids_shape))),
                               scores_shape[:-1])
    loss, grad = losses.categorical_crossentropy(probs, ids)
    assert loss == pytest.approx(categorical_ce_ref(probs, full_ids), rel=1e-12)
    expected = numeric_grad(lambda p: categorical_ce_ref(p, full_ids), probs)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)
    loss_oh, grad_oh = losses.categorical_crossentropy(probs, one_hot(full_ids, scores_shape[-1]))
    assert loss_oh == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(grad_oh, grad, rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_of_huge_logits_is_finite_and_exact(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    loss, grad = losses.softmax_cross_entropy(logits, np.array([0, 0]))
    assert math.isfinite(loss)
    assert loss == pytest.approx((0.0 + 2e4 + math.log(2)) / 2, rel=1e-6)
    assert grad.dtype == np.dtype(dtype) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, np.array([[0, 0, 0], [-1, 0.5, 0.5]]) / 2, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_categorical_crossentropy_of_saturated_softmax_is_finite(dtype):
    tinynet.set_floatx(dtype)
    layer = Softmax()
    layer(Input((3,)))
    probs, cache = layer.forward(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype))
    assert np.all(np.isfinite(probs)) and np.array_equal(probs, [[1, 0, 0], [0, 0.5, 0.5]])
    loss, grad = losses.categorical_crossentropy(probs, np.array([0, 0]))
    # row 0 is clipped at 1 − 1e-7, row 1 at 1e-7
    expected = (-math.log(1 - 1e-7) - math.log(1e-7)) / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(grad)) and grad.dtype == np.dtype(dtype)
    gx, _ = layer.backward(grad, cache)
    assert np.all(np.isfinite(gx))


def test_softmax_then_categorical_crossentropy_equals_fused_loss(rng):
    """Backward through a Softmax layer with Keras' loss gives the fused gradient softmax(z) − t (unclipped)."""
    tinynet.set_floatx("float64")
    x = Input((4,))
    dense = Dense(5)
    model = Model(x, Softmax()(dense(x)))
    data = rng.standard_normal((3, 4))
    ids = np.array([0, 4, 2])
    loss, grad = losses.categorical_crossentropy(model.forward(data), ids)
    gx_two_step = model.backward(grad)
    fused_loss, fused_grad = losses.softmax_cross_entropy(dense(data), ids)  # eager call: the logits
    assert loss == pytest.approx(fused_loss, rel=1e-10)
    np.testing.assert_allclose(gx_two_step, fused_grad @ dense.weights[0].T, rtol=1e-8, atol=1e-12)


def test_weighted_loss_sums_weighted_losses_and_scales_gradients(rng):
    main = rng.random((4, 3)) + 0.1
    aux = rng.random((4, 2, 2, 3)) + 0.1
    ids = np.array([0, 2, 1, 1])
    total, parts, grads = losses.weighted_loss([main, aux], ids, weights=[1.0, 0.3])
    l_main, g_main = losses.categorical_crossentropy(main, ids)
    l_aux, g_aux = losses.categorical_crossentropy(aux, ids)
    assert parts == [pytest.approx(l_main), pytest.approx(l_aux)]
    assert total == pytest.approx(l_main + 0.3 * l_aux, rel=1e-12)
    np.testing.assert_allclose(grads[0], g_main)
    np.testing.assert_allclose(grads[1], 0.3 * g_aux)


def test_weighted_loss_with_per_output_labels_and_a_named_loss(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    la, lb = np.array([0, 2]), np.array([3, 1])
    total, parts, grads = losses.weighted_loss([a, b], [la, lb], loss="softmax_cross_entropy")
    assert parts[0] == pytest.approx(softmax_ce_ref(a, la)) and parts[1] == pytest.approx(softmax_ce_ref(b, lb))
    assert total == pytest.approx(sum(parts))
    assert grads[1].shape == b.shape


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown loss 'hinge9'"):
        losses.get("hinge9")
    with pytest.raises(ValueError, match="unknown loss 'hinge9'"):
        losses.weighted_loss([np.ones((1, 2)) / 2], np.array([0]), loss="hinge9")
    assert isinstance(losses.get("categorical_crossentropy"), losses.CategoricalCrossentropy)
    assert isinstance(losses.get("SparseCategoricalCrossentropy"), losses.SparseCategoricalCrossentropy)
    assert losses.get("softmax_cross_entropy").fn is losses.softmax_cross_entropy


# ------------------------------------------------------------------------------------------ Keras' loss objects
@pytest.mark.parametrize("from_logits", [False, True])
def test_loss_objects_match_the_functions(rng, from_logits):
    scores = rng.random((5, 4)) + 0.05
    ids = np.array([0, 3, 1, 2, 3])
    fn = losses.softmax_cross_entropy if from_logits else losses.categorical_crossentropy
    value, grad = fn(scores, ids)
    for loss, labels in ((losses.CategoricalCrossentropy(from_logits=from_logits), one_hot(ids, 4)),
                         (losses.SparseCategoricalCrossentropy(from_logits=from_logits), ids),
                         (losses.SparseCategoricalCrossentropy(from_logits=from_logits), ids[:, None]),
                         (losses.SparseCategoricalCrossentropy(from_logits=from_logits), ids.astype(float))):
        assert loss(labels, scores) == pytest.approx(value, rel=1e-12)  # Keras' order: (y_true, y_pred)
        np.testing.assert_allclose(loss.value_and_grad(labels, scores)[1], grad, rtol=1e-12)


def test_label_smoothing_as_keras(rng):
    probs = rng.random((3, 5)) + 0.05
    probs /= probs.sum(axis=1, keepdims=True)
    t = one_hot(np.array([1, 4, 0]), 5)
    smoothed = t * 0.8 + 0.2 / 5
    loss = losses.CategoricalCrossentropy(label_smoothing=0.2)
    assert loss(t, probs) == pytest.approx(-np.mean((smoothed * np.log(probs)).sum(axis=1)), rel=1e-10)
    value, grad = loss.value_and_grad(t, probs)
    num = numeric_grad(lambda p: loss(t, p), probs)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        losses.CategoricalCrossentropy(label_smoothing=1.5)


def test_loss_objects_refuse_the_other_label_kind(rng):
    probs = rng.random((3, 4)) + 0.1
    with pytest.raises(ValueError, match="one-hot labels.*sparse_categorical_crossentropy"):
        losses.CategoricalCrossentropy()(np.array([0, 1, 2]), probs)
    with pytest.raises(ValueError, match="class indices.*categorical_crossentropy"):
        losses.SparseCategoricalCrossentropy()(one_hot(np.array([0, 1, 2]), 4), probs)
    with pytest.raises(ValueError, match="whole numbers"):
        losses.SparseCategoricalCrossentropy()(np.array([0.5, 1, 2]), probs)


@pytest.mark.parametrize("loss, labels, message", [
    (losses.CategoricalCrossentropy(), np.array([0, 1, 2]), r"one-hot labels of shape \(3, 4\), got shape \(3,\); "
                                                               r"these look like class indices.*to_categorical"),
    (losses.CategoricalCrossentropy(), np.array([[0, 2, 0, 0]] * 3), "must hold only 0 and 1"),
    (losses.CategoricalCrossentropy(), np.full((3, 4), np.nan), "NaN or inf"),
    (losses.SparseCategoricalCrossentropy(), np.array([0, 4, 1]),
     r"must lie in \[0, 4\).*first: 4 at index \(1,\)"),
    (losses.SparseCategoricalCrossentropy(), np.eye(4)[:3], "these look one-hot"),
    (losses.SparseCategoricalCrossentropy(), np.array([0.0, 1.5, 2.0]), "not whole numbers"),
    (losses.SparseCategoricalCrossentropy(), np.array(["a", "b", "c"]), "dtype <U1"),
])
def test_check_labels_names_the_problem(loss, labels, message):
    with pytest.raises(ValueError, match="fit: loss '[a-z_]+': .*" + message):
        loss.check_labels(labels, (4,), "fit")


def test_check_labels_accepts_what_the_losses_take():
    losses.CategoricalCrossentropy().check_labels(np.eye(4)[[0, 1, 2]], (4,))
    losses.CategoricalCrossentropy().check_labels(np.eye(4, dtype=int)[[0, 1, 2]], (4,))
    for ids in (np.array([0, 3, 1]), np.array([[0], [3], [1]]), np.array([0.0, 3.0, 1.0])):
        losses.SparseCategoricalCrossentropy().check_labels(ids, (4,))
    losses.SparseCategoricalCrossentropy().check_labels(np.array([0, 3]), (2, 2, 4))  # one label, every position


def test_a_loss_function_must_return_its_gradient():
    loss = losses.get(lambda y_pred, y_true: 1.0)
    with pytest.raises(TypeError, match="must return \\(loss, gradient\\)"):
        loss(np.array([0]), np.ones((1, 2)))


# ------------------------------------------------------------------------------------------ sample weights, checks
def test_sample_weight_as_keras():
    """Keras 3.15 (JAX): SparseCategoricalCrossentropy()(y, p, sample_weight=[1, 0, 2]) = 0.7297521233558655."""
    y = np.array([0, 1, 2])
    p = np.array([[.7, .2, .1], [.1, .8, .1], [.3, .3, .4]])
    loss = losses.SparseCategoricalCrossentropy()
    assert loss(y, p, sample_weight=np.array([1.0, 0.0, 2.0])) == pytest.approx(0.7297521233558655, rel=1e-6)
    per_example = -np.log(p[np.arange(3), y])
    assert loss(y, p, sample_weight=[1.0, 0.0, 2.0]) == pytest.approx((per_example * [1, 0, 2]).sum() / 3)
    assert loss(y, p, sample_weight=2.0) == pytest.approx(2 * per_example.mean())  # Σ w l / N, not / Σ w


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("scores_shape, weight_shape", [((4, 5), (4,)), ((4, 5), (4, 1)), ((4, 5), ()),
                                                        ((2, 3, 3, 4), (2, 3, 3)), ((2, 3, 3, 4), (2,))])
def test_sample_weight_value_and_gradient(rng, from_logits, scores_shape, weight_shape):
    scores = rng.random(scores_shape) + 0.05
    ids = rng.integers(0, scores_shape[-1], scores_shape[:-1])
    weights = rng.random(weight_shape) * 2
    w = weights[..., 0] if weights.ndim > ids.ndim else weights.reshape(
        weights.shape + (1,) * (ids.ndim - weights.ndim))  # (N, 1) -> (N,); (N,) -> (N, 1, 1): every position
    per_prediction = np.broadcast_to(w, ids.shape)
    ref = softmax_ce_ref if from_logits else categorical_ce_ref
    expected = math.fsum(w * ref(s[None], np.array([i])) for s, i, w in
                         zip(rows(scores), ids.reshape(-1), per_prediction.reshape(-1))) / ids.size
    for loss, labels in ((losses.SparseCategoricalCrossentropy(from_logits=from_logits), ids),
                         (losses.CategoricalCrossentropy(from_logits=from_logits), one_hot(ids, scores_shape[-1]))):
        value, grad = loss.value_and_grad(labels, scores, weights)
        assert value == pytest.approx(expected, rel=1e-10)
        assert loss(labels, scores, sample_weight=weights) == value
        num = numeric_grad(lambda s, loss=loss, labels=labels: loss(labels, s, sample_weight=weights), scores)
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("weight, error, message", [
    (np.ones(2), ValueError, r"sample_weight of shape \(2,\) does not fit outputs of shape \(3, 4\); it must be "
                             r"a number or of shape \(3,\), \(3, 1\)"),
    (np.ones((3, 4)), ValueError, r"sample_weight of shape \(3, 4\) does not fit"),
    (np.array([1.0, np.nan, 1.0]), ValueError, "sample_weight holds NaN or inf"),
    (np.array(["a", "b", "c"]), TypeError, "sample_weight must be numbers"),
])
def test_sample_weight_is_checked(rng, weight, error, message):
    probs = rng.random((3, 4)) + 0.1
    for loss, labels in ((losses.SparseCategoricalCrossentropy(name="sparse_ce"), np.array([0, 1, 2])),
                         (losses.CategoricalCrossentropy(name="ce"), np.eye(4)[[0, 1, 2]])):
        with pytest.raises(error, match=f"^{loss.name}: {message}"):
            loss(labels, probs, sample_weight=weight)
    with pytest.raises(TypeError, match="loss 'softmax_cross_entropy': .* takes no sample_weight"):
        losses.get("softmax_cross_entropy")(np.array([0, 1, 2]), probs, sample_weight=np.ones(3))


@pytest.mark.parametrize("cls", [losses.CategoricalCrossentropy, losses.SparseCategoricalCrossentropy])
@pytest.mark.parametrize("value", ["yes", "False", 1, None])
def test_from_logits_must_be_a_bool(cls, value):
    with pytest.raises(TypeError, match=f"^{cls.__name__}: from_logits must be True or False"):
        cls(from_logits=value)
    assert cls.from_config(cls(from_logits=np.bool_(True)).get_config()).from_logits is True


def test_sparse_loss_errors_carry_its_own_name(rng):
    probs = rng.random((3, 4)) + 0.1
    with pytest.raises(ValueError, match=r"^sparse_categorical_crossentropy: labels must lie in \[0, 4\)"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 5, 1]), probs)
    with pytest.raises(ValueError, match=r"^my_loss: labels must lie in \[0, 4\)"):
        losses.SparseCategoricalCrossentropy(from_logits=True, name="my_loss")(np.array([0, -1, 1]), probs)
