"""Exception and warning types.

Every cvflow error derives from :class:`CvflowError` and also from the builtin a
caller would naturally catch (``ValueError`` for bad data, ``TypeError`` for bad
types, ``OSError`` for I/O), so ``except ValueError`` keeps working. Errors about
the caller's input (:class:`InputError` and its kin, :class:`CvflowTypeError`) are
also ``cv2.error``, as OpenCV's own ``calc`` raises, so code written around a
``cv2.DenseOpticalFlow`` that catches ``cv2.error`` keeps working with cvflow.
"""
import cv2


class CvflowError(Exception):
    """Base class of all cvflow errors."""


class InputError(CvflowError, ValueError, cv2.error):
    """A frame, flow or option has the wrong shape, dtype or value."""


class CvflowTypeError(CvflowError, TypeError, cv2.error):
    """An argument has the wrong type."""


class ModelNotFoundError(CvflowError, ValueError):
    """An unknown model name; the message lists the valid ones."""


class WeightsError(CvflowError, ValueError):
    """Weights are missing, corrupt, or do not match the model."""


class UnsafePickleError(WeightsError):
    """A checkpoint pickle asked to construct something outside the allow-list."""


class FlowFormatError(CvflowError, ValueError):
    """A flow file (.flo, KITTI PNG) is corrupt or not of the expected format."""


class _OSMessage(OSError):
    def __str__(self):  # the message, not OSError's "[Errno N] strerror: filename"
        return str(self.args[0]) if self.args else super().__str__()


class CvflowFileNotFoundError(CvflowError, _OSMessage, FileNotFoundError):
    """A file that cvflow was asked to read (or a directory to write into) does not exist."""


class CvflowOSError(CvflowError, _OSMessage):
    """A file or directory cannot be read or written; the message gives the OS reason
    (`errno`, `strerror` and `filename` are set when the OS gave them)."""


def os_error(action: str, path, exc: OSError) -> CvflowError:
    """'cannot <action> <path>: <the OS reason>' as a CvflowOSError (CvflowFileNotFoundError
    for ENOENT) for an OSError `exc` raised on `path`."""
    cls = CvflowFileNotFoundError if isinstance(exc, FileNotFoundError) else CvflowOSError
    err = cls(f"cannot {action} {str(path)!r}: {os_reason(path, exc)}")
    err.errno, err.strerror, err.filename = exc.errno, exc.strerror, str(path)
    return err


def os_reason(path, exc: OSError) -> str:
    """The OS's reason for `exc` on `path`, saying what it means where the bare words
    mislead (ENOENT on creating a file in a directory that exists: /proc, sysfs)."""
    import os

    reason = exc.strerror or str(exc)
    if isinstance(exc, FileNotFoundError):
        parent = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(parent):
            return f"{reason} (directory {parent!r} does not exist)"
        if not os.path.exists(os.fspath(path)):
            return f"{reason} (directory {parent!r} exists but does not allow creating files)"
    return reason


class OutputError(CvflowOSError):
    """An output path is unusable: its directory is missing or not writable, it is a
    directory, or its extension names no format cvflow can write. Checked before any
    computation, so no work is lost."""


class DownloadError(CvflowError, OSError):
    """A weight download failed or its checksum did not match."""


class DeviceError(CvflowError, RuntimeError):
    """The requested compute device is not available."""


class MissingDependencyError(CvflowError, ImportError):
    """An optional dependency (an extra such as `cvflow-of[ray]`) is needed and not installed."""


class InputRangeWarning(UserWarning):
    """Frames look like they are in a range other than the one cvflow expects
    (float frames in 0..1 where cvflow expects 0..255)."""
