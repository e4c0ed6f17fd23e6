"""Checkpoints: everything a training run needs to continue exactly, saved and loaded as one unit (no pickle).

Layout (format 2)
-----------------
A checkpoint is a folder:

==================================  ==================================================================================
``checkpoint.json``                 the manifest: format, epoch, history, optimizer hyper-parameters and step count,
                                    schedule, loss weights, batch size, a Trainer's label smoothing (absent: 0,
                                    as written before it existed), the state of every random generator (the
                                    trainer's shuffling/augmentation generator, each Dropout layer's ``rng``,
                                    tinynet's global generator), gradient-norm records, a free-form ``config``
                                    (how to rebuild the model) and ``files``: for ``weights`` and ``optimizer``,
                                    the data file's ``name``, ``size`` in bytes and ``sha256``
``weights-<epoch>-<token>.npz``     every model weight, ``'<layer>/<weight>'`` (BatchNormalization moving statistics
                                    included), as :func:`tinynet.saving.save_weights` writes it
``optimizer-<epoch>-<token>.npz``   the optimizer's state arrays, ``'<slot>:<layer>/<weight>'`` (velocities, moments)
==================================  ==================================================================================

``<epoch>`` is six digits, ``<token>`` eight random hex digits, new for every save. Arrays are plain
uncompressed ``.npz`` (never pickle); generator states are dicts of big integers, which JSON holds exactly;
a non-finite number in the history is stored as the string ``"nan"``, ``"inf"`` or ``"-inf"``.

Guarantees
----------
*One unit.* :func:`save` writes the data files under names no earlier save used, each through
:func:`tinynet.fileio.atomic_write` (temporary file, ``fsync``, rename, ``fsync`` of the folder); then it
writes ``checkpoint.json`` the same way, LAST; only then does it remove the data files the new manifest
no longer names (and temporary files left by an interrupted save). The manifest's rename is the commit:
after an interruption at any instant (``SIGKILL``, Ctrl-C, a full disk, a power cut) the folder holds the
previous checkpoint whole or the new one whole, plus at most some unreferenced files that the next save
removes. If a save fails with an exception, the files it wrote are removed and the error says that the
previous checkpoint is unchanged. One process at a time may save into a folder.

*Verified.* Every reader (:func:`verify`, :func:`read_state`, :func:`load`, :func:`load_weights`,
:func:`status`) parses the manifest, checks every field's presence and type, and checks that each data
file it names is a regular file in the folder (not a symbolic link, no path separators in the name) with
the recorded size and SHA-256. The bytes that were hashed are the bytes that are parsed. Anything wrong
raises :class:`CheckpointError` naming the file and the problem (missing, truncated, bad checksum, missing
field, unknown format, ...). Checkpoints of format 1 (``weights.npz`` + ``optimizer.npz`` beside a manifest
without checksums) are refused with a message saying so.

*All or nothing.* :func:`load` reads and checks everything before it changes anything: weight names,
shapes and dtypes against the model; optimizer type, hyper-parameters and every state array against the
model's trainable weights; the schedule; loss weights and batch size; every generator state (tried on a
scratch generator of the same kind); epoch, history and gradient-norm records. On any error the trainer,
its model and its optimizer are exactly as before.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets

import numpy as np

from . import backend, fileio, saving
from .checks import check_number, short_repr
from .optimizers.schedules import get_schedule

FORMAT_VERSION = 2
STATE_FILE = "checkpoint.json"
DATA_KINDS = ("weights", "optimizer")
LEGACY_FILES = ("weights.npz", "optimizer.npz")  # format 1's data files
MAX_MANIFEST_BYTES = 64 << 20
#: The deepest a manifest's JSON may nest (a checkpoint's needs 5); deeper is refused, so that no later
#: recursive walk (encoding the config again, copying it) can hit Python's recursion limit.
MAX_MANIFEST_DEPTH = 64

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_DATA_NAME = re.compile(r"(weights|optimizer)-\d{6,}-[0-9a-f]{8}\.npz")
# the temporary files fileio.atomic_write makes for these names (the names are short: never shortened there)
_TEMP_NAME = re.compile(r"\.(checkpoint\.json|(weights|optimizer)-\d{6,}-[0-9a-f]{8}\.npz)" + fileio.TEMP_TAIL)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupt or does not fit the model/trainer; says which file."""


