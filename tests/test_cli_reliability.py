"""The CLI refuses a user's mistake in one line with exit code 2, before any training; divergence stops at once.

Every case runs ``python -m inception`` in-process through :func:`inception.__main__.main` (parser errors too);
one case runs a real subprocess to show that no traceback reaches the terminal.
"""
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tinynet
from inception.__main__ import main
from inception.cli_common import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def cli(argv, capsys):
    """Run ``inception ARGV``; return (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own exit (a bad flag value)
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, command="train", expected=2):
    assert code == expected, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"inception {command}: error: "), err
    assert "Traceback" not in err


def make_npz(path, n=24, size=16, labels=None, class_names=("nw", "ne", "sw", "se")):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4 if labels is None else np.asarray(labels)
    x = (rng.random((len(y), size, size)) * 60).astype(np.uint8)
    for i, c in enumerate(y % 4):
        r, col = divmod(int(c), 2)
        x[i, size // 2 * r:size // 2 * (r + 1), size // 2 * col:size // 2 * (col + 1)] += 180
    arrays = {"x": x, "y": y}
    if class_names is not None:
        arrays["class_names"] = np.array(class_names)
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def npz(tmp_path):
    return make_npz(tmp_path / "toy.npz")


TRAIN = ["train", "--batch-size", "6", "--quiet", "--kernels", "numpy", "--crop", "1", "--epochs", "1"]


def folder_digest(folder):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode())
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "-4"], "argument --batch-size: must be >= 1 and <= 65536, got -4"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1 and <= 65536, got 0"),
    (["--batch-size", "2.5"], "argument --batch-size: expected an integer, got '2.5'"),
    (["--epochs", "0"], "argument --epochs: must be >= 1 and <= 100000, got 0"),
    (["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["--lr", "-0.1"], "argument --lr: must be > 0 and <= 3.40282e+38, got -0.1"),
    (["--lr", "0"], "argument --lr: must be > 0 and <= 3.40282e+38, got 0"),
    (["--lr", "1e39"], "argument --lr: must be > 0 and <= 3.40282e+38, got 1e39"),  # float32 weights turn inf
    (["--seed", "4294967296"], "argument --seed: must be >= 0 and <= 4294967295, got 4294967296"),
    (["--checkpoint", ""], "argument --checkpoint: expected a path, got an empty one"),
    (["--data", ""], "argument --data: expected a path, got an empty one"),
    (["--plot", ""], "argument --plot: expected a path, got an empty one"),
    (["--plot", "curves.png", "--grad-norms", "./curves.png"], "--plot and --grad-norms name the same file"),
    (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    (["--weight-decay", "1.5"], "argument --weight-decay: must be >= 0 and < 1, got 1.5"),
    (["--aux-weight", "-1"], "argument --aux-weight: must be >= 0"),
    (["--image-size", "0"], "argument --image-size: must be >= 1"),
    (["--image-size", "100000"], "argument --image-size: must be >= 1 and <= 2048"),
    (["--crop", "-1"], "argument --crop: must be >= 0"),
    (["--seed", "-3"], "argument --seed: must be >= 0"),
    (["--variant", "huge"], "argument --variant: invalid choice: 'huge'"),
])
def test_bad_values_are_refused_in_one_line(npz, capsys, flags, message):
    code, out, err = cli(TRAIN + ["--data", npz] + flags, capsys)
    assert_one_line_error(code, err)
    assert message in err
    assert "model:" not in out


def test_predict_top_zero_and_missing_image(tmp_path, capsys):
    code, _, err = cli(["predict", "--checkpoint", str(tmp_path), "x.png", "--top", "0"], capsys)
    assert_one_line_error(code, err, "predict")
    assert "argument --top: must be >= 1, got 0" in err
    code, _, err = cli(["predict", "--checkpoint", str(tmp_path), str(tmp_path / "missing.png")], capsys)
    assert_one_line_error(code, err, "predict")
    assert "missing.png: no such file" in err


def test_control_characters_in_a_bad_value_are_escaped(capsys):
    code, _, err = cli(["train", "--lr", "1\x1b[2J\n"], capsys)
    assert_one_line_error(code, err)
    assert "\x1b" not in err and "\\x1b[2J" in err


@pytest.mark.parametrize("flag", ["--checkpoint", "--plot", "--grad-norms"])
def test_output_paths_are_checked_before_training(tmp_path, npz, capsys, flag):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    target = str(a_file) if flag == "--checkpoint" else str(tmp_path / "no" / "such" / "curves.png")
    code, out, err = cli(TRAIN + ["--data", npz, flag, target], capsys)
    assert_one_line_error(code, err)
    assert ("is a file, not a folder" if flag == "--checkpoint" else "does not exist") in err
    assert "data:" not in out and "model:" not in out


def test_missing_and_bad_data(tmp_path, capsys):
    code, _, err = cli(TRAIN + ["--data", str(tmp_path / "nothing.npz")], capsys)
    assert_one_line_error(code, err)
    assert "no such file or folder" in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    code, _, err = cli(TRAIN + ["--data", str(bad)], capsys)
    assert_one_line_error(code, err)
    assert str(bad) in err


def test_outlier_label_is_refused_before_training(tmp_path, capsys):
    labels = np.arange(24) % 4
    labels[5] = 255
    path = make_npz(tmp_path / "outlier.npz", labels=labels, class_names=None)
    code, out, err = cli(TRAIN + ["--data", path], capsys)
    assert_one_line_error(code, err)
    assert "255" in err and "model:" not in out


def test_input_too_small_for_the_variant(tmp_path, npz, capsys):
    code, out, err = cli(TRAIN + ["--data", npz, "--variant", "paper"], capsys)
    assert_one_line_error(code, err)
    assert "16x16x1 do not fit the 'paper' GoogLeNet" in err
    code, _, err = cli(["summary", "--input-size", "8"], capsys)
    assert_one_line_error(code, err, "summary")
    assert "--input-size 8 is too small" in err


# ------------------------------------------------------------------------------------------ checkpoints
def test_a_checkpoint_is_never_replaced_silently(tmp_path, npz, capsys):
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", npz, "--checkpoint", ckpt], capsys)[0] == 0
    before = folder_digest(ckpt)
    code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", ckpt], capsys)
    assert_one_line_error(code, err)
    assert "already holds a checkpoint (epoch 1" in err and "--resume" in err and "--overwrite" in err
    assert folder_digest(ckpt) == before
    code, _, err = cli(TRAIN + ["--data", npz, "--checkpoint", ckpt, "--resume", "--overwrite"], capsys)
    assert_one_line_error(code, err)
    code, out, _ = cli(TRAIN + ["--data", npz, "--checkpoint", ckpt, "--overwrite", "--seed", "5"], capsys)
    assert code == 0 and folder_digest(ckpt) != before


def test_resume_on_files_that_are_no_checkpoint_touches_nothing(tmp_path, npz, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights.npz").write_bytes(b"my precious weights from elsewhere")
    before = folder_digest(ckpt)
    for extra in (["--resume"], []):
        code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)] + extra, capsys)
        assert_one_line_error(code, err)
        assert "no readable checkpoint" in err and "model:" not in out
        assert folder_digest(ckpt) == before


def test_resume_refuses_other_settings_and_reports_new_epochs(tmp_path, npz, capsys):
    ckpt = str(tmp_path / "ckpt")
    # a step schedule: a run with the default cosine schedule cannot be extended (its learning rate ends at 0)
    assert cli(TRAIN + ["--data", npz, "--checkpoint", ckpt, "--lr", "0.01", "--schedule", "step"], capsys)[0] == 0
    code, _, err = cli(["train", "--checkpoint", ckpt, "--resume", "--lr", "0.02", "--batch-size", "8",
                        "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert "--lr 0.02 (checkpoint: 0.01)" in err and "--batch-size 8 (checkpoint: 6)" in err
    # the same flags, or none at all, continue the run; --epochs may grow
    code, out, err = cli(["train", "--checkpoint", ckpt, "--resume", "--epochs", "2", "--quiet",
                          "--kernels", "numpy"], capsys)
    assert code == 0, err
    assert "resumed from" in out and "note: --epochs 2 (the first run asked for 1)" in out


def test_resume_on_changed_data_is_refused(tmp_path, capsys):
    path = make_npz(tmp_path / "d.npz")
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", path, "--checkpoint", ckpt], capsys)[0] == 0
    make_npz(tmp_path / "d.npz", n=28)
    code, _, err = cli(["train", "--checkpoint", ckpt, "--resume", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert "is not the data the checkpoint was trained on" in err


def test_evaluate_on_a_folder_without_a_checkpoint(tmp_path, capsys):
    code, _, err = cli(["evaluate", "--checkpoint", str(tmp_path / "none")], capsys)
    assert_one_line_error(code, err, "evaluate")
    assert "no such folder" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.json").write_text("{not json")
    code, _, err = cli(["evaluate", "--checkpoint", str(tmp_path / "junk")], capsys)
    assert_one_line_error(code, err, "evaluate")



def test_evaluate_on_other_data_needs_the_same_classes(tmp_path, npz, capsys):
    """--data of the same image size and classes evaluates; other class names (label k would be scored as the
    model's class k) are refused in one line."""
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", npz, "--checkpoint", ckpt], capsys)[0] == 0
    same = make_npz(tmp_path / "same.npz", n=16)
    code, out, err = cli(["evaluate", "--checkpoint", ckpt, "--data", same], capsys)
    assert code == 0, err
    assert "test accuracy: " in out
    other = make_npz(tmp_path / "other.npz", n=16, class_names=("a", "b", "c", "d"))
    code, _, err = cli(["evaluate", "--checkpoint", ckpt, "--data", other], capsys)
    assert_one_line_error(code, err, "evaluate")
    assert "its classes ['a', 'b', 'c', 'd'] are not the model's ['nw', 'ne', 'sw', 'se']" in err

# ------------------------------------------------------------------------------------------ divergence
def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, npz, capsys, monkeypatch):
    from tinynet import checkpoint, optim

    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", npz, "--checkpoint", ckpt, "--optimizer", "sgd", "--schedule", "constant",
                        "--lr", "0.01"], capsys)[0] == 0
    good = folder_digest(ckpt)
    # epoch 2 with a learning rate that blows the weights up: the schedule is the checkpoint's, so make it huge
    monkeypatch.setattr(optim.Constant, "__call__", lambda self, epoch: 1e30)
    code, out, err = cli(["train", "--checkpoint", ckpt, "--resume", "--epochs", "3", "--quiet"], capsys)
    assert_one_line_error(code, err, expected=1)
    assert re.search(r"training diverged at epoch 2, step \d+: non-finite", err), err
    assert "layer '" in err and f"the last good checkpoint in {ckpt} is kept" in err
    assert "test accuracy" not in out
    assert folder_digest(ckpt) == good and checkpoint.read_state(ckpt)["epoch"] == 1


