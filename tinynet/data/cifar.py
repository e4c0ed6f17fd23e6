"""CIFAR-10 python batches, read with a restricted unpickler that imports nothing and runs no code.

The pickle's opcodes and memo indices are checked before it is unpickled (:func:`safe_unpickle`); NumPy's
array pieces resolve to stand-ins that only record numbers and bytes; realising the result visits each shared
object once, nests at most :data:`PICKLE_MAX_DEPTH` deep and builds no more array bytes than the file holds.
A batch file is capped at :data:`CIFAR_MAX_FILE_BYTES`.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import struct
import zlib

import numpy as np

from ..fileio import FileFormatError
from ._common import _bound, _human_bytes, _open_maybe_gz
from .dataset import Dataset, _as_labels
from .pixels import scale_pixels


# -------------------------------------------------------------------------------------------- CIFAR
#: Cap on one CIFAR batch file (after gzip); CIFAR-10 batches are 31 MB, CIFAR-100's training file 155 MB.
CIFAR_MAX_FILE_BYTES = 256 << 20
#: Containers nest at most this deep in a pickle this module reads (a CIFAR batch needs 2: dict → list → int).
PICKLE_MAX_DEPTH = 8

#: The pickle opcodes a data file may use: values, containers, memo, and the globals/REDUCE/BUILD that NumPy
#: arrays need (resolved by :class:`RestrictedUnpickler` to stand-ins). Refused: persistent ids, extension
#: registry, INST/OBJ/NEWOBJ (class instantiation) and out-of-band buffers.
_PICKLE_OPCODES = frozenset("""
    MARK STOP POP POP_MARK DUP FLOAT INT BININT BININT1 BININT2 LONG LONG1 LONG4 STRING BINSTRING SHORT_BINSTRING
    UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 NONE NEWTRUE
    NEWFALSE BINFLOAT EMPTY_LIST APPEND APPENDS LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT
    SETITEM SETITEMS GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE PROTO FRAME GLOBAL STACK_GLOBAL REDUCE
    BUILD
""".split())


class _Budget:
    """What :func:`_realise` may still build: array bytes and container items."""

    def __init__(self, array_bytes, items):
        self.array_bytes, self.items = int(array_bytes), int(items)

    def spend_bytes(self, n):
        self.array_bytes -= n
        if self.array_bytes < 0:
            raise pickle.UnpicklingError("the pickle's arrays add up to more bytes than the file holds (shared "
                                         "buffers?); refused")

    def spend_items(self, n):
        self.items -= n
        if self.items < 0:
            raise pickle.UnpicklingError("the pickle holds more items than its size allows; refused")


class _ArrayStub:
    """Stands in for ``numpy.ndarray`` while unpickling; holds the shape, dtype and raw bytes it is given."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_array(self, budget=None):
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("CIFAR loader: an array without a valid (version, shape, dtype, order, "
                                         "data) state")
        _version, shape, dtype, fortran, raw = state
        if isinstance(raw, list):  # object arrays pickle their items as a list: refuse
            raise pickle.UnpicklingError("CIFAR loader: object arrays are not allowed")
        if isinstance(raw, str):  # Python 2 string read with encoding='latin1'
            try:
                raw = raw.encode("latin1")
            except UnicodeEncodeError:
                raise pickle.UnpicklingError("CIFAR loader: array data is text, not bytes") from None
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"CIFAR loader: array data is a {type(raw).__name__}, not bytes")
        if not isinstance(dtype, _DtypeStub):
            raise pickle.UnpicklingError("CIFAR loader: an array without a numeric dtype")
        if not (isinstance(shape, tuple) and len(shape) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f"CIFAR loader: bad array shape {shape!r}"[:200])
        dt = dtype.to_dtype()
        if math.prod(shape) * dt.itemsize != len(raw):
            raise pickle.UnpicklingError(f"CIFAR loader: an array of shape {shape} {dt} needs "
                                         f"{math.prod(shape) * dt.itemsize} bytes but holds {len(raw)}")
        if budget is not None:
            budget.spend_bytes(len(raw))
        try:
            return np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if fortran else "C").copy()
        except ValueError as error:  # e.g. a dimension of 2**64 in an empty array: 'Maximum allowed dimension'
            raise pickle.UnpicklingError(f"CIFAR loader: bad array shape {shape!r} ({error})"[:300]) from None


_DTYPE_CODE = re.compile(r"[<>|=]?[biuf][0-9]{0,2}")


