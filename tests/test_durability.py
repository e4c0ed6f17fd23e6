"""Durable files, bounded loading, all or nothing: checkpoints and weight files under kills, full disks and
hostile files.

(a) A training run in a subprocess is stopped at every file operation of one checkpoint save (each write,
    half-way through each write, each fsync, rename and removal): one child copies the folder at each of
    those instants (what a kill there leaves), three more really die there (``os._exit(137)``), three are
    SIGKILLed at random times while saving every epoch. Every folder must load and be wholly epoch N or
    wholly epoch N+1: weights and optimizer state equal, bit for bit, to what the run held at that epoch.
    Ctrl-C (KeyboardInterrupt) before the commit leaves the old folder byte for byte; after it, the new one.
(b) A full disk (RLIMIT_FSIZE, SIGXFSZ ignored) fails a save at the weights, at the manifest, and fails
    ``Model.save_weights``: the previous files stay byte for byte, no temporary file is left, the error says so.
(c) Hostile and damaged files for every loader: truncated, zip bomb, pickle, extra member, wrong shape,
    flipped bits, broken manifests, names outside the folder, symbolic links.
(d) All or nothing: a bad part next to good weights leaves trainer, model and optimizer exactly as they were.
"""
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinynet
from tinynet import backend, checkpoint, data, fileio, saving
from tinynet.checkpoint import CheckpointError
from tinynet.optim import SGD, StepDecay
from tinynet.training import Trainer

from helpers import npy_bytes, refused_quickly, write_zip, zip_bomb
from helpers import tiny_model, toy_data

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def make_trainer(seed=3):
    """The run every test here uses (and the subprocesses too): SGD with momentum, dropout, augmentation,
    gradient-norm records, so every part of a checkpoint is exercised."""
    model = tiny_model(seed=0)
    return Trainer(model, SGD(0.05, momentum=0.9), schedule=StepDecay(0.05, every=1), batch_size=10,
                   augment=data.Augment(crop=1, flip=True), seed=seed, verbose=False,
                   grad_norm_groups=[("low", ("low",))], grad_norm_every=1)


def dataset():
    return toy_data(n=20)


