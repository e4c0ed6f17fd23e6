"""GoogLeNet's structure diagram, on the drawing primitives of :func:`tinynet.utils.plot_model` (matplotlib only).

Each layer call is a box with its name, what it does (``Conv2D 3×3/1, 128, relu``) and its output shape. The main
path runs down the middle; the four branches of each Inception block sit side by side on a shaded band, joined
by the concatenation; the auxiliary classifiers, when the model has them, leave to the right as side exits.
Every arrow is an edge of the graph (``node.inputs``); only the placement is GoogLeNet's own. A model that is not
laid out as a GoogLeNet (no Inception block, or a placement that would overlap boxes or run an arrow through
one) is drawn with the generic layered layout of :func:`tinynet.utils.plotting.graph_layout` instead. PNG, SVG
or PDF, by the file's extension.
"""
from __future__ import annotations

from tinynet.utils import plotting
from tinynet.utils.plotting import COLORS, Cluster, Edge, GraphLayout, Note

from .table1 import group_key

BOX_W, BOX_H, STEP = 2.5, 0.78, 1.05          # box size and vertical pitch, in inches
BRANCH_X = (-4.05, -1.35, 1.35, 4.05)          # centres of the four branches of a block
AUX_X = 8.3                                    # centre of the aux-classifier column
SIDE_EXIT = 5.0                                # an edge moving further sideways leaves its box to the right
BRANCH_OF = {"1x1": 0, "3x3_reduce": 1, "3x3": 1, "5x5_reduce": 2, "5x5": 2, "pool": 3, "pool_proj": 3}
LEGEND = [("convolution", ("Conv2D",)), ("max pool", ("MaxPool2D",)),
          ("avg pool", ("AvgPool2D", "GlobalAveragePooling2D")),
          ("normalisation", ("LocalResponseNormalization", "BatchNormalization")),
          ("concatenate", ("Concatenate",)), ("dense", ("Dense",))]


def _pair(p):
    return f"{p[0]}×{p[1]}" if p[0] != p[1] else f"{p[0]}×{p[0]}"


def describe(layer):
    """One line saying what a layer does, e.g. ``Conv2D 3×3/1, 128, relu``."""
    kind = type(layer).__name__
    c = layer.get_config()
    if kind == "Conv2D":
        return f"Conv2D {_pair(c['kernel_size'])}/{c['strides'][0]}, {c['filters']}" + (
            f", {c['activation']}" if c["activation"] != "linear" else "")
    if kind in ("MaxPool2D", "AvgPool2D"):
        return f"{kind} {_pair(c['pool_size'])}/{c['strides'][0]} {c['padding']}"
    if kind == "Dense":
        return f"Dense {c['units']}" + (f", {c['activation']}" if c["activation"] != "linear" else "")
    if kind == "Dropout":
        return f"Dropout {c['rate']:g}"
    if kind == "LocalResponseNormalization":
        return f"LRN size {c['size']}"
    if kind == "BatchNormalization":
        return "BatchNorm"
    if kind == "InputLayer":
        return "Input"
    return kind


def _shape(shape):
    return "×".join(str(d) for d in shape)


def box_lines(node, call=None):
    """A GoogLeNet box's text: the layer's name, :func:`describe`, and ``→`` its output shape."""
    lines = [(node.layer.name, "title"), (describe(node.layer), "text")]
    if call is not None:
        lines.append((f"call {call[0]} of {call[1]}", "text"))
    return lines + [("→ " + _shape(node.output.example_shape), "shape")]


def _positions(model):
    """GoogLeNet's placement: ``{node index: (x, y)}`` centres, the blocks' bands ``(label, y_top, y_bottom)``,
    the aux groups' names, and the bottom of the drawing."""
    nodes = model.nodes
    index = {id(n.output): i for i, n in enumerate(nodes)}
    positions, bands, aux = {}, [], []
    y = 0.5
    i = 0
    while i < len(nodes):
        key = group_key(nodes[i].layer.name)
        group = [i]
        while i + len(group) < len(nodes) and group_key(nodes[i + len(group)].layer.name) == key \
                and key != nodes[i + len(group)].layer.name:
            group.append(i + len(group))
        name = nodes[i].layer.name
        if key != name and key[0].isdigit():                      # an Inception block
            branches = [[], [], [], []]
            for j in group:
                suffix = nodes[j].layer.name[len(key) + 1:]
                if suffix != "output":
                    branches[BRANCH_OF.get(suffix, 3)].append(j)
            depth = max(len(b) for b in branches)
            for b, members in enumerate(branches):
                for k, j in enumerate(members):
                    positions[j] = (BRANCH_X[b], y + k * STEP)
            for j in group:
                if nodes[j].layer.name.endswith("_output"):
                    positions[j] = (0.0, y + depth * STEP)
            bands.append((f"inception ({key})", y - 0.55, y + depth * STEP + 0.55))
            y += (depth + 1) * STEP + 0.35
        elif key.startswith("aux") and nodes[group[0]].inputs:      # a side exit: its own column
            source = nodes[group[0]].inputs[0]
            top = positions[index[id(source)]][1] + 0.9 * STEP
            for k, j in enumerate(group):
                positions[j] = (AUX_X, top + k * STEP)
            aux.append(key)
        else:
            for j in group:
                positions[j] = (0.0, y)
                y += STEP
        i += len(group)
    bottom = max(p[1] for p in positions.values()) + 1.0
    return positions, bands, aux, bottom


