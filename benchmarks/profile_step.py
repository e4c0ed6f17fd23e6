"""Where one GoogLeNet training step spends its time: layer types, kernels, GEMM, copies, allocation.

Usage (from the repository root)::

    python benchmarks/profile_step.py                           # paper variant, 224x224, batch 8, current kernels
    python benchmarks/profile_step.py --kernels numpy --steps 5
    python benchmarks/profile_step.py --kernels numba --batch 4 --out /tmp/profiles
    python benchmarks/profile_step.py --variant small --image-size 32 --batch 64
    python benchmarks/profile_step.py --from-json benchmarks/results/profile_numba_<date>.json --min-ms 1

The step is the one `bench_kernels.py` times: ``googlenet(variant)`` with both aux heads, float32, a random
batch, ``Model.forward``, ``losses.weighted_loss`` (aux weight 0.3), ``Model.backward``, SGD momentum 0.9.

How it measures
---------------
* **Regions.** For the profiled steps the script wraps, with ``time.perf_counter``: every public dispatch
  function of :mod:`tinynet.kernels` (im2col, col2im, max/avg pool forward/backward, LRN forward/backward,
  ReLU backward), ``Layer.forward`` / ``Layer.backward`` (the argument checks) and each layer class's
  ``_forward`` / ``_backward`` (the math), the layers' activation functions (ReLU forward is an in-place
  ``np.maximum``; softmax), ``Model._accumulate`` (the gradient adds where a tensor fans out), the loss and
  the optimizer step. Regions nest; each records its *exclusive* time (its own time minus the regions inside
  it), so the rows add up to the step and nothing is counted twice. Every row is also attributed to the
  layer call it ran in (layer type and pass), which gives the per-layer-type table (inclusive there: the sum
  of the rows inside the layer).
* **GEMM.** The layers multiply with the ``@`` operator on ndarrays, which cannot be wrapped from outside
  (NumPy's operator slots are C; ``np.matmul`` is not looked up through a module attribute). Subtracting the
  kernels from a layer's time would lump the bias add, the bias-gradient sum and the reshapes into "GEMM".
  So the script takes the *live* source of each layer method that multiplies (``inspect.getsource``),
  replaces every ``a @ b`` (and any ``*.matmul(...)``/``*.dot(...)`` call) by a call that times exactly that
  product, and compiles it in the layer module's own namespace: the code that runs is the library's code
  with only the products timed, so it follows the library when it changes. Each product is a row of its own
  (``Conv2D._backward: cache.cols2d.T @ gz`` is the weight gradient) with its GFLOP/s.
* **Minima.** After ``--warmup`` untimed steps (Numba's compilation and the allocator's growth are
  excluded), ``--steps`` profiled steps alternate with as many plain (uninstrumented) steps. Each row is the
  *minimum* of its exclusive time over the profiled steps (another process only ever makes a region slower);
  the "profiled step" is the sum of those minima, and the shares are of that sum. The plain steps' minimum
  is reported beside it: the difference is the profiler's own cost.
* **Allocation.** Minor page faults (``getrusage``) are counted per region like the time: each maps fresh
  memory from the kernel (a 4 KiB page, or a 2 MiB huge page where NumPy's ``madvise`` gets one; memory
  that malloc's heap already holds costs no fault); the huge ones are counted per step from the kernel's
  ``thp_fault_alloc`` (machine-wide). Their time is estimated with the cost of each kind of fault measured
  on this machine (filling a new 64 MiB array minus filling it again, huge pages off and on). That time is
  *inside* the rows above (whatever first writes the page pays it), so the allocation row is an "of
  which", not added to the total. "kept MiB" is what each layer's forward adds
  to the tape (new arrays it returns or caches for backward, each buffer counted once).
* **Memory.** Peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) over the warm-up steps (3: the
  first train steps of the freshly built model), above the RSS before them, and the ``tracemalloc`` peak of 3
  more steps at the end (it traces NumPy's buffers; the Numba kernels allocate their outputs with NumPy
  too, so only the temporaries inside jitted code escape it).

Output: the tables on stdout and ``<out>/profile_<kernels>_<YYYYmmdd-HHMMSS>.json`` (default
``benchmarks/results/``), which ``plot_results.py`` reads.
"""
from __future__ import annotations

import ast
import collections
import contextlib
import datetime
import inspect
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import textwrap
import time
import tracemalloc

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import tinynet  # noqa: E402
from tinynet import backend, fileio, kernels, losses, optim  # noqa: E402
from tinynet.layers import AvgPool2D, Conv2D, MaxPool2D  # noqa: E402
from tinynet.layers.base import Layer, ShapeError  # noqa: E402
from tinynet.model import Model  # noqa: E402

