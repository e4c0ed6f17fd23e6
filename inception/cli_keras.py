"""``python -m inception check-keras``: GoogLeNet in tinynet vs Keras, outputs and gradients, as a table.

Builds the Keras reference (:mod:`inception.keras_reference`), converts it with ``from_keras`` and runs
both on one random batch: float32 outputs, then float64 outputs and gradients (of a random-weighted sum of
all outputs, w.r.t. the input and every weight) in inference and training mode. Needs keras and jax.
"""
from __future__ import annotations

import os

from .cli_common import CliError, int_between, model_from_args, positive_int

TOLERANCES = {"float32 outputs (abs)": 1e-5, "float64 outputs (abs)": 1e-10, "float64 gradients (rel)": 1e-8}


def register(subparsers):
    p = subparsers.add_parser("check-keras", help="compare tinynet's GoogLeNet with Keras' (outputs, gradients)",
                              description=__doc__)
    p.add_argument("--variant", choices=["paper", "blog"], default="paper")
    p.add_argument("--input-size", type=positive_int(1024), default=None,
                   help="input height and width (default: 224; the blog variant needs at least 193)")
    p.add_argument("--num-classes", type=int_between(2, 10_000), default=10,
                   help="classifier width (default: 10, to keep it quick)")
    p.add_argument("--batch", type=positive_int(64), default=2)
    p.add_argument("--all-gradients", action="store_true", help="list every weight gradient, not the worst 8")
    p.set_defaults(func=run)


def run(args):
    if args.input_size:  # an input too small for the variant: say so now, not after importing Keras and JAX
        model_from_args(args)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    chosen = os.environ["KERAS_BACKEND"]
    if chosen != "jax":  # before keras is imported: it fails on an unknown or missing backend with a traceback
        raise CliError(f"check-keras needs the JAX backend (KERAS_BACKEND=jax), not {chosen!r}")
    try:
        import jax  # noqa: F401
        import keras
    except ImportError as e:
        raise CliError(f"check-keras needs keras and jax: {e}. Install them with: pip install -e '.[keras]'") from None
    if keras.backend.backend() != "jax":  # keras was imported before, with another backend
        raise CliError(f"check-keras needs the JAX backend (KERAS_BACKEND=jax), not {keras.backend.backend()!r}")
    import contextlib

    import numpy as np

    from .keras_reference import compare_with_keras, float64_mode, keras_googlenet, randomize_weights

    size = args.input_size or 224
    shape = (size, size, 3)
    worst = {}
    failed = False
    import time

    runs = (("float32", False), ("float64", False), ("float64", True))
    for step, (dtype, training) in enumerate(runs, 1):
        mode = "training" if training else "inference"
        started = time.perf_counter()
        print(f"[{step}/{len(runs)}] {dtype}, {mode} mode: building the Keras model, converting it, running both"
              + (" (outputs and gradients)" if dtype == "float64" else " (outputs)") + " ...", flush=True)
        with float64_mode() if dtype == "float64" else contextlib.nullcontext():
            try:
                model = keras_googlenet(shape, args.num_classes, variant=args.variant, dropout=not training)
            except ValueError as error:  # e.g. an input too small for the variant's windows
                raise CliError(f"--input-size {size}: Keras cannot build the '{args.variant}' GoogLeNet "
                               f"({' '.join(str(error).split())})") from None
            randomize_weights(model, seed=0)
            x = np.random.default_rng(1).standard_normal((args.batch,) + shape).astype(dtype)
            report = compare_with_keras(model, x, training=training, gradients=dtype == "float64")
        print(f"[{step}/{len(runs)}] done in {time.perf_counter() - started:.1f} s", flush=True)
        print(report.table("all" if args.all_gradients else "summary"))
        print()
        key = "float32 outputs (abs)" if dtype == "float32" else "float64 outputs (abs)"
        worst[key] = max(worst.get(key, 0.0), report.max_error("output"), report.max_error("bn stat"))
        if dtype == "float64":
            worst["float64 gradients (rel)"] = max(worst.get("float64 gradients (rel)", 0.0),
                                                   report.max_error("grad", relative=True))
    print(f"{'check':<26}{'worst error':>14}{'tolerance':>12}  ok")
    for key, tol in TOLERANCES.items():
        ok = worst[key] < tol
        failed |= not ok
        print(f"{key:<26}{worst[key]:>14.2e}{tol:>12.0e}  {'yes' if ok else 'NO'}")
    return 1 if failed else 0
