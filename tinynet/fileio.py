"""Files: the one atomic-write helper every file tinynet writes goes through, and bounded ``.npz`` reading.

Writing
-------
:func:`atomic_write` writes to a temporary file in the destination's folder, flushes and ``fsync``\\ s it,
then renames it over the destination (``os.replace``, atomic on POSIX and Windows) and ``fsync``\\ s the
folder. A reader, a crash, a full disk or a kill at any instant sees either the old file whole or the new
file whole, never a mix or a truncated file; on any error the temporary file is removed and the old file
is left as it was. :func:`save_npz`, :func:`write_json`, :func:`write_text` and :func:`save_figure` are thin
wrappers over it.

Reading
-------
:func:`read_npz` opens an ``.npz`` without ``np.load``: it checks every member's name against what the
caller expects and reads every ``.npy`` header (shape, dtype) *before* decompressing any data, so an
unexpected member, an object array (pickle), a shape the caller did not ask for or a size beyond a bound
is refused by name without the work; the data is then read and its CRC checked. Every problem raises
:class:`FileFormatError`, whose message starts with the file's path.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import zipfile

import numpy as np


class FileFormatError(ValueError):
    """A file is missing, truncated, corrupt or not what was expected; the message names the file."""


# ----------------------------------------------------------------------------------------------- writing
def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where folders can't be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file that replaces ``path`` atomically when the ``with`` block ends without error.

    Parameters
    ----------
    path : str or os.PathLike
        The destination. Its folder must exist (it is not created: a typo in a folder name is an error).
    mode : {'wb', 'w'}
        Binary or text.
    encoding : str, optional
        For text mode (default UTF-8).

    Yields
    ------
    file object
        Write to it; do not close it.

    Raises
    ------
    FileNotFoundError
        The destination's folder does not exist.
    IsADirectoryError
        ``path`` is a folder.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: cannot write, the folder {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: cannot write a file there, it is a folder")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _default_file_mode()) if hasattr(os, "fchmod") else None
        with os.fdopen(fd, mode, **({"encoding": encoding or "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def write_bytes(path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def write_text(path, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return os.fspath(path)


def write_json(path, obj, indent=1) -> str:
    """Write ``obj`` as JSON atomically (NaN and infinity refused: they are not JSON); return ``path``."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def save_npz(path, arrays: dict) -> str:
    """Write ``{name: array}`` as an uncompressed ``.npz`` atomically (no object arrays); return ``path``."""
    for name, a in arrays.items():
        if np.asarray(a).dtype.hasobject:
            raise TypeError(f"{path}: array {name!r} has dtype object, which would need pickle")
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return os.fspath(path)


def save_figure(fig, path, **savefig_kwargs) -> str:
    """``fig.savefig`` through :func:`atomic_write`; the format follows the extension (default PNG)."""
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    savefig_kwargs.setdefault("format", ext or "png")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, **savefig_kwargs)
    return os.fspath(path)


def sha256_file(path, chunk_size=1 << 20) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- reading
def memory_bound() -> int:
    """Half of this machine's physical memory in bytes (the default cap on what one load may allocate)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _read_header(member, path, key):
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(member)
        return np.lib.format.read_array_header_2_0(member)
    except (ValueError, EOFError, SyntaxError, zipfile.BadZipFile, OSError) as error:
        raise FileFormatError(f"{path}: member {key!r} is not a readable .npy array ({error})") from None


def npz_headers(path, expected=None, allowed=None, max_bytes=None) -> dict:
    """Read the names, shapes and dtypes of an ``.npz``'s arrays without decompressing their data.

    Parameters
    ----------
    path : str
    expected : dict of name -> (shape, dtype or None), optional
        Every name must be present with that shape (and dtype kind, when given); nothing else may be.
    allowed : collection of str, optional
        Names that may be present (others are refused); ignored when ``expected`` is given.
    max_bytes : int, optional
        Cap on the total declared size of the arrays (default: :func:`memory_bound`).

    Returns
    -------
    dict of name -> (shape tuple, numpy dtype), in the file's order
    """
    path = os.fspath(path)
    max_bytes = memory_bound() if max_bytes is None else int(max_bytes)
    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FileFormatError(f"{path}: is a folder, not an .npz file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise FileFormatError(f"{path}: not a readable .npz file (truncated or not a zip archive: {error})") from None
    headers, total = {}, 0
    with zf:
        infos = zf.infolist()
        names = []
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise FileFormatError(f"{path}: unexpected member {info.filename!r} (an .npz holds only .npy arrays)")
            names.append(info.filename[:-4])
        if len(set(names)) != len(names):
            raise FileFormatError(f"{path}: repeated member names")
        if expected is not None:
            unexpected = [n for n in names if n not in expected]
            missing = [n for n in expected if n not in names]
        else:
            unexpected = [n for n in names if allowed is not None and n not in allowed]
            missing = []
        if unexpected:
            raise FileFormatError(f"{path}: unexpected member(s) {unexpected[:5]}"
                                  + (f" (of {len(unexpected)})" if len(unexpected) > 5 else ""))
        if missing:
            raise FileFormatError(f"{path}: missing {len(missing)} array(s), e.g. {missing[:5]}")
        for info, key in zip(infos, names):
            try:
                with zf.open(info) as member:
                    shape, fortran, dtype = _read_header(member, path, key)
                    header_len = member.tell()
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
                raise FileFormatError(f"{path}: member {key!r} cannot be read ({error})") from None
            if dtype.hasobject:
                raise FileFormatError(f"{path}: array {key!r} has dtype object (it would need pickle); refused")
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
            if info.file_size != header_len + nbytes:
                raise FileFormatError(f"{path}: array {key!r} declares shape {shape} {dtype} ({nbytes} bytes) but "
                                      f"its member holds {info.file_size - header_len} data bytes")
            if expected is not None:
                want_shape, want_dtype = expected[key]
                if tuple(shape) != tuple(want_shape):
                    raise FileFormatError(f"{path}: array {key!r} has shape {tuple(shape)}, "
                                          f"expected {tuple(want_shape)}")
                if want_dtype is not None and dtype.kind != np.dtype(want_dtype).kind:
                    raise FileFormatError(f"{path}: array {key!r} has dtype {dtype}, expected {np.dtype(want_dtype)}")
            total += nbytes
            if total > max_bytes:
                raise FileFormatError(f"{path}: its arrays declare more than {_human_bytes(max_bytes)} "
                                      f"(the cap for this load); refused before reading them")
            headers[key] = (tuple(shape), dtype)
    return headers


def read_npz(path, expected=None, allowed=None, max_bytes=None) -> dict:
    """Read an ``.npz`` safely: headers checked first (see :func:`npz_headers`), then data with CRC checks.

    Never unpickles. Returns ``{name: ndarray}``. Raises :class:`FileFormatError` naming the file.
    """
    path = os.fspath(path)
    headers = npz_headers(path, expected=expected, allowed=allowed, max_bytes=max_bytes)
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for key in headers:
                with zf.open(key + ".npy") as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                    if member.read(1) != b"":  # reaching the end makes zipfile verify the CRC
                        raise FileFormatError(f"{path}: array {key!r} has trailing data")
                arrays[key] = array
    except FileFormatError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as error:
        raise FileFormatError(f"{path}: corrupt data ({error})") from None
    return arrays


def is_regular_file(path) -> bool:
    """True for an existing regular file (not a folder, device or FIFO)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


__all__ = ["FileFormatError", "atomic_write", "write_bytes", "write_text", "write_json", "save_npz",
           "save_figure", "sha256_file", "npz_headers", "read_npz", "memory_bound", "is_regular_file"]
