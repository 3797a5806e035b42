"""Optical flow over a video: an iterator of frame pairs, and a writer for its results.

`iter_video_flow` decodes a video with OpenCV and yields the flow of each pair of
consecutive (kept) frames. `run_video` writes the flows to a directory as `.flo`
files or one `.npz`, plus a colour-coded MP4, each file written under a temporary
name and renamed when complete, so an interrupted run (Ctrl-C) leaves only
complete, readable files behind.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from cvflow.errors import CvflowError, CvflowFileNotFoundError, InputError, os_error
from cvflow.io.atomic import write_atomic
from cvflow.io.npz import FlowStack
from cvflow.progress import Progress, plural

__all__ = ["iter_video_flow", "iter_frames_flow", "iter_video_bidirectional", "run_video", "open_video",
           "check_earlier_run", "VideoInterrupted"]

_DEFAULT_FPS = 25.0  # written when the source does not report a usable frame rate
_TMP = ".tmp-"  # prefix of files being written; renamed away when complete
# The files a run writes (and may leave, as temporaries, if killed): a directory holding
# any of them holds an earlier run (occ_*.png: occlusion masks, where a run writes them).
RUN_FILES = ("flow_*.flo", "flow.npz", "flow.mp4", "occ_*.png", f"{_TMP}*")


class VideoInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_video`, raised after the completed outputs were finalised.

    `summary` is the dict `run_video` would have returned, for the pairs done so far.
    Being a KeyboardInterrupt, it stops callers that do not handle it, as Ctrl-C should.
    """

    def __init__(self, summary: dict):
        super().__init__(f"interrupted after {plural(summary['pairs'], 'pair')}")
        self.summary = summary


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"`{name}` must be an int >= {low}, got {value!r}")
    if value < low:
        raise InputError(f"`{name}` must be an int >= {low}, got {value}")
    return int(value)


def open_video(path):
    """An opened cv2.VideoCapture for `path`; a clear cvflow error when it cannot be read."""
    import cv2

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CvflowFileNotFoundError(f"no such video file: {p}")
    # FFmpeg logs its own complaints ("moov atom not found") straight to stderr; cvflow raises a clear error
    # instead. OpenCV reads this level once, when its FFmpeg backend first starts; a value the user set wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cap = cv2.VideoCapture(p)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"cannot open video {p}: not a video format OpenCV can decode, or the file is corrupt")
    return cap


def _fit(frame, max_side):
    """Downsize (INTER_AREA) so the longer side is <= max_side; smaller frames are kept."""
    import cv2

    h, w = frame.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _kept_frames(cap, every, max_side):
    """Yield (source frame index, BGR frame) for frames 0, every, 2*every, ... until decoding stops."""
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        yield index, _fit(frame, max_side)
        for _ in range(every - 1):  # grab() advances without converting the frame to an array
            if not cap.grab():
                return
        index += every


def _source_info(cap):
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    return (fps if np.isfinite(fps) and fps > 0 else None), (count if count > 0 else None)


