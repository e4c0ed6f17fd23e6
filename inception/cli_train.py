"""``python -m inception train | evaluate | predict``: train a GoogLeNet on digits (default) or your own data.

``python -m inception train`` with no arguments trains the small GoogLeNet (:mod:`inception.small`) on
scikit-learn's digits (no download) and ends with the line ``test accuracy: 0.9xxx``. With ``--checkpoint DIR``
every epoch is saved there (weights, optimizer, schedule, random states, and the model's description), so
``--resume`` continues exactly and ``evaluate`` / ``predict`` rebuild the model from ``DIR`` alone.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

#: Defaults of ``train``, chosen on the digits: 20 epochs of 45 batches reach 0.99 in about two minutes on 2 cores.
DEFAULTS = {"epochs": 20, "batch_size": 32, "lr": 0.002, "optimizer": "adam", "schedule": "cosine",
            "kernels": None}


# ------------------------------------------------------------------------------------------ building
def build_model(variant, input_shape, num_classes, aux=True):
    """The GoogLeNet ``variant`` ('small', 'paper' or 'blog') for ``input_shape`` and ``num_classes``."""
    if variant == "small":
        from .small import googlenet_small

        return googlenet_small(input_shape=tuple(input_shape), num_classes=num_classes, aux=aux)
    from .googlenet import googlenet

    return googlenet(input_shape=tuple(input_shape), num_classes=num_classes, aux=aux, variant=variant)


def make_optimizer(name, lr, momentum=0.9, nesterov=False, weight_decay=0.0):
    from tinynet import optim

    if name == "sgd":
        return optim.SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return optim.Adam(lr, weight_decay=weight_decay)


def make_schedule(name, lr, epochs):
    from tinynet import optim

    if name == "step":
        return optim.StepDecay(lr, factor=0.96, every=8)
    if name == "cosine":
        return optim.CosineDecay(lr, epochs)
    return optim.Constant(lr)


def load_data(source, image_size, seed=0):
    from tinynet import data

    return data.load_dataset(source, image_size=image_size, seed=seed)


def _set_kernels(name):
    if name:
        from tinynet import backend

        backend.set_cpu_kernels(name)


# ------------------------------------------------------------------------------------------ train
def train_command(args):
    """Train, evaluate on the test split, print ``test accuracy: ...`` last."""
    import tinynet
    from tinynet import checkpoint, data
    from tinynet.training import Trainer, grad_norm_table, plot_grad_norms, plot_history

    from .small import STAGES

    start = time.perf_counter()
    if args.device == "gpu":  # before any data is loaded or any weight made: say at once why it can't run
        try:
            tinynet.backend.require_gpu()
        except RuntimeError as error:
            print(f"python -m inception train: --device gpu: {error}", file=sys.stderr)
            return 2
    _set_kernels(args.kernels)
    image_size = args.image_size or (32 if args.data == "digits" else None)
    train, test = load_data(args.data, image_size)
    resume_state = None
    if args.resume:
        if not args.checkpoint:
            raise SystemExit("train: --resume needs --checkpoint DIR")
        if os.path.exists(os.path.join(args.checkpoint, checkpoint.STATE_FILE)):
            resume_state = checkpoint.read_state(args.checkpoint)
        else:
            print(f"no checkpoint in {args.checkpoint}: starting from scratch")
    if resume_state is not None:  # the stored description wins over the command line
        config = resume_state["config"]
        if config.get("data") != args.data:
            raise SystemExit(f"train: the checkpoint was trained on {config.get('data')!r}, not {args.data!r}")
    else:
        config = {"variant": args.variant, "input_shape": list(train.image_shape),
                  "num_classes": train.num_classes, "class_names": train.class_names, "aux": not args.no_aux,
                  "data": args.data, "image_size": image_size,
                  "normalizer": data.Normalizer.fit(train.x).get_config(),
                  "optimizer": args.optimizer, "lr": args.lr, "schedule": args.schedule,
                  "augment": {"crop": args.crop, "flip": args.flip}}
    print(f"data: {args.data}: {len(train)} training and {len(test)} test images of "
          f"{'x'.join(map(str, train.image_shape))}, {train.num_classes} classes")

    tinynet.set_seed(args.seed)
    model = build_model(config["variant"], config["input_shape"], config["num_classes"], config["aux"])
    print(f"model: GoogLeNet '{config['variant']}', {model.count_params():,} parameters, "
          f"{model.count_macs() / 1e6:.1f} M multiply-adds per image, {len(model.outputs)} outputs")
    optimizer = make_optimizer(config["optimizer"], config["lr"], weight_decay=args.weight_decay)
    trainer = Trainer(model, optimizer, schedule=make_schedule(config["schedule"], config["lr"], args.epochs),
                      aux_weight=args.aux_weight, batch_size=args.batch_size,
                      preprocess=data.Normalizer(**config["normalizer"]), augment=data.Augment(**config["augment"]),
                      seed=args.seed, verbose=not args.quiet,
                      grad_norm_groups=list(STAGES) if args.grad_norms else None)
    if resume_state is not None:
        checkpoint.load(args.checkpoint, trainer)
        print(f"resumed from {args.checkpoint} after epoch {trainer.epoch}")
        horizon = resume_state["schedule"].get("epochs")
        if horizon is not None and horizon != args.epochs:
            print(f"note: the cosine schedule keeps the first run's horizon of {horizon:g} epochs")
    if args.device != "cpu":
        model.to(args.device)

    trainer.fit(train, test, epochs=args.epochs, checkpoint_dir=args.checkpoint, checkpoint_config=config)

    if args.plot and trainer.history:
        title = f"GoogLeNet {config['variant']} on {args.data}"
        print(f"curves: {plot_history(trainer.history, args.plot, title=title)}")
    if args.grad_norms:
        print("gradient norm per block (mean over recorded steps), with the aux heads vs the main loss alone:")
        print(grad_norm_table(trainer.grad_norms))
        print(f"gradient norms: {plot_grad_norms(trainer.grad_norms, args.grad_norms)}")
    result = trainer.evaluate(test)
    print(f"test loss: {result['loss']:.4f}" + (f"  test top-5: {result['top5']:.4f}" if "top5" in result else ""))
    print(f"time taken: {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: {result['top1']:.4f}")
    return 0


# ------------------------------------------------------------------------------------------ evaluate / predict
def _restore(directory, kernels=None):
    """Rebuild the model described in a checkpoint and load its weights; return (model, config)."""
    from tinynet import checkpoint

    _set_kernels(kernels)
    config = checkpoint.read_state(directory)["config"]
    if not config:
        raise SystemExit(f"{directory}: the checkpoint does not describe its model (no config)")
    model = build_model(config["variant"], config["input_shape"], config["num_classes"], config["aux"])
    checkpoint.load_weights(directory, model)
    return model, config


def _main_probs(model, config, x, batch_size=128):
    from tinynet import data

    x = data.Normalizer(**config["normalizer"])(x)
    outs = model.predict(x, batch_size=batch_size)
    return (outs[-1] if isinstance(outs, list) else outs).reshape(len(x), -1)


def evaluate_command(args):
    """Evaluate a checkpoint on the test split of the data it was trained on (or ``--data``)."""
    from tinynet import losses
    from tinynet.training import topk_accuracy

    model, config = _restore(args.checkpoint, args.kernels)
    source = args.data or config["data"]
    _, test = load_data(source, config.get("image_size"))
    probs = _main_probs(model, config, test.x, args.batch_size)
    loss, _ = losses.categorical_crossentropy(probs, test.y)
    print(f"{source}: {len(test)} test images")
    print(f"test loss: {loss:.4f}" + (f"  test top-5: {topk_accuracy(probs, test.y, 5):.4f}"
                                      if probs.shape[-1] > 5 else ""))
    print(f"test accuracy: {topk_accuracy(probs, test.y, 1):.4f}")
    return 0


def predict_command(args):
    """Classify image files with a checkpoint; images are read as the training data was (size, channels)."""
    from tinynet import data

    model, config = _restore(args.checkpoint, args.kernels)
    h, w, c = config["input_shape"]
    x = np.stack([data.read_image(path, (h, w), channels=c) for path in args.images])
    invert = args.invert
    if invert == "auto":  # digits are light strokes on a dark background; a scan of ink on paper is the reverse
        invert = "yes" if config["data"] == "digits" else "no"
    if invert == "yes":
        bright = x.mean(axis=(1, 2, 3)) > 0.5
        x = np.where(bright[:, None, None, None], 1.0 - x, x).astype(np.float32)
    probs = _main_probs(model, config, x)
    names = config["class_names"]
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:args.top]
        print(f"{path}: " + ", ".join(f"{names[i]} ({p[i]:.3f})" for i in top))
    return 0


# ------------------------------------------------------------------------------------------ parsers
def register(subparsers):
    """Add ``train``, ``evaluate`` and ``predict`` to ``python -m inception``."""
    p = subparsers.add_parser("train", help="train a GoogLeNet (default: the small one on digits)",
                              description="Train a GoogLeNet; ends with 'test accuracy: ...'.")
    p.add_argument("--data", default="digits",
                   help="'digits' (built in) or a path: .npz (x, y), MNIST IDX folder, CIFAR-10 batches folder, "
                        "or a folder of class subfolders (default: digits)")
    p.add_argument("--variant", default="small", choices=["small", "paper", "blog"])
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["sgd", "adam"],
                   help="sgd: momentum 0.9 as the paper; adam (default)")
    p.add_argument("--schedule", default=DEFAULTS["schedule"], choices=["step", "cosine", "constant"],
                   help="step: the paper's x0.96 every 8 epochs")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--aux-weight", type=float, default=0.3, help="loss weight of each aux head (paper: 0.3)")
    p.add_argument("--no-aux", action="store_true", help="build the network without the aux heads")
    p.add_argument("--image-size", type=int, default=None, help="resize images (digits: 32)")
    p.add_argument("--crop", type=int, default=2, help="random-crop padding in pixels (0: off)")
    p.add_argument("--flip", action="store_true", help="random horizontal flips (not for digits)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--kernels", default=DEFAULTS["kernels"], choices=["numpy", "numba"],
                   help="CPU kernels (default: tinynet's setting, Numba when installed; a batch-32 step of the small "
                        "network measured 44 ms with Numba and 92 ms with NumPy on 2 cores); resume with the same "
                        "kernels for a bit-exact continuation")
    p.add_argument("--checkpoint", metavar="DIR", help="save a checkpoint there after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint DIR")
    p.add_argument("--plot", metavar="FILE", help="write the training curves as a PNG")
    p.add_argument("--grad-norms", metavar="FILE",
                   help="record per-block gradient norms with and without the aux heads; plot them to FILE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=train_command)

    e = subparsers.add_parser("evaluate", help="evaluate a checkpoint on its test split")
    e.add_argument("--checkpoint", metavar="DIR", required=True)
    e.add_argument("--data", default=None, help="override the data the checkpoint was trained on")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--kernels", default=None, choices=["numpy", "numba"])
    e.set_defaults(func=evaluate_command)

    r = subparsers.add_parser("predict", help="classify image files with a checkpoint")
    r.add_argument("--checkpoint", metavar="DIR", required=True)
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--top", type=int, default=3, help="show the top K classes")
    r.add_argument("--invert", default="auto", choices=["auto", "yes", "no"],
                   help="invert bright images (auto: for digits, which are light on dark)")
    r.add_argument("--kernels", default=None, choices=["numpy", "numba"])
    r.set_defaults(func=predict_command)


def main(argv=None):
    """Run only these three commands (``python -m inception.cli_train train ...``)."""
    parser = argparse.ArgumentParser(prog="python -m inception")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