def test_lr_1000_does_not_train_on_nan(tmp_path, npz, capsys):
    code, out, err = cli(TRAIN + ["--data", npz, "--epochs", "3", "--lr", "1000", "--optimizer", "sgd"], capsys)
    assert_one_line_error(code, err, expected=1)
    assert "training diverged at epoch 1" in err and "test accuracy" not in out



def test_weights_that_give_nan_are_no_result(tmp_path, npz, capsys):
    """One step at lr 1e30 leaves finite weights near 1e30: the epoch ends (finite), the checkpoint is written, but
    the outputs overflow. Neither train's test figures, nor evaluate, nor predict print NaN as a result: each ends
    in one line and exit code 1."""
    from PIL import Image

    ckpt = str(tmp_path / "ckpt")
    code, out, err = cli(TRAIN + ["--data", npz, "--batch-size", "64", "--optimizer", "sgd", "--schedule",
                                  "constant", "--lr", "1e30", "--checkpoint", ckpt], capsys)
    assert_one_line_error(code, err, expected=1)
    assert "test loss is nan: its weights give NaN or infinite outputs" in err and "test accuracy" not in out
    code, out, err = cli(["evaluate", "--checkpoint", ckpt], capsys)
    assert_one_line_error(code, err, "evaluate", expected=1)
    assert re.search(r"outputs are NaN or infinite for \d+ of \d+ images \(its largest weight is .*e\+", err), err
    assert "test accuracy" not in out
    img = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(img)
    code, out, err = cli(["predict", "--checkpoint", ckpt, str(img)], capsys)
    assert_one_line_error(code, err, "predict", expected=1)
    assert "outputs are NaN or infinite for 1 of 1 images" in err and out == ""