from inception.variants import VARIANTS, get_variant  # noqa: E402

from _args import (OneLineParser, check, non_negative_float, output_folder, positive_int,  # noqa: E402
                   read_json)

try:                                   # the fused 1×1 groups, where this tree has them
    from tinynet import fusion  # noqa: E402
except ImportError:
    fusion = None
try:                                   # Winograd's 3×3 convolutions, where this tree has them
    from tinynet.layers import conv_winograd  # noqa: E402
except ImportError:
    conv_winograd = None
try:                                   # large im2col products in slabs, where this tree has them
    from tinynet.layers import conv_slabs  # noqa: E402
except ImportError:
    conv_slabs = None

#: the train step's backward as fit() runs it: no gradient for the images, the tape dropped as it goes
#: (where this tree's Model.backward has these arguments)
BACKWARD_ARGS = ({"input_grads": False, "retain_tape": False}
                 if "retain_tape" in inspect.signature(Model.backward).parameters else {})

PAGE = resource.getpagesize()
WARMUP = 3               # plain steps before any timing, as bench_kernels.NETWORK_WARMUP
MAX_IMAGE_SIZE = 2048    # as inception's --input-size
MEMORY_STEPS = 3         # plain steps under tracemalloc
OUTSIDE = ("(outside layers)", "")

#: the groups of the stacked bar and of the summary, in the order they are drawn
GROUPS = ("GEMM", "im2col/col2im", "Winograd transforms", "pooling", "LRN", "ReLU", "concat copies",
          "other elementwise", "loss + optimizer", "framework")


# ------------------------------------------------------------------------------------------------ profiler
def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Profiler:
    """Nested timed regions with exclusive time, minor page faults and flops per (owner, key).

    ``owner`` is the layer call a region runs in, ``(layer type, pass)``; a region that is not a layer call
    inherits its parent's owner. ``key`` names what ran (``gemm:...``, ``kernel:im2col``, ``math``,
    ``checks``, ...).
    """

    def __init__(self):
        self.on = False
        self.stack = []
        self.entries = collections.defaultdict(lambda: [0.0, 0, 0, 0])   # excl s, calls, faults, flops
        self.kept = collections.defaultdict(int)                           # layer type -> bytes kept
        self.seen_buffers = set()

    def reset(self):
        self.stack.clear()
        self.entries.clear()
        self.kept.clear()
        self.seen_buffers.clear()

    def enter(self, key, owner=None):
        if owner is None:
            owner = self.stack[-1][1] if self.stack else OUTSIDE
        # [key, owner, start, time of children, faults at start, faults of children, flops]
        self.stack.append([key, owner, time.perf_counter(), 0.0, minor_faults(), 0, 0])

    def exit(self, flops=0):
        now, faults = time.perf_counter(), minor_faults()
        key, owner, start, child_t, f0, child_f, _ = self.stack.pop()
        elapsed, faulted = now - start, faults - f0
        entry = self.entries[(owner, key)]
        entry[0] += elapsed - child_t
        entry[1] += 1
        entry[2] += faulted - child_f
        entry[3] += flops
        if self.stack:
            self.stack[-1][3] += elapsed
            self.stack[-1][5] += faulted

    @contextlib.contextmanager
    def region(self, key, owner=None):
        if not self.on:
            yield
            return
        self.enter(key, owner)
        try:
            yield
        finally:
            self.exit()

    def keep(self, layer_type, arrays):
        """Count the buffers of ``arrays`` not seen before in this step as kept by ``layer_type``'s forward."""
        for a in arrays:
            if not hasattr(a, "nbytes") or not hasattr(a, "base"):
                continue
            root = a
            while isinstance(getattr(root, "base", None), np.ndarray):
                root = root.base
            if id(root) not in self.seen_buffers:
                self.seen_buffers.add(id(root))
                self.kept[layer_type] += root.nbytes


def layer_type(layer):
    """``Conv2D 3x3``, ``Conv2D 7x7/2``, ``MaxPool2D 3x3/2``, ``LRN``, ``Dense``, ... (the table's rows)."""
    name = type(layer).__name__.replace("LocalResponseNormalization", "LRN")
    name = name.replace("BatchNormalization", "BN").replace("GlobalAveragePooling2D", "GlobalAvgPool")
    if isinstance(layer, (Conv2D, MaxPool2D, AvgPool2D)):
        (kh, kw) = layer.kernel_size if isinstance(layer, Conv2D) else layer.pool_size
        sh, sw = layer.strides
        name += f" {kh}x{kw}" + (f"/{sh}" if (sh, sw) != (1, 1) else "")
    return name


