"""Review of label smoothing: Keras' float32 rounding of the smoothed targets, the public helper's arguments,
and a checkpoint that records a smoothing its load would refuse."""
import json

import numpy as np
import pytest

import tinynet
from tinynet import checkpoint, losses
from tinynet.layers import Dense, Flatten, Input
from tinynet.model import Model
from tinynet.training import Trainer


@pytest.mark.parametrize("s", [0.058, 0.1, 0.109, 0.2, 0.37])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smoothed_targets_have_keras_bits(s, dtype):
    """Keras 3 (keras/src/losses/losses.py, categorical_crossentropy) smooths with
    ``y_true * (1.0 - label_smoothing) + (label_smoothing / num_classes)``: ``1.0 - s`` is a Python float, rounded
    to the targets' dtype once; float32(1) - float32(s) rounds twice and differs by an ulp for s = 0.058, 0.109."""
    t = np.eye(5, dtype=dtype)[[0, 3, 4, 1]]
    f = np.dtype(dtype).type
    keras = t * f(1.0 - s) + f(s) / f(5)
    np.testing.assert_array_equal(losses.smooth_targets(t, s), keras)
    assert losses.smooth_targets(t, s).dtype == dtype


@pytest.mark.parametrize("s", [0.058, 0.109, 0.37])
def test_binary_smoothed_targets_have_keras_bits(s):
    """Keras' BinaryCrossentropy: ``y_true * (1.0 - s) + 0.5 * s`` with Python floats, each rounded to float32
    once (float32(1) - float32(s) differed by an ulp for these s)."""
    t = np.array([[0.0, 1.0, 0.25], [1.0, 0.0, 0.5]], np.float32)
    y = np.full(t.shape, 0.5, np.float32)
    got = losses.BinaryCrossentropy(label_smoothing=s).targets(t, y)
    np.testing.assert_array_equal(got, t * np.float32(1.0 - s) + np.float32(0.5 * s))


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.1, True, "0.1", np.complex128(0.1), 0.1j])
def test_smooth_targets_refuses_a_bad_smoothing(bad):
    """The public helper checks its argument as categorical_crossentropy does (NaN made every target NaN, True
    read as 1, 1.5 gave negative targets)."""
    with pytest.raises(ValueError, match=r"smooth_targets: label_smoothing must be in \[0, 1\]"):
        losses.smooth_targets(np.eye(3), bad)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_smooth_targets_refuses_integer_targets(dtype):
    """Integer or boolean one-hot targets would round s to 0 in their dtype: returned unsmoothed, silently."""
    with pytest.raises(ValueError, match="smooth_targets: targets must be floating"):
        losses.smooth_targets(np.eye(3, dtype=dtype), 0.1)
    assert losses.smooth_targets(np.eye(3, dtype=dtype), 0.0).dtype == dtype  # s = 0: t itself, as documented


def _trainer():
    tinynet.set_floatx("float64")
    tinynet.set_seed(0)
    x = Input((2, 2, 1))
    model = Model(x, Dense(4, activation="softmax", name="out")(Flatten()(x)))
    return Trainer(model, "sgd", label_smoothing=0.1, batch_size=5, verbose=False)


@pytest.mark.parametrize("bad", [1.5, float("nan"), -0.1, None, True])
def test_save_refuses_a_smoothing_that_load_would_refuse(tmp_path, bad):
    """checkpoint.save refuses what load would refuse, before writing anything: a label_smoothing set by hand
    out of [0, 1] was written (None: a TypeError) and the checkpoint could not be loaded back."""
    trainer = _trainer()
    trainer.label_smoothing = bad
    with pytest.raises(checkpoint.CheckpointError, match="label_smoothing"):
        checkpoint.save(str(tmp_path / "c"), trainer)
    assert not (tmp_path / "c" / "checkpoint.json").exists()
    trainer.label_smoothing = np.float32(0.25)  # a NumPy number is taken, as Trainer takes it
    checkpoint.save(str(tmp_path / "c"), trainer)
    assert json.loads((tmp_path / "c" / "checkpoint.json").read_text())["label_smoothing"] == 0.25
    other = _trainer()
    checkpoint.load(str(tmp_path / "c"), other)
    assert other.label_smoothing == 0.25


def test_a_model_fit_checkpoint_records_no_smoothing_of_its_own(tmp_path):
    """A checkpoint of Model.fit (whose loss objects carry their own label_smoothing, in the model's compile) has
    no 'label_smoothing' field, which would read 0 whatever the loss smooths; a Trainer's has it."""
    tinynet.set_floatx("float64")
    tinynet.set_seed(0)
    x = Input((3,))
    model = Model(x, Dense(4, activation="softmax")(x))
    model.compile("sgd", losses.CategoricalCrossentropy(label_smoothing=0.3))
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((8, 3)), np.eye(4)[rng.integers(0, 4, 8)], epochs=1, verbose=0)
    checkpoint.save(str(tmp_path / "fit"), model)
    assert "label_smoothing" not in json.loads((tmp_path / "fit" / "checkpoint.json").read_text())
    trainer = _trainer()
    checkpoint.save(str(tmp_path / "trainer"), trainer)
    assert json.loads((tmp_path / "trainer" / "checkpoint.json").read_text())["label_smoothing"] == 0.1
