"""The notebooks: each is executed by a real Jupyter kernel, and each committed file shows its code's results.

* ``test_notebook_runs``: a copy of the notebook (in memory; the committed file is never touched) runs top to
  bottom through nbclient in a fresh ``python3`` kernel on this interpreter, in a temporary folder, exactly as
  ``python notebooks/run.py`` runs it; any cell error or timeout fails with the notebook's name and the cell.
* ``test_notebook_is_current``: the committed file carries the outputs of its own code: the SHA-256 of its
  code cells matches the one ``notebooks/run.py`` stored, every code cell has an execution count, in order
  1, 2, 3, ..., and there are outputs and no errors. Fix a failure with ``python notebooks/run.py NAME``.
"""
import importlib.util
import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
FOLDER_LIMIT = 5 * 2**20       # the whole notebooks/ folder, outputs and figures included


def _load_runner():
    spec = importlib.util.spec_from_file_location("tinynet_notebooks_run", NOTEBOOK_DIR / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_runner()


def test_notebooks_present():
    assert len(NOTEBOOKS) >= 5, f"expected the study notebooks in {NOTEBOOK_DIR}"
    assert all(p.name[:2].isdigit() and p.name[2] == "_" for p in NOTEBOOKS), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_current(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    reasons = run.stale_reasons(nb)
    assert not reasons, (f"{path.name} is stale: " + "; ".join(reasons)
                         + f"\nre-execute it with: python notebooks/run.py {path.name}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path):
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    try:
        run.execute(nb, name=path.name, workdir=tmp_path)
    except run.NotebookError as error:
        pytest.fail(str(error), pytrace=False)
    assert path.read_bytes() == before, f"{path.name}: executing a copy changed the committed file"
    assert not run.stale_reasons(nb), run.stale_reasons(nb)


def test_kernel_is_this_interpreter(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, tinynet\nprint(sys.executable)\nprint(tinynet.__file__)")]
    run.execute(nb, name="kernel check", workdir=tmp_path)
    executable, tinynet_file = nb.cells[0].outputs[0]["text"].splitlines()
    assert executable == sys.executable
    assert pathlib.Path(tinynet_file).resolve().parent == NOTEBOOK_DIR.parent / "tinynet"


def test_errors_name_the_notebook_and_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("assert x == 2, 'x is not 2'")]
    with pytest.raises(run.NotebookError, match=r"^demo\.ipynb: cell 2 raised AssertionError: x is not 2"):
        run.execute(nb, name="demo.ipynb", workdir=tmp_path)


def test_stale_reasons():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell("print(2)")]
    assert "never executed" in " ".join(run.stale_reasons(nb))
    for count, cell in enumerate(nb.cells, 1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{count}\n")]
    nb.metadata["tinynet"] = {"code_sha256": run.code_sha256(nb)}
    assert run.stale_reasons(nb) == []
    nb.cells[1].source = "print(3)"                         # code edited after the run
    assert "changed after it was executed" in " ".join(run.stale_reasons(nb))
    nb.metadata["tinynet"]["code_sha256"] = run.code_sha256(nb)
    nb.cells[0].execution_count = 5                         # cells run out of order
    assert "not one top-to-bottom run" in " ".join(run.stale_reasons(nb))


def test_folder_is_small():
    size = sum(p.stat().st_size for p in NOTEBOOK_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and ".ipynb_checkpoints" not in p.parts)
    assert size < FOLDER_LIMIT, f"notebooks/ holds {size / 2**20:.1f} MiB (limit {FOLDER_LIMIT / 2**20:.0f} MiB)"


def test_the_runner_refuses_what_is_not_a_notebook_in_one_line(tmp_path, capsys):
    """A JSON file without cells, a file that is no .ipynb, a name that matches nothing, a negative timeout:
    exit code 2 and one line, before anything runs (they were tracebacks, or exit 1)."""
    run = _load_runner()
    (tmp_path / "n.ipynb").write_text('{"x": 1}')
    (tmp_path / "t.txt").write_text("zz")
    for argv, message in [([str(tmp_path / "n.ipynb")], "not a notebook (no list of 'cells')"),
                          (["--check", str(tmp_path / "n.ipynb")], "not a notebook"),
                          ([str(tmp_path / "t.txt")], "is not a .ipynb file"),
                          (["no_such_notebook"], "matches 0 notebooks")]:
        assert run.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("run.py: error: ") and err.count("\n") == 1 and message in err, err
    with pytest.raises(SystemExit) as stop:
        run.main(["--timeout", "-5", "01"])
    assert stop.value.code == 2
