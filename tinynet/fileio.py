"""Files: the one atomic-write helper every file tinynet writes goes through, and bounded ``.npz`` reading.

Writing
-------
:func:`atomic_write` writes to a temporary file in the destination's folder, flushes and ``fsync``\\ s it,
then renames it over the destination (``os.replace``, atomic on POSIX and Windows) and ``fsync``\\ s the
folder. A reader, a crash, a full disk or a kill at any instant sees either the old file whole or the new
file whole, never a mix or a truncated file; on any error the temporary file is removed and the old file
is left as it was. :func:`write_bytes`, :func:`save_npz`, :func:`write_json`, :func:`write_text` and
:func:`save_figure` are thin wrappers over it. One file is atomic; several files that must change together
(a checkpoint) need a manifest written last: see :mod:`tinynet.checkpoint`.

Reading
-------
:func:`read_npz` opens an ``.npz`` without ``np.load``: it checks every member's name against what the
caller expects from the zip directory alone, then reads every ``.npy`` header (shape, dtype; the header's
own length is bounded first) *before* decompressing any data, so an unexpected member, an object array
(pickle), a shape the caller did not ask for, a member whose declared size does not match the zip
directory, or a total beyond a bound is refused by name without the work; the data is then read and its
CRC checked. :func:`npz_names` and :func:`npz_headers` give the first two stages alone. Every reader takes
``data=`` (the file's bytes, already read and checksummed by the caller) so that what was verified is what
is parsed. Every problem raises :class:`FileFormatError`, whose message starts with the file's path.

Every file the project reads that a user names (weights, datasets, images, logs, manifests) is opened with
:func:`open_regular`: opened without blocking, then ``fstat``\\ ed, so a FIFO, a device (a link to
``/dev/zero``), a socket or a folder is refused by name before a byte is read, instead of blocking forever or
reading without end.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import stat
import secrets
import struct
import tempfile
import zipfile

import numpy as np

from .checks import short_repr


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


def _current_umask() -> int:
    """The process umask, read from ``/proc`` where possible (setting it to read it races with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _default_file_mode(path) -> int:
    """The mode a plain ``open(path, 'w')`` would give: an existing file's mode, else 0o666 less the umask."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_current_umask()


def check_writable_folder(folder, make_folders=False):
    """Raise an ``OSError`` saying why, before any work, unless a file can be created in ``folder``: with
    ``make_folders`` (the missing folders will be made when writing), in the nearest folder above it that
    exists. It tries (an unnamed temporary file, which is what :func:`atomic_write` needs): ``os.access``
    means little to root or on some file systems. Nothing is left behind."""
    existing = os.path.abspath(os.fspath(folder) or ".")
    while make_folders and not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if os.path.lexists(existing):
            raise NotADirectoryError(f"{existing!r} is not a folder")
        raise FileNotFoundError(f"the folder {existing!r} does not exist (create it first)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise type(error)(f"no file can be created in the folder {existing!r} ({error.strerror or error})") from None


#: A temporary file of :func:`atomic_write` is named ``'.' + name + '.' + 8 hex digits + TEMP_SUFFIX`` (the name
#: shortened, when needed, so the whole fits the file system's limit on a name); :data:`TEMP_TAIL` matches what
#: follows the name (also the ``[a-z0-9_]{8}`` of temporary files written before, with ``tempfile.mkstemp``);
#: :mod:`tinynet.checkpoint` builds its pattern of leftovers to remove on it.
TEMP_SUFFIX = ".tmp"
TEMP_TAIL = r"\.[A-Za-z0-9_]+\.tmp"
_TEMP_EXTRA = len(".") + len(".") + 8 + len(TEMP_SUFFIX)  # bytes a temporary name adds to the shortened name


def name_max(directory) -> int:
    """The longest file name (in bytes) the file system of ``directory`` allows (255 where it cannot be told)."""
    try:
        value = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255
    return value if isinstance(value, int) and value > _TEMP_EXTRA else 255


def _refuse_long_name(path, directory, prefix=""):
    """``ENAMETOOLONG`` (``OSError``) when the last part of ``path`` is longer than ``directory``'s file system
    allows (:func:`name_max`); the message starts with ``path`` and ``prefix``."""
    size, limit = len(os.fsencode(os.path.basename(path))), name_max(directory)
    if size > limit:
        raise OSError(errno.ENAMETOOLONG, f"{path}: {prefix}its name is {size} bytes, more than the {limit} this "
                                          f"file system allows")


def temp_prefix(name: str, limit: int = 255) -> str:
    """``'.' + name + '.'``, with ``name`` cut (at a character) so that a temporary name built on it (8 random hex
    digits and :data:`TEMP_SUFFIX` follow) is at most ``limit`` bytes."""
    budget = limit - _TEMP_EXTRA
    while len(os.fsencode(name)) > budget:
        name = name[:-1]
    return "." + name + "."


def _create_temp(directory, name):
    """Create and open (``O_EXCL``, mode 0o600) a new temporary file for ``name`` in ``directory``."""
    prefix = temp_prefix(name, name_max(directory))
    flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))
    for _ in range(100):
        tmp = os.path.join(directory, prefix + secrets.token_hex(4) + TEMP_SUFFIX)
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no unused temporary file name in {directory!r}")


def file_kind(mode) -> str:
    """What an ``st_mode`` is, in words: ``'a folder'``, ``'a FIFO'``, ``'a character device'``, ..."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return kind
    return "not a regular file"


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file that replaces ``path`` atomically when the ``with`` block ends without error.

    The temporary file is ``.<name>.<8 hex digits>.tmp`` in the destination's folder, ``<name>`` shortened
    where needed so that every name the file system allows works.

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
    OSError
        Before anything is written: ``path``'s name is longer than the file system allows (``ENAMETOOLONG``),
        or ``path`` is a FIFO, a device or a socket (replacing it would remove it; writing into it could block).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: cannot write, the folder {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: cannot write a file there, it is a folder")
    _refuse_long_name(path, directory, "cannot write, ")
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OSError(errno.EINVAL, f"{path}: is {file_kind(st.st_mode)}, not a regular file; refusing to "
                                    f"replace it with one")
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _default_file_mode(path))
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


def check_npz_names(arrays, path="save_npz") -> None:
    """Check that every key of ``arrays`` is stored in an ``.npz`` and read back exactly as it is.

    A zip member name is cut at the first NUL character, must be encodable as UTF-8 (no lone surrogates) and,
    on Windows, has its backslashes turned into slashes; two keys that end up with the same member name would
    overwrite each other. :func:`save_npz` calls this before it writes anything.

    Parameters
    ----------
    arrays : mapping of str -> array
    path : str
        Names the file in the messages.

    Raises
    ------
    TypeError
        A key that is not a ``str``.
    ValueError
        A key the zip would change (the message names it and what it would become) or two that collide.
    """
    seen = {}
    for key in arrays:
        if not isinstance(key, str):
            raise TypeError(f"{path}: array names must be str, got {key!r} ({type(key).__name__})")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{path}: array name {key!r} is not valid Unicode (a lone surrogate?): a zip member "
                             f"name must be encodable as UTF-8") from None
        stored = zipfile.ZipInfo(key + ".npy").filename
        if stored != key + ".npy":
            why = "a zip member name ends at a NUL character" + ("" if os.sep == "/" else f", {os.sep} becomes /")
            raise ValueError(f"{path}: array name {key!r} would be stored in the zip as member {stored!r} ({why}); "
                             f"the file could not be read back; nothing was written")
        if stored in seen:
            raise ValueError(f"{path}: array names {seen[stored]!r} and {key!r} collide; nothing was written")
        seen[stored] = key


