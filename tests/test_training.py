"""The training loop on a tiny two-headed model: loss weights, evaluation, determinism, curves, grad norms."""
import os

import numpy as np
import pytest

import tinynet
from tinynet import data
from tinynet.optim import SGD, Adam, StepDecay
from tinynet.training import Trainer, grad_norm_table, group_grad_norms, layer_groups, plot_grad_norms, \
    plot_history, topk_accuracy

from helpers import tiny_model, toy_data


@pytest.fixture(autouse=True)
def _numpy_kernels():
    """NumPy kernels: no Numba compilation inside these short tests (conftest restores the default)."""
    tinynet.set_cpu_kernels("numpy")


def make_trainer(model, **kwargs):
    kwargs.setdefault("verbose", False)
    return Trainer(model, SGD(0.1, momentum=0.9), schedule=StepDecay(0.1, every=1), batch_size=16, **kwargs)


def test_fit_learns_and_records_history():
    ds = toy_data()
    trainer = make_trainer(tiny_model())
    history = trainer.fit(ds, ds, epochs=4)
    assert history["epoch"] == [1, 2, 3, 4]
    assert set(history) >= {"loss", "loss_aux1", "loss_main", "acc", "val_loss", "val_acc", "lr", "time"}
    assert "val_top5" not in history  # 3 classes
    assert history["lr"] == pytest.approx([0.1, 0.096, 0.09216, 0.0884736])
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_acc"][-1] > 0.6
    # the total is 0.3·aux + main, per batch, so also on the epoch means
    for tot, aux, main in zip(history["loss"], history["loss_aux1"], history["loss_main"]):
        assert tot == pytest.approx(0.3 * aux + main, rel=1e-5)


def test_evaluate_uses_main_head_only_and_top5():
    ds = toy_data(num_classes=7, n=35)
    model = tiny_model(num_classes=7)
    trainer = make_trainer(model)
    result = trainer.evaluate(ds)
    main = model.predict(ds.x)[-1]
    assert result["top1"] == topk_accuracy(main, ds.y, 1)
    assert result["top5"] == topk_accuracy(main, ds.y, 5)
    assert topk_accuracy(np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]]), np.array([2, 1]), 2) == 1.0
    assert topk_accuracy(np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]]), np.array([2, 1]), 1) == 0.0


def test_aux_weight_scales_aux_gradient():
    ds = toy_data(n=16)
    norms = []
    for w in (0.0, 0.3):
        model = tiny_model()
        trainer = make_trainer(model, aux_weight=w)
        assert trainer.loss_weights == [w, 1.0]
        trainer.train_step(ds.x, ds.y, lr=0.0)
        norms.append(float(np.abs(model.get_layer("aux1_output").grads[0]).sum()))
    assert norms[0] == 0.0 and norms[1] > 0.0


def test_training_is_deterministic():
    ds = toy_data()
    runs = []
    for _ in range(2):
        trainer = make_trainer(tiny_model(), augment=data.Augment(crop=1), seed=3)
        trainer.fit(ds, epochs=2)
        runs.append(trainer.model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.gpu
def test_training_on_the_gpu_gives_the_cpu_weights():
    """Two epochs (SGD momentum, BN, Dropout, two heads) on each device from the same start."""
    ds = toy_data()
    weights = {}
    for device in ("cpu", "gpu"):
        model = tiny_model()
        model.to(device)
        make_trainer(model, seed=3).fit(ds, epochs=2)
        weights[device] = model.get_weights()
    for a, b in zip(weights["gpu"], weights["cpu"]):
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1.0)


def test_grad_norms_with_and_without_aux():
    ds = toy_data()
    trainer = make_trainer(tiny_model(), grad_norm_groups=[("low", ("low",)), ("high", ("high",))],
                           grad_norm_every=2)
    trainer.fit(ds, epochs=1)  # 3 steps: recorded at steps 0 and 2
    gn = trainer.grad_norms
    assert gn["step"] == [0, 2]
    assert all(v > 0 for v in gn["with_aux"]["low"] + gn["main_only"]["low"])
    # the aux head only sees the low block: the high block's gradient is the same either way
    np.testing.assert_allclose(gn["with_aux"]["high"], gn["main_only"]["high"], rtol=1e-6)
    assert gn["with_aux"]["low"] != gn["main_only"]["low"]
    assert "low" in grad_norm_table(gn)


