"""Checkpoints: an interrupted and resumed run ends on the same weights, bit for bit, as a straight run; the
layout (a manifest naming checksummed data files), status/verify, and what replaces what.

Kills, full disks and hostile files: tests/test_durability.py."""
import hashlib
import json
import os
import re

import numpy as np
import pytest

import tinynet
from tinynet import backend, checkpoint, data
from tinynet.optim import SGD, Adam, CosineDecay, StepDecay
from tinynet.training import Trainer

from helpers import tiny_model, toy_data


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def new_trainer(optimizer, seed=7):
    """Model, optimizer, schedule and augmentation as a fresh process would build them."""
    model = tiny_model(seed=0)
    schedule = StepDecay(optimizer.lr, every=1) if isinstance(optimizer, SGD) else CosineDecay(optimizer.lr, 3)
    return Trainer(model, optimizer, schedule=schedule, batch_size=10, augment=data.Augment(crop=1, flip=True),
                   seed=seed, verbose=False, grad_norm_groups=[("low", ("low",))], grad_norm_every=2)


@pytest.mark.parametrize("make_opt", [lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                                      lambda: Adam(0.01)], ids=["sgd", "adam"])
def test_resume_is_bit_exact(tmp_path, make_opt):
    ds = toy_data(n=36)

    straight = new_trainer(make_opt())
    straight.fit(ds, ds, epochs=3)

    first = new_trainer(make_opt())
    first.fit(ds, ds, epochs=1, checkpoint_dir=str(tmp_path), checkpoint_config={"variant": "tiny"})
    # a "new process": everything random is disturbed before the checkpoint is read
    tinynet.set_seed(12345)
    resumed = new_trainer(make_opt(), seed=999)
    resumed.model.get_layer("dropout").rng = np.random.default_rng(42)
    state = checkpoint.load(str(tmp_path), resumed)
    assert state["config"] == {"variant": "tiny"} and resumed.epoch == 1
    resumed.fit(ds, ds, epochs=3)

    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        assert np.array_equal(a, b)
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert sa["iterations"] == sb["iterations"] and sa["config"] == sb["config"]
    assert all(np.array_equal(sa["arrays"][k], sb["arrays"][k]) for k in sa["arrays"])
    untimed = [{k: v for k, v in t.history.items() if k != "time"} for t in (straight, resumed)]
    assert untimed[0] == untimed[1]
    assert straight.grad_norms == resumed.grad_norms
    assert (straight.rng.bit_generator.state == resumed.rng.bit_generator.state)


def test_checkpoint_files_are_plain(tmp_path):
    trainer = new_trainer(SGD(0.05, momentum=0.9))
    trainer.fit(toy_data(n=20), epochs=1, checkpoint_dir=str(tmp_path), checkpoint_config={"a": [1, 2]})
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and names[0] == "checkpoint.json"
    assert re.fullmatch(r"optimizer-000001-[0-9a-f]{8}\.npz", names[1])
    assert re.fullmatch(r"weights-000001-[0-9a-f]{8}\.npz", names[2])
    with open(tmp_path / "checkpoint.json") as f:
        state = json.load(f)
    assert state["format"] == checkpoint.FORMAT_VERSION == 2
    assert state["epoch"] == 1 and state["optimizer"]["config"]["name"] == "sgd"
    assert set(state["rng"]) == {"global", "layers", "trainer"} and "dropout" in state["rng"]["layers"]
    for kind, name in (("optimizer", names[1]), ("weights", names[2])):
        entry = state["files"][kind]
        assert entry["name"] == name and entry["size"] == os.path.getsize(tmp_path / name)
        assert entry["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        with np.load(tmp_path / name, allow_pickle=False) as f:
            assert all(f[k].dtype != object for k in f.files)
    paths = checkpoint.files(tmp_path)
    with np.load(paths["weights"], allow_pickle=False) as f:
        assert "low_bn/moving_mean" in f.files
    with np.load(paths["optimizer"], allow_pickle=False) as f:
        assert "velocity:low_conv/kernel" in f.files


def test_a_second_save_replaces_the_first_as_a_whole(tmp_path):
    trainer = new_trainer(SGD(0.05, momentum=0.9))
    ds = toy_data(n=20)
    trainer.fit(ds, epochs=1, checkpoint_dir=str(tmp_path))
    first = checkpoint.files(tmp_path)
    (tmp_path / ".weights-000001-0badc0de.npz.x1y2.tmp").write_bytes(b"stale")  # left by a killed save
    (tmp_path / "notes.txt").write_text("mine")  # not ours: kept
    trainer.fit(ds, epochs=2, checkpoint_dir=str(tmp_path))
    second = checkpoint.files(tmp_path)
    assert all(not os.path.exists(p) for p in first.values())
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.json", "notes.txt"]
                                                  + [os.path.basename(p) for p in second.values()])
    assert checkpoint.read_state(tmp_path)["epoch"] == 2


