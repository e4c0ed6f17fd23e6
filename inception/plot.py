"""A structure diagram of GoogLeNet, like Keras' ``plot_model``, drawn with matplotlib only.

Each layer is a box with its name, type and arguments, and output shape. The main path runs down the
middle; the four branches of each Inception block sit side by side on a shaded band, joined by the
concatenation; the auxiliary classifiers leave to the right as side exits. PNG, SVG or PDF, by the file's
extension.
"""
from __future__ import annotations

from tinynet import fileio

from .table1 import group_key

BOX_W, BOX_H, STEP = 2.5, 0.78, 1.05          # box size and vertical pitch, in inches
BRANCH_X = (-4.05, -1.35, 1.35, 4.05)          # centres of the four branches of a block
AUX_X = 8.3                                    # centre of the aux-classifier column
COLORS = {
    "InputLayer": "#fff2b3", "Conv2D": "#cfe3f7", "MaxPool2D": "#fbd9b5", "AvgPool2D": "#fbe6c8",
    "GlobalAveragePooling2D": "#fbe6c8", "Concatenate": "#e3e3e3", "Dense": "#cdeccd", "Dropout": "#f4f4f4",
    "Flatten": "#f4f4f4", "LocalResponseNormalization": "#e6d9f2", "BatchNormalization": "#e6d9f2",
}
BRANCH_OF = {"1x1": 0, "3x3_reduce": 1, "3x3": 1, "5x5_reduce": 2, "5x5": 2, "pool": 3, "pool_proj": 3}


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


def layout(model):
    """Place every layer call: returns ``{node index: (x, y)}``, block bands and the figure's extent.

    Returns
    -------
    positions : dict node index → (x, y) centre (y grows downwards)
    bands : list of (label, y_top, y_bottom) for the Inception blocks
    height : float
    """
    nodes = model.nodes
    index = {id(n.output): i for i, n in enumerate(nodes)}
    positions, bands = {}, []
    y = 0.5
    aux_y = {}
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
        elif key.startswith("aux"):                                # a side exit: its own column
            source = nodes[group[0]].inputs[0]
            top = positions[index[id(source)]][1] + 0.9 * STEP
            for k, j in enumerate(group):
                positions[j] = (AUX_X, top + k * STEP)
            aux_y[key] = top
        else:
            for j in group:
                positions[j] = (0.0, y)
                y += STEP
        i += len(group)
    bottom = max(p[1] for p in positions.values()) + 1.0
    return positions, bands, bottom


def plot_model(model, to_file, dpi=110, title=None):
    """Draw ``model`` (a GoogLeNet from :func:`inception.googlenet.googlenet`) to ``to_file``.

    Parameters
    ----------
    model : Model
    to_file : str or path
        ``.png``, ``.svg`` or ``.pdf``; written atomically (:func:`tinynet.fileio.save_figure`), so an
        interrupted run leaves the previous file whole. Its folder must exist.
    dpi : int
        For raster output.
    title : str, optional
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is left alone
    from matplotlib.patches import FancyBboxPatch

    positions, bands, height = layout(model)
    nodes = model.nodes
    index = {id(n.output): i for i, n in enumerate(nodes)}
    x_min, x_max = BRANCH_X[0] - BOX_W / 2 - 1.4, AUX_X + BOX_W / 2 + 0.8
    width = x_max - x_min
    top = -1.0 if title is None else -1.6
    fig = Figure(figsize=(width, height - top))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(height, top)
    ax.axis("off")
    if title:
        ax.text((x_min + x_max) / 2, -1.0, title, ha="center", va="center", fontsize=15, weight="bold")
    ax.text(AUX_X, -0.2, "auxiliary classifiers\n(training only)", ha="center", va="center", fontsize=10,
            style="italic", color="#555555")

    for label, y0, y1 in bands:
        ax.add_patch(FancyBboxPatch((BRANCH_X[0] - BOX_W / 2 - 0.15, y0), BRANCH_X[3] - BRANCH_X[0] + BOX_W + 0.3,
                                    y1 - y0, boxstyle="round,pad=0.02,rounding_size=0.15",
                                    facecolor="#f3f7fb", edgecolor="#9fb6cc", lw=1.0, zorder=0))
        ax.text(BRANCH_X[0] - BOX_W / 2 - 0.3, (y0 + y1) / 2, label.replace(" ", "\n"), ha="right", va="center",
                fontsize=10, weight="bold", color="#3b5b7a")

    # edges first, boxes on top
    for j, node in enumerate(nodes):
        x1, y1 = positions[j]
        for t in node.inputs:
            x0, y0 = positions[index[id(t)]]
            start = (x0, y0 + BOX_H / 2)
            if abs(x1 - x0) > 5.0:                        # a side exit: right, then down
                start = (x0 + BOX_W / 2, y0)
                ax.plot([start[0], x1], [y0, y0], color="#c0504d", lw=1.3, zorder=1)
                start = (x1, y0)
                color = "#c0504d"
            else:
                color = "#555555"
                if y1 - y0 > 1.5 * STEP:                  # skip a row: go down first, then across, under the boxes
                    turn = y1 - BOX_H / 2 - 0.12
                    ax.plot([x0, x0], [start[1], turn], color=color, lw=1.0, zorder=1)
                    start = (x0, turn)
            ax.annotate("", xy=(x1, y1 - BOX_H / 2), xytext=start, zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.0, shrinkA=0, shrinkB=1,
                                        mutation_scale=9))
    outputs = {id(t) for t in model.outputs}
    for j, node in enumerate(nodes):
        x, y = positions[j]
        layer = node.layer
        kind = type(layer).__name__
        is_output = id(node.output) in outputs
        ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                    boxstyle="round,pad=0.0,rounding_size=0.08",
                                    facecolor=COLORS.get(kind, "#ffffff"),
                                    edgecolor="#c0504d" if is_output else "#444444",
                                    lw=2.0 if is_output else 0.8, zorder=2))
        ax.text(x, y - 0.22, layer.name, ha="center", va="center", fontsize=8.5, weight="bold", zorder=3)
        ax.text(x, y + 0.0, describe(layer), ha="center", va="center", fontsize=8, zorder=3)
        ax.text(x, y + 0.22, "→ " + _shape(node.output.example_shape), ha="center", va="center", fontsize=8,
                color="#1f4e79", zorder=3)
        if is_output:
            ax.text(x + BOX_W / 2 + 0.08, y, "output", ha="left", va="center", fontsize=8, color="#c0504d",
                    weight="bold")
    legend = [("convolution", "Conv2D"), ("max pool", "MaxPool2D"), ("avg pool", "AvgPool2D"),
              ("normalisation", "LocalResponseNormalization"), ("concatenate", "Concatenate"),
              ("dense", "Dense")]
    for k, (text, kind) in enumerate(legend):
        lx, ly = AUX_X - BOX_W / 2, height - 0.6 - (len(legend) - k) * 0.32
        ax.add_patch(FancyBboxPatch((lx, ly - 0.1), 0.35, 0.2, boxstyle="square,pad=0", facecolor=COLORS[kind],
                                    edgecolor="#444444", lw=0.6))
        ax.text(lx + 0.5, ly, text, ha="left", va="center", fontsize=8.5)
    fileio.save_figure(fig, to_file, dpi=dpi)
    return to_file