def test_grad_norm_backward_twice_matches_once():
    ds = toy_data(n=16)
    model = tiny_model()
    outs = model.forward(ds.x)
    grads = [np.full_like(o, 0.1) for o in outs]
    model.backward([None, grads[1]])
    model.backward(grads)
    twice = [g.copy() for layer in model.layers for g in layer.grads if g is not None]
    model.forward(ds.x)  # (dropout draws differ, so compare against a fresh tape of the same forward)
    model2 = tiny_model()
    outs2 = model2.forward(ds.x)
    model2.backward([np.full_like(o, 0.1) for o in outs2])
    once = [g for layer in model2.layers for g in layer.grads if g is not None]
    assert all(np.array_equal(a, b) for a, b in zip(twice, once))


def test_layer_groups_and_norm():
    model = tiny_model()
    groups = layer_groups(model, [("low", ("low",))])
    assert [layer.name for layer in groups["low"]] == ["low_conv", "low_bn"]
    for layer in groups["low"]:
        layer.grads = [np.ones_like(w) if t else None for w, t in zip(layer.weights, layer.trainable_flags)]
    n = sum(int(np.prod(w.shape)) for layer in groups["low"] for w in layer.trainable_weights)
    assert group_grad_norms(groups)["low"] == pytest.approx(np.sqrt(n))


def test_plots(tmp_path):
    ds = toy_data()
    trainer = make_trainer(tiny_model(), grad_norm_groups=[("low", ("low",))], grad_norm_every=1)
    trainer.fit(ds, ds, epochs=2)
    for path in (plot_history(trainer.history, str(tmp_path / "h.png")),
                 plot_grad_norms(trainer.grad_norms, str(tmp_path / "g.png"))):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_adam_trainer_and_wrong_weights():
    ds = toy_data()
    trainer = Trainer(tiny_model(), Adam(0.01), batch_size=16, verbose=False)
    trainer.fit(ds, epochs=1)
    with pytest.raises(ValueError, match="loss weights"):
        Trainer(tiny_model(), Adam(), loss_weights=[1.0], verbose=False)


def test_small_googlenet_trains_one_step():
    from inception.small import googlenet_small

    model = googlenet_small(input_shape=(16, 16, 1), num_classes=4)
    assert [t.name for t in model.outputs] == ["aux1_output", "aux2_output", "output"]
    assert [t.example_shape for t in model.outputs] == [(4,)] * 3
    rng = np.random.default_rng(0)
    ds = data.Dataset(rng.random((8, 16, 16, 1)).astype(np.float32), np.arange(8) % 4)
    trainer = Trainer(model, Adam(0.001), batch_size=8, verbose=False)
    total, head_losses, _ = trainer.train_step(ds.x, ds.y, lr=0.001)
    assert len(head_losses) == 3 and np.isfinite(total)
    assert len(googlenet_small(num_classes=10, aux=False).outputs) == 1


# ------------------------------------------------------------------------------------------ review fixes
def test_rate_callbacks_reach_a_trainers_optimizer():
    """ReduceLROnPlateau and LearningRateScheduler set the rate of a Trainer's optimizer (the model is not
    compiled: Model.optimizer is the running loop's); with a schedule, which sets the rate before every step and
    would undo them, fit refuses them before training."""
    from tinynet import callbacks

    ds = toy_data()
    trainer = Trainer(tiny_model(), SGD(0.1), batch_size=16, verbose=False)
    history = trainer.fit(ds, epochs=3, callbacks=[callbacks.LearningRateScheduler(lambda epoch: 0.1 / 2 ** epoch)])
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert trainer.model.optimizer is None  # only while training
    reducing = Trainer(tiny_model(), SGD(0.1), batch_size=16, verbose=False)
    reducing.fit(ds, ds, epochs=3, callbacks=[callbacks.ReduceLROnPlateau(monitor="val_loss", min_delta=10.0,
                                                                          patience=1, factor=0.5)])
    assert reducing.history["lr"] == pytest.approx([0.1, 0.1, 0.05])  # epoch 2 did not improve by 10: halved
    scheduled = make_trainer(tiny_model())
    with pytest.raises(ValueError, match=r"Trainer.fit: ReduceLROnPlateau sets the learning rate, but this trainer's "
                                         r"schedule sets it before every step"):
        scheduled.fit(ds, epochs=1, callbacks=[callbacks.ReduceLROnPlateau()])
    assert scheduled.epoch == 0 and scheduled.optimizer.iterations == 0