def test_load_weights_only_and_missing_dir(tmp_path):
    trainer = new_trainer(Adam(0.01))
    trainer.fit(toy_data(n=20), epochs=1, checkpoint_dir=str(tmp_path))
    model = tiny_model(seed=5)
    state = checkpoint.load_weights(str(tmp_path), model)
    assert state["epoch"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trainer.model.get_weights()))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.read_state(str(tmp_path / "nothing"))


def test_status_and_verify(tmp_path):
    assert checkpoint.status(tmp_path / "nothing") == "absent"
    assert checkpoint.status(tmp_path) == "empty"
    (tmp_path / "file").write_text("x")
    assert checkpoint.status(tmp_path / "file") == "not a folder"
    with pytest.raises(checkpoint.CheckpointError, match="not a folder"):
        checkpoint.verify(tmp_path / "file")
    with pytest.raises(checkpoint.CheckpointError, match="is a file"):
        checkpoint.save(tmp_path / "file", new_trainer(Adam(0.01)))
    assert checkpoint.status(tmp_path) == "unreadable"
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint.json not found"):
        checkpoint.verify(tmp_path)
    folder = tmp_path / "deep" / "er"  # created with its parents
    trainer = new_trainer(Adam(0.01))
    checkpoint.save(folder, trainer, config={"variant": "tiny"})
    assert checkpoint.status(folder) == "checkpoint"
    assert checkpoint.verify(folder)["config"] == {"variant": "tiny"}


def test_nonfinite_history_round_trips(tmp_path):
    trainer = new_trainer(SGD(0.05))
    trainer.history = {"loss": [1.5, float("nan"), float("inf")], "epoch": [1, 2, 3]}
    trainer.epoch = 3
    checkpoint.save(tmp_path, trainer)
    json.loads((tmp_path / "checkpoint.json").read_text(), parse_constant=lambda c: pytest.fail("not strict JSON"))
    loss = checkpoint.read_state(tmp_path)["history"]["loss"]
    assert loss[0] == 1.5 and np.isnan(loss[1]) and loss[2] == np.inf


def test_unjsonable_config_writes_nothing(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="not JSON-able"):
        checkpoint.save(tmp_path / "c", new_trainer(SGD(0.05)), config={"x": object()})
    assert not (tmp_path / "c").exists()


def test_optimizer_of_another_type_is_refused_and_nothing_changes(tmp_path):
    trainer = new_trainer(Adam(0.01))
    trainer.fit(toy_data(n=20), epochs=1, checkpoint_dir=str(tmp_path))
    other = new_trainer(SGD(0.05, momentum=0.9))
    before = [w.copy() for w in other.model.get_weights()]
    with pytest.raises(checkpoint.CheckpointError, match="optimizer"):
        checkpoint.load(tmp_path, other)
    assert other.epoch == 0 and other.optimizer.iterations == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, other.model.get_weights()))



