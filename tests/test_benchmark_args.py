"""The benchmark scripts refuse a bad command line in one line with exit code 2, before anything is measured.

Each case runs ``python benchmarks/<script>.py`` as a subprocess from the repository root, as its docstring says
to, with one bad value: it must end at once (nothing on stdout: no model built, nothing timed) with exit code 2
and one line ``<script>: error: ...`` on stderr that names the argument. A few valid runs that cost next to
nothing (``--help``, ``profile_step.py --from-json``, ``plot_results.py``, a tiny ``blas_threads.py``) show that
the checks let good values through; the benchmarks themselves are never run here.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SCRIPTS = ["bench_kernels.py", "profile_step.py", "versus_torch.py", "kernel_timings.py", "plot_results.py",
           "blas_threads.py", "distributed_bench.py", "aux_gradients.py", "gpu_step_profile.py"]
TIMEOUT = 60  # seconds: a parse error takes well under one; a benchmark that started would take minutes


def run(*args, code=None):
    """Run ``python benchmarks/<args[0]> args[1:]`` (or ``python -c code``) from the repository root."""
    command = [sys.executable, "-c", code] if code else [sys.executable, os.path.join("benchmarks", args[0]),
                                                         *args[1:]]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def paths(tmp_path):
    """The paths the bad cases name, by placeholder: a plain file, a text file that is not JSON, ..."""
    text = tmp_path / "notes.txt"
    text.write_text("not JSON\n")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]\n")
    broken = tmp_path / "broken_results"
    broken.mkdir()
    (broken / "bench_20990101-000000_vm.json").write_text('{"rows": [')
    deep = tmp_path / "deep.json"  # Python's parser: RecursionError (not a ValueError) before the fix
    deep.write_text("[" * 200_000 + "]" * 200_000)
    huge = tmp_path / "huge.json"  # an integer of more than 4300 digits: ValueError
    huge.write_text('{"a": ' + "9" * 5000 + "}")
    deep_results = tmp_path / "deep_results"
    deep_results.mkdir()
    (deep_results / "bench_20990101-000000_vm.json").write_text("[" * 200_000 + "]" * 200_000)
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root may write in any folder it can name: /proc takes no new files even from root
        unwritable = "/proc"
    else:
        locked.chmod(0o500)
        unwritable = str(locked)
    yield {"file": str(text), "text": str(text), "list": str(listed), "folder": str(tmp_path),
           "missing": str(tmp_path / "nothing-here"), "broken": str(broken), "unwritable": unwritable,
           "deep": str(deep), "huge": str(huge), "deep_results": str(deep_results),
           "bench_json": os.path.join(RESULTS, "bench_20261128-044500_vm.json")}
    locked.chmod(0o700)


BAD = {
    "bench_kernels.py": [
        (["--batch", "-1"], "--batch"), (["--batch", "0"], "--batch"), (["--batch", "eight"], "--batch"),
        (["--step-batch", "0"], "--step-batch"), (["--repeats", "0"], "--repeats"),
        (["--backends", "numpy,tpu"], "--backends"), (["--backends", ""], "--backends"),
        (["--backends", "numpy,numpy"], "--backends"), (["--torch-device", "tpu"], "--torch-device"),
        (["--out", "{file}"], "--out"), (["--out", "{unwritable}"], "--out"),
    ],
    "profile_step.py": [
        (["--batch", "0"], "--batch"), (["--steps", "0"], "--steps"), (["--warmup", "0"], "--warmup"),
        (["--image-size", "3"], "--image-size"), (["--image-size", "0"], "--image-size"),
        (["--image-size", "100000"], "--image-size"), (["--variant", "huge"], "--variant"),
        (["--kernels", "fast"], "--kernels"), (["--min-ms", "-1"], "--min-ms"), (["--out", "{file}"], "--out"),
        (["--from-json", "{missing}"], "--from-json"), (["--from-json", "{folder}"], "--from-json"),
        (["--from-json", "{text}"], "--from-json"), (["--from-json", "{list}"], "--from-json"),
        (["--from-json", "{bench_json}"], "--from-json"), (["--from-json", "{deep}"], "--from-json"),
        (["--from-json", "{huge}"], "--from-json"),
    ],
    "versus_torch.py": [
        (["--rounds", "0"], "--rounds"), (["--timeout", "-5"], "--timeout"), (["--timeout", "0"], "--timeout"),
        (["--cases", "train8,bogus"], "--cases"), (["--cases", ""], "--cases"),
        (["--cases", "train8,train8"], "--cases"), (["--kernels", "fast"], "--kernels"),
        (["--out", "{file}"], "--out"), (["--out", "{unwritable}"], "--out"),
    ],
    "kernel_timings.py": [
        (["--repeats", "0"], "--repeats"), (["--only", "bogus"], "--only"), (["--only", ""], "--only"),
        (["--threads", "0"], "--threads"), (["--threads", "100000"], "--threads"),
        (["--baseline", "no-such-revision"], "--baseline"),
    ],
    "plot_results.py": [
        (["--results", "{missing}"], "--results"), (["--results", "{file}"], "--results"),
        (["--results", "{broken}"], "--results"), (["--results", "{unwritable}"], "--results"),
        (["--results", "{deep_results}"], "--results"),
        (["--out", "{file}"], "--out"), (["--out", "{unwritable}"], "--out"),
    ],
    "blas_threads.py": [
        (["--calls", "0"], "--calls"), (["--calls", "99999999999999999999"], "--calls"),
        (["--batch", "0"], "--batch"), (["--rows", "-1"], "--rows"),
        (["--inner", "0"], "--inner"), (["--cols", "x"], "--cols"),
        (["--batch", "100000", "--rows", "100000"], "--batch"),
    ],
    "distributed_bench.py": [
        (["--batch", "0"], "--batch"), (["--steps", "0"], "--steps"), (["--warmup", "-1"], "--warmup"),
        (["--repeats", "0"], "--repeats"), (["--compute-ms", "669,-1"], "--compute-ms"),
        (["--compute-ms", "abc"], "--compute-ms"), (["--compute-ms", ""], "--compute-ms"),
        (["--compute-ms", "25,25"], "--compute-ms"), (["--out", "{file}"], "--out"),
    ],
    "gpu_step_profile.py": [
        (["--batch", "0"], "--batch"), (["--batch", "eight"], "--batch"), (["--repeats", "0"], "--repeats"),
        (["--top", "-3"], "--top"),
    ],
    "aux_gradients.py": [
        (["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"), (["--every", "0"], "--every"),
        (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--aux-weight", "-1"], "--aux-weight"),
        (["--seed", "-1"], "--seed"), (["--kernels", "fast"], "--kernels"), (["--out", "{folder}"], "--out"),
        (["--out", "{file}/figure.png"], "--out"), (["--out", "figure.txt"], "--out"),
    ],
}
CASES = [pytest.param(script, args, option, id=f"{script[:-3]} {' '.join(args) or 'empty'}")
         for script, cases in BAD.items() for args, option in cases]


@pytest.mark.parametrize("script, args, option", CASES)
def test_a_bad_value_ends_in_one_line_before_any_work(script, args, option, paths):
    done = run(script, *[arg.format(**paths) for arg in args])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    assert option in lines[0], lines[0]
    assert done.stdout == ""  # nothing was started: every script prints what it is about to time first


def test_every_script_is_covered():
    found = sorted(name for name in os.listdir(os.path.join(ROOT, "benchmarks"))
                   if name.endswith(".py") and not name.startswith("_") and name != "torch_googlenet.py")
    assert found == sorted(SCRIPTS) == sorted(BAD)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")


@pytest.mark.parametrize("script, args", [
    ("bench_kernels.py", ["--batch", "0"]), ("versus_torch.py", ["--rounds", "0"]),
    ("profile_step.py", ["--image-size", "3"]),
])
def test_a_parse_error_imports_no_torch(script, args):
    code = (f"import runpy, sys\nsys.argv = {[script, *args]!r}\nsys.path.insert(0, 'benchmarks')\n"
            f"try:\n    runpy.run_path({os.path.join('benchmarks', script)!r}, run_name='__main__')\n"
            f"except SystemExit as stop:\n    print(stop.code, 'torch' in sys.modules)\n")
    done = run(code=code)
    assert done.stdout.split() == ["2", "False"], done.stderr


def test_versus_torch_worker_parses_without_tinynet():
    """A PyTorch worker's peak memory counts its imports: its command line must not pull in tinynet."""
    code = ("import json, sys\nsys.path.insert(0, 'benchmarks')\nimport versus_torch\n"
            "versus_torch.worker = lambda engine, case, kernels: dict(engine=engine, case=case, kernels=kernels)\n"
            "versus_torch.main(['--worker', 'torch', '--case', 'infer1', '--kernels', 'numpy'])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tinynet', 'inception', '_args'))))")
    done = run(code=code)
    assert done.returncode == 0, done.stderr
    worker, imported = done.stdout.splitlines()
    assert json.loads(worker) == {"engine": "torch", "case": "infer1", "kernels": "numpy"}
    assert json.loads(imported) == []


