"""Helpers the readers share: byte counts in words, the memory bound a load may use, opening a maybe-gzipped file.

Private to :mod:`tinynet.data`.
"""
from __future__ import annotations

import contextlib
import gzip

from ..fileio import memory_bound, open_regular


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _bound(max_bytes) -> int:
    return memory_bound() if max_bytes is None else int(max_bytes)


@contextlib.contextmanager
def _open_maybe_gz(path):
    """The regular file ``path`` opened for reading (:func:`tinynet.fileio.open_regular`: a FIFO, a device or a
    folder raises :class:`~tinynet.fileio.FileFormatError` before a byte is read), decompressed when it ends in
    ``.gz``."""
    with open_regular(path) as f:
        if str(path).endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                yield g
        else:
            yield f
