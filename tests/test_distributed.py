"""Data-parallel training over MPI (tinynet.distributed): N ranks train exactly as one process.

The MPI cases launch ``mpiexec -n 2`` (or 3) on ``tests/distributed_worker.py`` in a subprocess, one thread per
rank and NumPy kernels, and compare what rank 0 wrote with the same runs computed here in one process, in
float64 to 1e-10. They are skipped, with the reason, without mpi4py or an ``mpiexec``
(``pip install -e '.[distributed]'`` installs both). The rest runs everywhere.
"""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import tinynet
from tinynet import checkpoint, distributed
from tinynet.callbacks import Callback, CallbackList, CSVLogger, ProgbarLogger
from tinynet.layers import BatchNormalization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distributed_worker as worker  # noqa: E402
from helpers import toy_data  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def _mpiexec():
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def needs_mpi(test):
    """Skip, saying why, without mpi4py or an mpiexec."""
    test = pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py is not installed: pip install -e '.[distributed]'")(test)
    return pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec beside the Python interpreter or on PATH: "
                                                      "pip install -e '.[distributed]' installs MPICH's")(test)


def mpirun(args, n=2, timeout=120, cwd=None):
    """Run ``mpiexec -n N python ARGS`` with one thread per rank; return (CompletedProcess, seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", TINYNET_CPU_KERNELS="numpy", PYTHONUNBUFFERED="1")
    began = time.perf_counter()
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    return proc, time.perf_counter() - began


def assert_close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol, f"max difference {np.abs(a - b).max():.3g}"


def assert_history_close(got, expected, tol=1e-10):
    expected = {k: v for k, v in expected.items() if k != "time"}
    got = {k: v for k, v in got.items() if k != "time"}
    assert set(got) == set(expected)
    for key in expected:
        assert_close(got[key], expected[key], tol)


@pytest.fixture
def float64():
    tinynet.set_cpu_kernels("numpy")
    yield
    tinynet.set_floatx("float32")


# ------------------------------------------------------------------------------------------ without MPI
def test_shard_covers_the_batch_in_order_whatever_the_number_of_ranks():
    for n in range(0, 12):
        for size in range(1, 6):
            parts = [distributed.shard(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            lengths = [stop - start for start, stop in parts]
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    assert distributed.shard(1, 1, 2) == (1, 1)  # a rank may get nothing of a small last batch
    with pytest.raises(ValueError):
        distributed.shard(4, 2, 2)


def test_importing_tinynet_needs_no_mpi4py():
    code = ("import sys, tinynet, tinynet.distributed, tinynet.training, inception.cli_train\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_communicator_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` now raises ImportError
    monkeypatch.setattr(distributed, "_WORLD", None)
    assert not distributed.mpi_available()
    with pytest.raises(distributed.DistributedError, match=r"mpi4py.*pip install -e '\.\[distributed\]'"):
        distributed.Communicator()
    with pytest.raises(distributed.DistributedError, match=r"pip install -e '\.\[distributed\]'"):
        tinynet.training.Trainer(worker.bn_model(), tinynet.optimizers.SGD(0.1), distributed=True)


def test_synchronized_batch_norm_in_one_process_is_plain_batch_norm(float64):
    tinynet.set_floatx("float64")
    rng = np.random.default_rng(0)
    x, g = rng.normal(2.0, 3.0, (5, 4, 3, 6)), rng.normal(size=(5, 4, 3, 6))
    plain, synced = BatchNormalization(momentum=0.9), BatchNormalization(momentum=0.9, synchronized=True)
    for comm in (None, type("OneRank", (), {"size": 1})()):
        synced.communicator = comm
        (y0, c0), (y1, c1) = plain.forward(x, training=True), synced.forward(x, training=True)
        assert np.array_equal(y0, y1)
        (gx0, p0), (gx1, p1) = plain.backward(g, c0), synced.backward(g, c1)
        assert np.array_equal(gx0, gx1) and all(np.array_equal(a, b) for a, b in zip(p0[:2], p1[:2]))
        assert all(np.array_equal(a, b) for a, b in zip(plain.weights, synced.weights))
    assert synced.get_config()["synchronized"] is True
    with pytest.raises(ValueError, match="synchronized"):
        BatchNormalization(synchronized="yes")


def test_only_rank_zero_runs_the_callbacks_that_write_or_print(tmp_path, capsys):
    seen = []

    class Decides(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    csv_path = tmp_path / "log.csv"
    for chief in (False, True):
        cbs = CallbackList([CSVLogger(csv_path), Decides(), ProgbarLogger()], verbose=1, epochs=1, steps=1)
        cbs.set_chief(chief)
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
        cbs.on_epoch_end(0, {"loss": 1.0})
        assert csv_path.exists() == chief
    assert seen == [0, 0]  # the callbacks that decide run on every rank
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("Epoch 1/1") == 1  # once: rank 0's progress display


# ------------------------------------------------------------------------------------------ under mpiexec
@needs_mpi
@pytest.mark.usefixtures("float64")
def test_two_ranks_train_exactly_as_one_process(tmp_path):
    n = 2
    proc, _ = mpirun([WORKER, "equivalence", tmp_path], n=n)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    weights = np.load(tmp_path / "weights.npz")
    assert results["size"] == n

    model, history, evaluated = worker.lrn_run(None)  # LRN, Keras' API, an uneven last batch (5 = 3 + 2)
    assert_close(weights["lrn"], worker.flat_weights(model))
    assert_history_close(results["lrn"]["history"], history)
    assert_history_close({k: [v] for k, v in results["lrn"]["evaluate"].items()},
                         {k: [v] for k, v in evaluated.items()})
    assert results["lrn"]["allreduce_calls"] == 3 * 3  # one all-reduce of the gradients per step
    assert (tmp_path / "lrn_log.csv").read_text().count("\n") == 4 and (tmp_path / "lrn_ckpt").is_dir()

    trainer, history = worker.bn_run(True, False)  # synchronized BN + Dropout + augmentation, last batch of 1
    assert_close(weights["bn"], worker.flat_weights(trainer.model))
    assert_history_close(results["bn"]["history"], history)
    assert_history_close({k: [v] for k, v in results["bn"]["evaluate"].items()},
                         {k: [v] for k, v in trainer.evaluate(toy_data(n=5, seed=5)).items()})

    # every rank holds the same copy, also with BatchNormalization on each rank's share (averaged statistics)
    assert results["lrn"]["spread"] == results["bn"]["spread"] == results["bn_local"]["spread"] == 0.0
    trainer, _ = worker.bn_run(False, False)
    assert np.abs(weights["bn_local"] - worker.flat_weights(trainer.model)).max() > 1e-6  # local statistics differ
    assert "NCCL" in results["nccl"] and "GPU" in results["nccl"]


@needs_mpi
@pytest.mark.usefixtures("float64")
def test_a_checkpoint_resumes_identically_with_another_number_of_ranks(tmp_path):
    uninterrupted, history3 = worker.bn_run(True, False, epochs=3)
    first = worker.bn_trainer(True, False)  # one process, epoch 1 → the two ranks continue to epoch 3
    first.fit(toy_data(n=17, seed=4), toy_data(n=5, seed=5), epochs=1, checkpoint_dir=tmp_path / "from_one")
    proc, _ = mpirun([WORKER, "resume", tmp_path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = np.load(tmp_path / "resumed.npz")
    assert_close(out["from_one"], worker.flat_weights(uninterrupted.model))
    assert checkpoint.read_state(tmp_path / "from_one")["epoch"] == 3

    # two ranks, epochs 1-2, written by rank 0 alone → one process continues to epoch 3
    assert sorted(os.listdir(tmp_path / "from_two"))[0] == "checkpoint.json" and \
        len(os.listdir(tmp_path / "from_two")) == 3  # the manifest and its two data files, no leftovers
    assert_history_close(json.loads(str(out["history"])), {k: v[:2] for k, v in history3.items()})
    second = worker.bn_trainer(True, False)
    checkpoint.load(tmp_path / "from_two", second)
    second.fit(toy_data(n=17, seed=4), toy_data(n=5, seed=5), epochs=3)
    assert_close(worker.flat_weights(second.model), worker.flat_weights(uninterrupted.model))
    assert_history_close(second.history, history3)


@needs_mpi
def test_a_failing_rank_ends_the_whole_job_at_once(tmp_path):
    proc, seconds = mpirun([WORKER, "fail", tmp_path], timeout=60)
    assert proc.returncode != 0
    assert "rank 1: RuntimeError: injected failure on rank 1" in proc.stderr, proc.stderr
    assert seconds < 30  # 50 epochs would take far longer: the other rank did not wait


@needs_mpi
def test_ranks_given_different_runs_refuse_before_the_first_step(tmp_path):
    proc, seconds = mpirun([WORKER, "disagree", tmp_path], timeout=60)
    assert proc.returncode != 0 and seconds < 30
    assert "the ranks disagree on the run" in proc.stderr and "1: (0, 2, 16, 8, True)" in proc.stderr, proc.stderr


@needs_mpi
def test_the_cli_trains_on_two_ranks_and_one_process_resumes(tmp_path, capsys):
    from inception.__main__ import main

    npz = worker.make_npz(tmp_path / "toy.npz")
    flags = ["--data", npz, "--image-size", "16", "--batch-size", "8", "--kernels", "numpy", "--quiet",
             "--schedule", "step", "--checkpoint", tmp_path / "ck"]  # a cosine run cannot be extended
    proc, _ = mpirun(["-m", "inception", "train", "--distributed", "--epochs", "1", *flags], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("test accuracy: ") == 1 and proc.stdout.count("data: ") == 1  # rank 0 prints
    assert "distributed: 2 ranks, global batch 8 (4 per rank)" in proc.stdout
    assert "all-reduce of the gradients: " in proc.stdout
    assert checkpoint.read_state(tmp_path / "ck")["epoch"] == 1
    tinynet.set_cpu_kernels("numpy")
    assert main(["train", "--epochs", "2", "--resume", *map(str, flags)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert checkpoint.read_state(tmp_path / "ck")["epoch"] == 2


@needs_mpi
def test_the_cli_ends_every_rank_when_one_fails(tmp_path):
    worker.make_npz(tmp_path / "toy.npz")
    proc, seconds = mpirun([WORKER, "cli_fail", tmp_path], timeout=60)
    assert proc.returncode != 0 and seconds < 30
    assert "rank 1: inception train: error: [Errno 28] No space left on device (injected)" in proc.stderr, \
        proc.stderr


@needs_mpi
def test_a_user_mistake_under_mpiexec_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    cases = [["train", "--distributed", "--checkpoint", tmp_path / "file"],   # found by every rank, agreed
             ["train", "--distributed", "--batch-size", "0"],                   # argparse, before MPI starts
             ["train", "--epochs", "1"]]                                         # mpiexec without --distributed
    for argv in cases:
        proc, _ = mpirun(["-m", "inception", *argv], timeout=60, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("inception train: error: "), proc.stderr
        assert "Traceback" not in proc.stderr



BY_RANK = """import sys
from inception.__main__ import main
from tinynet.distributed import launched_rank
extra = sys.argv[1 + (launched_rank() or 0)].split()  # the flags of this rank
sys.exit(main(sys.argv[3:] + extra))
"""


@needs_mpi
@pytest.mark.parametrize("rank0, rank1, message", [
    ("", "--batch-size -4", "rank 1: inception train: error: argument --batch-size: must be >= 1"),  # hung before
    ("--batch-size -4", "", "rank 0: inception train: error: argument --batch-size: must be >= 1"),
    ("", "--lr 0.5", "inception train: error: --distributed: the ranks were given different runs (rank 1 differs "
                     "from rank 0 in settings lr)"),  # trained two different models before
    ("", "--epochs 2", "(rank 1 differs from rank 0 in settings epochs)"),  # a traceback before
])
def test_ranks_given_different_command_lines_end_in_one_line(tmp_path, rank0, rank1, message):
    """A command line that fails to parse on one rank only (the others wait for it in MPI's start-up) or ranks
    given different runs: every rank ends at once, exit code 2, one line (they hung, or trained different models,
    or printed a traceback)."""
    script = tmp_path / "by_rank.py"
    script.write_text(BY_RANK)
    proc, seconds = mpirun([script, rank0, rank1, "train", "--distributed", "--epochs", "1", "--quiet"],
                           timeout=90, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert seconds < 60 and not list(tmp_path.glob("*.png"))
