"""Review 6: hostile and careless files given to the readers (fileio, saving, checkpoint, data loaders).

Each test is a file that used to get through a check (a leaked NumPy/zipfile/Pillow exception, an unbounded
allocation, an unclear message, a file accepted that should not be); each must give a clear error naming it.
"""
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest

import tinynet
from tinynet import checkpoint, fileio, saving
from tinynet.data.cifar import load_cifar10_batch
from tinynet.data.images import read_image
from tinynet.data.loaders import load_npz
from tinynet.fileio import FileFormatError
from tinynet.optim import SGD, StepDecay
from tinynet.training import Trainer

from helpers import tiny_model, toy_data


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def _npy(descr=None, shape=None, data=b"", header=None):
    """An .npy member with any header text (what np.save would never write)."""
    text = header if header is not None else f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    raw = text.encode("latin1")
    raw += b" " * (63 - (10 + len(raw)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return str(path)


def _dataset(path, **extra):
    members = {"x.npy": _npy("|u1", (2, 4, 4, 1), bytes(32)), "y.npy": _npy("<i8", (2,), bytes(16))}
    members.update({name + ".npy": raw for name, raw in extra.items()})
    return _zip(path, members)


# ------------------------------------------------------------------------------------------------ fileio.read_npz
def test_elements_of_zero_bytes_are_refused_not_counted_as_free(tmp_path):
    # 10**7 'S0' class names take no bytes in the file nor in the cap, then a Python list of 10**7 items
    path = _dataset(tmp_path / "d.npz", class_names=_npy("|S0", (10 ** 7,)))
    with pytest.raises(FileFormatError, match=r"d\.npz.*'class_names'.*0 bytes"):
        fileio.read_npz(path)
    with pytest.raises(FileFormatError, match="0 bytes"):
        load_npz(path, max_bytes=10 ** 6)


def test_a_bool_in_a_shape_is_refused(tmp_path):
    path = _zip(tmp_path / "b.npz", {"a.npy": _npy("<f4", (True, 2), bytes(8))})
    with pytest.raises(FileFormatError, match=r"b\.npz.*impossible shape"):
        fileio.read_npz(path)


def test_an_unterminated_header_is_a_file_format_error(tmp_path):
    # NumPy's header parser raises tokenize.TokenError here (what a flipped bit in a deflated header gives)
    path = _zip(tmp_path / "t.npz", {"a.npy": _npy(header="{'descr': '<f4', 'fortran_order': False, 'shape': (2,")})
    with pytest.raises(FileFormatError, match=r"t\.npz.*unreadable \.npy header"):
        fileio.read_npz(path)


def test_a_sub_array_dtype_is_refused_by_name(tmp_path):
    path = _zip(tmp_path / "s.npz", {"a.npy": _npy(("<f4", (3,)), (2,), bytes(24))})
    with pytest.raises(FileFormatError, match=r"s\.npz: member 'a' has a sub-array dtype"):
        fileio.read_npz(path, expected={"a": ((2,), None)})


def test_an_unsupported_zip_version_is_a_file_format_error(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros(2, np.float32))
    raw = bytearray(buf.getvalue())
    central = raw.find(b"PK\x01\x02")
    raw[central + 6] = 73  # "version needed to extract": 7.3 (zipfile raises NotImplementedError)
    path = tmp_path / "v.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match=r"v\.npz: not a readable \.npz"):
        fileio.read_npz(path)


# ------------------------------------------------------------------------------------------------ load_npz
@pytest.mark.parametrize("code", [0x7FFFFFFF, 0xD800], ids=["beyond-unicode", "surrogate"])
def test_class_names_that_are_not_characters_are_refused(tmp_path, code):
    path = _dataset(tmp_path / "n.npz", class_names=_npy("<U1", (1,), struct.pack("<I", code)))
    with pytest.raises(FileFormatError, match=r"n\.npz: 'class_names'.*not Unicode characters"):
        load_npz(path)


# ------------------------------------------------------------------------------------------------ CIFAR
def test_a_cifar_array_with_a_dimension_beyond_int64_is_refused(tmp_path):
    raw = pickle.dumps({b"data": np.zeros((0, 7), np.uint8), b"labels": []}, protocol=2)
    i = raw.find(b"K\x07")  # BININT1 7: the second dimension, made 2**64 (LONG1)
    raw = raw[:i] + b"\x8a\x09" + (2 ** 64).to_bytes(9, "little") + raw[i + 2:]
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    with pytest.raises(FileFormatError, match="data_batch_1: not a safe CIFAR batch.*bad array shape"):
        load_cifar10_batch(path)


def test_cifar_uint64_labels_are_not_reported_as_negative(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8),
                                   b"labels": np.array([2 ** 64 - 1], np.uint64)}, protocol=2))
    with pytest.raises(FileFormatError, match="test_batch: 'labels' holds values up to 18446744073709551615"):
        load_cifar10_batch(path)


# ------------------------------------------------------------------------------------------------ images
def test_an_image_of_another_format_is_not_decoded(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "icon.ico")
    os.replace(tmp_path / "icon.ico", tmp_path / "x.png")  # an ICO (or an EPS: Ghostscript) named .png
    with pytest.raises(FileFormatError, match=r"x\.png: not an image.*PNG, JPEG"):
        read_image(tmp_path / "x.png")


def test_a_decompression_bomb_is_called_too_large_not_corrupt(tmp_path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))
    with pytest.raises(FileFormatError, match=r"bomb\.png: too large an image"):
        read_image(path)


