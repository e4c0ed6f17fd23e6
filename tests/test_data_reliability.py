"""Data loaders as a new user and an attacker would use them: real pixel ranges, corrupt files, bounded work.

Pillow images of every mode are written in ``tmp_path`` and must come back in [0, 1] by their real range;
damaged files must raise :class:`FileFormatError` naming the file; a crafted pickle, ``.npz`` or IDX file must
be refused (or read) in bounded time and memory; :func:`check_for_training` must refuse what cannot train.
"""
import gzip
import io
import os
import pickle
import re
import struct
import time
import zipfile

import numpy as np
import pytest
from numpy._core import numeric
from PIL import Image

from tinynet import data
from tinynet.fileio import FileFormatError


# ------------------------------------------------------------------------------------------ Pillow modes
U16 = np.array([[0, 1, 300], [1000, 40000, 65535]], np.uint16)


def test_16bit_png_is_scaled_by_65535_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(U16).save(path)
    assert Image.open(path).mode == "I;16"
    x = data.read_image(str(path))
    assert x.shape == (2, 3, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], U16 / 65535.0, rtol=1e-6)
    assert len(np.unique(x)) == 6  # 0, 1 and 300 stay distinct: nothing was clipped or cut to 8 bits
    rgb = data.read_image(str(path), channels=3)  # grey → RGB in float: still 16-bit values
    assert rgb.shape == (2, 3, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_allclose(rgb[..., 1], U16 / 65535.0, rtol=1e-6)


def test_16bit_big_endian_tiff_and_pgm(tmp_path):
    Image.frombytes("I;16B", (3, 2), U16.astype(">u2").tobytes()).save(tmp_path / "be.tif")
    assert Image.open(tmp_path / "be.tif").mode == "I;16B"
    np.testing.assert_allclose(data.read_image(str(tmp_path / "be.tif"))[..., 0], U16 / 65535.0, rtol=1e-6)
    # a 16-bit PGM opens in Pillow's 32-bit mode 'I' with values scaled to 0..65535
    (tmp_path / "deep.pgm").write_bytes(b"P5\n3 2\n65535\n" + U16.astype(">u2").tobytes())
    assert Image.open(tmp_path / "deep.pgm").mode == "I"
    np.testing.assert_allclose(data.read_image(str(tmp_path / "deep.pgm"))[..., 0], U16 / 65535.0, rtol=1e-6)


def test_32bit_int_tiff_in_16bit_range_is_read_and_beyond_is_refused(tmp_path):
    Image.fromarray(U16.astype(np.int32)).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    np.testing.assert_allclose(data.read_image(str(tmp_path / "i32.tif"))[..., 0], U16 / 65535.0, rtol=1e-6)
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(FileFormatError, match=r"wide\.tif.*\[0, 70000\]"):
        data.read_image(str(tmp_path / "wide.tif"))


def test_float_tiffs(tmp_path):
    unit = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    assert Image.open(tmp_path / "unit.tif").mode == "F"
    np.testing.assert_array_equal(data.read_image(str(tmp_path / "unit.tif"))[..., 0], unit)  # kept
    Image.fromarray(unit * 255).save(tmp_path / "eight.tif")
    np.testing.assert_allclose(data.read_image(str(tmp_path / "eight.tif"))[..., 0], unit, atol=1e-6)  # ÷ 255
    for name, values, message in [("neg.tif", unit - 0.5, r"\[-0.5, 0.5\]"),
                                  ("big.tif", unit * 1000, r"\[0, 1000\]"),
                                  ("nan.tif", np.where(unit > 0.5, np.nan, unit), "6 pixel value.*NaN"),
                                  ("inf.tif", np.where(unit > 0.9, np.inf, unit), "NaN or inf")]:
        Image.fromarray(values.astype(np.float32)).save(tmp_path / name)
        with pytest.raises(FileFormatError, match=name.replace(".", r"\.") + ".*" + message):
            data.read_image(str(tmp_path / name))


def test_eight_bit_modes(tmp_path):
    grey = np.array([[0, 128, 255], [7, 64, 200]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_allclose(data.read_image(str(tmp_path / "l.png"))[..., 0], grey / 255.0, rtol=1e-6)
    Image.fromarray(np.stack([grey, 255 - grey], -1)).save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    la = data.read_image(str(tmp_path / "la.png"))
    assert la.shape == (2, 3, 1)  # alpha dropped, grey kept
    np.testing.assert_allclose(la[..., 0], grey / 255.0, rtol=1e-6)
    bits = np.array([[True, False, True], [False, False, True]])
    Image.fromarray(bits).save(tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").mode == "1"
    np.testing.assert_array_equal(data.read_image(str(tmp_path / "one.png"))[..., 0], bits.astype(np.float32))
    rgba = np.random.default_rng(0).integers(0, 256, (2, 3, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    x = data.read_image(str(tmp_path / "rgba.png"))
    assert x.shape == (2, 3, 3)
    np.testing.assert_allclose(x, rgba[..., :3] / 255.0, rtol=1e-6)
    lum = data.read_image(str(tmp_path / "rgba.png"), channels=1)  # 0.299 R + 0.587 G + 0.114 B, as Pillow's 'L'
    pil = np.asarray(Image.fromarray(rgba[..., :3]).convert("L")) / 255.0
    np.testing.assert_allclose(lum[..., 0], pil, atol=1.01 / 255)


def test_palette_and_cmyk(tmp_path):
    pal = Image.new("P", (2, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    pal.putpixel((1, 0), 1)
    pal.putpixel((0, 1), 2)
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    x = data.read_image(str(tmp_path / "p.png"))
    assert x.shape == (2, 2, 3)
    np.testing.assert_array_equal(x[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(x[0, 1], [0, 1, 0])
    np.testing.assert_array_equal(x[1, 0], [0, 0, 1])
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png")
    np.testing.assert_array_equal(data.read_image(str(tmp_path / "pt.png"))[0, 1], [0, 1, 0])
    Image.new("CMYK", (2, 2), (10, 20, 30, 40)).save(tmp_path / "c.tif")
    expected = np.asarray(Image.open(tmp_path / "c.tif").convert("RGB")) / 255.0
    np.testing.assert_allclose(data.read_image(str(tmp_path / "c.tif")), expected, rtol=1e-6)


def test_resizing_keeps_16bit_precision(tmp_path):
    ramp = (np.arange(16, dtype=np.uint16) * 10 + 5).reshape(4, 4)  # all below 1/255 of full scale
    Image.fromarray(ramp).save(tmp_path / "dark.png")
    x = data.read_image(str(tmp_path / "dark.png"), image_size=8)
    assert x.shape == (8, 8, 1) and 0 < x.min() and x.max() < 1 / 255
    expected = np.asarray(Image.fromarray((ramp / 65535.0).astype(np.float32)).resize((8, 8), Image.BILINEAR))
    np.testing.assert_allclose(x[..., 0], expected, rtol=1e-5)


def test_folder_mixes_grey_16bit_and_colour_into_rgb(tmp_path):
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
    Image.fromarray(U16).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.full((2, 3, 3), 51, np.uint8)).save(tmp_path / "b" / "0.png")
    ds = data.load_folder(str(tmp_path))
    assert ds.x.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(ds.x[0, ..., 1], U16 / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(ds.x[1], 0.2, rtol=1e-6)


# ------------------------------------------------------------------------------------------ damaged files
def _png_bytes(shape=(16, 16)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, content, message", [
    ("truncated.png", _png_bytes()[:60], "truncated|corrupt"),
    ("text.png", b"this is not an image\n", "not an image"),
    ("empty.png", b"", "empty file"),
])
def test_damaged_images_raise_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(tmp_path / name))}: .*({message})"):
        data.read_image(str(tmp_path / name))
    for cls in ("a", "b"):  # in a folder the same error comes out: nothing is skipped silently
        os.makedirs(tmp_path / "set" / cls, exist_ok=True)
        (tmp_path / "set" / cls / "good.png").write_bytes(_png_bytes())
    (tmp_path / "set" / "b" / name).write_bytes(content)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(tmp_path / 'set' / 'b' / name))}: "):
        data.load_dataset(str(tmp_path / "set"))


def test_folder_errors_name_the_folder_or_files(tmp_path):
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "empty")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a" / "0.png")
    with pytest.raises(FileFormatError, match="'empty' holds no images"):
        data.load_folder(str(tmp_path))
    os.rmdir(tmp_path / "empty")
    os.makedirs(tmp_path / "b")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b" / "0.png")
    with pytest.raises(FileFormatError, match=r"different sizes.*0\.png is 4x4.*0\.png is 5x4.*image_size"):
        data.load_folder(str(tmp_path))
    assert data.load_folder(str(tmp_path), image_size=4).x.shape == (2, 4, 4, 1)
    with pytest.raises(FileFormatError, match="cap"):
        data.load_folder(str(tmp_path), max_bytes=100)


def test_class_names_are_kept_as_they_are_and_empty_ones_refused(tmp_path):
    odd = "caf\u00e9 \x1b[31mred\u202e"
    for cls in (odd, "plain"):
        os.makedirs(tmp_path / cls)
        for i in range(2):
            Image.fromarray(np.full((4, 4), 9 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    assert data.load_folder(str(tmp_path)).class_names == sorted([odd, "plain"])
    with pytest.raises(ValueError, match="class name 1 is empty"):
        data.Dataset(np.zeros((2, 4, 4)), [0, 1], ["a", ""])
    with pytest.raises(ValueError, match="given twice"):
        data.Dataset(np.zeros((2, 4, 4)), [0, 1], ["a", "a"])


# ------------------------------------------------------------------------------------------ pixel rule
@pytest.mark.parametrize("x, expected", [
    (np.array([0, 255], np.uint8), [0, 1]),
    (np.array([0, 65535], np.uint16), [0, 1]),
    (np.array([0, 65535], ">u2"), [0, 1]),
    (np.array([False, True]), [0, 1]),
    (np.array([0.0, 0.5]), [0, 0.5]),             # floats within [0, 1]: kept
    (np.array([0.0, 127.5, 255.0]), [0, 0.5, 1]),  # floats within [0, 255] with max > 1: ÷ 255
    (np.array([0, 51, 255], np.int64), [0, 0.2, 1]),  # 8-bit values in a wide integer type
    (np.array([0, 1], np.int32), [0, 1]),
])
def test_scale_pixels_rule(x, expected):
    out = data.scale_pixels(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("x, message", [
    (np.array([0.0, np.nan]), "1 pixel value.*NaN"),
    (np.array([-1.0, 0.5]), "negative"),
    (np.array([0.0, 300.0]), r"\[0, 300\].*uint16"),
    (np.array([0, 1000], np.int32), r"\[0, 1000\]"),
    (np.array(["a"]), "not numbers"),
])
def test_scale_pixels_refuses(x, message):
    with pytest.raises(FileFormatError, match="^where: .*" + message):
        data.scale_pixels(x, "where")


# ------------------------------------------------------------------------------------------ .npz
def test_npz_scaling_labels_and_names(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((6, 4, 4)) * 255).astype(np.float64)
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2], np.float64))
    ds = data.load_npz(str(tmp_path / "f.npz"))
    np.testing.assert_allclose(ds.x[..., 0], x / 255.0, rtol=1e-6)
    assert ds.y.dtype == np.int64 and list(ds.y) == [0, 1, 2, 0, 1, 2]
    # train and test are scaled by one rule: a dark test set is not left unscaled
    np.savez(tmp_path / "s.npz", x_train=x[:4], y_train=[0, 1, 0, 1], x_test=x[4:] / 300, y_test=[0, 1])
    train, test = data.load_npz(str(tmp_path / "s.npz"))
    np.testing.assert_allclose(test.x[..., 0], x[4:] / 300 / 255.0, rtol=1e-6)
    assert train.class_names == test.class_names == ["0", "1"]
    np.savez(tmp_path / "h.npz", x=np.zeros((3, 4, 4), np.uint16) + 65535, y=np.eye(3)[[2, 0, 1]])
    ds = data.load_npz(str(tmp_path / "h.npz"))
    assert ds.x.max() == 1.0 and list(ds.y) == [2, 0, 1]  # one-hot labels → argmax


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1.5, 1]}, "whole numbers.*1.5"),
    ({"x": np.zeros((3, 4, 4)), "y": [[0, 1], [1, 1], [1, 0]]}, "not one-hot"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1]}, "3 images in 'x' but 2 labels in 'y'"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, -1, 1]}, "negative"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array(["a", "b", "a"])}, "labels must be integer"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1, 2], "class_names": np.array([1, 2, 3])}, "array of strings"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1, 2], "class_names": np.array(["a", "b"])}, "2 class_names.*up to 2"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1, 1], "class_names": np.array(["a", ""])}, "class name 1 is empty"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1, data.MAX_CLASSES]}, f"labels go up to {data.MAX_CLASSES}"),
    ({"x": np.zeros((3, 3, 8, 8)), "y": [0, 1, 1]}, "channels-first"),
    ({"x": np.zeros((3, 4)), "y": [0, 1, 1]}, r"shape \(3, 4\)"),
    ({"x": np.full((3, 4, 4), 256.0), "y": [0, 1, 1]}, r"\[256, 256\]"),
    ({"x": np.full((3, 4, 4), np.nan), "y": [0, 1, 1]}, "48 pixel value.*NaN"),
    ({"x": np.zeros((3, 4, 4)), "y": [0, 1, 1], "x_test": np.zeros((1, 4, 4))}, "one layout"),
])
def test_npz_refuses_with_the_file_and_the_reason(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}: .*{message}"):
        data.load_npz(str(path))


