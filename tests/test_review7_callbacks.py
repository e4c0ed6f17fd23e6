"""Review 7 of the callbacks and the training loop helpers: each test names a defect that was found and fixed."""
import numpy as np
import pytest

import tinynet
from tinynet import callbacks, layers, models, optimizers
from tinynet.optimizers import schedules
from tinynet.training import Trainer

from helpers import tiny_model, toy_data


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def compiled(optimizer="sgd"):
    tinynet.layers.reset_names()
    tinynet.set_seed(0)
    x = layers.Input((8,), name="x")
    h = layers.Dense(6, activation="relu", name="h")(x)
    model = models.Model(x, layers.Dense(3, activation="softmax", name="out")(h))
    model.compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def vectors(n=24):
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    return x, np.arange(n) % 3


class CountSteps(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


@pytest.mark.parametrize("make", [
    lambda: callbacks.EarlyStopping(monitor="gradient_norm"),
    lambda: callbacks.ReduceLROnPlateau(monitor="gradient_norm"),
    lambda: callbacks.ModelCheckpoint("unused", monitor="gradient_norm", save_best_only=True),
], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
def test_undecidable_monitor_fails_before_the_first_step(make, tmp_path, monkeypatch):
    """mode='auto' on a monitor whose direction cannot be told raised only at the end of the first epoch, after a
    whole epoch of training; it must fail in on_train_begin, before any step."""
    monkeypatch.chdir(tmp_path)
    x, y = vectors()
    steps = CountSteps()
    with pytest.raises(ValueError, match="cannot tell whether that quantity should be maximized or minimized"):
        compiled().fit(x, y, epochs=2, verbose=0, callbacks=[steps, make()])
    assert steps.steps == 0


def test_monitor_callback_reused_keeps_min_delta_sign():
    """Guard for the fix above: the direction is now resolved at every fit, which must not flip min_delta's sign
    each time (it is negated for 'min')."""
    x, y = vectors()
    model = compiled()
    stop = callbacks.EarlyStopping(monitor="loss", min_delta=0.5)
    for _ in range(3):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[stop])
    assert stop.min_delta == -0.5 and stop.monitor_op is np.less


@pytest.mark.parametrize("template", ["w-{epoch!x}.weights.npz", "w-{val_loss!z}.weights.npz",
                                      "w-{epoch:zz}.weights.npz", "w-{batch:q}.weights.npz"])
def test_model_checkpoint_template_that_cannot_be_filled_is_refused_when_built(template, tmp_path):
    """A filepath whose fields can never be filled (an unknown conversion, a bad format spec for the integer
    epoch/batch) was accepted and failed only after the first epoch's training."""
    with pytest.raises(ValueError, match="ModelCheckpoint: filepath"):
        callbacks.ModelCheckpoint(str(tmp_path / template), save_weights_only=True,
                                  save_freq=1 if "batch:" in template else "epoch")


def test_model_checkpoint_batch_template_still_works_with_integer_save_freq(tmp_path):
    """{batch} stays allowed (and filled) when saving every few batches."""
    x, y = vectors(16)
    path = tmp_path / "w-{epoch}-{batch:03d}.weights.npz"
    compiled().fit(x, y, epochs=1, batch_size=8, verbose=0,
                   callbacks=[callbacks.ModelCheckpoint(str(path), save_weights_only=True, save_freq=2)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-1-002.weights.npz"]


def test_learning_rate_scheduler_does_not_hide_a_type_error_inside_the_schedule():
    """A TypeError raised inside a two-argument schedule was swallowed and the schedule called again as
    schedule(epoch), so the user saw "missing 1 required positional argument" instead of their own error."""
    def schedule(epoch, lr):
        return lr * "half"

    x, y = vectors()
    with pytest.raises(TypeError, match="can't multiply sequence"):
        compiled().fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(schedule)])


def test_learning_rate_scheduler_one_argument_form_still_works():
    """Keras' older schedule(epoch) form keeps working."""
    x, y = vectors()
    model = compiled()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))])
    assert model.optimizer.learning_rate == pytest.approx(0.02)


def test_learning_rate_scheduler_refuses_a_schedule_taking_neither_form():
    """A schedule taking no argument (or three) was accepted and failed at the first epoch's start with a bare
    TypeError; it must raise ValueError naming the callback when built."""
    for schedule in (lambda: 0.1, lambda epoch, lr, extra: 0.1):
        with pytest.raises(ValueError, match="LearningRateScheduler: schedule must take"):
            callbacks.LearningRateScheduler(schedule)


