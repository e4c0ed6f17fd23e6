#!/usr/bin/env bash
# GPU check, one command, for a CUDA machine with CuPy, Numba, NumPy, pytest (and optionally torch) already
# installed and no network. Run from anywhere:   bash benchmarks/gpu_check.sh
# Runs the `gpu` tests and the backend/kernel tests, then a quick benchmark of cupy against numpy, numba and,
# when torch is importable with CUDA, PyTorch on the GPU (cuDNN; rows "torch-cuda"; PyTorch on the CPU is
# skipped here to save time), and writes everything to benchmarks/results/gpu_check_<date>_<gpu>/ (the tests' whole
# output in tests_*_full.txt, their last lines in tests.txt).
# The whole check stays within GPU_CHECK_SECONDS (default 280): each step's timeout is at most its own cap and
# at most what is left of that budget after the later steps' minimum share.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
PY=${PYTHON:-python3}
END=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-280} ))

# seconds for the next step: at most $1, and leave $2 seconds for the steps after it (never under 10)
allow() {
  local left=$(( END - $(date +%s) - $2 ))
  (( left > $1 )) && left=$1
  (( left < 10 )) && left=10
  echo "$left"
}

GPU=$(timeout 60 $PY -c "import cupy; n = cupy.cuda.runtime.getDeviceProperties(0)['name']
print(n.decode() if isinstance(n, bytes) else n)" 2>/dev/null || echo unknown-gpu)
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="benchmarks/results/gpu_check_${STAMP}_$(printf %s "$GPU" | tr -c 'A-Za-z0-9_.-' '_')"
mkdir -p "$OUT"
{
  echo "GPU check: $GPU"; echo "date (UTC): $(date -u)"; echo "host: $(hostname)"; nvidia-smi -L 2>/dev/null
  timeout 60 $PY -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__)"
  timeout 60 $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
    torch.backends.cudnn.version(), 'cuda available', torch.cuda.is_available())" 2>/dev/null \
    || echo "torch: not importable (no PyTorch comparison)"
} | tee "$OUT/info.txt"
# pytest-xdist, where installed, spreads the tests over up to 8 processes (one GPU serves them all)
PARALLEL=""
if timeout 60 $PY -c "import xdist" 2>/dev/null; then PARALLEL="-n $(( $(nproc) < 8 ? $(nproc) : 8 ))"; fi
status=0
echo "== pytest -m gpu" | tee "$OUT/tests.txt"
timeout "$(allow 200 150)" $PY -m pytest -q -m gpu $PARALLEL tests/ 2>&1 | tee "$OUT/tests_gpu_full.txt" | tail -30 \
  | tee -a "$OUT/tests.txt" || status=1
echo "== backend and kernel tests (all backends; CUDA source through nvcc and CuPy's NVRTC)" | tee -a "$OUT/tests.txt"
timeout "$(allow 100 110)" $PY -m pytest -q $PARALLEL tests/test_backends.py tests/test_kernels.py tests/test_cuda_compile.py 2>&1 \
  | tee "$OUT/tests_backends_full.txt" | tail -30 | tee -a "$OUT/tests.txt" || status=1
echo "== kernel benchmark (quick; PyTorch on CUDA when importable)" | tee "$OUT/bench.txt"
timeout "$(allow 270 10)" $PY benchmarks/bench_kernels.py --quick --backends numpy,numba,cupy --torch-device cuda \
  --out "$OUT" 2>&1 | tee -a "$OUT/bench.txt" || status=1
# one line: the whole-network cupy/torch-cuda ratios of the benchmark's JSON (time / time, < 1 = cupy faster)
timeout 30 $PY - "$OUT" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import glob, json, sys

files = sorted(glob.glob(f"{sys.argv[1]}/bench_*.json"))
ratios = json.load(open(files[-1]))["ratios"] if files else {}
found = [f"{key.rsplit(' ', 1)[0]} {value:.2f}" for key, value in ratios.items() if key.endswith(" cupy/torch-cuda")]
print("cupy/torch-cuda (time / time, < 1 = cupy faster): " + ", ".join(found) if found else
      "cupy/torch-cuda: no ratio (no benchmark JSON, or no PyTorch with CUDA; see bench.txt)")
EOF
echo "results in $OUT (status $status)"
exit $status
