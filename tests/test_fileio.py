"""tinynet.fileio: atomic writes (old file whole on any error, no temp file left, modes kept) and the bounded
``.npz`` reader (names, headers and sizes refused before any data is decompressed; CRC checked).

The helpers that craft hostile files (``npy_bytes``, ``write_zip``, ``zip_bomb``) live in tests/helpers.py.
"""
import hashlib
import json
import os
import stat
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from helpers import npy_bytes, npy_header, refused_quickly, write_zip, zip_bomb
from tinynet import fileio
from tinynet.fileio import FileFormatError


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "a.txt"
    fileio.write_text(path, "one")
    fileio.write_text(path, "two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["a.txt"]
    with fileio.atomic_write(path, "w", encoding="latin-1") as f:
        f.write("é")
    assert path.read_bytes() == b"\xe9"


def test_an_error_while_writing_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "w.bin"
    fileio.write_bytes(path, b"old contents")
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with fileio.atomic_write(path) as f:
                f.write(b"new, half written")
                raise error
        assert path.read_bytes() == b"old contents" and os.listdir(tmp_path) == ["w.bin"]


def test_atomic_write_refuses_bad_destinations(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fileio.write_text(tmp_path / "no" / "such.txt", "x")
    with pytest.raises(IsADirectoryError):
        fileio.write_text(tmp_path, "x")
    with pytest.raises(ValueError, match="mode"):
        with fileio.atomic_write(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []


def test_modes_follow_the_umask_or_the_old_file(tmp_path):
    old = os.umask(0o027)
    try:
        fresh = fileio.write_text(tmp_path / "fresh", "x")
        assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o640
        kept = tmp_path / "kept"
        kept.write_text("x")
        os.chmod(kept, 0o600)
        fileio.write_text(kept, "y")
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600 and kept.read_text() == "y"
    finally:
        os.umask(old)


def test_a_symlink_destination_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(target)
    fileio.write_text(link, "new")
    assert not link.is_symlink() and link.read_text() == "new" and target.read_text() == "keep me"


def test_write_json_save_npz_refuse_what_they_cannot_write_and_keep_the_old_file(tmp_path):
    path = tmp_path / "s.json"
    fileio.write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        fileio.write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["s.json"]
    with pytest.raises(TypeError, match="dtype object"):
        fileio.save_npz(tmp_path / "o.npz", {"x": np.array([object()], dtype=object)})
    assert sorted(os.listdir(tmp_path)) == ["s.json"]


def test_save_figure_format_from_the_extension(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fileio.save_figure(fig, tmp_path / "f.png", dpi=20)
    fileio.save_figure(fig, tmp_path / "f.svg")
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:500]
    assert sorted(os.listdir(tmp_path)) == ["f.png", "f.svg"]


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20 | 5)
    fileio.write_bytes(tmp_path / "r", data)
    assert fileio.sha256_file(tmp_path / "r", chunk_size=1 << 16) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------- reading
@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text("abcxyz/_:", min_size=1, max_size=8),
                       hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_,
                                                   np.complex64]),
                                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
                       max_size=4))