@pytest.mark.parametrize("make", [
    lambda: callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=100.0),
    lambda: callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2),
], ids=["ReduceLROnPlateau", "LearningRateScheduler"])
def test_rate_callback_on_an_optimizer_with_a_schedule_fails_before_training(make):
    """ReduceLROnPlateau on an optimizer built with a learning-rate schedule trained a full epoch, then failed
    when it tried to set the rate; both rate callbacks must refuse it before the first step, naming themselves."""
    x, y = vectors()
    model = compiled(optimizers.SGD(schedules.ExponentialDecay(0.1, 10, 0.5)))
    steps = CountSteps()
    cb = make()
    with pytest.raises(TypeError, match=type(cb).__name__):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[steps, cb])
    assert steps.steps == 0


@pytest.mark.parametrize("kwargs", [dict(on_epoch_ends=print), dict(on_test_begin=5), dict(on_batch_end="f")])
def test_lambda_callback_refuses_unknown_or_non_callable_hooks(kwargs):
    """A misspelt hook (on_epoch_ends=...) was stored as a plain attribute and never called; a non-callable extra
    hook failed only when training called it."""
    with pytest.raises(ValueError, match="LambdaCallback: on_"):
        callbacks.LambdaCallback(**kwargs)


def test_lambda_callback_extra_keras_hooks_still_work():
    """Other hooks given by keyword (as Keras' **kwargs) still run."""
    seen = []
    cb = callbacks.LambdaCallback(on_test_begin=lambda logs: seen.append("test"), note="kept")
    x, y = vectors()
    compiled().fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[cb])
    assert seen == ["test"] and cb.note == "kept"


def test_trainer_fit_single_callback_is_refused_clearly():
    """Trainer.fit(callbacks=EarlyStopping()) (one callback, not a list) failed with "'EarlyStopping' object is
    not iterable"; it must raise a ValueError naming the argument, as Model.fit does."""
    data = toy_data(8)
    trainer = Trainer(tiny_model(), optimizers.SGD(0.1), verbose=False)
    with pytest.raises(ValueError, match="Trainer.fit: callbacks must be a list"):
        trainer.fit(data, data, epochs=1, callbacks=callbacks.EarlyStopping())
    assert trainer.epoch == 0


def test_model_checkpoint_never_takes_a_nan_as_the_best(tmp_path):
    """ModelCheckpoint(save_best_only, save_freq=1) shown a refused step's loss = nan on its first batch took NaN
    as the best: it saved then, and every later comparison with NaN was false, so it never saved again (best
    is kept across fits, as in Keras)."""
    model = compiled()
    cb = callbacks.ModelCheckpoint(str(tmp_path / "w-{batch}.weights.npz"), monitor="loss", save_best_only=True,
                                   save_weights_only=True, save_freq=1)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_train_batch_end(0, {"loss": float("nan")})
    assert cb.best is None and not list(tmp_path.iterdir())
    cb.on_train_batch_end(1, {"loss": 1.0})
    assert cb.best == 1.0 and [p.name for p in tmp_path.iterdir()] == ["w-2.weights.npz"]


@pytest.mark.parametrize("config", [{"classes": {1, 2}}, {"scale": float("nan")}, ["not", "a", "dict"]],
                         ids=["set", "nan", "list"])
def test_trainer_fit_refuses_a_checkpoint_config_it_cannot_save_before_training(config, tmp_path):
    """A checkpoint_config that is not a JSON-able dict trained a whole epoch, then failed at the first checkpoint
    (a set, a NaN), or was saved and then refused by checkpoint.load (a list); it must fail before training."""
    data = toy_data(8)
    trainer = Trainer(tiny_model(), optimizers.SGD(0.1), verbose=False)
    with pytest.raises(ValueError, match="Trainer.fit: checkpoint_config"):
        trainer.fit(data, epochs=1, checkpoint_dir=str(tmp_path / "ck"), checkpoint_config=config)
    assert trainer.epoch == 0 and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("weights", [0.3, {"aux1_output": 0.3, "output": 1.0}, "0.3"], ids=["float", "dict", "str"])
def test_trainer_loss_weights_not_a_list_is_refused_by_name(weights):
    """Trainer(loss_weights=0.3) failed with "'float' object is not iterable" (a dict: with a message about its
    keys); it must raise ValueError naming loss_weights and saying it is a list, one per output."""
    with pytest.raises(ValueError, match="Trainer: loss_weights must be a list of 2 numbers"):
        Trainer(tiny_model(), optimizers.SGD(0.1), loss_weights=weights)


def test_trainer_train_epoch_after_an_early_stopped_fit_runs_the_whole_epoch():
    """After fit was ended by EarlyStopping, model.stop_training stayed True and Trainer.train_epoch then ran one
    batch of the epoch and returned as if the epoch were done."""
    data = toy_data(32)
    trainer = Trainer(tiny_model(), optimizers.SGD(0.1), verbose=False, batch_size=8)
    trainer.fit(data, data, epochs=3, callbacks=[callbacks.EarlyStopping(patience=0, min_delta=10.0)])
    steps = trainer.optimizer.iterations
    trainer.train_epoch(data)
    assert trainer.optimizer.iterations - steps == 4


