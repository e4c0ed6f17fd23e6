"""Command-line checks the benchmark scripts share: a mistake ends in one line, before anything is measured.

A bad value (``--batch 0``, an unknown ``--cases`` name, an ``--out`` folder that cannot be written, a
``--from-json`` file that is not JSON) ends in one line ``<script>: error: argument --x: ...`` on stderr and
exit code 2 (:class:`inception.cli_common.OneLineParser`), when the command line is parsed: before a model is
built, a kernel compiled or anything timed, so a typo does not cost a benchmark's minutes. The number types are
:mod:`inception.cli_common`'s (``positive_int()``, ``non_negative_float()``, ...); this module adds the lists,
files and folders the benchmarks take, and the writability check is :func:`tinynet.fileio.check_writable_folder`.

It imports tinynet: ``versus_torch.py``'s PyTorch worker, whose peak memory counts its imports, must not
import it (and does not).
"""
from __future__ import annotations

import argparse
import json
import os

from inception.cli_common import (CliError, OneLineParser, check_input_file, int_between,  # noqa: F401 (re-exported)
                                  non_negative_float, non_negative_int, path_text, positive_float, positive_int)
from tinynet.fileio import FileFormatError, check_writable_folder, open_regular


def name_list(names, substrings=False):
    """An argparse ``type``: a comma-separated list of ``names`` (blanks around commas ignored), returned as a
    list in the order given.

    Parameters
    ----------
    names : sequence of str
        The names that may be listed.
    substrings : bool, default False
        Each item need only be part of one of ``names`` (a filter such as ``--only pool``).

    Raises ``argparse.ArgumentTypeError`` for an empty list, an item that matches no name, or an item given twice.
    """
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(names)}, got {text!r}")
        unknown = [item for item in items
                   if not any(item in name if substrings else item == name for name in names)]
        if unknown:
            what = "matches none of" if substrings else "is not one of"
            raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))} {what} {', '.join(names)}")
        repeated = sorted({item for item in items if items.count(item) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"{', '.join(map(repr, repeated))} given more than once")
        return items

    parse.__name__ = "list"
    return parse


def number_list(number):
    """An argparse ``type``: a comma-separated list of numbers, each checked by the argparse type ``number``
    (e.g. ``positive_float()``), none given twice; returned as a list."""
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}")
        values = [number(item) for item in items]
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"a number is given more than once in {text!r}")
        return values

    parse.__name__ = "list"
    return parse


def output_folder(text):
    """An argparse ``type``: a folder that files can be written in, made (with the folders above it) where it
    is missing; ``text`` is returned as given. Tried now, by creating an unnamed temporary file in it (or in
    the nearest folder above it that exists), so that a typo is not found after the whole run."""
    path_text(text)
    try:
        check_writable_folder(text, make_folders=True)
    except OSError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def output_file(extensions):
    """An argparse ``type``: a file name with one of ``extensions`` (lower case, with the dot) whose folder can be
    written in (made where it is missing, as :func:`output_folder`); ``text`` is returned as given."""
    def parse(text):
        path_text(text)
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file name")
        if os.path.splitext(text)[1].lower() not in extensions:
            raise argparse.ArgumentTypeError(f"the file type must be one of {', '.join(extensions)}, got {text!r}")
        output_folder(os.path.dirname(text) or ".")
        return text

    parse.__name__ = "file name"
    return parse


def input_folder(text):
    """An argparse ``type``: an existing folder that can be read; ``text`` is returned as given."""
    path_text(text)
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder" if os.path.lexists(text)
                                         else f"the folder {text!r} does not exist")
    if not os.access(text, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"the folder {text!r} cannot be read")
    return text


def check(parser, option, text, parse):
    """``parse(text)`` for an argparse ``type`` ``parse``, or one line through ``parser.error`` naming ``option``:
    for a value checked after parsing, such as a default folder that only some modes of a script write in."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        parser.error(f"argument {option}: {error}")


def read_json(parser, option, path):
    """The content of the JSON file ``path`` given as ``option``; else one line through ``parser.error`` (no
    such file, not a regular file, not readable, not JSON, or JSON nested too deeply for Python's parser)."""
    try:
        check_input_file(option, path)
        with open_regular(path) as f:  # a FIFO swapped in after the check is refused, not waited on
            return json.loads(f.read().decode("utf-8"))
    except CliError as error:
        parser.error(f"argument {error}")
    except FileFormatError as error:
        parser.error(f"argument {option}: {error}")
    except OSError as error:
        parser.error(f"argument {option}: {path}: cannot be read ({error.strerror or error})")
    except RecursionError:
        parser.error(f"argument {option}: {path} is not a JSON file this script reads (it nests too deeply)")
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError, an integer of > 4300 digits
        parser.error(f"argument {option}: {path} is not a JSON file ({str(error)[:200]})")


__all__ = ["OneLineParser", "positive_int", "non_negative_int", "int_between", "positive_float",
           "non_negative_float", "name_list", "number_list", "output_folder", "output_file", "input_folder",
           "check", "read_json"]
