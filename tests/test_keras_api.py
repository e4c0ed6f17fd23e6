"""Keras' API on tinynet: the guide's MNIST convnet with only its imports changed, fit's History keys as Keras 3
names them, multi-output compile/fit with loss weights, the one loop shared with the Trainer, argument errors."""
import re

import numpy as np
import pytest

import tinynet
from tinynet import layers, losses, metrics, models, optim, optimizers
from tinynet.callbacks import Callback
from tinynet.training import Trainer, TrainingDiverged

from helpers import tiny_model, toy_data
from helpers import toy_vectors


@pytest.fixture(autouse=True)
def _numpy_kernels():
    """NumPy kernels: no Numba compilation inside these short tests (conftest restores the default)."""
    tinynet.set_cpu_kernels("numpy")


def two_output_model(seed=0, units=6):
    """x (8,) -> Dense 'h' -> two softmax heads 'aux' and 'main' (3 classes), as built in Keras below."""
    tinynet.layers.reset_names()
    tinynet.set_seed(seed)
    x = layers.Input((8,), name="x")
    h = layers.Dense(units, activation="relu", name="h")(x)
    return models.Model(x, [layers.Dense(3, activation="softmax", name="aux")(h),
                            layers.Dense(3, activation="softmax", name="main")(h)])


def same_weights(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


# ------------------------------------------------------------------------------------------ (a) the Keras guide
def test_keras_guide_mnist_convnet_runs_with_only_the_imports_changed(capsys):
    """keras.io/examples/vision/mnist_convnet, with `import tinynet as keras` and the built-in digits at 28×28
    (narrower convolutions and fewer epochs so it runs in seconds)."""
    import tinynet as keras
    from tinynet import data, layers

    num_classes = 10
    input_shape = (28, 28, 1)
    train, test = data.load_digits(image_size=28)  # instead of keras.datasets.mnist.load_data()
    (x_train, y_train), (x_test, y_test) = (train.x, train.y), (test.x, test.y)
    y_train = keras.utils.to_categorical(y_train, num_classes)
    y_test = keras.utils.to_categorical(y_test, num_classes)

    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.summary()
    batch_size = 128
    epochs = 8
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1)
    score = model.evaluate(x_test, y_test, verbose=0)
    print("Test loss:", score[0])
    print("Test accuracy:", score[1])

    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == list(range(epochs)) and history.params == {"verbose": 1, "epochs": 8, "steps": 11}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.75
    assert score[1] > 0.8 and score[0] < 1.0
    out, err = capsys.readouterr()
    assert "Epoch 8/8" in out and "val_accuracy" in err  # verbose='auto': one tqdm bar per epoch, as Keras
    assert "Test accuracy" in out


# ------------------------------------------------------------------------------------------ (b) History keys
KERAS_CASES = {
    "list losses, weights, per-output metrics, a callback": dict(
        loss=["sparse_categorical_crossentropy"] * 2, loss_weights=[0.3, 1.0],
        metrics=[["accuracy"], ["accuracy", "sparse_top_k_categorical_accuracy"]],
        fit=dict(validation_split=0.25), reduce_lr=True),
    "dicts by output name, a repeated metric": dict(
        loss={"main": "sparse_categorical_crossentropy", "aux": "sparse_categorical_crossentropy"},
        loss_weights={"aux": 0.3, "main": 1.0}, metrics={"main": ["accuracy", "accuracy"]},
        fit=dict(validation_data=True)),
    "one output without a loss": dict(
        loss=[None, "sparse_categorical_crossentropy"], metrics=[None, ["accuracy"]], fit=dict(validation_split=0.25)),
    "one loss for every output, no validation": dict(loss="sparse_categorical_crossentropy", metrics=None, fit={}),
}


