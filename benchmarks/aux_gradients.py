"""Do the auxiliary heads feed gradient to the lower layers? (Szegedy et al. 2014, section 5.)

The paper adds two auxiliary classifiers "to encourage discrimination in the lower stages, increase the
gradient signal that gets propagated back, and provide additional regularization". This script measures the
second claim on the small GoogLeNet trained on the digits: every ``--every`` steps, at the same weights and on
the same batch, it back-propagates twice,

* the main loss alone (what the network would get without the aux heads), and
* the paper's loss ``L_main + 0.3 (L_aux1 + L_aux2)``,

and records the gradient norm ``‖∂L/∂w‖`` of each stage (stem, Inception 3, 4, 5). The aux heads hang off 4a
and 4d, so stage 5 gets the same gradient either way and the stem, 3 and 4 get more.

Usage::

    python benchmarks/aux_gradients.py [--epochs 5] [--every 5] [--out benchmarks/results/aux_gradients.png]

(also ``python -m inception train --grad-norms FILE.png`` records the same during any training run).
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinynet  # noqa: E402
from inception.cli_train import RUN_TYPES  # noqa: E402
from inception.small import STAGES, googlenet_small  # noqa: E402
from tinynet import data, fileio, optim  # noqa: E402
from tinynet.grad_norms import grad_norm_table  # noqa: E402
from tinynet.plots import plot_grad_norms  # noqa: E402
from tinynet.training import Trainer  # noqa: E402

from _args import OneLineParser, output_file, positive_int  # noqa: E402


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=RUN_TYPES["epochs"], default=5)  # the checks of `inception train`
    parser.add_argument("--batch-size", type=RUN_TYPES["batch_size"], default=32)
    parser.add_argument("--every", type=positive_int(), default=5, help="record every N steps")
    parser.add_argument("--lr", type=RUN_TYPES["lr"], default=0.003)
    parser.add_argument("--aux-weight", type=RUN_TYPES["aux_weight"], default=0.3)
    parser.add_argument("--seed", type=RUN_TYPES["seed"], default=0)
    parser.add_argument("--kernels", default="numpy", choices=["numpy", "numba"])
    parser.add_argument("--out", type=output_file((".png", ".svg", ".pdf")),
                        default=os.path.join("benchmarks", "results", "aux_gradients.png"),
                        help="the figure; the numbers go beside it, as .json")
    args = parser.parse_args(argv)
    if args.kernels == "numba" and not tinynet.backend.numba_available():
        parser.error("argument --kernels: numba is not installed")
    if args.kernels:
        tinynet.set_cpu_kernels(args.kernels)

    train, test = data.load_digits()
    tinynet.set_seed(args.seed)
    model = googlenet_small(input_shape=train.image_shape, num_classes=train.num_classes)
    trainer = Trainer(model, optim.Adam(args.lr), schedule=optim.CosineDecay(args.lr, args.epochs),
                      aux_weight=args.aux_weight, batch_size=args.batch_size, preprocess=data.Normalizer.fit(train.x),
                      augment=data.Augment(crop=2), seed=args.seed, verbose=False,
                      grad_norm_groups=list(STAGES), grad_norm_every=args.every)
    start = time.perf_counter()
    trainer.fit(train, test, epochs=args.epochs)
    gn = trainer.grad_norms
    print(f"small GoogLeNet on digits, {args.epochs} epochs ({time.perf_counter() - start:.0f} s), "
          f"test accuracy {trainer.history['val_acc'][-1]:.4f}; gradient norms at {len(gn['step'])} steps")
    print("\nmean over training (ratio = with aux / main only):")
    print(grad_norm_table(gn))

    steps = np.array(gn["step"])
    per_epoch = len(train) // trainer.batch_size + (len(train) % trainer.batch_size > 0)
    print("\nratio per epoch, by stage:")
    print("epoch " + "".join(f"{g:>8}" for g in gn["with_aux"]))
    for e in range(args.epochs):
        sel = (steps >= e * per_epoch) & (steps < (e + 1) * per_epoch)
        ratios = [np.mean(np.array(gn["with_aux"][g])[sel]) / np.mean(np.array(gn["main_only"][g])[sel])
                  for g in gn["with_aux"]]
        print(f"{e + 1:<6}" + "".join(f"{r:>8.2f}" for r in ratios))

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    plot_grad_norms(gn, args.out)
    fileio.write_text(os.path.splitext(args.out)[0] + ".json",
                      json.dumps({"args": vars(args), "grad_norms": gn, "history": trainer.history}))
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