def test_a_stop_before_the_first_save_names_no_checkpoint(tmp_path, npz, capsys):
    """Divergence in the first epoch: there is no checkpoint yet, and the message does not claim one is kept."""
    ckpt = tmp_path / "ckpt"
    code, _, err = cli(TRAIN + ["--data", npz, "--lr", "1000", "--optimizer", "sgd", "--checkpoint", str(ckpt)],
                       capsys)
    assert_one_line_error(code, err, expected=1)
    assert "training diverged at epoch 1" in err and "is kept" not in err
    assert not (ckpt / "checkpoint.json").exists()


def test_data_files_without_a_manifest_are_not_removed_unasked(tmp_path, npz, capsys):
    """A checkpoint folder that lost its checkpoint.json (or a first save killed before its commit): a new run
    refuses to write there without --overwrite (it used to call the folder empty and delete the weights), evaluate
    says what is there; --resume starts from scratch, as after a first save that was killed."""
    ckpt = tmp_path / "ckpt"
    assert cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)[0] == 0
    (ckpt / "checkpoint.json").unlink()
    data_files = sorted(os.listdir(ckpt))
    code, _, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)
    assert_one_line_error(code, err)
    assert "holds checkpoint data files but no checkpoint.json" in err and "--overwrite" in err
    assert sorted(os.listdir(ckpt)) == data_files
    code, _, err = cli(["evaluate", "--checkpoint", str(ckpt)], capsys)
    assert_one_line_error(code, err, "evaluate")
    assert "no checkpoint.json, only data files (optimizer-000001-" in err
    code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--overwrite"], capsys)
    assert code == 0, err
    assert (ckpt / "checkpoint.json").exists()