def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path):
    """A checkpoint folder inside a file, or one where nothing can be written, is refused before the first step
    (it used to fail only at the first save, after an epoch, with a bare OS error); nothing is left behind."""
    from tinynet.checkpoint import CheckpointError

    (tmp_path / "file").write_text("x")
    trainer = make_trainer(tiny_model())
    for folder, message in [(tmp_path / "file" / "ckpt", "cannot write a checkpoint there .* is not a folder"),
                            (tmp_path / "file", "is a file")]:
        with pytest.raises(CheckpointError, match=f"Trainer.fit: checkpoint_dir {folder}: {message}"):
            trainer.fit(toy_data(), epochs=1, checkpoint_dir=str(folder))
    assert trainer.epoch == 0 and trainer.optimizer.iterations == 0
    trainer.fit(toy_data(), epochs=1, checkpoint_dir=str(tmp_path / "new" / "ckpt"))  # missing folders are made
    assert sorted(os.listdir(tmp_path)) == ["file", "new"]


def test_terminate_on_nan_stops_without_counting_the_unfinished_epoch(tmp_path):
    """TerminateOnNaN stops training at the refused step; the unfinished epoch is not recorded as done (no
    history entry, no epoch counted, no checkpoint of it), so a resume runs it again."""
    from tinynet import callbacks, checkpoint

    ds = toy_data()
    bad = data.Dataset(ds.x.copy(), ds.y)
    trainer = make_trainer(tiny_model())
    trainer.fit(ds, epochs=1, checkpoint_dir=str(tmp_path))
    bad.x[:] = np.nan
    trainer.fit(bad, epochs=3, checkpoint_dir=str(tmp_path), callbacks=[callbacks.TerminateOnNaN()])
    assert trainer.epoch == 1 and trainer.history["epoch"] == [1]
    assert checkpoint.read_state(tmp_path)["epoch"] == 1


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(optimizer="adamw"), TypeError, "Trainer: optimizer: unknown optimizer 'adamw'"),
    (dict(optimizer=None), TypeError, "Trainer: optimizer: optimizer must be a name"),
    (dict(preprocess=3), TypeError, "Trainer: preprocess must be a callable"),
    (dict(augment="flip"), TypeError, "Trainer: augment must be a callable"),
    (dict(seed="a"), ValueError, "Trainer: seed must be"),
    (dict(seed=1.5), ValueError, "Trainer: seed must be"),
    (dict(verbose="x"), ValueError, "Trainer: verbose must be True or False"),
    (dict(schedule=tinynet.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)), TypeError,
     r"Trainer: schedule: ExponentialDecay is a per-step schedule \(Keras'\): give it to the optimizer"),
    (dict(schedule=lambda epoch: 0.1), TypeError, "Trainer: schedule: expected a per-epoch schedule"),
    (dict(schedule="bogus"), TypeError, "Trainer: schedule: expected a per-epoch schedule"),
    (dict(schedule={"name": "step", "lr": -1}), ValueError, "Trainer: schedule: StepDecay: lr must be"),
])
def test_trainer_arguments_are_checked_when_it_is_built(kwargs, error, message):
    kwargs = dict(dict(optimizer=SGD(0.1), verbose=False), **kwargs)
    with pytest.raises(error, match=message):
        Trainer(tiny_model(), **kwargs)


def test_trainer_names_what_does_not_fit_its_data():
    """fit on something that is not a Dataset, labels beyond an aux head's classes (naming the head), evaluate
    and predict on an empty set, a batch size of 0: clear errors; an optimizer may be given by name."""
    x = tinynet.layers.Input((8, 8, 1))
    h = tinynet.layers.Flatten()(x)
    model = tinynet.Model(x, [tinynet.layers.Dense(2, activation="softmax", name="aux1_output")(h),
                              tinynet.layers.Dense(3, activation="softmax", name="output")(h)])
    trainer = Trainer(model, "adam", verbose=False)
    ds = toy_data()
    with pytest.raises(TypeError, match="the train set must be a tinynet.data.Dataset"):
        trainer.fit((ds.x, ds.y), epochs=1)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\) for the 2 outputs of head 'aux1'"):
        trainer.fit(ds, epochs=1)
    empty = data.Dataset(ds.x[:0], ds.y[:0])
    with pytest.raises(ValueError, match="the evaluation set is empty"):
        trainer.evaluate(empty)
    assert trainer.predict(ds.x[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="batch_size must be"):
        trainer.predict(ds.x, batch_size=0)
