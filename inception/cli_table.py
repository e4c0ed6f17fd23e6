"""python -m inception summary: Table 1 rebuilt from the model, and what the 1x1 reductions save.

For the paper's variant each row stands beside the figures the paper prints (marked where they differ);
the blog and small variants are laid out the same way, without the paper's columns.
"""
from __future__ import annotations

from .cli_common import add_model_arguments, model_from_args, plain


def register(subparsers):
    p = subparsers.add_parser("summary", help="Table 1 rebuilt from the model, beside the paper's figures",
                              description=plain(__doc__))
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args):
    from .table1 import format_naive_vs_reduced, format_table1, naive_vs_reduced, table1_rows

    model = model_from_args(args)
    h, w, c = model.inputs[0].example_shape
    rows = table1_rows(model)
    if args.variant != "paper":  # the printed figures are the paper's network's, not this one's
        for row in rows:
            row.paper = None
    what = ("Table 1 of Szegedy et al. 2014 rebuilt from the model" if args.variant == "paper"
            else "laid out as Table 1 of Szegedy et al. 2014")
    print(f"GoogLeNet ({args.variant} variant), input {h}×{w}×{c}, {args.num_classes} classes — {what}\n")
    print(format_table1(rows))
    print("\nNaive Inception modules (Fig. 2a) vs modules with 1×1 reductions (Fig. 2b):\n")
    print(format_naive_vs_reduced(naive_vs_reduced(model)))
    return 0
