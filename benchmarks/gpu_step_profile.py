"""Where a GoogLeNet train step on the GPU (the cupy backend) spends its time: host or device, phase by phase.

Usage (from the repository root, on a machine with CuPy and a CUDA device)::

    python benchmarks/gpu_step_profile.py                    # paper variant, 224x224, batch 8
    python benchmarks/gpu_step_profile.py --batch 32 --top 40

A GPU step is bound either by the GPU's work or by the Python that queues it (kernel launches, argument
checks, and every point where the host waits for the device: a ``float()`` or ``.get()`` of a device value).
For each phase of the step ``bench_kernels.py`` times (forward, loss, backward, SGD-momentum update) and for
the whole step, :func:`cupyx.profiler.benchmark` gives the host time (CPU) and the time between CUDA events
around the phase on the device (GPU): where CPU ≈ GPU, the phase is bound by the host. Then one step runs
under :mod:`cProfile` and the functions with the most *own* time are listed, with the host–device
synchronisations that happened inside (``cupy.ndarray.get``, ``item``, ``__float__`` ...).
"""
from __future__ import annotations

import cProfile
import pathlib
import pstats
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import tinynet  # noqa: E402
from tinynet import backend, losses, optim  # noqa: E402

from inception import googlenet  # noqa: E402

from _args import OneLineParser, positive_int  # noqa: E402

# the host-side calls that wait for the GPU (or copy from it): their count per step is what a step costs in
# round trips
# (cProfile names Cython methods "<method 'get' of 'cupy._core.core._ndarray_base' objects>")
SYNC_NAMES = ("'get'", "'item'", "'__float__'", "'__int__'", "'__bool__'", "'__index__'", "'tolist'", "asnumpy",
              "ynchronize")


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int(), default=8)
    parser.add_argument("--repeats", type=positive_int(), default=10)
    parser.add_argument("--top", type=positive_int(), default=30, help="functions listed by own time")
    args = parser.parse_args(argv)
    try:
        backend.require_gpu()
    except RuntimeError as e:  # no CuPy or no device: one line, exit 2
        parser.error(str(e))
    import cupy as cp
    from cupyx.profiler import benchmark

    tinynet.set_seed(0)
    model = googlenet(variant="paper")
    model.to("gpu")
    opt = optim.SGD(learning_rate=0.01, momentum=0.9).attach(model)
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((args.batch, 224, 224, 3), dtype=np.float32))
    labels = cp.asarray(rng.integers(0, 1000, args.batch))
    state = {}

    def forward():
        state["outputs"] = model.forward(x, training=True)

    def loss():
        state["grads"] = losses.weighted_loss(state["outputs"], labels, [0.3, 0.3, 1.0])[2]

    def backward():
        model.clear_gradients()
        model.backward(state["grads"])

    def step():
        forward(), loss(), backward(), opt.step()

    for _ in range(3):
        step()
    cp.cuda.Device().synchronize()
    gpu_name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    gpu_name = gpu_name.decode() if isinstance(gpu_name, bytes) else gpu_name
    print(f"GoogLeNet (paper) train step on {gpu_name}, batch {args.batch}, min of {args.repeats} (ms)")
    print(f"{'phase':<12} {'host (CPU)':>11} {'device (GPU)':>13}")
    for name, phase in (("forward", forward), ("loss", loss), ("backward", backward), ("optimizer", opt.step),
                        ("whole step", step)):
        if name == "backward":  # each backward needs a fresh forward's tape
            cpu, gpu = [], []
            for _ in range(args.repeats):
                forward(), loss()
                r = benchmark(backward, n_repeat=1, n_warmup=0)
                cpu.append(r.cpu_times.min()), gpu.append(r.gpu_times.min())
            cpu, gpu = min(cpu), min(gpu)
        else:
            r = benchmark(phase, n_repeat=args.repeats, n_warmup=1)
            cpu, gpu = r.cpu_times.min(), r.gpu_times.min()
        print(f"{name:<12} {cpu * 1e3:>11.2f} {gpu * 1e3:>13.2f}")

    profiler = cProfile.Profile()
    cp.cuda.Device().synchronize()
    profiler.enable()
    step()
    cp.cuda.Device().synchronize()
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = sum(v[2] for _, v in rows)
    print(f"\none step under cProfile: {total * 1e3:.1f} ms of own time in {len(rows)} functions; "
          f"the {args.top} with the most:")
    print(f"{'own ms':>8} {'calls':>7}  function")
    for (file, line, name), (_, calls, own, _, _) in rows[:args.top]:
        print(f"{own * 1e3:>8.2f} {calls:>7}  {name}  ({pathlib.Path(file).name}:{line})")
    syncs = [(name, file, v[1], v[2]) for (file, _, name), v in rows if any(s in name for s in SYNC_NAMES)]
    print("\nhost-device waits and copies in the step (calls, own ms):")
    for name, file, calls, own in syncs:
        print(f"  {name} ({pathlib.Path(file).name}): {calls} calls, {own * 1e3:.2f} ms")
    stats.sort_stats("cumulative").print_callers(r"'(get|item|__float__|__int__|__bool__|__index__|tolist)'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