# ------------------------------------------------------------------------------------------------ saving
@pytest.mark.filterwarnings("error")
def test_float64_weights_beyond_float32_are_refused_without_a_warning(tmp_path):
    model = tiny_model()
    path = str(tmp_path / "w.npz")
    model.save_weights(path)
    arrays = fileio.read_npz(path)
    np.savez(path, **{k: v.astype(np.float64) * 1e300 for k, v in arrays.items()})
    before = [w.copy() for layer in model.layers for w in layer.weights]
    with pytest.raises(FileFormatError, match="NaN or infinite"):
        saving.load_weights(model, path)
    assert all(np.array_equal(a, b) for a, b in zip(before, [w for layer in model.layers for w in layer.weights]))


# ------------------------------------------------------------------------------------------------ checkpoints
def _trainer():
    model = tiny_model(seed=0)
    return Trainer(model, SGD(0.05, momentum=0.9), schedule=StepDecay(0.05, every=1), batch_size=10, seed=7,
                   verbose=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tinynet.set_cpu_kernels("numpy")
    folder = str(tmp_path_factory.mktemp("ckpt") / "base")
    trainer = _trainer()
    trainer.fit(toy_data(n=20), epochs=1)
    checkpoint.save(folder, trainer)
    return folder


def _tampered(saved, tmp_path, edit):
    folder = str(tmp_path / "c")
    shutil.copytree(saved, folder)
    path = os.path.join(folder, checkpoint.STATE_FILE)
    with open(path) as f:
        state = json.load(f)
    edit(state)
    with open(path, "w") as f:
        json.dump(state, f)
    return folder


@pytest.mark.parametrize("edit, field", [
    (lambda s: s["schedule"].__setitem__("every", 10 ** 400), "schedule"),
    (lambda s: s.__setitem__("loss_weights", [10 ** 400, 1]), "loss_weights"),
    (lambda s: s["optimizer"]["config"].__setitem__("learning_rate", 10 ** 400), "optimizer.config"),
    (lambda s: s.__setitem__("epoch", 10 ** 30), "epoch"),
    (lambda s: s.__setitem__("history", {"loss": [10 ** 400]}), "history"),
], ids=["schedule", "loss_weights", "learning_rate", "epoch", "history"])
def test_integers_beyond_range_in_a_manifest_are_refused(saved, tmp_path, edit, field):
    folder = _tampered(saved, tmp_path, edit)
    trainer = _trainer()
    before = [w.copy() for layer in trainer.model.layers for w in layer.weights]
    with pytest.raises(checkpoint.CheckpointError, match=rf"checkpoint\.json.*{field}") as info:
        checkpoint.load(folder, trainer)
    assert len(str(info.value)) < 1000  # a 400-digit number is not printed whole
    assert trainer.epoch == 0
    assert all(np.array_equal(a, b) for a, b in
               zip(before, [w for layer in trainer.model.layers for w in layer.weights]))


def test_a_tampered_weights_file_with_a_matching_checksum_is_still_checked(saved, tmp_path):
    folder = str(tmp_path / "c")
    shutil.copytree(saved, folder)
    manifest = os.path.join(folder, checkpoint.STATE_FILE)
    with open(manifest) as f:
        state = json.load(f)
    name = state["files"]["weights"]["name"]
    raw = _zip(os.path.join(folder, name), {"low_conv/kernel.npy": _npy("|S0", (10 ** 6,))})
    data = open(raw, "rb").read()
    state["files"]["weights"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    with open(manifest, "w") as f:
        json.dump(state, f)
    with pytest.raises(checkpoint.CheckpointError, match="0 bytes"):
        checkpoint.load_weights(folder, tiny_model())


def test_an_npz_replaced_between_its_checks_and_its_read_is_refused(tmp_path, monkeypatch):
    # load_npz checks the layout and the peak from the headers, then opens the file again to read it
    import tinynet.data.loaders as loaders

    path = _dataset(tmp_path / "r.npz")
    real = loaders.npz_headers

    def headers_then_swap(*args, **kwargs):
        headers = real(*args, **kwargs)
        _zip(path, {"x.npy": _npy("<f8", (2, 64, 64, 3), bytes(2 * 64 * 64 * 3 * 8)),  # beyond what was checked
                    "y.npy": _npy("<i8", (2,), bytes(16))})
        return headers

    monkeypatch.setattr(loaders, "npz_headers", headers_then_swap)
    with pytest.raises(FileFormatError, match=r"r\.npz.*'x'"):
        load_npz(path)


def test_fortran_ordered_weights_load_in_c_order(tmp_path):
    model = tiny_model()
    path = str(tmp_path / "w.npz")
    model.save_weights(path)
    np.savez(path, **{k: np.asfortranarray(v) for k, v in fileio.read_npz(path).items()})
    other = tiny_model(seed=3)
    other.load_weights(path)
    assert all(w.flags.c_contiguous for layer in other.layers for w in layer.weights)
    assert all(np.array_equal(a, b) for a, b in zip([w for layer in model.layers for w in layer.weights],
                                                    [w for layer in other.layers for w in layer.weights]))


@pytest.mark.parametrize("member_suffix", [".txt", ".npy"])
def test_a_member_name_of_64_kib_is_shown_cut(tmp_path, member_suffix):
    """A zip member's name may be 64 KiB long: the message shows its first 100 characters and its length."""
    path = tmp_path / "long.npz"
    name = "n" * 60_000 + member_suffix
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, b"")
    with pytest.raises(FileFormatError, match=r"unexpected member.*\.\.\. \(600\d\d characters\)") as info:
        fileio.read_npz(path, allowed={"x"})
    assert len(str(info.value)) < 400
