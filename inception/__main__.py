"""``python -m inception COMMAND``: summary, plot, check-keras, train, evaluate, predict.

Each command lives in its own module with a ``register(subparsers)`` function that adds its parser and
sets ``func``; this file only gathers them.
"""
from __future__ import annotations

import importlib
import sys

from .cli_common import OneLineParser, run_command

COMMAND_MODULES = ["inception.cli_table", "inception.cli_plot", "inception.cli_keras", "inception.cli_train"]


def build_parser():
    parser = OneLineParser(prog="inception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