# ------------------------------------------------------------------------------------------ data text
def test_class_names_and_paths_are_printed_escaped(tmp_path, capsys):
    from PIL import Image

    path = make_npz(tmp_path / "names.npz", class_names=["nw\x1b[2J", "ne\r", "sw\u202e", "se"])
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", path, "--checkpoint", ckpt], capsys)[0] == 0
    img = tmp_path / "a\x1bb.png"
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(img)
    code, out, err = cli(["predict", "--checkpoint", ckpt, str(img), "--top", "4"], capsys)
    assert code == 0, err
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "nw\\x1b[2J" in out and "ne\\x0d" in out and "sw\\u202e" in out and "a\\x1bb.png" in out


def test_predict_refuses_a_non_image(tmp_path, npz, capsys):
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", npz, "--checkpoint", ckpt], capsys)[0] == 0
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    code, _, err = cli(["predict", "--checkpoint", ckpt, str(fake)], capsys)
    assert_one_line_error(code, err, "predict")
    assert "notes.png" in err


def test_escape():
    assert escape("plain é ü 中") == "plain é ü 中"
    assert escape("a\nb\tc\x00\x7f\u2028\U000e0001") == "a\\x0ab\\x09c\\x00\\x7f\\u2028\\U000e0001"


# ------------------------------------------------------------------------------------------ a real terminal
def test_no_traceback_in_a_real_process():
    result = subprocess.run([sys.executable, "-m", "inception", "train", "--batch-size", "-4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "inception train: error: argument --batch-size: must be >= 1 and <= 65536, got -4\n"


@pytest.mark.parametrize("edit, command, message", [
    (lambda c: c.update(variant="evil"), "evaluate", "variant 'evil' is not one of"),
    (lambda c: c.update(input_shape=[0, 16, 1]), "evaluate", "input_shape [0, 16, 1]"),
    (lambda c: c.update(class_names=["a"]), "evaluate", "class_names must be 4 distinct, non-empty strings"),
    (lambda c: c["normalizer"].update(std=[0.0]), "evaluate", "positive standard deviations"),
    (lambda c: c.update(normalizer="x"), "evaluate", "normalizer must hold"),
    (lambda c: c["run"].update(variant="evil"), "train", "variant 'evil': not one of"),
    (lambda c: c["run"].update(lr="fast"), "train", "lr 'fast': not a number"),
    (lambda c: c["run"].update(batch_size=-3), "train", "batch_size -3: must be >= 1"),
    (lambda c: c.update(variant="paper"), "evaluate", "the 'paper' GoogLeNet cannot take (16, 16, 1) images"),
    (lambda c: (c.update(variant="paper"), c["run"].update(variant="paper")), "train",
     "do not fit the 'paper' GoogLeNet"),
])
def test_a_hand_edited_checkpoint_description_is_refused_in_one_line(tmp_path, npz, capsys, edit, command, message):
    import json

    ckpt = tmp_path / "ckpt"
    assert cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)[0] == 0
    state = json.loads((ckpt / "checkpoint.json").read_text())
    edit(state["config"])
    (ckpt / "checkpoint.json").write_text(json.dumps(state))
    argv = [command, "--checkpoint", str(ckpt)] + (["--resume"] if command == "train" else [])
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, command)
    assert message in err, err
    assert "--image-size" not in err  # advice that --resume would refuse


