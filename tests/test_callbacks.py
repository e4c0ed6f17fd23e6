"""Callbacks: Keras' hooks and order, and each callback against Keras' own on scripted logs where that is cheap
(EarlyStopping's stopping epoch, ReduceLROnPlateau's rates, CSVLogger's bytes), plus real fits."""
import csv
import io
import os

import numpy as np
import pytest

import tinynet
from tinynet import callbacks, checkpoint, fileio, layers, models, optimizers
from tinynet.training import Trainer, TrainingDiverged

from helpers import tiny_model, toy_data
from helpers import toy_vectors


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def small_model(seed=0):
    tinynet.layers.reset_names()
    tinynet.set_seed(seed)
    x = layers.Input((8,), name="x")
    h = layers.Dense(6, activation="relu", name="h")(x)
    return models.Model(x, layers.Dense(3, activation="softmax", name="out")(h))


def compiled(optimizer="sgd", **kwargs):
    model = small_model(**kwargs)
    model.compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class FakeOptimizer:
    def __init__(self, lr):
        self.learning_rate = lr


class FakeModel:
    """What the monitoring callbacks touch: stop_training, an optimizer's learning_rate, weights."""

    def __init__(self, lr=1.0):
        self.stop_training = False
        self.optimizer = FakeOptimizer(lr)
        self.weights = [np.zeros(1)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [w.copy() for w in weights]


def run_scripted(callback, logs_per_epoch, model=None):
    """Drive ``callback`` through epochs of scripted logs as fit would; return (epochs run, logs seen, model)."""
    model = model or FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    ran, seen = [], []
    for epoch, logs in enumerate(logs_per_epoch):
        callback.on_epoch_begin(epoch)
        logs = dict(logs)
        if isinstance(model, FakeModel):
            model.weights = [np.array([float(epoch)])]
        callback.on_epoch_end(epoch, logs)
        ran.append(epoch)
        seen.append(logs)
        if model.stop_training:
            break
    callback.on_train_end(seen[-1] if seen else None)
    return ran, seen, model


VAL_LOSS = [1.0, 0.9, 0.95, 0.89, 0.92, 0.91, 0.88, 0.95, 0.96, 0.97, 0.98, 0.99]
VAL_ACC = [0.5, 0.6, 0.6, 0.65, 0.64, 0.64, 0.63, 0.7, 0.69, 0.69, 0.68, 0.67]
EARLY_CASES = {  # kwargs, logs, (epochs run, stopped_epoch, best) as Keras 3.15 gives them
    "patience 0": (dict(), "val_loss", (3, 2, 0.9)),
    "patience 2": (dict(patience=2), "val_loss", (6, 5, 0.89)),
    "min_delta": (dict(patience=2, min_delta=0.05), "val_loss", (4, 3, 0.9)),
    "baseline": (dict(patience=3, baseline=0.85), "val_loss", (3, 2, 0.9)),
    "start_from_epoch": (dict(patience=1, start_from_epoch=6), "val_loss", (8, 7, 0.88)),
    "accuracy, max": (dict(monitor="val_accuracy", mode="max", patience=2), "val_accuracy", (6, 5, 0.65)),
    "restore best": (dict(patience=3, restore_best_weights=True), "val_loss", (10, 9, 0.88)),
}


def early_logs(key):
    return [{key: v, "loss": 1.0} for v in (VAL_LOSS if key == "val_loss" else VAL_ACC)]


@pytest.mark.parametrize("case", list(EARLY_CASES))
def test_early_stopping_on_scripted_logs(case):
    kwargs, key, (ran, stopped, best) = EARLY_CASES[case]
    cb = callbacks.EarlyStopping(**{"monitor": "val_loss", **kwargs})
    epochs, _, model = run_scripted(cb, early_logs(key))
    assert (len(epochs), cb.stopped_epoch, cb.best) == (ran, stopped, best)
    if kwargs.get("restore_best_weights"):
        assert model.weights[0][0] == cb.best_epoch == VAL_LOSS.index(0.88)  # the weights of the best epoch


@pytest.mark.keras
@pytest.mark.parametrize("case", list(EARLY_CASES))
def test_early_stopping_matches_keras(case):
    keras = pytest.importorskip("keras")
    kwargs, key, _ = EARLY_CASES[case]
    results = []
    for lib in (keras, tinynet):
        cb = lib.callbacks.EarlyStopping(**{"monitor": "val_loss", **kwargs})
        epochs, _, model = run_scripted(cb, early_logs(key))
        results.append((epochs, cb.stopped_epoch, float(cb.best), cb.best_epoch, cb.wait, model.weights[0][0]))
    assert results[0] == results[1]


def test_early_stopping_in_fit_restores_the_best_weights():
    x, y = toy_vectors()
    model = compiled(optimizers.SGD(learning_rate=0.5))
    kept = []
    cb = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    record = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: kept.append((logs["val_loss"],
                                                                                     model.get_weights())))
    history = model.fit(x, y, epochs=30, validation_data=(x[:9], y[:9]), verbose=0, callbacks=[cb, record])
    best = int(np.argmin([v for v, _ in kept]))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), kept[best][1]))
    assert len(history.epoch) == len(kept) and (cb.stopped_epoch == 0) == (len(kept) == 30)


