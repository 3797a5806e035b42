"""`cvflow extract`: the command line of `cvflow.extract` (`cvflow.extraction`)."""
from __future__ import annotations

import argparse
import sys

from cvflow.cli import common

DESCRIPTION = (
    "Compute the flow between consecutive frames of many clips and a motion score per clip. INPUT: a folder "
    "of videos (searched recursively), a folder of frame folders, or a manifest (.txt one path a line, "
    ".csv/.parquet with a `path` column). OUT receives scores.parquet (scores.csv without pyarrow): one row "
    "per clip with status, pairs, frame size and the mean/median/p90 flow magnitude (px, and over the frame "
    "diagonal); with --save flow|both, flow/<xx>/<name>-<hash>.npz per clip. A rerun with the same settings "
    "skips the clips done and redoes missing or failed ones; Ctrl-C keeps every completed clip (exit 130). "
    "Exit status: 0 every clip ok, 1 the table has error rows (the run finished; a rerun retries them), "
    "2 a cvflow error stopped the run.")


def register(sub) -> None:
    """Add `cvflow extract` to the subcommands `sub`."""
    p = sub.add_parser("extract", help="flow and motion scores over many videos (locally or on Ray)",
                       description=DESCRIPTION)
    p.add_argument("input", metavar="INPUT", help="folder of videos / frame folders, or a manifest")
    common.add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if needed)")
    common.add_frame_args(p, "flow and scores are")
    p.add_argument("--save", choices=["score", "flow", "both"], default="score",
                   help="score: the table (default); flow: one .npz of flows per clip (no magnitude "
                        "columns); both")
    p.add_argument("--fp16", action="store_true", help="store the flow archives in float16")
    p.add_argument("--no-warm-start", action="store_true",
                   help="RAFT family: do not start each pair from the previous pair's flow")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: Ray Data actors (extra ray: pip install '.[ray]' "
                        "in cvflow's repository)")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start Ray here")
    p.add_argument("--workers", type=common.positive_int, default=1, metavar="N",
                   help="Ray actors, each with its own model and --threads threads (default 1; --workers x "
                        "--threads must not exceed the cores)")
    p.add_argument("--gpus-per-worker", type=_share, default=0.0, metavar="F",
                   help="GPU share of each Ray actor, e.g. 0.5 (default 0: CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_extract)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def cmd_extract(args) -> int:
    from cvflow.extraction import ExtractInterrupted, extract
    from cvflow.progress import plural

    options = common.model_options(args)
    try:
        res = extract(args.input, args.output, args.model, weights=args.weights, every=args.every,
                      max_side=args.max_side, save=args.save, fp16=args.fp16, engine=args.engine,
                      address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                      device=args.device, options=options, warm_start=not args.no_warm_start,
                      progress=not args.no_progress, threads=args.threads,
                      precision=args.precision)
    except ExtractInterrupted as stop:
        res = stop.summary
        print(f"cvflow extract: interrupted after {plural(res['computed'], 'clip')}; {res['table']} holds every "
              "completed clip (rerun to finish)", file=sys.stderr)
        return 130
    print(f"{plural(res['clips'], 'clip')}: {res['computed']} computed, {res['skipped']} already done, "
          f"{res['errors']} with errors; wrote {res['table']} ({res['seconds']:.1f} s, {res['engine']})")
    if res["errors"]:  # the run finished, but not every clip has scores: scripts must notice
        print(f"cvflow extract: {plural(res['errors'], 'clip')} failed (status 'error' in {res['table']}, "
              "reason in its `error` column); a rerun retries them", file=sys.stderr)
        return 1
    return 0