def save_npz(path, arrays: dict) -> str:
    """Write ``{name: array}`` as an uncompressed ``.npz`` atomically (:func:`atomic_write`).

    The format is ``np.savez``'s (one ``.npy`` member per array, named ``name + '.npy'``), written here so that
    any name works (``np.savez(f, **arrays)`` would take a name ``'allow_pickle'`` or ``'file'`` as its own
    argument).

    Parameters
    ----------
    path : str or os.PathLike
    arrays : dict of str -> array_like

    Returns
    -------
    str : ``path``

    Raises
    ------
    TypeError, ValueError
        Before anything is written: an object array (it would need pickle), or a name the zip would change or
        that collides with another (:func:`check_npz_names`); a file already at ``path`` is left as it was.
    """
    check_npz_names(arrays, os.fspath(path))
    arrays = {name: np.asanyarray(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"{path}: array {name!r} has dtype object, which would need pickle")
    with atomic_write(path, "wb") as f:
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, a in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)
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
    with open_regular(path) as f:
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


MAX_HEADER_BYTES = 10000  # numpy's own cap on an .npy header (np.lib.format's max_header_size)


def _read_header(member, path, key):
    """Parse one member's ``.npy`` header; return ``(shape, fortran_order, dtype, header_bytes)``.

    The header's declared length is checked before it is read, so a member declaring a 4 GiB header
    costs nothing.
    """
    magic = member.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise FileFormatError(f"{path}: member {key!r} is not an .npy array (no NUMPY magic)")
    version = (magic[6], magic[7])
    if version == (1, 0):
        size_bytes = member.read(2)
        fmt = "<H"
    elif version in ((2, 0), (3, 0)):
        size_bytes = member.read(4)
        fmt = "<I"
    else:
        raise FileFormatError(f"{path}: member {key!r} has .npy format version {version}, not 1.0, 2.0 or 3.0")
    if len(size_bytes) != struct.calcsize(fmt):
        raise FileFormatError(f"{path}: member {key!r} is truncated inside its .npy header")
    header_len = struct.unpack(fmt, size_bytes)[0]
    if header_len > MAX_HEADER_BYTES:
        raise FileFormatError(f"{path}: member {key!r} declares a {header_len}-byte .npy header "
                              f"(at most {MAX_HEADER_BYTES}); refused")
    header = member.read(header_len)
    if len(header) != header_len:
        raise FileFormatError(f"{path}: member {key!r} is truncated inside its .npy header")
    buffer = io.BytesIO(magic + size_bytes + header)
    try:
        np.lib.format.read_magic(buffer)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(buffer)
    except MemoryError:
        raise
    except Exception as error:  # NumPy's parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise FileFormatError(f"{path}: member {key!r} has an unreadable .npy header "
                              f"({type(error).__name__}: {str(error)[:200]})") from None
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in shape):
        raise FileFormatError(f"{path}: member {key!r} declares an impossible shape {shape}")
    if dtype.subdtype is not None:  # NumPy would read an array of another shape than the header's
        raise FileFormatError(f"{path}: member {key!r} has a sub-array dtype {dtype} (shape {tuple(shape)} plus "
                              f"{dtype.shape}); only plain dtypes are read")
    if dtype.itemsize == 0 and math.prod(shape) > 0:  # elements of 0 bytes: no file size would bound their count
        raise FileFormatError(f"{path}: member {key!r} declares {math.prod(shape)} elements of 0 bytes (dtype "
                              f"{dtype.str}); refused")
    return tuple(shape), fortran, dtype, len(magic) + len(size_bytes) + header_len