# ------------------------------------------------------------------------------------ the subprocess
CHILD = r"""
import json, os, resource, shutil, signal, sys
import tinynet
from tinynet import checkpoint, fileio, saving
import test_durability as T

mode, folder, work = sys.argv[1], sys.argv[2], sys.argv[3]
tinynet.set_cpu_kernels("numpy")
kill_at = int(os.environ.get("KILL_AT", "0"))
active_from = int(os.environ.get("ACTIVE_FROM", "2"))
snapshots = mode == "snap"
hook = {"active": False, "count": 0, "labels": []}
real = {name: getattr(os, name) for name in ("replace", "fsync", "unlink", "remove", "fdopen")}


def event(label):
    # one file operation of a checkpoint save is about to happen: die here, or copy what a death here leaves
    if not hook["active"]:
        return
    hook["active"] = False
    hook["count"] += 1
    hook["labels"].append(label)
    if hook["count"] == kill_at:
        os._exit(137)
    if snapshots:
        shutil.copytree(folder, os.path.join(work, "snaps", f"{hook['count']:04d}-{label}"), symlinks=True)
    hook["active"] = True


def hooked(name):
    def call(*args, **kwargs):
        event(name)
        return real[name](*args, **kwargs)
    return call


class Writer:
    # a file from os.fdopen whose writes are events; each write also stops half-way (flushed to the file)
    def __init__(self, f):
        self._f = f

    def write(self, b):
        if hook["active"] and len(b) > 1:
            half = len(b) // 2
            self._f.write(b[:half])
            self._f.flush()
            event("write-half")
            return half + self._f.write(b[half:])
        event("write")
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


for name in ("replace", "fsync", "unlink", "remove"):
    setattr(os, name, hooked(name))
os.fdopen = lambda *a, **k: Writer(real["fdopen"](*a, **k))
real_save = checkpoint.save


def save(directory, trainer, config=None):
    # the reference for this epoch first (hooks off), then the save under the hooks
    epoch = trainer.epoch
    if mode == "diskfull":  # no room for references there
        return real_save(directory, trainer, config)
    os.makedirs(os.path.join(work, "refs"), exist_ok=True)
    fileio.save_npz(os.path.join(work, "refs", f"optimizer-{epoch}.npz"), trainer.optimizer.state_dict()["arrays"])
    fileio.save_npz(os.path.join(work, "refs", f"weights-{epoch}.npz"), saving.weight_arrays(trainer.model))
    hook["active"] = epoch >= active_from
    try:
        return real_save(directory, trainer, config)
    finally:
        if hook["active"]:
            event("end")
        hook["active"] = False


checkpoint.save = save
trainer, ds = T.make_trainer(), T.dataset()

if mode in ("snap", "kill"):
    trainer.fit(ds, epochs=2, checkpoint_dir=folder)
    print(json.dumps(hook["labels"]))
elif mode == "loop":
    trainer.fit(ds, epochs=1, checkpoint_dir=folder)
    print("ready", flush=True)
    trainer.fit(ds, epochs=10000, checkpoint_dir=folder)
elif mode == "diskfull":
    trainer.fit(ds, epochs=1, checkpoint_dir=folder, checkpoint_config={"pad": "x" * 50000})
    weights_file = os.path.join(work, "w.npz")
    trainer.model.save_weights(weights_file)
    sizes = {k: os.path.getsize(p) for k, p in checkpoint.files(folder).items()}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    report = {}
    # at the weights file; then at the manifest (larger than both data files, thanks to the padding)
    for phase, limit in (("weights", sizes["weights"] // 2), ("manifest", max(sizes.values()) + 100)):
        before = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            trainer.fit(ds, epochs=trainer.epoch + 1, checkpoint_dir=folder,
                        checkpoint_config={"pad": "x" * 50000})
            error = None
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        after = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
        report[phase] = {"error": error, "unchanged": before == after, "files": sorted(after)}
    old = open(weights_file, "rb").read()
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(old) // 2, hard))
    try:
        trainer.model.save_weights(weights_file)
        error = None
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    report["save_weights"] = {"error": error, "unchanged": open(weights_file, "rb").read() == old,
                              "files": sorted(os.listdir(work))}
    print(json.dumps(report))
"""