def pair_count(frame_count, every):
    """Number of pairs produced from `frame_count` frames keeping every `every`-th (0 if < 2 frames kept)."""
    if not frame_count:
        return 0
    return max(0, (frame_count - 1) // every)


def iter_video_flow(path, algo, every=1, max_side=None, warm_start=True):
    """Yield `(k, frame0, frame1, flow)` for each pair k = 0, 1, ... of kept frames of a video.

    path: a video file OpenCV decodes (e.g. .mp4, .avi). algo: an object from
    `cvflow.create`. every: keep frames 0, every, 2*every, ... (pair k is source frames
    k*every -> (k+1)*every). max_side: downsize frames (cv2.INTER_AREA) so the longer
    side is <= max_side; the flow is then in pixels of the downsized frames.
    warm_start: for models with a `warm_start` option (the RAFT family), start pair k
    from the flow of pair k-1 as it is (not forward-warped; for video the motion of
    consecutive pairs is close enough, and this is cheaper than RAFT's demo, which
    forward-interpolates the low-resolution flow).

    frame0, frame1 are (h, w, 3) uint8 BGR (downsized if asked). `flow` is (h, w, 2)
    float32 and is a **read-only view of one buffer reused for every pair** (it is the
    next pair's initial flow): it is valid until the iterator advances, so copy it to
    keep it (`flows = [f.copy() for *_, f in iter_video_flow(...)]`).

    The algorithm's flags and `warm_start` option are set for the run and restored when
    the iterator finishes or is closed.

    Raises CvflowFileNotFoundError (no such file) or InputError (undecodable video,
    fewer than two kept frames, frame size changing mid-stream).
    """
    every = _check_int("every", every, 1)
    max_side = _check_int("max_side", max_side, 1, allow_none=True)
    cap = open_video(path)
    try:
        yield from iter_frames_flow(_kept_frames(cap, every, max_side), algo, f"video {os.fspath(path)}",
                                    every=every, warm_start=warm_start)
    finally:
        cap.release()


def iter_frames_flow(frames, algo, name, every=1, warm_start=True):
    """Yield `(k, frame0, frame1, flow)` for each pair k of consecutive frames of `frames`.

    frames: an iterator of (source index, (h, w, 3) uint8 BGR frame), as kept by the
    caller (`every`, `max_side` already applied; `every` only words the error). name:
    how errors name the source ("video clip.mp4"). The rest as in `iter_video_flow`,
    which is this over a decoded video; `cvflow.extract` uses it for frame folders.
    """
    from cvflow.api import OPTFLOW_USE_INITIAL_FLOW

    saved_flags = algo.getFlags()
    has_option = "warm_start" in algo.options
    saved_option = algo.options.get("warm_start")
    try:
        # Only models that accept an initial flow get it; others never see the buffer as input.
        flags = saved_flags & ~OPTFLOW_USE_INITIAL_FLOW
        if has_option:
            algo.set("warm_start", False)  # the flag alone decides, per this call's `warm_start`
            if warm_start:
                flags |= OPTFLOW_USE_INITIAL_FLOW
        algo.setFlags(flags)
        buf = None
        for k, prev, frame in _frame_pairs(frames, name, every):
            buf = algo.calc(prev, frame, buf)  # fills `buf` in place after the first pair
            view = buf.view()
            view.flags.writeable = False
            yield k, prev, frame, view
    finally:
        algo.setFlags(saved_flags)
        if has_option:
            algo.set("warm_start", saved_option)


def iter_video_bidirectional(path, algo, every=1, max_side=None):
    """Yield `(k, frame0, frame1, fw, bw, occ0, occ1)` for each pair k of kept frames of a video:
    `algo.calcBidirectional(frame0, frame1, occlusion=True)` (see there: fw, bw (h, w, 2)
    float32, occ0/occ1 (h, w) bool masks of frame0/frame1), new arrays for every pair.

    path, every, max_side, errors: as in `iter_video_flow`. No warm start: each pair is
    computed from zero flow in both directions.
    """
    every = _check_int("every", every, 1)
    max_side = _check_int("max_side", max_side, 1, allow_none=True)
    cap = open_video(path)
    try:
        for k, prev, frame in _frame_pairs(_kept_frames(cap, every, max_side), f"video {os.fspath(path)}", every):
            yield (k, prev, frame, *algo.calcBidirectional(prev, frame, occlusion=True))
    finally:
        cap.release()


def _frame_pairs(frames, name, every):
    """Yield (k, frame0, frame1) for the consecutive pairs of `frames` ((source index, frame)
    items); InputError when nothing decodes, fewer than two frames come, or the size changes."""
    first = next(frames, None)
    if first is None:
        raise InputError(f"cannot read {name}: no frame could be decoded (corrupt or empty file)")
    _, prev = first
    k = 0
    for _, frame in frames:
        if frame.shape != prev.shape:
            raise InputError(f"{name}: frame size changed from {prev.shape[1]}x{prev.shape[0]} "
                             f"to {frame.shape[1]}x{frame.shape[0]} at pair {k}")
        yield k, prev, frame
        prev = frame
        k += 1
    if k == 0:
        raise InputError(f"{name} has fewer than two frames to pair"
                         + (f" when keeping one frame in {every}" if every > 1 else ""))


def check_earlier_run(out_dir, overwrite: bool = False) -> list[Path]:
    """Refuse an `out_dir` holding an earlier run's files (`RUN_FILES`) unless `overwrite`;
    return those files (OutputError names a few and how to proceed)."""
    from cvflow.outputs import check_earlier_files

    return check_earlier_files(out_dir, RUN_FILES, overwrite)


class _Outputs:
    """The files of one `run_video`: per-pair .flo (or one .npz) and the flow MP4.

    Every file is written as `.tmp-<name>` in the output directory and renamed when
    complete; `close()` finalises the NPZ and MP4 with the pairs added so far.
    """

    def __init__(self, out_dir: Path, npz: bool, mp4: bool, fps: float, max_flow):
        self.dir = out_dir
        self.npz = npz
        self.mp4 = mp4
        self.fps = fps
        self.max_flow = max_flow
        self.count = 0
        self.files: list[str] = []
        self._writer = None
        self._stack = FlowStack(self._tmp("flow.raw")) if npz else None

    def _tmp(self, name):
        return self.dir / f"{_TMP}{name}"

    def add(self, k, source_pair, frame0, flow, backward=()):
        """Pair k's outputs; backward: () or (bw, occ0, occ1) as `iter_video_bidirectional` gives."""
        if self.npz:
            self._add_npz(source_pair, flow)
        else:
            self._write_flo(self.dir / f"flow_{k:06d}.flo", flow)
        if backward:
            bw, occ0, occ1 = backward
            self._write_flo(self.dir / f"flow_bw_{k:06d}.flo", bw)
            self._write_mask(self.dir / f"occ_{k:06d}.png", occ0)
            self._write_mask(self.dir / f"occ_bw_{k:06d}.png", occ1)
        if self.mp4:
            self._add_mp4(frame0, flow)
        self.count += 1

    def _write_mask(self, final: Path, mask):
        from cvflow.outputs import write_image

        self._write(final, lambda tmp: write_image(tmp, mask.astype(np.uint8) * 255))

    def _write_flo(self, final: Path, flow):
        from cvflow.io.flo import writeOpticalFlow

        self._write(final, lambda tmp: writeOpticalFlow(tmp, flow))

    def _write(self, final: Path, write):
        """`write(tmp)` to a temporary name, then rename it to `final` (removed on failure)."""
        write_atomic(final, write, self._tmp(final.name))
        self.files.append(str(final))

    def _add_npz(self, source_pair, flow):
        try:
            self._stack.add(source_pair, flow)
        except OSError as e:  # disk full, ...
            raise os_error("write", self._stack.raw_path, e) from None

    def _add_mp4(self, frame0, flow):
        import cv2

        from cvflow.viz import flow_panel

        panel = flow_panel(frame0, flow, max_flow=self.max_flow)
        h, w = panel.shape[:2]
        if h % 2 or w % 2:  # mp4v drops an odd last row/column; pad with black instead
            panel = cv2.copyMakeBorder(panel, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        if self._writer is None:
            h, w = panel.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp("flow.mp4")), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise CvflowError(f"cannot write {self.dir / 'flow.mp4'}: OpenCV has no mp4v encoder "
                                  "(use --no-mp4 to skip the video)")
        self._writer.write(panel)

    def close(self):
        """Finalise the NPZ and the MP4 with what was added; remove temporary files."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            tmp = self._tmp("flow.mp4")
            if self.count:
                os.replace(tmp, self.dir / "flow.mp4")
                self.files.append(str(self.dir / "flow.mp4"))
            else:
                tmp.unlink(missing_ok=True)
        if self._stack is not None:
            stack, self._stack = self._stack, None
            try:
                if stack.frames:
                    self._write(self.dir / "flow.npz", stack.write_npz)
            finally:
                stack.discard()


def run_video(path, algo, out_dir, *, every=1, max_side=None, warm_start=True, npz=False, mp4=True,
              max_flow=None, progress=True, on_pair=None, overwrite=False, occlusion=False) -> dict:
    """Compute the flow of every pair of a video and write it to `out_dir` (created if needed).

    Writes `flow_000000.flo`, `flow_000001.flo`, ... (pair k = kept frames k -> k+1), or
    with `npz=True` one `flow.npz` holding `flow` (N, h, w, 2) float32 and
    `frame_index` (N, 2) int64 (the source frame numbers of each pair); and, with
    `mp4=True`, `flow.mp4` (mp4v): each kept frame beside its flow colour
    (`flow_panel`), at the source frame rate divided by `every`. A directory that holds
    an earlier run's files (`RUN_FILES`) is refused (OutputError) unless `overwrite=True`,
    which removes those files before the first pair is written (other files are kept).
    `every`, `max_side`, `warm_start`: as in `iter_video_flow`.
    `max_flow`: colour normalisation of the MP4 (default: each frame's largest flow).
    progress: show a progress bar (tqdm if installed) on stderr. on_pair: called as
    `on_pair(k, flow)` after pair k's outputs are written.
    occlusion: also write, per pair, the backward flow `flow_bw_000000.flo` (kept frame
    k+1 -> k) and the occlusion masks `occ_000000.png` (frame k's pixels with no match in
    frame k+1: 255) and `occ_bw_000000.png` (frame k+1's pixels with none in frame k), from
    `iter_video_bidirectional` (no warm start); not with `npz=True`.

    Returns {"pairs", "seconds", "pairs_per_s", "size": [h, w], "files": [...]}.
    On Ctrl-C the outputs of the completed pairs are finalised (the MP4 and NPZ hold
    the completed pairs), no temporary file is left, and VideoInterrupted (a
    KeyboardInterrupt carrying that summary) is raised.
    """
    from cvflow.outputs import check_output_dir, remove_files

    every = _check_int("every", every, 1)
    if occlusion and npz:
        raise InputError("`occlusion` writes per-pair .flo and .png files; it cannot be combined with `npz`")
    out = check_output_dir(out_dir)
    old = check_earlier_run(out, overwrite)
    cap = open_video(path)  # fail on a bad video before creating anything
    fps, count = _source_info(cap)
    cap.release()
    remove_files(old)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error("create directory", out, e) from None
    outputs = _Outputs(out, npz=npz, mp4=mp4, fps=(fps or _DEFAULT_FPS) / every, max_flow=max_flow)
    bar = Progress(total=pair_count(count, every) or None, desc="video", enabled=progress)
    size = None
    if occlusion:
        gen = iter_video_bidirectional(path, algo, every=every, max_side=max_side)
    else:
        gen = iter_video_flow(path, algo, every=every, max_side=max_side, warm_start=warm_start)
    start = time.perf_counter()

    def summary():
        seconds = time.perf_counter() - start
        return {"pairs": outputs.count, "seconds": seconds,
                "pairs_per_s": outputs.count / seconds if seconds > 0 else 0.0,
                "size": size, "files": outputs.files}

    interrupted = False
    try:
        for k, frame0, _, flow, *backward in gen:
            size = list(flow.shape[:2])
            outputs.add(k, (k * every, (k + 1) * every), frame0, flow, backward)
            bar.update()
            if on_pair is not None:
                on_pair(k, flow)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        gen.close()  # restores the algorithm's flags
        bar.close()
        outputs.close()
    if interrupted:
        raise VideoInterrupted(summary())
    return summary()