def _googlenet_layout(model):
    nodes = model.nodes
    index = {id(n.output): i for i, n in enumerate(nodes)}
    outputs = {id(t) for t in model.outputs}
    positions, bands, aux, bottom = _positions(model)
    boxes = []
    for j, node in enumerate(nodes):
        box = plotting.make_box(j, node, box_lines(node), is_output=id(node.output) in outputs,
                                min_width=BOX_W, min_height=BOX_H)
        box.x, box.y = positions[j]
        boxes.append(box)
    # an edge into a box with several inputs enters at its own port, ordered by where it comes from
    ports = {}
    for j, node in enumerate(nodes):
        sources = sorted(range(len(node.inputs)), key=lambda k, node=node: (boxes[index[id(node.inputs[k])]].x, k))
        for k, offset in zip(sources, plotting.spread_ports(len(sources), boxes[j].width)):
            ports[(j, k)] = boxes[j].x + offset
    edges = []
    for j, node in enumerate(nodes):
        target = boxes[j]
        for k, t in enumerate(node.inputs):
            source = boxes[index[id(t)]]
            end = (ports[(j, k)], target.y - target.height / 2)
            if abs(target.x - source.x) > SIDE_EXIT:           # a side exit: right, then down
                points = [(source.x + source.width / 2, source.y), (target.x, source.y), end]
                edges.append(Edge(source.node, j, points, color=plotting.OUTPUT_COLOR))
                continue
            start = (source.x, source.y + source.height / 2)
            if target.y - source.y > 1.5 * STEP:                # skip a row: down first, then across, under boxes
                turn = target.y - target.height / 2 - 0.12
                points = [start, (source.x, turn), end]
            else:
                points = [start, end]
            edges.append(Edge(source.node, j, points))
    x_min, x_max = BRANCH_X[0] - BOX_W / 2 - 1.4, AUX_X + BOX_W / 2 + 0.8
    clusters = [Cluster(label.replace(" ", "\n"), (BRANCH_X[0] - BOX_W / 2 - 0.15, y0, BRANCH_X[3] + BOX_W / 2 + 0.15,
                                                    y1)) for label, y0, y1 in bands]
    notes = [Note("output", b.x + b.width / 2 + 0.08, b.y, ha="left", color=plotting.OUTPUT_COLOR, size=8,
                  weight="bold") for b in boxes if b.is_output]
    if aux:
        notes.append(Note("auxiliary classifiers\n(training only)", AUX_X, -0.2, style="italic"))
    kinds = {b.kind for b in boxes}
    legend = [(text, COLORS[members[0]]) for text, members in LEGEND if kinds & set(members)]
    legend_at = (AUX_X - BOX_W / 2, bottom - 0.6 - len(legend) * 0.32)
    return GraphLayout(boxes, edges, (x_min, -1.0, x_max, bottom), rankdir="custom", clusters=clusters, notes=notes,
                       legend=legend, legend_at=legend_at)


def layout(model):
    """Place ``model`` for :func:`plot_model`: GoogLeNet's own placement when it fits, else the generic one.

    Returns
    -------
    tinynet.utils.plotting.GraphLayout
        ``boxes[i]`` is ``model.nodes[i]``; ``edges`` are the graph's, one per input of each call. GoogLeNet's
        placement is used when the model has an Inception block and the placement leaves no two boxes
        overlapping, no arrow through a box and every arrow pointing down; otherwise the layered layout of
        :func:`tinynet.utils.plotting.graph_layout`, with the same box text.
    """
    if any(group_key(n.layer.name) != n.layer.name and group_key(n.layer.name)[0].isdigit() for n in model.nodes):
        special = _googlenet_layout(model)
        if (not special.overlapping_boxes() and not special.edges_through_boxes()
                and all(special.boxes[e.target].y > special.boxes[e.source].y for e in special.edges)):
            return special
    return plotting.graph_layout(model, box_lines=box_lines, min_box_size=(BOX_W, BOX_H))


def plot_model(model, to_file, dpi=110, title=None):
    """Draw ``model`` (a GoogLeNet from :func:`inception.googlenet.googlenet`) to ``to_file``.

    Parameters
    ----------
    model : Model
    to_file : str or path
        ``.png``, ``.svg`` or ``.pdf``; written atomically (:func:`tinynet.fileio.save_figure`), so an
        interrupted run leaves the previous file whole. Its folder must exist.
    dpi : float
        For raster output.
    title : str, optional

    Raises
    ------
    TypeError
        For a ``model`` that is not a tinynet Model or a ``title`` that is not a string, before anything is drawn.

    Returns
    -------
    tinynet.utils.plotting.PlotFile
        The path written (a ``str``).
    """
    from tinynet.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"inception plot: model must be a tinynet Model, got {type(model).__name__}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"inception plot: title must be a string or None, got {type(title).__name__}")
    path = plotting.check_plot_file(to_file, what="inception plot")
    plotting.check_dpi(dpi, what="inception plot")
    return plotting.save_layout(layout(model), path, dpi, title=title)
