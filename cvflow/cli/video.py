"""`cvflow video`: the flow of every frame pair of a video."""
from __future__ import annotations

import sys

from cvflow.cli import common
from cvflow.errors import InputError
from cvflow.outputs import check_output_dir


def register(sub) -> None:
    """Add `cvflow video` to the subcommands `sub`."""
    p = sub.add_parser(
        "video", help="flow of every frame pair of a video (.flo/.npz and a colour MP4)",
        description="Compute the flow between consecutive frames of a video. OUT (a directory) receives "
                    "flow_000000.flo, flow_000001.flo, ... (pair k: kept frames k -> k+1) or, with --npz, one "
                    "flow.npz (arrays `flow` N x H x W x 2 and `frame_index` N x 2), and flow.mp4: each frame "
                    "beside its flow colour. Files are renamed into place when complete, so Ctrl-C leaves the "
                    "finished pairs readable (exit status 130).")
    p.add_argument("input", metavar="IN", help="video file (anything OpenCV decodes: .mp4, .avi, ...)")
    common.add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory (created if needed)")
    common.add_frame_args(p, "the flow is")
    p.add_argument("--npz", action="store_true", help="write one flow.npz instead of .flo files")
    p.add_argument("--no-mp4", action="store_true", help="do not write flow.mp4")
    p.add_argument("--no-warm-start", action="store_true",
                   help="RAFT family: do not start each pair from the previous pair's flow")
    p.add_argument("--max-flow", type=common.positive_float, default=None,
                   help="flow magnitude (px) of full colour in flow.mp4 (default: each frame's largest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT may hold an earlier run: remove its files first (without it, that is an error)")
    p.add_argument("--occlusion", action="store_true",
                   help="also write each pair's backward flow (flow_bw_000000.flo) and occlusion masks "
                        "(occ_000000.png: frame k, occ_bw_000000.png: frame k+1; 255 = occluded); "
                        "no warm start; not with --npz")
    p.set_defaults(func=cmd_video)


def cmd_video(args) -> int:
    from cvflow.progress import plural
    from cvflow.video import VideoInterrupted, check_earlier_run, open_video, run_video

    if args.occlusion and args.npz:
        raise InputError("--occlusion writes per-pair .flo and .png files; it cannot be combined with --npz")
    open_video(args.input).release()  # a bad video or output fails before the weights are loaded
    check_output_dir(args.output, "-o")
    check_earlier_run(args.output, args.overwrite)
    algo = common.create(args)
    try:
        res = run_video(args.input, algo, args.output, every=args.every, max_side=args.max_side,
                        warm_start=not args.no_warm_start, npz=args.npz, mp4=not args.no_mp4,
                        max_flow=args.max_flow, progress=not args.no_progress, overwrite=args.overwrite,
                        occlusion=args.occlusion)
    except VideoInterrupted as stop:
        res = stop.summary
        print(f"cvflow video: interrupted after {plural(res['pairs'], 'pair')}; their outputs in "
              f"{args.output} are complete", file=sys.stderr)
        return 130
    h, w = res["size"]
    what = "flow.npz" if args.npz else ".flo files"
    if args.occlusion:
        what += ", backward .flo files, occlusion PNGs"
    print(f"wrote {plural(res['pairs'], 'pair')} ({w}x{h}, {args.model}) to {args.output}: {what}"
          + (" and flow.mp4" if not args.no_mp4 else "")
          + f"; {res['pairs_per_s']:.2f} pairs/s")
    return 0
