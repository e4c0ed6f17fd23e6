"""``python -m inception train | evaluate | predict`` on a tiny .npz data set (the small GoogLeNet at 16×16)."""
import re

import numpy as np
import pytest
from PIL import Image

import tinynet
from inception import cli_train


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


@pytest.fixture
def npz_data(tmp_path):
    """24 images of 16×16, 4 classes: a bright quadrant per class."""
    rng = np.random.default_rng(0)
    y = np.arange(24) % 4
    x = (rng.random((24, 16, 16)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 8 * r:8 * r + 8, 8 * col:8 * col + 8] += 180
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["nw", "ne", "sw", "se"]))
    return str(path), x


def run(argv, capsys):
    assert cli_train.main(argv) == 0
    return capsys.readouterr().out


TRAIN = ["train", "--batch-size", "6", "--quiet", "--kernels", "numpy", "--crop", "1"]


def test_train_evaluate_predict(tmp_path, npz_data, capsys):
    path, x = npz_data
    ckpt = str(tmp_path / "ckpt")
    out = run(TRAIN + ["--data", path, "--epochs", "1", "--checkpoint", ckpt, "--plot", str(tmp_path / "c.png"),
                       "--grad-norms", str(tmp_path / "g.png"), "--optimizer", "sgd", "--schedule", "step",
                       "--lr", "0.01"], capsys)
    lines = out.strip().splitlines()
    assert re.fullmatch(r"test accuracy: \d\.\d{4}", lines[-1])
    assert lines[-2].startswith("time taken: ")
    assert "stem" in out and "with aux" in out  # the gradient-norm table
    assert (tmp_path / "c.png").exists() and (tmp_path / "g.png").exists()
    accuracy = lines[-1]

    out = run(["evaluate", "--checkpoint", ckpt], capsys)
    assert out.strip().splitlines()[-1] == accuracy  # same model, same test split

    img = tmp_path / "img.png"
    Image.fromarray(x[1]).resize((40, 40)).save(img)
    out = run(["predict", "--checkpoint", ckpt, str(img), "--top", "2"], capsys)
    assert re.match(rf"{re.escape(str(img))}: (nw|ne|sw|se) \(0\.\d{{3}}\), (nw|ne|sw|se) \(", out)


def test_every_training_image_trains_unless_a_validation_split_is_asked_for(npz_data, capsys):
    """The default (as Keras' fit) holds nothing out; --validation-split holds out a stratified part and validates
    on it after every epoch."""
    path, _ = npz_data
    out = run(TRAIN + ["--data", path, "--epochs", "1"], capsys)
    assert "data: " + path + ": 20 training, 4 test images" in out and "validation" not in out
    assert cli_train.DEFAULTS["epochs"] == 15  # the main job's recipe (README: accuracy and time)
    out = run([a for a in TRAIN if a != "--quiet"] + ["--data", path, "--epochs", "1", "--validation-split", "0.25"],
              capsys)
    assert "data: " + path + ": 16 training, 4 validation, 4 test images" in out
    assert "val_acc" in out


def test_resume_matches_straight_run(tmp_path, npz_data, capsys, monkeypatch):
    """A run killed right after saving epoch 1 and resumed ends on the straight run's weights, bit for bit."""
    from tinynet import checkpoint

    path, _ = npz_data
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    common = TRAIN + ["--data", path, "--seed", "3", "--epochs", "2"]  # default schedule: cosine over 2 epochs
    run(common + ["--checkpoint", straight], capsys)

    save = checkpoint.save

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    assert cli_train.main(common + ["--checkpoint", split]) == 130  # Ctrl-C: one line, the checkpoint kept
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(checkpoint, "save", save)
    out = run(common + ["--checkpoint", split, "--resume"], capsys)
    assert "resumed from" in out and "after epoch 1" in out
    models = [cli_train._restore(folder)[0] for folder in (straight, split)]
    for a, b in zip(*(m.get_weights() for m in models)):
        assert np.array_equal(a, b)


def test_resume_needs_checkpoint(npz_data, capsys):
    assert cli_train.main(["train", "--data", npz_data[0], "--resume"]) == 2
    assert capsys.readouterr().err == "inception train: error: --resume needs --checkpoint DIR\n"


def test_registered_in_dispatcher():
    import argparse

    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train"])
    assert args.data is None and args.variant is None and args.aux_weight is None  # defaults: RUN_DEFAULTS
    assert cli_train.RUN_DEFAULTS["data"] == "digits" and cli_train.RUN_DEFAULTS["aux_weight"] == 0.3
    assert args.func is cli_train.train_command


def test_device_gpu_without_a_gpu_fails_at_once_with_the_reason(npz_data, capsys):
    if tinynet.backend.cupy_available():
        pytest.skip("a CUDA device is present")
    path, _ = npz_data
    assert cli_train.main(TRAIN + ["--data", path, "--epochs", "1", "--device", "gpu"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("inception train: error: --device gpu: tinynet:") and "CuPy" in captured.err
    assert "model:" not in captured.out  # nothing was built


@pytest.mark.gpu
def test_train_on_the_gpu(tmp_path, npz_data, capsys):
    path, _ = npz_data
    common = TRAIN + ["--data", path, "--epochs", "2"]
    cpu = run(common + ["--checkpoint", str(tmp_path / "cpu")], capsys)
    gpu = run(common + ["--checkpoint", str(tmp_path / "gpu"), "--device", "gpu"], capsys)
    loss = [float(re.search(r"test loss: ([0-9.]+)", out).group(1)) for out in (cpu, gpu)]
    assert loss[1] == pytest.approx(loss[0], rel=1e-3, abs=1e-3)   # float32 on two devices, same run
    assert "test accuracy:" in gpu
