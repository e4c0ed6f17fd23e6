"""tinynet.utils.plot_model: the drawn edges are the graph's, boxes never overlap, arrows never cross a box.

:func:`tinynet.utils.plotting.graph_layout` is what ``plot_model`` draws (checked by capturing the figure); each
test model's expected edges are rebuilt here from ``node.inputs`` alone: ``(index of the producer, index of the
call)`` once per input of every call.
"""
import os
import re
import subprocess
import sys

import pytest

import tinynet
from tinynet.layers import (Conv2D, Dense, Flatten, GlobalAveragePooling2D, Input, MaxPool2D, concatenate)
from tinynet.utils import plot_model, plotting
from helpers import readme_model

pytest.importorskip("matplotlib")


# ---------------------------------------------------------------------------------------------- the models


def shared_model():
    """A Conv2D used on two branches and a Dense called twice in a row."""
    x = Input((8, 8, 3))
    conv = Conv2D(3, 3, padding="same", name="shared_conv")
    a = conv(x)
    b = conv(MaxPool2D(3, strides=1, padding="same")(x))
    dense = Dense(4, name="shared_dense")
    y = Dense(4)(Flatten()(concatenate([a, b, a])))       # `a` twice: two edges from one box
    y = dense(dense(y))
    return tinynet.Model(x, y)


def multi_input_model():
    """Two inputs: an image through a conv, a vector joining only at the last layer."""
    image, extra = Input((8, 8, 3), name="image"), Input((5,), name="extra")
    y = GlobalAveragePooling2D()(Conv2D(4, 3)(Conv2D(4, 3)(image)))
    y = Dense(6, activation="relu")(y)
    return tinynet.Model([image, extra], [Dense(2)(concatenate([y, extra])), Dense(1)(extra)])


def googlenet_small():
    from inception import googlenet

    return googlenet(input_shape=(32, 32, 3), num_classes=10, variant="small")


MODELS = {"readme": readme_model, "shared": shared_model, "multi_input": multi_input_model,
          "googlenet_small": googlenet_small}


def graph_edges(model):
    index = {id(node.output): i for i, node in enumerate(model.nodes)}
    return sorted((index[id(t)], j) for j, node in enumerate(model.nodes) for t in node.inputs)


def on_border(point, box, tolerance=1e-9):
    x, y = point
    x0, y0, x1, y1 = box.bounds
    inside = x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance
    return inside and min(abs(x - x0), abs(x - x1), abs(y - y0), abs(y - y1)) <= tolerance


def check_layout(model, layout):
    assert [box.node for box in layout.boxes] == list(range(len(model.nodes)))
    assert sorted(layout.edge_pairs()) == graph_edges(model)                  # the graph's edges, all, only
    for edge in layout.edges:                                                  # each arrow joins its two boxes
        assert on_border(edge.points[0], layout.boxes[edge.source]), edge
        assert on_border(edge.points[-1], layout.boxes[edge.target]), edge
    assert layout.overlapping_boxes() == []
    assert layout.edges_through_boxes() == []
    x0, y0, x1, y1 = layout.extent
    for box in layout.boxes:
        bx0, by0, bx1, by1 = box.bounds
        assert x0 <= bx0 and bx1 <= x1 and y0 <= by0 and by1 <= y1


# ---------------------------------------------------------------------------------------------- the layout
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_drawn_edges_are_the_graph_edges(name, rankdir):
    model = MODELS[name]()
    layout = plotting.graph_layout(model, show_shapes=True, rankdir=rankdir)
    check_layout(model, layout)
    axis = 1 if rankdir == "TB" else 0
    for edge in layout.edges:                          # every arrow runs down (right): ranks follow the graph
        along = [p[axis] for p in edge.points]
        assert along == sorted(along) and along[-1] > along[0]


def test_readme_example_layout():
    model = readme_model()
    layout = plotting.graph_layout(model)
    boxes = {model.nodes[b.node].layer.name: b for b in layout.boxes}
    assert boxes["conv2d"].y == boxes["max_pooling2d"].y > boxes["input_layer"].y   # the fan-out side by side
    assert boxes["concatenate"].y > boxes["conv2d"].y
    assert boxes["dense"].is_output and boxes["dense_1"].is_output and not boxes["conv2d"].is_output
    assert plotting._crossings(*_ordered(model)) == 0


def _ordered(model):
    """The rank layers and successors graph_layout orders (for the crossing count); no dummies on this model."""
    layout = plotting.graph_layout(model)
    ys = sorted({round(b.y, 9) for b in layout.boxes})
    layers = [[b.node for b in sorted(layout.boxes, key=lambda b: b.x) if round(b.y, 9) == y] for y in ys]
    succs = {i: [] for i in range(len(model.nodes))}
    for s, t in layout.edge_pairs():
        succs[s].append(t)
    return layers, succs


