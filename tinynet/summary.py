"""Text summary of a model, laid out as Keras 3's ``Model.summary``: one row per layer call.

Columns: ``Layer (type)``, ``Output Shape``, ``Param #``, tinynet's ``Mult-adds`` and, for a model that is not a
plain chain (a tensor feeding several layers, a layer with several inputs, a layer called twice, several inputs or
outputs), Keras' ``Connected to``: the tensors a call reads, as ``name[call][0]``. Cells too long for their column
wrap as Keras wraps them (the name above its ``(type)``, one connection per line, a shape at its commas) and are
cut with ``…`` only when one piece still does not fit. The table fits the terminal when no ``line_length`` is
given. Totals follow: parameters with their size in bytes, as Keras prints them, and multiply-adds per example.

:func:`print_summary` prints the table and returns ``None``, as Keras' ``Model.summary`` and
``keras.utils.print_summary`` do (so a notebook shows it once); :func:`summary_text` returns it as a string.
"""
from __future__ import annotations

import shutil
from typing import NamedTuple

import numpy as np

from .layers.base import format_shape

DEFAULT_LINE_LENGTH = 98          # when there is no terminal to measure
MIN_LINE_LENGTH, MAX_LINE_LENGTH = 80, 140   # the bounds on the terminal's width that line_length=None uses
MIN_TEXT_WIDTH = 12               # the narrowest a text column is squeezed to
GAP = "  "                        # between columns


class LayerRow(NamedTuple):
    """One row of the summary: one call of a layer."""

    name: str
    type: str            #: the layer's class name
    output_shape: tuple  #: per example, without the batch axis
    params: int          #: the layer's parameters on its first call, 0 on later calls (a shared layer counts once)
    macs: int            #: multiply-adds of this call for one example
    connected_to: list   #: ``'name[call][0]'`` per input: the producing layer's call (0 = its first) and output


def layer_rows(model):
    """Yield a :class:`LayerRow` for each layer call, in run order.

    A layer called several times appears once per call; its parameters are counted on its first call only.
    """
    seen = set()
    calls = {}    # id(layer) -> how many calls seen so far
    call_of = {}  # id(output tensor) -> (layer name, call index)
    for node in model.nodes:
        layer = node.layer
        params = layer.count_params() if id(layer) not in seen else 0
        seen.add(id(layer))
        call = calls.get(id(layer), 0)
        calls[id(layer)] = call + 1
        call_of[id(node.output)] = (layer.name, call)
        connected = [f"{call_of[id(t)][0]}[{call_of[id(t)][1]}][0]" for t in node.inputs]
        yield LayerRow(layer.name, type(layer).__name__, node.output.example_shape, params, node.count_macs(),
                       connected)


def is_sequential_like(model) -> bool:
    """True when the model is a plain chain: one input, one output, every layer called once on the output of
    the layer before it. Keras leaves out the ``Connected to`` column for such models, and so does
    :func:`summary_text`."""
    nodes = model.nodes
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.layers) != len(nodes):
        return False
    return all(len(node.inputs) == 1 and node.inputs[0] is previous.output
               for previous, node in zip(nodes, nodes[1:]))


def terminal_line_length() -> int:
    """The terminal's width (or ``$COLUMNS``), bounded to ``[80, 140]``; 98 when there is no terminal."""
    columns = shutil.get_terminal_size((DEFAULT_LINE_LENGTH, 24)).columns
    return max(MIN_LINE_LENGTH, min(MAX_LINE_LENGTH, columns))


def readable_size(n_bytes) -> str:
    """Bytes as Keras prints them beside parameter counts: ``'3.20 KB'`` (powers of 1024)."""
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _cut(text, width):
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _wrap(pieces, width, joiner=""):
    """Greedy line filling: ``pieces`` joined by ``joiner`` into lines of at most ``width`` characters; a piece
    longer than ``width`` gets a line of its own, cut with ``…``."""
    lines = []
    for piece in pieces:
        if lines and len(lines[-1]) + len(joiner) + len(piece) <= width:
            lines[-1] += joiner + piece
        else:
            lines.append(piece)
    return [_cut(line, width) for line in lines]


def _name_cell(name, kind, width):
    full = f"{name} ({kind})"
    return [full] if len(full) <= width else [_cut(name, width), _cut(f"({kind})", width)]


def _shape_cell(shape, width):
    text = format_shape(shape)
    if len(text) <= width:
        return [text]
    parts = text.split(", ")
    return _wrap([p + ("," if i < len(parts) - 1 else "") for i, p in enumerate(parts)], width, joiner=" ")


def _connected_cell(entries, width):
    """One connection per line; one too long breaks before its ``[call][0]``, the name cut only if needed."""
    if not entries:
        return ["-"]
    lines = []
    for i, entry in enumerate(entries):
        entry += "," if i < len(entries) - 1 else ""
        cut = entry.rfind("[", 0, entry.rfind("["))   # where '[call][0]' starts
        lines += [entry] if len(entry) <= width or cut <= 0 else _wrap([entry[:cut], entry[cut:]], width)
    return [_cut(line, width) for line in lines]


def _column_widths(natural, fixed, target):
    """Shrink the text columns (``natural``, a dict) until the table is ``target`` wide or each is at its
    minimum, narrowing the widest first; grow the first column when ``target`` is wider than needed."""
    widths = dict(natural)
    seps = len(GAP) * (len(widths) + len(fixed) - 1)
    total = sum(widths.values()) + sum(fixed.values()) + seps
    while total > target:
        name, width = max(widths.items(), key=lambda item: item[1])
        if width <= MIN_TEXT_WIDTH:
            break
        widths[name] -= 1
        total -= 1
    if total < target:
        widths["name"] += target - total
    return widths