def child(mode, folder, work, env=None, wait=True):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), **(env or {}))
    args = [sys.executable, "-c", CHILD, mode, str(folder), str(work)]
    process = subprocess.Popen(args, cwd=TESTS, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def reference(work, epoch):
    refs = {}
    for kind in ("weights", "optimizer"):
        with np.load(os.path.join(work, "refs", f"{kind}-{epoch}.npz"), allow_pickle=False) as f:
            refs[kind] = {k: f[k] for k in f.files}
    return refs


def loaded_epoch(folder, work):
    """Load ``folder`` into a fresh trainer; check it is wholly the run's state at its epoch; return the epoch."""
    trainer = make_trainer()
    checkpoint.load(folder, trainer)
    epoch = trainer.epoch
    ref = reference(work, epoch)
    weights = saving.weight_arrays(trainer.model)
    assert weights.keys() == ref["weights"].keys()
    assert all(np.array_equal(weights[k], ref["weights"][k]) for k in weights), f"{folder}: weights not epoch {epoch}"
    arrays = trainer.optimizer.state_dict()["arrays"]
    assert arrays.keys() == ref["optimizer"].keys()
    assert all(np.array_equal(arrays[k], ref["optimizer"][k]) for k in arrays), f"{folder}: optimizer not {epoch}"
    assert len(trainer.history["epoch"]) == epoch and len(trainer.grad_norms["step"]) == 2 * epoch
    return epoch


def clean_listing(folder):
    names = sorted(os.listdir(folder))
    assert len(names) == 3 and names[0] == "checkpoint.json", names
    return names


# ------------------------------------------------------------------------------------ (a) interruptions
@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    """One child that copies the checkpoint folder at every file operation of its epoch-2 save."""
    work = tmp_path_factory.mktemp("snap")
    code, out, err = child("snap", work / "ckpt", work)
    assert code == 0, err
    return work, json.loads(out.strip().splitlines()[-1])


def test_every_instant_of_a_save_leaves_a_whole_checkpoint(snapshot_run):
    work, labels = snapshot_run
    snaps = sorted(os.listdir(work / "snaps"))
    assert len(snaps) == len(labels) >= 40
    epochs = [loaded_epoch(work / "snaps" / s, work) for s in snaps]
    assert {"write-half", "fsync", "replace", "unlink", "end"} <= set(labels)
    assert set(epochs) == {1, 2}
    first_new = epochs.index(2)
    assert epochs == [1] * first_new + [2] * (len(epochs) - first_new)  # once committed, never back
    assert labels[first_new - 1] == "replace"  # the commit is the manifest's rename
    assert checkpoint.status(work / "snaps" / snaps[-1]) == "checkpoint"
    clean_listing(work / "snaps" / snaps[-1])  # the end of a save: old files and temporary files gone
    assert any(n.endswith(".tmp") for s in snaps for n in os.listdir(work / "snaps" / s))


def test_real_deaths_at_chosen_instants(snapshot_run, tmp_path):
    _, labels = snapshot_run
    commit = len(labels) - 1 - labels[::-1].index("replace")  # 0-based index of the manifest's rename
    cases = {labels.index("write-half") + 1: 1, commit + 1: 1, commit + 2: 2}  # 1-based kill points
    for kill_at, expected in cases.items():
        work = tmp_path / f"k{kill_at}"
        code, _, err = child("kill", work / "ckpt", work, env={"KILL_AT": str(kill_at)})
        assert code == 137, err
        assert loaded_epoch(work / "ckpt", work) == expected
        trainer = make_trainer()  # the next save cleans what the dead one left
        checkpoint.load(work / "ckpt", trainer)
        trainer.fit(dataset(), epochs=trainer.epoch + 1, checkpoint_dir=str(work / "ckpt"))
        clean_listing(work / "ckpt")


def test_sigkill_at_random_times_while_saving_every_epoch(tmp_path):
    rng = random.Random(1234)
    for i in range(3):
        work = tmp_path / f"r{i}"
        process = child("loop", work / "ckpt", work, env={"ACTIVE_FROM": "999999"}, wait=False)
        try:
            assert process.stdout.readline().strip() == "ready", process.stderr.read()
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
        last = max(int(n.split("-")[1].split(".")[0]) for n in os.listdir(work / "refs") if n.startswith("weights"))
        assert loaded_epoch(work / "ckpt", work) in (last - 1, last)


def _listing(folder):
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


def test_ctrl_c_before_the_commit_keeps_the_old_checkpoint_byte_for_byte(saved, monkeypatch):
    folder, _, trainer = saved
    before = _listing(folder)
    real = fileio.write_text

    def interrupted(path, text):  # Ctrl-C while the manifest's temporary file is being written
        with fileio.atomic_write(path, "w") as f:
            f.write(text[:10])
            raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "write_text", interrupted)
    trainer.epoch = 2
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(folder, trainer)
    assert _listing(folder) == before  # this save's data files removed, no temporary file
    monkeypatch.setattr(fileio, "write_text", real)
    checkpoint.save(folder, trainer)
    assert checkpoint.read_state(folder)["epoch"] == 2