def test_monitor_mode_auto():
    model = compiled()
    for monitor, op in (("val_loss", np.less), ("out_loss", np.less), ("val_accuracy", np.greater),
                        ("acc", np.greater), ("val_top5", np.greater)):
        cb = callbacks.EarlyStopping(monitor=monitor)
        cb.set_model(model)
        cb.on_epoch_end(0, {monitor: 1.0})
        assert cb.monitor_op is op, monitor
    cb = callbacks.EarlyStopping(monitor="gradient_norm")
    cb.set_model(model)
    with pytest.raises(ValueError, match="cannot tell whether that quantity should be maximized or minimized"):
        cb.on_epoch_end(0, {"gradient_norm": 1.0})
    with pytest.warns(UserWarning, match="conditioned on metric `val_loss` which is not available"):
        run_scripted(callbacks.EarlyStopping(), [{"loss": 1.0}])


# ------------------------------------------------------------------------------------------ the hooks
class Recorder(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name.startswith("on_") and name not in ("on_batch_begin", "on_batch_end"):
            def record(*args):
                self.calls.append((name,) + tuple(a for a in args if not isinstance(a, dict) and a is not None))
                return attr(*args)
            return record
        return attr


def test_hooks_order_params_and_history():
    x, y = toy_vectors(n=20)
    model = compiled()
    rec = Recorder()
    history = model.fit(x, y, batch_size=10, epochs=2, validation_data=(x[:5], y[:5]), verbose=0, callbacks=[rec])
    epoch = [("on_epoch_begin", 0), ("on_train_batch_begin", 0), ("on_train_batch_end", 0),
             ("on_train_batch_begin", 1), ("on_train_batch_end", 1), ("on_test_begin",), ("on_test_batch_begin", 0),
             ("on_test_batch_end", 0), ("on_test_end",), ("on_epoch_end", 0)]
    second = [(c[0], 1) if c[0] in ("on_epoch_begin", "on_epoch_end") else c for c in epoch]
    assert rec.calls == [("on_train_begin",)] + epoch + second + [("on_train_end",)]
    assert rec.model is model and rec.params == {"verbose": 0, "epochs": 2, "steps": 2}
    assert model.history is history and history.epoch == [0, 1] and history.params == rec.params
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in history.history.values())


def test_batch_logs_are_running_means():
    x, y = toy_vectors(n=30)
    model = compiled()
    batches = []
    cb = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(dict(logs)))
    history = model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[cb], shuffle=False)
    assert [sorted(b) for b in batches] == [["accuracy", "loss"]] * 3
    assert batches[-1]["loss"] == history.history["loss"][0]


def test_stop_training_from_a_callback_ends_after_the_epoch():
    x, y = toy_vectors()
    model = compiled()

    class StopAtOne(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    assert model.fit(x, y, epochs=10, verbose=0, callbacks=[StopAtOne()]).epoch == [0, 1]
    assert model.fit(x, y, epochs=1, verbose=0).epoch == [0]  # the next fit starts afresh


# ------------------------------------------------------------------------------------------ ModelCheckpoint
def test_model_checkpoint_weights_with_format_fields(tmp_path):
    x, y = toy_vectors()
    model = compiled()
    path = tmp_path / "run" / "w-{epoch:02d}-{val_loss:.2f}.weights.npz"
    model.fit(x, y, epochs=2, validation_split=0.2, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(path, save_weights_only=True)])
    names = sorted(os.listdir(tmp_path / "run"))
    assert [n[:5] for n in names] == ["w-01-", "w-02-"] and all(n.endswith(".weights.npz") for n in names)
    other = small_model(seed=3)
    other.load_weights(tmp_path / "run" / names[-1])
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))


