"""Plots of the committed benchmark results (PNG, under ``benchmarks/results/``).

Usage (from the repository root)::

    python benchmarks/plot_results.py                  # newest results in benchmarks/results/, PNGs beside them
    python benchmarks/plot_results.py --results DIR --out DIR

Reads the JSON that ``bench_kernels.py`` (``bench_*.json``) and ``profile_step.py`` (``profile_*.json``) wrote
and draws, with matplotlib's ``Figure`` (no pyplot), saved through :func:`tinynet.fileio.save_figure`:

* ``layers_by_backend.png``: time per layer type, forward and backward, NumPy / Numba / PyTorch CPU, from the
  newest ``bench_*.json`` that has per-layer rows. Each distinct layer's time is multiplied by how often it
  occurs in ``googlenet(variant='paper')``, so a bar is that layer type's share of one pass of the network at
  the file's layer batch.
* ``step_time_vs_batch.png``: train-step time (and per image) against the batch size for every backend and
  batch any ``bench_*.json`` holds (the newest file wins for each backend and batch); the title says which
  batch sizes are missing for which backend.
* ``peak_memory.png``: from the newest ``profile_<kernels>_*.json`` of each backend: RSS before the train steps,
  peak RSS during them, what the forward keeps for backward, the tracemalloc peak.
* ``profile_breakdown.png``: the profile by group (GEMM, im2col/col2im, pooling, LRN, ReLU, copies, other
  elementwise, loss + optimizer, framework), one stacked bar per backend, and per layer type for each backend.
* ``versus_torch.png``: from the newest :data:`VERSUS_RUNS` ``versus_torch_*.json`` (``versus_torch.py``):
  tinynet's time over PyTorch's for each case and round, against the goals of issue 13, and the peak memory of
  the train steps.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from matplotlib.figure import Figure  # noqa: E402

from tinynet import fileio  # noqa: E402

from _args import OneLineParser, check, input_folder, output_folder  # noqa: E402

DPI = 90
BACKEND_COLORS = {"numpy": "#4c72b0", "numba": "#dd8452", "torch": "#55a868", "cupy": "#c44e52",
                  "torch-cuda": "#8172b2"}
GROUP_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c",
                "#ccb974", "#64b5cd"]


class BadResults(ValueError):
    """A results file that cannot be read or is not JSON; the message names it."""


def load(path):
    """The content of the JSON file ``path``; `BadResults` if it cannot be read or is not JSON."""
    try:
        with fileio.open_regular(path) as f:  # a FIFO or a device is refused, not waited on
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as error:  # json.JSONDecodeError, UnicodeDecodeError, FileFormatError, long ints
        raise BadResults(f"{path}: not a readable JSON file ({str(error)[:200]})") from None
    except RecursionError:
        raise BadResults(f"{path}: not a readable JSON file (it nests too deeply)") from None


def newest(paths):
    """``(data, path)`` of the JSON of ``paths`` with the latest ``date`` (``(None, None)`` if none)."""
    found = [(load(p), p) for p in paths]
    return max(found, key=lambda dp: dp[0].get("date", "")) if found else (None, None)


def load_text(values):
    return "/".join(f"{v:.1f}" for v in values) if values else "?"


# -------------------------------------------------------------------------------------- layers by backend
def layer_kind(name):
    """``Conv2D 3x3/1 128 on 28x28x96`` → ``Conv2D 3x3``; ``MaxPool2D 3x3/2 same on ...`` → ``MaxPool2D 3x3/2``."""
    head = name.split(" on ")[0].split()
    if head[0] in ("Conv2D", "MaxPool2D", "AvgPool2D"):
        size = head[1][:-2] if head[1].endswith("/1") else head[1]
        return f"{head[0]} {size}"
    return head[0]


def occurrences():
    """How often each ``bench_kernels.describe`` label occurs in the paper GoogLeNet."""
    from bench_kernels import TIMED_LAYERS, describe

    from inception import googlenet

    model = googlenet(variant="paper")
    counts = collections.Counter()
    for node in model.nodes:
        if isinstance(node.layer, TIMED_LAYERS):
            counts[describe(node.layer, node.inputs[0].example_shape)] += 1
    return counts


def plot_layers(bench, path, out):
    counts = occurrences()
    totals = collections.defaultdict(float)          # (kind, pass, backend) -> ms
    backends = []
    for r in bench["rows"]:
        if r["kind"] != "layer":
            continue
        if r["backend"] not in backends:
            backends.append(r["backend"])
        totals[(layer_kind(r["name"]), r["pass_"], r["backend"])] += r["ms"] * counts.get(r["name"], 1)
    kinds = sorted({k for k, _, _ in totals}, key=lambda k: -max(totals[(k, p, b)] for p in ("forward", "backward")
                                                                  for b in backends))
    fig = Figure(figsize=(10, 0.42 * len(kinds) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    height = 0.8 / len(backends)
    for ax, pass_ in zip(axes, ("forward", "backward")):
        for i, b in enumerate(backends):
            ys = [j + (i - (len(backends) - 1) / 2) * height for j in range(len(kinds))]
            ax.barh(ys, [totals[(k, pass_, b)] for k in kinds], height=height, label=b,
                    color=BACKEND_COLORS.get(b))
        ax.set_xscale("log")
        ax.set_title(pass_)
        ax.set_xlabel("ms per network pass (log scale)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(kinds)), kinds)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right")
    fig.suptitle(f"GoogLeNet (paper) time per layer type, batch {bench['layer_batch']}, "
                 f"{bench['cpus']} CPUs, load {load_text(bench.get('load_average'))} ({pathlib.Path(path).name})",
                 fontsize=9)
    fig.tight_layout()
    return fileio.save_figure(fig, out / "layers_by_backend.png", dpi=DPI)


# ------------------------------------------------------------------------------------- step vs batch size
def network_times(paths):
    """Train-step times from every bench JSON: ``{(backend, day): {batch: row}}``, the newest file winning for
    each backend, day and batch; a row is ``dict(ms, date, load, gflops)`` (``gflops``: that file's measured
    matmul rate, which tells a faster host from a slower one)."""
    found = collections.defaultdict(dict)
    for p in paths:
        d = load(p)
        for r in d["rows"]:
            m = re.search(r"GoogLeNet train step \(batch (\d+)\)", r["name"])
            if r["kind"] != "network" or not m:
                continue
            series, batch = (r["backend"], d["date"][:10]), int(m.group(1))
            old = found[series].get(batch)
            if old is None or d["date"] > old["date"]:
                found[series][batch] = dict(ms=r["ms"], date=d["date"], load=d.get("load_average"),
                                            gflops=(d.get("matmul_gflops") or {}).get(r["backend"]))
    return found


def plot_batches(paths, out, wanted=(1, 8, 32)):
    times = network_times(paths)
    order = list(BACKEND_COLORS)
    series = sorted(times, key=lambda s: (s[1], order.index(s[0]) if s[0] in order else 99))
    days = sorted({day for _, day in series})
    styles = ["o--", "s-", "^-.", "d:"]
    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
    for backend, day in series:
        points = times[(backend, day)]
        batches = sorted(points)
        ms = [points[n]["ms"] for n in batches]
        loads = ", ".join(f"{points[n]['load'][0]:.1f}" for n in batches if points[n]["load"])
        rates = sorted({round(points[n]["gflops"]) for n in batches if points[n]["gflops"]})
        label = (f"{'PyTorch CPU' if backend == 'torch' else 'tinynet ' + backend} {day} "
                 f"(matmul {'/'.join(map(str, rates))} GFLOP/s; load {loads})")
        for ax, ys in zip(axes, (ms, [t / n for t, n in zip(ms, batches)])):
            ax.plot(batches, ys, styles[days.index(day) % len(styles)], color=BACKEND_COLORS.get(backend),
                    label=label, alpha=1.0 if day == days[-1] else 0.6)
            for n, y in zip(batches, ys):
                ax.annotate(f"{y:.0f}", (n, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    missing = []
    for backend in dict.fromkeys(b for b, _ in series):
        have = {n for (b, _), points in times.items() if b == backend for n in points}
        lacking = [n for n in wanted if n not in have]
        if lacking:
            missing.append(f"{'PyTorch' if backend == 'torch' else backend}: batch {', '.join(map(str, lacking))}")
    all_batches = sorted({n for points in times.values() for n in points})
    for ax, title in zip(axes, ("train step (ms)", "train step per image (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(all_batches, [str(n) for n in all_batches])
        ax.set_xlabel("batch size")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", fontsize=7, ncol=2)
    note = "; ".join(missing) if missing else "none"
    fig.suptitle("GoogLeNet (paper, both aux heads, 224x224) train step against batch size, 2-core shared VM; "
                 f"compare within one day (one host)\nnot measured: {note}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(series) + 1) // 2), 1, 1))
    return fileio.save_figure(fig, out / "step_time_vs_batch.png", dpi=DPI), missing


# ----------------------------------------------------------------------------------------- peak memory
def plot_memory(profiles, out):
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    names = list(profiles)
    series = [("RSS with the model built", lambda p: p["memory"]["rss_before_mib"]),
              ("peak RSS in the first 3 train steps", lambda p: p["memory"]["peak_rss_mib"]),
              ("kept by the forward for backward", lambda p: p["allocation"]["kept_mib"]),
              ("tracemalloc peak", lambda p: p["memory"]["tracemalloc_peak_mib"])]
    width = 0.8 / len(series)
    for i, (label, get) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        values = [get(profiles[n]) or 0 for n in names]
        ax.bar(xs, values, width=width, label=label, color=GROUP_COLORS[i])
        for x, v in zip(xs, values):
            ax.annotate(f"{v:.0f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), [f"tinynet {n}" for n in names])
    ax.set_ylabel("MiB")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    p = next(iter(profiles.values()))
    ax.set_title(f"Memory of a GoogLeNet train step, batch {p['batch']} ({p['image_size']}x{p['image_size']}); "
                 "PyTorch not measured here.\n(RSS counts the process: Python, NumPy, Numba's compiler; "
                 "tracemalloc only NumPy's buffers)", fontsize=9)
    fig.tight_layout()
    return fileio.save_figure(fig, out / "peak_memory.png", dpi=DPI)


# ----------------------------------------------------------------------------------- profile breakdown
def plot_profile(profiles, out):
    from profile_step import GROUPS

    names = list(profiles)
    fig = Figure(figsize=(10, 2.0 + 3.2 * len(names)))
    axes = fig.subplots(1 + len(names), 1, gridspec_kw=dict(height_ratios=[0.5 + 0.35 * len(names)]
                                                             + [4] * len(names)))
    ax = axes[0]
    for j, n in enumerate(names):
        p = profiles[n]
        total = p["step_ms"]["profiled_sum_of_minima"]
        left = 0.0
        for g, color in zip(GROUPS, GROUP_COLORS):
            v = p["groups_ms"].get(g, 0.0)  # a profile from before a group existed has none of it
            ax.barh(j, v, left=left, color=color, label=g if j == 0 else None)
            if v / total > 0.04:
                ax.text(left + v / 2, j, f"{v / total:.0%}", ha="center", va="center", fontsize=7, color="white")
            left += v
        ax.text(left, j, f" {total:.0f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), [f"tinynet {n}" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("ms per train step (sum of per-region minima)")
    ax.legend(ncol=5, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.45 - 0.1 * len(names)))
    parts = [("GEMM", "gemm_ms"), ("kernels", "kernels_ms"), ("activation", "activation_ms"),
             ("other math", "other_ms"), ("checks", "checks_ms")]
    for ax, n in zip(axes[1:], names):
        p = profiles[n]
        per = collections.defaultdict(lambda: collections.defaultdict(float))
        for t in p["layers"]:
            for label, key in parts:
                per[t["layer"]][label] += t[key]
        kinds = sorted(per, key=lambda k: -sum(per[k].values()))
        kinds = [k for k in kinds if sum(per[k].values()) >= 1.0]
        left = [0.0] * len(kinds)
        for (label, _), color in zip(parts, ("#4c72b0", "#c44e52", "#8172b2", "#da8bc3", "#8c8c8c")):
            vs = [per[k][label] for k in kinds]
            ax.barh(range(len(kinds)), vs, left=left, color=color, label=label)
            left = [a + b for a, b in zip(left, vs)]
        ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ms per train step, forward + backward")
        ax.set_title(f"{n} kernels: per layer type (load {load_text(p['load_average_start'])} at start)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
    p = next(iter(profiles.values()))
    fig.suptitle(f"Where a GoogLeNet ({p['variant']}) train step goes: batch {p['batch']}, "
                 f"{p['image_size']}x{p['image_size']}, {p['cpus']} CPUs (benchmarks/profile_step.py)", fontsize=9)
    fig.tight_layout()
    return fileio.save_figure(fig, out / "profile_breakdown.png", dpi=DPI)


#: how many of the newest ``versus_torch_*.json`` runs ``versus_torch.png`` shows (older ones stay in the folder)
VERSUS_RUNS = 6


def plot_versus_torch(runs, out):
    """Left: tinynet / PyTorch time per case, one bar per round of every ``versus_torch_*.json`` (``runs``: a
    list of ``(data, path)``), with the goal; right: the process's peak memory while training, split into the
    resident set of the imports and the built model and the train steps' own peak above it (hatched), with the
    steps' tinynet / PyTorch ratio."""
    fig = Figure(figsize=(11, 4.2))
    ax, mem = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rows = []
    for data, path in runs:
        when = data.get("date", path.stem)[11:16]
        rows += [dict(r, label=f"{when} r{r['round']}") for r in data["summary"]]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        got = {r["case"]: r for r in rows if r["label"] == label}
        xs = [i + (k - (len(labels) - 1) / 2) * width for i, c in enumerate(cases) if c in got]
        ratios = [got[c]["ratio"] for c in cases if c in got]
        ax.bar(xs, ratios, width=width, color=GROUP_COLORS[k % len(GROUP_COLORS)], label=label)
        for x, v in zip(xs, ratios):
            ax.annotate(f"{v:.2f}", (x, v), ha="center", va="bottom", fontsize=6)
    goals = {r["case"]: r["goal"] for r in rows}
    for i, c in enumerate(cases):
        ax.plot([i - 0.45, i + 0.45], [goals[c]] * 2, color="black", linestyle="--", linewidth=1)
    ax.axhline(1.0, color="#888888", linewidth=0.8)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("tinynet time / PyTorch time")
    ax.set_title("GoogLeNet (paper), 224x224, float32, 2 CPUs\n(dashed: the goal; below 1: tinynet faster)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    train = [r for r in rows if "memory_ratio" in r]
    labels = [f"{r['case']} {r['label']}" for r in train]
    xs = range(len(train))
    for j, engine in enumerate(["tinynet", "torch"]):
        name, color = ("tinynet", BACKEND_COLORS["numba"]) if j == 0 else ("PyTorch", BACKEND_COLORS["torch"])
        at = [x + (j - 0.5) * 0.4 for x in xs]
        step = [r[f"{engine}_step_peak_mib"] for r in train]
        before = [max(r[f"{engine}_process_peak_mib"] - s, 0.0) for r, s in zip(train, step)]
        mem.bar(at, before, width=0.4, color=color, alpha=0.35, label=f"{name}: imports + built model")
        mem.bar(at, step, width=0.4, bottom=before, color=color, hatch="//", edgecolor="white",
                label=f"{name}: train steps (above it)")
    for x, r in zip(xs, train):  # the steps' own ratio, the stricter one
        top = max(r["tinynet_process_peak_mib"], r["torch_process_peak_mib"])
        mem.annotate(f"{r['memory_ratio']:.2f}", (x, top), ha="center", va="bottom", fontsize=6)
    mem.set_xticks(list(xs), labels, fontsize=6, rotation=30, ha="right")
    mem.set_ylabel("peak RSS of the process (MiB)")
    mem.set_title("Peak memory while training; above each pair: tinynet / PyTorch\nof the steps' own part "
                  "(hatched; goal <= 0.8)", fontsize=9)
    tops = [max(r["tinynet_process_peak_mib"], r["torch_process_peak_mib"]) for r in train]
    mem.set_ylim(0, 1.5 * max(tops, default=1.0))  # room for the legend above the bars
    mem.legend(fontsize=6, loc="upper left", ncol=2)
    names = textwrap.wrap(", ".join(path.name for _, path in runs), 150)  # a line per few runs
    fig.suptitle("benchmarks/versus_torch.py, the newest runs:\n" + "\n".join(names), fontsize=7)
    fig.tight_layout()
    return fileio.save_figure(fig, out / "versus_torch.png", dpi=DPI)


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=input_folder, default=str(ROOT / "benchmarks" / "results"),
                        help="folder with the JSON")
    parser.add_argument("--out", type=output_folder, default=None, help="folder for the PNGs (default: --results)")
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    if args.out is None:  # the PNGs go beside the JSON
        check(parser, "--results", args.results, output_folder)
    benches = sorted(results.glob("bench_*.json"))
    profile_files = {kernels: sorted(results.glob(f"profile_{kernels}_*.json")) for kernels in ("numpy", "numba")}
    versus_files = sorted(results.glob("versus_torch_*.json"))[-VERSUS_RUNS:]
    for path in benches + profile_files["numpy"] + profile_files["numba"] + versus_files:
        try:  # every file the plots read, before anything is drawn
            load(path)
        except BadResults as error:
            parser.error(f"argument --results: {error}")
    out = pathlib.Path(args.out) if args.out else results
    out.mkdir(parents=True, exist_ok=True)
    written = []
    layer_files = [p for p in benches if any(r["kind"] == "layer" for r in load(p)["rows"])]
    bench, path = newest(layer_files)
    if bench:
        written.append(plot_layers(bench, path, out))
    else:
        print("no bench_*.json with per-layer rows: layers_by_backend.png not drawn")
    if benches:
        png, missing = plot_batches(benches, out)
        written.append(png)
        for line in missing:
            print(f"step time against batch size: {line}")
    profiles = {}
    for kernels in ("numpy", "numba"):
        d, _ = newest(profile_files[kernels])
        if d:
            profiles[kernels] = d
    if profiles:
        written.append(plot_memory(profiles, out))
        written.append(plot_profile(profiles, out))
    else:
        print("no profile_*.json: peak_memory.png and profile_breakdown.png not drawn")
    versus = [(load(p), p) for p in versus_files]
    if versus:
        written.append(plot_versus_torch(versus, out))
    else:
        print("no versus_torch_*.json: versus_torch.png not drawn")
    for w in written:
        print(f"wrote {w}")
    return written


if __name__ == "__main__":
    main()