# ------------------------------------------------------------------------------------------ instrumentation
class _Patches:
    """setattr that remembers how to undo itself (an inherited class attribute is deleted again)."""

    def __init__(self):
        self.undo = []

    def set(self, obj, name, value):
        own = name in vars(obj) if isinstance(obj, type) else True
        self.undo.append((obj, name, getattr(obj, name) if not isinstance(obj, type) else vars(obj).get(name),
                          own))
        setattr(obj, name, value)

    def restore(self):
        for obj, name, old, own in reversed(self.undo):
            if own:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        self.undo.clear()


class _GemmTimer(ast.NodeTransformer):
    """Turn ``a @ b`` into ``_profile_gemm__(label, operator.matmul, a, b)`` (and ``x.matmul(a, b)`` /
    ``x.dot(a, b)`` into ``_profile_gemm__(label, x.matmul, a, b)``)."""

    def __init__(self, where):
        self.where = where
        self.labels = []

    def _call(self, node, fn, args, keywords=()):
        label = f"{self.where}: {ast.unparse(node)}"
        self.labels.append(label)
        return ast.copy_location(ast.Call(func=ast.Name("_profile_gemm__", ast.Load()),
                                          args=[ast.Constant(label), fn, *args], keywords=list(keywords)), node)

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.MatMult):
            fn = ast.Attribute(ast.Name("_profile_operator__", ast.Load()), "matmul", ast.Load())
            return self._call(node, fn, [node.left, node.right])
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("matmul", "dot") and len(node.args) == 2:
            return self._call(node, node.func, node.args, node.keywords)
        return node


def gemm_timed(func, where, timer):
    """``func`` recompiled from its source with every matrix product timed by ``timer``; ``(func, labels)``.

    Returns ``(func, [])`` unchanged when it has no product, or cannot be recompiled (a closure).
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return func, []
    tree = ast.parse(source)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef) or func.__code__.co_freevars:
        return func, []
    fdef.decorator_list = []
    transformer = _GemmTimer(where)
    tree = transformer.visit(tree)
    if not transformer.labels:
        return func, []
    ast.increment_lineno(tree, func.__code__.co_firstlineno - 1)
    ast.fix_missing_locations(tree)
    namespace = dict(func.__globals__)
    namespace.update(_profile_gemm__=timer, _profile_operator__=__import__("operator"))
    exec(compile(tree, inspect.getsourcefile(func) or "<profile>", "exec"), namespace)
    new = namespace[fdef.name]
    new.__qualname__ = func.__qualname__
    return new, transformer.labels


@contextlib.contextmanager
def instrumented(model, prof):
    """Install the timing wrappers (see the module docstring) for ``model``'s layers; undo them on exit."""
    patches = _Patches()
    gemm_labels = []

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            if not prof.on:
                return fn(*args, **kwargs)
            prof.enter(key)
            try:
                return fn(*args, **kwargs)
            finally:
                prof.exit()
        wrapper.__wrapped__ = fn
        return wrapper

    def owned(fn, owner):
        """``fn`` as a layer call of its own (the fused groups): its rows go to ``owner``, (type, pass)."""
        def wrapper(*args, **kwargs):
            if not prof.on:
                return fn(*args, **kwargs)
            prof.enter("checks", owner=owner)  # no checks of its own: this row counts the calls
            prof.enter("math")
            try:
                result = fn(*args, **kwargs)
            finally:
                prof.exit()
                prof.exit()
            if owner[1] == "forward":
                outputs, cache = result
                prof.keep(owner[0], [*outputs, *cache])
            return result
        wrapper.__wrapped__ = fn
        return wrapper

    def gemm(label, fn, a, b, **kwargs):
        if not prof.on:
            return fn(a, b, **kwargs)
        prof.enter("gemm:" + label)
        out = None
        try:
            out = fn(a, b, **kwargs)
            return out
        finally:
            k = a.shape[-1] if getattr(a, "ndim", 0) else 1
            prof.exit(flops=2 * int(getattr(out, "size", 0)) * int(k))

    try:
        for name in kernels.KERNEL_NAMES + getattr(kernels, "CPU_KERNEL_NAMES", ()):
            patches.set(kernels, name, timed(getattr(kernels, name), f"kernel:{name}"))
        if conv_slabs is not None:  # the products of large convolutions run slab by slab
            patches.set(conv_slabs, "_product",
                        lambda a, b, out=None, _fn=conv_slabs._product: gemm("slab products (conv_slabs)", _fn, a, b,
                                                                            out=out))
        if conv_winograd is not None:  # the Winograd path's products (36 per call, and the kernel's transform)
            for name, label in (("batched_matmul", "Winograd: 36 tile products"),
                                ("small_matmul", "Winograd: the kernel's transform")):
                fn = getattr(conv_winograd, name)
                patches.set(conv_winograd, name,
                            lambda a, b, _fn=fn, _label=label: gemm(_label, _fn, a, b))

        # public forward/backward: the argument checks; owner = this layer call
        classes = {type(layer) for layer in model.layers}
        for cls in classes:
            for method in ("forward", "backward"):
                if getattr(cls, method) is not getattr(Layer, method):
                    raise RuntimeError(f"{cls.__name__} overrides Layer.{method}; the profiler wraps Layer's")
        base_forward, base_backward = Layer.forward, Layer.backward

        def forward(self, inputs, training=False):
            if not prof.on:
                return base_forward(self, inputs, training)
            kind = layer_type(self)
            prof.enter("checks", owner=(kind, "forward"))
            try:
                y, cache = base_forward(self, inputs, training)
            finally:
                prof.exit()
            data = cache.data
            fields = list(data) if isinstance(data, tuple) else [data]
            prof.keep(kind, [y, *fields])
            return y, cache

        def backward(self, grad_output, cache, input_grad=True):
            if not prof.on:
                return base_backward(self, grad_output, cache, input_grad)
            prof.enter("checks", owner=(layer_type(self), "backward"))
            try:
                return base_backward(self, grad_output, cache, input_grad)
            finally:
                prof.exit()

        patches.set(Layer, "forward", forward)
        patches.set(Layer, "backward", backward)

        # the math of each class (once per defining class), with its matrix products timed
        done = set()
        for cls in classes:
            for method in ("_forward", "_backward"):
                owner_cls = next(c for c in cls.__mro__ if method in vars(c))
                if (owner_cls, method) in done:
                    continue
                done.add((owner_cls, method))
                func, labels = gemm_timed(vars(owner_cls)[method], f"{owner_cls.__name__}.{method}", gemm)
                gemm_labels += labels
                patches.set(owner_cls, method, timed(func, "math"))

        # fused groups of sibling 1×1 convolutions (tinynet.fusion): their own rows, products timed
        if fusion is not None:
            for method in ("forward", "backward"):
                func, labels = gemm_timed(vars(fusion.PointwiseGroup)[method], f"PointwiseGroup.{method}", gemm)
                gemm_labels += labels
                patches.set(fusion.PointwiseGroup, method, owned(func, ("Conv2D 1x1 fused", method)))

        # activation functions are per instance (Conv2D and Dense keep _act/_act_grad)
        for layer in model.layers:
            act = getattr(layer, "activation", None)
            if isinstance(act, str) and act != "linear" and hasattr(layer, "_act"):
                patches.set(layer, "_act", timed(layer._act, f"act:{act} forward"))
                patches.set(layer, "_act_grad", timed(layer._act_grad, f"act:{act} backward"))

        if isinstance(vars(Model).get("_accumulate"), staticmethod):
            patches.set(Model, "_accumulate", staticmethod(timed(Model._accumulate, "fan-out adds")))
        yield gemm_labels
    finally:
        patches.restore()


