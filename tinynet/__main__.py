"""``python -m tinynet``: a short demo and self-check of the engine.

It builds a small branching model with two outputs (one tensor fanning out into convolution and pooling
branches, concatenated, two heads), prints its summary, then gradient-checks every layer type in float64
and prints one row per layer type with the largest relative error. The exit status is 1 when any check
fails, so the command doubles as a smoke test.

As the ``inception`` command line does: a bad command line is reported in one line (exit status 2), Ctrl-C
ends with one line (130) and a reader that goes away (``python -m tinynet | head -1``) ends it quietly (141).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

from . import __version__, backend, gradcheck
from .layers import (Activation, AvgPool2D, BatchNormalization, Concatenate, Conv2D, Dense, Dropout, Flatten,
                     GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D, ReLU, Softmax,
                     concatenate, reset_names)
from .model import Model
from .utils.text import escape

TOLERANCE = 1e-7
PROG = "python -m tinynet"
EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 130, 141


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` that reports a bad command line in one line (``python -m tinynet: error: ...``), exit 2,
    instead of the usage text and the error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {escape(message)}\n")


def demo_model():
    """A small Inception-like model: four branches over one input, concatenated, with a main and an aux head.

    Returns
    -------
    Model
        Input (12, 12, 3) → outputs (None, 5) (softmax) and (None, 5) (logits of the aux head).
    """
    x = Input((12, 12, 3), name="image")
    stem = Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    stem = BatchNormalization(name="stem_bn")(stem)
    b1 = Conv2D(4, 1, activation="relu", name="branch_1x1")(stem)
    b2 = Conv2D(6, (3, 3), padding="same", activation="relu", name="branch_3x3")(stem)
    b3 = Conv2D(2, (5, 5), padding="same", activation="relu", name="branch_5x5")(stem)
    b4 = MaxPool2D(3, strides=1, padding="same", name="branch_pool")(stem)
    b4 = Conv2D(2, 1, activation="relu", name="pool_proj")(b4)
    mixed = concatenate([b1, b2, b3, b4], name="mixed")
    mixed = LocalResponseNormalization(name="lrn")(mixed)
    main = GlobalAveragePooling2D(name="gap")(mixed)
    main = Dropout(0.4, seed=0, name="dropout")(main)
    main = Dense(5, activation="softmax", name="predictions")(main)
    aux = AvgPool2D(3, strides=2, name="aux_pool")(mixed)
    aux = Dense(5, name="aux_logits")(Flatten(name="aux_flatten")(aux))
    return Model(x, [main, aux], name="tinynet_demo")


def layer_checks():
    """One small, representative float64 check per layer type: ``(label, layer factory, input shape, training)``.

    Window layers use a non-square kernel, unequal strides and asymmetric 'same' padding, the cases
    where swapped indices or padding mistakes hide.
    """
    return [
        ("Conv2D", lambda: Conv2D(3, (3, 2), strides=(2, 1), padding="same"), (2, 6, 5, 2), False),
        ("Conv2D 1x1", lambda: Conv2D(3, 1, activation="relu"), (2, 4, 3, 2), False),
        ("MaxPool2D", lambda: MaxPool2D(3, strides=(2, 1), padding="same"), (2, 6, 5, 2), False),
        ("AvgPool2D", lambda: AvgPool2D((2, 3), strides=2, padding="same"), (2, 6, 5, 2), False),
        ("GlobalAveragePooling2D", GlobalAveragePooling2D, (2, 3, 4, 2), False),
        ("Dense", lambda: Dense(3, activation="tanh"), (2, 2, 3, 4), False),
        ("Flatten", Flatten, (2, 3, 2, 2), False),
        ("Dropout (training)", lambda: Dropout(0.5, seed=1), (2, 3, 4), True),
        ("BatchNormalization", BatchNormalization, (3, 2, 2, 3), False),
        ("BatchNormalization (training)", BatchNormalization, (3, 2, 2, 3), True),
        ("LocalResponseNormalization", lambda: LocalResponseNormalization(5, alpha=2.0), (2, 2, 2, 7), False),
        ("ReLU", ReLU, (2, 3, 4), False),
        ("Activation (sigmoid)", lambda: Activation("sigmoid"), (2, 3, 4), False),
        ("Softmax", Softmax, (2, 3, 4), False),
        ("Concatenate", Concatenate, [(2, 2, 3, 1), (2, 2, 3, 3)], False),
    ]


def run_checks(out=print, kernels="numpy"):
    """Gradient-check every layer type and the demo model; print a pass/fail table; return True when all pass.

    The checks run thousands of tiny forward passes, so they use the NumPy reference kernels by default
    (Numba's parallel launch costs more than the work at these sizes).
    """
    rows = []
    with backend.floatx_scope("float64"), backend.cpu_kernels(kernels):
        for label, make, shape, training in layer_checks():
            report = gradcheck.check_layer(make(), shape, training=training, tol=TOLERANCE,
                                           raise_on_failure=False)
            rows.append((label, report))
        for training in (False, True):
            report = gradcheck.check_model(demo_model(), training=training, tol=TOLERANCE, max_elements=200,
                                           raise_on_failure=False)
            rows.append((f"demo model ({'training' if training else 'inference'})", report))
    width = max(len(label) for label, _ in rows)
    out(f"\nGradient check (float64, central differences, tolerance {TOLERANCE:g}, {kernels} kernels)")
    out(f"{'layer':<{width}}  {'tensors':>7}  {'max rel error':>13}  result")
    out("-" * (width + 33))
    for label, report in rows:
        verdict = "pass" if report.passed else "FAIL"
        out(f"{label:<{width}}  {len(report.rows):>7}  {report.max_error:>13.2e}  {verdict}")
    failed = [(label, report) for label, report in rows if not report.passed]
    for label, report in failed:
        out(f"\n{label} failed:\n{report}")
    out(f"\n{len(rows) - len(failed)}/{len(rows)} passed")
    return not failed


def main(argv=None):
    """Entry point of ``python -m tinynet``; returns the process exit status (see the module notes).

    Ctrl-C, from start-up to the last check, prints ``python -m tinynet: interrupted`` and returns 130; a
    closed standard output (``| head``) returns 141 without a traceback.
    """
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's shutdown
    except BrokenPipeError:  # nothing more to say, and no one to say it to
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keep the shutdown from flushing into the pipe)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(argv):
    """Parse the command line, show the demo model and run the checks; the exit status."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tinynet {__version__}")
    parser.add_argument("--cpu-kernels", choices=["numpy", "numba"], default=None,
                        help="CPU kernels for the demo model (default: numba when installed)")
    parser.add_argument("--check-kernels", choices=["numpy", "numba"], default="numpy",
                        help="CPU kernels for the gradient checks (default: numpy)")
    args = parser.parse_args(argv)
    if "numba" in (args.cpu_kernels or backend.get_cpu_kernels(), args.check_kernels):
        from .kernels import numba_environment_problem

        problem = numba_environment_problem()
        if problem is not None:
            print(f"{PROG}: error: {escape(problem)}", file=sys.stderr)
            return EXIT_USAGE
    if args.cpu_kernels:
        backend.set_cpu_kernels(args.cpu_kernels)
    start = time.perf_counter()
    reset_names()
    backend.set_seed(0)
    model = demo_model()
    model.summary()
    x = np.random.default_rng(0).standard_normal((4, 12, 12, 3)).astype(np.float32)
    probs, aux = model.predict(x)
    print(f"\npredict on {x.shape}: outputs {probs.shape} {probs.dtype} (rows sum to "
          f"{float(probs.sum(axis=1).mean()):.4f}) and {aux.shape} {aux.dtype}; "
          f"CPU kernels: {backend.get_cpu_kernels()}")
    ok = run_checks(kernels=args.check_kernels)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