def test_ctrl_c_after_the_commit_keeps_the_new_checkpoint(saved, monkeypatch):
    folder, _, trainer = saved
    real = fileio._fsync_directory
    calls = []

    def interrupted(directory):  # Ctrl-C right after the manifest's rename
        calls.append(directory)
        if len(calls) == 3:  # weights, optimizer, manifest
            raise KeyboardInterrupt
        real(directory)

    monkeypatch.setattr(fileio, "_fsync_directory", interrupted)
    trainer.epoch = 2
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(folder, trainer)
    monkeypatch.undo()
    assert checkpoint.read_state(folder)["epoch"] == 2  # committed: its files were kept
    assert len(os.listdir(folder)) == 5  # epoch 1's files are left for the next save to remove
    checkpoint.save(folder, trainer)
    clean_listing(folder)


# ------------------------------------------------------------------------------------ (b) a full disk
def test_a_full_disk_keeps_the_previous_files(tmp_path):
    code, out, err = child("diskfull", tmp_path / "ckpt", tmp_path, env={"ACTIVE_FROM": "999999"})
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    for phase in ("weights", "manifest"):
        result = report[phase]
        assert result["error"] and "File too large" in result["error"], result
        assert "could not save epoch" in result["error"] and "previous checkpoint there is unchanged" in \
            result["error"]
        assert result["unchanged"] and len(result["files"]) == 3, result  # no temp file, no orphan data file
    assert report["save_weights"]["error"] and "File too large" in report["save_weights"]["error"]
    assert report["save_weights"]["unchanged"]
    assert not [n for n in report["save_weights"]["files"] if n.endswith(".tmp")]
    assert checkpoint.read_state(tmp_path / "ckpt")["epoch"] == 1
    model = tiny_model(seed=9)
    model.load_weights(tmp_path / "w.npz")  # the previous save_weights file still loads


# ------------------------------------------------------------------------------------ (c) hostile files
@pytest.fixture
def saved(tmp_path):
    """A trained checkpoint (epoch 1) in tmp_path/'ckpt' and a save_weights file tmp_path/'w.npz'."""
    trainer = make_trainer()
    trainer.fit(dataset(), epochs=1, checkpoint_dir=str(tmp_path / "ckpt"))
    trainer.model.save_weights(tmp_path / "w.npz")
    return tmp_path / "ckpt", tmp_path / "w.npz", trainer


def manifest(folder):
    with open(folder / "checkpoint.json") as f:
        return json.load(f)


def write_manifest(folder, state):
    (folder / "checkpoint.json").write_text(json.dumps(state))


def replace_data(folder, kind, content, fix_manifest=True):
    """Put ``content`` in the place of a data file; with ``fix_manifest``, as an attacker would, with a matching
    size and checksum in the manifest (so the loaders behind the checksum are tested)."""
    state = manifest(folder)
    (folder / state["files"][kind]["name"]).write_bytes(content)
    if fix_manifest:
        state["files"][kind].update(size=len(content), sha256=hashlib.sha256(content).hexdigest())
        write_manifest(folder, state)


def weights_members(model, **changes):
    members = {f"{k}.npy": npy_bytes(v) for k, v in saving.weight_arrays(model).items()}
    members.update(changes)
    return {k: v for k, v in members.items() if v is not None}


def zipped(tmp_path, members):
    return write_zip(tmp_path / "crafted.npz", members).read_bytes()