def test_save_npz_read_npz_round_trip(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("rt") / "a.npz"
    fileio.save_npz(path, arrays)
    back = fileio.read_npz(path, expected={k: (v.shape, v.dtype) for k, v in arrays.items()})
    assert list(back) == list(arrays)
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)
    assert fileio.read_npz(path, data=path.read_bytes()).keys() == arrays.keys()


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.npz"
    fileio.save_npz(path, {"a/w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(4)})
    return path


def test_headers_names_and_expectations(good):
    assert fileio.npz_names(good) == ["a/w", "b"]
    headers = fileio.npz_headers(good)
    assert headers == {"a/w": ((2, 3), np.dtype("float32")), "b": ((4,), np.dtype("float64"))}
    expected = {"a/w": ((2, 3), np.float32), "b": ((4,), None)}
    assert fileio.read_npz(good, expected=expected)["a/w"][1, 2] == 5
    with pytest.raises(FileFormatError, match=r"good\.npz: unexpected member\(s\) \['b'\]"):
        fileio.read_npz(good, allowed={"a/w"})
    with pytest.raises(FileFormatError, match=r"missing 1 array\(s\), e\.g\. \['c'\]"):
        fileio.read_npz(good, expected={**expected, "c": ((1,), None)})
    with pytest.raises(FileFormatError, match=r"'a/w' has shape \(2, 3\), expected \(3, 2\)"):
        fileio.read_npz(good, expected={**expected, "a/w": ((3, 2), None)})
    with pytest.raises(FileFormatError, match="'a/w' has dtype float32, expected int64"):
        fileio.read_npz(good, expected={**expected, "a/w": ((2, 3), np.int64)})
    with pytest.raises(FileFormatError, match="declare more than 40 bytes"):
        fileio.read_npz(good, max_bytes=40)


@pytest.mark.parametrize("case", ["missing", "folder", "not a zip", "truncated", "empty file"])
def test_unreadable_files_name_the_file(tmp_path, good, case):
    path = {"missing": tmp_path / "nope.npz", "folder": tmp_path}.get(case, tmp_path / "bad.npz")
    if case == "not a zip":
        path.write_bytes(b"hello, not a zip" * 10)
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[:-40])
    elif case == "empty file":
        path.write_bytes(b"")
    with pytest.raises(FileFormatError) as info:
        fileio.read_npz(path)
    assert str(info.value).startswith(str(path))


def test_object_member_is_refused_without_unpickling(tmp_path):
    path = write_zip(tmp_path / "o.npz", {"x.npy": npy_bytes(np.array([{"evil": 1}], dtype=object))})
    with pytest.raises(FileFormatError, match="dtype object.*allow_pickle"):
        fileio.read_npz(path)


def test_members_that_are_not_arrays_are_refused(tmp_path):
    with pytest.raises(FileFormatError, match="unexpected member 'README.txt'"):
        fileio.read_npz(write_zip(tmp_path / "a.npz", {"README.txt": b"hi"}))
    with pytest.raises(FileFormatError, match="no NUMPY magic"):
        fileio.read_npz(write_zip(tmp_path / "b.npz", {"x.npy": b"not an array at all"}))
    with pytest.raises(FileFormatError, match="repeated member names"):
        with pytest.warns(UserWarning):
            write_zip(tmp_path / "c.npz", {"x.npy": npy_bytes(np.zeros(1))})
            with zipfile.ZipFile(tmp_path / "c.npz", "a") as zf:
                zf.writestr("x.npy", npy_bytes(np.zeros(1)))
        fileio.read_npz(tmp_path / "c.npz")


def test_declared_size_must_match_the_member(tmp_path):
    small = npy_header((1000,)) + bytes(16)  # declares 4000 data bytes, holds 16
    with pytest.raises(FileFormatError, match=r"declares shape \(1000,\).*holds 16 data bytes"):
        fileio.read_npz(write_zip(tmp_path / "a.npz", {"x.npy": small}))
    with pytest.raises(FileFormatError, match="declares an impossible shape"):
        fileio.read_npz(write_zip(tmp_path / "b.npz", {"x.npy": npy_header((-4,)) + bytes(16)}))
    huge = npy_header((1 << 40, 1 << 40)) + bytes(16)  # int64 products wrap around; Python ints do not
    with pytest.raises(FileFormatError, match="declares shape"):
        fileio.read_npz(write_zip(tmp_path / "c.npz", {"x.npy": huge}))


def test_a_huge_declared_header_is_refused_before_it_is_read(tmp_path):
    member = npy_header((2,), version=(2, 0), header_len=0xFFFFFFFF) + bytes(8)
    path = write_zip(tmp_path / "h.npz", {"x.npy": member}, zipfile.ZIP_DEFLATED)
    refused_quickly(lambda: fileio.read_npz(path), "declares a 4294967295-byte .npy header")


def test_zip_bomb_is_refused_before_decompressing(tmp_path):
    path = zip_bomb(tmp_path / "bomb.npz")
    assert os.path.getsize(path) < 2 << 20
    assert fileio.npz_headers(path)["conv/kernel"] == ((1 << 28,), np.dtype("float32"))  # headers only: cheap
    refused_quickly(lambda: fileio.read_npz(path, max_bytes=1 << 29), "declare more than 512.0 MiB")
    refused_quickly(lambda: fileio.read_npz(path, expected={"conv/kernel": ((3, 3, 1, 4), None)}),
                    r"has shape \(268435456,\), expected \(3, 3, 1, 4\)")
    refused_quickly(lambda: fileio.read_npz(path, allowed={"other"}), "unexpected member")


def test_a_flipped_bit_fails_the_crc(tmp_path, good):
    data = bytearray(good.read_bytes())
    offset = data.index(np.float32(5).tobytes())  # a byte of the stored array data
    data[offset] ^= 0x10
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="flipped.npz: .*corrupt.*CRC"):
        fileio.read_npz(bad)
    with pytest.raises(FileFormatError, match="given.npz: .*corrupt.*CRC"):
        fileio.read_npz("given.npz", data=bytes(data))


def test_is_regular_file(tmp_path, good):
    os.symlink(good, tmp_path / "link")
    assert fileio.is_regular_file(good) and fileio.is_regular_file(tmp_path / "link")
    assert not fileio.is_regular_file(tmp_path) and not fileio.is_regular_file(tmp_path / "none")