# ---------------------------------------------------------------------------------------- classification
def describe_row(owner, key):
    """``(group, row name)`` of one profiler entry."""
    kind, pass_ = owner
    base = kind.split(" ")[0]
    if key.startswith("gemm:"):
        return "GEMM", "GEMM " + key[5:]
    if key.startswith("kernel:"):
        name = key[7:]
        group = ("im2col/col2im" if name in ("im2col", "col2im") else "pooling" if "pool" in name else
                 "Winograd transforms" if name.startswith("winograd") else
                 "LRN" if name.startswith("lrn") else "ReLU" if "relu" in name else
                 "loss + optimizer" if name.endswith("_update") else "other elementwise")
        return group, name
    if key.startswith("act:"):
        act = key[4:]
        return ("ReLU" if act.startswith("relu") else "other elementwise"), act + " (activation)"
    if key == "math":
        if base == "Concatenate":
            return "concat copies", f"Concatenate {pass_} (copies)"
        return "other elementwise", f"{base} {pass_}: other math (bias, sums, reshapes, masks)"
    if key == "fan-out adds":
        return "other elementwise", "fan-out gradient adds (Model._accumulate)"
    if key == "checks":
        return "framework", "layer argument checks (Layer.forward/backward)"
    if key in ("loss", "optimizer"):
        return "loss + optimizer", {"loss": "loss (weighted cross-entropy)", "optimizer": "optimizer step (SGD)"}[key]
    return "framework", {"model forward": "graph walk (Model.forward)", "model backward": "tape walk (Model.backward)",
                         "step": "step glue"}.get(key, key)