def test_model_checkpoint_save_best_only(tmp_path):
    model = compiled()
    cb = callbacks.ModelCheckpoint(tmp_path / "best-{epoch}.weights.npz", save_best_only=True,
                                   save_weights_only=True)
    run_scripted(cb, [{"val_loss": v} for v in (1.0, 0.8, 0.9, 0.7, 0.75)], model=model)
    assert sorted(os.listdir(tmp_path)) == ["best-1.weights.npz", "best-2.weights.npz", "best-4.weights.npz"]
    cb = callbacks.ModelCheckpoint(tmp_path / "acc-{epoch}.weights.npz", monitor="val_accuracy", save_best_only=True,
                                   save_weights_only=True, initial_value_threshold=0.6)
    run_scripted(cb, [{"val_accuracy": v} for v in (0.5, 0.7, 0.65, 0.8)], model=model)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("acc")) == ["acc-2.weights.npz", "acc-4.weights.npz"]


def test_model_checkpoint_every_n_batches(tmp_path):
    x, y = toy_vectors()
    model = compiled()
    cb = callbacks.ModelCheckpoint(tmp_path / "e{epoch}-b{batch}.weights.npz", save_weights_only=True, save_freq=3)
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[cb])  # 4 batches an epoch
    assert sorted(os.listdir(tmp_path)) == ["e1-b3.weights.npz", "e2-b2.weights.npz"]


def test_model_checkpoint_full_state_resumes_bit_exact(tmp_path, monkeypatch):
    """The whole training state (weights, optimizer, epoch, history, random states) as a tinynet checkpoint;
    Dropout, BatchNormalization and shuffling included, a resumed fit ends on the straight run's bits."""
    ds = toy_data(n=36)

    def fresh():
        model = tiny_model(seed=0)
        model.compile(optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                      loss_weights=[0.3, 1.0], metrics=[None, ["accuracy"]])
        return model

    straight = fresh()
    straight.fit(ds.x, ds.y, batch_size=10, epochs=4, validation_split=0.25, verbose=0)

    writes = []
    real = fileio.atomic_write

    def counting(path, *args, **kwargs):
        writes.append(os.path.basename(os.fspath(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fileio, "atomic_write", counting)
    first = fresh()
    first.fit(ds.x, ds.y, batch_size=10, epochs=2, validation_split=0.25, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(tmp_path / "ckpt")])
    assert "checkpoint.json" in writes and any(w.startswith("weights-") for w in writes)
    assert checkpoint.status(tmp_path / "ckpt") == "checkpoint"

    tinynet.set_seed(999)  # a new process: everything random is disturbed before the checkpoint is read
    resumed = fresh()
    state = checkpoint.load(tmp_path / "ckpt", resumed)
    assert state["epoch"] == 2 and resumed.training_state.epoch == 2
    resumed.fit(ds.x, ds.y, batch_size=10, epochs=4, initial_epoch=state["epoch"], validation_split=0.25, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(straight.get_weights(), resumed.get_weights()))
    assert straight.training_state.history == resumed.training_state.history
    assert straight.optimizer.iterations == resumed.optimizer.iterations == 12


def test_model_checkpoint_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="must end in .npz"):
        callbacks.ModelCheckpoint(tmp_path / "w.weights.h5", save_weights_only=True)
    with pytest.raises(ValueError, match="give a folder path, not a file ending in .keras"):
        callbacks.ModelCheckpoint(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or an integer >= 1"):
        callbacks.ModelCheckpoint(tmp_path / "c", save_freq="batch")
    model = small_model()
    cb = callbacks.ModelCheckpoint(tmp_path / "c")
    with pytest.raises(checkpoint.CheckpointError, match="is not compiled"):
        run_scripted(cb, [{"val_loss": 1.0}], model=model)
    cb = callbacks.ModelCheckpoint(tmp_path / "w-{nope}.weights.npz", save_weights_only=True)
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        run_scripted(cb, [{"val_loss": 1.0}], model=model)


# ------------------------------------------------------------------------------------------ learning rate
def test_learning_rate_scheduler():
    x, y = toy_vectors()
    model = compiled(optimizers.SGD(learning_rate=0.1))
    used = []
    probe = callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: used.append(model.optimizer.learning_rate)
                                     if batch == 0 else None)
    cb = callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[cb, probe])
    assert used == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    # a one-argument schedule, and a per-epoch schedule object, as Keras accepts schedule(epoch)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.LearningRateScheduler(optimizers.schedules.StepDecay(
        0.2, factor=0.5, every=1))])
    assert model.optimizer.learning_rate == pytest.approx(0.05)
    with pytest.raises(ValueError, match="should be a float"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda e, lr: "fast")])
    with pytest.raises(ValueError, match="compile the model first"):
        run_scripted(callbacks.LearningRateScheduler(lambda e: 0.1), [{}], model=small_model())


