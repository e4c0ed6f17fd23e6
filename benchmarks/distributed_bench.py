"""Data-parallel training on this machine, and a ring all-reduce cost model for 8-64 ranks.

Measured here (each rank one thread, ``OMP_NUM_THREADS=NUMBA_NUM_THREADS=OPENBLAS_NUM_THREADS=1``, and bound
to a core by ``mpiexec -bind-to core``, the one-rank runs included): the small GoogLeNet on random 32×32×1
images, float32, SGD with momentum, synchronized BatchNormalization (2 ranks), in three runs

* 1 rank, global batch B (the one-process code path: no communicator),
* 1 rank, global batch 2B (the same),
* 2 ranks under ``mpiexec -n 2``, global batch 2B (B per rank),

so "weak scaling" (B per rank: 1 rank B vs 2 ranks 2B) and "strong scaling" (2B in all: 1 rank vs 2 ranks)
can both be read. The three runs take turns ``--repeats`` times and each keeps its fastest median
(the machine may be shared; every repeat's median is in the JSON). Per run: milliseconds per step (median
over the timed steps, on rank 0), images per second, and for 2 ranks the gradient all-reduce per step: its
bytes and its time inside the step (waiting for the slower rank included) and alone (the same buffer
all-reduced 30 times after a barrier, median).

On paper, for GoogLeNet as the paper builds it (both aux heads: 13,378,280 parameters, 53.5 MB of float32
gradients per step), a ring all-reduce moves :math:`2 (N-1)/N × B` bytes through each rank's link, so at a
link bandwidth β it takes at least

    T_allreduce(N) = 2 (N - 1) / N × B / β        (the latency term 2 (N - 1) α, a few µs per hop, left out)

and with no overlap of communication and backward (as in tinynet), a step of compute time T_c on each rank
runs at efficiency T_c / (T_c + T_allreduce) and the N ranks at N × that speed-up over one rank (weak
scaling, each rank keeping its batch). The projection uses 10, 25 and 100 Gbit/s Ethernet and 200 Gbit/s
InfiniBand (HDR), for the compute times given by ``--compute-ms``: 669 ms is the measured train step of the
paper GoogLeNet at batch 8 on this CPU with Numba (README, ``bench_20261128-132555_vm.json``); the 100 and
25 ms rows are assumed accelerator step times, **not measurements**.

Writes ``benchmarks/results/distributed_bench.json`` and ``distributed_scaling.png`` (through
``tinynet.fileio``) and prints both tables. About a minute on 2 cores::

    python benchmarks/distributed_bench.py [--batch 16] [--steps 15] [--warmup 3] [--repeats 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from _args import (OneLineParser, check, non_negative_int, number_list, output_folder,  # noqa: E402
                   positive_float, positive_int)

#: GoogLeNet, paper variant with both aux heads (Table 1 plus the heads; `python -m inception summary`)
PAPER_PARAMS = 13_378_280
LINKS = [("10 GbE", 10e9), ("25 GbE", 25e9), ("100 GbE", 100e9), ("200 Gb/s IB HDR", 200e9)]
RANKS = [8, 16, 32, 64]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------------------------------ one run (a rank)
def run_worker(args):
    """One configuration, on every rank of the job; rank 0 writes its measurements to ``args.json``."""
    import tinynet
    from inception.googlenet import googlenet
    from tinynet import callbacks, data, distributed, optimizers
    from tinynet.training import Trainer

    comm = distributed.world() if args.ranks > 1 else None
    tinynet.set_cpu_kernels(args.kernels)
    tinynet.set_seed(0)
    model = googlenet((32, 32, 1), num_classes=10, aux=True, variant="small")
    for layer in model.layers:
        if hasattr(layer, "synchronized"):
            layer.synchronized = comm is not None
    trainer = Trainer(model, optimizers.SGD(0.01, momentum=0.9), batch_size=args.global_batch, seed=0,
                      verbose=False, communicator=comm)
    rng = np.random.default_rng(0)
    n = args.global_batch * (args.warmup + args.steps)
    train = data.Dataset(rng.random((n, 32, 32, 1), dtype=np.float32), np.arange(n) % 10)
    times = []

    class Timer(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == args.warmup and comm is not None:
                comm.stats.reset()
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch >= args.warmup:
                times.append(time.perf_counter() - self.began)

    trainer.fit(train, epochs=1, callbacks=[Timer()])
    result = {"ranks": args.ranks, "global_batch": args.global_batch, "per_rank_batch": args.global_batch
              // args.ranks, "steps": len(times), "step_ms": 1e3 * float(np.median(times)),
              "step_ms_min": 1e3 * float(np.min(times)), "images_per_s": args.global_batch / float(np.median(times)),
              "gradient_bytes": int(model.count_trainable_params()) * 4, "params": int(model.count_params())}
    if comm is not None:
        stats = comm.stats
        result["allreduce_in_step_ms"] = 1e3 * stats.seconds / len(times)
        result["allreduce_bytes_per_step"] = stats.bytes / len(times)
        buffer = np.zeros(model.count_trainable_params(), dtype=np.float32)
        alone = []
        for _ in range(30):
            comm.barrier()
            began = time.perf_counter()
            comm.allreduce_sum_(buffer)
            alone.append(time.perf_counter() - began)
        result["allreduce_alone_ms"] = 1e3 * float(np.median(alone))
        result["allreduce_alone_gbit_per_s"] = (8 * 2 * (comm.size - 1) / comm.size * buffer.nbytes
                                                / float(np.median(alone)) / 1e9)
    if comm is None or comm.rank == 0:  # a file in the parent's temporary folder, written whole or not at all
        from tinynet import fileio

        fileio.write_json(args.json, result)


# ------------------------------------------------------------------------------------------ the cost model
def ring_allreduce_seconds(nbytes, ranks, bits_per_second):
    """``2 (N - 1) / N × bytes / bandwidth``: the bandwidth term of a ring all-reduce."""
    return 2.0 * (ranks - 1) / ranks * nbytes / (bits_per_second / 8.0)


def projection(nbytes, compute_ms):
    rows = []
    for link, bandwidth in LINKS:
        for ranks in RANKS:
            t_ar = 1e3 * ring_allreduce_seconds(nbytes, ranks, bandwidth)
            row = {"link": link, "gbit_per_s": bandwidth / 1e9, "ranks": ranks, "allreduce_ms": t_ar}
            for t_c in compute_ms:
                efficiency = t_c / (t_c + t_ar)
                row[f"efficiency_at_{t_c:g}ms"] = efficiency
                row[f"speedup_at_{t_c:g}ms"] = ranks * efficiency
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ driver
def _launch(args, ranks, global_batch, out):
    env = dict(os.environ, **{name: "1" for name in THREAD_VARIABLES})
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--ranks", str(ranks), "--global-batch",
           str(global_batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--kernels", args.kernels,
           "--json", out]
    # every run under mpiexec, each rank bound to a core (the one-rank run too: it runs the one-process code, with
    # no communicator, and unbound it loses time migrating between the cores: 108 ms against 61 ms per step
    # measured on this 2-core machine)
    cmd = [find_mpiexec()] + (["-bind-to", "core"] if args.bind else []) + ["-n", str(ranks)] + cmd
    subprocess.run(cmd, check=True, env=env, timeout=900)
    with open(out) as f:
        return json.load(f)


def find_mpiexec():
    """The ``mpiexec`` beside this Python (MPICH's wheel puts it there), else the one on ``PATH``, else None."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int(), default=16, help="per-rank batch B")
    parser.add_argument("--steps", type=positive_int(), default=15, help="timed steps per run")
    parser.add_argument("--warmup", type=non_negative_int(), default=3, help="untimed steps first (Numba compiles)")
    parser.add_argument("--kernels", default="numba", choices=["numpy", "numba"])
    parser.add_argument("--no-bind", dest="bind", action="store_false",
                        help="do not bind each rank to a core (default: each is bound, mpiexec -bind-to core)")
    parser.add_argument("--repeats", type=positive_int(), default=3,
                        help="run each configuration this many times, in turn; keep the fastest median")
    parser.add_argument("--compute-ms", type=number_list(positive_float()), default="669,100,25",
                        help="compute times per step for the projection (669: measured here; others assumed)")
    parser.add_argument("--out", type=output_folder, default=None,
                        help="folder for the JSON and the figure (default: benchmarks/results)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", type=positive_int(), default=1, help=argparse.SUPPRESS)
    parser.add_argument("--global-batch", type=positive_int(), default=16, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.out is None:  # checked here: a worker writes only its temporary JSON
        args.out = check(parser, "--out", os.path.join(ROOT, "benchmarks", "results"), output_folder)
    if args.kernels == "numba" and importlib.util.find_spec("numba") is None:
        parser.error("argument --kernels: numba is not installed")
    if find_mpiexec() is None or importlib.util.find_spec("mpi4py") is None:
        parser.error("every run is started by mpiexec, and the 2-rank run needs mpi4py: install them with "
                     "pip install -e '.[distributed]'")

    from tinynet import fileio

    load_before = os.getloadavg()
    configs = ((1, args.batch), (1, 2 * args.batch), (2, 2 * args.batch))
    tries = {config: [] for config in configs}
    with tempfile.TemporaryDirectory() as tmp:  # the configurations in turn, --repeats times (a shared machine)
        for repeat in range(args.repeats):
            for ranks, global_batch in configs:
                path = os.path.join(tmp, f"run_{ranks}_{global_batch}_{repeat}.json")
                tries[(ranks, global_batch)].append(_launch(args, ranks, global_batch, path))
    runs = [min(tries[config], key=lambda r: r["step_ms"]) for config in configs]  # the least disturbed run
    for config, run in zip(configs, runs):
        run["step_ms_of_each_repeat"] = [r["step_ms"] for r in tries[config]]
    load_after = os.getloadavg()
    one_b, one_2b, two = runs
    weak = two["images_per_s"] / one_b["images_per_s"]
    strong = one_2b["step_ms"] / two["step_ms"]

    print(f"small GoogLeNet, 32x32x1, float32, {args.kernels} kernels, one thread per rank"
          f"{', each bound to a core' if args.bind else ''}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print(f"{'ranks':>5} {'global batch':>12} {'per rank':>8} {'ms/step':>8} {'images/s':>9} "
          f"{'all-reduce ms (in step / alone)':>32} {'MB/step':>8}")
    for r in runs:
        ar = (f"{r['allreduce_in_step_ms']:.2f} / {r['allreduce_alone_ms']:.2f}" if r["ranks"] > 1 else "-")
        mb = f"{r['allreduce_bytes_per_step'] / 1e6:.2f}" if r["ranks"] > 1 else "-"
        print(f"{r['ranks']:>5} {r['global_batch']:>12} {r['per_rank_batch']:>8} {r['step_ms']:>8.1f} "
              f"{r['images_per_s']:>9.1f} {ar:>32} {mb:>8}")
    print(f"speed-up with 2 ranks: {weak:.2f}x images/s at {args.batch} per rank (weak scaling), "
          f"{strong:.2f}x at a global batch of {2 * args.batch} (strong scaling)")

    compute_ms = args.compute_ms
    nbytes = PAPER_PARAMS * 4
    rows = projection(nbytes, compute_ms)
    print(f"\nring all-reduce of GoogLeNet's gradients ({PAPER_PARAMS:,} float32 = {nbytes / 1e6:.1f} MB), no "
          f"overlap with backward; efficiency = T_c / (T_c + T_allreduce), speed-up = N x efficiency")
    header = f"{'link':<16} {'N':>3} {'all-reduce ms':>13}" + "".join(
        f" {f'eff. @ {t:g} ms':>14}" for t in compute_ms)
    print(header)
    for row in rows:
        print(f"{row['link']:<16} {row['ranks']:>3} {row['allreduce_ms']:>13.1f}" + "".join(
            f" {row[f'efficiency_at_{t:g}ms']:>8.2f} ({row[f'speedup_at_{t:g}ms']:>4.1f}x)" for t in compute_ms))

    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), "cpus": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": load_after, "kernels": args.kernels,
              "threads_per_rank": 1, "bound_to_cores": args.bind,
              "model": "googlenet small, 32x32x1, 10 classes, float32",
              "runs": runs, "speedup_weak": weak, "speedup_strong": strong,
              "projection": {"model": "googlenet paper, both aux heads", "params": PAPER_PARAMS,
                             "gradient_bytes": nbytes, "formula": "2 (N-1)/N * bytes / bandwidth",
                             "compute_ms": compute_ms,
                             "compute_ms_source": {"669": "measured: paper GoogLeNet train step, batch 8, Numba, "
                                                          "this 2-core CPU (README)",
                                                   "other": "assumed accelerator step times, not measured"},
                             "rows": rows}}
    os.makedirs(args.out, exist_ok=True)
    json_path = fileio.write_json(os.path.join(args.out, "distributed_bench.json"), result)
    png_path = plot(rows, compute_ms, two, os.path.join(args.out, "distributed_scaling.png"))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