def _run_of(trainer):
    """The training run to save or load: a Trainer (or any engine) as it is, or a compiled Model's state."""
    state = getattr(trainer, "training_state", None)
    if state is not None:
        return state
    if getattr(trainer, "compiled", None) is False:
        raise CheckpointError(f"model '{trainer.name}' is not compiled: a checkpoint holds a training run (optimizer "
                              f"state, epoch, history); compile the model first, or use save_weights")
    return trainer


# ------------------------------------------------------------------------------------------ generators
def dropout_layers(model):
    """The layers of ``model`` that own a random generator (``layer.rng``), by name."""
    return {layer.name: layer for layer in model.layers if isinstance(getattr(layer, "rng", None),
                                                                      np.random.Generator)}


def rng_states(model, trainer_rng=None) -> dict:
    """JSON-able states of every generator a training run draws from."""
    states = {"global": backend.global_rng().bit_generator.state,
              "layers": {name: layer.rng.bit_generator.state for name, layer in dropout_layers(model).items()}}
    if trainer_rng is not None:
        states["trainer"] = trainer_rng.bit_generator.state
    return states


def _check_generator_state(generator, state, what):
    """Raise ValueError unless ``state`` is a valid state for ``generator``'s kind of bit generator."""
    if not isinstance(state, dict):
        raise ValueError(f"the random state of {what} must be a dict, got {type(state).__name__}")
    scratch = type(generator.bit_generator)()
    try:
        scratch.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise ValueError(f"the random state of {what} is not a valid {type(scratch).__name__} state "
                         f"({type(error).__name__}: {error})") from None


def _check_rng_states(model, states, trainer_rng):
    if not isinstance(states, dict):
        raise ValueError(f"'rng' must be a dict, got {type(states).__name__}")
    for key in ("global", "layers"):
        if key not in states:
            raise ValueError(f"'rng' lacks {key!r}")
    _check_generator_state(backend.global_rng(), states["global"], "the global generator")
    layers = dropout_layers(model)
    if not isinstance(states["layers"], dict):
        raise ValueError("'rng.layers' must be a dict")
    missing, extra = sorted(set(layers) - set(states["layers"])), sorted(set(states["layers"]) - set(layers))
    if missing or extra:
        raise ValueError(f"generator states do not match the model's layers: none for {missing}, "
                         f"states for layers it does not have {extra}")
    for name, layer in layers.items():
        _check_generator_state(layer.rng, states["layers"][name], f"layer {name!r}")
    if trainer_rng is not None:
        if "trainer" not in states:
            raise ValueError("'rng' lacks the trainer's generator state")
        _check_generator_state(trainer_rng, states["trainer"], "the trainer")


def set_rng_states(model, states, trainer_rng=None):
    """Restore :func:`rng_states` into the model's layers, the global generator and ``trainer_rng``.

    Every state is checked first (on a scratch generator of the same kind); a bad one raises ``ValueError``
    and changes no generator.
    """
    _check_rng_states(model, states, trainer_rng if trainer_rng is not None and "trainer" in states else None)
    backend.global_rng().bit_generator.state = states["global"]
    for name, layer in dropout_layers(model).items():
        layer.rng.bit_generator.state = states["layers"][name]
    if trainer_rng is not None and "trainer" in states:
        trainer_rng.bit_generator.state = states["trainer"]


