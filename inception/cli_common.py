"""What every ``python -m inception`` command shares: one-line errors, argument types, escaping, running.

A user's mistake — a value out of range, a missing or unreadable file, a checkpoint folder that is a file,
a plot into a folder that does not exist — ends in one line ``inception <command>: error: ...`` on stderr
and exit code 2, checked before any training starts. Text that comes from data or from the command line
(class names, file names) is printed with control characters escaped, so a crafted name cannot move the
cursor, clear the screen or forge another line.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import traceback

from tinynet.fileio import check_output_path, check_writable_folder
from tinynet.utils.text import escape

#: exit codes: 0 success, 1 the run failed (training diverged, a file could not be written), 2 a user's mistake,
#: 130 interrupted (Ctrl-C)
EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 1, 130, 141


class CliError(Exception):
    """A user's mistake, told in one line; the command exits with code 2."""


class CommandFailed(Exception):
    """The command could not do its work, though nothing was wrong with how it was called (a checkpoint whose
    weights give NaN, ...): told in one line; the command exits with code 1."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` that reports a bad command line in one line (``inception train: error: ...``), exit 2, and
    whose ``--help`` shows every option's default (:class:`HelpFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._argv = []

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # what error() needs to know of the run
        return super().parse_known_args(args, namespace)

    def error(self, message):
        from tinynet import distributed

        line = f"{self.prog}: error: {escape(message)}"
        if (distributed.launched_size() or 1) > 1 and "--distributed" in self._argv:
            # under mpiexec the ranks whose command line parsed are starting MPI, which waits for every rank:
            # join them and agree, so that the whole job ends with this line instead of hanging
            try:
                comm = distributed.world()
            except distributed.DistributedError:
                comm = None
            if comm is not None:
                try:
                    agree(comm, line)
                except CliError as error:
                    self.exit(EXIT_USAGE, f"{error}\n" if comm.rank == 0 else None)
        # every rank parses the same command line: one of them says what is wrong
        self.exit(EXIT_USAGE, f"{line}\n" if not distributed.launched_rank() else None)


def agree(comm, problem):
    """Every rank learns whether any rank met a problem (one all-gather, where no rank waits in any other
    collective); if one did, :class:`CliError` on every rank with that rank's message (``rank R:`` before it
    unless every rank met the same), marked ``all_ranks`` so that rank 0 alone prints it and every rank exits
    with 2.

    ``problem`` is this rank's message, or None. Under ``mpiexec --distributed`` the ranks agree twice: when the
    command line is parsed (a rank whose parse failed joins from :meth:`OneLineParser.error`; the others from
    :func:`run_distributed`), and after each prepared its run.
    """
    problems = comm.allgather_object(problem)
    failed = [(rank, text) for rank, text in enumerate(problems) if text is not None]
    if not failed:
        return
    rank, text = failed[0]
    same = len(failed) == comm.size and len(set(problems)) == 1
    error = CliError(text if same else f"rank {rank}: {text}")
    error.all_ranks = True
    raise error


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written (plain text), and ``(default: X)`` after every option that has a default and
    whose help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("(default" not in text.lower() and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def plain(docstring) -> str:
    """A module docstring as plain text for ``--help``: reStructuredText's ``literals`` and :roles: removed."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", docstring or "")
    return text.replace("``", "").strip()


