"""The wheel's contents follow the source tree: every subpackage listed, kernels shipped."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_packaged():
    conf = _pyproject()["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cvflow").rglob("__init__.py")}
    assert found | {"cvflow.kernels"} == set(conf["packages"])
    assert conf["package-dir"]["cvflow.kernels"] == "kernels"
    assert (ROOT / "kernels" / "__init__.py").is_file()
    assert "*.cu" in conf["package-data"]["cvflow.kernels"]


def test_runtime_dependencies_are_numpy_opencv_and_threadpoolctl_only():
    # threadpoolctl: bounds the BLAS threads of each call (README, "Threads")
    project = _pyproject()["project"]
    names = sorted(d.split(">")[0].split("=")[0].strip() for d in project["dependencies"])
    assert names == ["numpy", "opencv-python", "threadpoolctl"]
    extras = project["optional-dependencies"]
    assert extras["cuda12"][0].startswith("cupy-cuda12x") and extras["cuda13"][0].startswith("cupy-cuda13x")

