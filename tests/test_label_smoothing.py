"""Label smoothing (Szegedy et al. 2016, §7; Keras' ``label_smoothing``): the loss function, the Trainer and
``inception train --label-smoothing``, with checkpoints written before the flag existed."""
import json

import numpy as np
import pytest

import tinynet
from inception import cli_train
from tinynet import data, losses
from tinynet.layers import Dense, Flatten, Input
from tinynet.model import Model
from tinynet.training import Trainer


def _probs(rng, n, c, dtype=np.float64):
    z = rng.standard_normal((n, c))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("s", [0.0, 0.1, 0.37, 1.0])
def test_smoothed_loss_is_the_cross_entropy_with_the_mixed_targets_written_out(s):
    """Against the formula written out here: t = (1 − s)·onehot + s/C, L = −mean Σ t log p, for class ids."""
    rng = np.random.default_rng(0)
    p, y = _probs(rng, 7, 5), rng.integers(0, 5, 7)
    t = np.full((7, 5), s / 5)
    t[np.arange(7), y] += 1 - s
    loss, _ = losses.categorical_crossentropy(p, y, label_smoothing=s)
    assert loss == pytest.approx(-(t * np.log(p)).sum(axis=1).mean(), rel=1e-13)


def test_smoothed_gradient_matches_central_differences():
    """∂L/∂p in float64 against central differences of the loss (every p inside the clip)."""
    rng = np.random.default_rng(1)
    p, y = _probs(rng, 4, 6), np.array([0, 5, 2, 2])
    _, grad = losses.categorical_crossentropy(p, y, label_smoothing=0.2)
    numeric = np.zeros_like(p)
    h = 1e-6
    for index in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (losses.categorical_crossentropy(up, y, label_smoothing=0.2)[0]
                          - losses.categorical_crossentropy(down, y, label_smoothing=0.2)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_class_ids_and_one_hot_and_the_loss_object_agree():
    """The function on ids, on one-hot labels, and Keras' CategoricalCrossentropy(label_smoothing) object: the
    same loss and gradient bits (one helper, smooth_targets, for all three), float32 and float64."""
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        p, y = _probs(rng, 6, 4, dtype), rng.integers(0, 4, 6)
        one_hot = np.eye(4, dtype=dtype)[y]
        by_ids = losses.categorical_crossentropy(p, y, label_smoothing=0.1)
        by_one_hot = losses.categorical_crossentropy(p, one_hot, label_smoothing=0.1)
        by_object = losses.CategoricalCrossentropy(label_smoothing=0.1).value_and_grad(one_hot, p)
        for other in (by_one_hot, by_object):
            assert other[0] == by_ids[0]
            np.testing.assert_array_equal(other[1], by_ids[1])
        assert by_ids[1].dtype == dtype


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.1", None])
def test_a_bad_smoothing_is_refused_by_name(bad):
    p, y = _probs(np.random.default_rng(3), 2, 3), np.array([0, 1])
    with pytest.raises(ValueError, match=r"categorical_crossentropy: label_smoothing must be in \[0, 1\]"):
        losses.categorical_crossentropy(p, y, label_smoothing=bad)
    with pytest.raises(ValueError, match="Trainer: label_smoothing"):
        Trainer(_tiny_model(), "sgd", label_smoothing=bad)


def _tiny_model():
    tinynet.set_floatx("float64")
    tinynet.set_seed(0)
    x = Input((2, 2, 1))
    return Model(x, Dense(4, activation="softmax", name="out")(Flatten()(x)))


def test_the_trainer_trains_and_evaluates_on_the_smoothed_loss():
    """Its training loss and its evaluate() loss are the smoothed cross-entropy (as Keras reports the compiled
    loss); the accuracy is not."""
    rng = np.random.default_rng(4)
    dataset = data.Dataset(rng.standard_normal((10, 2, 2, 1)), rng.integers(0, 4, 10))
    trainer = Trainer(_tiny_model(), "sgd", label_smoothing=0.25, batch_size=10, verbose=False)
    assert trainer.label_smoothing == 0.25
    probs = trainer.predict(dataset.x)
    result = trainer.evaluate(dataset)
    assert result["loss"] == pytest.approx(losses.categorical_crossentropy(probs, dataset.y, label_smoothing=0.25)[0])
    assert result["loss"] != pytest.approx(losses.categorical_crossentropy(probs, dataset.y)[0])
    total, values, _ = trainer.train_step(dataset.x, dataset.y, 0.0)  # a rate of 0: the loss at the same weights
    assert values[-1] == pytest.approx(result["loss"], rel=1e-12)


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(16) % 2
    x = (rng.random((16, 16, 16)) * 60).astype(np.uint8)
    x[y == 1, :8] += 150
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y)
    return str(path)


