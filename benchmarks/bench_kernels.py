"""Kernel, layer and whole-network benchmark of tinynet's backends (numpy, numba, cupy) at GoogLeNet's shapes.

Usage (from the repository root)::

    python benchmarks/bench_kernels.py                       # batch 32 layers, batch 8 train step, all backends
    python benchmarks/bench_kernels.py --quick               # batch 8, fewer repeats, no per-kernel rows
    python benchmarks/bench_kernels.py --backends numpy,numba --no-torch --skip-layers
    python benchmarks/bench_kernels.py --quick --backends cupy --torch-device cuda   # cupy against cuDNN only

What it measures (the minimum over ``--repeats`` runs after a warm-up, so Numba's compile time and CuPy's
kernel compilation are excluded; other processes on the machine only ever make a run slower):

* the machine's own float32 matrix-product rate (NumPy's BLAS on the CPU, cuBLAS with CuPy);
* every distinct convolution, pooling, LRN and dense layer of ``googlenet(variant='paper')`` (taken from the
  model itself, so the shapes are exactly GoogLeNet's at 224×224), forward and backward, and the kernels
  behind them (im2col/col2im, max/avg pool forward/backward);
* a whole training step (batch 8, both aux heads, cross-entropy with aux weight 0.3, SGD momentum 0.9) and
  an inference pass (batch 8);
* the same with PyTorch when it is importable (``benchmarks/torch_googlenet.py``, NCHW, float32), and the
  tinynet/PyTorch ratios of the whole network. ``--torch-device`` says where: on the CPU (rows ``torch``, with
  ``torch.set_num_threads`` = the CPU count), on the GPU (rows ``torch-cuda``: cuDNN with
  ``torch.backends.cudnn.benchmark = True`` and TF32 turned off, so it computes in IEEE float32 as CuPy does
  unless ``CUPY_TF32=1``), or by default (``auto``) on the CPU and, when cupy is benchmarked and
  ``torch.cuda.is_available()``, on the GPU too. numpy and numba are compared with ``torch``, cupy with
  ``torch-cuda``.

GFLOP/s counts 2 flops per multiply-add (forward: 2·MACs, backward: 4·MACs, a train step: 6·MACs of the
network); "of BLAS" is that rate as a share of the measured matrix-product rate. JSON goes to
``benchmarks/results/bench_<date>_<host>.json``.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import tinynet  # noqa: E402
from tinynet import backend, fileio, kernels, losses  # noqa: E402
from tinynet.layers import (AvgPool2D, Conv2D, Dense, GlobalAveragePooling2D,  # noqa: E402
                            LocalResponseNormalization, MaxPool2D)

from inception import googlenet  # noqa: E402

from _args import OneLineParser, name_list, output_folder, positive_int  # noqa: E402

BACKENDS = ("numpy", "numba", "cupy")
TIMED_LAYERS = (Conv2D, MaxPool2D, AvgPool2D, LocalResponseNormalization, Dense, GlobalAveragePooling2D)


# ---------------------------------------------------------------------------------------------- timing
# Whole-network runs before timing, for every engine alike: the first steps are slower (measured here: a
# GoogLeNet train step took 925 ms after one warm-up step and 660 ms once four had run) while the allocator's heap
# grows to its steady size; a training run spends nearly all its time in that steady state.
NETWORK_WARMUP = 3

def synchronize(device):
    """Wait until the GPU work queued on ``device`` is done; nothing to wait for on the CPU.

    ``device`` is a tinynet backend name (``numpy``, ``numba``, ``cupy``) or a PyTorch device (``cpu``,
    ``cuda``, ``cuda:1``); GPU calls return before their kernels finish, so a timing without this measures
    only the launch.
    """
    if device == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()
    elif str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def best_time(fn, repeats, device="numpy", warmup=1):
    """Minimum wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs.

    ``device`` is where ``fn`` runs (see `synchronize`): the clock stops only when its GPU work is done.
    """
    for _ in range(warmup):
        fn()
        synchronize(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return min(times)


def use_backend(name):
    """Select the kernels for ``name`` and return a function moving a NumPy array there."""
    if name == "cupy":
        backend.require_gpu()
        return lambda a: backend.to_device(a, "gpu")
    tinynet.set_cpu_kernels(name)
    return lambda a: a


def matmul_rate(name, size=2048, repeats=5):
    """Measured float32 matrix-product rate in GFLOP/s (NumPy BLAS, or cuBLAS for cupy)."""
    rng = np.random.default_rng(0)
    move = use_backend(name)
    a = move(rng.standard_normal((size, size), dtype=np.float32))
    b = move(rng.standard_normal((size, size), dtype=np.float32))
    seconds = best_time(lambda: a @ b, repeats, name)
    return 2 * size ** 3 / seconds / 1e9


# ------------------------------------------------------------------------------------ layers and kernels
def distinct_layers(model):
    """One (layer, per-example input shape, MACs) for each distinct layer configuration and input shape."""
    seen, found = set(), []
    for node in model.nodes:
        layer = node.layer
        if not isinstance(layer, TIMED_LAYERS):
            continue
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        in_shape = node.inputs[0].example_shape
        key = (type(layer).__name__, repr(sorted(config.items())), in_shape)
        if key in seen:
            continue
        seen.add(key)
        found.append((layer, in_shape, layer.count_macs(in_shape, node.output.example_shape)))
    return found


def describe(layer, in_shape):
    name = type(layer).__name__.replace("LocalResponseNormalization", "LRN").replace("GlobalAveragePooling2D", "GAP")
    if isinstance(layer, Conv2D):
        (kh, kw), (sh, _) = layer.kernel_size, layer.strides
        what = f"{kh}x{kw}/{sh} {layer.filters}"
    elif isinstance(layer, (MaxPool2D, AvgPool2D)):
        what = f"{layer.pool_size[0]}x{layer.pool_size[1]}/{layer.strides[0]} {layer.padding}"
    elif isinstance(layer, Dense):
        what = f"{layer.units}"
    else:
        what = ""
    return f"{name} {what} on {'x'.join(map(str, in_shape))}".replace("  ", " ")


def layer_rows(name, model, batch, repeats, with_kernels):
    """Forward and backward time of each distinct layer (and its kernels) on backend ``name``."""
    move = use_backend(name)
    rng = np.random.default_rng(0)
    rows = []
    for layer, in_shape, macs in distinct_layers(model):
        if name == "cupy":
            layer.to("gpu")
        x = move(rng.standard_normal((batch,) + in_shape, dtype=np.float32))
        y, cache = layer.forward(x, training=True)
        gy = move(rng.standard_normal(y.shape, dtype=np.float32))
        label = describe(layer, in_shape)
        flops = 2 * macs * batch
        fwd = best_time(lambda: layer.forward(x, training=True), repeats, name)
        bwd = best_time(lambda: layer.backward(gy, cache), repeats, name)
        rows.append(dict(backend=name, kind="layer", name=label, pass_="forward", ms=fwd * 1e3,
                         gflop=flops / 1e9 if macs else None))
        rows.append(dict(backend=name, kind="layer", name=label, pass_="backward", ms=bwd * 1e3,
                         gflop=2 * flops / 1e9 if macs else None))
        if with_kernels:
            rows += kernel_rows(name, layer, x, gy, repeats)
        if name == "cupy":
            layer.to("cpu")
    return rows


def kernel_rows(name, layer, x, gy, repeats):
    """The kernels behind ``layer`` (im2col/col2im or pooling), forward and backward."""
    label = describe(layer, x.shape[1:])
    rows = []

    def add(kernel, fn):
        rows.append(dict(backend=name, kind="kernel", name=f"{kernel} [{label}]", pass_="",
                         ms=best_time(fn, repeats, name) * 1e3, gflop=None))

    if isinstance(layer, Conv2D):
        (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
        _, pads = layer._geometry(x.shape)
        if layer._is_pointwise(pads):
            return rows
        cols = kernels.im2col(x, kh, kw, sh, sw, pads)
        add("im2col", lambda: kernels.im2col(x, kh, kw, sh, sw, pads))
        add("col2im", lambda: kernels.col2im(cols, x.shape, kh, kw, sh, sw, pads))
    elif isinstance(layer, MaxPool2D):
        args = layer._window_args(x.shape)
        _, argmax = kernels.maxpool_forward(x, *args)
        add("maxpool_forward", lambda: kernels.maxpool_forward(x, *args))
        add("maxpool_backward", lambda: kernels.maxpool_backward(gy, argmax, x.shape, *args))
    elif isinstance(layer, AvgPool2D):
        args = layer._window_args(x.shape)
        add("avgpool_forward", lambda: kernels.avgpool_forward(x, *args))
        add("avgpool_backward", lambda: kernels.avgpool_backward(gy, x.shape, *args))
    return rows


# ------------------------------------------------------------------------------------------ whole network
def network_rows(name, batch, repeats, macs_per_image):
    """A GoogLeNet train step (both aux heads, aux weight 0.3, SGD momentum) and inference on ``name``."""
    from tinynet import optim

    move = use_backend(name)
    tinynet.set_seed(0)
    model = googlenet(variant="paper")
    if name == "cupy":
        model.to("gpu")
    opt = optim.SGD(learning_rate=0.01, momentum=0.9).attach(model)
    rng = np.random.default_rng(0)
    x = move(rng.standard_normal((batch, 224, 224, 3), dtype=np.float32))
    labels = move(rng.integers(0, 1000, batch))

    def train_step():
        outputs = model.forward(x, training=True)
        _, _, grads = losses.weighted_loss(outputs, labels, [0.3, 0.3, 1.0])
        model.clear_gradients()  # as fit() does
        model.backward(grads)
        opt.step()

    flops = 2 * macs_per_image * batch
    step = best_time(train_step, repeats, name, warmup=NETWORK_WARMUP)
    infer = best_time(lambda: model(x), repeats, name, warmup=NETWORK_WARMUP)
    return [dict(backend=name, kind="network", name=f"GoogLeNet train step (batch {batch})", pass_="",
                 ms=step * 1e3, gflop=3 * flops / 1e9),
            dict(backend=name, kind="network", name=f"GoogLeNet inference (batch {batch})", pass_="",
                 ms=infer * 1e3, gflop=flops / 1e9)]


# ------------------------------------------------------------------------------------------------ PyTorch
def torch_label(device):
    """Backend name of PyTorch's rows on ``device``: ``torch`` on the CPU, ``torch-cuda`` on a GPU."""
    return "torch" if str(device) == "cpu" else "torch-cuda"