# ------------------------------------------------------------------------------------------ JSON values
def _encode(value):
    """JSON-able copy: NumPy scalars to Python, non-finite floats to 'nan' / 'inf' / '-inf'."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    return value


def _decode_number(value):
    return _NONFINITE[value] if isinstance(value, str) else value


#: The largest integer a manifest field may hold (epochs, steps, sizes, batch size): an int64.
_MAX_INT = 2 ** 63 - 1


def _is_number(value, allow_encoded=False):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):  # JSON holds any integer; one beyond float range would overflow where it is used
        return abs(value) <= _MAX_INT
    return isinstance(value, float) or (allow_encoded and isinstance(value, str) and value in _NONFINITE)


def _is_int(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= _MAX_INT


def _decode_history(history):
    return {k: [_decode_number(v) for v in values] for k, values in history.items()}


def _decode_grad_norms(grad_norms):
    if grad_norms is None:
        return None
    return {"step": list(grad_norms["step"]),
            "with_aux": _decode_history(grad_norms["with_aux"]),
            "main_only": _decode_history(grad_norms["main_only"])}


# ------------------------------------------------------------------------------------------ the manifest
def _fail(path, message):
    raise CheckpointError(f"{path}: {message}")


def _check_number_lists(table, path, field):
    if not isinstance(table, dict):
        _fail(path, f"field {field!r} must be an object, got {type(table).__name__}")
    for key, values in table.items():
        if not isinstance(values, list) or not all(v is None or _is_number(v, True) for v in values):
            _fail(path, f"field {field}.{key} must be a list of numbers")


def _check_manifest(state, path):
    """Check every field's presence and type; raise CheckpointError naming the field."""
    if not isinstance(state, dict):
        _fail(path, f"holds a JSON {type(state).__name__}, not an object")
    if "format" not in state:
        _fail(path, "missing field 'format' (not a tinynet checkpoint?)")
    fmt = state["format"]
    if fmt == 1:
        _fail(path, "is a format-1 checkpoint (written by an older tinynet: weights.npz and optimizer.npz without "
                    "checksums), which cannot be verified and is not read; its weights.npz loads with "
                    "Model.load_weights, or retrain")
    if fmt != FORMAT_VERSION:
        _fail(path, f"has unknown format {fmt!r}; this tinynet reads format {FORMAT_VERSION}")
    required = ("epoch", "history", "optimizer", "schedule", "loss_weights", "batch_size", "rng", "grad_norms",
                "config", "files")
    missing = [k for k in required if k not in state]
    if missing:
        _fail(path, f"missing field(s) {missing}")
    if not _is_int(state["epoch"]):
        _fail(path, f"field 'epoch' must be a non-negative integer (at most 2**63 - 1), got "
                    f"{short_repr(state['epoch'])}")
    _check_number_lists(state["history"], path, "history")
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("config"), dict) \
            or not isinstance(opt["config"].get("name"), str):
        _fail(path, "field 'optimizer' must be an object with 'config' (an object with a 'name')")
    if not _is_int(opt.get("iterations")):
        _fail(path, f"field 'optimizer.iterations' must be a non-negative integer (at most 2**63 - 1), got "
              f"{short_repr(opt.get('iterations'))}")
    if state["schedule"] is not None and (not isinstance(state["schedule"], dict)
                                          or not isinstance(state["schedule"].get("name"), str)):
        _fail(path, "field 'schedule' must be null or an object with a 'name'")
    lw = state["loss_weights"]
    if not isinstance(lw, list) or not lw or not all(_is_number(v) and math.isfinite(v) for v in lw):
        _fail(path, f"field 'loss_weights' must be a non-empty list of finite numbers, got {short_repr(lw)}")
    if not _is_int(state["batch_size"], 1):
        _fail(path, f"field 'batch_size' must be a positive integer (at most 2**63 - 1), got "
                    f"{short_repr(state['batch_size'])}")
    smoothing = state.get("label_smoothing", 0.0)  # absent from checkpoints written before it existed: 0
    if not _is_number(smoothing) or not 0.0 <= smoothing <= 1.0:
        _fail(path, f"field 'label_smoothing' must be a number in [0, 1], got {short_repr(smoothing)}")
    rng = state["rng"]
    if not isinstance(rng, dict) or not isinstance(rng.get("global"), dict) or not isinstance(rng.get("layers"), dict):
        _fail(path, "field 'rng' must be an object with 'global' and 'layers' generator states")
    gn = state["grad_norms"]
    if gn is not None:
        if not isinstance(gn, dict) or set(gn) != {"step", "with_aux", "main_only"}:
            _fail(path, "field 'grad_norms' must be null or an object with 'step', 'with_aux' and 'main_only'")
        if not isinstance(gn["step"], list) or not all(_is_int(v) for v in gn["step"]):
            _fail(path, "field 'grad_norms.step' must be a list of step numbers")
        _check_number_lists(gn["with_aux"], path, "grad_norms.with_aux")
        _check_number_lists(gn["main_only"], path, "grad_norms.main_only")
    if not isinstance(state["config"], dict):
        _fail(path, f"field 'config' must be an object, got {type(state['config']).__name__}")
    files = state["files"]
    if not isinstance(files, dict) or set(files) != set(DATA_KINDS):
        _fail(path, f"field 'files' must name exactly {list(DATA_KINDS)}")
    for kind in DATA_KINDS:
        entry = files[kind]
        if not isinstance(entry, dict) or set(entry) != {"name", "size", "sha256"}:
            _fail(path, f"field 'files.{kind}' must be an object with 'name', 'size' and 'sha256'")
        name = entry["name"]
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name == STATE_FILE:
            _fail(path, f"field 'files.{kind}.name' is {name!r}: a checkpoint names files in its own folder only "
                        f"(letters, digits, '.', '_', '-'; no path separators, not hidden)")
        if not _is_int(entry["size"]):
            _fail(path, f"field 'files.{kind}.size' must be a non-negative integer (at most 2**63 - 1), got "
                        f"{short_repr(entry['size'])}")
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            _fail(path, f"field 'files.{kind}.sha256' must be 64 lowercase hex digits, got {entry['sha256']!r}")
    if files["weights"]["name"] == files["optimizer"]["name"]:
        _fail(path, "names the same file for the weights and the optimizer state")


