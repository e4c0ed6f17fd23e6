"""Keras' regression and binary losses, sample and class weights, weighted metrics: checked against NumPy
formulas written here and against Keras 3 (JAX backend, float64).

* the loss objects (:class:`tinynet.losses.MeanSquaredError`, :class:`tinynet.losses.BinaryCrossentropy`): value
  and gradient against naive formulas and central differences, and against Keras' value with ``jax.grad`` of it
  (the clip's bounds, logits of ±1000, label smoothing, sample weights);
* ``fit`` / ``evaluate`` / ``train_on_batch`` / ``test_on_batch`` with ``sample_weight``, ``class_weight``,
  ``validation_data=(x, y, w)`` and ``weighted_metrics``: a small Dense model trained with SGD by tinynet and by
  Keras from the same initial weights ends on the same weights and the same history (1e-10);
* every mistake in the weights is refused before the first step, naming the argument and the shapes, and leaves
  the model as it was.
"""
import math

import numpy as np
import pytest

import tinynet
from tinynet import engine, losses, metrics, optimizers

EPS = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def keras64():
    """Keras (JAX backend) and tinynet in float64, or a skip where Keras or JAX is missing."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("jax")
    if keras.backend.backend() != "jax":
        pytest.skip("the Keras comparisons need KERAS_BACKEND=jax")
    from inception.keras_reference import float64_mode

    with float64_mode():
        yield keras


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar ``f`` at ``x`` (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


# ------------------------------------------------------------------------------------------ naive formulas
def mse_ref(t, y, w):
    """Σ_n w_n mean_k (y − t)² / N, written out element by element."""
    n, k = y.shape
    return math.fsum(w[i] * math.fsum((y[i, j] - t[i, j]) ** 2 for j in range(k)) / k for i in range(n)) / n


def bce_ref(t, p, w):
    """Keras' binary cross-entropy on probabilities, clipped to [ε, 1 − ε], element by element."""
    n, k = p.shape
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            q = min(max(p[i, j], EPS), 1 - EPS)
            row -= t[i, j] * math.log(q) + (1 - t[i, j]) * math.log(1 - q)
        total += w[i] * row / k
    return total / n


def bce_logits_ref(t, z, w):
    """Binary cross-entropy of sigmoid(z), written as −t log σ(z) − (1 − t) log(1 − σ(z)) (moderate z only)."""
    s = 1 / (1 + np.exp(-z))
    return float((w[:, None] * -(t * np.log(s) + (1 - t) * np.log(1 - s))).mean(axis=1).sum() / len(z))


# ------------------------------------------------------------------------------------------ loss objects
@pytest.mark.parametrize("weighted", [False, True])
def test_mean_squared_error_value_and_gradient(rng, weighted):
    y = rng.normal(size=(5, 3))
    t = rng.normal(size=(5, 3))
    w = rng.random(5) * 2 if weighted else np.ones(5)
    loss = losses.get("mse")
    assert isinstance(loss, losses.MeanSquaredError) and loss.name == "mean_squared_error"
    value, grad = loss.value_and_grad(t, y, w if weighted else None)
    assert value == pytest.approx(mse_ref(t, y, w), rel=1e-13)
    np.testing.assert_allclose(grad, 2 * (y - t) * w[:, None] / 15, rtol=1e-13)
    np.testing.assert_allclose(grad, numeric_grad(lambda v: mse_ref(t, v, w), y), rtol=1e-7, atol=1e-10)
    assert loss(t, y, sample_weight=w if weighted else None) == value


def test_one_unit_targets_without_their_last_axis(rng):
    """Targets (N,) fit an output (N, 1), as Keras squeezes that axis; the gradient keeps the output's shape."""
    y = rng.normal(size=(6, 1))
    t = rng.normal(size=6)
    for loss in (losses.MeanSquaredError(), losses.BinaryCrossentropy(from_logits=True)):
        a = loss.value_and_grad(t if isinstance(loss, losses.MeanSquaredError) else (t > 0) * 1.0, y)
        b = loss.value_and_grad((t if isinstance(loss, losses.MeanSquaredError) else (t > 0) * 1.0)[:, None], y)
        assert a[0] == b[0] and a[1].shape == (6, 1)
        np.testing.assert_array_equal(a[1], b[1])


