"""The fifth review of the command lines: a second run on a checkpoint folder, memory, changed data on evaluate,
a cosine run extended, output paths that could only fail at the end, --grad-norms without aux heads, a bad
NUMBA_NUM_THREADS, the summary away from 224/1000, warnings, check-keras's backend, a hand-edited normalizer.

Every case refuses in one line before any work (exit 2), or ends in one line (exit 1), as the project's rule says.
"""
import json
import os
import shutil

import numpy as np
import pytest

import tinynet
from tests.test_cli_reliability import (TRAIN, assert_one_line_error, cli, folder_digest, make_npz,
                                        one_epoch_checkpoint)


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


@pytest.fixture
def npz(tmp_path):
    return make_npz(tmp_path / "toy.npz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data path, checkpoint folder) of one epoch (default cosine schedule) on the toy data; copy before editing."""
    return one_epoch_checkpoint(tmp_path_factory.mktemp("trained5"))


# ------------------------------------------------------------------------------------------ 1: one run per folder
def test_a_second_run_on_a_locked_checkpoint_folder_is_refused_before_any_work(tmp_path, npz, capsys):
    from tinynet import fileio

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with fileio.lock_folder(ckpt):  # as another run holds it
        for flags in ([], ["--overwrite"], ["--resume"]):
            code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)] + flags, capsys)
            assert_one_line_error(code, err)
            assert f"--checkpoint {ckpt}: another run is using this folder" in err
            assert "data:" not in out and os.listdir(ckpt) == []
    code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)
    assert code == 0, err
    fileio.lock_folder(ckpt).release()  # released when the run ended


def test_the_lock_is_held_for_the_whole_run_and_a_new_folder_is_made_for_it(tmp_path, npz, capsys, monkeypatch):
    from tinynet import fileio
    from tinynet.training import Trainer

    ckpt = tmp_path / "new"
    seen = []
    fit = Trainer.fit

    def fit_and_probe(self, *args, **kwargs):
        with pytest.raises(BlockingIOError):
            fileio.lock_folder(ckpt)
        with pytest.raises(BlockingIOError):
            fileio.lock_folder(ckpt, shared=True)
        seen.append(True)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit_and_probe)
    code, _, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)
    assert code == 0 and seen, err
    assert "checkpoint.json" in os.listdir(ckpt)


def test_a_run_that_stops_before_its_first_save_leaves_no_folder(tmp_path, npz, capsys):
    ckpt = tmp_path / "new"
    code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt), "--crop", "16"], capsys)
    assert_one_line_error(code, err)
    assert "--crop 16" in err and not os.path.lexists(ckpt)


def test_evaluate_and_predict_read_a_folder_a_run_holds(trained, tmp_path, capsys):
    """evaluate and predict take no lock (they only read; a checkpoint is committed by its manifest)."""
    from tinynet import fileio

    with fileio.lock_folder(trained[1]):
        code, out, err = cli(["evaluate", "--checkpoint", str(trained[1])], capsys)
    assert code == 0 and "test accuracy: " in out, err


# ------------------------------------------------------------------------------------------ 2: memory
def test_digits_too_large_for_memory_are_refused_before_they_are_made(capsys, monkeypatch):
    from tinynet import data
    from tinynet.data import _common

    with pytest.raises(tinynet.fileio.FileFormatError, match="the 1,797 images at 128x128 would need"):
        data.load_digits(128, max_bytes=10 << 20)
    monkeypatch.setattr(_common, "memory_bound", lambda: 10 << 20)
    code, out, err = cli(["train", "--image-size", "128", "--epochs", "1", "--quiet", "--kernels", "numpy"], capsys)
    assert_one_line_error(code, err)
    assert "--image-size 128: the 1,797 images at 128x128 would need" in err and "refused before resizing" in err
    assert "data:" not in out


def test_training_that_cannot_fit_in_memory_is_refused_before_the_first_step(npz, capsys, monkeypatch):
    from inception import cli_train

    monkeypatch.setattr(cli_train, "_physical_memory", lambda: 1 << 20)
    code, out, err = cli(TRAIN + ["--data", npz, "--batch-size", "64"], capsys)
    assert_one_line_error(code, err)
    assert "images of 16x16 with --batch-size 64: training needs at least" in err and "--image-size" in err
    assert "model:" in out and "test accuracy" not in out


def test_a_memory_error_ends_in_one_line(npz, capsys, monkeypatch):
    from inception import cli_train

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 28.1 GiB for an array with shape (1797, 2048, 2048, 1)")

    monkeypatch.setattr(cli_train, "load_data", no_memory)
    code, _, err = cli(TRAIN + ["--data", npz], capsys)
    assert_one_line_error(code, err, expected=1)
    assert "out of memory (Unable to allocate 28.1 GiB" in err and "--batch-size" in err


