"""Engine `ray` of `cvflow.extract`: clips as rows of a Ray Data dataset, mapped by a
pool of actors that each create the model once and run `process_clip` on whole clips
(warm start needs a clip's pairs in order, on one model).

Faults: an actor that dies mid-clip (killed, out of memory, node lost) is restarted
and the clip's task retried (Ray's `max_restarts` / `max_task_retries`); each clip is
its own block, so a retry redoes that clip only, and its archive, written under a
temporary name, is renamed into place by whichever attempt finishes. After MAX_DEATHS
deaths on one clip it becomes an `error` row. The driver keeps one row per clip. Only
this module imports Ray.
"""
from __future__ import annotations

import contextlib
import logging

from cvflow.errors import CvflowError, MissingDependencyError

__all__ = ["require_ray", "run_ray", "MAX_DEATHS"]

# A clip whose worker died this many times (each death: Ray restarts the actor and retries
# the clip) is recorded as an error instead of being tried again: a clip that always runs
# out of memory would otherwise be retried for ever and the run never end.
MAX_DEATHS = 3
ATTEMPTS_DIR = ".attempts"  # in OUT: one file per clip being computed, a line per attempt begun


def require_ray():
    """The `ray` module with Ray Data, or MissingDependencyError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs the `data` extra: pandas, pyarrow)
    except ImportError as exc:
        raise MissingDependencyError(
            f"engine 'ray' needs Ray Data, which is not installed ({exc}); install it with "
            "pip install 'ray[data]' pyarrow (the extra `ray` of cvflow's distribution, cvflow-of), "
            "or use engine 'local'") from None
    return ray


class ClipWorker:
    """A Ray Data callable class: one model per actor, one clip per batch."""

    def __init__(self, settings, weights):
        import ray

        from cvflow.extraction.clip import create_algo

        # the actor's threads: settings["threads"], its share (`thread_share`), which is also
        # the CPUs Ray reserves for it, so N actors never run more threads than the cores
        if isinstance(weights, ray.ObjectRef):
            weights = ray.get(weights)
        self.settings = settings
        device = "cuda" if settings.get("gpus_per_worker") else settings["device"]
        self.algo = create_algo(settings, weights, device=device)

    def __call__(self, batch):
        keys = ("path", "source", "kind")
        rows = [self._clip({k: str(batch[k][i]) for k in keys}) for i in range(len(batch["path"]))]
        return {c: [r[c] for r in rows] for c in rows[0]} if rows else {}

    def _clip(self, clip):
        """process_clip, counting attempts in a file that only a finished attempt removes."""
        import hashlib
        import os
        from pathlib import Path

        from cvflow.extraction.clip import error_row, process_clip
        from cvflow.extraction.files import journal_worker_row

        out = self.settings["out_dir"]
        marker = Path(out) / ATTEMPTS_DIR / hashlib.sha1(clip["path"].encode()).hexdigest()
        deaths = len(marker.read_text().split()) if marker.is_file() else 0
        if deaths >= MAX_DEATHS:
            marker.unlink(missing_ok=True)
            return error_row(clip, self.settings, f"the worker died {deaths} times while computing this clip "
                                                  "(out of memory? killed?); not tried again")
        marker.parent.mkdir(parents=True, exist_ok=True)
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        row = process_clip(self.algo, clip, self.settings, out)
        # journalled here, before the row travels to the driver: a run stopped now (Ctrl-C) drops
        # the results of finished tasks not yet handed over, and the driver reads them back from here
        journal_worker_row(out, row)
        marker.unlink(missing_ok=True)
        return row


def run_ray(todo, settings, weights, *, address=None, workers=1, gpus_per_worker=0.0):
    """Engine `ray`: yields each clip's row as the actors finish it (in no fixed order).

    Joins the cluster at `address` (its workers then import this very cvflow, shipped as a
    runtime-env module, so nodes need only its dependencies), or an already initialised
    Ray, or starts Ray in this process (shut down again when done). INPUT and OUT must be
    at the same paths on every node. A failure of Ray itself (not of a clip) is raised as
    CvflowError; the clips finished before it are kept.
    """
    import shutil
    from pathlib import Path

    from cvflow.extraction.files import _typed

    ray = require_ray()
    if not todo:
        return
    attempts = Path(settings["out_dir"]) / ATTEMPTS_DIR
    shutil.rmtree(attempts, ignore_errors=True)  # deaths are counted per run
    started = not ray.is_initialized()
    if started:
        package = Path(__file__).parent.parent  # this cvflow
        env = {"py_modules": [str(package)]} if address else None
        restore = _quiet_ray()
        try:
            # "local": a new instance here even when RAY_ADDRESS or a running local cluster says otherwise
            with _stderr_without(rb"logging\.cc:\d+: Set ray log level from environment variable"):
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                         runtime_env=env, logging_level=logging.WARNING)
        except (ConnectionError, ValueError) as exc:
            _restore(restore)
            raise CvflowError(f"cannot join the Ray cluster at {address}: {_first_line(exc)}") from None
        except BaseException:
            _restore(restore)
            raise
    try:
        settings = {**settings, "gpus_per_worker": gpus_per_worker}
        seen = set()
        for row in _rows(ray, todo, settings, weights, workers, gpus_per_worker):
            row = _typed(row)
            if row["path"] not in seen:  # a retried generator may hand a row back twice
                seen.add(row["path"])
                yield row
        shutil.rmtree(attempts, ignore_errors=True)
    finally:
        if started:
            ray.shutdown()
            _restore(restore)


def _quiet_ray() -> list:
    """Ray's lines that say nothing to a cvflow user, silenced when cvflow starts Ray itself
    (each setting the user made wins):

    - the C++ core worker's `core_worker.cc ... the actor restart will fail` error: Ray Data
      itself passes its actors' constructor arguments through the object store, and cvflow
      does not lose them. Ray's C++ log level (`RAY_BACKEND_LOG_LEVEL`, default `info`) is
      `fatal` for this instance; failures that matter reach cvflow as exceptions or rows;
    - the notice that token authentication is on (it stays on: only the notice goes);
    - Ray Data's console lines below ERROR (dataset start and end, "progress bars disabled"):
      cvflow shows its own progress; Ray Data's log file keeps them.

    Returns [(logger or handler, level)] to restore when the run ends.
    """
    import os

    import ray.data  # noqa: F401  (configures the `ray.data` logger, whose console handler is raised here)

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    restore = []
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if auth.level == logging.NOTSET:
        restore.append((auth, auth.level))
        auth.setLevel(logging.ERROR)
    for handler in logging.getLogger("ray.data").handlers:  # the console one; its log file keeps everything
        if type(handler).__name__ == "PlainRayHandler" and handler.level < logging.ERROR:
            restore.append((handler, handler.level))
            handler.setLevel(logging.ERROR)
    return restore


def _restore(items) -> None:
    for item, level in items:
        item.setLevel(level)


@contextlib.contextmanager
def _stderr_without(pattern: bytes):
    """Standard error (the file descriptor: Ray's C++ code writes there) with the lines matching
    `pattern` left out: the rest is written to it when the block ends. With
    RAY_BACKEND_LOG_LEVEL set, Ray's core worker announces the level on stderr at start."""
    import os
    import re
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = b"".join(line for line in tmp if not re.search(pattern, line))
            if kept:
                os.write(2, kept)


def _rows(ray, todo, settings, weights, workers, gpus_per_worker):
    """The mapped dataset's rows; Ray's own failures as CvflowError."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # cvflow shows its own
    ds = ray.data.from_items([{k: c[k] for k in ("path", "source", "kind")} for c in todo],
                             override_num_blocks=len(todo))
    ds = ds.map_batches(
        ClipWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"settings": settings, "weights": ray.put(weights)},
        num_cpus=settings.get("threads") or 1, num_gpus=gpus_per_worker or None)  # the pool's actors: max_restarts=-1,
    # max_task_retries=-1 (Ray Data's defaults): a dead actor is replaced and its clip retried
    try:
        yield from ds.iter_rows()
    except (KeyboardInterrupt, CvflowError):
        raise
    except Exception as exc:  # Ray's, e.g. workers that cannot import cvflow or create the model
        raise CvflowError(f"the Ray run failed: {type(exc).__name__}: {_first_line(exc)} (every node needs "
                          "cvflow's dependencies, and INPUT and OUT at the same paths)") from exc


def _first_line(exc) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