class _DtypeStub:
    """Stands in for ``numpy.dtype``: only plain numeric type codes become real dtypes."""

    def __init__(self, code, *args):
        if isinstance(code, bytes):
            code = code.decode("ascii", "replace")
        if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
            raise pickle.UnpicklingError(f"CIFAR loader: dtype {code!r} is not allowed"[:200])
        try:
            np.dtype(code)
        except TypeError:
            raise pickle.UnpicklingError(f"CIFAR loader: dtype {code!r} is not allowed") from None
        self.code, self.order = code, "="

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "="
        order = order.decode("ascii", "replace") if isinstance(order, bytes) else order
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"CIFAR loader: dtype byte order {order!r} is not allowed"[:200])
        self.order = order

    def to_dtype(self):
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


def _reconstruct(cls, shape, dtype_code):
    if cls is not _ArrayStub:
        raise pickle.UnpicklingError("CIFAR loader: unexpected _reconstruct target")
    return _ArrayStub()


def _frombuffer(buffer, dtype, shape, order):
    stub = _ArrayStub()
    stub.state = (1, shape, dtype, order == "F", buffer)
    return stub


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("CIFAR loader: unexpected _codecs.encode call")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise pickle.UnpicklingError("CIFAR loader: _codecs.encode of non-latin-1 text") from None


def _empty_bytes(*args):
    """``bytes()``: how protocol 2 pickles ``b""``; anything else is refused."""
    if args:
        raise pickle.UnpicklingError("CIFAR loader: unexpected bytes(...) call")
    return b""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing: the only globals it resolves are harmless stand-ins of its own.

    CIFAR-10's python batches are pickled dicts of lists, bytes and NumPy uint8 arrays. A NumPy array pickles
    as ``numpy.core.multiarray._reconstruct(ndarray, ...)`` plus a state tuple holding its raw bytes; here
    those names map to :class:`_ArrayStub` / :class:`_DtypeStub`, which only record numbers and bytes and
    build the array with ``np.frombuffer``. Any other global (``os.system``, ...) raises
    ``pickle.UnpicklingError``, so a malicious file cannot run code. Use it through :func:`safe_unpickle`,
    which also bounds the work (opcodes and memo indices checked first, nesting depth, array bytes).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _ArrayStub,
        ("numpy", "dtype"): _DtypeStub,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}"[:200]) from None


def _check_opcodes(data: bytes) -> int:
    """Walk the pickle's opcodes without running them; return their count.

    Refuses opcodes outside :data:`_PICKLE_OPCODES`, truncated arguments, and memo indices out of order (the C
    unpickler sizes its memo table by the largest index: one 5-byte ``LONG_BINPUT`` could ask for 32 GiB).
    """
    count = puts = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            count += 1
            if op.name not in _PICKLE_OPCODES:
                raise pickle.UnpicklingError(f"pickle opcode {op.name} (at byte {pos}) is not allowed in a data file")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not 0 <= arg <= puts:
                    raise pickle.UnpicklingError(f"memo index {arg} at byte {pos} is out of order (next is {puts})")
                puts += arg == puts
            elif op.name == "MEMOIZE":
                puts += 1
    except pickle.UnpicklingError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, struct.error, UnicodeDecodeError, OverflowError) as error:
        raise pickle.UnpicklingError(f"not a valid pickle ({error})"[:300]) from None
    return count