# ------------------------------------------------------------------------------------------ 3: evaluate, changed data
def test_evaluate_refuses_data_that_changed_since_training(tmp_path, capsys):
    path = make_npz(tmp_path / "d.npz")
    ckpt = str(tmp_path / "ckpt")
    assert cli(TRAIN + ["--data", path, "--checkpoint", ckpt], capsys)[0] == 0
    assert cli(["evaluate", "--checkpoint", ckpt], capsys)[0] == 0
    make_npz(tmp_path / "d.npz", n=20)
    code, out, err = cli(["evaluate", "--checkpoint", ckpt], capsys)
    assert_one_line_error(code, err, "evaluate")
    assert "is not the data the checkpoint was trained on" in err and "--data" in err and out == ""
    code, out, err = cli(["evaluate", "--checkpoint", ckpt, "--data", path], capsys)  # named: scored as it is
    assert code == 0 and "test accuracy: " in out, err


# ------------------------------------------------------------------------------------------ 4: cosine horizon
def test_extending_a_cosine_run_is_refused_before_any_work(trained, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained[1], ckpt)
    before = folder_digest(ckpt)
    code, out, err = cli(["train", "--checkpoint", str(ckpt), "--resume", "--epochs", "4", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert ("--epochs 4: this run's cosine schedule reaches a learning rate of 0 at epoch 1" in err
            and "epochs 2 to 4 would train at a learning rate of 0" in err and "--schedule step" in err), err
    assert "data:" not in out and folder_digest(ckpt) == before


# ------------------------------------------------------------------------------------------ 5: output paths
@pytest.mark.parametrize("flag", ["--plot", "--grad-norms"])
def test_output_files_that_could_only_fail_at_the_end_are_refused_first(tmp_path, npz, capsys, flag):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    long = tmp_path / ("a" * 300 + ".png")
    for path, message in ((fifo, "is a FIFO, not a regular file"), (long, "more than the 255")):
        code, out, err = cli(TRAIN + ["--data", npz, flag, str(path)], capsys)
        assert_one_line_error(code, err)
        assert err.startswith(f"inception train: error: {flag} {path}: ") and message in err, err
        assert "data:" not in out
    code, _, err = cli(["plot", "--to-file", str(fifo)], capsys)
    assert_one_line_error(code, err, "plot")
    assert "is a FIFO" in err


def test_a_checkpoint_folder_name_too_long_is_refused_first(tmp_path, npz, capsys):
    ckpt = tmp_path / ("c" * 300)
    code, out, err = cli(TRAIN + ["--data", npz, "--checkpoint", str(ckpt)], capsys)
    assert_one_line_error(code, err)
    assert "is 300 bytes, more than the 255" in err and "data:" not in out


# ------------------------------------------------------------------------------------------ 8: --grad-norms, no aux
@pytest.mark.parametrize("flags, cause", [(["--no-aux"], "--no-aux"), (["--aux-weight", "0"], "--aux-weight 0")])
def test_grad_norms_without_aux_heads_are_refused(tmp_path, npz, capsys, flags, cause):
    code, out, err = cli(TRAIN + ["--data", npz, "--grad-norms", str(tmp_path / "g.png")] + flags, capsys)
    assert_one_line_error(code, err)
    assert f"with {cause} there is none" in err and "data:" not in out
    assert not (tmp_path / "g.png").exists()


# ------------------------------------------------------------------------------------------ 9: NUMBA_NUM_THREADS
@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_bad_numba_num_threads_ends_in_one_line_before_any_work(trained, tmp_path, npz, capsys, monkeypatch,
                                                                   value):
    from PIL import Image

    import tinynet.__main__ as tinynet_main

    pytest.importorskip("numba")
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    img = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(img)
    for argv, command in ((TRAIN + ["--data", npz, "--kernels", "numba"], "train"),
                          (["predict", "--checkpoint", str(trained[1]), str(img), "--kernels", "numba"], "predict"),
                          (["evaluate", "--checkpoint", str(trained[1]), "--kernels", "numba"], "evaluate")):
        code, out, err = cli(argv, capsys)
        assert_one_line_error(code, err, command)
        assert f"NUMBA_NUM_THREADS='{value}': Numba needs 1 or more threads" in err and out == ""
    assert tinynet_main.main(["--cpu-kernels", "numba"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("python -m tinynet: error: NUMBA_NUM_THREADS=") and err.count("\n") == 1 and out == ""
    code, out, err = cli(TRAIN + ["--data", npz], capsys)  # --kernels numpy: Numba is not used, nothing to refuse
    assert code == 0, err


def test_numba_environment_problem():
    from tinynet.kernels import numba_environment_problem

    env = os.environ.get("NUMBA_NUM_THREADS")
    try:
        for value, bad in (("0", True), ("-1", True), ("1", False), ("abc", False), ("", False)):
            os.environ["NUMBA_NUM_THREADS"] = value
            assert (numba_environment_problem() is not None) is bad, value
    finally:
        if env is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = env


# ------------------------------------------------------------------------------------------ fileio helpers
def test_check_output_path_and_lock_folder(tmp_path):
    from tinynet import fileio

    fileio.check_output_path(tmp_path / "ok.png")
    with pytest.raises(OSError, match="more than the"):
        fileio.check_output_path(tmp_path / ("x" * 300))
    with pytest.raises(IsADirectoryError):
        fileio.check_output_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fileio.check_output_path(tmp_path / "missing" / "a.png")
    with pytest.raises(OSError, match="character device"):
        fileio.check_output_path("/dev/null")
    fileio.check_new_folder_names(tmp_path / "a" / "b")
    with pytest.raises(OSError, match="300 bytes"):
        fileio.check_new_folder_names(tmp_path / ("y" * 300) / "b")
    shared = fileio.lock_folder(tmp_path, shared=True)
    fileio.lock_folder(tmp_path, shared=True).release()
    with pytest.raises(BlockingIOError):
        fileio.lock_folder(tmp_path)
    shared.release()
    shared.release()  # twice: nothing
    with fileio.lock_folder(tmp_path) as lock:
        assert lock.held
    fileio.lock_folder(tmp_path).release()
    assert os.listdir(tmp_path) == []  # no lock file


def _edit(ckpt, edit):
    state = json.loads((ckpt / "checkpoint.json").read_text())
    edit(state)
    (ckpt / "checkpoint.json").write_text(json.dumps(state))


# ------------------------------------------------------------------------------------------ 6, 7: summary
@pytest.mark.parametrize("flags", [["--input-size", "100"], ["--num-classes", "100"]])
def test_the_summary_compares_with_the_paper_only_at_224_and_1000_classes(capsys, flags):
    code, out, err = cli(["summary"] + flags, capsys)
    assert code == 0, err
    assert "≠" not in out and "paper's printed sums" not in out and "2.7K" not in out
    assert "without the paper's figures (they are for a 224×224 input and 1000 classes)" in out


def test_the_summary_names_the_two_convolution_rows_apart(capsys):
    from inception.table1 import format_table1, table1_rows
    from inception.googlenet import googlenet

    text = format_table1(table1_rows(googlenet((224, 224, 3), 1000)))
    line = next(line for line in text.splitlines() if line.startswith("≠:"))
    assert "convolution 7×7/2 params, convolution 7×7/2 ops" in line


def test_the_naive_vs_reduced_columns_never_run_together():
    from inception.table1 import BlockComparison, format_naive_vs_reduced

    big = BlockComparison("3a", (1024, 1024, 192), 1_483_620, 81_109_450_752_000, 366_876, 23_070_769_152_000,
                          416, 256)
    lines = format_naive_vs_reduced([big]).splitlines()
    row, total = lines[2], next(line for line in lines if line.startswith("all"))
    assert "81,109,450,752,000" in row.split() and "23,070,769,152,000" in row.split()
    assert total.split()[1:4] == ["1,483,620", "366,876", "75%"] and "81,109,450,752,000" in total.split()
    assert len({len(line) for line in lines[:3]}) == 1  # heading, rule and row line up


# ------------------------------------------------------------------------------------------ 10: check-keras
@pytest.mark.parametrize("backend", ["bogus", "tensorflow"])
def test_check_keras_with_another_backend_says_so_in_one_line(capsys, monkeypatch, backend):
    monkeypatch.setenv("KERAS_BACKEND", backend)
    code, out, err = cli(["check-keras", "--num-classes", "2"], capsys)
    assert_one_line_error(code, err, "check-keras")
    assert f"check-keras needs the JAX backend (KERAS_BACKEND=jax), not '{backend}'" in err and out == ""


# ------------------------------------------------------------------------------------------ 12: the normalizer
@pytest.mark.parametrize("std", [[1e-30], [1e6]])
def test_resume_refuses_a_normalizer_the_data_does_not_give(trained, tmp_path, capsys, std):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained[1], ckpt)
    _edit(ckpt, lambda state: state["config"]["normalizer"].update(std=std))
    code, out, err = cli(["train", "--checkpoint", str(ckpt), "--resume", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert "does not fit the data it was trained on: normalizer" in err and "edited by hand?" in err
    assert "resumed from" not in out


# ------------------------------------------------------------------------------------------ 13: warnings
def test_warnings_are_one_line_each(tmp_path, capsys):
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.full((24, 16, 16), 7, np.uint8), y=np.arange(24) % 4)
    code, out, err = cli(TRAIN + ["--data", str(path)], capsys)
    assert code == 0, err
    assert "warning: Normalizer.fit: channel 0 is constant in the training images" in err
    assert all(line.startswith("warning: ") for line in err.splitlines()), err
    assert ".py:" not in err and "Warning:" not in err
