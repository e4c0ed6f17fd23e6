"""Table 1 of the GoogLeNet paper, rebuilt from a model, beside the figures the paper prints.

:func:`table1_rows` groups the model's layers into the paper's rows (an Inception block or the
"conv 1×1 → 3×3" pair is one row, every other layer its own) and reads each row's channels, output size,
weights and multiply-adds from the layers themselves. :data:`PAPER_TABLE1` holds the paper's printed
params and ops columns, typed in by hand, so :func:`format_table1` can set the two side by side and mark
where they disagree by more than 1 % and more than the printed rounding. The printed conv1 2.7K / 34M and
the params of 4c, 5a, 5b do not follow from the table's own channel counts; by the same rule neither do the
params of 4d (580K printed, 590.5K computed) nor the ops of 5a (54M printed, 51M computed).

Units, as the paper's: params in K = 1024 *weights* (biases not counted), ops in M = 10⁶ multiply-adds of
the convolutions and fully connected layers.

:func:`naive_vs_reduced` builds each Inception block twice on its real input — the naive module of
Figure 2(a) and the module with 1×1 reductions of Figure 2(b) — and reports what the reductions save.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tinynet import Model
from tinynet.layers import Input

from .blocks import inception_block, naive_inception_block

#: The paper's printed Table 1 (params in K of 1024 weights, ops in M multiply-adds), keyed by row.
PAPER_TABLE1 = {
    "conv1": (2.7, 34),
    "conv2": (112, 360),
    "3a": (159, 128),
    "3b": (380, 304),
    "4a": (364, 73),
    "4b": (437, 88),
    "4c": (463, 100),
    "4d": (580, 119),
    "4e": (840, 170),
    "5a": (1072, 54),
    "5b": (1388, 71),
    "linear": (1000, 1),
}

#: Relative difference from which a printed figure is marked as not following from the channels.
MISMATCH = 0.01

_BLOCK = re.compile(r"^(\d[a-z])_")
_AUX = re.compile(r"^(aux\d+)_")
_TYPE_NAMES = {
    "Conv2D": "convolution", "MaxPool2D": "max pool", "AvgPool2D": "avg pool",
    "GlobalAveragePooling2D": "avg pool (global)", "Dense": "linear", "Dropout": "dropout",
    "LocalResponseNormalization": "LRN", "BatchNormalization": "batch norm", "Flatten": "flatten",
    "Concatenate": "concat", "Activation": "activation", "ReLU": "relu", "Softmax": "softmax",
}


@dataclass
class Row:
    """One line of Table 1.

    ``weights`` counts kernels only (the paper's params); ``params`` counts everything (Keras' count);
    ``macs`` are multiply-adds for one example; ``paper`` is ``(params K, ops M)`` as printed, or None.
    """

    key: str
    type: str
    patch: str = ""
    output: str = ""
    depth: int = 0
    channels: dict = field(default_factory=dict)   # '#1x1', '#3x3 reduce', '#3x3', '#5x5 reduce', '#5x5', 'pool proj'
    weights: int = 0
    params: int = 0
    macs: int = 0
    aux: bool = False
    paper: tuple | None = None

    @property
    def weights_k(self):
        return self.weights / 1024

    @property
    def ops_m(self):
        return self.macs / 1e6

    def mismatches(self):
        """``(params differ, ops differ)``: printed vs computed, relative difference above :data:`MISMATCH`."""
        if self.paper is None:
            return False, False
        return (_differs(self.paper[0], self.weights_k), _differs(self.paper[1], self.ops_m))


def _differs(printed, computed):
    """More than :data:`MISMATCH` apart, and more than the printed figure's rounding (half its last digit)."""
    last_digit = 0.1 if printed != int(printed) else 1.0
    return abs(printed - computed) > max(MISMATCH * abs(computed), last_digit / 2)


def group_key(layer_name):
    """Which Table 1 row a layer belongs to: its block ('3a'), aux head ('aux1'), 'conv2', or itself."""
    for pattern in (_BLOCK, _AUX):
        m = pattern.match(layer_name)
        if m:
            return m.group(1)
    if layer_name.startswith("conv2_3x3"):
        return "conv2"
    return layer_name