RATES_LOGS = [{"val_loss": v} for v in (1.0, 0.9, 0.9, 0.9, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91)]
PLATEAU_CASES = {
    "patience 1": dict(factor=0.5, patience=1),
    "cooldown": dict(factor=0.5, patience=1, cooldown=2),
    "min_lr": dict(factor=0.1, patience=1, min_lr=0.05),
    "min_delta": dict(factor=0.5, patience=2, min_delta=0.03),
}
PLATEAU_EXPECTED = {  # the learning rate logged at each epoch's end (before the decision), as Keras 3.15
    "patience 1": [1.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125],
    "cooldown": [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625],
    "min_lr": [1.0, 1.0, 1.0, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],
    "min_delta": [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125],
}


@pytest.mark.parametrize("case", list(PLATEAU_CASES))
def test_reduce_lr_on_plateau_on_scripted_logs(case):
    _, seen, model = run_scripted(callbacks.ReduceLROnPlateau(**PLATEAU_CASES[case]), RATES_LOGS)
    assert [logs["learning_rate"] for logs in seen] == pytest.approx(PLATEAU_EXPECTED[case])


@pytest.mark.keras
@pytest.mark.parametrize("case", list(PLATEAU_CASES))
def test_reduce_lr_on_plateau_matches_keras(case):
    keras = pytest.importorskip("keras")
    rates = []
    for lib in (keras, tinynet):
        _, seen, model = run_scripted(lib.callbacks.ReduceLROnPlateau(**PLATEAU_CASES[case]), RATES_LOGS)
        rates.append([logs["learning_rate"] for logs in seen] + [model.optimizer.learning_rate])
    assert rates[0] == pytest.approx(rates[1], rel=1e-12)


def test_reduce_lr_on_plateau_in_fit():
    x, y = toy_vectors()
    model = compiled(optimizers.SGD(learning_rate=0.1))
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.ReduceLROnPlateau(
        monitor="loss", mode="max", patience=1, factor=0.5)])  # 'max' on a falling loss: reduce every epoch
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05])
    assert model.optimizer.learning_rate == pytest.approx(0.025)
    with pytest.raises(ValueError, match="factor >= 1.0"):
        callbacks.ReduceLROnPlateau(factor=1.5)


# ------------------------------------------------------------------------------------------ CSVLogger
CSV_LOGS = [[{"loss": 0.5, "accuracy": 0.75, "val_loss": 0.625, "val_accuracy": 0.5}] * 2,
            [{"loss": 1 / 3, "out_accuracy": 0.1}, {"loss": 0.25, "out_accuracy": 0.2}]]


def write_csv(lib, path, logs, append=False, separator=","):
    cb = lib.callbacks.CSVLogger(str(path), separator=separator, append=append)
    cb.on_train_begin()
    for epoch, entry in enumerate(logs):
        cb.on_epoch_end(epoch, dict(entry))
    cb.on_train_end()
    return path.read_bytes()