def bce_inputs(rng, n=8, k=3):
    """Probabilities with the clip's bounds and beyond in column 0, targets 0, 1 and soft ones."""
    p = rng.uniform(0.02, 0.98, size=(n, k))
    p[:4, 0] = [EPS, 1 - EPS, 0.0, 1.0]
    t = rng.integers(0, 2, size=(n, k)).astype(np.float64)
    t[4:, 1] = [0.3, 0.7, 0.5, 0.9][: n - 4]
    return p, t


@pytest.mark.parametrize("weighted", [False, True])
def test_binary_crossentropy_on_probabilities(rng, weighted):
    """Value by the formula; gradient: −(t/q − (1 − t)/(1 − q)) / (NK) inside the clip, 0 outside, half of it on
    a bound (the derivative of clip that Keras on JAX takes), and equal to central differences inside."""
    p, t = bce_inputs(rng)
    w = rng.random(8) * 2 if weighted else np.ones(8)
    loss = losses.get("binary_crossentropy")
    value, grad = loss.value_and_grad(t, p, w if weighted else None)
    assert value == pytest.approx(bce_ref(t, p, w), rel=1e-13)
    q = np.clip(p, EPS, 1 - EPS)
    inside = -(t / q - (1 - t) / (1 - q)) * w[:, None] / 24
    factor = np.ones_like(p)
    factor[:2, 0] = 0.5  # exactly on ε and 1 − ε
    factor[2:4, 0] = 0.0  # 0 and 1: clipped
    np.testing.assert_allclose(grad, inside * factor, rtol=1e-13)
    interior = np.ones(p.shape, bool)
    interior[:4, 0] = False
    num = numeric_grad(lambda v: bce_ref(t, v, w), p, h=1e-7)
    np.testing.assert_allclose(grad[interior], num[interior], rtol=1e-5, atol=1e-9)