# ------------------------------------------------------------------------------------------ argument types
def path_text(text):
    """An argparse ``type`` for a file or folder: any text but the empty one (which would mean the current
    folder, or fail only once the work is done)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def _number(kind, low, high=None, low_open=False):
    """An argparse ``type``: a finite int or float within ``[low, high]`` (``(low, high]`` if ``low_open``)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            show = str if kind is int else "{:g}".format  # 4294967295, not 4.29497e+09
            rng = f"{'>' if low_open else '>='} {show(low)}" + (f" and <= {show(high)}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def int_between(low, high):
    """An argparse ``type``: an integer in ``[low, high]``."""
    return _number(int, low, high)


def positive_int(high=None):
    return _number(int, 1, high)


def non_negative_int(high=None):
    return _number(int, 0, high)


def positive_float(high=None):
    return _number(float, 0.0, high, low_open=True)


def non_negative_float(high=None):
    return _number(float, 0.0, high)


def fraction():
    """A number in [0, 1)."""
    check = _number(float, 0.0)

    def parse(text):
        value = check(text)
        if value >= 1.0:
            raise argparse.ArgumentTypeError(f"must be >= 0 and < 1, got {text}")
        return value

    parse.__name__ = "float"
    return parse


# ------------------------------------------------------------------------------------------ models
#: per variant: (input size, channels, classes) when the command line leaves them out
MODEL_DEFAULTS = {"paper": (224, 3, 1000), "blog": (224, 3, 1000), "small": (32, 1, 10)}


def add_model_arguments(parser, variants=None):
    """``--variant``, ``--input-size``, ``--num-classes`` (defaults per variant, as ``train`` builds them)."""
    from .variants import VARIANTS

    names = list(variants or VARIANTS)
    parser.add_argument("--variant", choices=names, default="paper",
                        help="paper: Table 1 / Fig. 3 of the paper; blog: the blog post's Keras code as written; "
                             "small: the 32x32 network that 'train' builds by default")
    parser.add_argument("--input-size", type=positive_int(2048), default=None,
                        help="input height and width (default: 224; small: 32)")
    parser.add_argument("--num-classes", type=int_between(2, 100_000), default=None,
                        help="classifier width (default: 1000; small: 10)")


def model_from_args(args, aux=True):
    """The GoogLeNet the model arguments describe; an input too small for the variant is a user's mistake."""
    from tinynet.layers.base import ShapeError

    from .googlenet import googlenet

    size, channels, classes = MODEL_DEFAULTS[args.variant]
    args.input_size = args.input_size or size
    args.num_classes = args.num_classes or classes
    shape = (args.input_size, args.input_size, channels)
    try:
        return googlenet(shape, num_classes=args.num_classes, aux=aux, variant=args.variant)
    except ShapeError as error:
        raise CliError(f"--input-size {args.input_size} is too small for the '{args.variant}' GoogLeNet "
                       f"({error})") from None


# ------------------------------------------------------------------------------------------ file checks
def _parents(folder):
    """``folder`` and the folders above it, innermost first."""
    while True:
        yield folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def check_output_file(option, path, extensions=None):
    """Raise :class:`CliError` unless a file can be written at ``path``: its folder exists and is writable, it
    is no folder, no FIFO, device or socket, its name fits the file system's limit
    (:func:`tinynet.fileio.check_output_path`), and its extension is one of ``extensions`` when given."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CliError(f"{option} {path}: is a folder, not a file name")
    if not os.path.isdir(folder):
        above = next((p for p in _parents(folder) if os.path.lexists(p)), None)
        if above is not None and not os.path.isdir(above):
            raise CliError(f"{option} {path}: {above} is a file, not a folder")
        raise CliError(f"{option} {path}: the folder {folder} does not exist")
    try:
        check_writable_folder(folder)  # tries a file there: os.access says yes to root even under /proc
    except OSError:
        raise CliError(f"{option} {path}: the folder {folder} is not writable") from None
    try:  # what atomic_write would refuse only once the work is done: a FIFO or a device, a name too long
        check_output_path(path)
    except OSError as error:
        raise CliError(f"{option} {error.strerror or error}") from None
    if extensions is not None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in extensions:
            raise CliError(f"{option} {path}: the file type must be one of {', '.join(extensions)}")


def check_input_file(option, path):
    """Raise :class:`CliError` unless ``path`` is an existing, readable regular file."""
    if not os.path.exists(path):
        raise CliError(f"{option} {path}: no such file")
    if not os.path.isfile(path):
        raise CliError(f"{option} {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise CliError(f"{option} {path}: not readable")


# ------------------------------------------------------------------------------------------ running
def _show_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` for a command line: ``warning: <message>`` in one line on stderr, escaped, without
    Python's file, line number and source line (which name the library's code, not the user's mistake)."""
    text = " ".join(str(message).split("\n"))
    try:
        print(f"warning: {escape(text)}", file=sys.stderr if file is None else file)
    except OSError:  # a closed stderr: a warning is not worth a traceback
        pass


@contextlib.contextmanager
def one_line_warnings():
    """Show the warnings raised inside the ``with`` block as ``warning: ...`` lines (:func:`_show_warning`); the
    previous ``warnings.showwarning`` and filters come back afterwards."""
    import warnings

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def run_command(args, prog="inception"):
    """Run ``args.func(args)``; user errors, divergence and Ctrl-C end in one line and an exit code.

    With ``args.distributed`` (``train --distributed`` under ``mpiexec``) see :func:`run_distributed`.
    """
    from tinynet.checkpoint import CheckpointError
    from tinynet.training import TrainingDiverged

    name = f"{prog} {args.command}" if getattr(args, "command", None) else prog
    problem = _kernel_environment_problem(args)
    if problem is not None:  # before any data is read or model built
        from tinynet.distributed import launched_rank

        if not launched_rank():
            print(f"{name}: error: {escape(problem)}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "distributed", False):
        return run_distributed(args, name)
    if hasattr(args, "distributed"):
        from tinynet.distributed import launched_rank, launched_size

        if (launched_size() or 1) > 1:  # N copies of one run, all writing the same files: surely not meant
            if not launched_rank():
                print(f"{name}: error: started by an MPI launcher with {launched_size()} processes but without "
                      f"--distributed: each would train alone and write the same files; add --distributed",
                      file=sys.stderr)
            return EXIT_USAGE
    try:
        with one_line_warnings():
            return args.func(args) or 0
    except CliError as error:
        print(f"{name}: error: {escape(error)}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as error:
        print(f"{name}: error: {escape(error)}{escape(kept_checkpoint(args, 'the last good checkpoint'))}",
              file=sys.stderr)
        return EXIT_FAILED
    except (CommandFailed, CheckpointError) as error:  # CheckpointError: a save that failed (a folder replaced)
        print(f"{name}: error: {escape(error)}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (``| head``): nothing more to say, and no one to say it to
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keep interpreter shutdown from flushing into the pipe)
        return EXIT_BROKEN_PIPE
    except OSError as error:  # a disk that fills up, a folder removed under a running job, ...
        print(f"{name}: error: {escape(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted{escape(kept_checkpoint(args, 'the last checkpoint'))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as error:  # what the checks before the work could not foresee (the layers' own caches)
        print(f"{name}: error: out of memory{_memory_detail(error)}; try a smaller --image-size or --batch-size"
              f"{escape(kept_checkpoint(args, 'the last checkpoint'))}", file=sys.stderr)
        return EXIT_FAILED


def _memory_detail(error) -> str:
    """``' (Unable to allocate ...)'``: NumPy's account of a failed allocation, when it gave one."""
    text = str(error).split("\n")[0].strip()
    return f" ({escape(text[:200])})" if text else ""


def _kernel_environment_problem(args):
    """For a command that runs the CPU kernels (one with ``--kernels``): why the environment keeps the Numba
    kernels it would use from starting (:func:`tinynet.kernels.numba_environment_problem`), or None."""
    if not hasattr(args, "kernels") or getattr(args, "device", "cpu") != "cpu":
        return None
    from tinynet import backend
    from tinynet.kernels import numba_environment_problem

    if (args.kernels or backend.get_cpu_kernels()) != "numba":
        return None
    return numba_environment_problem()


def kept_checkpoint(args, what) -> str:
    """``'; <what> in DIR is kept'`` when ``train --checkpoint DIR`` stopped and DIR holds a checkpoint, else
    ``''`` (a run stopped before its first save has none to keep, and is told nothing about one)."""
    directory = getattr(args, "checkpoint", None)
    if not directory or getattr(args, "command", None) != "train":
        return ""
    from tinynet import checkpoint

    return f"; {what} in {directory} is kept" if checkpoint.status(directory) == "checkpoint" else ""


def run_distributed(args, name):
    """Run ``args.func(args)`` on every rank of an MPI job (``--distributed``), so that the job never hangs.

    * A user's mistake found by every rank before training (``CliError`` with ``all_ranks``, after the ranks
      agreed): rank 0 prints the one line, every rank exits with 2.
    * Divergence (every rank stops at the same step): rank 0 prints the one line, every rank exits with 1.
    * Anything else on one rank (a file it cannot write, a bug, Ctrl-C): that rank prints ``rank R: <command>:
      error: ...`` (after the traceback for an unexpected exception) and ends the whole job at once with
      ``MPI_Abort`` (exit code 1, 2 or 130), instead of leaving the other ranks waiting in an all-reduce.

    Only rank 0 writes to standard output.
    """
    from tinynet import distributed
    from tinynet.checkpoint import CheckpointError
    from tinynet.training import TrainingDiverged

    try:
        comm = distributed.world()
    except distributed.DistributedError as error:
        if not distributed.launched_rank():
            print(f"{name}: error: --distributed: {escape(error)}", file=sys.stderr)
        return EXIT_USAGE
    args.communicator = comm
    chief = comm.rank == 0
    try:
        agree(comm, None)  # the first collective: a rank whose command line did not parse is waiting in it
    except CliError as error:
        if chief:
            print(escape(error), file=sys.stderr)
        return EXIT_USAGE

    def abort(error, code, with_traceback):
        if with_traceback:
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        text = f"{type(error).__name__}: {error}" if with_traceback else str(error)
        print(f"rank {comm.rank}: {name}: error: {escape(text)}", file=sys.stderr, flush=True)
        comm.abort(code)

    try:
        with open(os.devnull, "w") as devnull, \
                (contextlib.redirect_stdout(devnull) if not chief else contextlib.nullcontext()):
            return args.func(args) or 0
    except CliError as error:
        if getattr(error, "all_ranks", False):
            if chief:
                print(f"{name}: error: {escape(error)}", file=sys.stderr)
            return EXIT_USAGE
        abort(error, EXIT_USAGE, with_traceback=False)
    except TrainingDiverged as error:
        if chief:
            print(f"{name}: error: {escape(error)}{escape(kept_checkpoint(args, 'the last good checkpoint'))}",
                  file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        if chief:
            print(f"\n{name}: interrupted", file=sys.stderr, flush=True)
        comm.abort(EXIT_INTERRUPTED)
    except (OSError, CommandFailed, CheckpointError) as error:
        abort(error, EXIT_FAILED, with_traceback=False)
    except Exception as error:  # noqa: BLE001 -- a bug: its traceback, then end every rank
        abort(error, EXIT_FAILED, with_traceback=True)
    return EXIT_FAILED


__all__ = ["CliError", "CommandFailed", "agree", "kept_checkpoint", "path_text",
           "OneLineParser", "HelpFormatter", "plain", "add_model_arguments", "model_from_args",
           "MODEL_DEFAULTS", "escape", "int_between", "positive_int", "non_negative_int", "positive_float",
           "non_negative_float", "fraction", "check_output_file", "check_input_file", "run_command",
           "run_distributed", "one_line_warnings", "EXIT_USAGE", "EXIT_FAILED", "EXIT_INTERRUPTED"]
