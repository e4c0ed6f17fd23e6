"""Guards of the Keras-style training API: a step that would make the weights non-finite is refused as that step,
writers refuse what their readers refuse, bad inputs and labels fail before training with the argument named,
unsupported kinds of ``x`` are explained, lists are read alike everywhere, a loss class is refused at compile, and
categorical cross-entropy takes half the clip's derivative on its bounds (as Keras on JAX)."""
import os

import numpy as np
import pytest

import tinynet
from tinynet import callbacks as C
from tinynet import checkpoint, losses, optimizers
from tinynet.engine import TrainingDiverged


def _linear(dtype="float32", seed=0):
    tinynet.set_seed(seed)
    with tinynet.floatx_scope(dtype):
        return tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(2)])


def _classifier(seed=0):
    tinynet.set_seed(seed)
    return tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(8, activation="relu"),
                               tinynet.Dense(3, activation="softmax")])


def _data(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, size=n)


def _huge_batch(seed=0):
    """A float32 regression batch whose first SGD step at lr 1e30 overflows the kernel (finite loss and
    gradients)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(20, 4)) * 1e6).astype("float32")
    y = (rng.normal(size=(20, 2)) * 1e4).astype("float32")
    return x, y


class _Began(C.Callback):
    def __init__(self):
        super().__init__()
        self.began = False

    def on_train_begin(self, logs=None):
        self.began = True


# ------------------------------------------------------------------------------------------ 1. refused steps
def test_train_on_batch_refuses_a_step_that_overflows_the_weights():
    x, y = _huge_batch()
    m = _linear()
    m.compile(optimizers.SGD(learning_rate=1e30), "mse")
    before = m.get_weights()
    with pytest.raises(TrainingDiverged) as info:
        m.train_on_batch(x, y)
    assert info.value.epoch == 1 and info.value.step == 1
    assert "dense" in info.value.detail and "kernel" in info.value.detail
    assert m.optimizer.iterations == 0
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_reports_the_step_that_would_overflow_and_keeps_the_weights():
    x, y = _huge_batch()
    m = _linear()
    m.compile(optimizers.SGD(learning_rate=1e30), "mse")
    before = m.get_weights()
    with pytest.raises(TrainingDiverged) as info:
        m.fit(x, y, verbose=0, batch_size=10, shuffle=False)
    assert (info.value.epoch, info.value.step) == (1, 1)
    assert "would make the weight" in str(info.value)
    assert m.optimizer.iterations == 0 and m.training_state.epoch == 0 and m.training_state.history == {}
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batch_size", [10, 20])
def test_terminate_on_nan_stops_before_the_overflowing_step(batch_size):
    x, y = _huge_batch()
    m = _linear()
    m.compile(optimizers.SGD(learning_rate=1e30), "mse")
    before = m.get_weights()
    history = m.fit(x, y, verbose=0, batch_size=batch_size, shuffle=False, callbacks=[C.TerminateOnNaN()])
    assert history.history == {}
    assert m.optimizer.iterations == 0
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_state_and_count_are_put_back(fast, nesterov):
    x, y = _huge_batch()
    with tinynet.backend.fast_paths(fast):
        m = _linear("float64")
        m.compile(optimizers.SGD(learning_rate=1e-20, momentum=0.9, nesterov=nesterov), "mse")
        m.train_on_batch(x.astype("float64"), y.astype("float64"))
        opt = m.optimizer
        weights = m.get_weights()
        velocity = {k: v.copy() for k, v in opt.slots["velocity"].items()}
        opt.learning_rate = 1e308
        with pytest.raises(TrainingDiverged) as info:
            m.train_on_batch(x.astype("float64") * 1e10, y.astype("float64"))
        assert info.value.step == 2
        assert opt.iterations == 1 and opt.learning_rate == 1e308
        for a, b in zip(weights, m.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert set(opt.slots["velocity"]) == set(velocity)
        for key, value in velocity.items():
            np.testing.assert_array_equal(opt.slots["velocity"][key], value)


def _model_with_grads(dtype, grad_value, seed=0):
    m = _linear(dtype, seed)
    for layer in m.layers:
        layer.grads = [np.full_like(w, grad_value) for w in layer.weights]
    return m


@pytest.mark.parametrize("kernels", ["numpy", "numba"])  # the largest magnitudes: NumPy's max/min or one kernel
@pytest.mark.parametrize("fast", [True, False])
def test_adam_refuses_a_square_that_overflows_and_removes_the_state_it_created(fast, kernels):
    if kernels == "numba" and not tinynet.backend.numba_available():
        pytest.skip("Numba is not installed")
    with tinynet.backend.fast_paths(fast), tinynet.backend.cpu_kernels(kernels):
        m = _model_with_grads("float32", 1e20)  # g² = 1e40 is inf in float32
        opt = optimizers.Adam(learning_rate=1e-3).attach(m)
        before = m.get_weights()
        with pytest.raises(optimizers.NonFiniteUpdateError) as info:
            opt.step()
        assert "state 'v'" in str(info.value)
        assert opt.iterations == 0 and opt.slots == {"m": {}, "v": {}}
        for a, b in zip(before, m.get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fast", [True, False])
def test_adam_puts_back_existing_state(fast):
    with tinynet.backend.fast_paths(fast):
        m = _model_with_grads("float32", 0.5)
        opt = optimizers.Adam(learning_rate=1e-3).attach(m)
        opt.step()
        state = {slot: {k: v.copy() for k, v in table.items()} for slot, table in opt.slots.items()}
        before = m.get_weights()
        for layer in m.layers:
            layer.grads = [np.full_like(w, 1e20) for w in layer.weights]
        with pytest.raises(optimizers.NonFiniteUpdateError):
            opt.step()
        assert opt.iterations == 1
        for a, b in zip(before, m.get_weights()):
            np.testing.assert_array_equal(a, b)
        for slot, table in state.items():
            for key, value in table.items():
                np.testing.assert_array_equal(opt.slots[slot][key], value)


def test_a_non_finite_gradient_is_refused_before_anything_changes():
    m = _model_with_grads("float64", 1.0)
    m.layers[-1].grads[1][0] = np.nan
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9).attach(m)
    before = m.get_weights()
    with pytest.raises(optimizers.NonFiniteGradientError) as info:
        opt.step()
    assert info.value.weight == "bias"
    assert opt.iterations == 0 and opt.slots == {"velocity": {}}
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_ordinary_steps_take_no_copies(monkeypatch):
    """The bounds prove an ordinary step finite: the checked (copying) path never runs."""
    def refuse(*args):
        raise AssertionError("the checked path ran")

    x, y = _data()
    for opt in (optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4), optimizers.Adam(1e-3)):
        m = _classifier()
        m.compile(opt, "sparse_categorical_crossentropy")
        monkeypatch.setattr(type(opt), "_checked_step", refuse)
        m.fit(x, y, epochs=3, batch_size=5, verbose=0)
        assert opt.iterations == 12


@pytest.mark.parametrize("make", [lambda: optimizers.SGD(0.5, momentum=0.9), lambda: optimizers.Adam(0.01),
                                  lambda: optimizers.SGD(0.5)])
def test_a_finite_step_the_bounds_cannot_prove_is_applied_exactly(make):
    """Weights near the float64 maximum: the step is checked (copies) and, finite, applied as the plain update."""
    m1, m2 = _model_with_grads("float64", 0.25), _model_with_grads("float64", 0.25)
    for m in (m1, m2):
        m.layers[-1].weights[0][0, 0] = 1.5e308
    o1, o2 = make().attach(m1), make().attach(m2)
    o1.step()
    o2._update_bounds = lambda *a: [0.0]  # force the unchecked path for the reference
    o2.step()
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert o1.iterations == o2.iterations == 1


def test_a_loaded_state_enters_the_bounds():
    """A velocity near the float32 maximum (loaded) overflows though the weights and the step are small."""
    m = _model_with_grads("float32", -1.0)
    opt = optimizers.SGD(learning_rate=1.0, momentum=0.9).attach(m)
    opt.step()
    state = opt.state_dict()
    state["arrays"] = {k: np.full_like(v, 3e38) for k, v in state["arrays"].items()}
    opt.load_state_dict(state)
    opt.learning_rate = 1e38  # 0.9 * 3e38 + 1e38 is inf in float32
    weights = m.get_weights()
    velocity = {k: v.copy() for k, v in opt.slots["velocity"].items()}
    with pytest.raises(optimizers.NonFiniteUpdateError, match="infinite or NaN"):
        opt.step()
    assert opt.iterations == 1
    for a, b in zip(weights, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key, value in velocity.items():
        np.testing.assert_array_equal(opt.slots["velocity"][key], value)


# ------------------------------------------------------------------------------------------ 2. writers
def test_save_weights_refuses_what_load_weights_refuses(tmp_path):
    m = _linear()
    m.layers[-1].weights[0][1, 1] = np.inf
    path = tmp_path / "w.weights.npz"
    with pytest.raises(ValueError) as info:
        m.save_weights(str(path))
    text = str(info.value)
    assert "save_weights" in text and "dense" in text and "'kernel'" in text
    assert not path.exists() and os.listdir(tmp_path) == []


def test_checkpoint_save_refuses_non_finite_weights_and_state(tmp_path):
    x, y = _data()
    m = _classifier()
    m.compile(optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    m.fit(x, y, verbose=0, batch_size=10)
    m.layers[-1].weights[1][0] = np.nan
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.save(tmp_path / "ck", m)
    assert "'bias'" in str(info.value) and m.layers[-1].name in str(info.value)
    assert not (tmp_path / "ck").exists()
    m.layers[-1].weights[1][0] = 0.0
    table = m.optimizer.slots["velocity"]
    table[next(iter(table))][...] = np.inf
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.save(tmp_path / "ck", m)
    assert "velocity" in str(info.value)
    assert not (tmp_path / "ck").exists()


# ------------------------------------------------------------------------------------------ 3. input values
def test_fit_refuses_nan_in_validation_x_before_training():
    x, y = _data()
    xv = x.copy()
    xv[2, 3] = np.nan
    m = _classifier()
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    before, began = m.get_weights(), _Began()
    with pytest.raises(ValueError) as info:
        m.fit(x, y, epochs=2, verbose=0, validation_data=(xv, y), callbacks=[began])
    text = str(info.value)
    assert text.startswith("fit: validation_data x for input") and "(2, 3)" in text and "nan" in text
    assert not began.began and m.optimizer.iterations == 0
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_refuses_inf_in_x_and_in_the_validation_split_part():
    x, y = _data()
    m = _classifier()
    m.compile("sgd", "sparse_categorical_crossentropy")
    bad = x.copy()
    bad[4, 0] = np.inf
    with pytest.raises(ValueError, match=r"^fit: x for input .* \(first: inf at index \(4, 0\)\)"):
        m.fit(bad, y, verbose=0)
    bad = x.copy()
    bad[18, 1] = -np.inf
    with pytest.raises(ValueError, match=r"held out by validation_split.*index \(18, 1\)"):
        m.fit(bad, y, verbose=0, validation_split=0.2)
    assert m.optimizer.iterations == 0


def test_fit_refuses_x_beyond_the_input_dtype():
    x, y = _data()
    x = x.astype("float64")
    x[3, 2] = 1e39  # finite as float64, inf as the float32 input
    m = _classifier()
    m.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"^fit: x .*beyond the range of float32.*index \(3, 2\)"):
        m.fit(x, y, verbose=0)


def test_evaluate_refuses_nan_x_and_predict_passes_it_through():
    x, y = _data()
    x[1, 1] = np.nan
    m = _classifier()
    m.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"^evaluate: x for input .*index \(1, 1\)"):
        m.evaluate(x, y, verbose=0)
    out = m.predict(x)
    assert np.isnan(out[1]).all() and np.isfinite(np.delete(out, 1, axis=0)).all()


# ------------------------------------------------------------------------------------------ 4. kinds of x
def test_tuple_generator_and_dataset_as_x_are_explained():
    from tinynet.data import Dataset

    x, y = _data()
    m = _classifier()
    m.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"^fit: x .*tuple of 2 items.*x=\.\.\., y=\.\.\."):
        m.fit((x, y), verbose=0)
    with pytest.raises(ValueError, match=r"^fit: x must be an array.*generator"):
        m.fit(((x, y) for _ in range(2)), verbose=0)
    images = np.random.default_rng(0).random((6, 2, 2, 1)).astype("float32")
    ds = Dataset(images, np.arange(6) % 3)
    mi = tinynet.Sequential([tinynet.Input((2, 2, 1)), tinynet.Flatten(), tinynet.Dense(3, activation="softmax")])
    mi.compile("sgd", "sparse_categorical_crossentropy")
    for call, who in ((lambda: mi.fit(ds, verbose=0), "fit"), (lambda: mi.evaluate(ds, verbose=0), "evaluate"),
                      (lambda: mi.predict(ds), "Model"), (lambda: mi.predict_on_batch(ds), "Model")):
        with pytest.raises(ValueError, match=r"x=ds\.x, y=ds\.y") as info:
            call()
        assert str(info.value).startswith(who)
    assert mi.fit(ds.x, ds.y, verbose=0).history["loss"]


# ------------------------------------------------------------------------------------------ 5. labels' range
def test_targets_beyond_the_output_dtype_are_refused_up_front():
    x, _ = _data()
    tinynet.set_seed(0)
    m = tinynet.Sequential([tinynet.Input((4,)), tinynet.Dense(2)])
    m.compile("sgd", "mse")
    t = np.random.default_rng(1).normal(size=(20, 2))
    t[3, 1] = 1e39
    began = _Began()
    with pytest.raises(ValueError) as info:
        m.fit(x, t, verbose=0, callbacks=[began])
    assert str(info.value) == (f"fit: y for output '{m.outputs[0].name}': loss 'mean_squared_error': targets hold "
                               f"values beyond the range of float32 (largest 3.40282e+38), the outputs' dtype, "
                               f"which become inf once cast to it (first: 1e+39 at index (3, 1))")
    assert not began.began
    with pytest.raises(ValueError, match=r"^fit: validation_data y .*beyond the range of float32"):
        m.fit(x, np.zeros((20, 2)), verbose=0, validation_data=(x, t))
    with pytest.raises(ValueError, match=r"^evaluate: y .*beyond the range"):
        m.evaluate(x, t, verbose=0)


def test_cast_problem_leaves_in_range_and_integer_labels_alone():
    assert losses.cast_problem(np.array([1e38, -3e38]), np.float32) is None
    assert losses.cast_problem(np.array([1e39]), np.float64) is None
    assert losses.cast_problem(np.array([2 ** 62]), np.float32) is None
    assert "index (1,)" in losses.cast_problem(np.array([0.0, -1e39]), np.float32)


# ------------------------------------------------------------------------------------------ 6. lists
def test_a_nested_list_is_read_alike_by_predict_call_and_fit():
    x, y = _data()
    m = _classifier()
    m.compile("sgd", "sparse_categorical_crossentropy")
    expected = m.predict(x)
    np.testing.assert_array_equal(m.predict(x.tolist()), expected)
    np.testing.assert_array_equal(m.predict_on_batch(x.tolist()), expected)
    np.testing.assert_array_equal(m(x.tolist()), expected)
    np.testing.assert_array_equal(m.predict([x]), expected)
    np.testing.assert_array_equal(m.predict(x[0].tolist() and [x[0].tolist()]), expected[:1])
    assert m.evaluate(x.tolist(), y, verbose=0) == m.evaluate(x, y, verbose=0)


def test_multi_input_lists_keep_one_array_per_input():
    tinynet.set_seed(0)
    a, b = tinynet.Input((3,), name="a"), tinynet.Input((2,), name="b")
    out = tinynet.Dense(2)(tinynet.Concatenate()([a, b]))
    m = tinynet.Model([a, b], out)
    xa, xb = np.ones((4, 3), "float32"), np.ones((4, 2), "float32")
    np.testing.assert_array_equal(m.predict([xa, xb]), m.predict({"a": xa, "b": xb}))
    np.testing.assert_array_equal(m([xa.tolist(), xb.tolist()]), m.predict([xa, xb]))
    with pytest.raises(ValueError, match="expected 2 input arrays, got 3"):
        m.predict([xa, xb, xb])


# ------------------------------------------------------------------------------------------ 7. loss arguments
def test_compile_refuses_a_loss_class():
    m = _classifier()
    with pytest.raises(ValueError, match=r"^compile: loss is the class MeanSquaredError.*MeanSquaredError\(\)"):
        m.compile("sgd", losses.MeanSquaredError)
    with pytest.raises(ValueError, match=r"^compile: .*class"):
        m.compile("sgd", {m.outputs[0].name: losses.CategoricalCrossentropy})


def test_a_keras_ordered_loss_function_fails_before_any_callback():
    x, y = _data()

    def kloss(y_true, y_pred):
        return ((y_true - y_pred) ** 2).mean()

    m = _classifier()
    m.compile("sgd", kloss)
    began = _Began()
    with pytest.raises(TypeError, match=r"^fit: loss for output .*kloss.*must return \(loss, gradient\)"):
        m.fit(x, np.eye(3)[y], verbose=0, callbacks=[began])
    assert not began.began and m.optimizer.iterations == 0

    def wrong_grad(y_pred, labels):
        return 1.0, np.zeros(3)

    m = _classifier()
    m.compile("sgd", wrong_grad)
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\) for a prediction of shape \(1, 3\)"):
        m.fit(x, np.eye(3)[y], verbose=0, callbacks=[began])
    m = _classifier()
    m.compile("sgd", losses.categorical_crossentropy)  # tinynet's convention trains
    assert len(m.fit(x, y, verbose=0).history["loss"]) == 1


# ------------------------------------------------------------------------------------------ 8. CCE bounds
def _cce_reference(p, t, eps=1e-7):
    s = p.sum(axis=-1, keepdims=True)
    q = p / s
    c = np.where((q > eps) & (q < 1 - eps), 1.0, np.where((q == eps) | (q == 1 - eps), 0.5, 0.0))
    d = -c * t / np.clip(q, eps, 1 - eps)
    return (d - (d * q).sum(axis=-1, keepdims=True)) / s / (p.size // p.shape[-1])


def test_categorical_crossentropy_takes_half_the_clip_derivative_on_its_bounds():
    eps = 1e-7
    p = np.array([[eps, 0.5, 0.5 - eps], [1 - eps, eps, 0.0], [0.2, 0.3, 0.5]])
    assert (p.sum(axis=-1) == 1).all()  # the normalised values are the bounds exactly
    t = np.array([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    _, g = losses.categorical_crossentropy(p, t)
    np.testing.assert_allclose(g, _cce_reference(p, t), rtol=1e-15, atol=0)
    assert g[0, 0] == pytest.approx((-0.5 / eps + 0.5) / 3, rel=1e-12)  # half of -1/eps, then the renormalisation
    _, gb = losses.BinaryCrossentropy().value_and_grad(np.array([[1.0]]), np.array([[eps]]))
    assert gb[0, 0] == pytest.approx(-0.5 / eps, rel=1e-12)


def test_categorical_crossentropy_bounds_match_keras_on_jax():
    keras = pytest.importorskip("keras")
    jax = pytest.importorskip("jax")
    if keras.backend.backend() != "jax":
        pytest.skip("needs KERAS_BACKEND=jax")
    from inception.keras_reference import float64_mode

    eps = 1e-7
    p = np.array([[eps, 0.5, 0.5 - eps], [1 - eps, eps, 0.0], [0.2, 0.3, 0.5]])
    t = np.array([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    with float64_mode():
        loss = keras.losses.CategoricalCrossentropy()
        kg = np.asarray(jax.grad(lambda q: loss(jax.numpy.asarray(t), q))(jax.numpy.asarray(p)))
        value = float(loss(t, p))
    tv, g = losses.categorical_crossentropy(p, t)
    assert kg.dtype == np.float64
    np.testing.assert_allclose(g, kg, rtol=1e-12, atol=1e-12)
    assert tv == pytest.approx(value, rel=1e-12)
