"""Compile gate: every kernels/*.cu builds with nvcc for sm_80 and sm_90 without register
spills, and stays compilable by NVRTC (CuPy's RawModule: no #include, no shared memory the
emulator cannot run); each is compiled after kernels/dtype.h, the prelude both executors add.
Skips where nvcc is absent. Where an NVRTC library is found
($CVFLOW_NVRTC, or the nvidia-cuda-nvrtc wheel next to CuPy), every source is also
compiled to PTX by NVRTC itself, with CuPy's options; NVRTC needs no GPU for that."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
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
    res = subprocess.run([nvcc, "--fatbin", *gencode, "-Xptxas", "-v", "-include", str(KERNELS / "dtype.h"),
                          "-o", str(tmp / f"{cu.stem}.fatbin"), str(cu)],
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


def _nvrtc():
    candidates = [os.environ.get("CVFLOW_NVRTC", "")]
    for base in map(Path, sys.path):
        for sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"):
            candidates += sorted(str(p) for p in (base / sub).glob("libnvrtc.so*"))
    candidates.append(ctypes.util.find_library("nvrtc") or "")
    for path in filter(None, candidates):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def nvrtc_compile(lib, source, name, options):
    """(result code, log) of NVRTC compiling `source` with `options`."""
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace")


@pytest.mark.parametrize("cu", SOURCES, ids=[p.name for p in SOURCES])
def test_kernel_compiles_with_nvrtc(cu):
    from cvflow.backends.cuda.emulator import kernel_source

    lib = _nvrtc()
    if lib is None:
        pytest.skip("no NVRTC library (set CVFLOW_NVRTC or install nvidia-cuda-nvrtc)")
    for arch in ("compute_80", "compute_90"):
        rc, log = nvrtc_compile(lib, kernel_source(cu.stem), cu.name, [f"--gpu-architecture={arch}", "--std=c++17"])
        assert rc == 0, f"{cu.name} ({arch}): {log}"
