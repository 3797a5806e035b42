#!/usr/bin/env bash
# Every emulated CUDA kernel under AddressSanitizer.
#
# Builds the emulator libraries (kernels/*.cu + kernels/emu.h, g++) with
# -fsanitize=address into a fresh cache (CVFLOW_EMU_SANITIZE=address), then runs the
# kernel tests in a Python whose first loaded library is libasan (LD_PRELOAD: Python
# itself is not instrumented, the kernels are, and every NumPy buffer comes from the
# intercepted malloc, so a kernel reading or writing past an array is reported).
# First it checks that the instrumentation bites: a launch with one element too many
# must be reported as a heap-buffer-overflow.
#
#   bash bench/asan_kernels.sh            # from the repository root; PYTHON=... to pick the interpreter
#   bash bench/asan_kernels.sh -k corr    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIBASAN=$(g++ -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "libasan.so not found (g++ -print-file-name=libasan.so)" >&2; exit 2; }
CVFLOW_EMU_CACHE=$(mktemp -d)
trap 'rm -rf "$CVFLOW_EMU_CACHE"' EXIT
export CVFLOW_EMU_CACHE CVFLOW_EMU_SANITIZE=address PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Python's own allocations are not freed at exit by design: no leak report.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1
run() { LD_PRELOAD=$LIBASAN "$PY" "$@"; }

echo "== sanity: an out-of-bounds launch is caught"
if run -c "
import numpy as np
from cvflow.testing import cuda_emulator
with cuda_emulator() as ex:
    x = ex.zeros(100)
    ex.launch('act:add_relu', (1,), (128,), (x, x, np.int32(101)))
" 2>"$CVFLOW_EMU_CACHE/sanity.log"; then
    echo "FAILED: ASan did not report the overflow" >&2; exit 1
fi
grep -q "heap-buffer-overflow" "$CVFLOW_EMU_CACHE/sanity.log" || { cat "$CVFLOW_EMU_CACHE/sanity.log" >&2; exit 1; }
echo "ok: heap-buffer-overflow reported"

echo "== kernel tests under ASan"
run -m pytest -q -p no:cacheprovider tests/test_cuda_kernels*.py "$@"