def _open_regular(path, what):
    """Open ``path`` read-only, refusing a symbolic link and anything but a regular file before a byte is read
    (:func:`tinynet.fileio.open_regular`); return ``(file, st)``."""
    try:
        f = fileio.open_regular(path, what, follow_symlinks=False)
    except fileio.FileFormatError as error:
        if not os.path.lexists(path):
            raise CheckpointError(f"{path}: missing ({what})") from None
        if os.path.islink(path):
            raise CheckpointError(f"{path}: is a symbolic link; a checkpoint's files must be regular files in "
                                  f"its folder") from None
        raise CheckpointError(str(error)) from None
    return f, os.fstat(f.fileno())


def _read_fd(fd, limit):
    chunks, total = [], 0
    while total <= limit:
        block = os.read(fd, min(1 << 20, limit + 1 - total))
        if not block:
            break
        chunks.append(block)
        total += len(block)
    return b"".join(chunks)


def _parse_json(raw, path):
    """Parse a manifest's bytes; any failure (not UTF-8, not JSON, NaN, nesting too deep for the parser, an
    integer of more digits than Python converts) raises :class:`CheckpointError` naming ``path``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(path, "is not UTF-8 text (corrupt?)")
    try:
        state = json.loads(text, parse_constant=lambda c: _fail(path, f"holds {c}, which is not JSON"))
    except CheckpointError:
        raise
    except json.JSONDecodeError as error:
        _fail(path, f"is not valid JSON (truncated or corrupt?): {error}")
    except RecursionError:
        _fail(path, "is not a checkpoint manifest: its JSON nests too deeply to be read")
    except (ValueError, TypeError, OverflowError, MemoryError) as error:  # e.g. an integer of > 4300 digits
        _fail(path, f"is not a readable checkpoint manifest ({type(error).__name__}: {str(error)[:200]})")
    level, depth = [state], 0
    while level:
        depth += 1
        if depth > MAX_MANIFEST_DEPTH:
            _fail(path, f"is not a checkpoint manifest: its JSON nests deeper than {MAX_MANIFEST_DEPTH} levels")
        level = [v for c in level if isinstance(c, (dict, list)) for v in (c.values() if isinstance(c, dict) else c)]
    return state


def _check_folder(directory):
    if not os.path.lexists(directory):
        raise CheckpointError(f"{directory}: no checkpoint (no such folder)")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: is not a folder (a checkpoint is a folder)")


def _read_manifest(directory) -> dict:
    """The manifest, parsed and checked field by field (the data files are not read)."""
    directory = os.fspath(directory)
    _check_folder(directory)
    path = os.path.join(directory, STATE_FILE)
    if not os.path.lexists(path):
        leftovers = _leftovers(directory)
        raise CheckpointError(f"{directory}: no checkpoint ({STATE_FILE} not found"
                              + (f"; only leftovers of an interrupted first save: {leftovers[:3]})" if leftovers
                                 else ")"))
    f, st = _open_regular(path, "the checkpoint's manifest")
    with f:
        if st.st_size > MAX_MANIFEST_BYTES:
            _fail(path, f"is {st.st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
        raw = _read_fd(f.fileno(), MAX_MANIFEST_BYTES)
    state = _parse_json(raw, path)
    _check_manifest(state, path)
    return state


def _read_data(directory, state, kind) -> bytes:
    """The bytes of one data file, after checking it is a regular file of the recorded size and SHA-256."""
    entry = state["files"][kind]
    path = os.path.join(directory, entry["name"])
    f, st = _open_regular(path, f"the {kind} file named by {STATE_FILE}")
    with f:
        if st.st_size != entry["size"]:
            what = "truncated" if st.st_size < entry["size"] else "changed or corrupt"
            _fail(path, f"{what}: {st.st_size} bytes, {STATE_FILE} says {entry['size']}")
        data = _read_fd(f.fileno(), entry["size"])
    if len(data) != entry["size"]:
        _fail(path, f"truncated while reading: {len(data)} bytes, {STATE_FILE} says {entry['size']}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        _fail(path, f"bad checksum: SHA-256 {digest[:16]}..., {STATE_FILE} says {entry['sha256'][:16]}... "
                    f"(the file is corrupt or was replaced)")
    return data


def _public_state(state) -> dict:
    out = dict(state)
    out["history"] = _decode_history(state["history"])
    out["grad_norms"] = _decode_grad_norms(state["grad_norms"])
    return out


def verify(directory) -> dict:
    """Check a checkpoint folder completely (manifest fields, each file's size and SHA-256); return its state.

    Raises
    ------
    CheckpointError
        With the reason, naming the file: no such folder, not a folder, no manifest, a missing field or one
        of the wrong type, an unknown format, a data file missing, a symbolic link, truncated or with a bad
        checksum.
    """
    directory = os.fspath(directory)
    state = _read_manifest(directory)
    for kind in DATA_KINDS:
        _read_data(directory, state, kind)
    return _public_state(state)


def read_state(directory) -> dict:
    """The verified state of a checkpoint (e.g. to read ``config`` and rebuild the model first).

    Same checks as :func:`verify`; history values are numbers again (``"nan"`` read back as ``nan``).
    """
    return verify(directory)


def files(directory) -> dict:
    """``{'weights': path, 'optimizer': path}``: the data files of a verified checkpoint."""
    directory = os.fspath(directory)
    state = verify(directory)
    return {kind: os.path.join(directory, state["files"][kind]["name"]) for kind in DATA_KINDS}


def _leftovers(directory):
    """Files an interrupted save may leave: temporary files and data files with no manifest naming them."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if _TEMP_NAME.fullmatch(n) or _DATA_NAME.fullmatch(n))


def check_writable(directory):
    """Raise :class:`CheckpointError` unless a checkpoint can be written at ``directory``, before any work: it is
    a folder, or it does not exist yet (:func:`save` makes the missing folders), and a file can be created there
    (:func:`tinynet.fileio.check_writable_folder`). Nothing is left behind."""
    directory = os.fspath(directory)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: is a file, not a folder")
    try:
        fileio.check_writable_folder(directory, make_folders=True)
    except OSError as error:
        raise CheckpointError(f"{directory}: cannot write a checkpoint there ({error})") from None


def orphaned_data(directory) -> list:
    """The names of the data files (``weights-*.npz``, ``optimizer-*.npz``) in a folder that has no manifest:
    what a first save interrupted before its commit leaves, or a checkpoint whose ``checkpoint.json`` was
    removed. :func:`status` calls such a folder ``'empty'`` (there is no checkpoint to read); a new run asked to
    write there should not remove them unasked."""
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [] if STATE_FILE in names else sorted(n for n in names if _DATA_NAME.fullmatch(n))


def status(directory) -> str:
    """What is at ``directory``, in one word or two.

    Returns
    -------
    str
        ``'absent'`` (no such path), ``'not a folder'`` (a file, or a link to one), ``'empty'`` (an empty
        folder, or one holding only what an interrupted first save left: temporary files and data files
        that no manifest names), ``'checkpoint'`` (a checkpoint that passes :func:`verify`) or
        ``'unreadable'`` (a folder with other files but no readable checkpoint; :func:`verify` says why).
    """
    directory = os.fspath(directory)
    if not os.path.lexists(directory):
        return "absent"
    if not os.path.isdir(directory):
        return "not a folder"
    try:
        names = os.listdir(directory)
    except OSError:
        return "unreadable"
    if STATE_FILE not in names and all(_TEMP_NAME.fullmatch(n) or _DATA_NAME.fullmatch(n) for n in names):
        return "empty"
    try:
        verify(directory)
    except CheckpointError:
        return "unreadable"
    return "checkpoint"


# ------------------------------------------------------------------------------------------ saving
def _committed(directory, names) -> bool | None:
    """Does the manifest on disk name ``names``? None when it cannot be told."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.lexists(path):
        return False
    try:
        with fileio.open_regular(path, follow_symlinks=False) as f:  # never blocks on a FIFO
            state = json.loads(f.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
        return {state["files"][k]["name"] for k in DATA_KINDS} == set(names)
    except Exception:  # noqa: BLE001 -- unreadable: keep the files, the next save removes them
        return None


def _remove_unreferenced(directory, keep, legacy):
    """After a commit: remove data files the manifest does not name, stale temporary files and (``legacy``)
    format 1's data files. Only names this module writes are touched."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name in keep:
            continue
        if _DATA_NAME.fullmatch(name) or _TEMP_NAME.fullmatch(name) or (legacy and name in LEGACY_FILES):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def save(directory, trainer, config=None):
    """Write a checkpoint of ``trainer`` (a :class:`tinynet.training.Trainer`) into ``directory``, as one unit.

    Parameters
    ----------
    directory : str or os.PathLike
        Created (with its parents) if missing. A checkpoint already there is replaced as a whole, and only
        once the new one is complete (see the module notes).
    trainer : tinynet.training.Trainer, or a compiled tinynet.Model
        A compiled model saves the run :meth:`tinynet.Model.compile` and ``fit`` keep
        (:attr:`tinynet.Model.training_state`: optimizer, epoch, history, shuffling generator).
    config : dict, optional
        JSON-able description of the run (model variant, input shape, classes, normalisation, ...).

    Returns
    -------
    str : ``directory``

    Raises
    ------
    CheckpointError
        ``directory`` is a file; ``config`` is not JSON-able; a weight or an optimizer state array that
        :func:`load` would refuse (NaN, inf, a negative moving variance or second moment), naming it. Nothing
        is written then.
    OSError
        Writing failed (e.g. the disk is full); the files of this save were removed and the message says
        that the previous checkpoint is unchanged.
    """
    directory = os.fspath(directory)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: is a file, not a checkpoint folder; refusing to save there")
    trainer = _run_of(trainer)
    model, optimizer = trainer.model, trainer.optimizer
    epoch = int(trainer.epoch)
    # everything is gathered and checked in memory before the first byte is written
    weights = saving.weight_arrays(model)
    opt_state = optimizer.state_dict()
    # refuse what load() would refuse, before anything is written: weights its layers would not take back
    # (NaN, inf, ...) and an optimizer state its validate_state_dict refuses
    try:
        saving.check_loadable(model, weights, "checkpoint.save")
    except ValueError as error:
        raise CheckpointError(f"{directory}: {error}") from None
    try:
        optimizer.validate_state_dict(opt_state)
    except ValueError as error:
        raise CheckpointError(f"{directory}: checkpoint.save: cannot save the optimizer state ({error}); load "
                              f"would refuse it, so nothing was written") from None
    state = {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "history": _encode(trainer.history),
        "optimizer": _encode({"config": opt_state["config"], "iterations": opt_state["iterations"]}),
        "schedule": _encode(trainer.schedule.get_config()) if trainer.schedule is not None else None,
        "loss_weights": _encode(list(trainer.loss_weights)),
        "batch_size": int(trainer.batch_size),
        "rng": rng_states(model, trainer.rng),
        "grad_norms": _encode(trainer.grad_norms),
        "config": config or {},
    }
    if hasattr(trainer, "label_smoothing"):  # a Trainer's; Model.fit's loss objects keep theirs in the compile
        try:  # an attribute, which nothing stops one setting by hand
            state["label_smoothing"] = float(check_number("checkpoint.save", "label_smoothing",
                                                          trainer.label_smoothing, low=0, high=1))
        except ValueError as error:
            raise CheckpointError(f"{directory}: {error}; load would refuse it, so nothing was written") from None
    try:
        json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{directory}: cannot save this checkpoint, its state is not JSON-able "
                              f"({error}); nothing was written") from None
    for kind, arrays in (("weights", weights), ("optimizer", opt_state["arrays"])):
        try:
            fileio.check_npz_names(arrays, f"the {kind} file")
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{directory}: cannot save this checkpoint: {error}") from None
    os.makedirs(directory, exist_ok=True)
    had_manifest = os.path.lexists(os.path.join(directory, STATE_FILE))
    existing = set(os.listdir(directory))
    while True:
        token = secrets.token_hex(4)
        names = {kind: f"{kind}-{epoch:06d}-{token}.npz" for kind in DATA_KINDS}
        if not existing & set(names.values()):
            break
    written = []
    try:
        entries = {}
        for kind, arrays in (("weights", weights), ("optimizer", opt_state["arrays"])):
            path = os.path.join(directory, names[kind])
            written.append(path)
            fileio.save_npz(path, arrays)
            entries[kind] = {"name": names[kind], "size": os.path.getsize(path), "sha256": fileio.sha256_file(path)}
        state["files"] = entries
        fileio.write_text(os.path.join(directory, STATE_FILE), json.dumps(state, indent=1, allow_nan=False) + "\n")
    except BaseException as error:
        # Interrupted or failed. If the new manifest is already in place (an interrupt after its rename), the
        # new checkpoint stands and its files stay; if it is not, this save's files are removed; if that
        # cannot be told, nothing is removed (unreferenced files are harmless, the next save removes them).
        committed = _committed(directory, names.values())
        if committed is False:
            for path in written:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if isinstance(error, OSError):
                message = (f"checkpoint: could not save epoch {epoch} into {directory!r} "
                           f"({error.strerror or error}); "
                           + ("the previous checkpoint there is unchanged" if had_manifest
                              else "nothing was left there"))
                if error.errno is None:
                    raise OSError(message) from error
                raise OSError(error.errno, message, error.filename) from error
        raise
    _remove_unreferenced(directory, keep={STATE_FILE, *names.values()}, legacy=had_manifest)
    return directory