# ------------------------------------------------------------------------------------------------ the run
def build_model(args):
    """``(model, size, channels)``: the ``--variant`` GoogLeNet with both aux heads, seeded, for ``--image-size``
    images (default: the variant's own size); ``ShapeError`` if they are too small for the variant."""
    variant = get_variant(args.variant)
    default_shape = inspect.signature(variant.build).parameters["input_shape"].default
    size = args.image_size or default_shape[0]
    tinynet.set_seed(0)
    return variant.build(input_shape=(size, size, default_shape[2]), aux=True), size, default_shape[2]


def build(args):
    model, size, channels = build_model(args)
    num_classes = model.outputs[-1].example_shape[-1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, size, size, channels), dtype=np.float32)
    labels = rng.integers(0, num_classes, args.batch)
    weights = [0.3] * (len(model.outputs) - 1) + [1.0]
    try:
        opt = optim.SGD(learning_rate=0.01, momentum=0.9)
    except TypeError:                    # before optimizers took Keras' argument name
        opt = optim.SGD(lr=0.01, momentum=0.9)
    opt.attach(model)
    return model, x, labels, weights, opt, size


def make_step(model, x, labels, weights, opt, prof):
    def step():
        with prof.region("step", OUTSIDE):
            with prof.region("model forward", OUTSIDE):
                outputs = model.forward(x, training=True)
            with prof.region("loss", OUTSIDE):
                _, _, grads = losses.weighted_loss(outputs, labels, weights)
            with prof.region("model backward", OUTSIDE):
                model.clear_gradients()  # as fit() does
                model.backward(grads, **BACKWARD_ARGS)
            with prof.region("optimizer", OUTSIDE):
                opt.step()
    return step


