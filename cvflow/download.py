"""Downloading one file safely: streamed to a temporary file beside the destination,
checked (size, sha256 prefix, git blob id) and renamed into place only when complete,
with a size bound, a stall timeout and an optional tqdm progress bar. The weights
registry (`cvflow.weights`) decides what to download and where."""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cvflow.errors import DownloadError, InputError

__all__ = ["download", "git_blob_id"]

_TIMEOUT_S = 30          # seconds without a byte from the server before giving up
_CHUNK = 1 << 20


def download(url: str, dest, sha256: str | None = None, size: int | None = None,
             progress: bool | None = None, max_size: int | None = None,
             timeout: float | None = None, git_blob: str | None = None) -> Path:
    """Download ``url`` to ``dest``, checking ``size``, ``sha256`` and ``git_blob`` when given.

    ``sha256``: the file's full hex digest or a prefix of it (torch hub names files
    ``<name>-<first 8 hex of sha256>.<ext>``). ``git_blob``: the 40-hex git object id of
    the file as committed, sha1 of b"blob <size>" + NUL + the bytes (release files kept
    in a Git repository, fetched by raw URL at a commit). ``max_size``: bytes after which the
    transfer is abandoned. ``timeout``: seconds without progress (connect or read)
    before giving up (default 30). Data goes to a temporary file beside ``dest`` that is
    renamed into place only when complete and verified, so ``dest`` never holds a
    partial or wrong file. A progress bar (tqdm, when installed) is shown on a terminal
    (``progress=None``), always (True) or never (False).
    Raises DownloadError: a network failure or a transfer shorter than announced
    (chained to its cause), or a size/checksum mismatch (not chained).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"only http(s) URLs can be downloaded, got {url!r}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):  # "" would accept anything
        raise InputError(f"sha256 must be 8 to 64 hex digits, got {sha256!r}")
    if git_blob is not None and not re.fullmatch(r"[0-9a-fA-F]{40}", git_blob):
        raise InputError(f"git_blob must be 40 hex digits, got {git_blob!r}")
    dest = Path(dest)
    # folders made for this file are removed again if it fails: an offline create() leaves no empty $CVFLOW_HOME
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    ok = False
    try:
        with os.fdopen(fd, "wb") as out:
            digest, got = _fetch(url, out, size, max_size, progress, dest.name,
                                 _TIMEOUT_S if timeout is None else timeout)
        if size is not None and got != size:
            raise DownloadError(f"download of {url} gave {got} bytes, expected {size}") from None
        if sha256 is not None and not digest.startswith(sha256.lower()):
            expected = sha256.lower() if len(sha256) == 64 else f"one starting with {sha256.lower()}"
            raise DownloadError(f"download of {url} has sha256 {digest}, expected {expected}; "
                                "the file was discarded") from None
        if git_blob is not None and (blob := git_blob_id(tmp)) != git_blob.lower():
            raise DownloadError(f"download of {url} has git blob id {blob}, expected {git_blob.lower()}; "
                                "the file was discarded") from None
        os.replace(tmp, dest)
        ok = True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        if not ok:
            for folder in made:  # innermost first; one another process filled meanwhile stays
                try:
                    folder.rmdir()
                except OSError:
                    break
    return dest


def git_blob_id(path) -> str:
    """Git's object id of the file at ``path``: sha1 of b"blob <size>" + NUL, then the bytes."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url, out, size, max_size, progress, label, timeout) -> tuple[str, int]:
    """Stream ``url`` into ``out``; returns (sha256 hex, byte count)."""
    digest, got = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            announced = int(resp.headers.get("Content-Length") or 0) or None
            if max_size is not None and announced is not None and announced > max_size:
                raise DownloadError(f"download of {url} announces {announced} bytes, more than the "
                                    f"{max_size} allowed; nothing was kept") from None
            with _progress_bar(size or announced, label, progress) as bar:
                while chunk := resp.read(_CHUNK):
                    got += len(chunk)
                    if max_size is not None and got > max_size:
                        raise DownloadError(f"download of {url} exceeds the {max_size} bytes allowed; "
                                            "nothing was kept") from None
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if announced is not None and got < announced:  # urllib returns b"" when the peer hangs up
                raise http.client.IncompleteRead(b"", announced - got)
    except DownloadError:
        raise
    except (OSError, ValueError, urllib.error.URLError) as e:  # URLError/HTTPError/timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        elif isinstance(e, TimeoutError) or isinstance(reason, TimeoutError):
            reason = f"no data for {timeout:g} s ({reason})"
        raise DownloadError(f"could not download {url}: {reason}") from e
    except http.client.HTTPException as e:  # IncompleteRead, bad status line: not OSErrors
        if isinstance(e, http.client.IncompleteRead):
            reason = f"the transfer ended after {got} of {got + (e.expected or 0)} bytes"
        else:
            reason = f"{type(e).__name__}: {e}"
        raise DownloadError(f"could not download {url}: {reason}") from e
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