def test_barycenter_ordering_removes_crossings():
    layers = [[0, 1, 2], [3, 4, 5]]
    succs = {0: [5], 1: [4], 2: [3], 3: [], 4: [], 5: []}
    preds = {3: [2], 4: [1], 5: [0], 0: [], 1: [], 2: []}
    assert plotting._crossings(layers, succs) == 3
    assert plotting._crossings(plotting._order(layers, preds, succs), succs) == 0


def test_a_shared_layer_gets_a_box_per_call():
    model = shared_model()
    layout = plotting.graph_layout(model)
    titles = [box.lines[0][0] for box in layout.boxes]
    assert titles.count("shared_conv (Conv2D)") == 2 and titles.count("shared_dense (Dense)") == 2
    calls = [line for box in layout.boxes for line, _ in box.lines if line.startswith("call ")]
    assert sorted(calls) == ["call 1 of 2", "call 1 of 2", "call 2 of 2", "call 2 of 2"]
    concat = next(i for i, n in enumerate(model.nodes) if n.layer.name.startswith("concatenate"))
    assert sum(1 for e in layout.edges if e.target == concat) == 3          # `a` twice, `b` once
    ends = [e.points[-1] for e in layout.edges if e.target == concat]
    assert len(set(ends)) == 3                                              # three separate ports


def test_multi_input_model_puts_both_inputs_first():
    model = multi_input_model()
    layout = plotting.graph_layout(model)
    inputs = [b for b in layout.boxes if model.nodes[b.node].layer.name in ("image", "extra")]
    assert len(inputs) == 2 and inputs[0].y == inputs[1].y == min(b.y for b in layout.boxes)


@pytest.mark.parametrize("option, text", [("show_shapes", "Output shape: (None, 32, 32, 16)"),
                                          ("show_dtype", "Output dtype: float32"),
                                          ("show_layer_activations", "Activation: relu"),
                                          ("show_trainable", "Trainable: True")])
def test_box_text_options(option, text):
    model = readme_model()
    plain = plotting.graph_layout(model)
    shown = plotting.graph_layout(model, **{option: True})
    conv = next(i for i, n in enumerate(model.nodes) if n.layer.name == "conv2d")
    assert text not in [t for t, _ in plain.boxes[conv].lines]
    assert text in [t for t, _ in shown.boxes[conv].lines]
    assert shown.boxes[conv].height > plain.boxes[conv].height


def test_box_text_without_names_and_multi_input_shapes():
    model = readme_model()
    layout = plotting.graph_layout(model, show_layer_names=False, show_shapes=True)
    concat = next(b for b in layout.boxes if b.kind == "Concatenate")
    assert [t for t, _ in concat.lines] == ["Concatenate", "Input shapes: (None, 32, 32, 16),", "(None, 32, 32, 3)",
                                           "Output shape: (None, 32, 32, 19)"]


# ------------------------------------------------------------------------------------------ plot_model itself
@pytest.mark.parametrize("name", ["readme", "shared", "multi_input"])
def test_the_saved_file_holds_the_graph_edges(tmp_path, name):
    """Read back from the SVG plot_model wrote: one arrow per graph edge (ids ``edge<k>_<source>_<target>``),
    one box per call, nothing else."""
    model = MODELS[name]()
    svg = (tmp_path / "m.svg")
    plot_model(model, svg, show_shapes=True)
    text = svg.read_text(encoding="utf-8")
    edges = sorted((int(s), int(t)) for s, t in re.findall(r'id="edge\d+_(\d+)_(\d+)"', text))
    boxes = sorted(int(i) for i in re.findall(r'id="box(\d+)"', text))
    assert edges == graph_edges(model) and boxes == list(range(len(model.nodes)))


def test_plot_model_draws_graph_layout(tmp_path, monkeypatch):
    """plot_model draws what graph_layout returns: one arrow per edge, along the layout's points."""
    from matplotlib.patches import FancyArrowPatch

    drawn = []
    original = plotting.draw_layout

    def capture(layout, title=None):
        fig = original(layout, title=title)
        drawn.append((layout, fig))
        return fig

    monkeypatch.setattr(plotting, "draw_layout", capture)
    model = readme_model()
    plot_model(model, str(tmp_path / "m.png"), show_shapes=True)
    (layout, fig), = drawn
    assert sorted(layout.edge_pairs()) == graph_edges(model)
    expected = plotting.graph_layout(model, show_shapes=True)
    assert [e.points for e in layout.edges] == [e.points for e in expected.edges]
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert [a.get_gid() for a in arrows] == [f"edge{k}_{e.source}_{e.target}" for k, e in enumerate(layout.edges)]


@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_plot_model_writes_each_format(tmp_path, ext, magic):
    target = tmp_path / f"model.{ext.upper() if ext == 'pdf' else ext}"
    result = plot_model(readme_model(), target, show_shapes=True, dpi=50)
    assert result == str(target) and isinstance(result, str)
    assert target.read_bytes()[:len(magic)] == magic
    assert sorted(os.listdir(tmp_path)) == [target.name]                 # no temporary file left
    if ext == "png":
        assert result._repr_png_()[:4] == magic and result._repr_svg_() is None
    if ext == "svg":
        assert result._repr_svg_().startswith("<?xml") and result._repr_png_() is None


