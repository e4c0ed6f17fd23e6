"""``plot_model``: a diagram of any model's graph, as Keras' ``plot_model``, drawn with matplotlib only (no GraphViz).

Every layer call is a box (its name and type; optionally its shapes, dtypes, activation, trainability) and every
graph edge — each input tensor of each call — is an arrow from the box that produced the tensor to the box that
reads it. Nothing else is drawn: the edges come from ``node.inputs`` and nowhere else.

The layout is a layered (Sugiyama) drawing of the DAG:

1. **ranks**: each call sits one rank below the deepest of its inputs (longest path from the inputs), so every
   arrow points down (``rankdir='TB'``) or right (``'LR'``);
2. an edge spanning several ranks gets a **dummy** vertex on each rank it crosses, so it is routed between the
   boxes, never through one;
3. **order** within each rank: barycenter sweeps, down then up, keeping the order with the fewest crossings;
4. **coordinates**: each vertex as near as the boxes allow to the mean of its neighbours on the previous (then
   the next) rank — a weighted isotonic regression per rank (pool adjacent violators), a few sweeps;
5. **edges**: polylines leaving the source box's bottom (right) side, passing the dummies, entering the target
   box's top (left) side; several edges on one side get ports spread along it, ordered to avoid crossing.

:func:`graph_layout` computes all this and returns a :class:`GraphLayout` — boxes with their positions, edges with
their points — which :func:`draw_layout` draws and :func:`plot_model` saves. The same primitives draw GoogLeNet's
own diagram (:mod:`inception.plot`), which only places the boxes differently. Coordinates are in inches, ``y``
growing downwards, so text sizes in points and box sizes agree at any ``dpi``.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import dataclass, field


from .. import fileio
from ..checks import check_flag

# ---------------------------------------------------------------------------------------------------- style
TITLE_SIZE, TEXT_SIZE = 9.0, 8.0   # font sizes, points
LINE_SPACING = 1.45                # line height / font size
PAD_X, PAD_Y = 0.14, 0.08          # text padding inside a box, inches
RANK_GAP = {"TB": 0.42, "LR": 0.55}   # free space between two ranks (where the edges bend), inches
BOX_GAP = 0.3                      # between two boxes of a rank
DUMMY_SIZE, DUMMY_GAP = 0.12, 0.12  # room for an edge passing a rank, and its distance to a neighbour
STUB = 0.08                        # straight run of an edge leaving or entering a box
MARGIN = 0.25                      # around the drawing
MAX_PIXELS = 32_000                # longest side of a raster image (Agg's own limit is 65,536)
EDGE_COLOR, OUTPUT_COLOR, SHAPE_COLOR = "#555555", "#c0504d", "#1f4e79"
DEFAULT_COLOR = "#ffffff"
COLORS = {
    "InputLayer": "#fff2b3", "Conv2D": "#cfe3f7", "MaxPool2D": "#fbd9b5", "AvgPool2D": "#fbe6c8",
    "GlobalAveragePooling2D": "#fbe6c8", "Concatenate": "#e3e3e3", "Dense": "#cdeccd", "Dropout": "#f4f4f4",
    "Flatten": "#f4f4f4", "LocalResponseNormalization": "#e6d9f2", "BatchNormalization": "#e6d9f2",
    "Activation": "#fde2e2", "ReLU": "#fde2e2", "Softmax": "#fde2e2",
}
EXTENSIONS = (".png", ".svg", ".pdf")


# ------------------------------------------------------------------------------------------------ the layout
@dataclass
class Box:
    """One layer call, drawn as a rounded box.

    Attributes
    ----------
    node : int
        Index of the call in ``model.nodes``.
    kind : str
        The layer's type (chooses the colour).
    lines : list of (str, str)
        Text lines, top to bottom, each with its style: ``'title'`` (bold), ``'text'`` or ``'shape'`` (blue).
    width : float
        Inches.
    height : float
        Inches.
    x : float
        Centre, inches, from the left.
    y : float
        Centre, inches, from the top (it grows downwards).
    is_output : bool
        The call produces one of the model's outputs (drawn with a red border).
    """

    node: int
    kind: str
    lines: list
    width: float
    height: float
    x: float = 0.0
    y: float = 0.0
    is_output: bool = False

    @property
    def bounds(self):
        """``(x0, y0, x1, y1)``: left, top, right, bottom."""
        return (self.x - self.width / 2, self.y - self.height / 2, self.x + self.width / 2, self.y + self.height / 2)


@dataclass
class Edge:
    """One input of one layer call: an arrow from the producing call's box to the reading call's box.

    Attributes
    ----------
    source, target : int
        Indices in ``model.nodes``: ``model.nodes[target].inputs`` holds ``model.nodes[source].output``.
    points : list of (float, float)
        The polyline, from the source box's border to the target box's border (the arrow head).
    color : str
    """

    source: int
    target: int
    points: list
    color: str = EDGE_COLOR


@dataclass
class Cluster:
    """A shaded band behind a group of boxes (GoogLeNet's Inception blocks), labelled on its left."""

    label: str
    bounds: tuple


@dataclass
class Note:
    """Free text on the drawing (a caption, a tag beside a box)."""

    text: str
    x: float
    y: float
    ha: str = "center"
    color: str = "#555555"
    size: float = 10.0
    style: str = "normal"
    weight: str = "normal"


@dataclass
class GraphLayout:
    """What a diagram shows, placed: the boxes, the edges and any decorations.

    Attributes
    ----------
    boxes : list of Box
        One per layer call, in the order of ``model.nodes`` (``boxes[i].node == i``).
    edges : list of Edge
        One per input of each call, in the order of ``model.nodes`` and of each call's inputs.
    extent : tuple
        ``(x0, y0, x1, y1)``: the region drawn, inches.
    rankdir : str
        ``'TB'`` or ``'LR'`` (or ``'custom'`` for a layout placed by other rules).
    clusters, notes : list
    legend : list of (str, str)
        ``(label, colour)`` swatches, drawn downwards from ``legend_at``.
    legend_at : tuple
    """

    boxes: list
    edges: list
    extent: tuple
    rankdir: str = "TB"
    clusters: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    legend: list = field(default_factory=list)
    legend_at: tuple = (0.0, 0.0)

    def edge_pairs(self):
        """``[(source, target), ...]``: the edges drawn, as node indices."""
        return [(e.source, e.target) for e in self.edges]

    def overlapping_boxes(self, tolerance=1e-6):
        """Pairs ``(i, j)`` of boxes whose rectangles overlap (touching is allowed)."""
        found = []
        for i, a in enumerate(self.boxes):
            ax0, ay0, ax1, ay1 = a.bounds
            for j in range(i + 1, len(self.boxes)):
                bx0, by0, bx1, by1 = self.boxes[j].bounds
                if min(ax1, bx1) - max(ax0, bx0) > tolerance and min(ay1, by1) - max(ay0, by0) > tolerance:
                    found.append((i, j))
        return found

    def edges_through_boxes(self, tolerance=1e-6):
        """``(edge index, box index)`` for every edge whose polyline enters a box's interior (its own two
        boxes included: an edge must only touch their borders)."""
        found = []
        for k, edge in enumerate(self.edges):
            for i, box in enumerate(self.boxes):
                x0, y0, x1, y1 = box.bounds
                inner = (x0 + tolerance, y0 + tolerance, x1 - tolerance, y1 - tolerance)
                if any(_segment_hits(p, q, inner) for p, q in zip(edge.points, edge.points[1:])):
                    found.append((k, i))
        return found


def _segment_hits(p, q, rect):
    """Whether segment ``p``–``q`` meets the open rectangle ``rect`` (Liang–Barsky clipping)."""
    x0, y0, x1, y1 = rect
    if x0 >= x1 or y0 >= y1:
        return False
    t0, t1 = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for d, lo, hi, start in ((dx, x0, x1, p[0]), (dy, y0, y1, p[1])):
        if d == 0:
            if not lo < start < hi:
                return False
            continue
        a, b = (lo - start) / d, (hi - start) / d
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
    return t0 < t1


# ------------------------------------------------------------------------------------------------ box content
_MEASURE = {}


def text_width(text, size=TEXT_SIZE, bold=False) -> float:
    """Width of ``text`` in inches, in matplotlib's default font at ``size`` points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    key = (size, bold)
    if key not in _MEASURE:
        _MEASURE[key] = (TextToPath(), FontProperties(size=size, weight="bold" if bold else "normal"))
    measure, prop = _MEASURE[key]
    return measure.get_text_width_height_descent(text, prop, ismath=False)[0] / 72.0


def _style_size(style):
    return TITLE_SIZE if style == "title" else TEXT_SIZE


def make_box(index, node, lines, is_output=False, min_width=0.0, min_height=0.0) -> Box:
    """A :class:`Box` for ``model.nodes[index]`` (``node``) sized to hold ``lines`` (see :attr:`Box.lines`)."""
    width = max([min_width] + [text_width(t, _style_size(s), s == "title") + 2 * PAD_X for t, s in lines])
    height = max(min_height, sum(_style_size(s) * LINE_SPACING / 72.0 for _, s in lines) + 2 * PAD_Y)
    return Box(index, type(node.layer).__name__, list(lines), width, height, is_output=is_output)


def _shape_text(shape):
    return str((None,) + tuple(shape))


def node_lines(node, show_shapes=False, show_dtype=False, show_layer_names=True, show_layer_activations=False,
               show_trainable=False, call=None):
    """The text of a call's box, as Keras' ``plot_model`` writes it.

    ``name (Type)`` (or the type alone), then, as asked: input and output shapes, dtypes, the activation, whether
    the layer is trainable. ``call`` is ``(k, n)`` for the k-th of n calls of a shared layer (written as
    ``call k of n``).
    """
    layer = node.layer
    kind = type(layer).__name__
    lines = [(f"{layer.name} ({kind})" if show_layer_names else kind, "title")]
    if call is not None:
        lines.append((f"call {call[0]} of {call[1]}", "text"))
    if show_shapes:
        shapes = [_shape_text(t.example_shape) for t in node.inputs]
        if len(shapes) == 1:
            lines.append((f"Input shape: {shapes[0]}", "shape"))
        elif shapes:
            lines.append(("Input shapes: " + shapes[0] + ",", "shape"))
            lines += [(s + ("," if i < len(shapes) - 2 else ""), "shape") for i, s in enumerate(shapes[1:])]
        lines.append((f"Output shape: {_shape_text(node.output.example_shape)}", "shape"))
    if show_dtype:
        dtypes = sorted({str(t.dtype) for t in node.inputs})
        if dtypes:
            lines.append((f"Input dtype: {', '.join(dtypes)}", "text"))
        lines.append((f"Output dtype: {node.output.dtype}", "text"))
    if show_layer_activations:
        activation = layer.get_config().get("activation")
        if activation is not None:
            lines.append((f"Activation: {activation}", "text"))
    if show_trainable:
        trainable = not layer.weights or any(layer.trainable_flags)
        lines.append((f"Trainable: {trainable}", "text"))
    return lines


# ------------------------------------------------------------------------------------------- layered layout
def _ranks(nodes, index):
    """Each call's rank: 0 for an input, else one more than its deepest input (longest path from the inputs)."""
    rank = []
    for node in nodes:   # topological order: every input's rank is known
        rank.append(1 + max((rank[index[id(t)]] for t in node.inputs), default=-1))
    return rank


def _crossings(layers, succs):
    """How many pairs of edges cross between consecutive ranks, for the given order."""
    total = 0
    for upper, lower in zip(layers, layers[1:]):
        pos = {v: i for i, v in enumerate(lower)}
        pairs = [(i, pos[w]) for i, v in enumerate(upper) for w in succs[v]]
        total += sum(1 for a in range(len(pairs)) for b in range(a + 1, len(pairs))
                     if (pairs[a][0] - pairs[b][0]) * (pairs[a][1] - pairs[b][1]) < 0)
    return total


def _order(layers, preds, succs, sweeps=16):
    """Barycenter heuristic: sort each rank by the mean position of its neighbours on the rank just swept,
    alternately downwards (predecessors) and upwards (successors); keep the best order seen."""
    layers = [list(layer) for layer in layers]
    pos = {v: i for layer in layers for i, v in enumerate(layer)}
    best, best_crossings = [list(layer) for layer in layers], _crossings(layers, succs)
    for sweep in range(sweeps):
        if best_crossings == 0:
            break
        down = sweep % 2 == 0
        neighbours = preds if down else succs
        for r in (range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)):
            def key(v, neighbours=neighbours):
                ns = neighbours[v]
                return (sum(pos[u] for u in ns) / len(ns) if ns else pos[v], pos[v])

            layers[r].sort(key=key)
            for i, v in enumerate(layers[r]):
                pos[v] = i
        crossings = _crossings(layers, succs)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in layers], crossings
    return best