# ------------------------------------------------------------------------------------------ loading
def load_weights(directory, model) -> dict:
    """Load only the model weights of a verified checkpoint (for evaluation and prediction), all or nothing.

    Returns
    -------
    dict : the checkpoint's state (``config`` included)
    """
    directory = os.fspath(directory)
    state = _read_manifest(directory)
    data = _read_data(directory, state, "weights")
    path = os.path.join(directory, state["files"]["weights"]["name"])
    try:
        saving.load_weights(model, path, data=data)
    except (fileio.FileFormatError, KeyError, ValueError) as error:
        raise CheckpointError(str(error) if str(error).startswith(("load_weights", path)) else f"{path}: {error}") \
            from None
    return _public_state(state)


def _read_optimizer_arrays(optimizer, model, path, data):
    """The optimizer file's arrays; names and shapes are checked from the headers before any data is read."""
    shapes = {f"{slot}:{key}": tuple(layer.weights[i].shape)
              for key, layer, i in optimizer.trainable_entries(model) for slot in optimizer.slot_names}
    headers = fileio.npz_headers(path, allowed=shapes, data=data)
    wrong = [f"{key} {shape} (weight {shapes[key]})" for key, (shape, _) in headers.items() if shape != shapes[key]]
    if wrong:
        raise CheckpointError(f"{path}: the optimizer state is not for this model: {len(wrong)} shape(s) differ, "
                              f"e.g. {wrong[:5]}")
    return fileio.read_npz(path, expected={key: (shapes[key], None) for key in headers}, data=data)


