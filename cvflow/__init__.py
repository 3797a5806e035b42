"""cvflow: deep optical flow with OpenCV's interface, on NumPy (and CuPy).

    import cv2, cvflow
    of = cvflow.create("raft-small", weights="raft-small.pth")
    flow = of.calc(cv2.imread("a.png"), cv2.imread("b.png"), None)   # H x W x 2 float32

Importing cvflow never imports CuPy; names below load their module on first use.
"""
from cvflow.errors import (  # noqa: F401
    CvflowError,
    CvflowFileNotFoundError,
    CvflowOSError,
    CvflowTypeError,
    DeviceError,
    DownloadError,
    FlowFormatError,
    InputError,
    InputRangeWarning,
    MissingDependencyError,
    ModelNotFoundError,
    OutputError,
    UnsafePickleError,
    WeightsError,
)

from cvflow._version import __version__  # noqa: F401

# public name -> module that defines it
_LAZY = {
    "create": "cvflow.api",
    "extract": "cvflow.extraction",
    "list_models": "cvflow.api",
    "OpticalFlow": "cvflow.api",
    "OPTFLOW_USE_INITIAL_FLOW": "cvflow.api",
    "readOpticalFlow": "cvflow.io.flo",
    "writeOpticalFlow": "cvflow.io.flo",
    "read_kitti_flow": "cvflow.io.kitti",
    "write_kitti_flow": "cvflow.io.kitti",
    "flow_to_color": "cvflow.viz",
    "flow_panel": "cvflow.viz",
    "uncertainty_to_color": "cvflow.viz",
    "warp": "cvflow.warping",
    "occlusion_mask": "cvflow.occlusion",
    "epe": "cvflow.metrics",
    "epe_map": "cvflow.metrics",
    "outlier_rates": "cvflow.metrics",
    "fl_all": "cvflow.metrics",
    "known_flow": "cvflow.metrics",
    "load_weights": "cvflow.io.checkpoint",
    "save_converted": "cvflow.io.checkpoint",
}

__all__ = sorted(_LAZY) + [
    "CvflowError", "CvflowFileNotFoundError", "CvflowOSError", "CvflowTypeError", "DeviceError",
    "DownloadError", "FlowFormatError", "InputError", "InputRangeWarning", "MissingDependencyError",
    "ModelNotFoundError", "OutputError", "UnsafePickleError", "WeightsError",
    "__version__",
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cvflow' has no attribute {name!r}")
    from importlib import import_module  # not a module global: dir(cvflow) lists the API only

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    # the public names only: not the submodules imported so far, nor this module's own helpers
    return sorted(__all__)