def _isotonic(values, weights):
    """Weighted least-squares non-decreasing fit of ``values`` (pool adjacent violators)."""
    blocks = []   # [mean, weight, count]
    for v, w in zip(values, weights):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    out = []
    for mean, _, count in blocks:
        out += [mean] * count
    return out


def _place(layer, desired, size, is_dummy):
    """Positions along a rank, in ``layer``'s order, nearest to ``desired`` with no two vertices closer than
    their half-sizes plus a gap."""
    offsets = [0.0]
    for a, b in zip(layer, layer[1:]):
        gap = DUMMY_GAP if is_dummy[a] or is_dummy[b] else BOX_GAP
        offsets.append(offsets[-1] + (size[a] + size[b]) / 2 + gap)
    weights = [4.0 if is_dummy[v] else 1.0 for v in layer]   # long edges stay straight
    fitted = _isotonic([desired[v] - o for v, o in zip(layer, offsets)], weights)
    return {v: f + o for v, f, o in zip(layer, fitted, offsets)}


def _coordinates(layers, preds, succs, size, is_dummy, sweeps=8):
    """Positions along each rank: packed first, then each rank pulled towards its neighbours on the rank above
    (downward sweep) or below (upward sweep), ending with a downward sweep."""
    coord = {}
    for layer in layers:
        coord.update(_place(layer, {v: 0.0 for v in layer}, size, is_dummy))
    for sweep in range(2 * sweeps + 1):   # down, up, ..., down: a chain ends straight below its head
        down = sweep % 2 == 0
        for r in (range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)):
            desired = {}
            for v in layers[r]:
                ns = preds[v] if down else succs[v]
                desired[v] = sum(coord[u] for u in ns) / len(ns) if ns else coord[v]
            coord.update(_place(layers[r], desired, size, is_dummy))
    return coord


