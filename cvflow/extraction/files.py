"""Files of `cvflow extract`: finding the clips, reading frame folders, the per-clip
flow archive and the score table.

Everything written is written under a temporary name and renamed when complete, so a
reader (or a rerun after a crash) never sees half a file: the table as
`OUT/scores.parquet` (`scores.csv` without pyarrow), each clip's flow as
`OUT/flow/<xx>/<name>-<hash>.npz`. Rows finished since the table was last written are
kept in the journal `OUT/.scores.jsonl` (one JSON line per clip, appended as each
clip ends) until the table is rewritten, so even a killed driver loses no clip.

Two more records make "every finished clip is in the table" hold when a run is
stopped (Ctrl-C, a killed driver) between a clip's end and its row reaching the
driver: each Ray worker appends its rows to its own journal `OUT/.rows/<host>-<pid>.jsonl`
(a Ray run stopped drops the rows of tasks finished but not yet handed to the driver),
and each archive carries its clip's row (`row`, JSON), so an archive renamed into
place is a finished clip even when its row never reached any journal.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import socket
import zipfile
from pathlib import Path

import numpy as np

from cvflow.errors import CvflowError, CvflowFileNotFoundError, InputError
from cvflow.io.atomic import write_atomic
from cvflow.io.npz import FlowStack

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
MANIFEST_EXTS = {".txt", ".csv", ".parquet"}
TMP = ".tmp-"  # prefix of files being written

# The score table: column -> type. One row per clip, keyed by `path`.
COLUMNS = {
    "path": str, "status": str, "error": str, "pairs": int, "height": int, "width": int,
    "mag_mean": float, "mag_median": float, "mag_p90": float,
    "mag_mean_norm": float, "mag_median_norm": float, "mag_p90_norm": float,
    "model": str, "weights_sha256": str, "cvflow_version": str, "fingerprint": str, "flow_file": str,
    "seconds": float,
}


# -- inputs -------------------------------------------------------------------------------

def find_clips(source) -> list[dict]:
    """The clips of INPUT, sorted by key: [{"path": key, "source": file or folder, "kind": "video"|"frames"}].

    INPUT is a folder (searched recursively: every video file is a clip, every folder
    holding images is a clip of frames sorted by name; keys are paths relative to it),
    or a manifest (.txt: one path a line; .csv / .parquet: a `path` column; relative
    paths are taken from the manifest's folder; keys are the paths as written).
    """
    src = Path(os.fspath(source))
    if src.is_dir():
        clips = _walk(src)
        if not clips:
            raise InputError(f"no videos ({', '.join(sorted(VIDEO_EXTS))}) or folders of images found under {src}")
    elif src.is_file():
        if src.suffix.lower() not in MANIFEST_EXTS:
            raise InputError(f"INPUT {src} must be a folder, or a manifest (.txt, .csv or .parquet), "
                             f"got a {src.suffix or 'suffix-less'} file")
        clips = [_clip(key, src.parent / key) for key in _read_manifest(src)]
        if not clips:
            raise InputError(f"manifest {src} lists no paths")
    else:
        raise CvflowFileNotFoundError(f"no such input folder or manifest: {src}")
    return sorted({c["path"]: c for c in clips}.values(), key=lambda c: c["path"])


def _walk(root: Path) -> list[dict]:
    clips = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        if any(Path(f).suffix.lower() in IMAGE_EXTS for f in files):
            clips.append(_clip(here.relative_to(root).as_posix(), here, "frames"))
        clips += [_clip((here / f).relative_to(root).as_posix(), here / f, "video")
                  for f in files if Path(f).suffix.lower() in VIDEO_EXTS]
    return clips


def _clip(key: str, path: Path, kind: str | None = None) -> dict:
    if kind is None:
        kind = "frames" if path.is_dir() else "video"
    return {"path": str(key), "source": str(path.absolute()), "kind": kind}


def _read_manifest(path: Path) -> list[str]:
    ext = path.suffix.lower()
    if ext == ".txt":
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    if ext == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise InputError(f"manifest {path} has no `path` column (columns: {reader.fieldnames})")
            return [row["path"] for row in reader if row["path"]]
    pq = _pyarrow_parquet()
    if pq is None:
        raise InputError(f"reading the Parquet manifest {path} needs pyarrow (pip install pyarrow, "
                         "the extra ray of cvflow-of); or give a .txt or .csv manifest")
    table = pq.read_table(path)
    if "path" not in table.column_names:
        raise InputError(f"manifest {path} has no `path` column (columns: {table.column_names})")
    return [str(p) for p in table.column("path").to_pylist() if p]


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def folder_frames(folder, every: int, max_side):
    """Yield (index, BGR frame) for images 0, every, 2*every, ... of a folder, sorted by name
    (numbers in names compared as numbers), downsized as `cvflow.video` does."""
    import cv2

    from cvflow.video import _fit

    names = sorted((f for f in os.listdir(folder) if Path(f).suffix.lower() in IMAGE_EXTS), key=_natural)
    for index in range(0, len(names), every):
        img = cv2.imread(os.path.join(folder, names[index]), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot decode image {os.path.join(folder, names[index])}")
        yield index, _fit(img, max_side)


# -- per-clip flow archive ------------------------------------------------------------------

def archive_name(key: str) -> str:
    """Archive path (relative to OUT) of a clip key: flow/<2 hex>/<name>-<10 hex>.npz, unique per key."""
    digest = hashlib.sha1(key.encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key).name)[:80] or "clip"
    return f"flow/{digest[:2]}/{stem}-{digest[:10]}.npz"


class FlowArchive:
    """Streams a clip's flows to OUT/<name> (`flow` N x h x w x 2, `frame_index` N x 2 int64,
    `path`, `fingerprint`) through temporary files named after this process, renamed when complete."""

    def __init__(self, out_dir, name: str, dtype):
        self.final = Path(out_dir) / name
        self.final.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{TMP}{os.getpid()}-{self.final.name}"
        self._tmp = self.final.with_name(tag)
        self._stack = FlowStack(self.final.with_name(tag + ".raw"), dtype)

    def add(self, source_pair, flow):
        self._stack.add(source_pair, flow)

    def commit(self, key: str, fingerprint: str, row: dict) -> None:
        """Write the archive with the clip's score `row` (without `seconds`, so that the same
        clip gives the same bytes in every engine) and rename it into place."""
        text = json.dumps({k: v for k, v in row.items() if k != "seconds"})
        write_atomic(self.final, lambda tmp: self._stack.write_npz(tmp, path=np.array(key),
                                                                   fingerprint=np.array(fingerprint),
                                                                   row=np.array(text)), self._tmp)
        self._stack.discard()

    def discard(self) -> None:
        self._stack.discard()
        self._tmp.unlink(missing_ok=True)


def archive_row(path) -> dict | None:
    """The score row stored in a complete archive (`seconds` NaN: not stored), or None
    when the file has none or cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "row" not in data.files:
                return None
            return _typed(json.loads(str(data["row"])))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def complete_archives(out_dir):
    """Yield the path (relative to OUT, posix) of every archive renamed into place under OUT/flow."""
    out_dir = Path(out_dir)
    for folder, dirs, files in os.walk(out_dir / "flow"):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".npz") and not f.startswith(TMP):
                yield (Path(folder) / f).relative_to(out_dir).as_posix()


