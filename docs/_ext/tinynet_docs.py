"""Two small directives for the tinynet docs, so no page copies what the code already says.

``.. cli-help:: inception train``
    The ``--help`` text of a command of ``python -m inception`` (or of the parser itself, or of
    ``python -m tinynet`` with ``tinynet``), taken from the command line's own argparse parser at build time,
    as a literal block.

``.. figures:: ../benchmarks/results``
    Every PNG in a folder (relative to the page), in name order, one figure each, captioned with its file name.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

HELP_WIDTH = 88  # argparse wraps to $COLUMNS; fixed so the pages do not depend on the terminal


def _tinynet_help():
    """``python -m tinynet --help``, captured (its parser is built inside ``main``)."""
    from tinynet.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["--help"])
    return out.getvalue()


def _parsers():
    """``{'inception': parser, 'inception train': subparser, ...}`` from the CLI's own ``build_parser``."""
    from inception.__main__ import build_parser

    root = build_parser()
    found = {"inception": root}
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"inception {name}"] = sub
    return found


class CliHelp(Directive):
    required_arguments = 1
    final_argument_whitespace = True

    def run(self):
        name = " ".join(self.arguments[0].split())
        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = str(HELP_WIDTH)
        try:
            if name == "tinynet":
                text = _tinynet_help()
            else:
                parsers = _parsers()
                if name not in parsers:
                    raise self.error(f"cli-help: no command {name!r}; known: {', '.join(sorted(parsers))}")
                text = parsers[name].format_help()
        finally:
            if old is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = old
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


class Figures(Directive):
    required_arguments = 1

    def run(self):
        env = self.state.document.settings.env
        page_dir = Path(env.doc2path(env.docname)).parent
        folder = (page_dir / self.arguments[0]).resolve()
        pngs = sorted(folder.glob("*.png"))
        env.note_dependency(str(folder))
        if not pngs:
            para = nodes.paragraph()
            para += nodes.emphasis(text=f"No figures in {self.arguments[0]} yet.")
            return [para]
        figures = []
        for png in pngs:
            env.note_dependency(str(png))
            figure = nodes.figure()
            # relative to the page, as an image directive's path is (the builder copies it into _images)
            figure += nodes.image(uri=os.path.relpath(png, page_dir).replace(os.sep, "/"), alt=png.name,
                                  width="100%")
            caption = nodes.caption()
            caption += nodes.literal(text=png.name)
            figure += caption
            figures.append(figure)
        return figures


def setup(app):
    app.add_directive("cli-help", CliHelp)
    app.add_directive("figures", Figures)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