def test_a_failure_while_applying_puts_back_a_trainer_without_gradient_norms(tmp_path, monkeypatch):
    """Should the apply step still fail (here: the weights' assignment), the trainer is put back as it was; a
    trainer that records no gradient norms must not be handed a record then (the rollback used to raise
    "records no gradient norms" over the real error)."""
    ds = toy_data(n=20)
    Trainer(tiny_model(seed=0), Adam(0.01), batch_size=10, verbose=False).fit(ds, epochs=1,
                                                                             checkpoint_dir=str(tmp_path))
    trainer = Trainer(tiny_model(seed=1), Adam(0.01), batch_size=10, verbose=False)
    before = [w.copy() for w in trainer.model.get_weights()]

    def failing(model, arrays):
        raise MemoryError("out of memory while assigning")

    monkeypatch.setattr(checkpoint.saving, "assign_weights", failing)
    with pytest.raises(MemoryError, match="out of memory while assigning"):
        checkpoint.load(tmp_path, trainer)
    assert trainer.epoch == 0 and trainer.optimizer.iterations == 0 and trainer.grad_norms is None
    assert all(np.array_equal(a, b) for a, b in zip(before, trainer.model.get_weights()))

def test_rng_states_round_trip():
    model = tiny_model()
    rng = np.random.default_rng(1)
    saved = json.loads(json.dumps(checkpoint.rng_states(model, rng)))
    expected = (backend.global_rng().random(), model.get_layer("dropout").rng.random(), rng.random())
    checkpoint.set_rng_states(model, saved, rng)
    assert (backend.global_rng().random(), model.get_layer("dropout").rng.random(), rng.random()) == expected


# ------------------------------------------------------------------------------------------ Keras' API
def test_a_compiled_model_saves_and_loads_its_run(tmp_path):
    ds = toy_data(n=20)

    def compiled(seed):
        model = tiny_model(seed=seed)
        model.compile(SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy")
        return model

    model = compiled(0)
    model.fit(ds.x, ds.y, epochs=2, batch_size=10, verbose=0)
    checkpoint.save(tmp_path, model, config={"how": "fit"})
    state = checkpoint.read_state(tmp_path)
    assert state["epoch"] == 2 and state["schedule"] is None and state["batch_size"] == 10
    assert state["optimizer"]["config"]["learning_rate"] == 0.05 and state["optimizer"]["iterations"] == 4
    assert set(state["history"]) == {"loss", "aux1_output_loss", "output_loss"}
    other = compiled(3)
    assert checkpoint.load(tmp_path, other)["config"] == {"how": "fit"}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    assert other.optimizer.iterations == 4 and other.training_state.history == model.training_state.history
    with pytest.raises(checkpoint.CheckpointError, match="is not compiled"):
        checkpoint.save(tmp_path, tiny_model())


def test_a_trainer_on_a_per_step_schedule_checkpoints_it(tmp_path):
    from tinynet.optimizers.schedules import ExponentialDecay

    ds = toy_data(n=20)

    def trainer():
        return Trainer(tiny_model(), SGD(learning_rate=ExponentialDecay(0.1, 2, 0.5), momentum=0.9), batch_size=10,
                       verbose=False)

    first = trainer()
    first.fit(ds, epochs=1, checkpoint_dir=str(tmp_path))
    state = checkpoint.read_state(tmp_path)
    assert state["schedule"] is None and state["optimizer"]["config"]["learning_rate"]["class_name"] == \
        "ExponentialDecay"
    assert first.history["lr"] == [pytest.approx(0.1 * 0.5 ** 0.5)]  # the rate of the epoch's last step (step 1)
    resumed = trainer()
    checkpoint.load(tmp_path, resumed)
    assert resumed.optimizer.learning_rate == first.optimizer.learning_rate == pytest.approx(0.05)
    with pytest.raises(ValueError, match="give no schedule to the trainer as well"):
        Trainer(tiny_model(), SGD(learning_rate=ExponentialDecay(0.1, 2, 0.5)), schedule=StepDecay(0.1))


def test_a_manifest_with_the_older_lr_key_still_loads(tmp_path):
    trainer = new_trainer(SGD(0.05, momentum=0.9))
    trainer.fit(toy_data(n=20), epochs=1, checkpoint_dir=str(tmp_path))
    path = tmp_path / "checkpoint.json"
    state = json.loads(path.read_text())
    config = state["optimizer"]["config"]
    config["lr"] = config.pop("learning_rate")  # as tinynet wrote it before the Keras names
    path.write_text(json.dumps(state))
    resumed = new_trainer(SGD(0.05, momentum=0.9))
    checkpoint.load(tmp_path, resumed)
    assert resumed.epoch == 1 and resumed.optimizer.iterations == trainer.optimizer.iterations
