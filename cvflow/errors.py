"""Exception types.

Every cvflow error derives from :class:`CvflowError` and also from the builtin a
caller would naturally catch (``ValueError`` for bad data, ``TypeError`` for bad
types, ``OSError`` for I/O), so ``except ValueError`` keeps working.
"""


class CvflowError(Exception):
    """Base class of all cvflow errors."""


class InputError(CvflowError, ValueError):
    """A frame, flow or option has the wrong shape, dtype or value."""


class CvflowTypeError(CvflowError, TypeError):
    """An argument has the wrong type."""


class ModelNotFoundError(CvflowError, ValueError):
    """An unknown model name; the message lists the valid ones."""


class WeightsError(CvflowError, ValueError):
    """Weights are missing, corrupt, or do not match the model."""


class UnsafePickleError(WeightsError):
    """A checkpoint pickle asked to construct something outside the allow-list."""


class FlowFormatError(CvflowError, ValueError):
    """A flow file (.flo, KITTI PNG) is corrupt or not of the expected format."""


class CvflowFileNotFoundError(CvflowError, FileNotFoundError):
    """A file that cvflow was asked to read does not exist."""


class DownloadError(CvflowError, OSError):
    """A weight download failed or its checksum did not match."""


class DeviceError(CvflowError, RuntimeError):
    """The requested compute device is not available."""


class MissingDependencyError(CvflowError, ImportError):
    """An optional dependency (an extra such as `cvflow[ray]`) is needed and not installed."""
