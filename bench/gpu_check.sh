#!/usr/bin/env bash
# The CUDA backend on a GPU machine, one command (about 8 minutes at most on an H200):
#
#   bash bench/gpu_check.sh              # from anywhere; PYTHON=... picks the interpreter
#   bash bench/gpu_check.sh --emulator   # the Python parts on the CPU emulator, tiny sizes (no GPU)
#
# Steps (each bounded by `timeout`; a failed or skipped step does not stop the others):
#   1. golden parity of every ../shared/golden case through device="cuda" (mean <= 1e-3 px,
#      max <= 5e-2 px)                                  bench/gpu_bench.py parity
#   2. every kernel wrapper on the device against the CPU emulator (needs pytest and g++)
#                                                       tests/test_cuda_kernels_gpu.py
#   3. compute-sanitizer memcheck and racecheck on tiny runs of every model family, CuPy's
#      memory pool off (each array its own allocation, so out-of-bounds accesses show)
#   4. latency, FP32: RAFT (32 updates, 440x1024), RAFT-small, FlowNet2, GMFlow, against
#      torchvision's RAFT and the authors' code where importable ($RAFT_ROOT, $GMFLOW_ROOT,
#      $FLOWNET2_ROOT), in one run; then RAFT and GMFlow with TF32 products (CUPY_TF32=1)
#   5. peak GPU memory of RAFT at 3840x2160 (on-the-fly correlation lookup)
# Needs python3 with NumPy and CuPy; OpenCV, pytest, torch, torchvision are used when present
# (each absence is reported). Nothing is installed. Exit status 1 if a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
EMU=""
SCALE=1  # the emulator is far slower than a GPU: its time limits are 20x
[ "${1:-}" = "--emulator" ] && EMU="--emulator" && SCALE=20
status=0
t0=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, report rc and seconds
    local name=$1 limit=$2 start rc
    shift 2
    echo
    echo "== $name"
    start=$(date +%s)
    timeout $(( limit * SCALE )) "$@"
    rc=$?
    [ $rc -eq 124 ] && echo "(stopped after $(( limit * SCALE )) s)"
    echo "-- $name: rc=$rc, $(( $(date +%s) - start )) s"
    [ $rc -eq 0 ] || status=1
}

echo "== environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("numpy", "cupy", "cv2", "pytest", "hypothesis", "torch", "torchvision"):
    try:
        print(f"{name:<12}", getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as e:
        print(f"{name:<12} absent ({type(e).__name__})")
EOF

if [ -z "$EMU" ]; then
    if ! "$PY" -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" 2>/dev/null; then
        echo "no CuPy or no CUDA device: nothing to check here (bash bench/gpu_check.sh --emulator runs the" \
             "Python parts on the CPU emulator)"
        exit 2
    fi
fi

step "1. golden parity, CUDA backend" 90 "$PY" bench/gpu_bench.py parity $EMU

if "$PY" -c "import pytest" 2>/dev/null && command -v g++ >/dev/null; then
    step "2. device kernels against the emulator" 90 "$PY" -m pytest -q -p no:cacheprovider -x \
        tests/test_cuda_kernels_gpu.py
else
    echo; echo "== 2. device kernels against the emulator: skipped (needs pytest and g++)"
fi

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$EMU" ]; then
    step "3. sanitizer run (emulator: no compute-sanitizer, the run itself)" 120 \
        "$PY" bench/gpu_bench.py smoke --emulator
elif [ -n "$SAN" ]; then
    for tool in memcheck racecheck; do
        step "3. compute-sanitizer $tool" 60 "$SAN" --tool "$tool" --error-exitcode 3 \
            "$PY" bench/gpu_bench.py smoke --no-pool
    done
else
    echo; echo "== 3. compute-sanitizer: not found (PATH, /usr/local/cuda/bin): skipped"
fi

step "4. latency, FP32 (median of 10, host frames in, host flow out)" 150 "$PY" bench/gpu_bench.py latency $EMU
[ -z "$EMU" ] && step "4b. latency, TF32 products (CUPY_TF32=1)" 45 \
    env CUPY_TF32=1 "$PY" bench/gpu_bench.py latency --only raft gmflow --no-torch --repeat 5

step "5. peak GPU memory, RAFT 3840x2160" 45 "$PY" bench/gpu_bench.py memory $EMU

echo
echo "== done in $(( $(date +%s) - t0 )) s; status $status"
exit $status
