#!/usr/bin/env bash
# GPU check, one command, for a CUDA machine with CuPy, Numba, NumPy, pytest (and optionally torch) already
# installed and no network. Run from anywhere:   bash benchmarks/gpu_check.sh
# Runs the `gpu` tests and the backend/kernel tests, then a quick kernel benchmark of cupy against numpy and
# numba, and writes everything to benchmarks/results/gpu_check_<date>_<gpu>/ (about 2-4 minutes).
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
PY=${PYTHON:-python}
GPU=$($PY -c "import cupy; print(cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())" 2>/dev/null || echo unknown-gpu)
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="benchmarks/results/gpu_check_${STAMP}_$(echo "$GPU" | tr -c 'A-Za-z0-9_.-' '_')"
mkdir -p "$OUT"
{
  echo "GPU check: $GPU"; echo "date (UTC): $(date -u)"; echo "host: $(hostname)"; nvidia-smi -L 2>/dev/null
  $PY -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__)"
} | tee "$OUT/info.txt"
status=0
echo "== pytest -m gpu" | tee "$OUT/tests.txt"
timeout 150 $PY -m pytest -q -m gpu tests/ 2>&1 | tail -30 | tee -a "$OUT/tests.txt" || status=1
echo "== backend and kernel tests (all backends)" | tee -a "$OUT/tests.txt"
timeout 120 $PY -m pytest -q tests/test_backends.py tests/test_kernels.py 2>&1 | tail -30 | tee -a "$OUT/tests.txt" || status=1
echo "== kernel benchmark (quick)" | tee "$OUT/bench.txt"
timeout 240 $PY benchmarks/bench_kernels.py --quick --backends numpy,numba,cupy --no-torch --out "$OUT" 2>&1 \
  | tee -a "$OUT/bench.txt" || status=1
echo "results in $OUT (status $status)"
exit $status