def spread_ports(count, length):
    """Offsets from a side's centre for ``count`` edges meeting a box side of ``length`` inches (0 for one)."""
    if count <= 1:
        return [0.0]
    step = min(0.2, 0.7 * length / (count - 1))
    return [(k - (count - 1) / 2) * step for k in range(count)]


def _check_rankdir(rankdir):
    if rankdir not in ("TB", "LR"):
        raise ValueError(f"plot_model: rankdir must be 'TB' (top to bottom) or 'LR' (left to right), got {rankdir!r}")


def graph_layout(model, show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB",
                 show_layer_activations=False, show_trainable=False, box_lines=None, min_box_size=(0.0, 0.0)):
    """Place ``model``'s graph: one box per layer call, one edge per input of each call.

    Parameters
    ----------
    model : Model
    show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable : bool
        What each box says (see :func:`plot_model`).
    rankdir : {'TB', 'LR'}
        Top to bottom or left to right.
    box_lines : callable, optional
        ``box_lines(node, call)`` → the box's lines (see :attr:`Box.lines`), instead of :func:`node_lines`;
        ``call`` is ``(k, n)`` for a shared layer's k-th of n calls, else ``None``.
    min_box_size : (float, float)
        Smallest box width and height, inches.

    Returns
    -------
    GraphLayout
        ``boxes[i]`` is ``model.nodes[i]``; ``edges`` holds ``(index of the input's producer, i)`` for each
        input of each call, with the polyline drawn. The edges are exactly the graph's.
    """
    _check_rankdir(rankdir)
    nodes = model.nodes
    index = {id(n.output): i for i, n in enumerate(nodes)}
    outputs = {id(t) for t in model.outputs}
    counts, calls = {}, []
    for node in nodes:
        counts[id(node.layer)] = counts.get(id(node.layer), 0) + 1
        calls.append(counts[id(node.layer)])
    boxes = []
    for i, node in enumerate(nodes):
        n_calls = counts[id(node.layer)]
        call = (calls[i], n_calls) if n_calls > 1 else None
        lines = (box_lines(node, call) if box_lines is not None else
                 node_lines(node, show_shapes, show_dtype, show_layer_names, show_layer_activations,
                            show_trainable, call))
        boxes.append(make_box(i, node, lines, is_output=id(node.output) in outputs,
                              min_width=min_box_size[0], min_height=min_box_size[1]))
    pairs = [(index[id(t)], j) for j, node in enumerate(nodes) for t in node.inputs]
    rank = _ranks(nodes, index)
    n_ranks = max(rank) + 1

    # vertices: the calls, then one dummy per rank an edge passes; chains[k] = the vertices of edge k
    vertex_rank = list(rank)
    is_dummy = [False] * len(nodes)
    preds = {v: [] for v in range(len(nodes))}
    succs = {v: [] for v in range(len(nodes))}
    chains = []
    for u, v in pairs:
        chain = [u]
        for r in range(rank[u] + 1, rank[v]):
            d = len(vertex_rank)
            vertex_rank.append(r)
            is_dummy.append(True)
            preds[d], succs[d] = [], []
            chain.append(d)
        chain.append(v)
        for a, b in zip(chain, chain[1:]):
            succs[a].append(b)
            preds[b].append(a)
        chains.append(chain)

    # first order: depth-first from the inputs, children in graph order
    seen, first = set(), []

    def visit(v):
        stack = [v]
        while stack:
            w = stack.pop()
            if w in seen:
                continue
            seen.add(w)
            first.append(w)
            stack.extend(reversed(succs[w]))

    for v in range(len(vertex_rank)):
        if not preds[v]:
            visit(v)
    discovery = {v: k for k, v in enumerate(first)}
    layers = [[] for _ in range(n_ranks)]
    for v in sorted(range(len(vertex_rank)), key=discovery.__getitem__):
        layers[vertex_rank[v]].append(v)
    layers = _order(layers, preds, succs)

    # sizes along the rank (order axis) and across it (rank axis)
    across_w = rankdir == "TB"   # TB: ranks are rows, boxes side by side along x
    size, depth = {}, {}
    for v in range(len(vertex_rank)):
        if is_dummy[v]:
            size[v], depth[v] = DUMMY_SIZE, 0.0
        else:
            b = boxes[v]
            size[v], depth[v] = (b.width, b.height) if across_w else (b.height, b.width)
    coord = _coordinates(layers, preds, succs, size, is_dummy)
    low = min(coord[v] - size[v] / 2 for v in coord)
    rank_top, rank_depth, position = [], [], MARGIN
    for layer in layers:
        thickness = max(depth[v] for v in layer) + 2 * STUB
        rank_top.append(position)
        rank_depth.append(thickness)
        position += thickness + RANK_GAP[rankdir]
    extent_rank = position - RANK_GAP[rankdir] + MARGIN
    extent_order = max(coord[v] + size[v] / 2 for v in coord) - low + 2 * MARGIN

    def point(o, r):   # (order coordinate, rank coordinate) -> (x, y)
        o = o - low + MARGIN
        return (o, r) if across_w else (r, o)

    for v, box in enumerate(boxes):
        r = vertex_rank[v]
        box.x, box.y = point(coord[v], rank_top[r] + rank_depth[r] / 2)

    # ports: the edges leaving (entering) a box share its far (near) side, ordered by where they go (come from)
    leaving, entering = {v: [] for v in range(len(nodes))}, {v: [] for v in range(len(nodes))}
    for k, chain in enumerate(chains):
        leaving[chain[0]].append(k)
        entering[chain[-1]].append(k)
    out_port, in_port = {}, {}
    for ports, ends, neighbour in ((out_port, leaving, 1), (in_port, entering, -2)):
        for v, edges_here in ends.items():
            edges_here.sort(key=lambda k, neighbour=neighbour: (coord[chains[k][neighbour]], k))
            for k, offset in zip(edges_here, spread_ports(len(edges_here), size[v])):
                ports[k] = coord[v] + offset
    edges = []
    for k, chain in enumerate(chains):
        u, v = chain[0], chain[-1]
        ru, rv = vertex_rank[u], vertex_rank[v]
        centre_u = rank_top[ru] + rank_depth[ru] / 2
        centre_v = rank_top[rv] + rank_depth[rv] / 2
        pts = [(out_port[k], centre_u + depth[u] / 2), (out_port[k], rank_top[ru] + rank_depth[ru])]
        for d in chain[1:-1]:
            r = vertex_rank[d]
            pts += [(coord[d], rank_top[r]), (coord[d], rank_top[r] + rank_depth[r])]
        pts += [(in_port[k], rank_top[rv]), (in_port[k], centre_v - depth[v] / 2)]
        edges.append(Edge(u, v, [point(o, r) for o, r in pts]))
    width, height = (extent_order, extent_rank) if across_w else (extent_rank, extent_order)
    return GraphLayout(boxes, edges, (0.0, 0.0, width, height), rankdir=rankdir)


