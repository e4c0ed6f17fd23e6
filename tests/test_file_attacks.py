"""Hostile files, the fourth review: every reader of a user's file refuses a FIFO or a device (a link to
``/dev/zero``) before reading a byte; a folder of images refuses what is named like an image but is not a file;
a data load's memory cap counts its real peak; an ``.npz`` is never written with a member name the zip would
change; a crafted ``checkpoint.json`` (deep nesting, huge integers) is a CheckpointError; optimizer state that
overflows float32, or lacks the slots of a run that has stepped, is refused; every legal file name can be
written atomically; CSVLogger appends to a log without a final line break, and names a FIFO or a non-UTF-8
file instead of hanging or raising a bare UnicodeDecodeError."""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import tinynet
from tinynet import checkpoint, data, fileio
from tinynet.callbacks import CSVLogger
from tinynet.checkpoint import CheckpointError
from tinynet.fileio import FileFormatError
from tinynet.layers import Dense, Input
from tinynet.optim import SGD, Adam
from tinynet.training import Trainer

from helpers import tiny_model, toy_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
unix_files = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="needs FIFOs and /dev/zero")


# ------------------------------------------------------------------------------- FIFOs and devices
# Run in a child process with its address space capped and an alarm per reader: before the fix a FIFO blocked
# the open() forever and a link to /dev/zero was read until memory ran out; the test must fail, not hang.
NON_REGULAR_READERS = r"""
import os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
def blocked(*_):
    raise TimeoutError("blocked for 3 s")
signal.signal(signal.SIGALRM, blocked)
import tinynet
from tinynet import data, fileio
from tinynet.callbacks import CSVLogger
from tinynet.layers import Dense, Input
x = Input((2,))
model = tinynet.Model(x, Dense(1, name="d")(x))
readers = {
    "Model.load_weights": model.load_weights, "fileio.read_npz": fileio.read_npz,
    "fileio.npz_names": fileio.npz_names, "fileio.npz_headers": fileio.npz_headers,
    "fileio.sha256_file": fileio.sha256_file, "data.load_npz": data.load_npz,
    "data.load_dataset": data.load_dataset, "data.load_idx": data.load_idx,
    "data.load_cifar10_batch": data.load_cifar10_batch, "data.read_image": data.read_image,
    "CSVLogger(append=True)": lambda p: CSVLogger(p, append=True).on_train_begin(),
    "CSVLogger()": lambda p: CSVLogger(p).on_train_begin(),
}
for path in sys.argv[1:]:
    for name, read in readers.items():
        if name == "CSVLogger()" and os.path.islink(path):
            continue  # nothing is read: the link itself is replaced by the log (the device is not touched)
        signal.alarm(3)
        try:
            read(path)
            outcome = "read without error"
        except BaseException as error:
            outcome = f"{type(error).__name__}: {error}"
        finally:
            signal.alarm(0)
        print(f"{name} | {os.path.basename(path)} | {outcome}", flush=True)
"""


@unix_files
def test_every_reader_refuses_a_fifo_or_a_device_before_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    os.symlink("/dev/zero", tmp_path / "zero.npz")
    done = subprocess.run([sys.executable, "-c", NON_REGULAR_READERS, str(tmp_path / "fifo.npz"),
                           str(tmp_path / "zero.npz")], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=ROOT))
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 23, done.stdout + done.stderr
    for line in lines:
        reader, name, outcome = line.split(" | ", 2)
        assert "not a regular file" in outcome and name in outcome, line
        assert outcome.startswith("OSError" if reader.startswith("CSVLogger") else "FileFormatError"), line
        assert ("a FIFO" if name == "fifo.npz" else "a character device") in outcome, line


