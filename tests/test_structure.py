"""The shape of the code: no module reads another's private attributes, no import cycles, one helper per idiom.

These tests read the source with :mod:`ast` (nothing is imported or run), so they are cheap and run everywhere.
"""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tinynet", "inception")


def _sources(package):
    return sorted((ROOT / package).rglob("*.py"))


def _rel(path):
    return path.relative_to(ROOT).as_posix()


# ------------------------------------------------------------------------------- private attributes
#: ``(file, attribute)`` pairs allowed to read ``X._name`` where X is not self/cls, each with its reason.
#: Keep this list short: the fix is almost always a public method or property on the owner.
PRIVATE_ACCESS_EXCEPTIONS = {
    # Keras 3 has no public accessor for the layer call that made a tensor, nor for a layer's inbound nodes;
    # the bridge reads them in two one-line helpers (_keras_history, _inbound_node) and nowhere else.
    ("tinynet/interop/keras.py", "_keras_history"): "Keras API gap: KerasTensor._keras_history",
    ("tinynet/interop/keras.py", "_inbound_nodes"): "Keras API gap: Layer._inbound_nodes",
    # window_geometry is the window layers' shared shape helper inside tinynet/layers; it raises through the
    # Layer base class's protected error helpers, which are the layers package's own (subclass) API.
    ("tinynet/layers/conv_utils.py", "_require_rank"): "layers-package protected helper of Layer",
    ("tinynet/layers/conv_utils.py", "_shape_error"): "layers-package protected helper of Layer",
}


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_own(node):
    """``self``, ``cls``, ``super()``, ``type(self)``: the object's own (protected) attributes."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "super":
            return True
        if node.func.id == "type" and len(node.args) == 1:
            return _is_own(node.args[0])
    return False


def _module_private_names(tree):
    """Private attribute names this module defines itself: methods and class attributes of its classes,
    and ``self._x = ...`` assignments. Reading them on another object of the module's own classes is the
    module's business."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(item.name):
                    names.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names.update(t.id for t in targets if isinstance(t, ast.Name) and _is_private(t.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_own(node.value) \
                and _is_private(node.attr):
            names.add(node.attr)
    return names


def private_accesses(path):
    """``(line, 'X._name')`` for every read of another object's private attribute in ``path``.

    ``X`` is anything but ``self`` / ``cls`` / ``super()`` / ``type(self)``, and ``_name`` is not defined by the
    module itself (see :func:`_module_private_names`). Dunder names are public.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = _module_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and not _is_own(node.value) \
                and node.attr not in own:
            found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
    return sorted(found)


def _all_private_accesses():
    return {(_rel(path), line, text) for package in PACKAGES for path in _sources(package)
            for line, text in private_accesses(path)}


def test_no_module_reads_another_modules_private_attributes():
    offending = sorted((path, line, text) for path, line, text in _all_private_accesses()
                       if (path, text.rsplit(".", 1)[1]) not in PRIVATE_ACCESS_EXCEPTIONS)
    assert not offending, ("private attributes read across modules (add a public method or property to the "
                           "owner, e.g. Model.run / clear_tape / add_device_listener / single_input):\n"
                           + "\n".join(f"  {path}:{line}: {text}" for path, line, text in offending))


def test_every_listed_exception_is_still_needed():
    used = {(path, text.rsplit(".", 1)[1]) for path, _, text in _all_private_accesses()}
    stale = sorted(set(PRIVATE_ACCESS_EXCEPTIONS) - used)
    assert not stale, f"remove these from PRIVATE_ACCESS_EXCEPTIONS, nothing reads them any more: {stale}"


def test_the_scan_sees_what_it_must(tmp_path):
    """The scanner itself: cross-object reads are found, own and module-defined names are not."""
    source = (
        "class A:\n"
        "    _kind = 1\n"
        "    def __init__(self):\n"
        "        self._x = 0\n"
        "    def _helper(self, other):\n"
        "        return other._x + other._kind + self._y + super()._z + type(self)._w + cls._v\n"
        "def f(model, keras_tensor):\n"
        "    model._tape = None\n"
        "    return model._run(1), keras_tensor._keras_history, model.__class__, A()._helper(None)\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    assert private_accesses(path) == [(8, "model._tape"), (9, "keras_tensor._keras_history"), (9, "model._run")]


# ------------------------------------------------------------------------------- import cycles
def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_modules(path, modules):
    """The project modules ``path`` imports, anywhere in it (function-local imports included).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``. Importing a
    module also runs its package's ``__init__``; that implicit edge is left out (every module would otherwise
    "import" its own package), as import linters do.
    """
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # the longest project module named by the dotted path
                for k in range(len(parts), 0, -1):
                    if ".".join(parts[:k]) in modules:
                        edges.add(".".join(parts[:k]))
                        break
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    edges.add(f"{target}.{alias.name}")
                elif target in modules:
                    edges.add(target)
    edges.discard(name)
    return edges


def import_graph():
    paths = [p for package in PACKAGES for p in _sources(package)]
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imported_modules(p, modules) for p in paths}


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each sorted; sorted list."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(result)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    graph = import_graph()
    cycles = [c for c in find_cycles(graph) if any(m.split(".")[0] == package for m in c)]
    assert not cycles, "import cycles (function-local imports included):\n" + "\n".join(
        "  " + " <-> ".join(c) + "\n    " + "; ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c)
        for c in cycles)


def test_the_import_graph_sees_local_and_relative_imports():
    graph = import_graph()
    assert "tinynet.saving" in graph["tinynet.model"]        # a function-local `from . import saving`
    assert "tinynet.layers.base" in graph["tinynet.model"]   # `from .layers.base import ...`
    assert "tinynet.backend" in graph["tinynet.model"]       # `from . import backend`
    assert "tinynet" in graph["inception.table1"]            # `from tinynet import Model`
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# ------------------------------------------------------------------------------- one helper per idiom
IDIOM_FILES = ["tinynet/model.py", "tinynet/summary.py", "tinynet/interop/keras.py", "inception/table1.py",
               "tinynet/gradcheck.py"]


@pytest.mark.parametrize("path", IDIOM_FILES)
def test_graph_walkers_use_the_node_helpers(path):
    """``args if layer.num_inputs is None else args[0]`` and the multiply-add count live in ``Node`` only."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    num_inputs = [node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and node.attr == "num_inputs"]
    layer_macs = [node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "count_macs" and node.args]
    assert not num_inputs, f"{path}: reads layer.num_inputs at lines {num_inputs}; use Node.layer_args / " \
                           "Node.args_for / Node.unpack_input_grads"
    assert not layer_macs, f"{path}: calls layer.count_macs(shapes) at lines {layer_macs}; use Node.count_macs()"


def test_node_helpers():
    from tinynet import Model
    from tinynet.layers import Concatenate, Conv2D, Dense, Flatten, Input
    from tinynet.layers.base import Node

    x = Input((5, 4, 3))
    a = Conv2D(2, (3, 2), padding="same")(x)
    b = Conv2D(4, 1)(x)
    c = Concatenate()([a, b])
    y = Dense(7)(Flatten()(c))
    model = Model(x, y)
    input_node, conv_a, conv_b, concat, flatten, dense = model.nodes
    assert input_node.inputs == [] and input_node.count_macs() == 0 and input_node.input_shapes is None
    assert conv_a.layer_args(["only"]) == "only" and conv_a.input_shapes == (5, 4, 3)
    assert concat.layer_args(["p", "q"]) == ["p", "q"] and concat.input_shapes == [(5, 4, 2), (5, 4, 4)]
    assert Node.args_for(concat.layer, ("p", "q")) == ["p", "q"] and Node.args_for(dense.layer, ["z"]) == "z"
    assert conv_a.unpack_input_grads("g") == ["g"] and concat.unpack_input_grads(("g1", "g2")) == ["g1", "g2"]
    assert conv_a.count_macs() == 5 * 4 * 2 * 3 * 2 * 3 and conv_b.count_macs() == 5 * 4 * 4 * 3
    assert dense.count_macs() == 5 * 4 * 6 * 7 and concat.count_macs() == flatten.count_macs() == 0
    assert model.count_macs() == sum(node.count_macs() for node in model.nodes)


def test_gradcheck_rows_are_named():
    from tinynet import gradcheck
    from tinynet.layers import Dense

    report = gradcheck.check_layer(Dense(2, dtype="float64"), (2, 3))
    row = report.rows[0]
    assert isinstance(row, gradcheck.GradcheckRow) and row.name.startswith("input")
    assert row == (row.name, row.shape, row.method, row.rel_error, row.abs_error)   # still a tuple, same order
    assert [r.name.split("/")[-1] for r in report.rows[1:]] == ["kernel", "bias"]
    assert row.shape == (2, 3) and row.method == "elements" and np.isfinite(row.rel_error)


def test_the_max_pool_nan_gradient_is_documented_as_tinynets_own_convention():
    """The output NaN matches PyTorch and Keras, but PyTorch routes the gradient to the window's last NaN (Keras
    and JAX differently again): the docstrings used to credit the first-NaN rule to PyTorch and Keras."""
    def docstring(path, function=None):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        if function is not None:
            tree = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function)
        return " ".join(ast.get_docstring(tree).split())

    for text in (docstring("tinynet/layers/pooling.py"), docstring("tinynet/kernels/numpy_kernels.py",
                                                                    "maxpool_forward")):
        assert "outputs NaN, as in PyTorch and Keras" in text
        assert "first NaN" in text and "tinynet's own convention (PyTorch routes it to the last NaN" in text
        assert "propagates, as in PyTorch and Keras" not in text
