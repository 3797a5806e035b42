"""Compile gate: every kernels/*.cu builds with nvcc for sm_80 and sm_90 without register
spills, and stays compilable by NVRTC (CuPy's RawModule: no #include, no shared memory the
emulator cannot run). Skips where nvcc is absent."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
SOURCES = sorted(KERNELS.glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def ptxas_report(cu: Path, tmp: Path) -> dict:
    """{(kernel, arch): (registers, stack bytes, spill store bytes, spill load bytes)}."""
    nvcc = shutil.which("nvcc")
    gencode = [a for arch in ARCHS for a in ("-gencode", f"arch=compute_{arch[3:]},code={arch}")]
    res = subprocess.run([nvcc, "--fatbin", *gencode, "-Xptxas", "-v", "-o", str(tmp / f"{cu.stem}.fatbin"), str(cu)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report, key, spill = {}, None, None
    for line in (res.stdout + res.stderr).splitlines():
        if m := _ENTRY.search(line):
            key = m.groups()
        elif m := _SPILL.search(line):
            spill = tuple(int(v) for v in m.groups())
        elif (m := _REGS.search(line)) and key:
            report[key] = (int(m.group(1)),) + spill
            key = None
    return report


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not found on PATH")
@pytest.mark.parametrize("cu", SOURCES, ids=[p.name for p in SOURCES])
def test_kernel_compiles_without_spills(cu, tmp_path):
    from cvflow.backends.cuda.emulator import parse_kernels

    report = ptxas_report(cu, tmp_path)
    names = set(parse_kernels(cu.read_text()))
    assert names and {k for k, _ in report} == names
    assert {a for _, a in report} == set(ARCHS)
    for (kernel, arch), (regs, stack, stores, loads) in report.items():
        assert stores == loads == 0, f"{cu.name}:{kernel} spills on {arch}"
        assert regs <= 64, f"{cu.name}:{kernel} uses {regs} registers on {arch}"


@pytest.mark.parametrize("cu", SOURCES, ids=[p.name for p in SOURCES])
def test_kernel_source_suits_nvrtc_and_the_emulator(cu):
    text = re.sub(r"//[^\n]*", "", cu.read_text())
    assert "#include" not in text, "NVRTC has no system headers"
    assert "__shared__" not in text and "__syncthreads" not in text, "the emulator runs threads one by one"
