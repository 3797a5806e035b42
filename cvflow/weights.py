"""Finding, downloading and checking model weights.

``resolve_weights(model, weights)`` turns whatever the user passed to ``create()`` --
nothing, a file path, or a mapping of arrays -- into a flat ``{key: float32 array}``
dict with ``module.`` stripped. With nothing passed, the model's release checkpoint
(named in the registry, ``cvflow/data/registry.json``) is looked up in the cache
directory and, where the registry has a direct URL, downloaded there first.
``verify_weights`` then checks the keys and shapes against the model definition.
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from cvflow.errors import CvflowTypeError, DownloadError, WeightsError
from cvflow.io.checkpoint import load_weights, normalize_state_dict

__all__ = ["cache_dir", "load_registry", "registry_entry", "converted_name", "download",
           "resolve_weights", "verify_weights"]

_TIMEOUT_S = 30
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where release checkpoints live: ``$CVFLOW_HOME``, default ``~/.cache/cvflow``."""
    return Path(os.environ.get("CVFLOW_HOME") or "~/.cache/cvflow").expanduser()


@functools.lru_cache(maxsize=1)
def load_registry() -> dict:
    """The checkpoint registry shipped with the package (``cvflow/data/registry.json``)."""
    text = resources.files("cvflow").joinpath("data", "registry.json").read_text(encoding="utf-8")
    return json.loads(text)


def registry_entry(name: str) -> dict | None:
    """The registry entry serving model ``name`` (or with file name ``name``), else None."""
    for entry in load_registry()["checkpoints"]:
        if name in entry["models"] or name == entry["file"]:
            return entry
    return None


def converted_name(file: str) -> str:
    """Cache name of a converted release file: ``raft-small.pth`` -> ``raft-small.npz``."""
    stem = file.split(".pth")[0] if ".pth" in file else Path(file).stem
    return stem + ".npz"


def download(url: str, dest, sha256: str | None = None, size: int | None = None,
             progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest``, checking ``size`` and ``sha256`` when given.

    Data goes to a temporary file beside ``dest`` that is renamed into place only when
    complete and verified, so ``dest`` never holds a partial or wrong file. A progress
    bar is shown on a terminal (``progress=None``), always (True) or never (False).
    Raises DownloadError: a network failure (chained to its cause) or a size/checksum
    mismatch (not chained).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"only http(s) URLs can be downloaded, got {url!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, got = _fetch(url, out, size, progress, dest.name)
        if size is not None and got != size:
            raise DownloadError(f"download of {url} gave {got} bytes, expected {size}") from None
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"download of {url} has sha256 {digest}, expected {sha256.lower()}; "
                                "the file was discarded") from None
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def _fetch(url, out, size, progress, label) -> tuple[str, int]:
    """Stream ``url`` into ``out``; returns (sha256 hex, byte count)."""
    digest, got = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = size or int(resp.headers.get("Content-Length") or 0) or None
            with _progress_bar(total, label, progress) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, urllib.error.URLError) as e:  # URLError/HTTPError/timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        raise DownloadError(f"could not download {url}: {reason}") from e
    except http.client.HTTPException as e:  # IncompleteRead, bad status line: not OSErrors
        raise DownloadError(f"could not download {url}: {type(e).__name__}: {e}") from e
    return digest.hexdigest(), got


def _progress_bar(total, label, progress):
    """A tqdm byte counter (tqdm is optional: without it, no bar)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    disable = None if progress is None else not progress  # None: only on a terminal
    return tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=disable)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def resolve_weights(model_name: str, weights=None, checkpoint: str | None = None) -> dict[str, np.ndarray]:
    """Flat ``{key: float32 ndarray}`` weights for ``model_name``.

    ``weights`` is a mapping of arrays (containers unwrapped, ``module.`` stripped), a
    path to a PyTorch checkpoint or cvflow ``.npz``, or None for the release checkpoint
    (``checkpoint``, else the registry's file for the model) from :func:`cache_dir`,
    downloaded there when the registry knows a URL. Raises WeightsError when no weights
    can be found, saying which file to get, from where, and where to put it.
    """
    if isinstance(weights, Mapping):
        flat = normalize_state_dict(weights)
    elif isinstance(weights, (str, os.PathLike)):
        flat = load_weights(weights)
    elif weights is None:
        flat = load_weights(_release_checkpoint(model_name, checkpoint))
    else:
        raise CvflowTypeError("weights must be None, a path, or a mapping of arrays, "
                              f"got {type(weights).__name__}")
    return _as_float32(flat, model_name)


def _release_checkpoint(model_name: str, checkpoint: str | None) -> Path:
    """Path of the cached release checkpoint, downloading it when possible."""
    entry = registry_entry(checkpoint or model_name)
    file = checkpoint or (entry and entry["file"])
    if file is None:
        raise WeightsError(f"model {model_name!r} has no release checkpoint in the registry; "
                           "pass weights=<path to a checkpoint> or a mapping of arrays")
    dest = cache_dir() / file
    for candidate in (cache_dir() / converted_name(file), dest):
        if candidate.is_file():
            return candidate
    url = entry and entry.get("url")
    if not url:
        raise WeightsError(_missing_message(model_name, file, entry, dest, "it cannot be downloaded "
                                            "automatically"))
    try:
        return download(url, dest, entry.get("sha256"), entry.get("size"))
    except DownloadError as e:
        if e.__cause__ is None:  # size/checksum mismatch: not an offline problem, report as is
            raise
        why = f"the download failed ({e})"
        raise WeightsError(_missing_message(model_name, file, entry, dest, why)) from e


def _missing_message(model_name, file, entry, dest, why) -> str:
    lines = [f"no weights for model {model_name!r}: {file} is not in {dest.parent} and {why}."]
    if entry:
        lines += [f"  get it from: {entry['source']}", f"  licence: {entry['license']}"]
    lines += [f"  put it at: {dest} (or set CVFLOW_HOME to the folder holding it)",
              "  or pass weights=<path to a .pth checkpoint or converted .npz>, or a mapping of arrays"]
    return "\n".join(lines)


def _as_float32(flat: Mapping, model_name: str) -> dict[str, np.ndarray]:
    out = {}
    for key, arr in flat.items():
        if arr.dtype.kind not in "biuf":
            raise WeightsError(f"weights for {model_name!r}: {key!r} has dtype {arr.dtype}, "
                               "expected a real number type")
        out[key] = np.asarray(arr, dtype=np.float32, order="C")  # keeps 0-d tensors 0-d
    return out


def verify_weights(weights: Mapping, expected_shapes: Mapping, model_name: str) -> Mapping:
    """Check that ``weights`` has exactly the keys and shapes of ``expected_shapes``.

    Returns ``weights`` unchanged; raises one WeightsError listing every missing,
    unexpected and mis-shaped key.
    """
    expected = {k: tuple(int(d) for d in s) for k, s in expected_shapes.items()}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [f"{k} expected {expected[k]}, got {tuple(np.shape(weights[k]))}"
                 for k in expected if k in weights and tuple(np.shape(weights[k])) != expected[k]]
    if not (missing or unexpected or misshaped):
        return weights
    lines = [f"weights do not match model {model_name!r} "
             f"({len(expected)} tensors expected, {len(weights)} given):"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            lines.append(f"  {label} ({len(items)}): " + ", ".join(items))
    if len(missing) == len(expected):
        lines.append("  no expected key is present: are these weights for another model?")
    raise WeightsError("\n".join(lines))
