"""Accuracy of a model on the standard optical-flow benchmarks' training layouts.

`find_pairs(root, dataset)` discovers frame pairs and ground truth of MPI-Sintel,
KITTI-2015, FlyingChairs or Middlebury; `evaluate(algo, pairs)` runs the model and returns the
end-point error, outlier rates and (KITTI) Fl-all.

Conventions: `epe` is the mean over pairs of each pair's mean EPE over its valid
pixels (RAFT's and KITTI's convention; for the fixed-size Sintel and Chairs frames
it equals the mean over all pixels). Outlier rates (EPE > 1, 3, 5 px) and Fl-all
(EPE > 3 px and > 5 % of |gt|) are fractions of all valid pixels of all pairs
(KITTI devkit convention), reported in [0, 1] (the table shows %). Ground truth
marked unknown (Middlebury: |u| or |v| > 1e9) is not scored.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvflow.errors import CvflowFileNotFoundError, InputError
from cvflow.progress import plural

__all__ = ["DATASETS", "Pair", "find_pairs", "read_pairs", "evaluate", "format_table"]

DATASETS = ("sintel", "kitti", "chairs", "middlebury")
PASSES = ("clean", "final")
THRESHOLDS = (1, 3, 5)


@dataclass(frozen=True)
class Pair:
    """One evaluation sample: two frame paths and the ground truth of frame0 -> frame1."""

    name: str
    frame0: str
    frame1: str
    gt: str
    gt_format: str  # "flo" (Middlebury) or "kitti" (16-bit PNG with a valid mask)


def _training_dir(root: Path, marker: str) -> Path:
    """`root/training` when present, else `root` itself (users may point at either)."""
    if (root / "training" / marker).is_dir():
        return root / "training"
    return root


def _sintel(root: Path, pass_name: str):
    base = _training_dir(root, pass_name)
    looked = (f"{base}/{pass_name}/<scene>/frame_XXXX.png with ground truth "
              f"{base}/flow/<scene>/frame_XXXX.flo")
    pairs = []
    img_root, flow_root = base / pass_name, base / "flow"
    scenes = sorted(p for p in img_root.iterdir() if p.is_dir()) if img_root.is_dir() else []
    for scene in scenes:
        frames = sorted(scene.glob("frame_*.png"))
        for f0, f1 in zip(frames, frames[1:]):
            gt = flow_root / scene.name / (f0.stem + ".flo")
            if gt.is_file():
                pairs.append(Pair(f"{scene.name}/{f0.stem}", str(f0), str(f1), str(gt), "flo"))
    return pairs, looked


def _kitti(root: Path):
    base = _training_dir(root, "image_2")
    looked = (f"{base}/image_2/XXXXXX_10.png and XXXXXX_11.png with ground truth "
              f"{base}/flow_occ/XXXXXX_10.png")
    pairs = []
    for f0 in sorted((base / "image_2").glob("*_10.png")):
        stem = f0.name[: -len("_10.png")]
        f1 = f0.with_name(f"{stem}_11.png")
        gt = base / "flow_occ" / f0.name
        if f1.is_file() and gt.is_file():
            pairs.append(Pair(stem, str(f0), str(f1), str(gt), "kitti"))
    return pairs, looked


# FlyingChairs file naming: (first frame suffix, second frame suffix, flow suffix)
_CHAIRS_NAMINGS = (("_img1.ppm", "_img2.ppm", "_flow.flo"), ("-img0.ppm", "-img1.ppm", "-gt.flo"))


def _chairs(root: Path):
    dirs = [d for d in (root, root / "data") if d.is_dir()]
    looked = " or ".join(f"{d}/NNNNN{a}, NNNNN{b}, NNNNN{c}" for d in (root, root / "data")
                         for a, b, c in _CHAIRS_NAMINGS)
    pairs = []
    for d in dirs:
        for s0, s1, sg in _CHAIRS_NAMINGS:
            for f0 in sorted(d.glob(f"*{s0}")):
                stem = f0.name[: -len(s0)]
                f1, gt = d / f"{stem}{s1}", d / f"{stem}{sg}"
                if f1.is_file() and gt.is_file():
                    pairs.append(Pair(stem, str(f0), str(f1), str(gt), "flo"))
        if pairs:  # the first directory that holds pairs is the dataset
            break
    return pairs, looked


def _middlebury_flat(root: Path):
    """One folder holding frames and ground truth: <name>.flo with <name>1.png, <name>2.png
    (e.g. RubberWhale.flo, RubberWhale1.png, RubberWhale2.png), or flowNN.flo with frameNN.png
    and frameMM.png (MM = NN + 1), Middlebury's own names."""
    pairs = []
    for gt in sorted(root.glob("*.flo")):
        stem = gt.stem
        num = stem[len("flow"):] if stem.startswith("flow") else ""
        if num.isdigit():
            f0, f1 = root / f"frame{num}.png", root / f"frame{int(num) + 1:0{len(num)}d}.png"
        else:
            f0, f1 = root / f"{stem}1.png", root / f"{stem}2.png"
        if f0.is_file() and f1.is_file():
            pairs.append(Pair(stem, str(f0), str(f1), str(gt), "flo"))
    return pairs


