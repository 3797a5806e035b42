"""Checking output paths before any work is done, and writing images with cvflow errors.

A model can run for minutes (4K frames, long videos, whole datasets): every output is
checked here first -- its directory exists and accepts new files, it is not a
directory, its extension names a format cvflow writes -- so a bad path fails at once
instead of after the compute.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cvflow.errors import InputError, OutputError, os_error, os_reason

__all__ = ["check_output_file", "check_output_dir", "check_earlier_files", "remove_files", "write_image"]

# format -> (suffixes, how to name such a file)
_SUFFIXES = {"flo": ((".flo",), "a Middlebury .flo file"), "npz": ((".npz",), "an .npz archive"),
             "json": ((".json",), "a .json file")}


def _probe_dir(directory: Path, what: str, path) -> None:
    """Create and remove a file in `directory`: the only test that is right for root, read-only
    mounts and pseudo file systems (os.access says yes to root everywhere)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".cvflow-probe-", dir=directory)
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot create files in {directory}: "
                          f"{os_reason(Path(directory) / 'x', e)}") from None
    os.close(fd)
    os.remove(probe)


def check_output_file(path, what: str = "output", kind: str | None = None) -> Path:
    """Check that `path` can be written as a file of `kind` before any work is done.

    kind: "flo", "npz", "json" (the suffix must match), "image" (OpenCV must have a
    writer for the suffix: .png, .jpg, ...) or None (any name). `what` names the
    argument in messages (e.g. "--png"). Returns `path` as a Path.

    Raises InputError (unknown extension) or OutputError (the path is a directory, its
    directory is missing or does not accept new files, or an existing file there cannot
    be opened for writing), with the OS reason.
    """
    p = Path(os.fspath(path))
    if p.is_dir():
        raise OutputError(f"{what} {p} is a directory; give a file name inside it")
    _check_kind(p, what, kind)
    parent = p.resolve().parent
    if not parent.is_dir():
        why = "is a file, not a directory" if parent.exists() else "does not exist"
        raise OutputError(f"{what} {p}: directory {parent} {why}")
    if p.exists():
        try:
            with open(p, "ab"):  # opens for writing without changing the file
                pass
        except OSError as e:
            raise OutputError(f"{what} {p}: cannot write it: {os_reason(p, e)}") from None
    else:
        _probe_dir(parent, what, p)
    return p


def _check_kind(p: Path, what: str, kind) -> None:
    if kind is None:
        return
    if kind == "image":
        import cv2

        if not p.suffix or not cv2.haveImageWriter(str(p)):
            raise InputError(f"{what} {p}: OpenCV has no image writer for its extension "
                             f"{p.suffix or '(none)'!r} (use .png, .jpg, ...)")
        return
    suffixes, name = _SUFFIXES[kind]
    if p.suffix.lower() not in suffixes:
        raise InputError(f"{what} {p}: cvflow writes {name} here; name it with {' or '.join(suffixes)} "
                         f"(got {p.suffix or 'no extension'!r})")


def check_output_dir(path, what: str = "output directory") -> Path:
    """Check that `path` is, or can be created as, a directory that accepts new files.

    Raises OutputError: `path` (or a parent) exists and is not a directory, or the
    directory (or the nearest existing parent, for one still to be created) does not
    accept new files.
    """
    p = Path(os.fspath(path))
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p} exists and is not a directory")
    existing = p.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {p}: {existing} is a file, so the directory cannot be created")
    _probe_dir(existing, what, p)
    return p


def check_earlier_files(out_dir, patterns, overwrite: bool = False) -> list[Path]:
    """The files in `out_dir` matching any of the glob `patterns` (sorted; [] when none or no
    directory): an earlier run, which mixing with a new one would corrupt. Raises OutputError
    when there are some and not `overwrite`, naming a few of them and how to proceed."""
    out = Path(os.fspath(out_dir))
    old = sorted({f for pattern in patterns for f in out.glob(pattern) if f.is_file()}) if out.is_dir() else []
    if old and not overwrite:
        from cvflow.progress import plural

        names = ", ".join(f.name for f in old[:3]) + (", ..." if len(old) > 3 else "")
        raise OutputError(f"{out} holds an earlier run: {plural(len(old), 'file')} ({names}); "
                          "pass --overwrite (overwrite=True) to remove it first, or choose another directory")
    return old


def remove_files(files) -> None:
    """Remove `files` (an earlier run's), with the OS's reason when one cannot be."""
    for f in files:
        try:
            Path(f).unlink(missing_ok=True)
        except OSError as e:
            raise os_error("remove the earlier run's file", f, e) from None


def write_image(path, img) -> None:
    """cv2.imwrite with cvflow errors (unknown extension, missing directory, failed write)."""
    import cv2

    p = os.fspath(path)
    _check_kind(Path(p), "image", "image")
    try:
        ok = cv2.imwrite(p, img)
    except cv2.error as e:
        raise OutputError(f"cannot write {p}: {e}") from None
    if not ok:
        parent = Path(p).resolve().parent
        why = f"directory {parent} does not exist" if not parent.is_dir() else "OpenCV's write failed"
        raise OutputError(f"cannot write {p}: {why}")