def test_binary_crossentropy_from_logits_is_stable(rng):
    z = rng.normal(size=(6, 2)) * 3
    t = rng.integers(0, 2, size=(6, 2)).astype(np.float64)
    w = rng.random(6)
    loss = losses.BinaryCrossentropy(from_logits=True)
    value, grad = loss.value_and_grad(t, z, w)
    assert value == pytest.approx(bce_logits_ref(t, z, w), rel=1e-12)
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-z)) - t) * w[:, None] / 12, rtol=1e-12, atol=1e-16)
    # logits of ±1000: e^{1000} overflows a naive sigmoid; the loss is |z| on the wrong side and 0 on the right one
    z = np.array([[1000.0], [-1000.0], [1000.0], [-1000.0]])
    t = np.array([[0.0], [1.0], [1.0], [0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # (underflow to 0 is the point)
        value, grad = loss.value_and_grad(t, z)
    assert value == 500.0
    np.testing.assert_array_equal(grad, [[0.25], [-0.25], [0.0], [0.0]])


def test_label_smoothing_moves_the_targets_towards_one_half(rng):
    p, t = bce_inputs(rng)
    smoothed = losses.BinaryCrossentropy(label_smoothing=0.2)
    plain = losses.BinaryCrossentropy()
    soft = t * 0.8 + 0.1
    assert smoothed(t, p) == plain(soft, p)
    np.testing.assert_array_equal(smoothed.value_and_grad(t, p)[1], plain.value_and_grad(soft, p)[1])


def test_float32_stays_float32(rng):
    for loss, t in ((losses.MeanSquaredError(), rng.normal(size=(4, 2))),
                    (losses.BinaryCrossentropy(), rng.integers(0, 2, (4, 2))),
                    (losses.BinaryCrossentropy(from_logits=True), rng.integers(0, 2, (4, 2)))):
        y = rng.uniform(0.1, 0.9, size=(4, 2)).astype(np.float32)
        assert loss.value_and_grad(t, y, np.ones(4))[1].dtype == np.float32


@pytest.mark.parametrize("make, labels, error, message", [
    (losses.MeanSquaredError, np.zeros((4, 3)), ValueError,
     r"^mean_squared_error: targets of shape \(4, 3\) do not fit outputs of shape \(4, 2\)"),
    (losses.MeanSquaredError, np.full((4, 2), np.nan), ValueError, "^mean_squared_error: targets hold NaN or inf"),
    (losses.BinaryCrossentropy, np.full((4, 2), 1.5), ValueError,
     r"^binary_crossentropy: takes targets in \[0, 1\], got values in \[1.5, 1.5\] \(first: 1.5 at index \(0, 0\)\)"),
    (losses.BinaryCrossentropy, np.array(["a"] * 4), ValueError, "^binary_crossentropy: targets must be numbers"),
])
def test_bad_targets_name_the_loss_and_the_shapes(make, labels, error, message):
    with pytest.raises(error, match=message):
        make().value_and_grad(labels, np.full((4, 2), 0.5))


@pytest.mark.parametrize("weighted", [False, True])
def test_mean_absolute_error_value_and_gradient(rng, weighted):
    """Against the formula written here: Σ_m w_m mean_k |y − t| / M, and its derivative sign(y − t) w_m / (M K)
    away from ties (central differences), −w_m / (M K) at a tie."""
    y, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    t[1, 2] = y[1, 2]
    w = rng.random(6) * 2 if weighted else np.ones(6)
    loss = losses.get("mae")
    assert isinstance(loss, losses.MeanAbsoluteError) and loss.name == "mean_absolute_error"
    value, grad = loss.value_and_grad(t, y, w if weighted else None)

    def reference(v):
        return float(np.sum(np.abs(v - t).mean(axis=-1) * w) / len(v))

    assert value == pytest.approx(reference(y), rel=1e-13)
    numeric = numeric_grad(reference, y)
    away = np.ones_like(y, bool)
    away[1, 2] = False
    np.testing.assert_allclose(grad[away], numeric[away], rtol=1e-6, atol=1e-10)
    assert grad[1, 2] == pytest.approx(-w[1] / y.size)


def test_names_configs_and_flags():
    for name, cls in (("mse", losses.MeanSquaredError), ("mean_squared_error", losses.MeanSquaredError),
                      ("mae", losses.MeanAbsoluteError), ("mean_absolute_error", losses.MeanAbsoluteError),
                      ("MeanSquaredError", losses.MeanSquaredError), ("binary_crossentropy", losses.BinaryCrossentropy),
                      ("BinaryCrossentropy", losses.BinaryCrossentropy)):
        assert type(losses.get(name)) is cls
    bce = losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, name="b")
    again = losses.get(losses.serialize(bce))
    assert type(again) is losses.BinaryCrossentropy and again.get_config() == bce.get_config()
    with pytest.raises(TypeError, match="^BinaryCrossentropy: from_logits must be True or False"):
        losses.BinaryCrossentropy(from_logits="yes")
    with pytest.raises(ValueError, match=r"^BinaryCrossentropy: label_smoothing must be in \[0, 1\]"):
        losses.BinaryCrossentropy(label_smoothing=2)
    assert losses.accepts_sample_weight(losses.MeanSquaredError())
    assert not losses.accepts_sample_weight(losses.get("softmax_cross_entropy"))


@pytest.mark.keras
@pytest.mark.parametrize("cls, kwargs, kind", [
    ("MeanSquaredError", {}, "values"),
    ("MeanAbsoluteError", {}, "values"),
    ("BinaryCrossentropy", {}, "probabilities"),
    ("BinaryCrossentropy", {"label_smoothing": 0.2}, "probabilities"),
    ("BinaryCrossentropy", {"from_logits": True}, "logits"),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_losses_and_their_gradients_match_keras(keras64, rng, cls, kwargs, kind, weighted):
    """Value and ∂L/∂y_pred (jax.grad of Keras' loss) to 1e-12, the clip's bounds and ±1000 logits included."""
    import jax

    if kind == "probabilities":
        y, t = bce_inputs(rng)
    elif kind == "logits":
        y, t = rng.normal(size=(8, 3)) * 4, rng.integers(0, 2, size=(8, 3)).astype(np.float64)
        y[:4, 0] = [1000.0, -1000.0, 1000.0, -1000.0]
        t[:4, 0] = [0.0, 1.0, 1.0, 0.0]
    else:
        y, t = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
        t[2, 1] = y[2, 1]  # a tie: MeanAbsoluteError's derivative there is Keras-on-JAX's −1
    w = rng.random(8) * 2 if weighted else None
    if w is not None:
        w[3] = 0.0
    ours = getattr(losses, cls)(**kwargs)
    theirs = getattr(keras64.losses, cls)(**kwargs)
    value, grad = ours.value_and_grad(t, y, w)
    k_value, k_grad = jax.value_and_grad(lambda v: theirs(t, v, sample_weight=w))(y)
    assert value == pytest.approx(float(k_value), rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(grad, np.asarray(k_grad), rtol=1e-12, atol=1e-17)


def test_the_same_losses_and_weighted_training_on_every_backend(xb, rng):
    """NumPy, Numba and CuPy arrays: the same values and gradients; a weighted fit on the model's device ends on
    the NumPy run's weights and history."""
    tinynet.set_floatx("float64")
    p, t = bce_inputs(rng)
    w = rng.random(8)
    for loss, y in ((losses.MeanSquaredError(), p), (losses.MeanAbsoluteError(), p), (losses.BinaryCrossentropy(), p),
                    (losses.BinaryCrossentropy(from_logits=True), (p - 0.5) * 50)):
        value, grad = loss.value_and_grad(t, y, w)
        got_value, got_grad = loss.value_and_grad(xb(t), xb(y), xb(w))
        assert got_value == pytest.approx(value, rel=1e-13)
        np.testing.assert_allclose(xb.numpy(got_grad), grad, rtol=1e-13, atol=1e-18)
    x, d = data(rng)
    runs = []
    under_test = ("numpy", "gpu") if xb.name == "cupy" else (xb.name, "cpu")
    for kernels, device in (("numpy", "cpu"), under_test):  # the NumPy reference, then the backend under test
        tinynet.set_cpu_kernels(kernels)
        model = dense_model(tinynet, [("out", 3, "sigmoid")]).to(device)
        model.compile(optimizers.SGD(learning_rate=0.1), loss="binary_crossentropy", weighted_metrics=["mse"])
        history = model.fit(x, d["multi_label"], sample_weight=d["weights"], batch_size=4, epochs=2, shuffle=False,
                            verbose=0).history
        runs.append((history, [xb.numpy(a) for a in model.get_weights()]))
    for key in runs[0][0]:
        np.testing.assert_allclose(runs[1][0][key], runs[0][0][key], rtol=1e-12)
    for a, b in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------------ metrics
def test_element_wise_metrics_by_hand():
    y_true = np.array([[1.0], [0.0], [0.7], [1.0]])
    y_pred = np.array([[0.9], [0.2], [0.9], [0.4]])
    # a target that is neither 0 nor 1 never matches (Keras compares it with 0.0 or 1.0)
    np.testing.assert_array_equal(metrics.binary_accuracy(y_true, y_pred), [1, 1, 0, 0])
    np.testing.assert_array_equal(metrics.binary_accuracy(y_true[:, 0], y_pred), [1, 1, 0, 0])
    np.testing.assert_allclose(metrics.mean_squared_error(y_true, y_pred), (y_true - y_pred)[:, 0] ** 2)
    np.testing.assert_allclose(metrics.mean_absolute_error(y_true[:, 0], y_pred), abs(y_true - y_pred)[:, 0])
    mse = metrics.get("mse")
    assert isinstance(mse, metrics.MeanSquaredError) and mse.name == "mse" and mse.direction == "down"
    assert metrics.get("mae").name == "mae" and metrics.get("mean_absolute_error").direction == "down"
    mse.update_state(y_true[:2], y_pred[:2], sample_weight=[1.0, 3.0])
    mse.update_state(y_true[2:], y_pred[2:], sample_weight=[0.0, 2.0])
    assert mse.result() == pytest.approx((0.01 + 3 * 0.04 + 2 * 0.36) / 6, rel=1e-12)
    with pytest.raises(ValueError, match=r"^mean_squared_error: takes targets of the outputs' shape \(4, 3\), got "
                                         r"shape \(4,\)"):
        metrics.mean_squared_error(np.zeros(4), np.zeros((4, 3)))


@pytest.mark.keras
def test_element_wise_metrics_match_keras(keras64, rng):
    y_true = rng.integers(0, 2, size=(12, 3)).astype(np.float64)
    y_true[:3, 0] = [0.3, 0.5, 0.8]
    y_pred = rng.random((12, 3))
    w = rng.random(12)
    for name in ("BinaryAccuracy", "MeanSquaredError", "MeanAbsoluteError"):
        ours, theirs = getattr(metrics, name)(), getattr(keras64.metrics, name)()
        for part in (slice(0, 5), slice(5, 12)):
            ours.update_state(y_true[part], y_pred[part], sample_weight=w[part])
            theirs.update_state(y_true[part], y_pred[part], sample_weight=w[part])
        assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-12), name
        assert ours.name == theirs.name


# ------------------------------------------------------------------------------------------ fit against Keras
def dense_model(lib, heads, seed=3):
    """x (4,) -> Dense 5 relu 'h' -> one Dense head per ``(name, units, activation)``; tinynet draws the weights
    (``lib`` is tinynet or keras: the same code builds both)."""
    if lib is tinynet:
        tinynet.layers.reset_names()
        tinynet.set_seed(seed)
    x = lib.Input((4,), name="x")
    h = lib.layers.Dense(5, activation="relu", name="h")(x)
    outs = [lib.layers.Dense(units, activation=act, name=name)(h) for name, units, act in heads]
    return lib.Model(x, outs if len(outs) > 1 else outs[0])


def data(rng, n=10):
    x = rng.normal(size=(n, 4))
    return x, {"binary": rng.integers(0, 2, n), "multi_label": rng.integers(0, 2, (n, 3)).astype(np.float64),
               "regression": rng.normal(size=(n, 2)), "weights": rng.random(n) * 2}


def bce_case(lib, d):
    return dict(heads=[("out", 1, "sigmoid")], y=d["binary"],
                compile=dict(loss="binary_crossentropy", metrics=["accuracy"], weighted_metrics=["accuracy"]),
                fit=dict(sample_weight=d["weights"]))


def logits_case(lib, d):
    return dict(heads=[("out", 1, None)], y=d["binary"][:, None].astype(np.float64),
                compile=dict(loss=lib.losses.BinaryCrossentropy(from_logits=True),
                             metrics=[lib.metrics.BinaryAccuracy(threshold=0.0)]),
                fit=dict(class_weight={0: 0.5, 1: 2.0}))


def multi_label_case(lib, d):
    return dict(heads=[("out", 3, "sigmoid")], y=d["multi_label"],
                compile=dict(loss=lib.losses.BinaryCrossentropy(label_smoothing=0.1),
                             metrics=["binary_accuracy", "accuracy"], weighted_metrics=["mse"]),
                fit=dict(sample_weight=d["weights"], validation_split=0.3))


def mse_case(lib, d):
    return dict(heads=[("out", 2, None)], y=d["regression"],
                compile=dict(loss="mse", metrics=["mae", "mse"], weighted_metrics=["mse"]),
                fit=dict(sample_weight=d["weights"]))


def two_outputs_case(lib, d):
    return dict(heads=[("bin", 1, "sigmoid"), ("reg", 2, None)], y=[d["binary"], d["regression"]],
                compile=dict(loss=["binary_crossentropy", lib.losses.MeanSquaredError()], loss_weights=[0.5, 1.0],
                             metrics=[["accuracy"], ["mae"]], weighted_metrics={"reg": ["mae"]}),
                fit=dict(sample_weight=d["weights"]))


CASES = [bce_case, logits_case, multi_label_case, mse_case, two_outputs_case]


def run(lib, case, x, d, initial=None):
    """Build ``case`` (with the ``initial`` weights if given), compile it (SGD 0.1) and fit it for 3 epochs of
    batches of 4 in order, with validation (weighted by other weights where the case weights its examples);
    return the model, the history and the labels."""
    spec = case(lib, d)
    model = dense_model(lib, spec["heads"])
    if initial is not None:
        model.set_weights(initial)
    model.compile(optimizer=lib.optimizers.SGD(learning_rate=0.1), **spec["compile"])
    fit = dict(spec["fit"])
    if "validation_split" not in fit:
        x_val = x[::-1] * 0.5
        y_val = [a[::-1] for a in spec["y"]] if isinstance(spec["y"], list) else spec["y"][::-1]
        fit["validation_data"] = (x_val, y_val, d["weights"] ** 2) if "sample_weight" in fit else (x_val, y_val)
    history = model.fit(x, spec["y"], batch_size=4, epochs=3, shuffle=False, verbose=0, **fit).history
    return model, history, spec["y"]


@pytest.mark.keras
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_fit_with_weights_matches_keras(keras64, rng, case):
    """Same initial weights, data, order and SGD steps: the same final weights and the same history (every key,
    every epoch) as Keras' fit, to 1e-10; then evaluate, train_on_batch and test_on_batch with weights."""
    x, d = data(rng)
    ours, history, y = run(tinynet, case, x, d)
    initial = dense_model(tinynet, case(tinynet, d)["heads"]).get_weights()
    theirs, expected, _ = run(keras64, case, x, d, initial)
    assert set(history) == set(expected)
    for key in expected:
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-10, atol=1e-12, err_msg=key)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    w = d["weights"][::-1].copy()
    w[0] = 0.0
    got = ours.evaluate(x, y, batch_size=3, sample_weight=w, verbose=0, return_dict=True)
    want = theirs.evaluate(x, y, batch_size=3, sample_weight=w, verbose=0, return_dict=True)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(float(want[key]), rel=1e-10, abs=1e-12), key
    batch_y = [a[:4] for a in y] if isinstance(y, list) else y[:4]
    for call in ("train_on_batch", "test_on_batch"):
        got = getattr(ours, call)(x[:4], batch_y, sample_weight=w[:4], return_dict=True)
        want = getattr(theirs, call)(x[:4], batch_y, sample_weight=w[:4], return_dict=True)
        for key in want:
            assert got[key] == pytest.approx(float(want[key]), rel=1e-10, abs=1e-12), (call, key)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ semantics by hand
def test_accuracy_is_resolved_from_the_shapes_as_keras_3_does(rng):
    """'accuracy' with binary cross-entropy is binary accuracy for one sigmoid unit; for K > 1 units with labels
    of the outputs' shape Keras 3 picks categorical accuracy (from the shapes, not the loss), and so does tinynet
    (``multi_label_case`` above compares the values with Keras')."""
    x, d = data(rng)
    for units, y, expected in ((1, d["binary"], metrics.BinaryAccuracy),
                               (3, d["multi_label"], metrics.CategoricalAccuracy)):
        model = dense_model(tinynet, [("out", units, "sigmoid")])
        model.compile("sgd", loss="binary_crossentropy", metrics=["accuracy"])
        logs = model.evaluate(x, y, verbose=0, return_dict=True)
        assert type(model.metrics[0]) is expected and list(logs) == ["loss", "accuracy"]
    assert logs["accuracy"] == metrics.categorical_accuracy(y, model.predict(x)).mean()


def test_sample_weights_scale_each_example_as_keras_sum_over_batch_size(rng):
    """One step of batch 4 with weights w equals, by hand, the gradient of Σ w_n l_n / 4 (not / Σ w)."""
    tinynet.set_floatx("float64")
    x, d = data(rng, n=4)
    model = dense_model(tinynet, [("out", 2, None)])
    before = model.get_weights()
    model.compile(optimizers.SGD(learning_rate=0.1), loss="mse")
    logs = model.train_on_batch(x, d["regression"], sample_weight=d["weights"], return_dict=True)
    y = dense_model(tinynet, [("out", 2, None)]).predict(x)
    assert logs["loss"] == pytest.approx(mse_ref(d["regression"], y, d["weights"]), rel=1e-13)
    # the output layer's bias moves by −lr · Σ_n w_n · 2 (y_n − t_n) / (N K)
    step = 0.1 * (d["weights"][:, None] * 2 * (y - d["regression"])).sum(axis=0) / 8
    np.testing.assert_allclose(model.get_weights()[-1], before[-1] - step, rtol=1e-12, atol=1e-15)


def test_unit_weights_train_bit_for_bit_as_no_weights(rng):
    """Weights of 1 (or a class_weight of ones) change nothing, for the cross-entropies too."""
    x, d = data(rng, n=12)
    labels = rng.integers(0, 3, 12)
    runs = []
    for kwargs in ({}, {"sample_weight": np.ones(12)}, {"class_weight": {0: 1.0, 2: 1.0}}):
        model = dense_model(tinynet, [("out", 3, "softmax")])
        model.compile(optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        runs.append((model.fit(x, labels, batch_size=5, epochs=2, shuffle=False, verbose=0, **kwargs).history,
                     model.get_weights()))
    for history, weights in runs[1:]:
        assert history == runs[0][0]
        assert all(np.array_equal(a, b) for a, b in zip(weights, runs[0][1]))


def test_class_weight_is_the_sample_weight_of_each_class(rng):
    """class_weight {c: w_c} trains exactly as sample_weight = w_{label} (argmax for one-hot labels; classes left
    out weigh 1), and only the training part of a validation_split is weighted."""
    x, d = data(rng, n=12)
    labels = rng.integers(0, 3, 12)
    one_hot = np.eye(3)[labels]
    table = np.array([2.0, 1.0, 0.25])
    runs = []
    for loss, y, kwargs in (("sparse_categorical_crossentropy", labels, {"class_weight": {0: 2.0, 2: 0.25}}),
                            ("categorical_crossentropy", one_hot, {"class_weight": {0: 2.0, 2: 0.25}}),
                            ("sparse_categorical_crossentropy", labels, {"sample_weight": table[labels]})):
        model = dense_model(tinynet, [("out", 3, "softmax")])
        model.compile(optimizers.SGD(learning_rate=0.1), loss=loss, weighted_metrics=["accuracy"])
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, validation_split=0.25,
                            **kwargs).history
        runs.append((history, model.get_weights()))
    for history, weights in runs[1:]:
        np.testing.assert_allclose(history["loss"], runs[0][0]["loss"], rtol=1e-6)
        for a, b in zip(weights, runs[0][1]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the validation part (the last 3) is not weighted under class_weight, but is under sample_weight
    assert runs[0][0]["val_loss"] == pytest.approx(runs[1][0]["val_loss"], rel=1e-6)
    assert runs[0][0]["val_loss"] != runs[2][0]["val_loss"]


def test_weighted_metric_keys_follow_keras():
    """A weighted metric named like a plain one becomes 'weighted_<name>' (then '_1', ...), per output."""
    spec = [[("accuracy", None), ("mse", None)], [("mae", None)]]
    weighted = [[("accuracy", None), ("accuracy", None)], [("mse", None)]]
    keys, weighted_keys = engine._metric_keys(spec, ["a", "b"], weighted)
    assert keys == [["a_accuracy", "a_mse"], ["b_mae"]]
    assert weighted_keys == [["a_weighted_accuracy", "a_weighted_accuracy_1"], ["b_mse"]]


# ------------------------------------------------------------------------------------------ refused before training
N = 10
X = np.random.default_rng(0).normal(size=(N, 4))
Y = np.arange(N) % 2
W = np.linspace(0.1, 2.0, N)

WEIGHT_ERRORS = [
    (dict(sample_weight=W[:9]), r"sample_weight has shape \(9,\) but x has 10 examples; give one weight per "
                                r"example, shape \(10,\)"),
    (dict(sample_weight=np.ones((N, 3))), r"sample_weight has shape \(10, 3\) but x has 10 examples.*per-position "
                                          r"weights are not supported"),
    (dict(sample_weight=np.where(np.arange(N) == 4, np.nan, W)), r"sample_weight holds NaN or inf \(first: nan at "
                                                                 r"index 4\)"),
    (dict(sample_weight=np.where(np.arange(N) == 2, np.inf, W)), "sample_weight holds NaN or inf"),
    (dict(sample_weight=-W), r"sample_weight must be >= 0, got -0.1 at index 0"),
    (dict(sample_weight=np.array(["a"] * N)), "sample_weight must be numbers, got dtype <U1"),
    (dict(sample_weight=W, class_weight={0: 1.0}), "give sample_weight or class_weight, not both"),
    (dict(class_weight={2: 1.0}), r"class_weight has the key 2, which is not a class index of output 'out' "
                                  r"\(outputs of shape \(N, 1\)\): keys must be integers in \[0, 2\)"),
    (dict(class_weight={-1: 1.0}), "class_weight has the key -1"),
    (dict(class_weight={"0": 1.0}), "class_weight has the key '0'"),
    (dict(class_weight={0: -1.0}), r"class_weight\[0\] must be a finite number >= 0, got -1.0"),
    (dict(class_weight={1: float("nan")}), r"class_weight\[1\] must be a finite number >= 0"),
    (dict(class_weight=[1.0, 2.0]), r"class_weight must be a dict \{class index: weight\}, got list"),
]
FIT_ONLY = [
    (dict(validation_data=(X, Y, W[:3])), r"validation_data sample_weight has shape \(3,\) but validation_data x has "
                                          r"10 examples"),
    (dict(validation_data=(X, Y, -W)), "validation_data sample_weight must be >= 0"),
    (dict(validation_data=(X, Y, W, W)), r"validation_data must be a tuple \(x_val, y_val\) or \(x_val, y_val, "
                                         r"sample_weight_val\), got tuple of 4"),
]


def binary_model(**compile_kwargs):
    model = dense_model(tinynet, [("out", 1, "sigmoid")])
    model.compile(optimizers.SGD(learning_rate=0.1), **{"loss": "binary_crossentropy", **compile_kwargs})
    return model


def assert_untouched(model, before):
    assert model.optimizer.iterations == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("kwargs, message", WEIGHT_ERRORS + FIT_ONLY, ids=[m[:40] for _, m in WEIGHT_ERRORS + FIT_ONLY])
def test_fit_refuses_bad_weights_before_the_first_step(kwargs, message):
    model = binary_model(weighted_metrics=["accuracy"])
    before = model.get_weights()
    with pytest.raises(ValueError, match="^fit: " + message):
        model.fit(X, Y, batch_size=4, verbose=0, **kwargs)
    assert_untouched(model, before)


@pytest.mark.parametrize("call", ["train_on_batch", "evaluate", "test_on_batch"])
@pytest.mark.parametrize("kwargs, message", WEIGHT_ERRORS[:6], ids=[m[:40] for _, m in WEIGHT_ERRORS[:6]])
def test_the_batch_calls_and_evaluate_refuse_bad_weights(call, kwargs, message):
    model = binary_model()
    before = model.get_weights()
    extra = {"verbose": 0} if call == "evaluate" else {}
    with pytest.raises(ValueError, match=f"^{call}: " + message):
        getattr(model, call)(X, Y, **kwargs, **extra)
    assert_untouched(model, before)
    if call == "train_on_batch":
        with pytest.raises(ValueError, match="^train_on_batch: class_weight has the key 3"):
            model.train_on_batch(X, Y, class_weight={3: 1.0})
        assert_untouched(model, before)


def test_more_refusals_name_the_output_and_the_loss():
    two = dense_model(tinynet, [("bin", 1, "sigmoid"), ("reg", 2, None)])
    two.compile("sgd", loss=["binary_crossentropy", "mse"])
    y = [Y, np.zeros((N, 2))]
    with pytest.raises(ValueError, match=r"^fit: class_weight is only supported for a model with a single output "
                                         r"\(as in Keras\); this one has 2 \['bin', 'reg'\]"):
        two.fit(X, y, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"^fit: sample_weight for output 'reg' has shape \(3,\) but x has 10"):
        two.fit(X, y, sample_weight={"reg": W[:3]}, verbose=0)
    with pytest.raises(ValueError, match=r"^fit: sample_weight has keys \['other'\] that are not output names"):
        two.fit(X, y, sample_weight={"other": W}, verbose=0)
    assert two.optimizer.iterations == 0
    two.fit(X, y, sample_weight=[None, W], verbose=0, batch_size=5)  # one output weighted, the other not
    assert two.optimizer.iterations == 2

    wrapped = dense_model(tinynet, [("out", 3, "softmax")])
    wrapped.compile("sgd", loss=losses.softmax_cross_entropy)
    with pytest.raises(ValueError, match=r"^fit: sample_weight: loss 'softmax_cross_entropy' \(LossFunctionWrapper\) "
                                         r"takes no sample_weight"):
        wrapped.fit(X, Y, sample_weight=W, verbose=0)

    model = binary_model()
    with pytest.raises(ValueError, match=r"^fit: y for output 'out': loss 'binary_crossentropy': takes targets in "
                                         r"\[0, 1\]"):
        model.fit(X, Y * 2, verbose=0)
    with pytest.raises(ValueError, match=r"^fit: y for output 'out': loss 'binary_crossentropy': takes targets of the "
                                         r"outputs' shape \(10, 1\) \(or \(10,\)\), got shape \(10, 2\)"):
        model.fit(X, np.zeros((N, 2)), verbose=0)
    mse = dense_model(tinynet, [("out", 3, None)])
    mse.compile("sgd", loss="mse")
    with pytest.raises(ValueError, match=r"loss 'mean_squared_error': takes targets of the outputs' shape \(10, 3\), "
                                         r"got shape \(10,\); these look like class indices"):
        mse.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match="^compile: weighted_metrics must be a list or a dict"):
        mse.compile("sgd", loss="mse", weighted_metrics="mse")
    with pytest.raises(ValueError, match="unknown metric 'msee'"):
        mse.compile("sgd", loss="mse", weighted_metrics=["msee"])


def test_weights_are_refused_in_data_parallel_training(monkeypatch):
    """Weights are for one process: under data parallelism every call that takes them refuses them, naming it,
    before anything runs (the MPI job itself is not needed to reach the check)."""
    model = binary_model()
    before = model.get_weights()
    monkeypatch.setattr(engine.KerasState, "distributed", property(lambda self: True))
    for call, kwargs in (("fit", {"sample_weight": W}), ("fit", {"class_weight": {0: 2.0}}),
                         ("fit", {"validation_data": (X, Y, W)}), ("evaluate", {"sample_weight": W}),
                         ("train_on_batch", {"sample_weight": W}), ("test_on_batch", {"sample_weight": W})):
        with pytest.raises(ValueError, match=f"^{call}: .*not supported in data-parallel"):
            getattr(model, call)(X, Y, **kwargs)
    with pytest.raises(RuntimeError, match="sample weights are not supported in data-parallel training"):
        model.training_state.run_epoch([X], [Y], 0, 4, sample_weights=[W])
    assert_untouched(model, before)