def _history_keys(lib, case, x, y, model):
    spec = KERAS_CASES[case]
    model.compile(optimizer="sgd", loss=spec["loss"], loss_weights=spec.get("loss_weights"),
                  metrics=spec.get("metrics"))
    kwargs = dict(spec["fit"])
    if kwargs.get("validation_data"):
        kwargs["validation_data"] = (x, [y, y])
    callbacks = [lib.callbacks.ReduceLROnPlateau(monitor="loss")] if spec.get("reduce_lr") else []
    history = model.fit(x, [y, y], batch_size=8, epochs=1, verbose=0, callbacks=callbacks, **kwargs)
    return set(history.history)


@pytest.mark.keras
def test_history_keys_are_keras_3s():
    keras = pytest.importorskip("keras")
    x, y = toy_vectors()
    for case in KERAS_CASES:
        inp = keras.Input((8,), name="x")
        h = keras.layers.Dense(6, activation="relu", name="h")(inp)
        kmodel = keras.Model(inp, [keras.layers.Dense(3, activation="softmax", name="aux")(h),
                                   keras.layers.Dense(3, activation="softmax", name="main")(h)])
        expected = _history_keys(keras, case, x, y, kmodel)
        got = _history_keys(tinynet, case, x, y, two_output_model())
        assert got == expected, case


def test_history_keys_without_keras():
    """The same cases, written out (what Keras 3.15 gives)."""
    x, y = toy_vectors()
    expected = {
        "list losses, weights, per-output metrics, a callback": {
            "loss", "aux_loss", "main_loss", "aux_accuracy", "main_accuracy", "main_sparse_top_k_categorical_accuracy",
            "val_loss", "val_aux_loss", "val_main_loss", "val_aux_accuracy", "val_main_accuracy",
            "val_main_sparse_top_k_categorical_accuracy", "learning_rate"},
        "dicts by output name, a repeated metric": {
            "loss", "aux_loss", "main_loss", "main_accuracy", "main_accuracy_1", "val_loss", "val_aux_loss",
            "val_main_loss", "val_main_accuracy", "val_main_accuracy_1"},
        "one output without a loss": {"loss", "main_accuracy", "val_loss", "val_main_accuracy"},
        "one loss for every output, no validation": {"loss", "aux_loss", "main_loss"},
    }
    for case, keys in expected.items():
        assert _history_keys(tinynet, case, x, y, two_output_model()) == keys, case


# ------------------------------------------------------------------------------------------ (c) two outputs
def test_two_outputs_with_loss_weights():
    x, y = toy_vectors(n=48)
    model = two_output_model()
    model.compile(optimizers.Adam(learning_rate=0.05), loss="sparse_categorical_crossentropy",
                  loss_weights=[0.3, 1.0], metrics={"main": ["accuracy"]})
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)  # one label array serves both outputs
    h = history.history
    assert set(h) == {"loss", "aux_loss", "main_loss", "main_accuracy"}
    for total, aux, main in zip(h["loss"], h["aux_loss"], h["main_loss"]):
        assert total == pytest.approx(0.3 * aux + main, rel=1e-6)  # the total is the weighted sum, per batch
    assert h["loss"][-1] < h["loss"][0] and h["main_accuracy"][-1] > 0.8
    result = model.evaluate(x, {"aux": y, "main": y}, return_dict=True, verbose=0)
    assert list(result) == ["loss", "aux_loss", "main_loss", "main_accuracy"]
    assert result["loss"] == pytest.approx(0.3 * result["aux_loss"] + result["main_loss"], rel=1e-6)
    assert model.evaluate(x, [y, y], verbose=0) == pytest.approx(list(result.values()))
    aux, main = model.predict(x)
    assert aux.shape == main.shape == (48, 3)
    assert result["main_accuracy"] == metrics.sparse_categorical_accuracy(y, main).mean()


def test_a_zero_loss_weight_leaves_that_head_alone():
    x, y = toy_vectors()
    model = two_output_model()
    before = model.get_layer("aux").get_weights()
    model.compile("adam", loss=["sparse_categorical_crossentropy", "sparse_categorical_crossentropy"],
                  loss_weights={"aux": 0.0})
    model.fit(x, [y, y], epochs=2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_layer("aux").get_weights()))
    assert not np.array_equal(model.get_layer("h").get_weights()[0], two_output_model().get_layer("h").weights[0])