TRAIN = ["train", "--batch-size", "8", "--quiet", "--kernels", "numpy", "--epochs", "1"]


def _record_smoothing(monkeypatch):
    """The label smoothing of every Trainer the CLI builds, in order."""
    seen = []
    real = Trainer.__init__

    def init(self, *args, **kwargs):
        seen.append(kwargs["label_smoothing"])
        real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", init)
    return seen


def test_the_cli_default_is_0_1_and_the_test_loss_says_so(npz, capsys, monkeypatch):
    seen = _record_smoothing(monkeypatch)
    assert cli_train.main(TRAIN + ["--data", npz]) == 0
    assert "(label smoothing 0.1)" in capsys.readouterr().out
    assert cli_train.main(TRAIN + ["--data", npz, "--label-smoothing", "0"]) == 0
    assert "label smoothing" not in capsys.readouterr().out
    assert seen == [0.1, 0.0]


@pytest.mark.parametrize("bad", ["1", "-0.1", "nan", "x"])
def test_a_bad_flag_is_one_line_and_exit_2(npz, capsys, bad):
    with pytest.raises(SystemExit) as stop:
        cli_train.main(TRAIN + ["--data", npz, "--label-smoothing", bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--label-smoothing" in err and "Traceback" not in err


def test_a_checkpoint_from_before_the_flag_resumes_without_smoothing(npz, tmp_path, capsys, monkeypatch):
    """A checkpoint whose run settings do not record label_smoothing trained without it: --resume continues
    with 0 (not the new default), refuses another value given on the command line, and its next save records 0."""
    ckpt = tmp_path / "ckpt"
    assert cli_train.main(TRAIN + ["--data", npz, "--label-smoothing", "0", "--checkpoint", str(ckpt),
                                   "--schedule", "constant"]) == 0
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    del manifest["config"]["run"]["label_smoothing"]  # as written before the flag existed
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli_train.main(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--resume", "--label-smoothing",
                                   "0.1", "--epochs", "2"]) == 2
    assert "--label-smoothing 0.1 (checkpoint: 0.0)" in capsys.readouterr().err
    seen = _record_smoothing(monkeypatch)
    assert cli_train.main(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--resume", "--epochs", "2"]) == 0
    assert seen == [0.0]
    assert "label smoothing" not in capsys.readouterr().out
    assert json.loads((ckpt / "checkpoint.json").read_text())["config"]["run"]["label_smoothing"] == 0.0


def test_a_checkpoint_with_a_forged_smoothing_is_refused(npz, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert cli_train.main(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--schedule", "constant"]) == 0
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    manifest["config"]["run"]["label_smoothing"] = 7
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli_train.main(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "label_smoothing 7" in err and "Traceback" not in err
    manifest["config"]["run"]["label_smoothing"] = 0.0  # a valid run setting, but not what the state records
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    assert cli_train.main(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "records the label smoothing 0.1 where its run's settings give 0; edited by hand?" in err


# ------------------------------------------------------------------------------------------- checkpoints
def _trainer(smoothing):
    return Trainer(_tiny_model(), "sgd", label_smoothing=smoothing, batch_size=5, verbose=False)


def test_a_checkpoint_keeps_the_trainers_smoothing_and_an_older_one_means_none(tmp_path):
    """Saved with the run's state and restored as loss_weights are (the run's loss); a checkpoint from before
    the field loads with 0, what it trained with; a forged value is refused with nothing changed."""
    from tinynet import checkpoint
    rng = np.random.default_rng(5)
    dataset = data.Dataset(rng.standard_normal((10, 2, 2, 1)), rng.integers(0, 4, 10))
    trainer = _trainer(0.2)
    trainer.fit(dataset, epochs=1, checkpoint_dir=str(tmp_path / "c"))
    manifest = tmp_path / "c" / "checkpoint.json"
    assert json.loads(manifest.read_text())["label_smoothing"] == 0.2
    other = _trainer(0.0)
    checkpoint.load(str(tmp_path / "c"), other)
    assert other.label_smoothing == 0.2
    state = json.loads(manifest.read_text())
    del state["label_smoothing"]
    manifest.write_text(json.dumps(state))
    other = _trainer(0.3)
    checkpoint.load(str(tmp_path / "c"), other)
    assert other.label_smoothing == 0.0
    for forged in (1.5, -0.1, "0.1", None, True):
        state["label_smoothing"] = forged
        manifest.write_text(json.dumps(state))
        other = _trainer(0.3)
        with pytest.raises(checkpoint.CheckpointError, match="field 'label_smoothing' must be a number in"):
            checkpoint.load(str(tmp_path / "c"), other)
        assert other.label_smoothing == 0.3