def test_plot_model_default_file_and_lr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from PIL import Image

    assert plot_model(shared_model()) == "model.png"
    w_tb, h_tb = Image.open(tmp_path / "model.png").size
    plot_model(shared_model(), "lr.png", rankdir="LR")
    w_lr, h_lr = Image.open(tmp_path / "lr.png").size
    assert h_tb > w_tb and w_lr > h_lr


def test_a_failed_drawing_leaves_the_previous_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "model.png"
    target.write_bytes(b"previous")

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_model(readme_model(), target)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.png"]


def test_a_huge_raster_is_drawn_at_a_lower_dpi(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(plotting, "MAX_PIXELS", 1500)
    with pytest.warns(UserWarning, match="dpi"):
        plot_model(googlenet_small(), tmp_path / "g.png", dpi=96)
    assert max(Image.open(tmp_path / "g.png").size) <= 1500


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(to_file="model.jpg"), ValueError, r"\.png, \.svg or \.pdf"),
    (dict(to_file="model"), ValueError, r"\.png, \.svg or \.pdf"),
    (dict(to_file="no/such/folder/model.png"), FileNotFoundError, "does not exist"),
    (dict(to_file=3), TypeError, "to_file"),
    (dict(dpi=0), ValueError, "dpi"),
    (dict(dpi=-96), ValueError, "dpi"),
    (dict(dpi=float("nan")), ValueError, "dpi"),
    (dict(dpi="96"), TypeError, "dpi"),
    (dict(dpi=True), TypeError, "dpi"),
    (dict(rankdir="BT"), ValueError, "rankdir"),
    (dict(rankdir="tb"), ValueError, "rankdir"),
    (dict(show_shapes="yes"), TypeError, "show_shapes"),
    (dict(show_trainable=None), TypeError, "show_trainable"),
])
def test_arguments_are_checked(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        plot_model(readme_model(), **kwargs)
    assert os.listdir(tmp_path) == []


def test_model_and_folder_arguments(tmp_path):
    with pytest.raises(TypeError, match="tinynet Model"):
        plot_model("not a model", tmp_path / "m.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        plot_model(readme_model(), tmp_path / "dir.png")


def test_plot_model_leaves_pyplot_alone(tmp_path):
    """No pyplot import: a notebook's backend and its current figure are left as they were."""
    code = ("import sys; sys.path.insert(0, 'tests'); from test_plot_model import readme_model; "
            "from tinynet.utils import plot_model; "
            f"plot_model(readme_model(), {str(tmp_path / 'm.svg')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_utils_exports_plot_model_lazily():
    import tinynet.utils

    assert tinynet.utils.plot_model is plotting.plot_model and "plot_model" in tinynet.utils.__all__


# --------------------------------------------------------------------------------- GoogLeNet's own diagram
@pytest.mark.parametrize("variant, aux", [("small", True), ("small", False), ("paper", True), ("blog", False)])
def test_googlenet_diagram_edges_and_boxes(variant, aux):
    from inception import googlenet
    from inception.plot import layout

    shape = (32, 32, 3) if variant == "small" else (224, 224, 3)
    model = googlenet(input_shape=shape, num_classes=10, variant=variant, aux=aux)
    drawn = layout(model)
    assert drawn.rankdir == "custom"                          # GoogLeNet's placement, not the fallback
    check_layout(model, drawn)
    assert len(drawn.clusters) == 9                           # one band per Inception block
    captions = [n.text for n in drawn.notes if "auxiliary" in n.text]
    assert len(captions) == (1 if aux else 0)                 # the aux caption only with aux heads
    side_exits = [e for e in drawn.edges if e.color == plotting.OUTPUT_COLOR]
    assert len(side_exits) == (2 if aux else 0)


def test_googlenet_diagram_falls_back_to_the_generic_layout_for_other_models():
    from inception.plot import layout

    model = readme_model()
    drawn = layout(model)
    assert drawn.rankdir == "TB" and not drawn.notes and not drawn.clusters
    check_layout(model, drawn)


def test_googlenet_diagram_falls_back_when_its_placement_does_not_fit():
    """A model with an Inception block but a branch the GoogLeNet placement cannot draw (a second branch
    stacked on the main path would cross boxes): the generic layout, with the same edges."""
    from inception.blocks import inception_block
    from inception.plot import layout

    x = Input((8, 8, 3), name="input")
    y = inception_block(x, 4, 4, 4, 4, 4, 4, name="3a")
    a = Conv2D(4, 1, name="side_a")(y)
    b = Conv2D(4, 1, name="side_b")(y)
    model = tinynet.Model(x, concatenate([a, b], name="joined"))
    drawn = layout(model)
    assert drawn.rankdir == "TB"
    check_layout(model, drawn)