def hostile_weights(tmp_path, model, case):
    """The bytes of a hostile weights file, and what the refusal says."""
    good = (tmp_path / "w.npz").read_bytes()
    if case == "truncated":
        return good[: len(good) // 2], "not a readable .npz"
    if case == "zip bomb":
        return zip_bomb(tmp_path / "bomb.npz", key="low_conv/kernel").read_bytes(), \
            r"low_conv.*shape \(3, 3, 1, 4\).*holds \(268435456,\)"
    if case == "pickle":
        return zipped(tmp_path, weights_members(model, **{"low_conv/kernel.npy": npy_bytes(
            np.array([{"evil": 1}], dtype=object))})), "dtype object"
    if case == "extra member":
        return zipped(tmp_path, weights_members(model, **{"sneaky/kernel.npy": npy_bytes(np.zeros(1))})), \
            r"no layer of this model owns, e\.g\. \['sneaky/kernel'\]"
    if case == "missing member":
        return zipped(tmp_path, weights_members(model, **{"output/bias.npy": None})), r"lacks 1 weights.*output/bias"
    if case == "wrong shape":
        return zipped(tmp_path, weights_members(model, **{"output/kernel.npy": npy_bytes(np.zeros((7, 3), "f4"))})), \
            r"layer 'output' weight 'kernel' has shape \(6, 3\) but .* holds \(7, 3\)"
    if case == "integer dtype":
        return zipped(tmp_path, weights_members(model, **{"output/bias.npy": npy_bytes(np.zeros(3, "i8"))})), \
            "'output/bias' has dtype int64, expected a floating-point array"
    if case == "bit flip":
        data = bytearray(good)
        data[len(data) // 2] ^= 0x01
        return bytes(data), "corrupt"
    raise AssertionError(case)


WEIGHT_CASES = ["truncated", "zip bomb", "pickle", "extra member", "missing member", "wrong shape", "integer dtype",
                "bit flip"]


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_hostile_weights_files(saved, tmp_path, case):
    folder, weights_file, trainer = saved
    content, message = hostile_weights(tmp_path, trainer.model, case)
    model = tiny_model(seed=4)
    before = model.get_weights()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    # Model.load_weights / saving.load_weights: refused quickly, naming the file; the model unchanged
    error = refused_quickly(lambda: model.load_weights(bad), message)
    assert str(bad) in str(error)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # in a checkpoint, first as a damaged file (caught by size/checksum), then with a forged manifest
    replace_data(folder, "weights", content, fix_manifest=False)
    assert checkpoint.status(folder) == "unreadable"
    with pytest.raises(CheckpointError, match="truncated|changed or corrupt|bad checksum"):
        checkpoint.verify(folder)
    replace_data(folder, "weights", content)
    for load in (lambda: checkpoint.load_weights(folder, model), lambda: checkpoint.load(folder, make_trainer())):
        start = time.perf_counter()
        with pytest.raises(CheckpointError, match=message) as info:
            load()
        assert time.perf_counter() - start < 1.0
        assert manifest(folder)["files"]["weights"]["name"] in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_damaged_data_files_are_named_with_the_problem(saved):
    folder, _, _ = saved
    state = manifest(folder)
    path = folder / state["files"]["optimizer"]["name"]
    good = path.read_bytes()
    path.write_bytes(good[:-10])
    with pytest.raises(CheckpointError, match=f"{path.name}: truncated: {len(good) - 10} bytes, checkpoint.json "
                                              f"says {len(good)}"):
        checkpoint.verify(folder)
    flipped = bytearray(good)
    flipped[100] ^= 0x40
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=f"{path.name}: bad checksum"):
        checkpoint.read_state(folder)
    path.unlink()
    with pytest.raises(CheckpointError, match=f"{path.name}: missing"):
        checkpoint.load(folder, make_trainer())
    assert checkpoint.status(folder) == "unreadable"


def test_symlinks_are_refused(saved, tmp_path):
    folder, _, _ = saved
    state = manifest(folder)
    path = folder / state["files"]["weights"]["name"]
    elsewhere = tmp_path / "elsewhere.npz"
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere)  # same bytes, same checksum: still refused
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        checkpoint.verify(folder)
    path.unlink()
    shutil.move(elsewhere, path)
    checkpoint.verify(folder)
    shutil.move(folder / "checkpoint.json", tmp_path / "m.json")
    (folder / "checkpoint.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(CheckpointError, match="checkpoint.json: is a symbolic link"):
        checkpoint.read_state(folder)


def _set(path, value):
    def change(state):
        *parents, last = path
        for key in parents:
            state = state[key]
        if value is KeyError:
            del state[last]
        else:
            state[last] = value
    return change


MANIFEST_CASES = {
    "no format": (_set(["format"], KeyError), "missing field 'format'"),
    "format 1": (_set(["format"], 1), "format-1 checkpoint .*cannot be verified"),
    "format 99": (_set(["format"], 99), "unknown format 99"),
    "no epoch": (_set(["epoch"], KeyError), r"missing field\(s\) \['epoch'\]"),
    "epoch a string": (_set(["epoch"], "3"), "'epoch' must be a non-negative integer"),
    "epoch negative": (_set(["epoch"], -1), "'epoch' must be a non-negative integer"),
    "epoch a bool": (_set(["epoch"], True), "'epoch' must be a non-negative integer"),
    "history not lists": (_set(["history", "loss"], 3.0), "history.loss must be a list of numbers"),
    "iterations float": (_set(["optimizer", "iterations"], 2.5), "'optimizer.iterations' must be"),
    "batch size 0": (_set(["batch_size"], 0), "'batch_size' must be a positive integer"),
    "loss weights": (_set(["loss_weights"], ["x"]), "'loss_weights' must be a non-empty list"),
    "rng a list": (_set(["rng"], []), "field 'rng' must be an object"),
    "grad norms": (_set(["grad_norms", "step"], ["a"]), "'grad_norms.step' must be a list"),
    "config a list": (_set(["config"], []), "field 'config' must be an object"),
    "no files": (_set(["files"], KeyError), r"missing field\(s\) \['files'\]"),
    "no sha": (_set(["files", "weights", "sha256"], KeyError), "'files.weights' must be an object with"),
    "bad sha": (_set(["files", "weights", "sha256"], "abc"), "must be 64 lowercase hex digits"),
    "size a string": (_set(["files", "optimizer", "size"], "12"), "'files.optimizer.size' must be"),
    "outside": (_set(["files", "weights", "name"], "../../etc/passwd"), "no path separators"),
    "absolute": (_set(["files", "weights", "name"], "/etc/passwd"), "no path separators"),
    "subfolder": (_set(["files", "weights", "name"], "sub/w.npz"), "no path separators"),
    "hidden": (_set(["files", "weights", "name"], ".w.npz"), "not hidden"),
    "itself": (_set(["files", "weights", "name"], "checkpoint.json"), "its own folder only"),
    "same file twice": (lambda s: s["files"]["optimizer"].update(s["files"]["weights"]), "the same file"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_broken_manifests_are_refused_with_the_field(saved, case):
    folder, _, _ = saved
    change, message = MANIFEST_CASES[case]
    state = manifest(folder)
    change(state)
    write_manifest(folder, state)
    assert checkpoint.status(folder) == "unreadable"
    for call in (checkpoint.verify, checkpoint.read_state, lambda f: checkpoint.load_weights(f, tiny_model()),
                 lambda f: checkpoint.load(f, make_trainer())):
        with pytest.raises(CheckpointError, match=message) as info:
            call(folder)
        assert "checkpoint.json" in str(info.value)


@pytest.mark.parametrize("content, message", [(b'{"format": 2, "epoch"', "not valid JSON"), (b"\xff\xfe{", "UTF-8"),
                                              (b"[1, 2]", "not an object"), (b'{"format": NaN}', "NaN")])
def test_unparsable_manifests(saved, content, message):
    folder, _, _ = saved
    (folder / "checkpoint.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.verify(folder)


def test_status_of_a_folder_left_by_a_killed_first_save(tmp_path):
    (tmp_path / "weights-000001-0123abcd.npz").write_bytes(b"partial")
    (tmp_path / ".checkpoint.json.k2j3.tmp").write_bytes(b"{")
    assert checkpoint.status(tmp_path) == "empty"
    with pytest.raises(CheckpointError, match="leftovers of an interrupted first save"):
        checkpoint.verify(tmp_path)
    trainer = make_trainer()
    checkpoint.save(tmp_path, trainer)
    clean_listing(tmp_path)


# ------------------------------------------------------------------------------------ (d) all or nothing
def trainer_state(trainer):
    """Everything checkpoint.load may change, copied."""
    dropout = trainer.model.get_layer("dropout")
    return copy.deepcopy({
        "weights": [w.copy() for w in trainer.model.get_weights()],
        "optimizer": trainer.optimizer.state_dict(), "lr": trainer.optimizer.lr,
        "momentum": trainer.optimizer.momentum,
        "schedule": trainer.schedule.get_config(), "loss_weights": trainer.loss_weights,
        "batch_size": trainer.batch_size, "epoch": trainer.epoch, "history": trainer.history,
        "grad_norms": trainer.grad_norms,
        "rngs": [trainer.rng.bit_generator.state, dropout.rng.bit_generator.state,
                 backend.global_rng().bit_generator.state]})


def assert_same(a, b):
    assert len(a["weights"]) == len(b["weights"])
    assert all(np.array_equal(x, y) for x, y in zip(a["weights"], b["weights"]))
    oa, ob = a.pop("optimizer"), b.pop("optimizer")
    assert oa["config"] == ob["config"] and oa["iterations"] == ob["iterations"]
    assert oa["arrays"].keys() == ob["arrays"].keys()
    assert all(np.array_equal(oa["arrays"][k], ob["arrays"][k]) for k in oa["arrays"])
    a.pop("weights"), b.pop("weights")
    assert a == b


def _optimizer_file(change):
    def apply(folder, tmp_path, trainer):
        arrays = trainer.optimizer.state_dict()["arrays"]
        change(arrays)
        fileio.save_npz(tmp_path / "o.npz", arrays)
        replace_data(folder, "optimizer", (tmp_path / "o.npz").read_bytes())
    return apply


def _manifest_change(change):
    def apply(folder, tmp_path, trainer):
        state = manifest(folder)
        change(state)
        write_manifest(folder, state)
    return apply


def _bad_trainer_rng(state):
    state["rng"]["trainer"]["state"]["state"] = "not a number"


PART_CASES = {
    "optimizer wrong shape": (_optimizer_file(lambda a: a.update({"velocity:output/kernel": np.zeros((2, 2), "f4")})),
                              r"velocity:output/kernel \(2, 2\) \(weight \(6, 3\)\)"),
    "optimizer extra member": (_optimizer_file(lambda a: a.update({"velocity:ghost/kernel": np.zeros(1, "f4")})),
                               "unexpected member.*velocity:ghost/kernel"),
    "optimizer incomplete": (_optimizer_file(lambda a: a.pop("velocity:output/bias")),
                             r"no state for 1 trainable weight\(s\), e\.g\. \['velocity:output/bias'\]"),
    "optimizer pickle": (lambda folder, tmp_path, trainer: replace_data(folder, "optimizer", zipped(
        tmp_path, {"velocity:output/bias.npy": npy_bytes(np.array([None], dtype=object))})), "dtype object"),
    "optimizer zip bomb": (lambda folder, tmp_path, trainer: replace_data(folder, "optimizer", zip_bomb(
        tmp_path / "bomb.npz", key="velocity:output/kernel").read_bytes()),
        r"velocity:output/kernel \(268435456,\) \(weight \(6, 3\)\)"),
    "optimizer type": (_manifest_change(_set(["optimizer", "config", "name"], "adam")),
                       "state is for a 'adam' optimizer, this one is 'sgd'"),
    "optimizer config key": (_manifest_change(_set(["optimizer", "config", "beta_9"], 1.0)),
                             r"config keys differ: missing \[\], unknown \['beta_9'\]"),
    "optimizer momentum": (_manifest_change(_set(["optimizer", "config", "momentum"], 1.5)), "momentum"),
    "optimizer lr string": (_manifest_change(_set(["optimizer", "config", "lr"], "0.1")), "'lr' must be a finite"),
    "rng trainer state": (_manifest_change(_bad_trainer_rng), "random state of the trainer"),
    "rng layer missing": (_manifest_change(_set(["rng", "layers", "dropout"], KeyError)), r"none for \['dropout'\]"),
    "rng global kind": (_manifest_change(lambda s: s["rng"]["global"].update(bit_generator="MT19937")),
                        "global generator is not a valid PCG64 state"),
    "schedule": (_manifest_change(_set(["schedule", "name"], "warp")), "unknown schedule 'warp'"),
    "schedule argument": (_manifest_change(_set(["schedule", "every"], 0)), "every must be a finite number > 0"),
    "loss weights": (_manifest_change(_set(["loss_weights"], [1.0])), "1 loss weights for a model with 2 outputs"),
    "grad norm groups": (_manifest_change(lambda s: s["grad_norms"]["with_aux"].update(high=[1.0])),
                         "gradient norms recorded for groups"),
}


@pytest.mark.parametrize("case", list(PART_CASES))
def test_a_bad_part_beside_good_weights_changes_nothing(saved, tmp_path, case):
    folder, _, trained = saved
    make_bad, message = PART_CASES[case]
    make_bad(folder, tmp_path, trained)
    target = make_trainer(seed=11)
    target.fit(dataset(), epochs=2)  # a trainer with a state of its own, unlike the checkpoint's
    before = trainer_state(target)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(folder, target)
    assert time.perf_counter() - start < 1.0
    assert_same(trainer_state(target), before)


def test_a_failure_while_applying_is_rolled_back(saved, monkeypatch):
    folder, _, _ = saved
    target = make_trainer(seed=11)
    target.fit(dataset(), epochs=2)
    before = trainer_state(target)

    def broken(*args, **kwargs):
        raise MemoryError("simulated, after the weights and the optimizer were set")

    monkeypatch.setattr(checkpoint, "set_rng_states", broken)
    with pytest.raises(MemoryError):
        checkpoint.load(folder, target)
    assert_same(trainer_state(target), before)
    monkeypatch.undo()
    checkpoint.load(folder, target)
    assert target.epoch == 1


def test_optimizer_state_from_another_model_is_refused_at_load():
    model = tiny_model()
    opt = SGD(0.1, momentum=0.9).attach(model)
    opt.iterations, before = 5, opt.state_dict()
    tinynet.layers.reset_names()
    x = tinynet.layers.Input((4,))
    other = tinynet.Model(x, tinynet.layers.Dense(3, name="output")(x))
    state = SGD(0.1, momentum=0.9).attach(other)
    state.slots["velocity"] = {"output/kernel": np.ones((4, 3), np.float32), "output/bias": np.ones(3, np.float32)}
    with pytest.raises(ValueError, match=r"not for this model: .*velocity:output/kernel \(4, 3\) \(weight \(6, 3\)\)"
                                         r".*no state for .*low_conv/kernel"):
        opt.load_state_dict({**state.state_dict(), "iterations": 9})
    assert opt.iterations == 5 and opt.state_dict()["arrays"] == before["arrays"] == {}
    for bad, message in (({"iterations": -1}, "non-negative integer"), ({"iterations": True}, "non-negative integer"),
                         ({"arrays": {"m:low_conv/kernel": np.zeros((3, 3, 1, 4))}}, "unknown slot 'm'"),
                         ({"config": {"name": "sgd", "lr": 0.1}}, "config keys differ"),
                         ({"arrays": {"velocity:low_conv/kernel": np.zeros((3, 3, 1, 4), int)}}, "floating-point")):
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict({**before, **bad})
        assert opt.iterations == 5 and opt.lr == 0.1