def plot(rows, compute_ms, measured, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinynet import fileio

    fig, axes = plt.subplots(1, len(compute_ms), figsize=(4.2 * len(compute_ms), 3.8), sharey=True)
    for ax, t_c in zip(np.atleast_1d(axes), compute_ms):
        for link, _ in LINKS:
            mine = [r for r in rows if r["link"] == link]
            ax.plot([r["ranks"] for r in mine], [r[f"speedup_at_{t_c:g}ms"] for r in mine], "o-", label=link)
        ax.plot(RANKS, RANKS, "k:", label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(RANKS, [str(r) for r in RANKS])
        ax.set_yticks([1, 2, 4, 8, 16, 32, 64], ["1", "2", "4", "8", "16", "32", "64"])
        source = "measured CPU step" if t_c == 669 else "assumed"
        ax.set_title(f"compute {t_c:g} ms/step ({source})", fontsize=9)
        ax.set_xlabel("ranks N")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("speed-up over 1 rank (weak scaling)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("GoogLeNet (13.4 M params, 53.5 MB float32 gradients), ring all-reduce 2(N-1)/N·B/β, no overlap; "
                 f"measured here: 2 ranks, all-reduce of {measured['allreduce_bytes_per_step'] / 1e6:.2f} MB in "
                 f"{measured['allreduce_alone_ms']:.2f} ms", fontsize=8)
    fig.tight_layout()
    fileio.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