def test_csv_logger_rows(tmp_path):
    data = write_csv(tinynet, tmp_path / "a.csv", CSV_LOGS[1])
    assert data == (b"epoch,loss,out_accuracy,val_loss,val_out_accuracy\r\n"
                    b"0,0.3333333333333333,0.1,NA,NA\r\n1,0.25,0.2,NA,NA\r\n")
    again = write_csv(tinynet, tmp_path / "a.csv", CSV_LOGS[1], append=True)
    assert again == data + data.split(b"\r\n", 1)[1]  # no second header
    text = write_csv(tinynet, tmp_path / "b.csv", CSV_LOGS[0], separator=";").decode()
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    assert rows[1] == {"epoch": "1", "accuracy": "0.75", "loss": "0.5", "val_accuracy": "0.5", "val_loss": "0.625"}


def test_csv_logger_rewrites_the_whole_file_atomically(tmp_path, monkeypatch):
    x, y = toy_vectors()
    writes = []
    real = fileio.write_text
    monkeypatch.setattr(fileio, "write_text", lambda path, text: writes.append(text) or real(path, text))
    model = compiled()
    model.fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.CSVLogger(tmp_path / "log.csv")])
    assert len(writes) == 3  # the whole file after every epoch (nothing before the first epoch ends)
    assert all(writes[i + 1].startswith(writes[i]) for i in range(2))
    assert writes[-1].count("\r\n") == 4 and writes[-1].startswith("epoch,accuracy,loss,val_accuracy,val_loss")
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


@pytest.mark.keras
@pytest.mark.parametrize("append", [False, True])
def test_csv_logger_writes_keras_bytes(tmp_path, append):
    keras = pytest.importorskip("keras")
    for logs in CSV_LOGS:
        files = []
        for lib in (keras, tinynet):
            path = tmp_path / f"{lib.__name__}.csv"
            if append:
                path.write_text("epoch,loss\r\n0,1.0\r\n")
            files.append(write_csv(lib, path, logs, append=append, separator=";" if append else ","))
        assert files[0] == files[1]


# ------------------------------------------------------------------------------------------ TerminateOnNaN
def test_terminate_on_nan_stops_quietly_before_the_bad_step(capsys):
    x, y = toy_vectors()
    x[25, :] = 3e38  # finite input (fit refuses NaN in x up front); the third batch (10 a batch) gives a NaN loss
    model = compiled()
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3: non-finite loss nan"):
        model.fit(x, y, epochs=3, batch_size=10, shuffle=False, verbose=0)
    model = compiled()
    history = model.fit(x, y, epochs=3, batch_size=10, shuffle=False, verbose=0,
                        callbacks=[callbacks.TerminateOnNaN()])
    assert history.epoch == [] and history.history == {}  # the unfinished epoch is not recorded (engine's rule)
    assert all(np.isfinite(w).all() for w in model.get_weights())  # the diverging step was not applied
    assert model.optimizer.iterations == 2
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 2"):
        compiled().fit(x, y, epochs=3, batch_size=10, shuffle=False, verbose=0,
                       callbacks=[callbacks.TerminateOnNaN(raise_error=True)])


def test_terminate_on_nan_on_scripted_batches():
    model = FakeModel()
    cb = callbacks.TerminateOnNaN()
    cb.set_model(model)
    cb.on_train_batch_end(0, {"loss": 1.0})
    assert not model.stop_training
    cb.on_train_batch_end(1, {"loss": float("inf")})
    assert model.stop_training


# ------------------------------------------------------------------------------------------ with the Trainer
def test_the_trainer_takes_keras_callbacks(tmp_path):
    ds = toy_data(n=36)
    trainer = Trainer(tiny_model(), optimizers.SGD(0.05, momentum=0.9), batch_size=12, verbose=False)
    stop = callbacks.EarlyStopping(monitor="val_acc", patience=0, min_delta=1.0)  # nothing improves by 1: stops
    log = callbacks.CSVLogger(tmp_path / "trainer.csv")
    history = trainer.fit(ds, ds, epochs=5, callbacks=[stop, log])
    assert history["epoch"] == [1, 2] and trainer.epoch == 2 and stop.monitor_op is np.greater
    header = (tmp_path / "trainer.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,acc,") and header.endswith(",val_acc,val_loss")
    assert header.split(",").count("epoch") == 1  # the Trainer's 'epoch' log is not a second column