def test_grad_norm_record_holds_each_step_once_after_a_refused_step():
    """A step whose update was refused (diverged) kept its gradient-norm measurement; when training went on from
    the same step count, the record held that step twice ([0, 0, 1]) and the table averaged a step never taken
    in twice."""
    data = toy_data(16)
    trainer = Trainer(tiny_model(), optimizers.SGD(3.3e38), verbose=False, batch_size=8,
                      grad_norm_groups=[("low", ("low",))], grad_norm_every=1)
    trainer.fit(data, epochs=1, callbacks=[callbacks.TerminateOnNaN()])  # the first update overflows: refused
    assert trainer.optimizer.iterations == 0
    trainer.optimizer.learning_rate = 0.1
    trainer.fit(data, epochs=1)
    record = trainer.grad_norms
    assert record["step"] == [0, 1]
    assert all(len(record[kind]["low"]) == 2 for kind in ("with_aux", "main_only"))


def test_model_checkpoint_val_field_with_batch_saving_is_refused_when_built(tmp_path):
    """'w-{epoch}-{val_loss:.2f}' with save_freq=2 trained two batches, then failed with a KeyError: a batch's
    logs never hold validation values. It must raise ValueError when built (with save_freq='epoch' it is fine)."""
    template = str(tmp_path / "w-{epoch}-{val_loss:.2f}.weights.npz")
    with pytest.raises(ValueError, match="no validation values"):
        callbacks.ModelCheckpoint(template, save_weights_only=True, save_freq=2)
    callbacks.ModelCheckpoint(template, save_weights_only=True)


def test_mode_auto_on_a_metric_function_of_the_users_is_refused_before_training():
    """A function given to compile(metrics=[fn]) was taken as higher-is-better, so EarlyStopping(mode='auto') on
    an error metric stopped at its worst; as in Keras, its direction is unknown: mode='auto' raises before the
    first step, and mode='min' (or the metric's direction set) works."""
    def mean_miss(y_true, y_pred):
        return (np.asarray(y_pred).argmax(axis=-1) != np.asarray(y_true)).astype(np.float64)

    x, y = vectors()
    for mode, direction in (("auto", None), ("min", None), ("auto", "down")):
        model = compiled()
        metric = tinynet.metrics.get(mean_miss)
        assert metric.direction is None
        metric.direction = direction
        model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=[metric])
        steps = CountSteps()
        stop = callbacks.EarlyStopping(monitor="mean_miss", mode=mode, patience=5)
        if mode == "auto" and direction is None:
            with pytest.raises(ValueError, match="mean_miss"):
                model.fit(x, y, epochs=2, batch_size=8, callbacks=[stop, steps], verbose=0)
            assert steps.steps == 0
        else:
            model.fit(x, y, epochs=2, batch_size=8, callbacks=[stop, steps], verbose=0)
            assert steps.steps == 6 and stop.monitor_op is np.less
    assert tinynet.metrics.get("sparse_categorical_accuracy").direction == "up"
    assert tinynet.metrics.get("mse").direction == "down"


@pytest.mark.parametrize("value", [float("nan"), np.float64("inf"), np.float32("nan"), np.float16("-inf")])
def test_a_non_finite_log_value_of_any_float_type_ends_training(value):
    """The end-of-epoch check took only Python floats (and np.float64, a subclass) as numbers: a NaN as
    np.float32 from a validation function was recorded in the history as if training were fine."""
    from tinynet.engine import TrainingDiverged
    from tinynet.optimizers import SGD

    train = toy_data()
    trainer = Trainer(tiny_model(), SGD(0.05), batch_size=16, verbose=False)
    with pytest.raises(TrainingDiverged, match="non-finite val_score"):
        trainer.run_epochs([train.x], [train.y] * 2, 0, 2, 16, validate=lambda: {"val_score": value})
    assert trainer.history == {} and trainer.epoch == 0


def test_a_refused_last_step_leaves_no_gradient_norm_measurement():
    """When the refused step was the last one (training stopped by TerminateOnNaN), its measurement stayed in the
    record: the table averaged a step whose update was never applied. Nothing of a refused step is kept now."""
    data = toy_data(16)
    trainer = Trainer(tiny_model(), optimizers.SGD(3.3e38), verbose=False, batch_size=8,
                      grad_norm_groups=[("low", ("low",))], grad_norm_every=1)
    trainer.fit(data, epochs=1, callbacks=[callbacks.TerminateOnNaN()])  # the first update overflows: refused
    assert trainer.optimizer.iterations == 0
    record = trainer.grad_norms
    assert record["step"] == [] and record["with_aux"]["low"] == record["main_only"]["low"] == []
