"""The built wheel: distribution `cvflow-of` (PyPI's `cvflow` is an unrelated project with the
same import name and command), import name and command `cvflow`, CUDA kernels inside, and
`cvflow flow` running from a fresh virtual environment that holds nothing but the wheel.

The fresh venv borrows NumPy and OpenCV from this interpreter (a .pth file naming their
folders, listed after the venv's own site-packages): no download, and the `cvflow` it
imports is the wheel's (checked), never this checkout or an installed copy.
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvflow
from test_extraction import synthetic_raft_small

ROOT = Path(__file__).resolve().parents[1]
DIST = "cvflow-of"


def test_distribution_name_is_not_pypis_cvflow():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'\nname = "{DIST}"\n' in text
    assert '\ncvflow = "cvflow.cli:main"' in text  # the command keeps its name


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_flow(tmp_path):
    if os.environ.get("CVFLOW_WHEEL"):  # .ci/run builds it once and says where
        wheel = Path(os.environ["CVFLOW_WHEEL"])
    else:
        wheels = tmp_path / "wheels"
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                               str(ROOT)], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (wheel,) = wheels.glob("*.whl")
    assert wheel.name.startswith("cvflow_of-")
    names = set(zipfile.ZipFile(wheel).namelist())
    kernels = {f"cvflow/kernels/{p.name}" for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".h")}
    assert kernels and kernels <= names, f"kernels missing from the wheel: {sorted(kernels - names)}"
    assert "cvflow/data/registry.json" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    borrowed = sorted({str(Path(m.__file__).resolve().parents[1]) for m in (np, cv2)})
    Path(site, "_borrowed_deps.pth").write_text("\n".join(borrowed) + "\n")
    # installed with this interpreter's pip into the venv's folder: the venv has no pip of its own
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--target", site, str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = Path(site) / "bin" / "cvflow"  # --target puts console scripts under <target>/bin

    work = tmp_path / "work"  # not the checkout: nothing of it on the path
    work.mkdir()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(work / "a.png"), frame)
    cv2.imwrite(str(work / "b.png"), np.roll(frame, 2, axis=1))
    cvflow.save_converted(synthetic_raft_small(), work / "w.npz")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    check = ("import cvflow, importlib.resources as r, sys; print(cvflow.__file__); "
             "print(sorted(f.name for f in r.files('cvflow.kernels').iterdir() if f.name.endswith('.cu'))[:3])")
    proc = subprocess.run([str(py), "-c", check], cwd=work, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(site) and ".cu'" in proc.stdout
    # the command as pip wrote it, run by the venv's interpreter
    proc = subprocess.run([str(py), str(script), "flow", "a.png", "b.png", "-m", "raft-small", "--weights", "w.npz",
                           "--iters", "2", "-o", "f.flo"], cwd=work, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "wrote f.flo (160x128, raft-small)" in proc.stdout
    assert cvflow.readOpticalFlow(work / "f.flo").shape == (128, 160, 2)
