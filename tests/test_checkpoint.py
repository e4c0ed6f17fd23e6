"""Checkpoints: an interrupted and resumed run ends on the same weights, bit for bit, as a straight run."""
import json
import os

import numpy as np
import pytest

import tinynet
from tinynet import backend, checkpoint, data
from tinynet.optim import SGD, Adam, CosineDecay, StepDecay
from tinynet.training import Trainer

from test_training import tiny_model, toy_data


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
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "optimizer.npz", "weights.npz"]
    with open(tmp_path / "checkpoint.json") as f:
        state = json.load(f)
    assert state["epoch"] == 1 and state["optimizer"]["config"]["name"] == "sgd"
    assert set(state["rng"]) == {"global", "layers", "trainer"} and "dropout" in state["rng"]["layers"]
    for name in ("weights.npz", "optimizer.npz"):
        with np.load(tmp_path / name, allow_pickle=False) as f:
            assert all(f[k].dtype != object for k in f.files)
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as f:
        assert "low_bn/moving_mean" in f.files
    with np.load(tmp_path / "optimizer.npz", allow_pickle=False) as f:
        assert "velocity:low_conv/kernel" in f.files


def test_load_weights_only_and_missing_dir(tmp_path):
    trainer = new_trainer(Adam(0.01))
    trainer.fit(toy_data(n=20), epochs=1, checkpoint_dir=str(tmp_path))
    model = tiny_model(seed=5)
    checkpoint.load_weights(str(tmp_path), model)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trainer.model.get_weights()))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.read_state(str(tmp_path / "nothing"))


def test_rng_states_round_trip():
    model = tiny_model()
    rng = np.random.default_rng(1)
    saved = json.loads(json.dumps(checkpoint.rng_states(model, rng)))
    expected = (backend.global_rng().random(), model.get_layer("dropout").rng.random(), rng.random())
    checkpoint.set_rng_states(model, saved, rng)
    assert (backend.global_rng().random(), model.get_layer("dropout").rng.random(), rng.random()) == expected