def thp_faults():
    """The kernel's count of transparent-huge-page faults (``/proc/vmstat``, machine-wide), or None."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("thp_fault_alloc "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fault_cost(repeats=4, nbytes=64 << 20):
    """Seconds per page fault, ``(4 KiB page, 2 MiB huge page)``: filling a new array minus filling it again.

    NumPy asks for transparent huge pages on big arrays (``madvise``); the 4 KiB cost is measured with that
    turned off, the huge-page cost with it on (the faults that are not huge pages priced at the 4 KiB cost).
    The huge-page cost is None where the kernel gives none.
    """
    from numpy._core import multiarray

    toggle = getattr(multiarray, "_set_madvise_hugepage", None)
    small, huge = None, None
    for hugepages in ((False, True) if toggle else (None,)):
        previous = toggle(hugepages) if toggle else None
        try:
            for _ in range(repeats):
                f0, h0 = minor_faults(), thp_faults()
                t = time.perf_counter()
                a = np.empty(nbytes // 4, dtype=np.float32)
                a.fill(1.0)
                cold = time.perf_counter() - t
                faults, thp = minor_faults() - f0, (thp_faults() - h0 if h0 is not None else 0)
                t = time.perf_counter()
                a.fill(2.0)
                extra = max(cold - (time.perf_counter() - t), 0.0)
                del a
                if not thp and faults >= nbytes // PAGE // 2:
                    small = min(small or 1.0, extra / faults)
                elif thp and small is not None:
                    cost = max(extra - (faults - thp) * small, 0.0) / thp
                    huge = min(huge or 1.0, cost)
        finally:
            if toggle:
                toggle(previous)
    return small or 0.0, huge


def matmul_rate(size=2048, repeats=5):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def read_status(field):
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``), or None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_rss(step, steps):
    """Peak RSS over ``steps`` train steps above the RSS before them (the process with its model built)."""
    before = read_status("VmRSS")
    reset = reset_peak_rss()
    for _ in range(steps):
        step()
    peak = read_status("VmHWM")
    mib = 1 << 20
    return dict(steps=steps, rss_before_mib=before / mib if before else None,
                peak_rss_mib=peak / mib if peak and reset else None,
                peak_rss_above_before_mib=(peak - before) / mib if peak and before and reset else None)


def measure_tracemalloc(step, steps, kernels_name):
    """The tracemalloc peak over ``steps`` train steps, above what was traced before them."""
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(steps):
        step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dict(tracemalloc_steps=steps, tracemalloc_peak_mib=(peak - base) / (1 << 20),
                tracemalloc_note=("NumPy's buffers" if kernels_name == "numpy" else
                                  "NumPy's buffers: the Numba kernels allocate their outputs with NumPy; "
                                  "only temporaries inside jitted code escape it"))


def profile(args):
    tinynet.set_cpu_kernels(args.kernels)
    load_start = os.getloadavg()
    model, x, labels, weights, opt, size = build(args)
    prof = Profiler()
    step = make_step(model, x, labels, weights, opt, prof)
    print(f"GoogLeNet ({args.variant}) {size}x{size}, batch {args.batch}, {args.kernels} kernels, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in load_start)}", flush=True)
    memory = measure_rss(step, args.warmup)     # the warm-up steps: the first steps of a freshly built model
    peak_gflops = matmul_rate()
    per_fault = fault_cost()
    plain, profiled, runs = [], [], []
    with instrumented(model, prof) as gemm_labels:
        step()                                   # the wrappers' first run, untimed
    for i in range(args.steps):
        f0, h0 = minor_faults(), thp_faults()
        plain.append(_timed(step))
        plain_faults, plain_thp = minor_faults() - f0, (thp_faults() - h0 if h0 is not None else None)
        with instrumented(model, prof):
            prof.reset()
            prof.on = True
            h0 = thp_faults()
            try:
                profiled.append(_timed(step))
            finally:
                prof.on = False
            runs.append(dict(entries={k: list(v) for k, v in prof.entries.items()}, kept=dict(prof.kept),
                             plain_faults=plain_faults, plain_thp=plain_thp,
                             thp=thp_faults() - h0 if h0 is not None else None))
        print(f"  step {i + 1}/{args.steps}: plain {plain[-1] * 1e3:.0f} ms, profiled {profiled[-1] * 1e3:.0f} ms",
              flush=True)
    memory.update(measure_tracemalloc(step, MEMORY_STEPS, args.kernels))
    load_end = os.getloadavg()
    return summarise(args, size, runs, plain, profiled, gemm_labels, peak_gflops, per_fault, memory,
                     load_start, load_end)


def details_of(rows, total_ms):
    """The rows summed by name (over layer types), ordered by group then time, with shares and GFLOP/s."""
    details = collections.OrderedDict()
    for r in rows:
        d = details.setdefault(r["name"], dict(name=r["name"], group=r["group"], calls=0, ms=0.0, flops=0,
                                               minor_faults=0))
        d["calls"] += r["calls"]
        d["ms"] += r["ms"]
        d["flops"] += r["flops"]
        d["minor_faults"] += r["minor_faults"]
    details = sorted(details.values(), key=lambda d: (GROUPS.index(d["group"]), -d["ms"]))
    for d in details:
        d["share"] = d["ms"] / total_ms
        d["gflops"] = d["flops"] / (d["ms"] / 1e3) / 1e9 if d["flops"] and d["ms"] > 0 else None
    return details


def summarise(args, size, runs, plain, profiled, gemm_labels, peak_gflops, per_fault, memory, load_start, load_end):
    keys = sorted({k for r in runs for k in r["entries"]})
    rows = []
    for owner, key in keys:
        values = [r["entries"].get((owner, key), [0.0, 0, 0, 0]) for r in runs]
        group, name = describe_row(owner, key)
        seconds = [v[0] for v in values]
        rows.append(dict(layer=owner[0], pass_=owner[1], key=key, group=group, name=name,
                         ms=min(seconds) * 1e3, ms_median=statistics.median(seconds) * 1e3,
                         calls=values[0][1], minor_faults=min(v[2] for v in values), flops=values[0][3]))
    total_ms = sum(r["ms"] for r in rows)

    layers = collections.OrderedDict()
    for r in sorted(rows, key=lambda r: (r["layer"] == OUTSIDE[0], r["layer"], r["pass_"] != "forward")):
        if r["layer"] == OUTSIDE[0]:
            continue
        t = layers.setdefault((r["layer"], r["pass_"]), dict(layer=r["layer"], pass_=r["pass_"], calls=0, ms=0.0,
                                                             gemm_ms=0.0, kernels_ms=0.0, activation_ms=0.0,
                                                             other_ms=0.0, checks_ms=0.0, minor_faults=0))
        t["ms"] += r["ms"]
        t["minor_faults"] += r["minor_faults"]
        if r["key"] == "checks":
            t["calls"] = r["calls"]
            t["checks_ms"] += r["ms"]
        elif r["key"].startswith("gemm:"):
            t["gemm_ms"] += r["ms"]
        elif r["key"].startswith("kernel:"):
            t["kernels_ms"] += r["ms"]
        elif r["key"].startswith("act:"):
            t["activation_ms"] += r["ms"]
        else:
            t["other_ms"] += r["ms"]
    kept = {k: min(r["kept"].get(k, 0) for r in runs) for k in {k for r in runs for k in r["kept"]}}
    for t in layers.values():
        t["share"] = t["ms"] / total_ms
        t["kept_mib"] = kept.get(t["layer"], 0) / (1 << 20) if t["pass_"] == "forward" else None

    details = details_of(rows, total_ms)
    groups = {g: sum(d["ms"] for d in details if d["group"] == g) for g in GROUPS}
    faults = sum(r["minor_faults"] for r in rows)
    gemm_flops = sum(r["flops"] for r in rows)
    # huge-page faults: the kernel's machine-wide counter over each profiled step (min over the steps)
    thp = min(r["thp"] for r in runs) if all(r["thp"] is not None for r in runs) else 0
    thp = min(thp, faults)
    fault_ms = ((faults - thp) * per_fault[0] + thp * (per_fault[1] or per_fault[0])) * 1e3
    return dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"), host=platform.node(),
        machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), python=platform.python_version(),
        numpy=np.__version__, numba=getattr(sys.modules.get("numba"), "__version__", None),
        load_average_start=load_start, load_average_end=load_end,
        variant=args.variant, image_size=size, batch=args.batch, kernels=args.kernels, dtype="float32",
        warmup_steps=args.warmup, profiled_steps=args.steps,
        method=("exclusive perf_counter time per region, minimum over the profiled steps; GEMM timed by "
                "recompiling the layers' methods with each @ wrapped; see benchmarks/profile_step.py"),
        step_ms=dict(profiled_sum_of_minima=total_ms, profiled_min=min(profiled) * 1e3,
                     plain_min=min(plain) * 1e3, plain_median=statistics.median(plain) * 1e3,
                     profiled_all=[t * 1e3 for t in profiled], plain_all=[t * 1e3 for t in plain]),
        matmul_gflops=peak_gflops, gemm=dict(ms=groups["GEMM"], gflop=gemm_flops / 1e9,
                                             gflops=gemm_flops / (groups["GEMM"] / 1e3) / 1e9 if groups["GEMM"]
                                             else None, products=gemm_labels),
        allocation=dict(page_bytes=PAGE, minor_faults=faults, huge_page_faults=thp,
                        us_per_fault=per_fault[0] * 1e6,
                        us_per_huge_fault=per_fault[1] * 1e6 if per_fault[1] is not None else None,
                        estimated_ms=fault_ms, estimated_share=fault_ms / total_ms,
                        plain_step_faults=min(r["plain_faults"] for r in runs),
                        plain_step_huge_page_faults=(min(r["plain_thp"] for r in runs)
                                                     if all(r["plain_thp"] is not None for r in runs) else None),
                        kept_mib=sum(kept.values()) / (1 << 20)),
        memory=memory, groups_ms=groups, layers=list(layers.values()), details=details, rows=rows)


# ------------------------------------------------------------------------------------------------- report
def relabel(result):
    """A saved profile with its row names and detail table rebuilt by this version's `describe_row`."""
    for r in result["rows"]:
        r["group"], r["name"] = describe_row((r["layer"], r["pass_"]), r["key"])
    result["details"] = details_of(result["rows"], result["step_ms"]["profiled_sum_of_minima"])
    return result