def open_regular(path, what=None, *, follow_symlinks=True):
    """Open ``path`` for reading (binary), refusing anything but a regular file before a byte is read.

    The file is opened with ``O_NONBLOCK`` (so a FIFO does not block the ``open``) and ``fstat``\\ ed: a FIFO,
    a character or block device (e.g. a link to ``/dev/zero``, which would be read without end), a socket or
    a folder is refused. The one helper every reader of a user's file goes through.

    Parameters
    ----------
    path : str or os.PathLike
    what : str, optional
        What the file is, added to the messages (``'the checkpoint's manifest'``).
    follow_symlinks : bool, default True
        False: a symbolic link is refused too (``O_NOFOLLOW``).

    Returns
    -------
    file object
        Binary, buffered, in blocking mode; close it (``with``).

    Raises
    ------
    FileFormatError
        Naming ``path``: no such file (or a dangling link), a symbolic link (``follow_symlinks=False``), a
        folder, not a regular file (saying what it is), or it cannot be opened (permission denied, ...).
    """
    path = os.fspath(path)
    about = f" ({what})" if what else ""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        if not follow_symlinks and os.path.islink(path):  # where O_NOFOLLOW is missing, and a clear message
            raise FileFormatError(f"{path}: is a symbolic link{about}; a regular file is expected")
        fd = os.open(path, flags)
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise FileFormatError(f"{path}: no such file" + (", a dangling symbolic link" if dangling else "") + about) \
            from None
    except PermissionError:
        raise FileFormatError(f"{path}: cannot be read (permission denied){about}") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a folder, not a file{about}") from None
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise FileFormatError(f"{path}: is a symbolic link{about}; a regular file is expected") from None
        if error.errno == errno.ENXIO:  # a socket
            raise FileFormatError(f"{path}: not a regular file but a socket{about}") from None
        raise FileFormatError(f"{path}: cannot be opened ({error.strerror or error}){about}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise FileFormatError(f"{path}: is a folder, not a file{about}")
        if not stat.S_ISREG(mode):
            raise FileFormatError(f"{path}: not a regular file but {file_kind(mode)}, which could block or never "
                                  f"end when read{about}")
        with contextlib.suppress(AttributeError, OSError):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _open_zip(path, data):
    """A ``zipfile.ZipFile`` on ``data`` (bytes) or on the regular file ``path`` (:func:`open_regular`)."""
    source = io.BytesIO(data) if data is not None else open_regular(path)
    with source:
        try:
            zf = zipfile.ZipFile(source)
        except MemoryError:
            raise
        except Exception as error:  # BadZipFile, NotImplementedError (a 'zip file version 7.3'), OSError, ...
            raise FileFormatError(f"{path}: not a readable .npz file (truncated or not a zip archive: {error})") \
                from None
        with zf:
            yield zf


def npz_names(path, data=None) -> list:
    """The array names of an ``.npz``, from its zip directory only (nothing is decompressed).

    Raises :class:`FileFormatError` for a file that is not a zip of uniquely named ``.npy`` members.
    ``data`` (bytes), when given, is read instead of the file; ``path`` then only names it in messages.
    """
    path = os.fspath(path)
    with _open_zip(path, data) as zf:
        return _member_names(zf.infolist(), path)


def _member_names(infos, path):
    names = []
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise FileFormatError(f"{path}: unexpected member {short_repr(info.filename, 100)} (an .npz holds "
                                  f"only .npy arrays)")
        names.append(info.filename[:-4])
    if len(set(names)) != len(names):
        raise FileFormatError(f"{path}: repeated member names")
    return names


def npz_headers(path, expected=None, allowed=None, max_bytes=None, data=None) -> dict:
    """Read the names, shapes and dtypes of an ``.npz``'s arrays without decompressing their data.

    Checks, in this order: the zip directory (a zip of ``.npy`` members, no repeated names); the names
    against ``expected``/``allowed`` (an unexpected name is refused before anything is decompressed); then
    each member's ``.npy`` header (the first few hundred bytes of the member): no object dtype, a declared
    size that matches the member's size in the zip directory, the shape (and dtype kind) ``expected`` asks
    for, and a running total below ``max_bytes``.

    Parameters
    ----------
    path : str or os.PathLike
    expected : dict of name -> (shape, dtype or None), optional
        Every name must be present with that shape (and dtype kind, when given); nothing else may be.
    allowed : collection of str, optional
        Names that may be present (others are refused); ignored when ``expected`` is given.
    max_bytes : int, optional
        Cap on the total declared size of the arrays (default: :func:`memory_bound`).
    data : bytes, optional
        The file's content, already read (e.g. after checking its checksum); ``path`` then only names it.

    Returns
    -------
    dict of name -> (shape tuple, numpy dtype), in the file's order

    Raises
    ------
    FileFormatError
        With a message that starts with ``path``.
    """
    path = os.fspath(path)
    with _open_zip(path, data) as zf:
        return _check_members(zf, path, expected, allowed, max_bytes)


def _check_members(zf, path, expected, allowed, max_bytes):
    max_bytes = memory_bound() if max_bytes is None else int(max_bytes)
    infos = zf.infolist()
    names = _member_names(infos, path)
    if expected is not None:
        unexpected = [n for n in names if n not in expected]
        missing = [n for n in expected if n not in names]
    else:
        unexpected = [n for n in names if allowed is not None and n not in allowed]
        missing = []
    if unexpected:
        shown = ", ".join(short_repr(n, 100) for n in unexpected[:5])
        raise FileFormatError(f"{path}: unexpected member(s) [{shown}]"
                              + (f" (of {len(unexpected)})" if len(unexpected) > 5 else ""))
    if missing:
        raise FileFormatError(f"{path}: missing {len(missing)} array(s), e.g. {missing[:5]}")
    headers, total = {}, 0
    for info, key in zip(infos, names):
        try:
            with zf.open(info) as member:
                shape, _, dtype, header_len = _read_header(member, path, key)
        except (FileFormatError, MemoryError):
            raise
        except Exception as error:  # zipfile and zlib raise many types on damaged data
            raise FileFormatError(f"{path}: member {key!r} is corrupt or unreadable ({type(error).__name__}: "
                                  f"{str(error)[:200]})") from None
        if dtype.hasobject:
            raise FileFormatError(f"{path}: array {key!r} has dtype object: only np.load(allow_pickle=True) could "
                                  f"read it, which runs pickle; refused")
        nbytes = math.prod(shape) * dtype.itemsize
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


def read_npz(path, expected=None, allowed=None, max_bytes=None, data=None) -> dict:
    """Read an ``.npz`` safely: headers checked first (see :func:`npz_headers`), then data with CRC checks.

    Never unpickles; the zip is opened once, so what was checked is what is read. Returns
    ``{name: ndarray}`` in the file's order. Raises :class:`FileFormatError` naming the file.
    """
    path = os.fspath(path)
    arrays = {}
    with _open_zip(path, data) as zf:
        headers = _check_members(zf, path, expected, allowed, max_bytes)
        try:
            for key in headers:
                with zf.open(key + ".npy") as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                    if member.read(1) != b"":  # reaching the end makes zipfile verify the CRC
                        raise FileFormatError(f"{path}: array {key!r} has trailing data")
                arrays[key] = array
        except (FileFormatError, MemoryError):
            raise
        except Exception as error:  # zipfile, zlib and NumPy raise many types on damaged data
            raise FileFormatError(f"{path}: corrupt data ({type(error).__name__}: {str(error)[:200]})") from None
    return arrays


# ----------------------------------------------------------------------------------------------- checks and locks
def check_output_path(path) -> None:
    """Raise an ``OSError`` saying why, before any work, unless :func:`atomic_write` can write ``path``.

    The checks :func:`atomic_write` itself makes only once the work is done, made up front: the folder exists
    and a file can be created there (:func:`check_writable_folder`), ``path`` is not a folder, its name fits the
    file system's limit on a name (the temporary name is shortened to fit, :func:`temp_prefix`), and nothing
    but a regular file (or a link) is at ``path`` (a FIFO, a device or a socket would be refused).

    Parameters
    ----------
    path : str or os.PathLike

    Raises
    ------
    OSError
        ``FileNotFoundError`` (no such folder), ``NotADirectoryError``, ``IsADirectoryError``, ``ENAMETOOLONG``,
        ``EINVAL`` (a FIFO, device or socket), or what creating a file in the folder raised; the message says
        which.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path}: is a folder, not a file name")
    check_writable_folder(directory)
    _refuse_long_name(path, directory)
    try:
        st = os.stat(path)  # a link to a FIFO is as bad as the FIFO
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"{path}: is {file_kind(st.st_mode)}, not a regular file; it cannot be "
                                    f"replaced with one")


def check_new_folder_names(folder) -> None:
    """Raise ``OSError`` (``ENAMETOOLONG``) unless every folder of ``folder`` that does not exist yet has a name
    its file system allows (:func:`name_max` of the nearest existing folder above it): what ``os.makedirs``
    would otherwise find only when it is called, after the work."""
    folder = os.path.abspath(os.fspath(folder))
    missing = []
    existing = folder
    while not os.path.lexists(existing):
        missing.append(os.path.basename(existing))
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    limit = name_max(existing if os.path.isdir(existing) else os.path.dirname(existing))
    for name in missing:
        if len(os.fsencode(name)) > limit:
            raise OSError(errno.ENAMETOOLONG, f"the folder name {name[:40]!r}... is {len(os.fsencode(name))} bytes, "
                                              f"more than the {limit} this file system allows")


class FolderLock:
    """An advisory lock on a folder, held until :meth:`release` (or the process ends): see :func:`lock_folder`.

    Usable as a context manager. ``held`` is False where locks are not available (no ``fcntl``: Windows).
    """

    def __init__(self, fd):
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (closing the folder's descriptor releases it); a second call does nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_folder(folder, shared=False) -> FolderLock:
    """Lock the folder ``folder`` itself (``flock`` on its descriptor: no lock file is written), without waiting.

    The lock is advisory: it keeps out the other processes that ask for it (two ``train --checkpoint DIR`` runs
    on one folder), not a process that writes without asking. It is the kernel's: it ends with the process that
    holds it, however that process ends (a crash or ``kill -9`` leaves no stale lock behind). Many processes may
    hold a ``shared`` lock at once; an exclusive lock excludes every other.

    Parameters
    ----------
    folder : str or os.PathLike
        An existing folder.
    shared : bool, default False

    Returns
    -------
    FolderLock
        Held until its :meth:`FolderLock.release`. Where ``fcntl`` is missing (Windows) a lock that holds
        nothing (``held`` False).

    Raises
    ------
    BlockingIOError
        Another process holds the lock (an exclusive one, or a shared one when ``shared`` is False).
    OSError
        ``folder`` cannot be opened (no such folder, not a folder, not readable).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks on folders
        return FolderLock(None)
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.fspath(folder), flags)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise BlockingIOError(error.errno, f"{os.fspath(folder)}: locked by another process") from None
        raise
    return FolderLock(fd)


def is_regular_file(path) -> bool:
    """True for an existing regular file (not a folder, device or FIFO)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


__all__ = ["FileFormatError", "check_writable_folder", "atomic_write", "write_bytes", "write_text", "write_json",
           "save_npz", "check_npz_names", "save_figure", "sha256_file", "open_regular", "file_kind", "npz_names",
           "npz_headers", "read_npz", "memory_bound", "check_output_path", "check_new_folder_names", "FolderLock",
           "lock_folder", "is_regular_file", "name_max", "temp_prefix", "MAX_HEADER_BYTES",
           "TEMP_SUFFIX", "TEMP_TAIL"]
