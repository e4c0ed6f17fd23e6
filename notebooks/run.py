#!/usr/bin/env python
"""Execute the notebooks with a real Jupyter kernel and save them with their outputs.

Usage::

    python notebooks/run.py                  # every notebooks/*.ipynb, in name order
    python notebooks/run.py 01 05            # by number prefix, name or path
    python notebooks/run.py --check          # execute nothing: list stale notebooks, exit 1 if any

Each notebook runs top to bottom in a fresh ``python3`` kernel started from *this* interpreter (so
``.venv/bin/python notebooks/run.py`` runs the venv's Python, whatever kernels Jupyter has registered),
with the repository first on ``PYTHONPATH``, a temporary working folder, ``PYTHONHASHSEED=0``, an empty IPython
profile and matplotlib's default style with inline PNG figures at 80 dpi (small files, the same pixels every
run). The executed notebook — outputs, figures, execution counts 1, 2, 3, ... — replaces the file atomically
(:func:`tinynet.fileio.write_text`), with the SHA-256 of its code cells in
``metadata['tinynet']['code_sha256']``, so that a notebook whose code changed after it was executed is
detected as stale (:func:`stale_reasons`, used by ``tests/test_notebooks.py``).

A cell that raises, or runs longer than ``--timeout`` seconds, stops the run with the notebook's name, the
cell's number and the error; that notebook's file is left as it was.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import re
import sys
import tempfile
import time

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent
REPO = NOTEBOOK_DIR.parent
CELL_TIMEOUT = 180          # seconds per cell
FIGURE_DPI = 80
# run in the kernel before the first cell (not stored in the notebook)
KERNEL_SETUP = [
    "import matplotlib",
    f"matplotlib.rcdefaults(); matplotlib.rcParams['figure.dpi'] = {FIGURE_DPI}",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours in IPython tracebacks

if str(REPO) not in sys.path:  # `python notebooks/run.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))


class NotebookError(RuntimeError):
    """A notebook could not be executed; the message names the notebook and the cell."""


# ----------------------------------------------------------------------------------------------- staleness
def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def code_sources(nb) -> list:
    """The source of every code cell, in order (a notebook read with ``json`` or ``nbformat``)."""
    return [_source(cell) for cell in nb["cells"] if cell["cell_type"] == "code"]


def code_sha256(nb) -> str:
    """SHA-256 of the code cells: the UTF-8 JSON list of their sources (markdown and outputs not included)."""
    text = json.dumps(code_sources(nb), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stale_reasons(nb) -> list:
    """Why a committed notebook does not show the result of running its code; ``[]`` when it does.

    A notebook is current when ``metadata['tinynet']['code_sha256']`` equals :func:`code_sha256`, every
    non-empty code cell carries an execution count, the counts are 1, 2, 3, ... in order (one session, top to
    bottom), there is at least one output and no cell holds an error.
    """
    reasons = []
    stored = nb.get("metadata", {}).get("tinynet", {}).get("code_sha256")
    current = code_sha256(nb)
    if stored is None:
        reasons.append("it was never executed by notebooks/run.py (no metadata['tinynet']['code_sha256'])")
    elif stored != current:
        reasons.append(f"its code cells changed after it was executed (stored code_sha256 {stored[:12]}..., "
                       f"now {current[:12]}...)")
    counts, unexecuted, n_outputs = [], [], 0
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        n_outputs += len(cell.get("outputs", []))
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            reasons.append(f"cell {index} holds an error output")
        if _source(cell).strip():
            if cell.get("execution_count") is None:
                unexecuted.append(index)
            counts.append(cell.get("execution_count"))
    if unexecuted:
        reasons.append(f"{len(unexecuted)} code cell(s) have no execution count (cells "
                       f"{', '.join(map(str, unexecuted[:8]))}{', ...' if len(unexecuted) > 8 else ''})")
    if None not in counts and counts != list(range(1, len(counts) + 1)):
        reasons.append(f"its execution counts are {counts}, not 1..{len(counts)} (not one top-to-bottom run)")
    if n_outputs == 0:
        reasons.append("it has no outputs")
    return reasons


# ----------------------------------------------------------------------------------------------- running
def _kernel_manager_class():
    """An AsyncKernelManager whose ``python3`` kernel is ipykernel on ``sys.executable`` (this interpreter),
    not whichever ``python3`` kernelspec Jupyter finds first on this machine."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisPythonKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if kernel_name == "python3":
                return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())  # argv[0] = sys.executable
            return super().get_kernel_spec(kernel_name)

    class ThisPythonKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _default_kernel_spec_manager(self):
            return ThisPythonKernelSpecs(data_dir=self.data_dir)

    return ThisPythonKernelManager