def _load_restricted(data: bytes):
    """Check the opcodes, then unpickle with :class:`RestrictedUnpickler`; return the raw object and op count."""
    data = bytes(data)
    count = _check_opcodes(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load(), count
    except pickle.UnpicklingError:
        raise
    except (ValueError, TypeError, AttributeError, EOFError, IndexError, KeyError, struct.error, OverflowError,
            RecursionError) as error:
        raise pickle.UnpicklingError(f"malformed pickle ({type(error).__name__}: {error})"[:300]) from None


_LEAVES = (int, float, complex, str, bytes, bytearray, type(None))


def _realise(obj, budget=None, memo=None, depth=0):
    """Turn stubs into arrays through dicts, lists and tuples, visiting each shared object once.

    ``memo`` maps ``id(original) → realised`` so a DAG of shared references (pickle's memo) is walked once
    and stays shared; containers nest at most :data:`PICKLE_MAX_DEPTH` deep (cycles end there too); ``budget``
    bounds the array bytes and container items built. Any other type raises ``pickle.UnpicklingError``.
    """
    if isinstance(obj, _LEAVES):
        return obj
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if depth > PICKLE_MAX_DEPTH:
        raise pickle.UnpicklingError(f"containers nested deeper than {PICKLE_MAX_DEPTH} levels; a data batch is a "
                                     f"dict of flat lists and arrays")
    if isinstance(obj, _ArrayStub):
        out = obj.to_array(budget)
    elif isinstance(obj, dict):
        if budget is not None:
            budget.spend_items(len(obj))
        out = {_realise(k, budget, memo, depth + 1): _realise(v, budget, memo, depth + 1) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        if budget is not None:
            budget.spend_items(len(obj))
        items = [_realise(v, budget, memo, depth + 1) for v in obj]
        out = items if isinstance(obj, list) else tuple(items)
    else:
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} in the pickle")
    memo[key] = out
    return out


def safe_unpickle(data: bytes):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (bytes keys kept as bytes), with bounded work.

    The opcodes are checked first (see :func:`_check_opcodes`); containers may nest
    :data:`PICKLE_MAX_DEPTH` deep; shared references are realised once (a pickle of lists that double per
    level costs its size, not 2^levels); arrays may add up to at most the input's size.

    Raises
    ------
    pickle.UnpicklingError
        A global other than NumPy's array pieces (``os.system`` ...), object arrays, a disallowed opcode, deep
        nesting, arrays larger than the input, or malformed data.
    """
    obj, count = _load_restricted(data)
    return _realise(obj, _Budget(len(data), count))


def _read_bounded(path, limit, why="the cap for one batch file") -> bytes:
    """The bytes of ``path`` (``.gz`` decompressed), refusing more than ``limit`` bytes (``why``: the cap's name)."""
    try:
        with _open_maybe_gz(path) as f:  # a FIFO or a device is refused before a byte is read
            chunks, total = [], 0
            while total <= limit:  # in pieces: f.read(limit + 1) would reserve the whole limit at once
                chunk = f.read(min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            data = b"".join(chunks)
            del chunks
    except FileFormatError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise FileFormatError(f"{path}: cannot be read: corrupt or truncated ({error})") from None
    if len(data) > limit:
        raise FileFormatError(f"{path}: more than {_human_bytes(limit)} ({why}); refused")
    return data


def load_cifar10_batch(path, max_bytes=None) -> Dataset:
    """One CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``): images (N, 32, 32, 3) in [0, 1].

    The file's ``data`` is (N, 3072) uint8 (or N·3072 bytes), each row the 1,024 red, then green, then blue
    values; ``labels`` (or ``fine_labels``) a flat list of N integers. Only those two entries are realised;
    the rest of the dict is not walked.

    Parameters
    ----------
    path : str
    max_bytes : int, optional
        Cap on the file's size after gzip (default :data:`CIFAR_MAX_FILE_BYTES`).

    Raises
    ------
    tinynet.fileio.FileFormatError
        Missing, corrupt, oversized or unsafe pickle (the :func:`safe_unpickle` reason is in the message), not a
        dict with ``data`` and ``labels``, data not uint8 rows of 3072, labels not a flat list of integers ≥ 0,
        or image and label counts that differ.
    """
    return _load_batch(os.fspath(path), CIFAR_MAX_FILE_BYTES if max_bytes is None else int(max_bytes),
                       "the cap for one batch file")


#: A batch of ``S`` bytes holds at most about 7·S while it is read: the file's bytes, the array realised from
#: the pickle, the float32 images (4 bytes per pixel byte) and the copies between them; counted as 8·S.
_BATCH_PEAK_FACTOR = 8


def _load_batch(path, limit, why):
    """:func:`load_cifar10_batch` with a file-size ``limit`` (``why`` names it in the error)."""
    raw = _read_bounded(path, limit, why)
    try:
        top, count = _load_restricted(raw)
        if not isinstance(top, dict):
            raise FileFormatError(f"{path}: holds a {type(top).__name__}, not a CIFAR batch (a dict with 'data' "
                                  f"and 'labels')")
        entries = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in top.items()
                   if isinstance(k, (bytes, str))}
        labels = entries.get("labels", entries.get("fine_labels"))
        if "data" not in entries or labels is None:
            raise FileFormatError(f"{path}: not a CIFAR batch: it lacks 'data' or 'labels' (it has "
                                  f"{sorted(entries)[:10]})")
        budget = _Budget(len(raw), count)
        data, labels = _realise(entries["data"], budget), _realise(labels, budget)
    except pickle.UnpicklingError as error:
        raise FileFormatError(f"{path}: not a safe CIFAR batch: {error}") from None
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, np.uint8)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise FileFormatError(f"{path}: 'data' is {type(data).__name__} {getattr(data, 'dtype', '')}, expected "
                              f"uint8 rows of 3072 values")
    if data.ndim == 1 and data.size % 3072 == 0:
        data = data.reshape(-1, 3072)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise FileFormatError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072) (32x32 RGB rows)")
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise FileFormatError(f"{path}: 'labels' is an array of shape {labels.shape} {labels.dtype}, expected "
                                  f"N integers")
        if labels.size and int(labels.max()) >= 2 ** 62:  # uint64 would wrap to negative in the int64 cast below
            raise FileFormatError(f"{path}: 'labels' holds values up to {int(labels.max())}, which are not class "
                                  f"indices")
    elif not (isinstance(labels, (list, tuple))
              and all(isinstance(v, int) and not isinstance(v, bool) for v in labels)):
        raise FileFormatError(f"{path}: 'labels' must be a flat list of integers")
    if any(isinstance(v, int) and not -2 ** 62 < v < 2 ** 62 for v in labels):
        raise FileFormatError(f"{path}: 'labels' holds values that are not class indices")
    labels = _as_labels(np.asarray(labels, dtype=np.int64), f"{path}: 'labels'", FileFormatError,
                        allow_negative=False)
    if len(labels) != len(data):
        raise FileFormatError(f"{path}: {len(data)} images in 'data' but {len(labels)} 'labels'")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Dataset(scale_pixels(x, path), labels)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(folder, max_bytes=None):
    """CIFAR-10 python batches in ``folder`` (``data_batch_1..5`` and ``test_batch``).

    Parameters
    ----------
    folder : str
    max_bytes : int, optional
        Cap on the memory the whole load holds at its peak (default :func:`tinynet.fileio.memory_bound`): the
        float32 images of the batches read so far, the one being read (about 8 times its file's size: its
        bytes, its array and its float32 images) and, at the end, the training batches joined into one array.
        Each file is also capped at :data:`CIFAR_MAX_FILE_BYTES`.

    Returns
    -------
    train, test : Dataset

    Raises
    ------
    FileNotFoundError
        No ``data_batch_*`` or no ``test_batch``.
    tinynet.fileio.FileFormatError
        As :func:`load_cifar10_batch`, a label outside 0..9 (the file named), or a peak beyond ``max_bytes``
        (refused before the file that would pass it is read).
    """
    cap = _bound(max_bytes)
    names = sorted(n for n in os.listdir(folder) if n.startswith("data_batch"))
    if not names or not os.path.exists(os.path.join(folder, "test_batch")):
        raise FileNotFoundError(f"load_cifar10: {folder} needs data_batch_* and test_batch")
    parts, held = [], 0
    for name in names + ["test_batch"]:
        path = os.path.join(folder, name)
        share = max(cap - held, 0) // _BATCH_PEAK_FACTOR
        if share < CIFAR_MAX_FILE_BYTES:
            part = _load_batch(path, share, f"this file's share of the cap of {_human_bytes(cap)} for this load, "
                                            f"{_human_bytes(held)} of which the batches before hold")
        else:
            part = _load_batch(path, CIFAR_MAX_FILE_BYTES, "the cap for one batch file")
        if len(part) and part.y.max() >= len(CIFAR10_CLASSES):
            raise FileFormatError(f"{path}: label {int(part.y.max())} is outside CIFAR-10's classes 0..9")
        parts.append(part)
        held += part.x.nbytes + 2 * part.y.nbytes
    joined = sum(p.x.nbytes + 2 * p.y.nbytes for p in parts[:-1])
    if held + joined > cap:
        raise FileFormatError(f"{folder}: joining the training batches needs {_human_bytes(held + joined)} at its "
                              f"peak, more than the cap of {_human_bytes(cap)} for this load; refused")
    train = Dataset(np.concatenate([p.x for p in parts[:-1]]), np.concatenate([p.y for p in parts[:-1]]),
                    CIFAR10_CLASSES)
    test = Dataset(parts[-1].x, parts[-1].y, CIFAR10_CLASSES)
    return train, test


__all__ = ["CIFAR_MAX_FILE_BYTES", "PICKLE_MAX_DEPTH", "RestrictedUnpickler", "safe_unpickle",
           "load_cifar10_batch", "CIFAR10_CLASSES", "load_cifar10"]
