"""``python -m inception summary``: Table 1 rebuilt from the model, and what the 1×1 reductions save."""
from __future__ import annotations

from .cli_common import CliError, positive_int


def register(subparsers):
    p = subparsers.add_parser("summary", help="Table 1 rebuilt from the model, beside the paper's figures",
                              description=__doc__)
    p.add_argument("--variant", choices=["paper", "blog"], default="paper",
                   help="'paper': Table 1 / Fig. 3; 'blog': the blog post's Keras code (default: paper)")
    p.add_argument("--input-size", type=positive_int(2048), default=224, help="input height and width (default: 224)")
    p.add_argument("--num-classes", type=positive_int(100_000), default=1000, help="classifier width (default: 1000)")
    p.set_defaults(func=run)


def build_googlenet(variant, input_size, num_classes, aux=True):
    """GoogLeNet for the command line: an input too small for the variant is a user's mistake (one line)."""
    from tinynet.layers.base import ShapeError

    from .googlenet import googlenet

    try:
        return googlenet((input_size, input_size, 3), num_classes=num_classes, aux=aux, variant=variant)
    except ShapeError as error:
        raise CliError(f"--input-size {input_size} is too small for the '{variant}' GoogLeNet ({error})") from None


def run(args):
    from .table1 import format_naive_vs_reduced, format_table1, naive_vs_reduced, table1_rows

    model = build_googlenet(args.variant, args.input_size, args.num_classes)
    print(f"GoogLeNet ({args.variant} variant), input {args.input_size}×{args.input_size}×3, "
          f"{args.num_classes} classes — Table 1 of Szegedy et al. 2014 rebuilt from the model\n")
    print(format_table1(table1_rows(model)))
    print("\nNaive Inception modules (Fig. 2a) vs modules with 1×1 reductions (Fig. 2b):\n")
    print(format_naive_vs_reduced(naive_vs_reduced(model)))
    return 0
