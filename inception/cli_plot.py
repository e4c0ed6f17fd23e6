"""python -m inception plot: draw GoogLeNet's structure to a PNG, SVG or PDF file (matplotlib only)."""
from __future__ import annotations

from tinynet.utils.plotting import MIN_DPI

from .cli_common import (add_model_arguments, check_output_file, escape, int_between, model_from_args, path_text,
                         plain)


def register(subparsers):
    p = subparsers.add_parser("plot", help="draw the network's structure (like Keras' plot_model)",
                              description=plain(__doc__))
    add_model_arguments(p)
    p.add_argument("--no-aux", action="store_true", help="leave out the auxiliary classifiers")
    p.add_argument("--to-file", type=path_text, default="model.png", help="output file: .png, .svg or .pdf")
    p.add_argument("--dpi", type=int_between(MIN_DPI, 600), default=110, help="resolution of a PNG")
    p.set_defaults(func=run)


def run(args):
    from .plot import plot_model

    check_output_file("--to-file", args.to_file, extensions=(".png", ".svg", ".pdf"))
    model = model_from_args(args, aux=not args.no_aux)
    title = f"GoogLeNet ({args.variant} variant) — {model.count_params():,} parameters"
    plot_model(model, args.to_file, dpi=args.dpi, title=title)
    print(f"wrote {escape(args.to_file)}")
    return 0