def test_fit_refuses_data_that_does_not_fit_the_model_before_training():
    from tinynet import data, optim
    from tinynet.layers import Dense, Flatten, Input
    from tinynet.training import Trainer

    x = Input((4, 4, 1))
    model = tinynet.Model(x, Dense(3, activation="softmax")(Flatten()(x)))
    trainer = Trainer(model, optim.SGD(0.1), verbose=False)
    before = model.get_weights()
    for ds, message in [(data.Dataset(np.zeros((5, 4, 5, 1)), np.zeros(5, int)), "images have shape (4, 5, 1)"),
                        (data.Dataset(np.zeros((5, 4, 4, 1)), np.array([0, 1, 2, 3, 0])), "range 0..3")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            trainer.fit(ds, epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())) and trainer.epoch == 0


def test_trainer_refuses_a_checkpoint_dir_that_is_a_file_before_training(tmp_path):
    from helpers import tiny_model, toy_data

    from tinynet import checkpoint, optim
    from tinynet.training import Trainer

    target = tmp_path / "file"
    target.write_text("not a folder")
    trainer = Trainer(tiny_model(), optim.SGD(0.1), verbose=False)
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a folder"):
        trainer.fit(toy_data(), epochs=1, checkpoint_dir=str(target))
    assert trainer.epoch == 0 and trainer.history == {}


def test_a_checkpoint_that_cannot_be_saved_ends_in_one_line(tmp_path, npz, capsys, monkeypatch):
    """The checkpoint folder replaced by a file during the run: the save fails with one line and exit 1 (it was a
    traceback: CheckpointError is no OSError)."""
    from tinynet import checkpoint

    ckpt = tmp_path / "ckpt"

    def replaced(directory, trainer, config=None):
        raise checkpoint.CheckpointError(f"{directory}: is a file, not a checkpoint folder; refusing to save there")

    monkeypatch.setattr(checkpoint, "save", replaced)
    code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)
    assert_one_line_error(code, err, expected=1)
    assert "is a file, not a checkpoint folder" in err and "test accuracy" not in out


def test_plot_summary_and_check_keras_refuse_mistakes_in_one_line(tmp_path, capsys):
    """A dpi too small to draw text (a FreeType traceback before), a file used as a folder (called a missing
    folder), one class, and an input too small for check-keras (found after importing Keras, 15-28 s, before)."""
    (tmp_path / "afile").write_text("x")
    for argv, command, message in [
        (["plot", "--variant", "small", "--dpi", "3", "--to-file", str(tmp_path / "m.png")], "plot",
         "argument --dpi: must be >= 10 and <= 600, got 3"),
        (["plot", "--variant", "small", "--to-file", str(tmp_path / "afile" / "m.png")], "plot",
         f"{tmp_path / 'afile'} is a file, not a folder"),
        (["summary", "--variant", "small", "--num-classes", "1"], "summary", "argument --num-classes: must be >= 2"),
        (["check-keras", "--input-size", "32"], "check-keras", "--input-size 32 is too small for the 'paper'"),
    ]:
        code, _, err = cli(argv, capsys)
        assert_one_line_error(code, err, command)
        assert message in err, err
    assert sorted(os.listdir(tmp_path)) == ["afile"]