class Steps(callbacks.Callback):
    """Counts the training steps; raises at ``fail_at`` (epoch, batch) when given."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.steps, self.epoch, self.fail_at = 0, None, fail_at

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if (self.epoch, batch) == self.fail_at:
            raise RuntimeError("boom")


def trainer_fit(callback_list, epochs=2, val=True):
    ds = toy_data(n=24)
    trainer = Trainer(tiny_model(), optimizers.SGD(0.05), batch_size=12, verbose=False)
    trainer.fit(ds, ds if val else None, epochs=epochs, callbacks=callback_list)
    return trainer


@pytest.mark.parametrize("filepath, kwargs, expected", [
    ("ck{epoch}", {}, ["ck1", "ck2"]),
    ("ck", {}, ["ck"]),
    ("w-{epoch:02d}-{val_loss:.2f}.weights.npz", {"save_weights_only": True}, ["w-01-", "w-02-"]),
    ("w.weights.npz", {"save_weights_only": True}, ["w.weights.npz"]),
    ("e{epoch}-b{batch}.weights.npz", {"save_weights_only": True, "save_freq": 2}, ["e1-b2.weights.npz",
                                                                                    "e2-b2.weights.npz"]),
])
def test_model_checkpoint_under_the_trainer(tmp_path, filepath, kwargs, expected):
    """The Trainer's logs hold a 1-based 'epoch': the callback's own epoch (and batch) fill the path."""
    trainer = trainer_fit([callbacks.ModelCheckpoint(tmp_path / filepath, **kwargs)])
    names = sorted(os.listdir(tmp_path))
    assert [n[:len(e)] for n, e in zip(names, expected)] == expected and len(names) == len(expected)
    last = tmp_path / names[-1]
    if kwargs.get("save_weights_only"):
        other = tiny_model(seed=5)
        other.load_weights(last)
        assert all(np.array_equal(a, b) for a, b in zip(trainer.model.get_weights(), other.get_weights()))
    else:  # the whole state of the trainer: it resumes
        resumed = Trainer(tiny_model(seed=5), optimizers.SGD(0.05), batch_size=12, verbose=False)
        assert checkpoint.load(last, resumed)["epoch"] == 2
        assert all(np.array_equal(a, b) for a, b in zip(trainer.model.get_weights(), resumed.model.get_weights()))


def test_model_checkpoint_path_ignores_log_keys_named_epoch_or_batch(tmp_path):
    cb = callbacks.ModelCheckpoint(tmp_path / "{epoch}-{batch}-{lr}.weights.npz", save_weights_only=True)
    assert cb._file_path(0, 4, {"epoch": 9, "batch": 9, "lr": 0.5}) == str(tmp_path / "1-5-0.5.weights.npz")
    cb = callbacks.ModelCheckpoint(tmp_path / "{epoch}.weights.npz", save_weights_only=True)
    assert cb._file_path(2, None, {"epoch": 9, "batch": 9}) == str(tmp_path / "3.weights.npz")


def test_csv_logger_writes_one_epoch_column_when_the_logs_have_one(tmp_path):
    logs = [{"epoch": 1, "lr": 0.1, "time": 2.0, "loss": 0.5}, {"epoch": 2, "lr": 0.1, "time": 2.0, "loss": 0.25}]
    text = write_csv(tinynet, tmp_path / "t.csv", logs).decode()
    assert text.splitlines() == ["epoch,loss,lr,time,val_loss,val_lr,val_time", "0,0.5,0.1,2.0,NA,NA,NA",
                                 "1,0.25,0.1,2.0,NA,NA,NA"]


def test_progbar_line_does_not_repeat_the_epoch(capsys):
    bar = callbacks.ProgbarLogger()
    bar.set_params({"verbose": 2, "epochs": 3, "steps": 1})
    bar.on_epoch_begin(0)
    bar.on_epoch_end(0, {"epoch": 1, "loss": 0.5, "time": 1.0})
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Epoch 1/3" in text and "loss: 0.5000 - time: 1.0000" in text and "epoch: 1" not in text


# ------------------------------------------------------------------------------------------ argument checks
BAD_ARGUMENTS = [  # (callback, keyword arguments, the argument the error must name)
    (callbacks.EarlyStopping, {"patience": "2"}, "patience"),
    (callbacks.EarlyStopping, {"patience": -1}, "patience"),
    (callbacks.EarlyStopping, {"patience": 1.5}, "patience"),
    (callbacks.EarlyStopping, {"min_delta": -0.1}, "min_delta"),
    (callbacks.EarlyStopping, {"min_delta": "0"}, "min_delta"),
    (callbacks.EarlyStopping, {"mode": "mx"}, "mode"),
    (callbacks.EarlyStopping, {"monitor": ""}, "monitor"),
    (callbacks.EarlyStopping, {"monitor": None}, "monitor"),
    (callbacks.EarlyStopping, {"baseline": "0.5"}, "baseline"),
    (callbacks.EarlyStopping, {"baseline": float("nan")}, "baseline"),
    (callbacks.EarlyStopping, {"verbose": "1"}, "verbose"),
    (callbacks.EarlyStopping, {"restore_best_weights": "yes"}, "restore_best_weights"),
    (callbacks.EarlyStopping, {"start_from_epoch": -2}, "start_from_epoch"),
    (callbacks.ReduceLROnPlateau, {"patience": "2"}, "patience"),
    (callbacks.ReduceLROnPlateau, {"factor": 1.0}, "factor"),
    (callbacks.ReduceLROnPlateau, {"factor": 0}, "factor"),
    (callbacks.ReduceLROnPlateau, {"factor": "0.5"}, "factor"),
    (callbacks.ReduceLROnPlateau, {"cooldown": -1}, "cooldown"),
    (callbacks.ReduceLROnPlateau, {"cooldown": 0.5}, "cooldown"),
    (callbacks.ReduceLROnPlateau, {"min_lr": -1e-3}, "min_lr"),
    (callbacks.ReduceLROnPlateau, {"min_delta": -1e-4}, "min_delta"),
    (callbacks.ReduceLROnPlateau, {"mode": "MAX"}, "mode"),
    (callbacks.ReduceLROnPlateau, {"verbose": -1}, "verbose"),
    (callbacks.ModelCheckpoint, {"filepath": ""}, "filepath"),
    (callbacks.ModelCheckpoint, {"filepath": 3}, "filepath"),
    (callbacks.ModelCheckpoint, {"filepath": b"ck"}, "filepath"),
    (callbacks.ModelCheckpoint, {"filepath": "ck{}"}, "filepath"),
    (callbacks.ModelCheckpoint, {"filepath": "ck{0}"}, "filepath"),
    (callbacks.ModelCheckpoint, {"filepath": "ck{epoch"}, "filepath"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "save_freq": 0}, "save_freq"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "save_freq": True}, "save_freq"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "save_freq": "batch"}, "save_freq"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "save_best_only": "no"}, "save_best_only"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "save_weights_only": 1}, "save_weights_only"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "monitor": ""}, "monitor"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "mode": "best"}, "mode"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "verbose": 0.5}, "verbose"),
    (callbacks.ModelCheckpoint, {"filepath": "ck", "initial_value_threshold": "1"}, "initial_value_threshold"),
    (callbacks.CSVLogger, {"filename": "log.csv", "separator": "::"}, "separator"),
    (callbacks.CSVLogger, {"filename": "log.csv", "separator": ""}, "separator"),
    (callbacks.CSVLogger, {"filename": "log.csv", "separator": 5}, "separator"),
    (callbacks.CSVLogger, {"filename": "log.csv", "separator": '"'}, "separator"),
    (callbacks.CSVLogger, {"filename": "log.csv", "separator": "\n"}, "separator"),
    (callbacks.CSVLogger, {"filename": "log.csv", "append": "yes"}, "append"),
    (callbacks.CSVLogger, {"filename": ""}, "filename"),
    (callbacks.CSVLogger, {"filename": None}, "filename"),
    (callbacks.LearningRateScheduler, {"schedule": 0.1}, "schedule"),
    (callbacks.LearningRateScheduler, {"schedule": lambda e: 0.1, "verbose": "yes"}, "verbose"),
    (callbacks.TerminateOnNaN, {"raise_error": 1}, "raise_error"),
    (callbacks.LambdaCallback, {"on_epoch_end": "print"}, "on_epoch_end"),
]


@pytest.mark.parametrize("cls, kwargs, argument", BAD_ARGUMENTS,
                         ids=[f"{c.__name__}-{a}-{k[a]!r}" for c, k, a in BAD_ARGUMENTS])
def test_callback_arguments_are_checked_at_construction(tmp_path, monkeypatch, cls, kwargs, argument):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"^{cls.__name__}: {argument} "):
        cls(**kwargs)
    assert os.listdir(tmp_path) == []  # nothing written


def test_good_callback_arguments_are_kept():
    stop = callbacks.EarlyStopping(patience=np.int64(2), min_delta=0.5, verbose=True, mode="max", baseline=1)
    assert (stop.patience, stop.min_delta, stop.verbose, stop.baseline) == (2, 0.5, 1, 1.0)
    plateau = callbacks.ReduceLROnPlateau(factor=0.5, patience=0, cooldown=1, min_lr=1e-5, verbose=False)
    assert (plateau.factor, plateau.patience, plateau.cooldown, plateau.verbose) == (0.5, 0, 1, 0)
    assert callbacks.ModelCheckpoint("w-{epoch}.weights.npz", save_weights_only=True, save_freq=5).save_freq == 5
    assert callbacks.CSVLogger("log.csv", separator="\t").sep == "\t"


@pytest.mark.parametrize("make, error", [
    (lambda p: callbacks.CSVLogger(p / "missing" / "log.csv"), FileNotFoundError),
    (lambda p: callbacks.CSVLogger(p / "folder"), IsADirectoryError),
    (lambda p: callbacks.CSVLogger(p / "file" / "log.csv"), NotADirectoryError),
    (lambda p: callbacks.ModelCheckpoint(p / "file" / "w-{epoch}.weights.npz", save_weights_only=True),
     NotADirectoryError),
    (lambda p: callbacks.ModelCheckpoint(p / "file" / "deeper" / "ck{epoch}"), NotADirectoryError),
    (lambda p: callbacks.ModelCheckpoint(p / "file"), NotADirectoryError),
    (lambda p: callbacks.ModelCheckpoint(p / "folder", save_weights_only=True), ValueError),  # no .npz: at once
    (lambda p: callbacks.ModelCheckpoint(p / "folder.weights.npz", save_weights_only=True), IsADirectoryError),
])
def test_unwritable_paths_fail_before_the_first_step(tmp_path, make, error):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.weights.npz").mkdir()
    (tmp_path / "file").write_text("x")
    before = sorted(os.listdir(tmp_path))
    steps = Steps()
    with pytest.raises(error) as raised:
        trainer_fit([steps, make(tmp_path)])
    assert steps.steps == 0 and sorted(os.listdir(tmp_path)) == before
    if error is not ValueError:
        message = str(raised.value)
        assert message.startswith(("CSVLogger: cannot write", "ModelCheckpoint: cannot")) and str(tmp_path) in message


def test_unwritable_folder_is_found_by_trying(tmp_path, monkeypatch):
    """A folder that exists but takes no new file (read-only, full, ...): the probe fails, before any step."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "TemporaryFile", refuse)  # fileio.check_writable_folder's probe
    for cb in (callbacks.CSVLogger(tmp_path / "log.csv"), callbacks.ModelCheckpoint(tmp_path / "run" / "ck{epoch}")):
        steps = Steps()
        with pytest.raises(PermissionError, match=f"{type(cb).__name__}: cannot write .*Permission denied"):
            trainer_fit([steps, cb])
        assert steps.steps == 0 and os.listdir(tmp_path) == []


def test_csv_logger_leaves_no_file_when_training_fails_before_an_epoch_ends(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        trainer_fit([callbacks.CSVLogger(tmp_path / "log.csv"), Steps(fail_at=(0, 1))])
    assert os.listdir(tmp_path) == []
    (tmp_path / "old.csv").write_bytes(b"epoch,loss\r\n0,1.0\r\n")
    with pytest.raises(RuntimeError, match="boom"):
        trainer_fit([callbacks.CSVLogger(tmp_path / "old.csv", append=True), Steps(fail_at=(0, 1))])
    assert (tmp_path / "old.csv").read_bytes() == b"epoch,loss\r\n0,1.0\r\n"  # kept as it was
    with pytest.raises(RuntimeError, match="boom"):  # a later failure keeps the rows of the epochs completed
        trainer_fit([callbacks.CSVLogger(tmp_path / "log.csv"), Steps(fail_at=(1, 0))])
    assert (tmp_path / "log.csv").read_text().count("\n") == 2 and sorted(os.listdir(tmp_path)) == ["log.csv",
                                                                                                   "old.csv"]