def test_googlenet_style_weights_on_three_outputs():
    tinynet.layers.reset_names()
    x = layers.Input((8,))
    h = layers.Dense(6, activation="relu")(x)
    outs = [layers.Dense(3, activation="softmax", name=n)(h) for n in ("aux1_output", "aux2_output", "output")]
    model = tinynet.Model(x, outs)
    model.compile(optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  loss_weights=[0.3, 0.3, 1.0], metrics={"output": ["accuracy"]})
    xs, ys = toy_vectors()
    h = model.fit(xs, ys, epochs=2, batch_size=8, verbose=0).history
    assert set(h) == {"loss", "aux1_output_loss", "aux2_output_loss", "output_loss", "output_accuracy"}
    assert h["loss"][0] == pytest.approx(0.3 * h["aux1_output_loss"][0] + 0.3 * h["aux2_output_loss"][0]
                                         + h["output_loss"][0], rel=1e-6)


def test_one_hot_and_class_indices_train_identically():
    x, y = toy_vectors()
    runs = []
    for loss, labels, metric in (("sparse_categorical_crossentropy", y, "sparse_categorical_accuracy"),
                                 ("categorical_crossentropy", tinynet.utils.to_categorical(y, 3),
                                  "categorical_accuracy")):
        model = two_output_model()
        model.compile("sgd", loss=loss, metrics=[["accuracy"], [metric]])
        tinynet.set_seed(5)
        model.training_state.rng = np.random.default_rng(1)
        runs.append((model, model.fit(x, labels, epochs=2, batch_size=8, verbose=0).history))
    (a, ha), (b, hb) = runs
    assert same_weights(a, b)
    assert ha["loss"] == hb["loss"] and ha["aux_accuracy"] == hb["aux_accuracy"]
    assert ha["main_sparse_categorical_accuracy"] == hb["main_categorical_accuracy"]
    assert isinstance(a.metrics[0], metrics.SparseCategoricalAccuracy)  # 'accuracy' resolved from the labels
    assert isinstance(b.metrics[0], metrics.CategoricalAccuracy)


