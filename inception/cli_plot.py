"""``python -m inception plot``: draw GoogLeNet's structure to a PNG, SVG or PDF file (matplotlib only)."""
from __future__ import annotations

from .cli_common import check_output_file, escape, positive_int
from .cli_table import build_googlenet


def register(subparsers):
    p = subparsers.add_parser("plot", help="draw the network's structure (like Keras' plot_model)",
                              description=__doc__)
    p.add_argument("--variant", choices=["paper", "blog"], default="paper")
    p.add_argument("--input-size", type=positive_int(2048), default=224)
    p.add_argument("--num-classes", type=positive_int(100_000), default=1000)
    p.add_argument("--no-aux", action="store_true", help="leave out the auxiliary classifiers")
    p.add_argument("--to-file", default="model.png", help="output file: .png, .svg or .pdf (default: model.png)")
    p.add_argument("--dpi", type=positive_int(600), default=110)
    p.set_defaults(func=run)


def run(args):
    from .plot import plot_model

    check_output_file("--to-file", args.to_file, extensions=(".png", ".svg", ".pdf"))
    model = build_googlenet(args.variant, args.input_size, args.num_classes, aux=not args.no_aux)
    title = f"GoogLeNet ({args.variant} variant) — {model.count_params():,} parameters"
    plot_model(model, args.to_file, dpi=args.dpi, title=title)
    print(f"wrote {escape(args.to_file)}")
    return 0