# --------------------------------------------------------------------------------------------------- drawing
def draw_layout(layout, title=None):
    """Draw a :class:`GraphLayout` on a new :class:`matplotlib.figure.Figure` (no pyplot: the caller's backend,
    a notebook's inline one, is left alone), one inch per unit; returns the figure.

    Each arrow carries the id ``edge<k>_<source>_<target>`` and each box ``box<node>`` (kept in an SVG).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    x0, y0, x1, y1 = layout.extent
    top = y0 - (0.6 if title else 0.0)
    fig = Figure(figsize=(x1 - x0, y1 - top))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, top)
    ax.axis("off")
    if title:
        ax.text((x0 + x1) / 2, y0 - 0.3, title, ha="center", va="center", fontsize=15, weight="bold",
                parse_math=False)
    for cluster in layout.clusters:
        cx0, cy0, cx1, cy1 = cluster.bounds
        ax.add_patch(FancyBboxPatch((cx0, cy0), cx1 - cx0, cy1 - cy0, boxstyle="round,pad=0.02,rounding_size=0.15",
                                    facecolor="#f3f7fb", edgecolor="#9fb6cc", lw=1.0, zorder=0))
        ax.text(cx0 - 0.15, (cy0 + cy1) / 2, cluster.label, ha="right", va="center", fontsize=10, weight="bold",
                color="#3b5b7a", parse_math=False)
    for k, edge in enumerate(layout.edges):   # edges first, boxes on top; ids name them in an SVG
        codes = [Path.MOVETO] + [Path.LINETO] * (len(edge.points) - 1)
        ax.add_patch(FancyArrowPatch(path=Path(edge.points, codes), arrowstyle="-|>", mutation_scale=9,
                                     color=edge.color, lw=1.0, zorder=1, joinstyle="round", capstyle="round",
                                     gid=f"edge{k}_{edge.source}_{edge.target}"))
    for box in layout.boxes:
        bx0, by0, _, _ = box.bounds
        ax.add_patch(FancyBboxPatch((bx0, by0), box.width, box.height, boxstyle="round,pad=0,rounding_size=0.07",
                                    facecolor=COLORS.get(box.kind, DEFAULT_COLOR),
                                    edgecolor=OUTPUT_COLOR if box.is_output else "#444444",
                                    lw=2.0 if box.is_output else 0.8, zorder=2, gid=f"box{box.node}"))
        heights = [_style_size(s) * LINE_SPACING / 72.0 for _, s in box.lines]
        y = box.y - sum(heights) / 2
        for (text, style), h in zip(box.lines, heights):
            ax.text(box.x, y + h / 2, text, ha="center", va="center", fontsize=_style_size(style),
                    weight="bold" if style == "title" else "normal",
                    color=SHAPE_COLOR if style == "shape" else "black", zorder=3, parse_math=False)
            y += h
    for note in layout.notes:
        ax.text(note.x, note.y, note.text, ha=note.ha, va="center", fontsize=note.size, style=note.style,
                weight=note.weight, color=note.color, parse_math=False)
    lx, ly = layout.legend_at
    for k, (label, color) in enumerate(layout.legend):
        ax.add_patch(FancyBboxPatch((lx, ly + k * 0.32 - 0.1), 0.35, 0.2, boxstyle="square,pad=0",
                                    facecolor=color, edgecolor="#444444", lw=0.6))
        ax.text(lx + 0.5, ly + k * 0.32, label, ha="left", va="center", fontsize=8.5, parse_math=False)
    return fig


# ------------------------------------------------------------------------------------------------- saving
class PlotFile(str):
    """The path :func:`plot_model` wrote (a ``str``) that a notebook shows as the picture itself (IPython's
    ``_repr_png_`` / ``_repr_svg_``), as Keras' ``plot_model`` returns an image in a notebook."""

    def _read(self, ext):
        if os.path.splitext(self)[1].lower() != ext:
            return None
        with fileio.open_regular(self) as f:  # a FIFO or a device put there is refused, not waited on
            return f.read()

    def _repr_png_(self):
        return self._read(".png")

    def _repr_svg_(self):
        data = self._read(".svg")
        return data.decode("utf-8") if data is not None else None


