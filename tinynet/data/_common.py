"""Helpers the readers share: byte counts in words, the memory bound a load may use, opening a maybe-gzipped file.

Private to :mod:`tinynet.data`.
"""
from __future__ import annotations

import gzip

from ..fileio import memory_bound


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _bound(max_bytes) -> int:
    return memory_bound() if max_bytes is None else int(max_bytes)


def _open_maybe_gz(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")