def test_logits_and_custom_objects():
    tinynet.layers.reset_names()
    x = layers.Input((8,))
    model = tinynet.Model(x, layers.Dense(3)(x))
    model.compile(optimizers.SGD(learning_rate=0.1), loss=losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"), "sparse_categorical_accuracy"])
    xs, ys = toy_vectors()
    h = model.fit(xs, ys, epochs=3, verbose=0).history
    assert set(h) == {"loss", "top2", "sparse_categorical_accuracy"}
    assert h["loss"][-1] < h["loss"][0] and h["top2"][-1] >= h["sparse_categorical_accuracy"][-1]
    assert model.evaluate(xs, ys, verbose=0, return_dict=True)["top2"] > 0.9


# ------------------------------------------------------------------------------------------ one loop
def test_model_fit_and_the_trainer_run_the_same_loop():
    """Same model, data, order, optimizer and loss weights: Model.fit and Trainer.fit end on the same bits."""
    ds = toy_data(n=36)
    trainer = Trainer(tiny_model(), optimizers.SGD(0.05, momentum=0.9), batch_size=12, aux_weight=0.3, seed=4,
                      verbose=False)
    trainer.fit(ds, epochs=2)
    model = tiny_model()
    model.compile(optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  loss_weights=[0.3, 1.0], metrics=[None, ["accuracy"]])
    model.training_state.rng = np.random.default_rng(4)
    history = model.fit(ds.x, ds.y, batch_size=12, epochs=2, verbose=0)
    assert same_weights(trainer.model, model)
    assert history.history["loss"] == trainer.history["loss"]
    assert history.history["output_accuracy"] == trainer.history["acc"]
    assert history.history["aux1_output_loss"] == trainer.history["loss_aux1"]


def test_fit_stops_on_divergence_before_the_step():
    x, y = toy_vectors()
    model = two_output_model()
    model.compile(optimizers.SGD(learning_rate=1e30), loss="sparse_categorical_crossentropy")
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1, step \d+: non-finite .*layer '"):
        model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_initial_epoch_continues_the_count():
    x, y = toy_vectors()
    model = two_output_model()
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    seen = []

    class Epochs(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    history = model.fit(x, y, epochs=5, initial_epoch=3, verbose=0, callbacks=[Epochs()])
    assert seen == [3, 4] and history.epoch == [3, 4] and model.training_state.epoch == 5
    assert len(model.fit(x, y, epochs=2, initial_epoch=2, verbose=0).epoch) == 0


def test_verbose_two_prints_one_line_per_epoch(capsys):
    x, y = toy_vectors()
    model = two_output_model()
    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=[None, ["accuracy"]])
    model.fit(x, y, epochs=2, verbose=2, validation_split=0.2)
    out, err = capsys.readouterr()
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and err == ""  # no bar
    assert re.search(r"loss: \d\.\d{4} - aux_loss: .* - val_main_accuracy: \d\.\d{4}", out)
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_paper_schedule_as_exponential_decay():
    x, y = toy_vectors(n=32)
    steps_per_epoch = 4  # 32 examples, batch 8
    schedule = optimizers.schedules.ExponentialDecay(0.1, decay_steps=8 * steps_per_epoch, decay_rate=0.96,
                                                     staircase=True)
    model = two_output_model()
    model.compile(optimizers.SGD(learning_rate=schedule, momentum=0.9), loss="sparse_categorical_crossentropy")
    rates = []

    class Rates(Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(self.model.optimizer.learning_rate)

    model.fit(x, y, batch_size=8, epochs=17, verbose=0, callbacks=[Rates()])
    assert rates[:7] == [0.1] * 7 and rates[7:15] == pytest.approx([0.096] * 8) and rates[15] == pytest.approx(0.09216)


# ------------------------------------------------------------------------------------------ the module layout
def test_keras_module_layout():
    assert tinynet.models.Model is tinynet.Model and tinynet.Sequential is models.Sequential
    assert tinynet.Input is layers.Input
    assert tinynet.optimizers.SGD is optim.SGD
    assert optim.CosineDecay is optimizers.schedules.EpochCosineDecay
    for name in ("ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay", "StepDecay", "Constant"):
        assert hasattr(optimizers.schedules, name)
    for name in ("Callback", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
                 "ReduceLROnPlateau", "CSVLogger", "TerminateOnNaN"):
        assert hasattr(tinynet.callbacks, name)
    sgd = optimizers.get("sgd")
    assert isinstance(sgd, optimizers.SGD) and sgd.learning_rate == 0.01 and sgd.momentum == 0.0
    assert optimizers.get("Adam").learning_rate == 0.001
    assert optimizers.get({"name": "sgd", "lr": 0.5}).learning_rate == 0.5


def test_sequential_add_pop_and_a_late_input_shape():
    model = models.Sequential(name="seq")
    model.add(layers.Dense(4, activation="relu", name="d1"))
    model.add(layers.Dense(3, activation="softmax", name="d2"))
    assert not model.built and "not built" in repr(model)
    with pytest.raises(ValueError, match="build it before compile"):
        model.compile("sgd", loss="sparse_categorical_crossentropy")
    x, y = toy_vectors()
    assert model.predict(x).shape == (40, 3) and model.built  # the data gives the input shape
    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    assert [layer.name for layer in model.layers[1:]] == ["d1", "d2"]
    model.pop()
    assert model(x).shape == (40, 4)
    with pytest.raises(ValueError, match="an Input can only come first"):
        model.add(layers.Input((8,)))
    with pytest.raises(TypeError, match="takes a layer"):
        model.add("dense")


# ------------------------------------------------------------------------------------------ (d) argument errors
def compiled(**kwargs):
    model = two_output_model()
    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=[None, ["accuracy"]], **kwargs)
    return model


X, Y = toy_vectors()
FIT_ERRORS = [
    (dict(x=X[:30], y=Y), "x has 30 examples but y for output 'aux' has 40"),
    (dict(x=X, y=Y, validation_data=(X, Y[:3])),
     "validation_data x has 40 examples but validation_data y for output 'aux' has 3"),
    (dict(x=X[:, :5], y=Y), r"x for input 'x' has shape \(40, 5\), the model takes \(N, 8\)"),
    (dict(x=X.astype(str), y=Y), "dtype <U"),
    (dict(x=X[:0], y=Y[:0]), "x is empty"),
    (dict(x=X, y=None), "y is required"),
    (dict(x=X, y=Y + 1), r"y for output 'aux': loss 'sparse_categorical_crossentropy': class indices must lie in "
                         r"\[0, 3\).*first: 3 at index \(2,\)"),
    (dict(x=X, y=np.eye(3)[Y]), "takes integer class indices.*these look one-hot: use 'categorical_crossentropy'"),
    (dict(x=X, y=[Y, Y, Y]), r"a list of 3 for 2 outputs"),
    (dict(x=X, y={"main": Y, "extra": Y}), r"keys \['extra'\] that are not output names"),
    (dict(x=X, y=[Y, Y], validation_split=1.0), r"validation_split must be in \[0, 1\), got 1.0"),
    (dict(x=X, y=[Y, Y], validation_split=-0.1), "validation_split must be a finite number >= 0"),
    (dict(x=X, y=[Y, Y], validation_split=0.99), "leaves no training examples"),
    (dict(x=X, y=[Y, Y], batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(x=X, y=[Y, Y], batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
    (dict(x=X, y=[Y, Y], epochs=2, initial_epoch=3), r"epochs \(2\) must be >= initial_epoch \(3\)"),
    (dict(x=X, y=[Y, Y], epochs=-1), "epochs must be an integer >= 0"),
    (dict(x=X, y=[Y, Y], verbose=3), "verbose must be 'auto', 0, 1 or 2"),
    (dict(x=X, y=[Y, Y], shuffle="yes"), "shuffle must be True or False"),
    (dict(x=X, y=[Y, Y], validation_data=(X,)), "validation_data must be a tuple"),
    (dict(x=X, y=[Y, Y], validation_data=(X[:, :3], Y)), "validation_data x for input 'x' has shape"),
    (dict(x=X, y=[Y, Y], validation_data=(X, Y + 5)), r"validation_data y for output 'aux'.*\[0, 3\)"),
    (dict(x=X, y=[Y, Y], callbacks=[print]), "callbacks must be tinynet.callbacks.Callback objects"),
    (dict(x=X, y=[Y, Y], callbacks=Callback()), "callbacks must be a list"),
]


@pytest.mark.parametrize("kwargs, message", FIT_ERRORS, ids=[m[:40] for _, m in FIT_ERRORS])
def test_fit_checks_its_arguments_before_training(kwargs, message):
    model = compiled()
    before = model.get_weights()
    with pytest.raises(ValueError, match="fit: .*" + message):
        model.fit(**{"verbose": 0, **kwargs})
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer.iterations == 0


def test_an_uncompiled_model_says_so():
    model = two_output_model()
    for call in (lambda: model.fit(X, Y), lambda: model.evaluate(X, Y)):
        with pytest.raises(ValueError, match=r"must be compiled first: call model.compile"):
            call()


def test_categorical_loss_with_class_indices_points_to_the_fix():
    model = two_output_model()
    model.compile("adam", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"one-hot labels of shape \(40, 3\), got shape \(40,\); these look like "
                                         r"class indices: use 'sparse_categorical_crossentropy', or one-hot encode "
                                         r"them with tinynet.utils.to_categorical\(y, 3\)"):
        model.fit(X, Y, verbose=0)
    model.compile("adam", loss="sparse_categorical_crossentropy", metrics=[["top_k_categorical_accuracy"], None])
    with pytest.raises(ValueError, match="metric 'top_k_categorical_accuracy': takes one-hot labels.*'sparse_' metric"):
        model.fit(X, Y, verbose=0)


COMPILE_ERRORS = [
    (dict(optimizer="rmsprop", loss="sparse_categorical_crossentropy"), r"unknown optimizer 'rmsprop'"),
    (dict(loss="hinge9"), "unknown loss 'hinge9'"),
    (dict(loss=None), "loss is required"),
    (dict(loss=[None, None]), "no output has a loss"),
    (dict(loss=["sparse_categorical_crossentropy"]), r"loss is a list of 1 for a model with 2 output\(s\)"),
    (dict(loss={"mian": "sparse_categorical_crossentropy"}), r"loss has keys \['mian'\] that are not output names"),
    (dict(loss="sparse_categorical_crossentropy", loss_weights=[0.3, -1.0]),
     "loss_weights for output 'main' must be a finite number >= 0, got -1.0"),
    (dict(loss="sparse_categorical_crossentropy", loss_weights=[1.0]), "loss_weights is a list of 1"),
    (dict(loss="sparse_categorical_crossentropy", loss_weights="0.3"), "loss_weights must be a list or a dict"),
    (dict(loss="sparse_categorical_crossentropy", metrics="accuracy"), "metrics must be a list or a dict"),
    (dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"]),
     r"for a model with 2 outputs \['aux', 'main'\], metrics as a list needs one entry per output"),
    (dict(loss="sparse_categorical_crossentropy", metrics=[None, ["acuracy"]]), "unknown metric 'acuracy'"),
    (dict(loss="sparse_categorical_crossentropy", metrics={"x": ["accuracy"]}), "metrics has keys"),
]


@pytest.mark.parametrize("kwargs, message", COMPILE_ERRORS, ids=[m[:30] for _, m in COMPILE_ERRORS])
def test_compile_checks_its_arguments(kwargs, message):
    model = two_output_model()
    with pytest.raises(ValueError, match="compile: " + message):
        model.compile(**{"optimizer": "sgd", **kwargs})
    assert not model.compiled


def test_optimizer_arguments_have_keras_names():
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert opt.get_config() == {"name": "sgd", "learning_rate": 0.1, "weight_decay": 1e-4, "momentum": 0.9,
                                "nesterov": True}
    adam = optimizers.Adam(learning_rate=0.002, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.8, 0.99, 1e-6)
    with pytest.warns(DeprecationWarning, match="'lr' is deprecated"):
        old = optimizers.SGD(lr=0.3)
    assert old.learning_rate == old.lr == 0.3
    old.lr = 0.2
    assert old.learning_rate == 0.2
    with pytest.raises(TypeError, match="not both"):
        optimizers.SGD(learning_rate=0.1, lr=0.1)
    for bad in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0"):
            optimizers.Adam(learning_rate=bad)
    with pytest.raises(ValueError, match="beta_1 must be in"):
        optimizers.Adam(beta_1=1.0)


# ------------------------------------------------------------------------------------------ metrics
def metric_inputs():
    pred = np.array([[0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5], [0.3, 0.3, 0.3]], np.float32)
    ids = np.array([1, 1, 0, 2])
    return pred, ids, np.eye(3, dtype=np.float32)[ids]


def test_metric_semantics_by_hand():
    pred, ids, one_hot = metric_inputs()
    # argmax takes the first of equal maxima: rows 2 and 4 predict class 0
    assert list(metrics.sparse_categorical_accuracy(ids, pred)) == [1, 0, 0, 0]
    assert list(metrics.categorical_accuracy(one_hot, pred)) == [1, 0, 0, 0]
    # top-k counts a label tied with the k-th highest score as found (Keras' in_top_k)
    assert list(metrics.sparse_top_k_categorical_accuracy(ids, pred, k=1)) == [1, 1, 0, 1]
    assert list(metrics.top_k_categorical_accuracy(one_hot, pred, k=2)) == [1, 1, 0, 1]  # 0.2 < 0.3
    m = metrics.SparseTopKCategoricalAccuracy(k=2)
    m.update_state(ids[:2], pred[:2])
    m.update_state(ids[2:], pred[2:])
    assert m.result() == 0.75 and m.name == "sparse_top_k_categorical_accuracy"
    m.reset_state()
    assert m.result() == 0.0
    acc = metrics.resolve_accuracy("acc", (4,), (3,))
    assert isinstance(acc, metrics.SparseCategoricalAccuracy) and acc.name == "acc"
    assert isinstance(metrics.resolve_accuracy("accuracy", (4, 3), (3,)), metrics.CategoricalAccuracy)
    assert isinstance(metrics.resolve_accuracy("accuracy", (4, 1), (1,)), metrics.BinaryAccuracy)
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        metrics.get("acuracy")


@pytest.mark.keras
def test_metrics_match_keras():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(2)
    pred = np.round(rng.random((64, 6)), 1).astype(np.float32)  # rounded: many ties
    ids = rng.integers(0, 6, 64)
    one_hot = np.eye(6, dtype=np.float32)[ids]
    cases = [("CategoricalAccuracy", {}, one_hot), ("SparseCategoricalAccuracy", {}, ids),
             ("TopKCategoricalAccuracy", {"k": 2}, one_hot), ("SparseTopKCategoricalAccuracy", {"k": 3}, ids)]
    for name, kwargs, labels in cases:
        ours, theirs = getattr(metrics, name)(**kwargs), getattr(keras.metrics, name)(**kwargs)
        for part in (slice(0, 20), slice(20, 64)):
            ours.update_state(labels[part], pred[part])
            theirs.update_state(labels[part], pred[part])
        assert ours.result() == pytest.approx(float(theirs.result()), abs=1e-7), name
        assert ours.name == theirs.name


def test_one_optimizer_serves_one_model():
    """An optimizer's state is one array per weight of its model: compiling a second model with it is refused
    (before, the second model's fit stepped the first model with stale gradients and never trained itself)."""
    opt = optimizers.Adam()
    first, second = two_output_model(), two_output_model()
    first.compile(opt, loss="sparse_categorical_crossentropy")
    first.compile(opt, loss="sparse_categorical_crossentropy")  # the same model again: fine
    with pytest.raises(ValueError, match=r"compile: Adam: this optimizer already updates another model .*give each "
                                         r"model an optimizer of its own"):
        second.compile(opt, loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="already updates another model"):
        opt.step(second)
    before = second.get_weights()
    second.compile(optimizers.Adam(), loss="sparse_categorical_crossentropy")
    second.fit(X, Y, batch_size=8, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(before, second.get_weights()))


@pytest.mark.parametrize("loss, wrong, right", [
    ("categorical_crossentropy", Y, np.eye(3)[Y]),
    ("sparse_categorical_crossentropy", np.eye(3)[Y], Y),
])
def test_labels_that_are_refused_resolve_no_metric(loss, wrong, right):
    """'accuracy' is resolved from the first labels fit or evaluate accepts, not from labels it refused: the
    corrected call then trains and evaluates (it used to fail on a metric fixed to the refused kind)."""
    model = two_output_model()
    model.compile("adam", loss=loss, metrics=[["accuracy"], ["accuracy"]])
    for call in (lambda y: model.fit(X, y, batch_size=8, verbose=0), lambda y: model.evaluate(X, y, verbose=0)):
        with pytest.raises(ValueError, match=f"loss '{loss}'"):
            call(wrong)
    history = model.fit(X, right, batch_size=8, verbose=0)
    assert 0.0 <= history.history["main_accuracy"][0] <= 1.0
    assert len(model.evaluate(X, right, verbose=0)) == 5


def bn_model():
    """x (8,) -> Dense 'h' -> BatchNormalization 'bn' -> softmax 'out' (3 classes)."""
    tinynet.layers.reset_names()
    tinynet.set_seed(0)
    x = layers.Input((8,), name="x")
    h = layers.BatchNormalization(name="bn")(layers.Dense(4, name="h")(x))
    return models.Model(x, layers.Dense(3, activation="softmax", name="out")(h))


@pytest.mark.parametrize("make_optimizer, error", [
    (lambda: optimizers.SGD(learning_rate=0.1), TrainingDiverged),  # the output layer's kernel overflows the loss
    (lambda: optimizers.SGD(learning_rate=1e30, weight_decay=1e10), ValueError),  # lr x decay beyond float32
    (lambda: optimizers.Adam(learning_rate=1e39), ValueError),  # the rate itself beyond float32
])
def test_a_refused_step_changes_no_weight_and_no_statistic(make_optimizer, error):
    """Whatever stops a step (a non-finite loss, a learning rate the weights' type cannot hold), nothing of it is
    kept: BatchNormalization's moving statistics, which the training forward updates, are put back too."""
    tinynet.set_floatx("float32")
    model = bn_model()
    model.compile(make_optimizer(), loss="sparse_categorical_crossentropy")
    if error is TrainingDiverged:
        weights = model.get_weights()
        weights[-2][:] = 3e38
        model.set_weights(weights)
    before = model.get_weights()
    with pytest.raises(error):
        model.fit(X.astype("float32"), Y, batch_size=8, verbose=0)
    assert model.optimizer.iterations == 0
    for name, a, b in zip([w for layer in model.layers for w in layer.weight_names], before, model.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_train_and_test_on_batch_as_keras():
    """``train_on_batch`` is one step of ``fit``'s loop and returns that batch's loss and metrics (not running
    means over the calls, as Keras since 2026); ``test_on_batch`` equals ``evaluate`` on the same batch;
    ``predict_on_batch`` equals ``predict``."""
    model, twin = two_output_model(), two_output_model()
    for m in (model, twin):
        m.compile(optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=[None, ["accuracy"]])
    xb, yb = X[:16], Y[:16]
    first = model.train_on_batch(xb, yb, return_dict=True)
    assert list(first) == ["loss", "aux_loss", "main_loss", "main_accuracy"]
    twin.fit(xb, yb, batch_size=16, epochs=1, shuffle=False, verbose=0)  # one step of fit's loop: the same update
    assert same_weights(model, twin) and model.optimizer.iterations == 1
    second = model.train_on_batch(X[16:24], Y[16:24])
    alone = two_output_model()  # this batch's own figures, not a mean with the first batch's
    alone.set_weights(twin.get_weights())
    alone.compile("sgd", loss="sparse_categorical_crossentropy", metrics=[None, ["accuracy"]])
    want = alone.evaluate(X[16:24], Y[16:24], verbose=0, return_dict=True)
    assert isinstance(second, list) and len(second) == 4
    assert second[3] == pytest.approx(
        float(np.mean(np.argmax(twin.predict(X[16:24])[1], axis=1) == Y[16:24])), abs=1e-12)  # no dropout
    assert second[0] == pytest.approx(want["loss"], rel=1e-6)
    assert model.test_on_batch(X, Y) == pytest.approx(model.evaluate(X, Y, verbose=0, batch_size=7), rel=1e-6)
    for got, expected in zip(model.predict_on_batch(X), model.predict(X)):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match=r"train_on_batch: x has 16 examples but y for output 'aux' has 3"):
        model.train_on_batch(xb, Y[:3])
    assert model.optimizer.iterations == 2
    with pytest.raises(ValueError, match="must be compiled first"):
        two_output_model().train_on_batch(xb, yb)


def test_fit_takes_distributed_as_engine_fit_documents():
    """``Model.fit(distributed=False)`` trains in one process (the keyword was documented but refused); a
    communicator that cannot exist is refused before training."""
    model = two_output_model()
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    model.fit(X, Y, batch_size=8, verbose=0, distributed=False)
    assert model.optimizer.iterations == 5
    with pytest.raises((ValueError, TypeError)):
        model.fit(X, Y, batch_size=8, verbose=0, distributed="yes")
    assert model.optimizer.iterations == 5
