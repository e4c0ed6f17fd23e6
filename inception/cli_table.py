"""python -m inception summary: Table 1 rebuilt from the model, and what the 1x1 reductions save.

For the paper's variant at its 224x224 input and 1000 classes each row stands beside the figures the paper
prints (marked where they differ); other sizes, class counts and the blog and small variants are laid out the
same way, without the paper's columns (its figures would not apply).
"""
from __future__ import annotations

from .cli_common import add_model_arguments, model_from_args, plain


def register(subparsers):
    p = subparsers.add_parser("summary", help="Table 1 rebuilt from the model, beside the paper's figures",
                              description=plain(__doc__))
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args):
    from .table1 import format_naive_vs_reduced, format_table1, is_papers_network, naive_vs_reduced, table1_rows

    model = model_from_args(args)
    h, w, c = model.inputs[0].example_shape
    rows = table1_rows(model)  # beside the printed figures only for the paper's network at 224×224×3, 1000 classes
    if is_papers_network(model):
        what = "Table 1 of Szegedy et al. 2014 rebuilt from the model"
    elif args.variant == "paper":
        what = ("laid out as Table 1 of Szegedy et al. 2014, without the paper's figures (they are for a 224×224 "
                "input and 1000 classes)")
    else:
        what = "laid out as Table 1 of Szegedy et al. 2014"
    print(f"GoogLeNet ({args.variant} variant), input {h}×{w}×{c}, {args.num_classes} classes — {what}\n")
    print(format_table1(rows))
    print("\nNaive Inception modules (Fig. 2a) vs modules with 1×1 reductions (Fig. 2b):\n")
    print(format_naive_vs_reduced(naive_vs_reduced(model)))
    return 0
