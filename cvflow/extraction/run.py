"""`cvflow.extract`: the run over many clips (checks, settings, what is already done, the
engine, the table).

Results go to OUT (see `files`): a rerun with the same settings skips the clips already
done and redoes missing and failed ones; a run with other settings is refused rather
than mixed with them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping

from cvflow.backends import check_precision
from cvflow.backends.threads import check_threads
from cvflow.errors import CvflowTypeError, InputError
from cvflow.extraction.clip import run_local
from cvflow.extraction.files import TMP, ScoreTable, find_clips, sweep_temporaries
from cvflow.io.atomic import write_atomic
from cvflow.ops import parallel
from cvflow.outputs import check_output_dir
from cvflow.progress import plural

SAVE_MODES = ("score", "flow", "both")
ENGINES = ("local", "ray")
SETTINGS_FILE = "extract.json"
# settings that decide the numbers (and so the fingerprint); `device` and the engine do not
_FINGERPRINTED = ("model", "options", "weights_sha256", "every", "max_side", "warm_start", "save", "fp16",
                  "cvflow_version")


class ExtractInterrupted(KeyboardInterrupt):
    """Ctrl-C during `extract`, raised after every completed clip was written to the table.

    `summary` is what `extract` would have returned for the clips done so far.
    """

    def __init__(self, summary: dict):
        super().__init__(f"interrupted after {plural(summary['computed'], 'clip')}")
        self.summary = summary


# -- settings -------------------------------------------------------------------------------

def make_settings(model, weights=None, *, every=1, max_side=None, save="score", fp16=False, warm_start=True,
                  device="auto", options=None, precision=None):
    """(settings dict, flat weights): the run's settings with their `fingerprint`, and the loaded weights.

    The fingerprint (16 hex) is a hash of everything that decides the results: model,
    its options, the weights' sha256, every, max_side, warm_start, save, fp16, the
    cvflow version and `precision` when given (None, the device's default, adds nothing).
    `weights` as for `cvflow.create` (path, tag, None, mapping);
    `weights_sha256` is the sha256 of the file read, or for a mapping of arrays the one
    `cvflow.settings.weights_sha256` gives (sorted keys and float32 bytes).
    """
    from cvflow._version import __version__
    from cvflow.api import get_model
    from cvflow.inputs import check_options
    from cvflow.settings import arrays_sha256, cached_weights_path, file_sha256
    from cvflow.video import _check_int
    from cvflow.weights import load_model_weights

    every = _check_int("every", every, 1)
    max_side = _check_int("max_side", max_side, 1, allow_none=True)
    if save not in SAVE_MODES:
        raise InputError(f"`save` must be one of {', '.join(SAVE_MODES)}, got {save!r}")
    precision = check_precision(precision)
    spec = get_model(model)
    opts = check_options(spec, dict(options or {}))  # checked, defaults added
    flat = load_model_weights(spec, weights)  # any weights create() takes; checked, in the model's layout
    if isinstance(weights, Mapping):
        digest = arrays_sha256(flat)
    else:  # a path, a tag or None (the default): the file read
        given = isinstance(weights, (str, os.PathLike)) and os.path.exists(weights)
        file = weights if given else cached_weights_path(spec, weights)
        digest = file_sha256(file) if file else arrays_sha256(flat)
    settings = {"model": spec.name, "options": opts, "weights_sha256": digest, "every": every,
                "max_side": max_side, "warm_start": bool(warm_start), "save": save, "fp16": bool(fp16),
                "cvflow_version": __version__, "device": device, "precision": precision}
    decided = {k: settings[k] for k in _FINGERPRINTED}
    if precision is not None:  # fingerprints of runs at the device's default stay as they were
        decided["precision"] = precision
    text = json.dumps(decided, sort_keys=True, default=str)
    settings["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return settings, flat


def thread_share(engine, workers, threads, address=None):
    """Threads of each engine worker: `threads` when given, else the local engine takes
    every core of this process and each Ray actor of a Ray started here cores // workers
    (at least 1; on a cluster, 1 per actor unless given). A Ray started here refuses
    `workers` x `threads` above the cores this process may use."""
    if engine == "local":
        return threads
    if address is not None:
        return threads or 1
    if threads is None:
        return max(1, parallel.cores() // workers)
    if workers * threads > parallel.cores():
        raise InputError(f"`workers` x `threads` ({workers} x {threads}) exceeds the {parallel.cores()} cores this "
                         "process may use: lower either (each Ray actor runs `threads` threads)")
    return threads


def extract(input, output, model, *, weights=None, every=1, max_side=None, save="score", fp16=False,
            engine="local", address=None, workers=1, gpus_per_worker=0.0, device="auto", options=None,
            warm_start=True, progress=True, on_row=None, flush_seconds=60.0, threads=None, precision=None) -> dict:
    """Flow over every clip of `input`; scores (and flow archives) into the folder `output`.

    input: a folder of videos (recursive), a folder of frame folders, or a manifest
    (.txt / .csv / .parquet with a `path` column). model, weights, options (e.g.
    {"iters": 12}), device, precision: as for `cvflow.create`; every, max_side, warm_start: as for
    `cvflow.video.iter_video_flow`. save: "score" (the table only), "flow" (archives;
    the table's magnitude columns are then NaN), "both". fp16: archives in float16.
    engine: "local" or "ray" (needs `pip install cvflow-of[ray]`); address: a Ray cluster
    to join (default: start Ray here); workers: actors in the pool; gpus_per_worker:
    each actor's GPU share (0: CPU). threads: CPU threads of each worker (None: the local
    engine uses every core of this process; a Ray started here gives each actor
    cores // workers; `workers` x `threads` above the cores is refused; see
    `thread_share`). on_row(row): called after each clip is recorded.
    flush_seconds: rewrite the table at least this often during the run.

    Returns {"clips", "computed", "skipped", "errors", "seconds", "table", "engine"}. On
    Ctrl-C every completed clip is in the table and ExtractInterrupted is raised.
    """
    if engine not in ENGINES:
        raise InputError(f"`engine` must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"`workers` must be an int >= 1, got {workers!r}")
    if not isinstance(gpus_per_worker, (int, float)) or not 0 <= gpus_per_worker < math.inf:
        raise InputError(f"`gpus_per_worker` must be a number >= 0, got {gpus_per_worker!r}")
    if engine == "local" and (address is not None or workers != 1 or gpus_per_worker):
        raise InputError("`address`, `workers` and `gpus_per_worker` are for engine 'ray' (engine 'local' runs "
                         f"in this process), got address={address!r}, workers={workers}, "
                         f"gpus_per_worker={gpus_per_worker}")
    share = thread_share(engine, workers, check_threads(threads), address)
    if on_row is not None and not callable(on_row):
        raise CvflowTypeError(f"`on_row` must be callable, got {type(on_row).__name__}")
    out = check_output_dir(output, "output")  # a bad OUT fails before any work
    if engine == "ray":
        from cvflow.extraction.ray_engine import require_ray

        require_ray()  # a missing extra fails before any work
    clips = find_clips(input)
    settings, flat = make_settings(model, weights, every=every, max_side=max_side, save=save, fp16=fp16,
                                   warm_start=warm_start, device=device, options=options,
                                   precision=precision)
    table = ScoreTable(out)
    done = _done(table.load(), settings, out)
    # clips finished by a run stopped before their rows reached its table (archives on disk, workers' journals)
    table.recover(settings["fingerprint"])
    done = _done(table.rows, settings, out)
    todo = [c for c in clips if c["path"] not in done]
    _write_settings(out, settings)
    settings["out_dir"] = str(out.absolute())
    settings["threads"] = share  # after the settings file: threads do not decide the results
    if engine == "local":
        rows = run_local(todo, settings, flat)
    else:
        from cvflow.extraction.ray_engine import run_ray

        rows = run_ray(todo, settings, flat, address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    return _record(rows, table, settings["fingerprint"], len(clips), len(clips) - len(todo), engine, progress, on_row,
                   flush_seconds)


def _done(rows, settings, out) -> set:
    """Keys of clips done with these settings; refuses an OUT holding results of other settings."""
    other = sorted({r["fingerprint"] for r in rows.values()} - {settings["fingerprint"]})
    if other:
        raise InputError(f"{out} holds results made with other settings (fingerprint {', '.join(other)}; "
                         f"this run: {settings['fingerprint']}){_settings_diff(out, settings)}; write to "
                         "another output folder, or remove the old results")
    need_file = settings["save"] != "score"
    return {k for k, r in rows.items()
            if r["status"] == "ok" and (not need_file or (out / r["flow_file"]).is_file())}


def _settings_diff(out, settings) -> str:
    try:
        old = json.loads((out / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return ""
    diff = [f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in _FINGERPRINTED if old.get(k) != settings[k]]
    return f": {', '.join(diff)}" if diff else ""


def _write_settings(out, settings) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: v for k, v in settings.items() if k != "out_dir"}, indent=1, default=str)
    write_atomic(out / SETTINGS_FILE, lambda tmp: tmp.write_text(text), out / f"{TMP}{os.getpid()}-{SETTINGS_FILE}")


def _record(rows, table, fingerprint, total, skipped, engine, progress, on_row, flush_seconds) -> dict:
    """Journal each row as it arrives, rewrite the table now and then and at the end (also on Ctrl-C)."""
    start = last_flush = time.perf_counter()
    bar = _bar(total - skipped, progress)
    computed = 0

    def summary():
        errors = sum(r["status"] == "error" for r in table.rows.values())
        return {"clips": total, "computed": computed, "skipped": skipped, "errors": errors,
                "seconds": time.perf_counter() - start, "table": str(table.path), "engine": engine}

    try:
        for row in rows:
            table.add(row)
            computed += 1
            if bar is not None:
                bar.update()
            if on_row is not None:
                on_row(row)
            if time.perf_counter() - last_flush > flush_seconds:
                table.write()
                last_flush = time.perf_counter()
    except BaseException as exc:  # Ctrl-C, or a failure of the engine itself
        rows.close()  # stops the engine (Ray: its actors) before the table is written
        # Clips that finished but never reached this loop: a Ray task done but not yet handed over (its
        # worker journalled the row), or an archive renamed into place just before the signal.
        computed += len(table.recover(fingerprint))
        table.write(workers_done=True)
        if isinstance(exc, KeyboardInterrupt):
            raise ExtractInterrupted(summary()) from None
        raise
    finally:
        if bar is not None:
            bar.close()
        table.close()
    rows.close()
    table.write(workers_done=True)
    sweep_temporaries(table.dir)
    return summary()


def _bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm  # optional (extra `progress`)
    except ImportError:
        return None
    return tqdm(total=total, desc="extract", unit="clip", file=sys.stderr, dynamic_ncols=True)