@unix_files
def test_checkpoint_data_files_that_are_fifos_or_devices_are_refused(tmp_path):
    trainer = Trainer(tiny_model(), SGD(0.05), batch_size=10, verbose=False)
    checkpoint.save(tmp_path, trainer)
    weights = checkpoint.files(tmp_path)["weights"]
    os.replace(weights, tmp_path / "saved.npz")
    os.mkfifo(weights)
    with pytest.raises(CheckpointError, match=r"not a regular file but a FIFO"):
        checkpoint.verify(tmp_path)
    assert checkpoint.status(tmp_path) == "unreadable"


@unix_files
@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "dangling link"])
def test_load_folder_refuses_what_is_named_like_an_image_but_is_not_a_file(tmp_path, kind):
    from PIL import Image

    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        for i in range(2):
            Image.fromarray(np.full((4, 4), 60 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    odd = tmp_path / "b" / "odd.png"
    {"folder": os.mkdir, "fifo": os.mkfifo, "device": lambda p: os.symlink("/dev/zero", p),
     "dangling link": lambda p: os.symlink(tmp_path / "nothing.png", p)}[kind](odd)
    message = {"folder": "not a regular file but a folder", "fifo": "not a regular file but a FIFO",
               "device": "not a regular file but a character device",
               "dangling link": "no such file, a dangling symbolic link"}[kind]
    with pytest.raises(FileFormatError, match="^" + str(odd) + ": " + message):
        data.load_folder(str(tmp_path))
    with pytest.raises(FileFormatError, match="^" + str(odd) + ": " + message):
        data.load_dataset(str(tmp_path))
    (tmp_path / "b" / ".hidden.png").write_bytes(b"not read")  # hidden files and other extensions: not images
    (tmp_path / "b" / "notes.txt").write_bytes(b"not read")
    (os.rmdir if kind == "folder" else os.unlink)(odd)
    assert len(data.load_folder(str(tmp_path))) == 4


# ------------------------------------------------------------------------------- memory caps
def _traced_peak(call):
    """``(result, peak bytes)`` of ``call()`` as tracemalloc sees it (NumPy's arrays included)."""
    call()  # first-use imports and caches are not the load's
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _accepted_within(load, cap):
    """Load under ``cap``: refused (FileFormatError naming the cap), or accepted with a peak within ``cap``."""
    try:
        _, peak = _traced_peak(lambda: load(cap))
    except FileFormatError as error:
        assert "cap" in str(error)
        return False
    assert peak <= cap, f"accepted under a cap of {cap} bytes but held {peak} at its peak"
    return True


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_a_compressed_npz_is_held_to_the_cap_at_its_peak(tmp_path, dtype):
    """x/y in a deflated .npz (zeros: ~1000:1): the raw array, its float32 copy and the train/test split all
    count; before, a cap of 1.5 times the float32 images was accepted and the load held twice as much."""
    n, side = 2000, 16
    path = str(tmp_path / "deflated.npz")
    np.savez_compressed(path, x=np.zeros((n, side, side), dtype), y=np.arange(n) % 4)
    assert os.path.getsize(path) < 60_000
    float32 = n * side * side * 4
    for factor in (1.25, 1.5, 2.0):  # the old cap (float32 images and labels) let every one of these through
        _accepted_within(lambda cap: data.load_dataset(path, max_bytes=cap), int(factor * (float32 + 8 * n)))
    needed = 2 * float32 + 6 * 8 * n if dtype == np.uint8 else 3 * float32 + 16 * n
    assert not _accepted_within(lambda cap: data.load_dataset(path, max_bytes=cap), needed - 1)
    assert _accepted_within(lambda cap: data.load_dataset(path, max_bytes=cap), int(needed * 1.01))
    assert _accepted_within(lambda cap: data.load_dataset(path, image_size=8, max_bytes=cap), int(needed * 1.01))


def test_mnist_cifar_and_folders_are_held_to_the_cap_at_their_peak(tmp_path):
    import pickle
    import struct

    from PIL import Image

    os.makedirs(tmp_path / "mnist")
    for name, a in (("train-images-idx3-ubyte", np.zeros((600, 16, 16), np.uint8)),
                    ("train-labels-idx1-ubyte", (np.arange(600) % 3).astype(np.uint8)),
                    ("t10k-images-idx3-ubyte", np.zeros((200, 16, 16), np.uint8)),
                    ("t10k-labels-idx1-ubyte", (np.arange(200) % 3).astype(np.uint8))):
        header = bytes([0, 0, 8, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
        (tmp_path / "mnist" / name).write_bytes(header + a.tobytes())
    os.makedirs(tmp_path / "cifar")
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"data": np.zeros((100, 3072), np.uint8), b"labels": [1, 2] * 50}
        (tmp_path / "cifar" / name).write_bytes(pickle.dumps(batch, protocol=2))
    for cls in ("a", "b"):
        os.makedirs(tmp_path / "folder" / cls)
        for i in range(20):
            Image.fromarray(np.full((64, 64), 7 * i, np.uint8)).save(tmp_path / "folder" / cls / f"{i}.png")
    for source, final in (("mnist", 800 * 256 * 4), ("cifar", 300 * 3072 * 4), ("folder", 40 * 4096 * 4)):
        path = str(tmp_path / source)
        for factor in (1.1, 1.5, 2.5, 8.0):
            _accepted_within(lambda cap: data.load_dataset(path, max_bytes=cap), int(factor * final))
        assert _accepted_within(lambda cap: data.load_dataset(path, max_bytes=cap), 10 * final)


# ------------------------------------------------------------------------------- writing .npz
def test_save_npz_refuses_member_names_the_zip_would_change_before_writing(tmp_path):
    path = tmp_path / "w.npz"
    fileio.save_npz(path, {"good": np.ones(2)})
    before = path.read_bytes()
    for name, message in (("conv\x00one/kernel", r"'conv\\x00one/kernel' would be stored .* as member 'conv'"),
                          ("bad\udcff", "not valid Unicode")):
        with pytest.raises(ValueError, match=message):
            fileio.save_npz(path, {"ok": np.ones(2), name: np.zeros(3)})
    with pytest.raises(TypeError, match="must be str"):
        fileio.save_npz(path, {1: np.ones(2)})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.npz"]  # nothing written, no temp file
    # np.savez(f, **arrays) took these names as its own arguments: one array dropped, or a TypeError
    odd = {"allow_pickle": np.arange(3.0), "file": np.eye(2, dtype=np.float32), "a/b": np.zeros((2, 1))}
    fileio.save_npz(path, odd)
    back = fileio.read_npz(path)
    assert list(back) == list(odd) and all(np.array_equal(back[k], odd[k]) for k in odd)
    assert {k: np.load(path)[k].dtype for k in odd} == {k: v.dtype for k, v in odd.items()}  # np.load reads it


def test_a_checkpoint_with_a_name_zip_would_change_is_refused_and_the_old_one_kept(saved, monkeypatch):
    folder, trainer = saved
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    real = tinynet.saving.weight_arrays
    monkeypatch.setattr(tinynet.saving, "weight_arrays", lambda model: {**real(model), "x\x00y/kernel": np.ones(2)})
    with pytest.raises(CheckpointError, match=r"nothing was written|'x\\x00y/kernel' would be stored"):
        checkpoint.save(folder, trainer)
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    assert checkpoint.status(folder) == "checkpoint"


# ------------------------------------------------------------------------------- crafted manifests
@pytest.fixture
def saved(tmp_path):
    trainer = Trainer(tiny_model(), Adam(0.01), batch_size=10, verbose=False)
    trainer.fit(toy_data(n=20), epochs=1)
    checkpoint.save(tmp_path, trainer)
    return tmp_path, trainer


@pytest.mark.parametrize("case", ["deep list", "deep object", "5000-digit integer", "deep but parsable"])
def test_a_crafted_manifest_is_a_checkpoint_error(saved, case):
    folder, _ = saved
    manifest = folder / "checkpoint.json"
    state = json.loads(manifest.read_text())
    text = {"deep list": "[" * 200_000 + "]" * 200_000,
            "deep object": '{"a":' * 100_000 + "1" + "}" * 100_000,
            "5000-digit integer": json.dumps(state).replace('"epoch": 1', '"epoch": ' + "9" * 5000),
            "deep but parsable": json.dumps({**state, "config": {"x": json.loads("[" * 500 + "]" * 500)}})}[case]
    manifest.write_text(text)
    message = {"5000-digit integer": "Exceeds the limit", "deep but parsable": "nests deeper than 64 levels"}
    for read in (checkpoint.verify, checkpoint.read_state, checkpoint.load_weights):
        with pytest.raises(CheckpointError, match=r"checkpoint\.json: .*" + message.get(case, "nests too deeply")):
            read(folder) if read is not checkpoint.load_weights else read(folder, tiny_model())
    assert checkpoint.status(folder) == "unreadable"


# ------------------------------------------------------------------------------- optimizer state
def test_optimizer_state_beyond_float32_is_refused_not_loaded_as_inf(saved):
    folder, trainer = saved
    state = trainer.optimizer.state_dict()
    key = next(k for k in state["arrays"] if k.startswith("m:"))
    bad = {**state, "arrays": {**state["arrays"], key: np.full(state["arrays"][key].shape, 1e300)}}
    fresh = Adam(0.01).attach(trainer.model)
    with pytest.raises(ValueError, match=rf"'{key}' holds values beyond the range of float32 .* infinite"):
        fresh.load_state_dict(bad)
    assert fresh.iterations == 0 and fresh.state_dict()["arrays"] == {}
    # the same through a checkpoint: refused naming the file
    path = checkpoint.files(folder)["optimizer"]
    arrays = {k: (np.full(v.shape, 1e300) if k == key else v) for k, v in fileio.read_npz(path).items()}
    _rewrite(folder, "optimizer", arrays)
    target = Trainer(tiny_model(), Adam(0.01), batch_size=10, verbose=False)
    with pytest.raises(CheckpointError, match=rf"optimizer-.*\.npz: .*'{key}' holds values beyond the range"):
        checkpoint.load(folder, target)
    assert target.optimizer.iterations == 0


def _rewrite(folder, kind, arrays):
    """Replace a checkpoint's data file by ``arrays``, with the manifest's size and checksum updated."""
    path = checkpoint.files(folder)[kind]
    fileio.save_npz(path, arrays)
    state = json.loads((folder / "checkpoint.json").read_text())
    state["files"][kind].update(size=os.path.getsize(path), sha256=fileio.sha256_file(path))
    (folder / "checkpoint.json").write_text(json.dumps(state))


def test_a_stepped_optimizer_state_without_its_slots_is_refused(saved):
    folder, trainer = saved
    assert trainer.optimizer.iterations > 0
    _rewrite(folder, "optimizer", {})
    target = Trainer(tiny_model(), Adam(0.01), batch_size=10, verbose=False)
    with pytest.raises(CheckpointError, match=r"optimizer-.*\.npz: .*no state for \d+ trainable weight.*after \d+ "
                                              r"steps every slot the update uses, \['m', 'v'\], must be there"):
        checkpoint.load(folder, target)
    assert target.optimizer.iterations == 0
    x = Input((2,))
    model = tinynet.Model(x, Dense(1, name="d")(x))
    for opt, slots in ((Adam(), ["m"]), (SGD(momentum=0.9), [])):
        opt.attach(model)
        partial = {f"{s}:d/{w}": np.zeros((2, 1) if w == "kernel" else (1,)) for s in slots for w in ("kernel", "bias")}
        with pytest.raises(ValueError, match="no state for"):
            opt.load_state_dict({**opt.state_dict(), "iterations": 45, "arrays": partial})
        opt.load_state_dict({**opt.state_dict(), "iterations": 0, "arrays": {}})  # a fresh state has none
    plain = SGD().attach(model)  # plain SGD keeps no state: none is needed after any number of steps
    plain.load_state_dict({**plain.state_dict(), "iterations": 45})
    assert plain.iterations == 45


# ------------------------------------------------------------------------------- long file names
@pytest.mark.parametrize("length", [240, 250, 255])
def test_atomic_write_works_for_every_legal_name(tmp_path, length):
    name = "w" * (length - 4) + ".npz"
    fileio.save_npz(tmp_path / name, {"a": np.ones(2)})
    assert os.listdir(tmp_path) == [name] and fileio.read_npz(tmp_path / name)["a"].tolist() == [1.0, 1.0]
    unicode_name = "é" * ((length - 4) // 2) + ".txt"  # two bytes a character: cut at a character, not a byte
    fileio.write_text(tmp_path / unicode_name, "x")
    assert (tmp_path / unicode_name).read_text() == "x"
    with pytest.raises(OSError, match="its name is 256 bytes, more than the 255"):
        fileio.write_text(tmp_path / ("n" * 256), "x")


@unix_files
def test_atomic_write_refuses_to_replace_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "w.npz")
    x = Input((2,))
    model = tinynet.Model(x, Dense(1, name="d")(x))
    with pytest.raises(OSError, match=r"w\.npz: is a FIFO, not a regular file; refusing to replace it"):
        model.save_weights(str(tmp_path / "w.npz"))
    assert os.listdir(tmp_path) == ["w.npz"] and not os.path.isfile(tmp_path / "w.npz")


def test_temporary_names_fit_and_checkpoint_cleanup_matches_them(tmp_path):
    prefix = fileio.temp_prefix("x" * 300, 255)
    assert len(prefix) + 8 + len(fileio.TEMP_SUFFIX) <= 255 and prefix.startswith(".xxx") and prefix.endswith(".")
    with fileio.atomic_write(tmp_path / "weights-000003-0123abcd.npz") as f:
        (temp,) = [n for n in os.listdir(tmp_path)]
        f.write(b"x")
    assert checkpoint._TEMP_NAME.fullmatch(temp), temp  # what an interrupted save leaves, the next one removes


# ------------------------------------------------------------------------------- CSVLogger(append=True)
def _csv_model():
    x = Input((4,))
    model = tinynet.Model(x, Dense(2, activation="softmax", name="d")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("ending", ["\r\n", "\n"])
def test_csv_logger_appends_on_a_new_line_when_the_last_has_no_line_break(tmp_path, ending):
    log = tmp_path / "log.csv"
    log.write_bytes(f"epoch,accuracy,loss{ending}0,0.5,1.0".encode())
    x, y = np.random.default_rng(0).random((8, 4), np.float32), np.arange(8) % 2
    _csv_model().fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(log, append=True)])
    lines = log.read_bytes().decode().splitlines()
    assert lines[:2] == ["epoch,accuracy,loss", "0,0.5,1.0"] and lines[2].startswith("0,") and len(lines) == 3
    assert log.read_bytes().startswith(f"epoch,accuracy,loss{ending}0,0.5,1.0{ending}".encode())


def test_csv_logger_names_a_file_that_is_not_utf8(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=rf"CSVLogger: cannot append to '{log}': it is not UTF-8 text"):
        CSVLogger(log, append=True).on_train_begin()
    assert log.read_bytes() == b"\xff\xfe\x00binary"


@unix_files
def test_csv_logger_refuses_a_fifo_before_the_first_step(tmp_path):
    os.mkfifo(tmp_path / "log.csv")
    x, y = np.zeros((4, 4), np.float32), np.arange(4) % 2
    model = _csv_model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(OSError, match="it is a FIFO, not a regular file"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(tmp_path / "log.csv")])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # no step was taken

