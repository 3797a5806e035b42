"""bench/gpu_check.sh cannot pass by accident: without its pack of golden data it fails,
naming what is missing; the pack fits the GPU machine's 40 MiB of ignored files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOLDEN

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_gpu_check_fails_without_the_pack(tmp_path):
    env = {**os.environ, "CVFLOW_GPU_PACK": str(tmp_path / "absent"), "PYTHON": sys.executable}
    res = subprocess.run(["bash", "bench/gpu_check.sh", "--emulator"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"missing: {tmp_path / 'absent' / 'cases.json'}" in res.stdout
    assert "FAILED: the check needs gpu_pack/" in res.stdout


def test_gpu_bench_steps_fail_without_the_pack(tmp_path):
    env = {**os.environ, "CVFLOW_GPU_PACK": str(tmp_path)}
    for what in ("parity", "latency", "missing"):
        res = subprocess.run([sys.executable, "bench/gpu_bench.py", what, "--emulator"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and "missing: " in res.stdout, (what, res.stdout, res.stderr)


def test_pack_holds_every_case_within_40_mib(tmp_path):
    if not GOLDEN.is_dir():
        pytest.skip(f"golden data not found at {GOLDEN}")
    import gpu_inputs

    import cvflow

    cvflow.list_models()
    dest = tmp_path / "pack"
    cases, left, size = gpu_inputs.pack(dest)
    assert size <= 40 << 20 and gpu_inputs.missing(dest) == []
    assert left == [] and len(cases) == len(gpu_inputs._shared_cases())  # SEA-RAFT's full frames too
    assert {c["family"] for c in cases} >= {"raft", "flownet2", "gmflow", "searaft", "neuflow2"}
    assert json.loads((dest / "cases.json").read_text())["cases"] == cases
    case = next(c for c in cases if c["name"] == "raft_synth1_sintel_crop_0016_it6")
    f0, f1, weights, golden = gpu_inputs.case_inputs(case, dest)
    assert f0.shape == (160, 240, 3) and golden.shape == (160, 240, 2) and "module.fnet.conv1.weight" in weights
    (dest / case["frames"][0]).unlink()
    assert gpu_inputs.missing(dest) == [f"{dest / case['frames'][0]} (case {case['name']})"]