def _shape_text(shape):
    shape = tuple(shape)
    if len(shape) == 1:
        shape = (1, 1) + shape
    return "×".join(str(d) for d in shape)


def _patch_text(layer, input_shape):
    cfg = layer.get_config()
    size = cfg.get("kernel_size") or cfg.get("pool_size")
    if size is None and type(layer).__name__ == "GlobalAveragePooling2D":
        return f"{input_shape[0]}×{input_shape[1]}/1"
    if size is None:
        return ""
    stride = cfg["strides"]
    s = str(stride[0]) if stride[0] == stride[1] else f"{stride[0]}×{stride[1]}"
    return f"{size[0]}×{size[1]}/{s}"


def _weights(layer):
    return sum(int(w.size) for w, n in zip(layer.weights, layer.weight_names) if n == "kernel")


def table1_rows(model):
    """The model's layers grouped into Table 1 rows, in the order they run.

    Parameters
    ----------
    model : Model
        A GoogLeNet from :func:`inception.googlenet.googlenet` (layer names as it gives them).

    Returns
    -------
    list of Row
        Each row's ``paper`` holds the printed figures only when ``model`` is the paper's network
        (``'googlenet_paper'``) at its 224×224×3 input and 1000 classes; for any other model, size or class count
        the printed figures would not apply and ``paper`` is None (nothing is marked ≠).
    """
    if not isinstance(model, Model):
        raise TypeError(f"table1_rows: model must be a tinynet Model, got {type(model).__name__}")
    compared = is_papers_network(model)
    rows, by_key = [], {}
    for node in model.nodes:
        layer = node.layer
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        key = group_key(layer.name)
        in_shape = node.inputs[0].example_shape
        out_shape = node.output.example_shape
        macs = node.count_macs()
        row = by_key.get(key)
        if row is None:
            row = Row(key=key, type=_TYPE_NAMES.get(kind, kind), patch=_patch_text(layer, in_shape),
                      aux=key.startswith("aux"), paper=PAPER_TABLE1.get(key) if compared else None)
            if _BLOCK.match(layer.name):
                row.type, row.patch = f"inception ({key})", ""
            elif row.aux:
                row.type, row.patch = f"aux classifier ({key})", ""
            elif key == "conv2":
                row.patch = "3×3/1"
            elif kind == "Dropout":
                row.type = f"dropout ({layer.rate:.0%})"
            elif kind == "Dense" and layer.activation == "softmax":
                row.type = "linear + softmax"
            by_key[key] = row
            rows.append(row)
        row.output = _shape_text(out_shape)
        row.weights += _weights(layer)
        row.params += layer.count_params()
        row.macs += macs
        _record_channels(row, layer)
    for row in rows:
        row.depth = _depth(row, model)
    if not compared:
        return rows
    # the paper's "linear" row is the classifier
    for row in rows:
        if row.type.startswith("linear") and not row.aux:
            row.paper = PAPER_TABLE1["linear"]
    if rows and rows[0].type == "convolution":
        rows[0].paper = PAPER_TABLE1["conv1"]
    return rows


def is_papers_network(model):
    """Whether the paper's printed figures apply: the paper's network at 224×224×3 and 1000 classes."""
    return (model.name == "googlenet_paper" and len(model.inputs) == 1
            and tuple(model.inputs[0].example_shape) == (224, 224, 3)
            and tuple(model.outputs[-1].example_shape) == (1000,))


_CHANNEL_COLUMNS = {"1x1": "#1x1", "3x3_reduce": "#3x3 reduce", "3x3": "#3x3", "5x5_reduce": "#5x5 reduce",
                    "5x5": "#5x5", "pool_proj": "pool proj"}


def _record_channels(row, layer):
    if type(layer).__name__ != "Conv2D":
        return
    suffix = layer.name[len(row.key) + 1:]
    if row.key == "conv2":
        suffix = {"reduce": "3x3_reduce", "": "3x3"}.get(layer.name[len("conv2_3x3"):].lstrip("_"), "")
    if suffix in _CHANNEL_COLUMNS:
        row.channels[_CHANNEL_COLUMNS[suffix]] = layer.filters