def _middlebury(root: Path):
    looked = (f"{root}/other-data/<sequence>/frameNN.png and frameMM.png (MM = NN + 1) with ground truth "
              f"{root}/other-gt-flow/<sequence>/flowNN.flo, or in {root} itself <name>1.png, <name>2.png and "
              "<name>.flo (or frameNN.png, frameMM.png and flowNN.flo)")
    flat = _middlebury_flat(root)
    if flat:
        return flat, looked
    pairs = []
    gt_root = root / "other-gt-flow"
    sequences = sorted(p for p in gt_root.iterdir() if p.is_dir()) if gt_root.is_dir() else []
    for seq in sequences:
        for gt in sorted(seq.glob("flow*.flo")):
            num = gt.stem[len("flow"):]
            if not num.isdigit():
                continue
            frames = root / "other-data" / seq.name
            f0 = frames / f"frame{num}.png"
            f1 = frames / f"frame{int(num) + 1:0{len(num)}d}.png"
            if f0.is_file() and f1.is_file():
                pairs.append(Pair(f"{seq.name}/{gt.stem}", str(f0), str(f1), str(gt), "flo"))
    return pairs, looked


def find_pairs(root, dataset: str, pass_name: str = "clean", limit: int | None = None) -> list[Pair]:
    """Frame pairs with ground truth of a dataset's training split, sorted by name.

    root: the dataset directory (for Sintel and KITTI either the top directory or its
    `training/`). dataset: "sintel" (`training/{clean,final}/<scene>/frame_XXXX.png`,
    `training/flow/<scene>/frame_XXXX.flo`), "kitti" (KITTI-2015
    `training/image_2/XXXXXX_10.png`, `_11.png`, `training/flow_occ/XXXXXX_10.png`) or
    "chairs" (`NNNNN_img1.ppm`, `_img2.ppm`, `_flow.flo`, or `-img0.ppm`, `-img1.ppm`,
    `-gt.flo`, in `root` or `root/data`) or "middlebury" (`other-data/<seq>/frameNN.png`,
    `frameNN+1.png`, `other-gt-flow/<seq>/flowNN.flo`). pass_name: Sintel's "clean" or "final".
    limit: keep the first `limit` pairs.

    Raises CvflowFileNotFoundError (no such directory) or InputError (unknown dataset
    or pass, bad limit, no pairs found: the message names the layout looked for).
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if pass_name not in PASSES:
        raise InputError(f"unknown Sintel pass {pass_name!r}; valid passes: {', '.join(PASSES)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"`limit` must be an int >= 1 or None, got {limit!r}")
    base = Path(os.fspath(root))
    if not base.is_dir():
        raise CvflowFileNotFoundError(f"dataset root is not a directory: {base}")
    if dataset == "sintel":
        pairs, looked = _sintel(base, pass_name)
    elif dataset == "kitti":
        pairs, looked = _kitti(base)
    elif dataset == "chairs":
        pairs, looked = _chairs(base)
    else:
        pairs, looked = _middlebury(base)
    if not pairs:
        raise InputError(f"no {dataset} pairs found under {base}: looked for {looked}")
    return pairs[:limit] if limit is not None else pairs


def read_pairs(path, limit: int | None = None) -> list[Pair]:
    """Pairs listed in a text file: one `frame0 frame1 ground-truth` line each (shell quoting for
    names with spaces; blank lines and `#` comments skipped; relative paths from the list's
    folder). Ground truth: `.flo` (Middlebury's unknown values, |u| or |v| > 1e9, are not
    scored) or a KITTI 16-bit `.png` (its valid bit). Pairs keep the file's order; `name` is
    frame0 as written.

    Raises CvflowFileNotFoundError (no list, or a listed file missing: line number and path)
    or InputError (a line without three paths, an unknown ground-truth format, no pairs).
    """
    import shlex

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"`limit` must be an int >= 1 or None, got {limit!r}")
    src = Path(os.fspath(path))
    if not src.is_file():
        raise CvflowFileNotFoundError(f"no such pairs list: {src}")
    pairs = []
    for number, line in enumerate(src.read_text().splitlines(), 1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"{src} line {number}: {exc}") from None
        if not fields:
            continue
        if len(fields) != 3:
            raise InputError(f"{src} line {number}: expected `frame0 frame1 ground-truth`, got {len(fields)} "
                             f"field{'' if len(fields) == 1 else 's'}: {line.strip()!r}")
        paths = [p if os.path.isabs(p) else str(src.parent / p) for p in fields]
        for what, p in zip(("frame0", "frame1", "ground truth"), paths):
            if not os.path.isfile(p):
                raise CvflowFileNotFoundError(f"{src} line {number}: {what} {p} does not exist")
        ext = Path(paths[2]).suffix.lower()
        if ext not in (".flo", ".png"):
            raise InputError(f"{src} line {number}: ground truth {paths[2]} must be a .flo file or a KITTI "
                             f"16-bit .png, got {ext or 'no extension'}")
        pairs.append(Pair(fields[0], paths[0], paths[1], paths[2], "flo" if ext == ".flo" else "kitti"))
    if not pairs:
        raise InputError(f"pairs list {src} lists no pairs (one `frame0 frame1 ground-truth` line each)")
    return pairs[:limit] if limit is not None else pairs


def load_gt(pair: Pair):
    """(flow (H, W, 2) float32, valid (H, W) bool) of a pair's ground truth."""
    if pair.gt_format == "kitti":
        from cvflow.io.kitti import read_kitti_flow

        return read_kitti_flow(pair.gt)
    from cvflow.io.flo import readOpticalFlow

    from cvflow.metrics import known_flow

    gt = readOpticalFlow(pair.gt)
    return gt, known_flow(gt)