def check_plot_file(to_file, what="plot_model"):
    """Return ``to_file`` as a ``str`` after checking it names a ``.png``, ``.svg`` or ``.pdf`` file in an existing
    folder; raise ``TypeError`` / ``ValueError`` / ``FileNotFoundError`` saying what is wrong."""
    if not isinstance(to_file, (str, os.PathLike)):
        raise TypeError(f"{what}: to_file must be a path (str or os.PathLike), got {type(to_file).__name__}")
    path = os.fspath(to_file)
    if isinstance(path, bytes):
        raise TypeError(f"{what}: to_file must be a str path, got bytes")
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"{what}: to_file must end in .png, .svg or .pdf (the format follows the extension), "
                         f"got {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{what}: to_file {path!r} is a folder, not a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: the folder of to_file {path!r} does not exist: {folder}")
    return path


#: the lowest resolution drawn: below it the text is under a pixel high and FreeType refuses to render it
MIN_DPI = 10


def check_dpi(dpi, what="plot_model"):
    """Raise ``TypeError`` / ``ValueError`` unless ``dpi`` is a finite number of at least :data:`MIN_DPI`."""
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real):
        raise TypeError(f"{what}: dpi must be a number, got {dpi!r}")
    if not math.isfinite(dpi) or dpi < MIN_DPI:
        raise ValueError(f"{what}: dpi must be a finite number >= {MIN_DPI} (the text would be too small to draw), "
                         f"got {dpi!r}")


