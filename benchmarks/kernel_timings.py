"""Milliseconds per call of the CPU kernels at GoogLeNet's shapes (batch 8, float32): NumPy and Numba.

Usage (from the repository root)::

    python benchmarks/kernel_timings.py                         # every kernel, numpy and numba
    python benchmarks/kernel_timings.py --only maxpool,lrn      # rows whose kernel name contains one of these
    python benchmarks/kernel_timings.py --baseline HEAD         # adds a column: numba_kernels.py as of HEAD
    python benchmarks/kernel_timings.py --no-numpy --repeats 15

Each cell is the minimum over ``--repeats`` calls after two warm-up calls (the first compiles the Numba
kernel; other processes on the machine only ever make a call slower, so the minimum is the kernel's own
time). ``--baseline REV`` loads ``tinynet/kernels/numba_kernels.py`` as it is in git revision ``REV``
(``git show``, read only) as a second Numba module, so a change is measured before and after in one run on
the same machine state. A module without a fused kernel (``bias_relu_forward``, ``relu_bias_backward``) is
timed on what the layers did without it: ``z += b`` then ``np.maximum(z, 0, out=z)``, and ``relu_backward``
then ``gz.sum(axis=0)``.

The shapes are the calls of one GoogLeNet (paper variant, 224×224) train step: the 13 max pools (3×3/2
'same' between stages, 3×3/1 'same' in the inception pool branches; a selection of them with ``--quick``),
the two LRNs (size 5, alpha 1e-4, beta 0.75, k 1), ReLU with its bias at two conv outputs, and
im2col/col2im of the convolutions that are not 1×1.
"""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinynet.kernels import backend_module  # noqa: E402
from tinynet.kernels import numpy_kernels  # noqa: E402
from tinynet.kernels.common import window_output_hw  # noqa: E402

from _args import OneLineParser, name_list, positive_int  # noqa: E402

B = 8
#: the kernels `cases` times, which ``--only`` filters
KERNELS = ("maxpool_forward", "maxpool_backward", "lrn_forward", "lrn_backward", "relu_backward", "bias_relu_forward",
           "relu_bias_backward", "im2col", "col2im")
BASELINE_FILE = "tinynet/kernels/numba_kernels.py"


def same_pads(h, w, k, s):
    """Keras 'same' padding (top, bottom, left, right) of a k×k/s window on an h×w input."""
    pads = []
    for n in (h, w):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


# (H, W, C, k, s) of every max pool of a GoogLeNet step, in network order
POOLS = [(112, 112, 64, 3, 2), (56, 56, 192, 3, 2), (28, 28, 192, 3, 1), (28, 28, 256, 3, 1), (28, 28, 480, 3, 2),
         (14, 14, 480, 3, 1), (14, 14, 512, 3, 1), (14, 14, 512, 3, 1), (14, 14, 512, 3, 1), (14, 14, 528, 3, 1),
         (14, 14, 832, 3, 2), (7, 7, 832, 3, 1), (7, 7, 832, 3, 1)]
QUICK_POOLS = [(112, 112, 64, 3, 2), (56, 56, 192, 3, 2), (28, 28, 256, 3, 1), (14, 14, 512, 3, 1), (7, 7, 832, 3, 1)]
LRNS = [(56, 56, 64), (56, 56, 192)]
RELUS = [(28, 28, 128), (56, 56, 192)]
# (H, W, C, k, s) of the convolutions that go through im2col (every one that is not 1×1), 'same' padding
CONVS = [(224, 224, 3, 7, 2), (56, 56, 64, 3, 1), (28, 28, 96, 3, 1), (28, 28, 16, 5, 1), (28, 28, 128, 3, 1),
         (28, 28, 32, 5, 1), (14, 14, 96, 3, 1), (14, 14, 16, 5, 1), (14, 14, 112, 3, 1), (14, 14, 24, 5, 1),
         (14, 14, 128, 3, 1), (14, 14, 24, 5, 1), (14, 14, 144, 3, 1), (14, 14, 32, 5, 1), (14, 14, 160, 3, 1),
         (14, 14, 32, 5, 1), (7, 7, 160, 3, 1), (7, 7, 32, 5, 1), (7, 7, 192, 3, 1), (7, 7, 48, 5, 1)]