def _pair_metrics(flow, gt, valid, kitti: bool) -> dict:
    from cvflow.metrics import epe, fl_all, outlier_rates

    rates = outlier_rates(flow, gt, valid, thresholds=THRESHOLDS)
    out = {"epe": epe(flow, gt, valid), **{f"{t}px": rates[t] for t in THRESHOLDS},
           "valid_pixels": int(valid.sum())}
    if kitti:
        out["fl_all"] = fl_all(flow, gt, valid)
    return out


def evaluate(algo, pairs, progress: bool = True) -> dict:
    """Run `algo` (from `cvflow.create`) on `pairs` (from `find_pairs`) and score it.

    Returns {"pairs": N, "epe": px, "1px"/"3px"/"5px": outlier fractions, "fl_all"
    (KITTI only), "seconds": wall time, "calc_seconds": time inside `calc`,
    "pairs_per_s": N / calc_seconds (the model's speed), "per_pair": [{"name", "epe",
    "1px", "3px", "5px", ("fl_all"), "valid_pixels", "seconds"}, ...]}. Aggregation:
    see the module docstring.
    """
    from cvflow.io.image import read_image
    from cvflow.progress import Progress

    pairs = list(pairs)
    if not pairs:
        raise InputError("no pairs to evaluate")
    kitti = any(p.gt_format == "kitti" for p in pairs)
    per_pair = []
    calc_seconds = 0.0
    start = time.perf_counter()
    bar = Progress(total=len(pairs), desc="eval", enabled=progress)
    try:
        for pair in pairs:
            try:
                img0, img1 = read_image(pair.frame0), read_image(pair.frame1)
                gt, valid = load_gt(pair)
                t0 = time.perf_counter()
                flow = algo.calc(img0, img1, None)
                dt = time.perf_counter() - t0
                row = {"name": pair.name, **_pair_metrics(flow, gt, valid, kitti), "seconds": dt}
            except InputError as exc:  # say which pair; the cause is in the message
                raise InputError(f"pair {pair.name}: {exc}") from None
            calc_seconds += dt
            per_pair.append(row)
            bar.update()
    finally:
        bar.close()
    weights = np.array([r["valid_pixels"] for r in per_pair], np.float64)

    def pooled(key):
        return float(np.dot([r[key] for r in per_pair], weights) / weights.sum())

    result = {"pairs": len(per_pair), "epe": float(np.mean([r["epe"] for r in per_pair]))}
    result.update({f"{t}px": pooled(f"{t}px") for t in THRESHOLDS})
    if kitti:
        result["fl_all"] = pooled("fl_all")
    result["seconds"] = time.perf_counter() - start
    result["calc_seconds"] = calc_seconds
    result["pairs_per_s"] = len(per_pair) / calc_seconds if calc_seconds > 0 else 0.0
    result["per_pair"] = per_pair
    return result


def format_table(result: dict, title: str = "", per_pair: bool = False) -> str:
    """A printable table of an `evaluate` result (rates in %)."""
    cols = ["epe", "1px", "3px", "5px"] + (["fl_all"] if "fl_all" in result else [])
    heads = {"epe": "EPE px", "1px": ">1px %", "3px": ">3px %", "5px": ">5px %", "fl_all": "Fl-all %"}

    def cells(row):
        return [f"{row['epe']:.3f}"] + [f"{100 * row[c]:.2f}" for c in cols[1:]]

    rows = []
    if per_pair:
        rows += [[r["name"]] + cells(r) for r in result["per_pair"]]
    rows.append([f"mean ({plural(result['pairs'], 'pair')})"] + cells(result))
    header = ["pair"] + [heads[c] for c in cols]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]

    def line(r):
        return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    out = [title] if title else []
    out += [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append(f"speed: {result['pairs_per_s']:.3f} pairs/s ({result['calc_seconds']:.2f} s in calc, "
               f"{result['seconds']:.2f} s total)")
    return "\n".join(out)
