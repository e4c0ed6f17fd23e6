"""``python -m inception plot``: draw GoogLeNet's structure to a PNG, SVG or PDF file (matplotlib only)."""
from __future__ import annotations


def register(subparsers):
    p = subparsers.add_parser("plot", help="draw the network's structure (like Keras' plot_model)",
                              description=__doc__)
    p.add_argument("--variant", choices=["paper", "blog"], default="paper")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--no-aux", action="store_true", help="leave out the auxiliary classifiers")
    p.add_argument("--to-file", default="model.png", help="output file: .png, .svg or .pdf (default: model.png)")
    p.add_argument("--dpi", type=int, default=110)
    p.set_defaults(func=run)


def run(args):
    from .googlenet import googlenet
    from .plot import plot_model

    model = googlenet((args.input_size, args.input_size, 3), num_classes=args.num_classes,
                      aux=not args.no_aux, variant=args.variant)
    title = f"GoogLeNet ({args.variant} variant) — {model.count_params():,} parameters"
    plot_model(model, args.to_file, dpi=args.dpi, title=title)
    print(f"wrote {args.to_file}")
    return 0
