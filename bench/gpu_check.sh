#!/usr/bin/env bash
# The CUDA backend on a GPU machine, one command (at most 6 minutes on an H200):
#
#   python bench/gpu_bench.py pack        # first, where ../shared exists: fills gpu_pack/ (ignored, <= 40 MiB)
#   bash bench/gpu_check.sh               # on the GPU machine (the repository + gpu_pack/); PYTHON=... picks python
#   bash bench/gpu_check.sh --emulator    # every step's Python on the CPU emulator, tiny sizes (no GPU)
#
# Without the pack (or with any file of it missing) the check FAILS at once, naming what is
# missing: golden parity is never "skipped". Steps (each bounded by `timeout`; a failed step
# does not stop the others; the exit status is 1 if any failed):
#   1. golden parity of every packed case through device="cuda" (mean <= 1e-3 px, max <= 5e-2 px)
#   1b. CUDA graphs: each model's pass captured, replayed with new frames, compared with eager
#      passes (the FlowNet family must capture); eager and replay wall ms
#   2. every kernel wrapper on the device against the CPU emulator (needs pytest and g++)
#   3. compute-sanitizer memcheck and racecheck on tiny inputs (64x64, one update), CuPy's
#      memory pool off; skipped with a message where the sanitizer refuses the device
#   4. latency per precision mode, like for like, wall and CUDA-event GPU ms (bench/gpu_bench.py):
#      cvflow fp32 against PyTorch with TF32 off (RAFT (32 updates), RAFT-small (12), FlowNet2,
#      GMFlow, NeuFlow v2, SEA-RAFT at ~440x1024); tf32 against PyTorch with TF32 allowed;
#      fp16 against torch.autocast("cuda", torch.float16) (RAFT, RAFT-small, GMFlow, SEA-RAFT-S);
#      bf16 against autocast bfloat16 (RAFT-small); each mode's flow against fp32's on the device
#   5. peak GPU memory of RAFT at 3840x2160, fp32 and fp16
# Time on an H200 (an estimate; no GPU was at hand when it was written): the step limits
# add up to 330 s (plus <= 30 s probing compute-sanitizer), 6 minutes; expected ~4.5: parity ~50 s (CuPy compiles each kernels/*.cu once,
# ~1 s each, cached on disk for the later steps; FlowNet2's 650 MB of synthetic weights
# regenerated on the CPU, ~5 s), graphs ~25 s (13 models at 128x256, random weights),
# kernels ~25 s, sanitizer 2 x ~25 s, latency ~45 + 25 + 25 + 10 s, memory ~15 s.
# One summary table at the end. Needs python3 with NumPy and CuPy; OpenCV, pytest, torch,
# torchvision are used when present (each absence is reported). Nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
EMU=""
SCALE=1  # the emulator is far slower than a GPU: its time limits are 20x
[ "${1:-}" = "--emulator" ] && EMU="--emulator" && SCALE=20
status=0
t0=$(date +%s)
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
: >"$LOG/summary"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, report rc and seconds, keep summary lines
    local name=$1 limit=$2 start rc secs
    shift 2
    echo
    echo "== $name"
    start=$(date +%s)
    timeout $(( limit * SCALE )) "$@" 2>&1 | tee "$LOG/step"
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    [ $rc -eq 124 ] && echo "(stopped after $(( limit * SCALE )) s)"
    echo "-- $name: rc=$rc, $secs s"
    [ $rc -eq 0 ] || status=1
    printf '%-48s %-5s %5s s\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$secs" >>"$LOG/summary"
    grep '^summary:' "$LOG/step" | sed 's/^summary: /      /' >>"$LOG/summary"
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

echo
echo "== golden data and weights (gpu_pack/)"
if ! "$PY" bench/gpu_bench.py missing; then
    echo "FAILED: the check needs gpu_pack/ (make it with 'python bench/gpu_bench.py pack' where ../shared"
    echo "exists, and copy it along with the repository)"
    exit 1
fi
echo "complete"

if [ -z "$EMU" ]; then
    if ! "$PY" -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" 2>/dev/null; then
        echo "FAILED: no CuPy or no CUDA device (bash bench/gpu_check.sh --emulator runs the Python parts on the"
        echo "CPU emulator)"
        exit 2
    fi
fi

step "1. golden parity, CUDA backend" 50 "$PY" bench/gpu_bench.py parity $EMU
step "1b. CUDA graphs, replay vs eager" 30 "$PY" bench/gpu_bench.py graphs $EMU

if "$PY" -c "import pytest" 2>/dev/null && command -v g++ >/dev/null; then
    if [ -z "$EMU" ]; then
        step "2. device kernels against the emulator" 30 "$PY" -m pytest -q -p no:cacheprovider -x \
            tests/test_cuda_kernels_gpu.py
    else
        step "2. kernels on the emulator (the device's test needs a GPU)" 30 "$PY" -m pytest -q \
            -p no:cacheprovider -x tests/test_cuda_kernels_emulator.py
    fi
else
    echo; echo "== 2. device kernels against the emulator: skipped (needs pytest and g++)"
    printf '%-48s %-5s\n' "2. device kernels against the emulator" "SKIP (no pytest/g++)" >>"$LOG/summary"
fi

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$EMU" ]; then
    step "3. tiny runs (emulator: no compute-sanitizer)" 15 "$PY" bench/gpu_bench.py smoke --emulator
elif [ -z "$SAN" ]; then
    echo; echo "== 3. compute-sanitizer: not found (PATH, /usr/local/cuda/bin): skipped"
    printf '%-48s %-5s\n' "3. compute-sanitizer" "SKIP (not found)" >>"$LOG/summary"
elif ! timeout 30 "$SAN" --tool memcheck --error-exitcode 3 "$PY" -c \
        "import cupy; assert float((cupy.arange(4) * 2).sum()) == 12" >"$LOG/probe" 2>&1; then
    echo; echo "== 3. compute-sanitizer refused this device or runtime: skipped. Its words:"
    tail -5 "$LOG/probe"
    printf '%-48s %-5s\n' "3. compute-sanitizer" "SKIP (refused the device)" >>"$LOG/summary"
else
    for tool in memcheck racecheck; do
        step "3. compute-sanitizer $tool (64x64)" 30 "$SAN" --tool "$tool" --error-exitcode 3 \
            "$PY" bench/gpu_bench.py smoke --no-pool
    done
fi

step "4. latency, fp32 vs PyTorch TF32 off" 60 "$PY" bench/gpu_bench.py latency --mode fp32 $EMU --repeat 5
HALF_SET="--only raft raft-small gmflow searaft-s"
[ -n "$EMU" ] && HALF_SET="--only raft-small"
step "4b. latency, tf32 vs PyTorch TF32 on" 30 "$PY" bench/gpu_bench.py latency --mode tf32 $EMU --repeat 3 $HALF_SET
step "4c. latency, fp16 vs PyTorch autocast fp16" 30 "$PY" bench/gpu_bench.py latency --mode fp16 $EMU --repeat 3 \
    $HALF_SET
step "4d. latency, bf16 vs PyTorch autocast bf16" 15 "$PY" bench/gpu_bench.py latency --mode bf16 $EMU --repeat 3 \
    --only raft-small

step "5. peak GPU memory, RAFT 3840x2160" 25 "$PY" bench/gpu_bench.py memory --modes fp32,fp16 $EMU

echo
echo "== summary ($(( $(date +%s) - t0 )) s; status $status)"
cat "$LOG/summary"
exit $status
