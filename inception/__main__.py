"""``python -m inception COMMAND``: summary, plot, check-keras, train, evaluate, predict.

Each command lives in its own module with a ``register(subparsers)`` function that adds its parser and
sets ``func``; this file only gathers them.
"""
from __future__ import annotations

import importlib
import sys

from .cli_common import EXIT_INTERRUPTED, OneLineParser, one_line_warnings, run_command

COMMAND_MODULES = ["inception.cli_table", "inception.cli_plot", "inception.cli_keras", "inception.cli_train"]


def build_parser():
    parser = OneLineParser(prog="inception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv=None):
    try:  # the command modules import their libraries here: a Ctrl-C meanwhile is no traceback either
        with one_line_warnings():  # the command modules import their libraries here
            parser = build_parser()
            args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("\ninception: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
