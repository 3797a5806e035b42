"""One clip -> one score row (and flow archive): `process_clip`, and the `local` engine.

Both engines call `process_clip` on whole clips (warm start needs a clip's pairs in
order, on one model): `run_local` here in this process, `ray_engine.run_ray` on a pool
of Ray actors.
"""
from __future__ import annotations

import math
import time

import numpy as np

from cvflow.errors import CvflowError
from cvflow.extraction.files import COLUMNS, FlowArchive, archive_name, folder_frames


def create_algo(settings, weights, device=None):
    """The settings' model, created once per process (engine worker), with the worker's
    share of threads (settings["threads"]; None: every core of the process)."""
    from cvflow.api import create

    return create(settings["model"], weights=weights, device=device or settings["device"],
                  threads=settings.get("threads"), precision=settings.get("precision"), **settings["options"])


def _empty_row(clip, settings) -> dict:
    row = {c: (math.nan if t is float else 0 if t is int else "") for c, t in COLUMNS.items()}
    row.update(path=clip["path"], model=settings["model"], weights_sha256=settings["weights_sha256"],
               cvflow_version=settings["cvflow_version"], fingerprint=settings["fingerprint"])
    return row


def error_row(clip, settings, message: str) -> dict:
    """The row of a clip that failed outside `process_clip` (e.g. its worker kept dying)."""
    return {**_empty_row(clip, settings), "status": "error", "error": message, "seconds": 0.0}


def _pairs(clip, algo, settings):
    from cvflow.video import iter_frames_flow, iter_video_flow

    every, max_side, warm = settings["every"], settings["max_side"], settings["warm_start"]
    if clip["kind"] == "frames":
        frames = folder_frames(clip["source"], every, max_side)
        return iter_frames_flow(frames, algo, f"frame folder {clip['source']}", every=every, warm_start=warm)
    return iter_video_flow(clip["source"], algo, every=every, max_side=max_side, warm_start=warm)


def process_clip(algo, clip: dict, settings: dict, out_dir) -> dict:
    """Flow over one clip's consecutive kept frames -> its score row (and flow archive).

    clip: {"path": key, "source": file or folder, "kind": "video" | "frames"} (from
    `find_clips`). Scores (with save "score"/"both"): mean, median and 90th percentile
    of the per-pixel flow magnitude |(dx, dy)| in px over every pair of the clip, and
    the same divided by the processed frame's diagonal (so 0.01 = 1% of the diagonal
    per pair). With save "flow"/"both" the flows go to OUT/`flow_file` (float16 with
    fp16). A clip that cannot be read or computed gives a row with status "error" and
    the reason; only KeyboardInterrupt (and process death) escapes.
    """
    start = time.perf_counter()
    row = _empty_row(clip, settings)
    want_scores = settings["save"] in ("score", "both")
    archive = gen = None
    mags = []
    pairs = 0
    try:
        every = settings["every"]
        gen = _pairs(clip, algo, settings)
        for k, _, _, flow in gen:
            if settings["save"] != "score":
                if archive is None:
                    archive = FlowArchive(out_dir, archive_name(clip["path"]),
                                          np.float16 if settings["fp16"] else np.float32)
                archive.add((k * every, (k + 1) * every), flow)
            if want_scores:
                mags.append(np.hypot(flow[..., 0], flow[..., 1]).ravel())
            row["height"], row["width"] = flow.shape[:2]
            pairs += 1
        row["pairs"] = pairs
        if want_scores:
            row.update(_scores(np.concatenate(mags), row["height"], row["width"]))
        row["status"] = "ok"
        if archive is not None:  # last: a complete archive carries its clip's finished row
            row["flow_file"] = archive_name(clip["path"])
            archive.commit(clip["path"], settings["fingerprint"], row)
            archive = None
    except Exception as exc:  # the clip's failure, recorded; the run goes on
        row = {**_empty_row(clip, settings), "status": "error", "error": _reason(exc)}
    finally:
        if gen is not None:
            gen.close()  # releases the video, restores the model's flags
        if archive is not None:
            archive.discard()
    row["seconds"] = round(time.perf_counter() - start, 4)
    return row


def _scores(mag, h, w) -> dict:
    mean = float(np.mean(mag, dtype=np.float64))
    median, p90 = (float(v) for v in np.percentile(mag, [50, 90]))
    diag = math.hypot(h, w)
    return {"mag_mean": mean, "mag_median": median, "mag_p90": p90,
            "mag_mean_norm": mean / diag, "mag_median_norm": median / diag, "mag_p90_norm": p90 / diag}


def _reason(exc) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, CvflowError) else f"{type(exc).__name__}: {text}"


# -- engine `local` -------------------------------------------------------------------------

def run_local(todo, settings, weights):
    """Engine `local`: yields each clip's row, computed in this process with one model."""
    algo = create_algo(settings, weights)
    for clip in todo:
        yield process_clip(algo, clip, settings, settings["out_dir"])
