"""The documentation site builds with warnings as errors, and shows what it promises.

One build per session (a module-scoped fixture, about a minute on 2 cores), into a temporary folder, with
the README's command: ``python -m sphinx -W --keep-going -b html docs OUT``. Skipped without the ``docs``
extra (``pip install -e '.[docs]'``).
"""
from __future__ import annotations

import inspect
import pathlib
import re
import subprocess
import sys

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("furo")

import tinynet  # noqa: E402
from tinynet import layers  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"docs build failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}"
    return out


def page(site, name):
    path = site / name
    assert path.is_file(), f"no page {name}"
    return path.read_text(encoding="utf-8")


def text(html):
    """The page's words: tags dropped (code blocks are split into highlighted spans)."""
    return re.sub(r"<[^>]+>", "", html)


def layer_classes():
    """Every public layer class (what a user builds models from), with the module that defines it."""
    found = {}
    for name in layers.__all__:
        obj = getattr(layers, name)
        if inspect.isclass(obj) and issubclass(obj, layers.Layer) and obj is not layers.Layer:
            found[obj.__name__] = obj
    return sorted(found.values(), key=lambda cls: cls.__name__)


def test_the_layers_we_promise_are_all_found():
    names = {cls.__name__ for cls in layer_classes()}
    assert {"Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAveragePooling2D", "Dense", "Flatten", "Dropout",
            "BatchNormalization", "LocalResponseNormalization", "Concatenate", "ReLU", "Softmax"} <= names


@pytest.mark.parametrize("cls", layer_classes(), ids=lambda cls: cls.__name__)
def test_each_layer_is_documented_with_its_math_typeset(site, cls):
    module = cls.__module__.rsplit(".", 1)[-1]  # tinynet.layers.conv -> api/layers/conv.html
    html = page(site, f"api/layers/{module}.html")
    assert f'id="{cls.__module__}.{cls.__qualname__}"' in html, f"{cls.__name__} is not documented on its page"
    # Sphinx writes each `.. math::` as <div class="math notranslate nohighlight">\[ ... \]</div> for MathJax
    assert re.search(r'<div class="math[^"]*">\s*\\\[', html), f"no display math on {cls.__name__}'s page"
    assert "mathjax" in html.lower(), "MathJax is not loaded"


def test_the_math_is_the_docstring_math(site):
    html = page(site, "api/layers/conv.html")
    assert r"\sum_{a, b, c}" in html  # Conv2D's forward sum, as written in tinynet/layers/conv.py
    assert "X^T G" in html  # and its backward


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_page(site, notebook):
    html = page(site, f"notebooks/{notebook.stem}.html")
    assert "<h1>" in html, f"{notebook.name} rendered without a title"
    assert f'href="notebooks/{notebook.stem}.html"' in page(site, "chapters.html"), \
        f"{notebook.name} is not listed among the chapters"


def test_reliability_page(site):
    html = page(site, "reliability.html")
    assert "Reliability" in html
    # the README's section "What happens when things go wrong" is included there
    assert "checkpoint.json" in text(html) and "--resume" in text(html)


def test_landing_page(site):
    html = page(site, "index.html")
    words = text(html)
    assert "pip install" in words and "python -m inception train" in words  # the README's two commands
    assert re.search(r'<img [^>]*src="_images/googlenet\.png"', html), "no GoogLeNet picture"
    assert (site / "_images" / "googlenet.png").is_file()
    assert tinynet.__version__ in words


def test_cli_help_pages(site):
    html = page(site, "cli.html")
    for command in ("summary", "plot", "check-keras", "train", "evaluate", "predict"):
        assert f"usage: inception {command}" in text(html), f"no help text for inception {command}"
    assert "usage: python -m tinynet" in text(html)


def test_api_reference_covers_the_engine(site):
    expected = {
        "api/model.html": "tinynet.model.Model",
        "api/losses.html": "tinynet.losses",
        "api/optim.html": "tinynet.optim",
        "api/gradcheck.html": "tinynet.gradcheck",
        "api/kernels.html": "tinynet.kernels.numpy_kernels",
        "api/backend.html": "tinynet.backend",
        "api/data.html": "tinynet.data.loaders",
        "api/checkpoint.html": "tinynet.checkpoint",
        "api/fileio.html": "tinynet.fileio.atomic_write",
        "api/training.html": "tinynet.training.Trainer",
        "api/inception.html": "inception.googlenet.googlenet",
        "api/layers/conv.html": "tinynet.layers.conv_winograd",
        "api/blas.html": "tinynet.blas.batched_matmul",
    }
    for name, anchor in expected.items():
        html = page(site, name)
        assert f'id="{anchor}"' in html or f'id="module-{anchor}"' in html, f"{anchor} missing from {name}"


def test_googlenet_notes_and_benchmarks(site):
    assert "Table 1" in page(site, "googlenet.html")
    html = page(site, "benchmarks.html")
    for png in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        assert f'src="_images/{png.name}"' in html, f"benchmark figure {png.name} missing"
