"""Sphinx configuration of the tinynet + inception documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API pages come from the docstrings (numpydoc style, read by napoleon; the math by MathJax), the
notebooks from ``notebooks/*.ipynb`` (``docs/notebooks`` links there) with the outputs they were committed
with: they are never executed here.
"""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the packages as they are in the work tree, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import tinynet  # noqa: E402  (after the path is set)

project = "tinynet + inception"
author = "tinynet + inception contributors"
copyright = "2026, tinynet + inception contributors"
release = tinynet.__version__  # the one place the version is written: tinynet/__init__.py
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "tinynet_docs",  # the cli-help and figures directives (docs/_ext)
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "notebooks/README.md", "Thumbs.db", ".DS_Store"]
# Notebooks are written by hand in chapters: a '###' under a '#' is their choice, not a broken page.
suppress_warnings = ["myst.header"]

# --- API reference -------------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
# Each object is documented once, on the page of the module that defines it (a package's __all__ re-exports
# are named in its docstring, not documented a second time).
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_typehints = "description"
autoclass_content = "class"
# Optional back ends and bridges: the pages show their code without installing CuPy, Keras or JAX.
autodoc_mock_imports = ["cupy", "cupyx", "keras", "jax"]

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# Types such as "ndarray, shape (N, H, W, C)" are prose, not names to link: rendered as text, never guessed
# into a link to some other object's ``shape``.
napoleon_use_param = False
napoleon_use_ivar = True  # "Attributes" as fields; the attributes themselves are documented by autodoc
# Sections this package's docstrings use besides numpydoc's own.
napoleon_custom_sections = ["Shapes", "Guarantees"]

# --- Notebooks and Markdown ------------------------------------------------------------------------------------
nb_execution_mode = "off"  # render the committed outputs; tests/test_notebooks.py is where they run
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# --- HTML ------------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"tinynet + inception {release}"
html_static_path = ["_static"]


def drop_field_alias_text(app, what, name, obj, options, lines):
    """NamedTuple fields without a ``#:`` comment say only "Alias for field number 0": show none of that."""
    if lines and lines[0].startswith("Alias for field number"):
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", drop_field_alias_text)
