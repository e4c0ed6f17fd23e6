"""tinynet against PyTorch on the CPU, interleaved in one run: train step, inference and peak memory.

Usage (from the repository root)::

    python benchmarks/versus_torch.py                          # 2 rounds: train b8, train b32, infer b8, infer b1
    python benchmarks/versus_torch.py --rounds 1 --cases train8,infer8
    python benchmarks/versus_torch.py --kernels numpy          # tinynet's NumPy kernels instead of Numba

The network is GoogLeNet as the paper defines it, both aux heads in training (aux loss weight 0.3), 224×224,
float32, SGD with momentum 0.9: ``inception.googlenet(variant='paper')`` against
``benchmarks/torch_googlenet.py`` (the same layers in PyTorch, NCHW, PyTorch's default CPU kernels). Inference
drops the aux heads in both.

How it measures
---------------
* Every measurement is a **fresh process** (``--worker``), so one engine's heap, threads and caches never
  slow the other, and each process's memory is its own. Each round runs every case for both engines,
  alternating which goes first, so a slow patch of a shared machine hits both; the table gives every round.
* In a worker: build the model, run ``--warmup`` steps (Numba's compiled kernels load from its disk cache;
  the allocator's heap grows to its steady size), then time ``--steps`` steps and keep the **minimum** (another
  process only ever makes a step slower). Both engines use all the machine's cores
  (``torch.set_num_threads``; NumPy's BLAS and Numba default to them).
* **Memory:** the peak resident set (``VmHWM`` from ``/proc/self/status``) while the train steps run, reset
  after the model is built (``/proc/self/clear_refs``), minus the resident set of the built model: the memory
  a train step itself needs (activations kept for backward, gradients, temporaries, the optimizer's state).
  The process's whole peak (imports and model included) is reported beside it.
* **GFLOP/s** counts 2 flops per multiply-add: inference 2·MACs per image, a train step 6·MACs per image
  (forward, and backward's two products per layer), MACs of ``model.count_macs()`` (aux heads included in
  training). "of matmul" divides by the float32 matrix-product rate NumPy's BLAS reaches on a 2048² product,
  measured before and after each round (the better of the two).

Output: a table on stdout and ``benchmarks/results/versus_torch_<date>_<host>.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

CASES = {  # name: (train?, batch, warm-up steps, timed steps)
    "train8": (True, 8, 3, 5),
    "train32": (True, 32, 2, 3),
    "infer8": (False, 8, 3, 7),
    "infer1": (False, 1, 5, 20),
}
GOALS = {"train8": 0.7, "train32": 0.7, "infer8": 0.5, "infer1": 0.7}  # issue 13: tinynet / PyTorch at most


# ------------------------------------------------------------------------------------------- in a worker
def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def _tinynet_case(train, batch, kernels):
    sys.path[:0] = [str(ROOT)]
    import tinynet
    from tinynet import losses, optimizers

    from inception import googlenet

    tinynet.set_cpu_kernels(kernels)
    tinynet.set_seed(0)
    model = googlenet(variant="paper", aux=train)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 224, 224, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, batch)
    if not train:
        return lambda: model(x)
    opt = optimizers.SGD(learning_rate=0.01, momentum=0.9).attach(model)

    def step():
        outputs = model.forward(x, training=True)
        _, _, grads = losses.weighted_loss(outputs, labels, [0.3, 0.3, 1.0])
        model.clear_gradients()  # as fit() does, and as the PyTorch step's zero_grad() before its backward
        model.backward(grads, input_grads=False, retain_tape=False)  # as fit() does
        opt.step()
    return step


def _torch_case(train, batch):
    sys.path[:0] = [str(ROOT / "benchmarks")]
    import torch
    import torch.nn.functional as F
    from torch_googlenet import GoogLeNet

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    net = GoogLeNet(aux=train)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    if not train:
        net.eval()

        def infer():
            with torch.no_grad():
                net(x)
        return infer
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        aux1, aux2, main = net(x)
        loss = F.cross_entropy(main, y) + 0.3 * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def network_flops(case):
    """GFLOP of one step of ``case``: 2 per multiply-add of the paper GoogLeNet (the same network in both engines;
    aux heads in training), 3 times that for a train step."""
    sys.path[:0] = [str(ROOT)]
    from inception import googlenet
    train, batch, _, _ = CASES[case]
    macs = googlenet(variant="paper", aux=train).count_macs() * batch
    return (6 if train else 2) * macs / 1e9


def worker(engine, case, kernels):
    train, batch, warmup, steps = CASES[case]
    rss_start = _status_kib("VmRSS")
    fn = _tinynet_case(train, batch, kernels) if engine == "tinynet" else _torch_case(train, batch)
    rss_built = _status_kib("VmRSS")
    peak_before = _status_kib("VmHWM")
    reset = _reset_peak()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak_steps = _status_kib("VmHWM")
    return dict(engine=engine, case=case, ms=min(times) * 1e3, all_ms=[t * 1e3 for t in times],
                rss_start_mib=rss_start / 1024, rss_built_mib=rss_built / 1024,
                step_peak_mib=(peak_steps - rss_built) / 1024 if reset else None,
                process_peak_mib=max(peak_before, peak_steps) / 1024)


# --------------------------------------------------------------------------------------------- the driver
def run_worker(engine, case, kernels, timeout):
    cmd = [sys.executable, __file__, "--worker", engine, "--case", case, "--kernels", kernels]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"versus_torch: the {engine} worker for {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def worker_main(argv):
    """Run one worker (``--worker ENGINE --case CASE --kernels K``, as `run_worker` writes it) and print its JSON.

    A parser of its own, with the standard library's argparse: the driver's checks (`main`) import tinynet, which a
    PyTorch worker must not (its peak memory counts its imports).
    """
    parser = argparse.ArgumentParser(prog="versus_torch.py --worker")
    parser.add_argument("--worker", choices=("tinynet", "torch"), required=True)
    parser.add_argument("--case", choices=tuple(CASES), required=True)
    parser.add_argument("--kernels", choices=("numba", "numpy"), default="numba")
    args = parser.parse_args(argv)
    print(json.dumps(worker(args.worker, args.case, args.kernels)))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker_main(argv)
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from _args import OneLineParser, name_list, output_folder, positive_int

    parser = OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=positive_int(), default=2)
    parser.add_argument("--cases", type=name_list(tuple(CASES)), default=",".join(CASES),
                        help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--kernels", choices=("numba", "numpy"), default="numba", help="tinynet's CPU kernels")
    parser.add_argument("--out", type=output_folder, default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--timeout", type=positive_int(), default=900, help="seconds per worker")
    args = parser.parse_args(argv)
    if args.kernels == "numba" and importlib.util.find_spec("numba") is None:
        parser.error("argument --kernels: numba is not installed")
    if importlib.util.find_spec("torch") is None:
        parser.error("PyTorch is not installed, nothing to compare with (pip install -e '.[bench]')")
    cases = args.cases
    from profile_step import matmul_rate  # the driver only: a worker imports nothing but its own engine

    gflop = {case: network_flops(case) for case in cases}
    rounds = []
    for r in range(args.rounds):
        before = matmul_rate()
        results = {"round": r + 1, "load_before": _load(), "runs": []}
        print(f"round {r + 1}: float32 matmul {before:.0f} GFLOP/s, load {results['load_before']}", flush=True)
        for i, case in enumerate(cases):
            order = ("tinynet", "torch") if (r + i) % 2 == 0 else ("torch", "tinynet")
            for engine in order:
                res = run_worker(engine, case, args.kernels, args.timeout)
                res["gflop"] = gflop[case]
                results["runs"].append(res)
                mem = f", step peak {res['step_peak_mib']:.0f} MiB" if CASES[case][0] else ""
                print(f"  {case:8s} {engine:8s} {res['ms']:9.1f} ms{mem}", flush=True)
        after = matmul_rate()
        # the machine's rate: the better of the two measurements (a slow patch of the host during one of them
        # would otherwise count as the machine's own speed, and a step could show over 100 % of it)
        rate = max(before, after)
        results.update(matmul_gflops=rate, matmul_gflops_before=before, matmul_gflops_after=after,
                       load_after=_load())
        for res in results["runs"]:
            res["of_matmul"] = res["gflop"] / (res["ms"] / 1e3) / rate
        print(f"  float32 matmul after the round {after:.0f} GFLOP/s; the shares below use {rate:.0f}", flush=True)
        rounds.append(results)
    summary = summarize(rounds, cases)
    print_summary(summary, args.kernels)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    host = platform.node() or "host"
    from tinynet import fileio
    path = out / f"versus_torch_{stamp}_{host}.json"
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    fileio.write_json(path, {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine,
                             "kernels": args.kernels, "cases": cases, "rounds": rounds, "summary": summary})
    print(f"wrote {path}")
    return 0


def summarize(rounds, cases):
    """Per case and round: both times, the ratio tinynet/PyTorch, tinynet's share of the matmul rate, memory."""
    rows = []
    for case in cases:
        for res in rounds:
            runs = {r["engine"]: r for r in res["runs"] if r["case"] == case}
            tn, th = runs["tinynet"], runs["torch"]
            row = dict(case=case, round=res["round"], tinynet_ms=tn["ms"], torch_ms=th["ms"],
                       ratio=tn["ms"] / th["ms"], goal=GOALS[case], tinynet_of_matmul=tn["of_matmul"],
                       torch_of_matmul=th["of_matmul"])
            if CASES[case][0] and tn["step_peak_mib"] is not None and th["step_peak_mib"] is not None:
                row.update(tinynet_step_peak_mib=tn["step_peak_mib"], torch_step_peak_mib=th["step_peak_mib"],
                           memory_ratio=tn["step_peak_mib"] / th["step_peak_mib"],
                           tinynet_process_peak_mib=tn["process_peak_mib"],
                           torch_process_peak_mib=th["process_peak_mib"])
            rows.append(row)
    return rows


def print_summary(rows, kernels):
    print(f"\ntinynet ({kernels} kernels) / PyTorch {'(< 1: tinynet faster)'}")
    print(f"{'case':8s} {'round':>5s} {'tinynet ms':>11s} {'torch ms':>9s} {'ratio':>6s} {'goal':>5s} "
          f"{'of matmul':>9s} {'step MiB':>9s} {'torch MiB':>9s} {'mem':>5s}")
    for r in rows:
        mem = (f"{r['tinynet_step_peak_mib']:9.0f} {r['torch_step_peak_mib']:9.0f} {r['memory_ratio']:5.2f}"
               if "memory_ratio" in r else "")
        print(f"{r['case']:8s} {r['round']:5d} {r['tinynet_ms']:11.1f} {r['torch_ms']:9.1f} {r['ratio']:6.2f} "
              f"{r['goal']:5.2f} {r['tinynet_of_matmul']:9.0%} {mem}")


if __name__ == "__main__":
    sys.exit(main())
