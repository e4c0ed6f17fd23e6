"""Many small matrix products on all cores: BLAS's own threads, or one share per core.

A Winograd convolution (:mod:`tinynet.layers.conv_winograd`) is 36 independent products of a few hundred
rows each. :func:`batched_matmul` runs them in one of two ways, chosen by :func:`set_sharing` (or the
environment variable ``TINYNET_BLAS_SHARING``):

``'blas'`` (default)
    NumPy's stacked ``matmul``: BLAS's own threads split each product and meet at its end, 36 meetings per
    call. On a quiet machine this is the faster: alternating the two step by step in one process (the
    paper GoogLeNet, batch 8, 2 cores, 2026-11-29), a train step took 694 / 654 ms (minimum) and 725 /
    778 ms (median) against 697 / 781 and 920 / 901 ms with ``'threads'``, in two runs.
``'threads'``
    One contiguous share of the batch per core, on a pool of Python threads (NumPy releases the GIL inside
    ``matmul``) with BLAS limited to one thread meanwhile (through ``threadpoolctl``): the threads meet once
    per call, and a late one delays only its own share. This is the steadier when another process takes a
    core: measured while a test suite ran beside it (``benchmarks/blas_threads.py``, GoogLeNet 3a's shapes
    at batch 8), in two runs, stacked ``matmul`` took over 20 ms (instead of 3–8) in 7 % and 26 % of the
    calls, 99th percentile 91 and 308 ms; the shared products never took over 14 ms (99th percentile 11 and
    10 ms).

Either way the products are BLAS's own; only the threading differs (tests compare the results with
``np.matmul``'s, to 1e-12 in float64). :func:`small_matmul` is one product too small to split (the kernel's
transform), on BLAS's threads or, in ``'threads'`` mode, on one BLAS thread in the caller
(:func:`one_thread_matmul`, which also takes a batch too small to share).
"""
from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import _temporarily

#: the ways :func:`batched_matmul` can share its products among the cores (see the module's text)
SHARING_MODES = ("blas", "threads")
#: the fewest multiply-adds :func:`batched_matmul` shares among threads (below, one thread does them all)
SHARED_MIN_MACS = 16 * 2 ** 20
_STATE = {}
_LOCK = threading.Lock()
_CALL_LOCK = threading.Lock()


def _check_sharing(who, mode):
    if mode not in SHARING_MODES:
        raise ValueError(f"{who}: expected one of {SHARING_MODES}, got {mode!r}")
    return mode


def _sharing_from_environment():
    value = os.environ.get("TINYNET_BLAS_SHARING", "").strip().lower()
    if value in SHARING_MODES:
        return value
    if value:
        warnings.warn(f"tinynet: ignoring TINYNET_BLAS_SHARING={os.environ['TINYNET_BLAS_SHARING']!r} "
                      f"(expected one of {SHARING_MODES})", stacklevel=2)
    return "blas"


_SHARING = _sharing_from_environment()


def sharing() -> str:
    """How :func:`batched_matmul` shares its products among the cores: ``'blas'`` or ``'threads'``."""
    return _SHARING


def set_sharing(mode: str) -> None:
    """``'blas'`` (default: NumPy's stacked ``matmul`` on BLAS's threads, the faster on a quiet machine) or
    ``'threads'`` (one share per core with a one-thread BLAS each, the steadier beside another busy process);
    any other value raises ``ValueError``."""
    global _SHARING
    _SHARING = _check_sharing("tinynet.blas.set_sharing", mode)


def shared(mode: str):
    """Context manager: ``with tinynet.blas.shared('threads'): ...`` runs the products that way inside."""
    _check_sharing("tinynet.blas.shared", mode)
    return _temporarily(sharing, set_sharing, mode)


def workers() -> int:
    """The number of threads :func:`batched_matmul` uses: the CPUs this process may run on (at most 8)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _pool_and_controller(n):
    """The thread pool of ``n`` workers and a ``threadpoolctl`` controller, made once per process (a forked
    child makes its own: it has none of its parent's threads); ``(None, None)`` without threadpoolctl, and
    :func:`batched_matmul` is then ``np.matmul``."""
    with _LOCK:
        if _STATE.get("pid") != os.getpid():
            _STATE.clear()
            _STATE["pid"] = os.getpid()
            try:
                from threadpoolctl import ThreadpoolController
                controller = ThreadpoolController()
            except ImportError:
                controller = None
            _STATE["controller"] = controller
            _STATE["pool"] = ThreadPoolExecutor(n, thread_name_prefix="tinynet-blas") if controller else None
        return _STATE["pool"], _STATE["controller"]


def one_thread_matmul(a, b):
    """``a @ b`` with BLAS on one thread: for products too small to share (a few MFLOP), whose threads would
    spend longer meeting than multiplying (a 36×9 by 9×20000 product measured 1 ms to 15 ms on two threads)."""
    pool, controller = _pool_and_controller(workers())
    if controller is None or workers() < 2:
        return a @ b
    with _CALL_LOCK, controller.limit(limits=1, user_api="blas"):
        return a @ b


def small_matmul(a, b):
    """``a @ b`` for a product too small to split (the Winograd kernel's transform, 36×9 by 9×C·K): on BLAS's
    threads in ``'blas'`` mode (0.83 against 1.39 ms for C·K = 51200 on a quiet machine), on one BLAS thread in
    ``'threads'`` mode (:func:`one_thread_matmul`)."""
    if _SHARING == "blas":
        return a @ b
    return one_thread_matmul(a, b)


def batched_matmul(a, b):
    """``a[i] @ b[i]`` for every ``i``: NumPy's stacked ``matmul``, on the cores as :func:`set_sharing` says.

    Parameters
    ----------
    a : ndarray, shape (B, m, k)
    b : ndarray, shape (B, k, n), same dtype

    Returns
    -------
    c : ndarray, shape (B, m, n), C-contiguous
    """
    if _SHARING == "blas":
        return np.matmul(a, b)
    n_workers = min(workers(), a.shape[0])
    if n_workers < 2 or a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] < SHARED_MIN_MACS:
        return one_thread_matmul(a, b)  # too small to share: one thread, no meeting
    pool, controller = _pool_and_controller(workers())
    if pool is None:
        return np.matmul(a, b)
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))
    bounds = np.linspace(0, a.shape[0], n_workers + 1).round().astype(int)
    shares = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    with _CALL_LOCK, controller.limit(limits=1, user_api="blas"):  # one call at a time sets BLAS's threads
        futures = [pool.submit(np.matmul, a[s], b[s], out=out[s]) for s in shares]
        for future in futures:
            future.result()
    return out