def test_profile_step_prints_a_saved_profile():
    saved = sorted(name for name in os.listdir(RESULTS) if name.startswith("profile_numba_"))[-1]
    done = run("profile_step.py", "--from-json", os.path.join("benchmarks", "results", saved), "--min-ms", "1")
    assert done.returncode == 0, done.stderr
    assert "GEMM:" in done.stdout and "more rows under 1 ms" in done.stdout


def test_plot_results_draws_into_a_folder_it_makes(tmp_path):
    out = tmp_path / "new" / "plots"
    done = run("plot_results.py", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == ["layers_by_backend.png", "peak_memory.png", "profile_breakdown.png",
                                       "step_time_vs_batch.png", "versus_torch.png"]


def test_blas_threads_tiny_run():
    done = run("blas_threads.py", "--calls", "1", "--batch", "1", "--rows", "2", "--inner", "2", "--cols", "2")
    assert done.returncode == 0, done.stderr
    assert "1 products (2x2) @ (2x2)" in done.stdout and "batched_matmul, 'threads' mode" in done.stdout


def test_kernel_timings_only_knows_the_kernels_it_times(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import kernel_timings

    assert sorted({kernel for kernel, _, _ in kernel_timings.cases(quick=True)}) == sorted(kernel_timings.KERNELS)


def test_gpu_step_profile_without_a_gpu_ends_in_one_line():
    from tinynet import backend

    if backend.cupy_available():
        pytest.skip("CuPy and a CUDA device are here: the profile would run")
    done = run("gpu_step_profile.py")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("gpu_step_profile.py: error: tinynet: ")
    assert len(done.stderr.splitlines()) == 1