def _depth(row, model):
    """Layers with weights (conv, dense) on the longest path through the row, as the paper's depth column."""
    kinds = [type(n.layer).__name__ for n in model.nodes if group_key(n.layer.name) == row.key]
    learned = sum(k in ("Conv2D", "Dense") for k in kinds)
    if row.type.startswith("inception"):
        return 2
    return learned


@dataclass
class Totals:
    params: int
    weights: int
    macs: int


def totals(rows, aux=True):
    """Sum of params (all), weights (kernels) and multiply-adds over the rows, with or without aux heads."""
    chosen = [r for r in rows if aux or not r.aux]
    return Totals(sum(r.params for r in chosen), sum(r.weights for r in chosen), sum(r.macs for r in chosen))


def _num(value, unit):
    if unit == "K":
        return f"{value:.1f}K" if value < 10 else f"{value:.0f}K"
    return f"{value:.0f}M" if value >= 10 else f"{value:.1f}M"


def format_table1(rows):
    """Text table: the paper's columns, then computed params/ops each beside the printed figure.

    A ``≠`` after a printed figure marks a disagreement above 1 %.
    """
    cols = ["#1x1", "#3x3 reduce", "#3x3", "#5x5 reduce", "#5x5", "pool proj"]
    head = (f"{'type':<26}{'patch/stride':>13}{'output size':>15}{'depth':>6}"
            + "".join(f"{c:>9}" for c in ["#1×1", "#3×3red", "#3×3", "#5×5red", "#5×5", "poolproj"])
            + f"{'params':>10}{'paper':>10}{'ops':>9}{'paper':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        p_diff, o_diff = r.mismatches()
        paper_p = (_num(r.paper[0], "K") + ("≠" if p_diff else " ")) if r.paper else ""
        paper_o = (_num(r.paper[1], "M") + ("≠" if o_diff else " ")) if r.paper else ""
        params = _num(r.weights_k, "K") if r.weights else ""
        ops = _num(r.ops_m, "M") if r.macs else ""
        lines.append(f"{r.type:<26}{r.patch:>13}{r.output:>15}{r.depth:>6}"
                     + "".join(f"{r.channels.get(c, ''):>9}" for c in cols)
                     + f"{params:>10}{paper_p:>10}{ops:>9}{paper_o:>9}")
    lines.append("-" * len(head))
    for label, aux in (("without aux heads", False), ("with aux heads", True)):
        if not aux or any(r.aux for r in rows):
            t = totals(rows, aux)
            lines.append(f"total {label:<18}: {t.params:>12,} parameters ({t.weights:,} weights + "
                         f"{t.params - t.weights:,} biases/BN), {t.macs:>14,} multiply-adds")
    printed = [r for r in rows if r.paper]
    if printed:  # only the paper's own network is compared with the printed table
        lines.append(f"paper's printed sums: {sum(r.paper[0] for r in printed):,.1f}K weights, "
                     f"{sum(r.paper[1] for r in printed):,}M multiply-adds (rows above)")
        types = [r.type for r in rows]  # two rows of one type ('convolution': conv1, conv2): named by their patch
        marked = [f"{r.type}{f' {r.patch}' if types.count(r.type) > 1 else ''} {what}" for r in rows
                  for what, bad in zip(("params", "ops"), r.mismatches()) if bad]
        lines.append("≠: printed figure differs from the one computed from the table's channels by more than "
                     f"{MISMATCH:.0%}: " + (", ".join(marked) if marked else "none"))
    lines.append("units: params in K = 1024 weights (biases not counted, as the paper), "
                 "ops in M = 10^6 multiply-adds (conv + linear)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- naive vs reduced
@dataclass
class BlockComparison:
    name: str
    input_shape: tuple
    naive_params: int
    naive_macs: int
    reduced_params: int
    reduced_macs: int
    naive_depth: int     # output channels of the naive module (the pooling branch keeps all its input)
    reduced_depth: int

    @property
    def params_saved(self):
        return self.naive_params - self.reduced_params

    @property
    def macs_saved(self):
        return self.naive_macs - self.reduced_macs


def naive_vs_reduced(model):
    """For each Inception block of ``model``: the naive module (Fig. 2a) vs the reduced one (Fig. 2b).

    Both are built on the block's actual input shape with the block's #1×1, #3×3, #5×5 (and, for the reduced
    one, its reductions and pool projection); parameters and multiply-adds are counted by tinynet.
    """
    result = []
    for row in table1_rows(model):
        if not row.type.startswith("inception"):
            continue
        first = model.get_layer(f"{row.key}_1x1")
        node = next(n for n in model.nodes if n.layer is first)
        shape = node.inputs[0].example_shape
        c = row.channels
        x = Input(shape)
        naive = Model(x, naive_inception_block(x, c["#1x1"], c["#3x3"], c["#5x5"]))
        x = Input(shape)
        reduced = Model(x, inception_block(x, c["#1x1"], c["#3x3 reduce"], c["#3x3"], c["#5x5 reduce"],
                                           c["#5x5"], c["pool proj"]))
        result.append(BlockComparison(row.key, shape, naive.count_params(), naive.count_macs(),
                                      reduced.count_params(), reduced.count_macs(),
                                      naive.outputs[0].example_shape[-1], reduced.outputs[0].example_shape[-1]))
    return result


def format_naive_vs_reduced(comparisons):
    """Text table of :func:`naive_vs_reduced`, with totals.

    Each number column is as wide as its widest entry (the totals included) plus two spaces, and at least its
    heading's width: at a large input the multiply-adds reach eleven digits and more, and fixed widths would
    run two numbers together.
    """
    n_p, r_p = sum(c.naive_params for c in comparisons), sum(c.reduced_params for c in comparisons)
    n_m, r_m = sum(c.naive_macs for c in comparisons), sum(c.reduced_macs for c in comparisons)

    def width(heading, values, least):
        return max([least, len(heading) + 2] + [len(f"{v:,}") + 2 for v in values])

    w_np = width("naive params", [n_p] + [c.naive_params for c in comparisons], 14)
    w_rp = width("reduced", [r_p] + [c.reduced_params for c in comparisons], 12)
    w_nm = width("naive mult-adds", [n_m] + [c.naive_macs for c in comparisons], 17)
    w_rm = width("reduced", [r_m] + [c.reduced_macs for c in comparisons], 14)
    w_in = max([14] + [len(_shape_text(c.input_shape)) + 2 for c in comparisons])
    head = (f"{'block':<6}{'input':>{w_in}}{'naive params':>{w_np}}{'reduced':>{w_rp}}{'saved':>8}"
            f"{'naive mult-adds':>{w_nm}}{'reduced':>{w_rm}}{'saved':>8}{'out depth naive/reduced':>25}")
    lines = [head, "-" * len(head)]
    for c in comparisons:
        lines.append(f"{c.name:<6}{_shape_text(c.input_shape):>{w_in}}{c.naive_params:>{w_np},}"
                     f"{c.reduced_params:>{w_rp},}{c.params_saved / c.naive_params:>8.0%}{c.naive_macs:>{w_nm},}"
                     f"{c.reduced_macs:>{w_rm},}{c.macs_saved / c.naive_macs:>8.0%}"
                     f"{f'{c.naive_depth}/{c.reduced_depth}':>25}")
    if comparisons:
        lines.append("-" * len(head))
        lines.append(f"{'all':<6}{'':>{w_in}}{n_p:>{w_np},}{r_p:>{w_rp},}{1 - r_p / n_p:>8.0%}{n_m:>{w_nm},}"
                     f"{r_m:>{w_rm},}{1 - r_m / n_m:>8.0%}")
    lines.append("each block built on the input it gets in this network; the naive module's pooling branch "
                 "passes all input channels through, so its output is deeper")
    return "\n".join(lines)