def load(directory, trainer) -> dict:
    """Restore a checkpoint into ``trainer``: weights, optimizer state, schedule, generators, epoch, history.

    All or nothing: the files are verified (see :func:`verify`) and every part is checked against the
    trainer's model and optimizer before anything changes; on any error the trainer, model and optimizer
    are exactly as before. The trainer must be built on the same architecture (layer names and shapes)
    and optimizer type. ``trainer`` may also be a compiled :class:`tinynet.Model` (its training state is
    restored; continue with ``model.fit(..., initial_epoch=state['epoch'])``).

    Returns
    -------
    dict : the checkpoint's state (``config`` included)

    Raises
    ------
    CheckpointError
        Naming the file and what does not fit.
    """
    directory = os.fspath(directory)
    state = _read_manifest(directory)
    blobs = {kind: _read_data(directory, state, kind) for kind in DATA_KINDS}
    paths = {kind: os.path.join(directory, state["files"][kind]["name"]) for kind in DATA_KINDS}
    manifest = os.path.join(directory, STATE_FILE)
    trainer = _run_of(trainer)
    model, optimizer = trainer.model, trainer.optimizer

    # 1. check and prepare everything; nothing changes here
    try:
        weights = saving.read_weights(model, paths["weights"], data=blobs["weights"])
    except (fileio.FileFormatError, KeyError, ValueError) as error:
        raise CheckpointError(str(error)) from None
    opt_path = paths["optimizer"]
    saved_name = state["optimizer"]["config"]["name"]
    if saved_name != optimizer.name:
        _fail(manifest, f"the optimizer state is for a {saved_name!r} optimizer, this one is {optimizer.name!r}")
    try:
        arrays = _read_optimizer_arrays(optimizer, model, opt_path, blobs["optimizer"])
        opt_state = {**state["optimizer"], "arrays": arrays}
        optimizer.validate_state_dict(opt_state)
    except CheckpointError:
        raise
    except fileio.FileFormatError as error:
        raise CheckpointError(f"{error} (is it the state of a {type(optimizer).__name__} for this model?)") \
            from None
    except ValueError as error:
        raise CheckpointError(f"{opt_path}: {error}") from None
    except OverflowError as error:  # a config integer beyond float range
        raise CheckpointError(f"{manifest}: field 'optimizer.config' holds a number beyond float range ({error})") \
            from None
    try:
        schedule = get_schedule(state["schedule"]) if state["schedule"] is not None else None
    except (TypeError, ValueError, KeyError, OverflowError) as error:  # Overflow: an integer beyond float range
        raise CheckpointError(f"{manifest}: bad 'schedule' {str(state['schedule'])[:300]} ({error})") from None
    if len(state["loss_weights"]) != len(model.outputs):
        _fail(manifest, f"{len(state['loss_weights'])} loss weights for a model with {len(model.outputs)} outputs")
    try:
        _check_rng_states(model, state["rng"], trainer.rng)
    except ValueError as error:
        raise CheckpointError(f"{manifest}: {error}") from None
    grad_norms = _decode_grad_norms(state["grad_norms"])
    if grad_norms is not None and trainer.grad_norms is not None:
        for part in ("with_aux", "main_only"):
            if set(grad_norms[part]) != set(trainer.grad_norms[part]):
                _fail(manifest, f"gradient norms recorded for groups {sorted(grad_norms[part])}, the trainer "
                                f"records {sorted(trainer.grad_norms[part])}")
    history = _decode_history(state["history"])

    # 2. apply; should anything still fail, put everything back
    layers = [(layer, list(layer.weights), list(layer.grads)) for layer in model.layers]
    opt_attrs = dict(vars(optimizer))
    generators = [backend.global_rng(), trainer.rng] + [layer.rng for layer in dropout_layers(model).values()]
    generator_states = [g.bit_generator.state for g in generators]
    names = ("schedule", "loss_weights", "batch_size", "epoch", "history", "grad_norms", "label_smoothing")
    trainer_attrs = {name: getattr(trainer, name) for name in names if hasattr(trainer, name)}
    try:
        saving.assign_weights(model, weights)
        optimizer.load_state_dict(opt_state)
        set_rng_states(model, state["rng"], trainer.rng)
        trainer.schedule = schedule
        trainer.loss_weights = [float(w) for w in state["loss_weights"]]
        trainer.batch_size = int(state["batch_size"])
        if hasattr(trainer, "label_smoothing"):  # a Trainer's (tinynet.training); the run's loss, as loss_weights
            trainer.label_smoothing = float(state.get("label_smoothing", 0.0))
        trainer.epoch = int(state["epoch"])
        trainer.history = history
        if grad_norms is not None and trainer.grad_norms is not None:
            trainer.grad_norms = grad_norms
    except BaseException:
        for layer, layer_weights, grads in layers:
            layer.weights, layer.grads = layer_weights, grads
        vars(optimizer).clear()
        vars(optimizer).update(opt_attrs)
        for generator, generator_state in zip(generators, generator_states):
            generator.bit_generator.state = generator_state
        for name, value in trainer_attrs.items():
            if name != "grad_norms" or value is not None:  # a trainer without a recorder takes no record
                setattr(trainer, name, value)
        raise
    return _public_state(state)


__all__ = ["CheckpointError", "save", "load", "load_weights", "read_state", "verify", "status", "orphaned_data",
           "check_writable", "files",
           "rng_states", "set_rng_states", "FORMAT_VERSION", "STATE_FILE"]
