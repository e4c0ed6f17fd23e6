"""How BLAS's threads behave on many small matrix products, and what :mod:`tinynet.blas` does instead.

Usage (from the repository root)::

    python benchmarks/blas_threads.py              # 200 calls of each way, the shapes of GoogLeNet's 4b 3×3
    python benchmarks/blas_threads.py --calls 500 --batch 36 --rows 392 --inner 96 --cols 144

A Winograd convolution multiplies 36 pairs of small matrices (:mod:`tinynet.layers.conv_winograd`). This
times one such call four ways, ``--calls`` times each, and prints the minimum, median, 99th percentile,
maximum, total, and how many calls took over 20 ms:

* ``np.matmul`` on the stacked arrays (BLAS's threads meet at the end of each of the 36 products);
* a Python loop of 36 ``np.matmul`` calls (the same, one call each);
* ``np.matmul`` with BLAS on one thread;
* :func:`tinynet.blas.batched_matmul` in ``'threads'`` mode (the batch shared among Python threads, BLAS on
  one thread each; its default ``'blas'`` mode is the stacked ``np.matmul`` above).

The slow calls are the point: on a machine whose cores are shared, a late thread holds up every meeting.
"""
from __future__ import annotations

import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tinynet import blas, fileio  # noqa: E402

from _args import OneLineParser, positive_int  # noqa: E402


def timings(call, calls):
    """Milliseconds of ``calls`` calls of ``call`` (after two untimed ones)."""
    call(), call()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        out[i] = (time.perf_counter() - start) * 1e3
    return out


#: the most timed calls of each way: a million calls of a few milliseconds is an hour per way already
MAX_CALLS = 1_000_000


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=positive_int(MAX_CALLS), default=200,
                        help=f"timed calls of each way (at most {MAX_CALLS:,}: each takes milliseconds)")
    parser.add_argument("--batch", type=positive_int(), default=36)
    parser.add_argument("--rows", type=positive_int(), default=392, help="T, the tiles (default: 4b's at batch 8)")
    parser.add_argument("--inner", type=positive_int(), default=112, help="C, the input channels")
    parser.add_argument("--cols", type=positive_int(), default=224, help="K, the filters")
    args = parser.parse_args(argv)
    # a, b and one product, float32: what must fit before anything is timed
    nbytes = 4 * args.batch * (args.rows * args.inner + args.inner * args.cols + args.rows * args.cols)
    if nbytes > fileio.memory_bound():
        parser.error(f"arguments --batch, --rows, --inner, --cols: the matrices would take {nbytes / 2**30:.1f} GiB, "
                     f"more than half of this machine's memory ({fileio.memory_bound() / 2**30:.1f} GiB)")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((args.batch, args.rows, args.inner), dtype=np.float32)
    b = rng.standard_normal((args.batch, args.inner, args.cols), dtype=np.float32)
    _, controller = blas._pool_and_controller(blas.workers())

    def one_thread():
        with controller.limit(limits=1, user_api="blas"):
            return np.matmul(a, b)

    def shared_threads():
        with blas.shared("threads"):
            return blas.batched_matmul(a, b)

    ways = {"np.matmul, stacked": lambda: np.matmul(a, b),
            "np.matmul, a loop of 2-D calls": lambda: [np.matmul(a[i], b[i]) for i in range(args.batch)],
            "np.matmul, BLAS on one thread": one_thread if controller else None,
            "batched_matmul, 'threads' mode": shared_threads}
    print(f"{args.batch} products ({args.rows}x{args.inner}) @ ({args.inner}x{args.cols}), float32, "
          f"{blas.workers()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':34s} {'min':>7s} {'median':>7s} {'p99':>7s} {'max':>7s} {'total':>8s} {'>20 ms':>7s}")
    for name, call in ways.items():
        if call is None:
            print(f"{name:34s} (needs threadpoolctl)")
            continue
        t = timings(call, args.calls)
        print(f"{name:34s} {t.min():7.1f} {np.median(t):7.1f} {np.percentile(t, 99):7.1f} {t.max():7.1f} "
              f"{t.sum():8.0f} {int((t > 20).sum()):7d}")


if __name__ == "__main__":
    main()