def _npz_with_header_only(path, name, shape, dtype="|u1"):
    """An .npz whose member declares ``shape`` but holds no data (a few hundred bytes on disk)."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name + ".npy", buf.getvalue())


def test_npz_bounded_before_any_data_is_read(tmp_path, monkeypatch):
    _npz_with_header_only(tmp_path / "bomb.npz", "x", (1024, 1024, 1024))
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match="bomb.npz"):
        data.load_npz(str(tmp_path / "bomb.npz"))
    assert time.perf_counter() - start < 1.0
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((64, 64, 64), np.uint8), y=np.zeros(64, np.int64))
    assert os.path.getsize(tmp_path / "big.npz") < 10_000  # 256 KiB of pixels → 1 MiB of float32
    monkeypatch.setattr(data.loaders, "read_npz", lambda *a, **k: pytest.fail("data read before the size check"))
    with pytest.raises(FileFormatError, match="cap"):
        data.load_npz(str(tmp_path / "big.npz"), max_bytes=500_000)
    np.savez(tmp_path / "extra.npz", x=np.zeros((2, 4, 4)), y=[0, 1], payload=np.zeros(10))
    with pytest.raises(FileFormatError, match="unexpected member.*payload"):
        data.load_npz(str(tmp_path / "extra.npz"))


def test_npz_corrupt_data_is_caught(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.arange(48, dtype=np.uint8).reshape(3, 4, 4), y=[0, 1, 1])
    raw = bytearray((tmp_path / "ok.npz").read_bytes())
    raw[raw.find(bytes(range(16, 48))) + 5] ^= 0xFF  # a flipped byte inside x's data: the CRC check catches it
    (tmp_path / "flip.npz").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="flip.npz"):
        data.load_npz(str(tmp_path / "flip.npz"))
    (tmp_path / "cut.npz").write_bytes(bytes(raw[:150]))
    with pytest.raises(FileFormatError, match="cut.npz"):
        data.load_npz(str(tmp_path / "cut.npz"))


# ------------------------------------------------------------------------------------------ IDX
def _idx(dims, payload=b"", code=0x08):
    return bytes([0, 0, code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + payload


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_excess_and_huge_declared(tmp_path, gz):
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    cases = {"short": (_idx((2, 3, 3), bytes(10)), "truncated"),
             "long": (_idx((2, 3, 3), bytes(19)), "holds more" if gz else "holds 19"),
             "huge": (_idx((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF), bytes(16)), "cap"),
             "dims": (_idx((1,) * 9), "9 dims"),
             "head": (bytes([0, 0, 8, 3, 0, 0]), "truncated.*header")}
    for name, (content, message) in cases.items():
        path = tmp_path / (name + suffix)
        with opener(path, "wb") as f:
            f.write(content)
        start = time.perf_counter()
        with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}: .*{message}"):
            data.load_idx(str(path))
        assert time.perf_counter() - start < 1.0


def test_idx_gz_is_read_only_up_to_the_declared_size(tmp_path):
    path = tmp_path / "many.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:  # declares 4 bytes, then 16 MiB of zeros follow
        f.write(_idx((4,), bytes(4)))
        for _ in range(16):
            f.write(bytes(1 << 20))
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match="holds more"):
        data.load_idx(str(path))
    assert time.perf_counter() - start < 0.5
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(_idx((2, 8, 8), bytes(128)))[:-12])
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(cut))}: .*(corrupt|truncated)"):
        data.load_idx(str(cut))


def test_mnist_counts_must_agree(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx((3, 2, 2), bytes(12)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx((2,), bytes([1, 0])))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx((1, 2, 2), bytes(4)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((1,), bytes([1])))
    with pytest.raises(FileFormatError, match="train-images-idx3-ubyte holds 3 images but .*train-labels.* 2 labels"):
        data.load_mnist(str(tmp_path))


# ------------------------------------------------------------------------------------------ CIFAR pickles
def test_shared_references_doubling_per_level_are_bounded():
    a = []
    for _ in range(40):
        a = [a, a]
    payload = pickle.dumps({b"data": b"", b"labels": a}, protocol=2)
    assert len(payload) < 4000
    start = time.perf_counter()
    with pytest.raises(pickle.UnpicklingError, match="deeper than"):
        data.safe_unpickle(payload)
    assert time.perf_counter() - start < 2.0


def test_wide_shared_dag_within_the_depth_limit_is_walked_once(tmp_path):
    a = list(range(100))
    for _ in range(5):
        a = [a] * 100  # 100^6 leaves if expanded; 600 distinct items
    payload = pickle.dumps({b"data": bytes(3072), b"labels": a}, protocol=2)
    start = time.perf_counter()
    out = data.safe_unpickle(payload)
    assert time.perf_counter() - start < 2.0
    assert out[b"labels"][0] is out[b"labels"][1]  # still shared, not copied
    (tmp_path / "batch").write_bytes(payload)
    with pytest.raises(FileFormatError, match="flat list of integers"):
        data.load_cifar10_batch(str(tmp_path / "batch"))


def test_shared_array_bytes_beyond_the_input_are_refused():
    arr = np.zeros(100_000, np.uint8)
    payload = pickle.dumps({b"data": [arr] * 3}, protocol=2)  # one array shared: fine, built once
    assert data.safe_unpickle(payload)[b"data"][0].shape == (100_000,)
    raw = bytes(100_000)  # one bytes object shared by three distinct arrays: each would copy it
    many = pickle.dumps({b"data": [SharedBuffer(raw) for _ in range(3)]}, protocol=2)
    assert len(many) < 200_000
    with pytest.raises(pickle.UnpicklingError, match="more bytes than the file holds"):
        data.safe_unpickle(many)


class SharedBuffer:
    """Pickles as NumPy's own ``_frombuffer(buffer, dtype, shape, order)``, the buffer memoised and shared."""

    def __init__(self, buffer):
        self.buffer = buffer

    def __reduce__(self):
        return (numeric._frombuffer, (self.buffer, np.dtype(np.uint8), (len(self.buffer),), "C"))


