"""Run every notebook in notebooks/ top to bottom, so a notebook that no longer matches the code fails CI.

Each notebook is read with ``json`` (no Jupyter needed) and its code cells are executed in order in one
fresh namespace, with matplotlib's non-interactive Agg backend.
"""
import json
import pathlib
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def code_cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4, f"{path.name}: expected nbformat 4"
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            source = cell["source"]
            yield index, "".join(source) if isinstance(source, list) else source


def test_notebooks_present():
    assert len(NOTEBOOKS) >= 3, f"expected the study notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    namespace = {"__name__": "__main__"}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
            for index, source in code_cells(path):
                exec(compile(source, f"{path.name}[cell {index}]", "exec"), namespace)
    finally:
        plt.close("all")