# ------------------------------------------------------------------------------------------ a manifest, every field
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data path, checkpoint folder) of one epoch on the toy data; a test that edits it works on a copy."""
    return one_epoch_checkpoint(tmp_path_factory.mktemp("trained"))


def one_epoch_checkpoint(root):
    """(data path, checkpoint folder): toy data written in ``root`` and one epoch of ``TRAIN`` on it, saved there."""
    path = make_npz(root / "toy.npz")
    assert main(TRAIN + ["--data", path, "--checkpoint", str(root / "ckpt")]) == 0
    return path, root / "ckpt"


def edited_copy(trained, tmp_path, edit):
    """A copy of the trained checkpoint whose checkpoint.json went through ``edit(state)`` (by hand, as it were:
    the data files and their checksums are untouched)."""
    import json
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained[1], ckpt)
    state = json.loads((ckpt / "checkpoint.json").read_text())
    edit(state)
    (ckpt / "checkpoint.json").write_text(json.dumps(state))
    return ckpt


def _set(path, value):
    """An edit of the manifest: the field at ``path`` ('config.augment.crop') set to ``value`` (None: removed)."""
    def edit(state):
        *parents, key = path.split(".")
        for name in parents:
            state = state[name]
        if value is None:
            del state[key]
        else:
            state[key] = value
    return edit


@pytest.mark.parametrize("edit, message, early", [
    (_set("config.augment", None), "augment None is not an object holding exactly 'crop' and 'flip'", True),
    (_set("config.augment.crop", -3), "augment: Augment: crop must be an integer >= 0, got -3", True),
    (_set("config.augment.evil", 1), "is not an object holding exactly 'crop' and 'flip'", True),
    (_set("config.augment.flip", True), "augment {'crop': 1, 'flip': True} where its run settings give {'crop': 1, "
                                        "'flip': False}", True),
    (_set("config.normalizer.evil", 1), "normalizer must hold exactly the lists 'mean' and 'std'", True),
    (_set("config.optimizer", "sgd"), "optimizer 'sgd' where its run settings give 'adam'", True),
    (_set("config.data_fingerprint", None), "data_fingerprint None is not a SHA-256", True),
    (_set("config.variant", ["small"]), "variant ['small'] is not one of", True),
    (_set("config.image_size", "16"), "image_size '16' is neither null nor", True),
    (lambda s: s.update(schedule=None), "the schedule None, not a 'cosine' schedule", True),
    (_set("schedule.epochs", "abc"), "a cosine schedule over 'abc' epochs", True),
    (_set("schedule.lr", 5.0), "schedule.lr 5.0 where its run's settings give 0.002", True),
    (_set("batch_size", 10**12), "batch_size 1000000000000 where its run's settings give 6", True),
    (_set("optimizer.config.learning_rate", 1e300), "an optimizer learning rate of 1e+300", True),
    (_set("optimizer.config.beta_1", 0.5), "optimizer.config.beta_1 0.5 where its run's settings give 0.9", True),
    (_set("epoch", 10**400), "field 'epoch' must be a non-negative integer (at most 2**63 - 1), got 10000000000", True),
    (_set("epoch", 10**12), "records epoch 1000000000000, not a count of 0..100000 epochs", True),
    (lambda s: s["history"]["loss"].append(1.0), "a history with more entries than its 1 epochs (", True),
    (_set("optimizer.iterations", 10**15), "records 1000000000000000 optimizer steps, more than its 1 epoch(s) of 4 "
                                           "steps take", False),
    (_set("optimizer.iterations", 10**30), "'optimizer.iterations' must be a non-negative integer (at most 2**63 - 1)",
     True),
    (_set("grad_norms", {"step": [99], "with_aux": {}, "main_only": {}}), "gradient norms at step 99, after its 4",
     False),
    (lambda s: s["config"]["class_names"].reverse(), "does not fit the data it was trained on: class_names", False),
    (lambda s: s["config"].update(input_shape=[16, 16, 3], normalizer={"mean": [0.5] * 3, "std": [0.2] * 3}),
     "input_shape [16, 16, 3] (the data's: [16, 16, 1])", False),
    (_set("loss_weights", [1.0, 1e308, 1e308]), "loss weights [1.0, 1e+308, 1e+308] where its run's settings give "
                                                "[0.3, 0.3, 1.0]", None),
])
def test_resume_checks_every_field_of_the_manifest(trained, tmp_path, capsys, monkeypatch, edit, message, early):
    """train --resume rebuilds the whole run from checkpoint.json: a field missing, of another type, with keys or
    values its object refuses, that disagrees with the run settings the checkpoint records, or a counter beyond
    the epochs and steps done, ends in one line and exit 2 (it was a KeyError, ValueError, TypeError or
    AttributeError traceback, or a run that trained on settings other than the ones it reports). ``early``: found
    before the data is loaded (True), before the model is built (False), or before the checkpoint is restored."""
    from inception import cli_train

    loaded = []
    load = cli_train.load_data
    monkeypatch.setattr(cli_train, "load_data", lambda *args, **kwargs: loaded.append(1) or load(*args, **kwargs))
    ckpt = edited_copy(trained, tmp_path, edit)
    before = folder_digest(ckpt)
    code, out, err = cli(["train", "--checkpoint", str(ckpt), "--resume", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert message in err, err
    assert "resumed from" not in out and bool(loaded) is (early is not True)
    assert ("model:" in out) is (early is None)
    assert folder_digest(ckpt) == before


@pytest.mark.parametrize("edit, message", [
    (_set("config.normalizer.evil", 1), "normalizer must hold exactly the lists 'mean' and 'std'"),
    (_set("config.variant", ["small"]), "variant ['small'] is not one of"),
    (_set("config.image_size", "16"), "image_size '16' is neither null nor the height and width"),
    (_set("config.class_names", ["a", "a", "b", "c"]), "class_names must be 4 distinct, non-empty strings"),
    (_set("config.input_shape", [16, 16, 5000]), "input_shape [16, 16, 5000]: the channels must be 1..4096"),
    (_set("config.num_classes", 10**9), "num_classes 1000000000 is not 2..1048576"),
    (_set("config.data", None), "data None is not a path or 'digits'"),
])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_check_every_field_they_use(trained, tmp_path, capsys, edit, message, command):
    from PIL import Image

    ckpt = edited_copy(trained, tmp_path, edit)
    img = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(img)
    code, out, err = cli([command, "--checkpoint", str(ckpt)] + ([str(img)] if command == "predict" else []),
                         capsys)
    assert_one_line_error(code, err, command)
    assert message in err, err
    assert out == ""


def test_resume_epochs_are_a_bounded_total_at_least_the_checkpoints(trained, tmp_path, capsys):
    """--epochs is the total: fewer than the checkpoint's epochs is refused in one line; as many trains nothing and
    says so; a run extended by an earlier --resume --epochs resumes without --epochs as a finished run."""
    ckpt = tmp_path / "ckpt"  # a step schedule: a cosine run cannot be extended (its learning rate ends at 0)
    assert cli(TRAIN + ["--data", trained[0], "--checkpoint", str(ckpt), "--schedule", "step"], capsys)[0] == 0
    assert cli(["train", "--checkpoint", str(ckpt), "--resume", "--epochs", "2", "--quiet"], capsys)[0] == 0
    code, out, err = cli(["train", "--checkpoint", str(ckpt), "--resume", "--epochs", "1", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert "--epochs 1: the checkpoint in" in err and "is already at epoch 2" in err and "data:" not in out
    for extra in (["--epochs", "2"], []):
        code, out, err = cli(["train", "--checkpoint", str(ckpt), "--resume", "--quiet"] + extra, capsys)
        assert code == 0, err
        assert "note: nothing left to train: the run is at epoch 2 of 2" in out and "test accuracy: " in out
        assert ("note: --epochs 2 (the first run asked for 1)" in out) is bool(extra)


def test_a_read_only_checkpoint_folder_is_refused_before_any_work_in_every_mode(trained, tmp_path, capsys,
                                                                                 monkeypatch):
    """--resume and --overwrite write into the folder as a new run does: a folder where no file can be created is
    refused at once with exit 2 (--resume loaded the data, built the model and restored the checkpoint, then
    failed in Trainer.fit with exit 1). The probe is tinynet.fileio.check_writable_folder's, made to fail there
    (a chmod does not stop root)."""
    import errno

    from tinynet import fileio

    ckpt = edited_copy(trained, tmp_path, lambda s: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = fileio.check_writable_folder

    def read_only(folder, make_folders=False):
        if os.path.abspath(folder).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, f"no file can be created in the folder {folder!r} (Read-only file system)")
        return probe(folder, make_folders)

    monkeypatch.setattr(fileio, "check_writable_folder", read_only)
    before = folder_digest(ckpt)
    for folder, flags in [(ckpt, ["--resume", "--epochs", "2"]), (ckpt, ["--overwrite"]), (empty, ["--resume"]),
                          (empty, [])]:
        code, out, err = cli(TRAIN[:-2] + ["--data", trained[0], "--checkpoint", str(folder)] + flags, capsys)
        assert_one_line_error(code, err)
        assert f"--checkpoint {folder}: cannot write a checkpoint there" in err and "Read-only" in err
        assert "data:" not in out and "starting from scratch" not in out
    assert folder_digest(ckpt) == before


# ------------------------------------------------------------------------------------------ what train accepts
def test_a_run_on_four_channel_images_is_usable_afterwards(tmp_path, capsys):
    """train accepts an .npz of 4-channel images (legitimate data for the Python API): evaluate and --resume accept
    its checkpoint (they refused it: 'input_shape [16, 16, 4] is not [height, width, 1 or 3]'); predict, which
    reads image files as grey or RGB, refuses it in one line before building the model."""
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "rgba.npz"
    np.savez(path, x=(rng.random((24, 16, 16, 4)) * 255).astype(np.uint8), y=np.arange(24) % 4)
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", str(path), "--checkpoint", ckpt, "--schedule", "step"], capsys)[0] == 0
    for argv in (["evaluate", "--checkpoint", ckpt], ["evaluate", "--checkpoint", ckpt, "--data", str(path)],
                 ["train", "--checkpoint", ckpt, "--resume", "--epochs", "2", "--quiet", "--kernels", "numpy"]):
        code, out, err = cli(argv, capsys)
        assert code == 0, err
        assert "test accuracy: " in out
    img = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8)).save(img)
    code, out, err = cli(["predict", "--checkpoint", ckpt, str(img)], capsys)
    assert_one_line_error(code, err, "predict")
    assert "the model takes images of 4 channels" in err and "evaluate --data" in err and out == ""


@pytest.mark.parametrize("shape, message", [
    ((4, 2100, 4), "images of 2100x4x1: height and width must be 1..2048 (give --image-size)"),
    ((4, 2, 2, 5000), "images of 2x2x5000: the channels must be 1..4096"),
])
def test_train_refuses_images_no_checkpoint_could_describe(tmp_path, capsys, shape, message):
    """The other direction of the same rule: what the checkpoint readers refuse, train refuses before any work."""
    path = tmp_path / "odd.npz"
    np.savez(path, x=np.zeros(shape, np.uint8), y=np.arange(shape[0]) % 2)
    code, out, err = cli(TRAIN + ["--data", str(path), "--checkpoint", str(tmp_path / "ckpt")], capsys)
    assert_one_line_error(code, err)
    assert message in err, err
    assert "model:" not in out and not (tmp_path / "ckpt").exists()


def test_a_crop_as_large_as_the_images_is_refused_before_training(npz, capsys):
    code, out, err = cli(TRAIN + ["--data", npz, "--crop", "16"], capsys)
    assert_one_line_error(code, err)
    assert "--crop 16: too large for images of 16x16" in err and "model:" not in out


# ------------------------------------------------------------------------------------------ where a bad label is
def _idx(array):
    """The bytes of an IDX file (unsigned bytes) holding ``array``."""
    import struct

    return bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def test_a_stray_test_label_is_reported_in_the_test_file(tmp_path, capsys):
    """A label 200 in MNIST's t10k labels was reported as 'train: 199 of the 201 classes have no training images
    (classes 2..200)', never naming the test file; likewise y_test of an .npz."""
    from tinynet import data

    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.zeros((10, 8, 8), np.uint8)
    for name, array in [("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", np.arange(10) % 2),
                        ("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", np.array([0] * 9 + [200]))]:
        (folder / name).write_bytes(_idx(np.asarray(array, np.uint8)))
    code, out, err = cli(TRAIN + ["--data", str(folder)], capsys)
    assert_one_line_error(code, err)
    assert (f"--data {folder}: test (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte): label(s) 200 (1 image) that "
            f"no training image has (the training labels run 0..1)") in err, err
    path = tmp_path / "split.npz"
    np.savez(path, x_train=np.zeros((8, 8, 8), np.uint8), y_train=np.arange(8) % 4,
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([0, 7]))
    code, out, err = cli(TRAIN + ["--data", str(path)], capsys)
    assert_one_line_error(code, err)
    assert "test (x_test, y_test): label(s) 7 (1 image) that no training image has (the training labels run 0..3)" \
        in err, err
    # the data module alone: the split holding the label is named; a gap in the training labels stays train's
    train = data.Dataset(np.zeros((4, 2, 2)), np.arange(4) % 2, ["0", "1", "2", "3"])
    with pytest.raises(ValueError, match=r"^test: label\(s\) 3 \(1 image\) that no training image has"):
        data.check_for_training(train, data.Dataset(np.zeros((2, 2, 2)), [0, 3], ["0", "1", "2", "3"]))
    gap = data.Dataset(np.zeros((4, 2, 2)), [0, 2, 0, 2], ["0", "1", "2", "3"])
    with pytest.raises(ValueError, match=r"^train: 2 of the 4 classes have no training images \(classes 1, 3\)"):
        data.check_for_training(gap, data.Dataset(np.zeros((2, 2, 2)), [0, 3], ["0", "1", "2", "3"]))
