"""Files of `cvflow extract`: finding the clips, reading frame folders, the per-clip
flow archive and the score table.

Everything written is written under a temporary name and renamed when complete, so a
reader (or a rerun after a crash) never sees half a file: the table as
`OUT/scores.parquet` (`scores.csv` without pyarrow), each clip's flow as
`OUT/flow/<xx>/<name>-<hash>.npz`. Rows finished since the table was last written are
kept in the journal `OUT/.scores.jsonl` (one JSON line per clip, appended as each
clip ends) until the table is rewritten, so even a killed driver loses no clip.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
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
                         "or cvflow[ray]); or give a .txt or .csv manifest")
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

    def commit(self, key: str, fingerprint: str) -> None:
        write_atomic(self.final, lambda tmp: self._stack.write_npz(tmp, path=np.array(key),
                                                                   fingerprint=np.array(fingerprint)), self._tmp)
        self._stack.discard()

    def discard(self) -> None:
        self._stack.discard()
        self._tmp.unlink(missing_ok=True)


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


class ScoreTable:
    """The rows of OUT (key -> row), read from the table and the journal; rows added are
    journalled at once and land in the table at `write()`."""

    def __init__(self, out_dir):
        self.dir = Path(out_dir)
        self.pq = _pyarrow_parquet()
        self.path = self.dir / ("scores.parquet" if self.pq is not None else "scores.csv")
        self.journal = self.dir / ".scores.jsonl"
        self.rows: dict[str, dict] = {}
        self._journal_file = None

    def load(self) -> dict[str, dict]:
        for name in ("scores.csv", "scores.parquet"):  # parquet last: it wins when both exist
            path = self.dir / name
            if path.is_file():
                self.rows.update((r["path"], r) for r in self._read(path))
        if self.journal.is_file():
            with open(self.journal) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:  # a line cut short by a killed driver: that clip is redone
                        continue
                    self.rows[row["path"]] = _typed(row)
        return self.rows

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

    def write(self) -> Path:
        """Write every row (sorted by path) to the table, atomically; then empty the journal."""
        rows = [self.rows[k] for k in sorted(self.rows)]
        write_atomic(self.path, lambda tmp: self._write_rows(rows, tmp),
                     self.path.with_name(f"{TMP}{os.getpid()}-{self.path.name}"))
        other = self.path.with_suffix(".csv" if self.path.suffix == ".parquet" else ".parquet")
        other.unlink(missing_ok=True)  # its rows are in the new table
        self.close()
        self.journal.unlink(missing_ok=True)
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
