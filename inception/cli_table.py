"""``python -m inception summary``: Table 1 rebuilt from the model, and what the 1×1 reductions save."""
from __future__ import annotations


def register(subparsers):
    p = subparsers.add_parser("summary", help="Table 1 rebuilt from the model, beside the paper's figures",
                              description=__doc__)
    p.add_argument("--variant", choices=["paper", "blog"], default="paper",
                   help="'paper': Table 1 / Fig. 3; 'blog': the blog post's Keras code (default: paper)")
    p.add_argument("--input-size", type=int, default=224, help="input height and width (default: 224)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier width (default: 1000)")
    p.set_defaults(func=run)


def run(args):
    from .googlenet import googlenet
    from .table1 import format_naive_vs_reduced, format_table1, naive_vs_reduced, table1_rows

    model = googlenet((args.input_size, args.input_size, 3), num_classes=args.num_classes, variant=args.variant)
    print(f"GoogLeNet ({args.variant} variant), input {args.input_size}×{args.input_size}×3, "
          f"{args.num_classes} classes — Table 1 of Szegedy et al. 2014 rebuilt from the model\n")
    print(format_table1(table1_rows(model)))
    print("\nNaive Inception modules (Fig. 2a) vs modules with 1×1 reductions (Fig. 2b):\n")
    print(format_naive_vs_reduced(naive_vs_reduced(model)))
    return 0