def kernel_environment(workdir) -> dict:
    """The kernel's environment: this one, with the repository first on the path and the variables that
    change outputs pinned (hash seed, IPython profile, matplotlib backend chosen by ipykernel)."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)             # let ipykernel select the inline backend (pytest may set Agg)
    env["PYTHONHASHSEED"] = "0"
    env["IPYTHONDIR"] = os.path.join(workdir, ".ipython")   # no user profile, startup files or history
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"           # silence the debugger's frozen-modules note
    return env


def execute(nb, name="notebook", timeout=CELL_TIMEOUT, workdir=None):
    """Run every cell of ``nb`` (an ``nbformat`` notebook, changed in place) in a fresh kernel; return it.

    ``workdir`` is the kernel's working folder (a new temporary folder when None). Raises
    :class:`NotebookError` naming ``name`` and the cell on an error, a timeout or a dead kernel.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    current = {"index": None}

    def on_cell_start(cell, cell_index, **_):
        current["index"] = cell_index

    for cell in nb.cells:  # a clean slate: no output of an earlier run survives a failure
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    nb.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})

    def run(folder):
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3", kernel_manager_class=_kernel_manager_class(),
            resources={"metadata": {"path": folder}}, record_timing=False, allow_errors=False,
            interrupt_on_timeout=False, shutdown_kernel="immediate", on_cell_start=on_cell_start,
            extra_arguments=[f"--IPKernelApp.exec_lines={line}" for line in KERNEL_SETUP]
            + ["--IPKernelApp.log_level=ERROR"])  # the kernel's own log (e.g. its TCP note), not cell output
        try:
            client.execute(env=kernel_environment(folder))
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            index = current["index"]
            where = f"cell {index}" if index is not None else "kernel start"
            source = _source(nb.cells[index]) if index is not None else ""
            first = source.strip().splitlines()[0] if source.strip() else ""
            if isinstance(error, CellTimeoutError):
                what = f"timed out after {timeout} s"
            elif isinstance(error, DeadKernelError):
                what = "killed the kernel"
            else:
                what = f"raised {error.ename}: {error.evalue}" if getattr(error, "ename", None) else "raised"
            message = f"{name}: {where} {what}" + (f" (cell starts {first!r})" if first else "")
            raise NotebookError(f"{message}\n\n{_ANSI.sub('', str(error)).strip()}") from None

    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="tinynet-notebook-") as folder:
            run(folder)
    else:
        run(os.fspath(workdir))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _merge_adjacent_streams(cell.outputs)
    nb.metadata["tinynet"] = {"code_sha256": code_sha256(nb),
                              "executed_by": "notebooks/run.py (nbclient, python3 kernel)"}
    nbformat.validate(nb)
    return nb


def _merge_adjacent_streams(outputs) -> list:
    """Join consecutive stdout (or stderr) outputs into one: how a cell's printing is split into messages depends
    on when the kernel flushed, which would make the saved file differ between runs of the same code."""
    merged = []
    for output in outputs:
        if (merged and output.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == output.get("name")):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    return merged


def count_figures(nb) -> int:
    """Number of image outputs (inline PNG, JPEG or SVG figures)."""
    return sum(1 for cell in nb["cells"] if cell["cell_type"] == "code"
               for o in cell.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {})))


def run_file(path, timeout=CELL_TIMEOUT, write=True) -> dict:
    """Execute the notebook at ``path`` and, when ``write``, replace the file atomically; return statistics."""
    import nbformat

    from tinynet.fileio import write_text

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    execute(nb, name=path.name, timeout=timeout)
    seconds = time.perf_counter() - start
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    if write:
        write_text(path, text)
    return {"name": path.name, "seconds": seconds, "figures": count_figures(nb), "bytes": len(text.encode())}


class UsageError(Exception):
    """A mistake on the command line: one line, exit code 2."""


def _read_notebook(path):
    """The notebook at ``path`` as JSON with a list of cells; :class:`UsageError` naming the file otherwise."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a readable notebook ({error})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise UsageError(f"{path}: not a notebook (no list of 'cells')")
    return nb


def find_notebooks(names) -> list:
    """Paths for ``names`` (paths, file names, stems or number prefixes such as ``01``); all when empty."""
    everything = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not names:
        return everything
    found = []
    for name in names:
        candidate = pathlib.Path(name)
        if candidate.suffix == ".ipynb" and candidate.is_file():
            matches = [candidate.resolve()]
        else:
            matches = [p for p in everything if p.name == name or p.stem == name or p.name.startswith(name + "_")]
        if len(matches) != 1:
            what = ("is not a .ipynb file" if candidate.is_file() else
                    f"matches {len(matches)} notebooks in {NOTEBOOK_DIR} ({', '.join(p.name for p in matches) or 'none'})")
            raise UsageError(f"{name!r} {what}")
        found.append(matches[0])
    return found


def _positive_seconds(text):
    """An argparse ``type``: a whole number of seconds >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python notebooks/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="paths, names or number prefixes (default: every notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=_positive_seconds, default=CELL_TIMEOUT,
                        help=f"seconds per cell (default {CELL_TIMEOUT})")
    parser.add_argument("--check", action="store_true",
                        help="execute nothing; list the notebooks that are stale and exit 1 if any is")
    args = parser.parse_args(argv)
    try:
        paths = find_notebooks(args.notebooks)
        notebooks = [_read_notebook(path) for path in paths]  # every file is checked before any runs
    except UsageError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        stale = 0
        for path, nb in zip(paths, notebooks):
            reasons = stale_reasons(nb)
            stale += bool(reasons)
            print(f"{path.name}: " + ("; ".join(reasons) if reasons else "current"))
        return 1 if stale else 0
    print(f"kernel: python3 on {sys.executable}; cell timeout {args.timeout} s", flush=True)
    total = time.perf_counter()
    for path in paths:
        try:
            stats = run_file(path, timeout=args.timeout)
        except NotebookError as error:
            print(f"run.py: error: {error}", file=sys.stderr)
            return 1
        print(f"{stats['name']:<48} {stats['seconds']:6.1f} s  {stats['figures']:2d} figure(s)  "
              f"{stats['bytes'] / 1024:7.1f} KiB", flush=True)
    print(f"{len(paths)} notebook(s) in {time.perf_counter() - total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