def test_memo_index_and_opcode_attacks_are_refused():
    start = time.perf_counter()
    with pytest.raises(pickle.UnpicklingError, match="memo index"):
        data.safe_unpickle(b"\x80\x02]r\xff\xff\xff\x7f.")  # LONG_BINPUT 2**31 - 1: a 16 GiB memo table
    with pytest.raises(pickle.UnpicklingError, match="EXT1"):
        data.safe_unpickle(b"\x80\x02\x82\x01.")
    with pytest.raises(pickle.UnpicklingError, match="INST"):
        data.safe_unpickle(b"(ios\nsystem\n.")
    with pytest.raises(pickle.UnpicklingError, match="not a valid pickle"):
        data.safe_unpickle(b"\x80\x02B\xff\xff\xff\x7fabc.")  # BINBYTES claiming 2 GiB
    assert time.perf_counter() - start < 1.0


def test_cifar_batch_structure_and_size(tmp_path):
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    cases = {"list": ([1, 2, 3], "not a CIFAR batch"),
             "nolabels": ({b"data": good[b"data"]}, "lacks 'data' or 'labels'"),
             "float": ({b"data": np.zeros((2, 3072)), b"labels": [1, 2]}, "expected uint8"),
             "shape": ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, r"shape \(2, 100\)"),
             "count": ({b"data": good[b"data"], b"labels": [1]}, "2 images in 'data' but 1 'labels'"),
             "neg": ({b"data": good[b"data"], b"labels": [1, -2]}, "negative")}
    for name, (obj, message) in cases.items():
        (tmp_path / name).write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(FileFormatError, match=rf"^{re.escape(str(tmp_path / name))}: .*{message}"):
            data.load_cifar10_batch(str(tmp_path / name))
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(FileFormatError, match="evil: not a safe CIFAR batch: refusing to load global"):
        data.load_cifar10_batch(str(tmp_path / "evil"))
    (tmp_path / "ok").write_bytes(pickle.dumps(good, protocol=2))
    assert len(data.load_cifar10_batch(str(tmp_path / "ok"))) == 2
    with pytest.raises(FileFormatError, match="cap"):
        data.load_cifar10_batch(str(tmp_path / "ok"), max_bytes=1000)
    os.makedirs(tmp_path / "c10")
    for name in ("data_batch_1", "test_batch"):
        (tmp_path / "c10" / name).write_bytes(pickle.dumps({b"data": good[b"data"], b"labels": [3, 12]}, protocol=2))
    with pytest.raises(FileFormatError, match="data_batch_1: label 12 is outside CIFAR-10"):
        data.load_cifar10(str(tmp_path / "c10"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# ------------------------------------------------------------------------------------------ validation
def _ds(y, names=None, shape=(4, 4, 1)):
    y = np.asarray(y)
    return data.Dataset(np.zeros((len(y),) + shape, np.float32), y, names or [])


def test_check_for_training_accepts_good_data_and_warns():
    train, test = _ds([0, 0, 1, 1, 2]), _ds([0, 1])
    warnings = data.check_for_training(train, test, batch_size=32)
    assert any("class 2 has a single training image" in w for w in warnings)
    assert any("class 2 has no test images" in w for w in warnings)
    assert any("batch size 32" in w for w in warnings)
    assert data.check_for_training(_ds([0, 0, 1, 1]), _ds([0, 1])) == []


@pytest.mark.parametrize("train, test, message", [
    (_ds([]), None, "no training images"),
    (_ds([1, 1, 1]), None, "all 3 images have label 1"),
    (_ds([0, -1, 1]), None, "1 label is negative"),
    (_ds(list(range(10)) * 3 + [255]), None,
     r"245 of the 256 classes have no training images \(classes 10..254\); label 255 \(1 image\) lies far outside "
     r"the others \(0..9\)"),
    (_ds([0, 1, 3, 3]), None, r"class 2\b"),
    (_ds([0, 1, 1], ["a", "b", "c"]), None, r"class 2 \('c'\)"),
    (_ds([0, 1]), _ds([]), "test: no test images"),
    (_ds([0, 1]), _ds([0, 1], shape=(5, 5, 1)), r"images of \(5, 5, 1\)"),
    (_ds([0, 1, 3, 3]), _ds([0, 2]), "have no training images"),
    (_ds([0, 1, 1]), _ds([0, 2, 2]), r"test: label\(s\) 2 \(2 images\) that no training image has"),
    (_ds([0, 1], ["a", "b"]), _ds([0, 1], ["b", "a"]), "class names differ"),
])
def test_check_for_training_refuses(train, test, message):
    with pytest.raises(ValueError, match=message):
        data.check_for_training(train, test)


def test_check_for_training_finds_nonfinite_pixels():
    train = _ds([0, 1])
    train.x[1, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="train: 1 pixel value is NaN"):
        data.check_for_training(train)


def test_dataset_labels_must_be_integers():
    with pytest.raises(ValueError, match="whole numbers"):
        _ds([0.0, 0.5])
    assert list(_ds([0.0, 2.0]).y) == [0, 2]
    assert _ds([0, 3]).num_classes == 4  # gaps still give max + 1 classes; check_for_training reports them


def test_dataset_refuses_labels_beyond_its_class_names():
    with pytest.raises(ValueError, match=r"^Dataset: 2 class_names but the labels go up to 2 \(3 classes\)"):
        _ds([0, 1, 2], ["a", "b"])
    assert _ds([0, 1], ["a", "b", "c"]).num_classes == 3  # a class with no images here is fine


@pytest.mark.parametrize("names", ["abc", "", b"ab", {"a": 0}, np.array([["a", "b"]])])
def test_dataset_class_names_must_be_a_list_of_strings(names):
    with pytest.raises(TypeError, match="Dataset: class_names: must be a list, tuple or 1-D array of strings"):
        data.Dataset(np.zeros((2, 4, 4, 1)), [0, 1], names)


def test_dataset_refuses_a_stray_label_before_building_one_name_per_class():
    """Labels 0..9 and one 10**9 (or 10**12) would build a billion names; the cap refuses it at once."""
    y = list(range(10)) * 3 + [data.MAX_CLASSES]
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"^Dataset: the labels go up to {data.MAX_CLASSES}, which would make "
                                         rf"{data.MAX_CLASSES + 1} classes.*label {data.MAX_CLASSES} \(1 image\) "
                                         rf"lies far outside the others \(0..9\)"):
        _ds(y)
    with pytest.raises(ValueError, match="labels go up to 1000000000000,"):
        _ds([0, 10**12])
    assert time.perf_counter() - start < 2
    names = [f"c{i}" for i in range(data.MAX_CLASSES + 1)]  # the cap is on names derived from the labels only
    assert _ds([0, data.MAX_CLASSES], names).num_classes == data.MAX_CLASSES + 1


# ------------------------------------------------------------------------------------------ splitting
def test_split_with_tiny_classes():
    y = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    tr, te = data.stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, te])) == list(range(len(y)))
    assert list(np.bincount(y[te], minlength=4)) == [0, 1, 1, 2]  # the single image trains; others lose ≥ 1
    assert np.all(np.bincount(y[tr], minlength=4) >= 1)
    tr, te = data.stratified_split(y, 0.9, seed=0)
    assert np.all(np.bincount(y[tr], minlength=4) >= 1)  # never a class with zero training images
    assert len(data.stratified_split([], 0.2)[0]) == 0
    with pytest.raises(ValueError, match="test_fraction"):
        data.stratified_split(y, 1.0)


def _folder(root, counts, size=8):
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        os.makedirs(root / cls)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return str(root)


def test_few_images_per_class(tmp_path):
    train, test = data.load_dataset(_folder(tmp_path / "two", {"a": 2, "b": 2}))
    assert len(train) == 2 and len(test) == 2 and sorted(test.y) == [0, 1]  # was: 4 train, 0 test
    assert data.check_for_training(train, test) == [
        "train: classes 0 ('a'), 1 ('b') have a single training image"]
    train, test = data.load_dataset(_folder(tmp_path / "mixed", {"a": 1, "b": 3}))
    assert sorted(train.y) == [0, 1, 1] and list(test.y) == [1]
    with pytest.raises(FileFormatError, match="no test images can be set aside"):
        data.load_dataset(_folder(tmp_path / "one", {"a": 1, "b": 1}))
