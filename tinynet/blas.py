"""Many small matrix products on all cores without BLAS's threads meeting after each one.

A Winograd convolution (:mod:`tinynet.layers.conv_winograd`) is 36 independent products of a few hundred
rows each. Handed to NumPy as one stacked ``matmul``, each product runs on BLAS's own threads, which meet at
the end of every product: 36 meetings per call. On a quiet machine that is fine, but when another process
takes a core, one late thread holds up each meeting. Measured on this project's 2-core machine while a test
suite ran beside it (``benchmarks/blas_threads.py``, the shapes of GoogLeNet's 3a at batch 8), in two runs:
stacked ``matmul`` took over 20 ms (instead of 3–8) in 7 % and 26 % of the calls, 99th percentile 91 and
308 ms; :func:`batched_matmul` never over 14 ms, 99th percentile 11 and 10 ms. On a quiet machine the two
take the same time.

:func:`batched_matmul` splits the batch into one contiguous share per core and runs the shares on a pool of
Python threads (NumPy releases the GIL inside ``matmul``) with BLAS limited to one thread meanwhile (through
``threadpoolctl``): the threads meet once per call, and a late one delays only its own share. Products too
small to share run on one thread in the caller (:func:`one_thread_matmul`). The products are BLAS's own; only
the threading differs (tests compare the results with ``np.matmul``'s, to 1e-12 in float64).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: the fewest multiply-adds :func:`batched_matmul` shares among threads (below, one thread does them all)
SHARED_MIN_MACS = 16 * 2 ** 20
_STATE = {}
_LOCK = threading.Lock()
_CALL_LOCK = threading.Lock()


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


def batched_matmul(a, b):
    """``a[i] @ b[i]`` for every ``i``: NumPy's stacked ``matmul``, the batch shared among the cores.

    Parameters
    ----------
    a : ndarray, shape (B, m, k)
    b : ndarray, shape (B, k, n), same dtype

    Returns
    -------
    c : ndarray, shape (B, m, n), C-contiguous
    """
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