QUICK_CONVS = [(224, 224, 3, 7, 2), (56, 56, 64, 3, 1), (28, 28, 128, 3, 1), (28, 28, 32, 5, 1), (14, 14, 160, 3, 1)]


def load_baseline(rev):
    """``numba_kernels.py`` of git revision ``rev``, imported as ``tinynet.kernels._numba_baseline``."""
    text = subprocess.run(["git", "show", f"{rev}:{BASELINE_FILE}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    folder = pathlib.Path(tempfile.mkdtemp(prefix="tinynet_baseline_"))
    path = folder / "numba_kernels_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("tinynet.kernels._numba_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bias_relu(m):
    if hasattr(m, "bias_relu_forward"):
        return m.bias_relu_forward

    def composed(z, bias, relu):
        z += bias
        return np.maximum(z, 0, out=z) if relu else z
    return composed


def relu_bias(m):
    if hasattr(m, "relu_bias_backward"):
        return m.relu_bias_backward

    def composed(gy, y, relu, want_bias):
        gz = m.relu_backward(gy, y) if relu else gy
        return gz, gz.reshape(-1, gz.shape[-1]).sum(axis=0) if want_bias else None
    return composed


def cases(quick):
    """``[(kernel, shape label, setup)]``; ``setup(m)`` returns the zero-argument call to time on module ``m``."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    out = []
    for h, w, c, k, s in (QUICK_POOLS if quick else POOLS):
        pads = same_pads(h, w, k, s)
        x = rng.standard_normal((B, h, w, c)).astype(f32)
        np.maximum(x, 0, out=x)  # pools follow ReLUs: many ties at zero
        y, arg = numpy_kernels.maxpool_forward(x, k, k, s, s, pads)
        gy = rng.standard_normal(y.shape).astype(f32)
        label = f"{h}x{w}x{c} {k}x{k}/{s}"
        out.append(("maxpool_forward", label, lambda m, x=x, k=k, s=s, pads=pads:
                    lambda: m.maxpool_forward(x, k, k, s, s, pads)))
        out.append(("maxpool_backward", label, lambda m, gy=gy, arg=arg, shape=x.shape, k=k, s=s, pads=pads:
                    lambda: m.maxpool_backward(gy, arg, shape, k, k, s, s, pads)))
    for h, w, c in LRNS:
        x = rng.standard_normal((B, h, w, c)).astype(f32) * f32(20)
        y, scale = numpy_kernels.lrn_forward(x, 5, 1e-4, 0.75, 1.0)
        gy = rng.standard_normal(x.shape).astype(f32)
        label = f"{h}x{w}x{c}"
        out.append(("lrn_forward", label, lambda m, x=x: lambda: m.lrn_forward(x, 5, 1e-4, 0.75, 1.0)))
        out.append(("lrn_backward", label, lambda m, gy=gy, x=x, y=y, scale=scale:
                    lambda: m.lrn_backward(gy, x, y, scale, 5, 1e-4, 0.75)))
    for h, w, c in RELUS:
        z = rng.standard_normal((B, h, w, c)).astype(f32)
        bias = (rng.standard_normal(c) * 0.01).astype(f32)
        y = np.maximum(z, 0)
        gy = rng.standard_normal(z.shape).astype(f32)
        label = f"{h}x{w}x{c}"
        out.append(("relu_backward", label, lambda m, gy=gy, y=y: lambda: m.relu_backward(gy, y)))
        out.append(("bias_relu_forward", label, lambda m, z=z, bias=bias:
                    lambda: bias_relu(m)(z, bias, True)))  # in place: z drifts by the bias, harmless here
        out.append(("relu_bias_backward", label, lambda m, gy=gy, y=y:
                    lambda: relu_bias(m)(gy, y, True, True)))
    for h, w, c, k, s in (QUICK_CONVS if quick else CONVS):
        pads = same_pads(h, w, k, s)
        x = rng.standard_normal((B, h, w, c)).astype(f32)
        ho, wo = window_output_hw(h, w, k, k, s, s, pads)
        cols = rng.standard_normal((B, ho, wo, k, k, c)).astype(f32)
        label = f"{h}x{w}x{c} {k}x{k}/{s}"
        out.append(("im2col", label, lambda m, x=x, k=k, s=s, pads=pads: lambda: m.im2col(x, k, k, s, s, pads)))
        out.append(("col2im", label, lambda m, cols=cols, shape=x.shape, k=k, s=s, pads=pads:
                    lambda: m.col2im(cols, shape, k, k, s, s, pads)))
    return out


def best_ms(call, repeats):
    call()
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def baseline_problem(rev):
    """Why ``git show REV:tinynet/kernels/numba_kernels.py`` would fail (read only), or None."""
    try:
        done = subprocess.run(["git", "cat-file", "-e", f"{rev}:{BASELINE_FILE}"], cwd=ROOT, capture_output=True,
                              text=True)
    except OSError as error:
        return f"git cannot be run ({error.strerror or error})"
    return None if done.returncode == 0 else f"{rev!r} is not a git revision that has {BASELINE_FILE}"


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int(), default=9, help="timed calls per cell (the minimum is shown)")
    parser.add_argument("--only", type=name_list(KERNELS, substrings=True), default=None,
                        help="comma-separated substrings of kernel names to run (default: every kernel)")
    parser.add_argument("--baseline", default=None, help="git revision of numba_kernels.py for a 'before' column")
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference column")
    parser.add_argument("--quick", action="store_true", help="a selection of the pool and conv shapes")
    parser.add_argument("--threads", type=positive_int(), default=None, help="numba.set_num_threads")
    args = parser.parse_args(argv)
    if args.baseline and (problem := baseline_problem(args.baseline)):
        parser.error(f"argument --baseline: {problem}")

    try:
        import numba
    except ImportError:
        parser.error("numba is not installed (this script times its kernels)")
    if args.threads and args.threads > numba.config.NUMBA_NUM_THREADS:
        parser.error(f"argument --threads: must be <= {numba.config.NUMBA_NUM_THREADS} (Numba's thread count, "
                     f"NUMBA_NUM_THREADS), got {args.threads}")
    if args.threads:
        numba.set_num_threads(args.threads)
    columns = {} if args.no_numpy else {"numpy": numpy_kernels}
    if args.baseline:
        columns[f"numba@{args.baseline}"] = load_baseline(args.baseline)
    columns["numba"] = backend_module("numba")
    only = args.only or []
    rows = [r for r in cases(args.quick) if not only or any(s in r[0] for s in only)]

    print(f"ms per call, min of {args.repeats}, batch {B}, float32, numba threads {numba.get_num_threads()}")
    header = f"{'kernel':<20} {'shape':<22}" + "".join(f" {name:>14}" for name in columns)
    print(header)
    print("-" * len(header))
    totals = {}
    for kernel, label, setup in rows:
        cells = []
        for name, module in columns.items():
            ms = best_ms(setup(module), args.repeats)
            totals.setdefault(kernel, {}).setdefault(name, 0.0)
            totals[kernel][name] += ms
            cells.append(f" {ms:>14.3f}")
        print(f"{kernel:<20} {label:<22}" + "".join(cells), flush=True)
    print("-" * len(header))
    for kernel, by_column in totals.items():
        print(f"{kernel:<20} {'sum of the rows':<22}" + "".join(f" {by_column[n]:>14.3f}" for n in columns))


if __name__ == "__main__":
    main()