def sweep_temporaries(out_dir) -> int:
    """Remove temporary files left by killed workers under OUT/flow (call when no worker runs)."""
    n = 0
    for folder, _, files in os.walk(Path(out_dir) / "flow"):
        for f in files:
            if f.startswith(TMP):
                os.unlink(os.path.join(folder, f))
                n += 1
    return n


# -- score table --------------------------------------------------------------------------

def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    return pq


WORKER_JOURNALS = ".rows"  # in OUT: one journal per engine worker process


def journal_worker_row(out_dir, row: dict) -> None:
    """Append `row` to this worker process's journal in OUT (called by engine workers as each
    clip ends, before the row travels to the driver)."""
    folder = Path(out_dir) / WORKER_JOURNALS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{socket.gethostname()}-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _read_journal(path: Path):
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:  # removed meanwhile
        return
    for line in lines:
        try:
            yield _typed(json.loads(line))
        except (ValueError, KeyError):  # a line cut short by a killed process: that clip is redone
            continue


class ScoreTable:
    """The rows of OUT (key -> row), read from the table and the journals; rows added are
    journalled at once and land in the table at `write()`."""

    def __init__(self, out_dir):
        self.dir = Path(out_dir)
        self.pq = _pyarrow_parquet()
        self.path = self.dir / ("scores.parquet" if self.pq is not None else "scores.csv")
        self.journal = self.dir / ".scores.jsonl"
        self.rows: dict[str, dict] = {}
        self._journal_file = None

    def load(self) -> dict[str, dict]:
        """Rows of the table, then of the workers' journals (oldest first), then of the driver's journal."""
        for name in ("scores.csv", "scores.parquet"):  # parquet last: it wins when both exist
            path = self.dir / name
            if path.is_file():
                self.rows.update((r["path"], r) for r in self._read(path))
        for path in self._worker_journals():
            self.rows.update((r["path"], r) for r in _read_journal(path))
        self.rows.update((r["path"], r) for r in _read_journal(self.journal))
        return self.rows

    def _worker_journals(self) -> list[Path]:
        folder = self.dir / WORKER_JOURNALS
        files = []
        for p in (folder.glob("*.jsonl") if folder.is_dir() else ()):
            try:
                files.append((p.stat().st_mtime_ns, p.name, p))
            except OSError:
                continue
        return [p for *_, p in sorted(files)]

    def recover(self, fingerprint: str) -> list[str]:
        """Add (and journal) the rows finished with `fingerprint` that the table lacks: those in
        the workers' journals, and those of complete archives on disk whose clip has no "ok" row
        naming that archive. Call when no worker is running, or at a run's start. Returns their keys."""
        found = []
        for path in self._worker_journals():
            for row in _read_journal(path):
                old = self.rows.get(row["path"])
                if row["fingerprint"] == fingerprint and \
                        (old is None or old["status"] != "ok" and row["status"] == "ok"):
                    self.add(row)
                    found.append(row["path"])
        known = {r["flow_file"] for r in self.rows.values() if r["status"] == "ok" and r["flow_file"]}
        for name in complete_archives(self.dir):
            if name in known:
                continue
            row = archive_row(self.dir / name)
            if row is not None and row["fingerprint"] == fingerprint and row["status"] == "ok" \
                    and row["flow_file"] == name:
                self.add(row)
                found.append(row["path"])
        return found

    def _read(self, path: Path) -> list[dict]:
        if path.suffix == ".parquet":
            if self.pq is None:
                raise CvflowError(f"{path} exists but reading it needs pyarrow (pip install pyarrow)")
            return [_typed(r) for r in self.pq.read_table(path).to_pylist()]
        with open(path, newline="") as f:
            return [_typed(r) for r in csv.DictReader(f)]

    def add(self, row: dict) -> None:
        if self._journal_file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._journal_file = open(self.journal, "a")
        self._journal_file.write(json.dumps(row) + "\n")
        self._journal_file.flush()
        self.rows[row["path"]] = row

    def write(self, workers_done: bool = False) -> Path:
        """Write every row (sorted by path) to the table, atomically; then empty the journal (and,
        with `workers_done`, once no engine worker runs any more, the workers' journals)."""
        rows = [self.rows[k] for k in sorted(self.rows)]
        write_atomic(self.path, lambda tmp: self._write_rows(rows, tmp),
                     self.path.with_name(f"{TMP}{os.getpid()}-{self.path.name}"))
        other = self.path.with_suffix(".csv" if self.path.suffix == ".parquet" else ".parquet")
        other.unlink(missing_ok=True)  # its rows are in the new table
        self.close()
        self.journal.unlink(missing_ok=True)
        if workers_done:
            for path in self._worker_journals():
                path.unlink(missing_ok=True)
            try:
                (self.dir / WORKER_JOURNALS).rmdir()
            except OSError:  # absent, or a worker of another run wrote meanwhile
                pass
        return self.path

    def _write_rows(self, rows, path) -> None:
        if self.pq is not None:
            import pyarrow as pa

            types = {str: pa.string(), int: pa.int64(), float: pa.float64()}
            schema = pa.schema([(c, types[t]) for c, t in COLUMNS.items()])
            self.pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        else:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
                writer.writeheader()
                writer.writerows({c: r[c] for c in COLUMNS} for r in rows)

    def close(self) -> None:
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None


def _typed(row: dict) -> dict:
    """A row with every column of COLUMNS in its type (CSV gives strings; NaN may be '' or None)."""
    out = {}
    for col, kind in COLUMNS.items():
        v = row.get(col)
        if kind is float:
            out[col] = math.nan if v in (None, "") else float(v)
        elif kind is int:
            out[col] = 0 if v in (None, "") else int(v)
        else:
            out[col] = "" if v is None else str(v)
    return out