def summary_text(model, line_length=None):
    """The table :meth:`tinynet.Model.summary` prints.

    Parameters
    ----------
    model : Model
    line_length : int, optional
        Total width of the table in characters, as Keras' ``line_length``. ``None`` (the default) fits the
        terminal: the table is as wide as its contents need, at most the terminal's width bounded to
        ``[80, 140]`` columns (98 when the output is no terminal). Text columns are never squeezed below 12
        characters, so a very small ``line_length`` gives a wider table.

    Returns
    -------
    str
        ``Model: "name"``, the table (columns ``Layer (type)``, ``Output Shape``, ``Param #``, ``Mult-adds`` and,
        unless the model is a plain chain, ``Connected to``), then the totals: ``Total params``, ``Trainable
        params``, ``Non-trainable params`` (each with its size, e.g. ``818 (3.20 KB)``) and ``Mult-adds per
        example``.

    Raises
    ------
    TypeError, ValueError
        When ``line_length`` is not ``None`` or a positive integer.
    """
    if line_length is not None:
        if isinstance(line_length, (bool, np.bool_)) or not isinstance(line_length, (int, np.integer)):
            raise TypeError(f"summary: line_length must be an integer or None, got {line_length!r}")
        if line_length < 1:
            raise ValueError(f"summary: line_length must be >= 1, got {line_length}")
        line_length = int(line_length)  # a NumPy integer too, as layers take them
    rows = list(layer_rows(model))
    connected = not is_sequential_like(model)
    params_text = [f"{r.params:,}" for r in rows]
    macs_text = [f"{r.macs:,}" for r in rows]
    head = {"name": "Layer (type)", "shape": "Output Shape", "params": "Param #", "macs": "Mult-adds",
            "connected": "Connected to"}
    fixed = {"params": max([len(head["params"])] + [len(t) for t in params_text]),
             "macs": max([len(head["macs"])] + [len(t) for t in macs_text])}
    natural = {"name": max([len(head["name"])] + [len(f"{r.name} ({r.type})") for r in rows]),
               "shape": max([len(head["shape"])] + [len(format_shape(r.output_shape)) for r in rows])}
    if connected:
        natural["connected"] = max([len(head["connected"])] + [len(e) + 1 for r in rows for e in r.connected_to])
    if line_length is None:
        needed = sum(natural.values()) + sum(fixed.values()) + len(GAP) * (len(natural) + len(fixed) - 1)
        target = min(needed, terminal_line_length())
    else:
        target = line_length
    widths = _column_widths(natural, fixed, target)
    widths.update(fixed)
    order = ["name", "shape", "params", "macs"] + (["connected"] if connected else [])
    right = {"params", "macs"}

    def fmt(cells):
        height = max(len(c) for c in cells.values())
        out = []
        for i in range(height):
            parts = []
            for key in order:
                text = cells[key][i] if i < len(cells[key]) else ""
                parts.append(f"{text:>{widths[key]}}" if key in right else f"{text:<{widths[key]}}")
            out.append(GAP.join(parts).rstrip())
        return out

    table_rows = []
    for r, params, macs in zip(rows, params_text, macs_text):
        cells = {"name": _name_cell(r.name, r.type, widths["name"]), "shape": _shape_cell(r.output_shape,
                                                                                          widths["shape"]),
                 "params": [params], "macs": [macs]}
        if connected:
            cells["connected"] = _connected_cell(r.connected_to, widths["connected"])
        table_rows.append(fmt(cells))
    width = sum(widths[k] for k in order) + len(GAP) * (len(order) - 1)
    spaced = any(len(lines) > 1 for lines in table_rows)   # multi-line rows: a blank line between rows
    lines = [f'Model: "{model.name}"', "=" * width, *fmt({k: [head[k]] for k in order}), "=" * width]
    for k, row_lines in enumerate(table_rows):
        if spaced and k:
            lines.append("")
        lines += row_lines
    total, trainable, total_bytes, trainable_bytes = 0, 0, 0, 0
    for layer in model.layers:
        for w, flag in zip(layer.weights, layer.trainable_flags):
            total += int(w.size)
            total_bytes += int(w.nbytes)
            if flag:
                trainable += int(w.size)
                trainable_bytes += int(w.nbytes)
    lines += [
        "=" * width,
        f"Total params: {total:,} ({readable_size(total_bytes)})",
        f"Trainable params: {trainable:,} ({readable_size(trainable_bytes)})",
        f"Non-trainable params: {total - trainable:,} ({readable_size(total_bytes - trainable_bytes)})",
        f"Mult-adds per example: {sum(r.macs for r in rows):,}",
        "_" * width,
    ]
    return "\n".join(lines)


def print_summary(model, line_length=None, print_fn=None):
    """Print the table of :func:`summary_text`, as Keras' ``Model.summary`` (and ``keras.utils.print_summary``).

    Parameters
    ----------
    model : Model
    line_length : int, optional
        See :func:`summary_text`.
    print_fn : callable, optional
        Called once with the whole table as one string (as Keras 3 calls a custom ``print_fn``); ``None`` (the
        default) prints it to standard output.

    Returns
    -------
    None
        As Keras: in a notebook or REPL the table shows once, not a second time as the cell's value. Use
        :func:`summary_text` for the text.

    Raises
    ------
    TypeError
        When ``print_fn`` is neither ``None`` nor callable; see :func:`summary_text` for ``line_length``.
    """
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"summary: print_fn must be a callable or None, got {print_fn!r}")
    text = summary_text(model, line_length=line_length)
    (print if print_fn is None else print_fn)(text)