def ieee_float32(torch):
    """Turn TF32 off in cuDNN convolutions and cuBLAS matrix products, so float32 means IEEE float32.

    PyTorch lets cuDNN convolutions use TF32 on Ampere and newer GPUs by default (10-bit mantissa inputs),
    CuPy does not; the comparison is float32 against float32. Returns the settings read back.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):      # PyTorch >= 2.9; do not mix with allow_tf32
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        return dict(conv=conv.fp32_precision, matmul=torch.backends.cuda.matmul.fp32_precision)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return dict(conv_allow_tf32=torch.backends.cudnn.allow_tf32,
                matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)


def torch_rows(model, batch, step_batch, repeats, skip_layers, macs_per_image, device="cpu"):
    """The same layer shapes and network in PyTorch (NCHW, float32) on ``device``.

    One code path for both devices: on ``cpu`` the rows are called ``torch`` and PyTorch uses
    ``torch.set_num_threads(cpu count)``; on ``cuda`` they are called ``torch-cuda``, cuDNN picks its fastest
    algorithm per shape (``torch.backends.cudnn.benchmark = True``, during the two warm-up runs, which are
    not timed), TF32 is off (`ieee_float32`) and every timing ends with ``torch.cuda.synchronize``.

    Returns
    -------
    rows : list of dict
        Rows as in `layer_rows` and `network_rows`.
    info : dict
        PyTorch version and device (on a GPU also CUDA, cuDNN, the GPU's name and the float32 settings).
    """
    import torch
    import torch.nn.functional as F

    from torch_googlenet import GoogLeNet

    device = torch.device(device)
    name = torch_label(device)
    info = dict(version=torch.__version__, device=str(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu=torch.cuda.get_device_name(device), cudnn_benchmark=True, float32=ieee_float32(torch))
        warmup = 2
    else:
        torch.set_num_threads(os.cpu_count())
        info.update(threads=torch.get_num_threads())
        warmup = 1

    def timed(fn, warmup=warmup):
        return best_time(fn, repeats, device, warmup)

    def randn(*shape, requires_grad=False):
        return torch.randn(*shape, device=device, requires_grad=requires_grad)

    torch.manual_seed(0)
    rows = []
    if not skip_layers:
        for layer, in_shape, macs in distinct_layers(model):
            h, w, c = in_shape if len(in_shape) == 3 else (1, 1, in_shape[-1])
            x = randn(batch, c, h, w, requires_grad=True)
            leaves = [x]
            if isinstance(layer, (MaxPool2D, AvgPool2D, Conv2D)):
                k = layer.kernel_size if isinstance(layer, Conv2D) else layer.pool_size
                (_, pads) = layer._geometry((batch,) + in_shape) if isinstance(layer, Conv2D) else \
                    (None, layer._window_args((batch,) + in_shape)[-1])
                top, bottom, left, right = pads
                fill = float("-inf") if isinstance(layer, MaxPool2D) else 0.0
                if isinstance(layer, Conv2D):
                    wt = randn(layer.filters, c, *k, requires_grad=True)
                    bias = torch.zeros(layer.filters, device=device, requires_grad=True)
                    leaves = [x, wt, bias]

                    def fn(x=x, wt=wt, bias=bias, pads=pads, s=layer.strides):
                        xp = F.pad(x, (pads[2], pads[3], pads[0], pads[1])) if any(pads) else x
                        return F.relu(F.conv2d(xp, wt, bias, stride=s))
                else:
                    pool = F.max_pool2d if isinstance(layer, MaxPool2D) else F.avg_pool2d

                    def fn(x=x, pads=pads, k=k, s=layer.strides, pool=pool, fill=fill):
                        xp = F.pad(x, (pads[2], pads[3], pads[0], pads[1]), value=fill) if any(pads) else x
                        return pool(xp, k, s)
            elif isinstance(layer, LocalResponseNormalization):
                def fn(x=x, L=layer):
                    return F.local_response_norm(x, L.size, L.alpha, L.beta, L.k)
            elif isinstance(layer, Dense):
                x = randn(batch, *in_shape, requires_grad=True)
                wt = randn(in_shape[-1], layer.units, requires_grad=True)
                leaves = [x, wt]

                def fn(x=x, wt=wt):
                    return x @ wt
            else:
                def fn(x=x):
                    return x.mean(dim=(2, 3))
            y = fn()
            gy = torch.randn_like(y)
            label = describe(layer, in_shape)
            flops = 2 * macs * batch
            fwd = timed(fn)
            bwd = timed(lambda: torch.autograd.grad(fn(), leaves, gy)) - fwd
            rows.append(dict(backend=name, kind="layer", name=label, pass_="forward", ms=fwd * 1e3,
                             gflop=flops / 1e9 if macs else None))
            rows.append(dict(backend=name, kind="layer", name=label, pass_="backward", ms=max(bwd, 0) * 1e3,
                             gflop=2 * flops / 1e9 if macs else None))
    net = GoogLeNet().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = randn(step_batch, 3, 224, 224)
    y = torch.randint(0, 1000, (step_batch,), device=device)

    def train_step():
        net.train()
        aux1, aux2, main = net(x)
        loss = F.cross_entropy(main, y) + 0.3 * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def inference():
        net.eval()
        with torch.no_grad():
            net(x)

    flops = 2 * macs_per_image * step_batch
    rows.append(dict(backend=name, kind="network", name=f"GoogLeNet train step (batch {step_batch})", pass_="",
                     ms=timed(train_step, max(warmup, NETWORK_WARMUP)) * 1e3, gflop=3 * flops / 1e9))
    rows.append(dict(backend=name, kind="network", name=f"GoogLeNet inference (batch {step_batch})", pass_="",
                     ms=timed(inference, max(warmup, NETWORK_WARMUP)) * 1e3, gflop=flops / 1e9))
    return rows, info


def torch_devices(choice, names):
    """The PyTorch devices to time for ``--torch-device choice`` when ``names`` are benchmarked ([] if none).

    ``auto``: the CPU, and the GPU too when cupy is among ``names`` and PyTorch sees a CUDA device.
    ``cuda`` without a CUDA device in PyTorch prints why and leaves the GPU out instead of failing, so that
    `gpu_check.sh` still runs its other benchmarks with a CPU-only PyTorch.
    """
    try:
        import torch
    except ImportError:
        print("PyTorch not importable: no comparison")
        return []
    devices = ["cpu"] if choice in ("auto", "cpu") else []
    if choice == "cuda" or (choice == "auto" and "cupy" in names):
        if torch.cuda.is_available():
            devices.append("cuda")
        else:
            print(f"PyTorch {torch.__version__} sees no CUDA device: no torch-cuda comparison")
    return devices


# ------------------------------------------------------------------------------------------------ report
def print_table(rows, rates):
    print(f"\n{'backend':<10} {'what':<58} {'pass':<8} {'ms':>10} {'GFLOP/s':>8} {'of BLAS':>8}")
    for r in rows:
        # PyTorch's backward is (forward + backward) - forward, which can come out 0 ms on a tiny layer
        gflops = r["gflop"] / (r["ms"] / 1e3) if r["gflop"] and r["ms"] > 0 else None
        rate = rates.get(r["backend"])
        share = f"{gflops / rate:7.0%}" if gflops and rate else ""
        print(f"{r['backend']:<10} {r['name'][:58]:<58} {r['pass_']:<8} {r['ms']:10.2f} "
              f"{(f'{gflops:8.1f}' if gflops else ''):>8} {share:>8}")


def network_ratios(rows, names):
    """Whole-network time ratios: each backend in ``names`` against PyTorch on its kind of device, and numpy.

    numpy and numba are divided by ``torch`` (CPU), cupy by ``torch-cuda`` (cuDNN), numba and cupy also by
    numpy; a ratio is left out when either time is missing. Keys read like ``"train step cupy/torch-cuda"``.
    """
    ratios = {}
    for kind in ("train step", "inference"):
        ms = {r["backend"]: r["ms"] for r in rows if r["kind"] == "network" and kind in r["name"]}
        for name in names:
            if name not in ms:
                continue
            reference = torch_label("cuda" if name == "cupy" else "cpu")
            if reference in ms:
                ratios[f"{kind} {name}/{reference}"] = ms[name] / ms[reference]
            if name != "numpy" and "numpy" in ms:
                ratios[f"{kind} {name}/numpy"] = ms[name] / ms["numpy"]
    return ratios


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=positive_int(), default=None,
                        help="batch of the per-layer rows (default 32, quick 8)")
    parser.add_argument("--step-batch", type=positive_int(), default=8, help="batch of the train step and inference")
    parser.add_argument("--backends", type=name_list(BACKENDS), default=None,
                        help="comma list of numpy,numba,cupy (default: all present)")
    parser.add_argument("--repeats", type=positive_int(), default=None,
                        help="timed runs per entry (default 3, quick 2)")
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 repeats, no per-kernel rows")
    parser.add_argument("--skip-layers", action="store_true", help="only the matmul rate and the whole network")
    parser.add_argument("--skip-network", action="store_true", help="only the matmul rate and the layers")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch even if it is installed")
    parser.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to time PyTorch: cpu, cuda, or auto = cpu, and cuda too when cupy is "
                             "benchmarked and PyTorch sees a GPU (default auto)")
    parser.add_argument("--out", type=output_folder, default=str(ROOT / "benchmarks" / "results"),
                        help="folder for the JSON")
    args = parser.parse_args(argv)
    batch = args.batch or (8 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 3)
    names = args.backends or (["numpy"] + (["numba"] if backend.numba_available() else []) +
                              (["cupy"] if backend.cupy_available() else []))
    if "numba" in names and not backend.numba_available():
        parser.error("argument --backends: numba is not installed")
    if "cupy" in names and not backend.cupy_available():
        parser.error("argument --backends: cupy or a CUDA device is missing")

    tinynet.set_seed(0)
    model = googlenet(variant="paper")
    macs = model.count_macs()
    print(f"GoogLeNet (paper variant): {model.count_params():,} parameters, {macs:,} multiply-adds per 224x224 image "
          f"(aux heads included); {os.cpu_count()} CPUs; layer batch {batch}, step batch {args.step_batch}, "
          f"min of {repeats}")
    rates = {}
    for name in names:
        rates[name] = matmul_rate(name)
        print(f"float32 matmul rate on {name}: {rates[name]:.1f} GFLOP/s")
    rows = []
    for name in names:
        if not args.skip_layers:
            print(f"timing every layer on {name} ...", flush=True)
            rows += layer_rows(name, model, batch, repeats, with_kernels=not args.quick)
        if not args.skip_network:
            print(f"timing the whole network on {name} (3 warm-up steps, then {repeats} timed) ...", flush=True)
            rows += network_rows(name, args.step_batch, repeats, macs)
    torch_info = {}
    for device in ([] if args.no_torch else torch_devices(args.torch_device, names)):
        label = torch_label(device)
        if label == "torch":
            rates[label] = rates.get("numpy") or matmul_rate("numpy")
        elif "cupy" in rates:          # "of BLAS" on the GPU: the cuBLAS rate measured through CuPy
            rates[label] = rates["cupy"]
        print(f"timing PyTorch on {device} ...", flush=True)
        try:
            device_rows, torch_info[label] = torch_rows(model, batch, args.step_batch, repeats, args.skip_layers,
                                                        macs, device)
        except Exception as error:      # the comparison is optional: keep tinynet's rows, record why it is missing
            message = f"{type(error).__name__}: {error}"
            print(f"PyTorch on {device} failed, no {label} rows: {message}")
            torch_info[label] = dict(error=message)
            continue
        rows += device_rows
    print_table(sorted(rows, key=lambda r: (r["kind"] != "network", r["name"], r["pass_"], r["backend"])), rates)

    ratios = network_ratios(rows, names)
    if ratios:
        print("\nratios (time / time; < 1 means faster than the second):")
        for key, value in ratios.items():
            print(f"  {key:<32} {value:6.2f}")

    result = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"), host=platform.node(),
        machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), load_average=os.getloadavg(),
        python=platform.python_version(),
        numpy=np.__version__, numba=getattr(sys.modules.get("numba"), "__version__", None),
        torch=next((info["version"] for info in torch_info.values() if "version" in info), None),
        torch_cpu=torch_info.get("torch"), torch_cuda=torch_info.get("torch-cuda"),
        macs_per_image=macs, layer_batch=batch, step_batch=args.step_batch, repeats=repeats,
        matmul_gflops=rates, ratios=ratios, rows=rows)
    if "cupy" in names:
        import cupy

        gpu_name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        result["gpu"] = gpu_name.decode() if isinstance(gpu_name, bytes) else str(gpu_name)
        result["cupy"] = cupy.__version__
        result["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{datetime.datetime.now():%Y%m%d-%H%M%S}_{platform.node()}.json"
    fileio.write_text(path, json.dumps(result, indent=1))
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