def report(result, min_ms=0.0):
    """The tables as text; rows under ``min_ms`` are summed into one line per table."""
    s, a = result["step_ms"], result["allocation"]
    total = s["profiled_sum_of_minima"]
    out = []
    out.append(f"GoogLeNet {result['variant']} {result['image_size']}x{result['image_size']}, batch {result['batch']}, "
               f"{result['kernels']} kernels, {result['cpus']} CPUs; load average at start "
               f"{' '.join(f'{v:.2f}' for v in result['load_average_start'])}, at end "
               f"{' '.join(f'{v:.2f}' for v in result['load_average_end'])}")
    out.append(f"step: {total:.0f} ms profiled (sum of per-row minima over {result['profiled_steps']} steps; "
               f"fastest profiled step {s['profiled_min']:.0f} ms), plain step {s['plain_min']:.0f} ms (min), "
               f"matmul peak {result['matmul_gflops']:.0f} GFLOP/s")
    out.append("")
    out.append(f"{'layer type':<16} {'pass':<8} {'calls':>5} {'ms':>8} {'share':>6} {'GEMM':>7} {'kernels':>7} "
               f"{'act':>6} {'other':>6} {'checks':>6} {'faults':>7} {'kept MiB':>8}")
    layers = sorted(result["layers"], key=lambda t: -t["ms"])
    for t in [t for t in layers if t["ms"] >= min_ms]:
        kept = f"{t['kept_mib']:8.1f}" if t["kept_mib"] is not None else ""
        out.append(f"{t['layer']:<16} {t['pass_']:<8} {t['calls']:>5} {t['ms']:8.1f} {t['share']:6.1%} "
                   f"{t['gemm_ms']:7.1f} {t['kernels_ms']:7.1f} {t['activation_ms']:6.1f} {t['other_ms']:6.1f} "
                   f"{t['checks_ms']:6.2f} {t['minor_faults']:7d} {kept:>8}")
    small = [t for t in layers if t["ms"] < min_ms]
    if small:
        out.append(f"({len(small)} more rows under {min_ms:g} ms: {sum(t['ms'] for t in small):.1f} ms in all)")
    out.append("")
    out.append(f"{'group':<18} {'what':<62} {'calls':>5} {'ms':>8} {'share':>6} {'GFLOP/s':>7} {'faults':>7}")
    for d in [d for d in result["details"] if d["ms"] >= min_ms]:
        rate = f"{d['gflops']:7.1f}" if d["gflops"] else ""
        out.append(f"{d['group']:<18} {d['name'][:62]:<62} {d['calls']:>5} {d['ms']:8.1f} {d['share']:6.1%} "
                   f"{rate:>7} {d['minor_faults']:7d}")
    small = [d for d in result["details"] if d["ms"] < min_ms]
    if small:
        out.append(f"({len(small)} more rows under {min_ms:g} ms: {sum(d['ms'] for d in small):.1f} ms in all)")
    out.append(f"{'allocation':<18} {'page faults on fresh memory (estimate; inside the rows above)':<62} "
               f"{'':>5} {a['estimated_ms']:8.1f} {a['estimated_share']:6.1%} {'':>7} {a['minor_faults']:7d}")
    out.append("")
    g = result["gemm"]
    out.append("summary: " + ", ".join(f"{k} {v:.0f} ms ({v / total:.0%})" for k, v in result["groups_ms"].items()))
    out.append(f"GEMM: {g['gflop']:.1f} GFLOP in {g['ms']:.0f} ms = {g['gflops']:.0f} GFLOP/s "
               f"({g['gflops'] / result['matmul_gflops']:.0%} of the 2048x2048 matmul rate)")
    huge = f"{a['us_per_huge_fault']:.0f} us" if a["us_per_huge_fault"] is not None else "n/a"
    out.append(f"allocation: {a['minor_faults']} page faults per profiled step, {a['huge_page_faults']} of them huge "
               f"pages (plain step: {a['plain_step_faults']}, {a['plain_step_huge_page_faults']} huge); "
               f"{a['us_per_fault']:.1f} us per 4 KiB fault, {huge} per huge one: about {a['estimated_ms']:.0f} ms; "
               f"the forward keeps "
               f"{a['kept_mib']:.0f} MiB for backward")
    m = result["memory"]
    rss = (f"peak RSS {m['peak_rss_mib']:.0f} MiB ({m['peak_rss_above_before_mib']:.0f} MiB above the "
           f"{m['rss_before_mib']:.0f} MiB of the built model)" if m["peak_rss_above_before_mib"] is not None
           else "peak RSS n/a")
    out.append(f"memory over the first {m['steps']} train steps: {rss}; tracemalloc peak over {MEMORY_STEPS} "
               f"steps {m['tracemalloc_peak_mib']:.0f} MiB ({m['tracemalloc_note']})")
    return "\n".join(out)


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=positive_int(), default=8)
    parser.add_argument("--variant", choices=list(VARIANTS), default="paper",
                        help="paper | blog | small (default paper)")
    parser.add_argument("--image-size", type=positive_int(MAX_IMAGE_SIZE), default=None,
                        help="default: the variant's (224, small 32)")
    parser.add_argument("--kernels", choices=("numpy", "numba"), default=backend.get_cpu_kernels())
    parser.add_argument("--steps", type=positive_int(), default=3, help="profiled steps (each after a plain one)")
    parser.add_argument("--warmup", type=positive_int(), default=WARMUP,
                        help="untimed steps first (their peak RSS is the memory figure)")
    parser.add_argument("--out", type=output_folder, default=None,
                        help="folder for the JSON (default: benchmarks/results)")
    parser.add_argument("--from-json", metavar="PATH", help="print the tables of a saved profile instead of running")
    parser.add_argument("--min-ms", type=non_negative_float(), default=0.0,
                        help="sum the rows under this many ms into one line")
    args = parser.parse_args(argv)
    if args.from_json:
        result = read_json(parser, "--from-json", args.from_json)
        try:
            text = report(relabel(result), args.min_ms)
        except (KeyError, TypeError) as error:  # JSON, but not what this script writes
            parser.error(f"argument --from-json: {args.from_json} is not a profile written by profile_step.py "
                         f"({type(error).__name__}: {error})")
        print(text)
        return result
    if args.out is None:  # checked here: --from-json writes nothing
        args.out = check(parser, "--out", str(ROOT / "benchmarks" / "results"), output_folder)
    if args.kernels == "numba" and not backend.numba_available():
        parser.error("argument --kernels: numba is not installed")
    if args.image_size is not None:
        try:
            build_model(args)
        except ShapeError as error:
            parser.error(f"argument --image-size: {args.image_size} is too small for the '{args.variant}' "
                         f"GoogLeNet ({error})")
    result = profile(args)
    text = report(result, args.min_ms)
    print("\n" + text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"profile_{args.kernels}_{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    fileio.write_text(path, json.dumps(result, indent=1))
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