def save_layout(layout, to_file, dpi, title=None):
    """Draw ``layout`` and write it to ``to_file`` atomically (:func:`tinynet.fileio.save_figure`); a raster image
    whose longest side would pass 32,000 pixels is drawn at a lower dpi, with a warning. Returns a
    :class:`PlotFile`."""
    fig = draw_layout(layout, title=title)
    if os.path.splitext(to_file)[1].lower() == ".png":
        longest = max(fig.get_size_inches())
        if longest * dpi > MAX_PIXELS:
            lower = max(MAX_PIXELS / longest, MIN_DPI)
            warnings.warn(f"plot_model: the diagram is {longest:.0f} inches long; drawing it at {lower:.0f} dpi "
                          f"instead of {dpi} to stay under {MAX_PIXELS:,} pixels", stacklevel=3)
            dpi = lower
    fileio.save_figure(fig, to_file, dpi=dpi)
    return PlotFile(to_file)


def plot_model(model, to_file="model.png", show_shapes=False, show_dtype=False, show_layer_names=True,
               rankdir="TB", dpi=96, show_layer_activations=False, show_trainable=False):
    """Draw ``model``'s graph to an image file, as Keras' ``keras.utils.plot_model`` (matplotlib, no GraphViz).

    One box per layer call — ``name (Type)`` and, as asked, more — and one arrow per input of each call, from the
    call that produced the tensor; a shared layer gets one box per call (``call k of n``); the model's outputs
    have a red border. The layout is layered (see :mod:`tinynet.utils.plotting`): :func:`graph_layout` computes
    it, and its edges are exactly the graph's.

    Parameters
    ----------
    model : Model
    to_file : str or path-like
        ``.png``, ``.svg`` or ``.pdf`` (the format follows the extension); its folder must exist. Written
        atomically (:func:`tinynet.fileio.save_figure`): an interrupted run leaves any previous file whole.
    show_shapes : bool
        Write each call's input and output shapes (batch axis as ``None``).
    show_dtype : bool
        Write the input and output dtypes.
    show_layer_names : bool
        Write ``name (Type)``; the type alone when False.
    rankdir : {'TB', 'LR'}
        Top to bottom, or left to right.
    dpi : float
        Resolution of a PNG (and of the raster parts of a PDF); positive.
    show_layer_activations : bool
        Write the activation of layers that have one (Conv2D, Dense, Activation).
    show_trainable : bool
        Write whether each layer is trainable (a layer with weights, none of them trainable, is not).

    Returns
    -------
    PlotFile
        The path written, a ``str``. In a Jupyter notebook it displays as the picture (PNG or SVG), as Keras'
        return value does; ``IPython.display.Image(path)`` works too.

    Raises
    ------
    TypeError
        ``model`` is not a :class:`tinynet.Model`, ``to_file`` is not a path, an option is not a bool, ``dpi``
        not a number.
    ValueError
        Another extension than .png / .svg / .pdf, ``to_file`` is a folder, ``rankdir`` is not 'TB' or 'LR',
        ``dpi`` is not positive.
    FileNotFoundError
        The folder of ``to_file`` does not exist.

    Examples
    --------
    >>> from tinynet.utils import plot_model
    >>> plot_model(model, "model.png", show_shapes=True)
    'model.png'
    """
    from ..model import Model

    if not isinstance(model, Model):
        raise TypeError(f"plot_model: model must be a tinynet Model, got {type(model).__name__}")
    path = check_plot_file(to_file)
    flags = dict(show_shapes=show_shapes, show_dtype=show_dtype, show_layer_names=show_layer_names,
                 show_layer_activations=show_layer_activations, show_trainable=show_trainable)
    for name, value in flags.items():
        check_flag("plot_model", name, value)
    _check_rankdir(rankdir)
    check_dpi(dpi)
    layout = graph_layout(model, rankdir=rankdir, **{k: bool(v) for k, v in flags.items()})
    return save_layout(layout, path, dpi)
