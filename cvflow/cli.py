"""Command line: `cvflow flow|video|extract|eval|convert|viz|models ...` (also `python -m cvflow`).

Every cvflow error (and any other OSError: disk full, ...) ends the command with its
message on stderr and exit status 2; outputs are checked before any model runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvflow.errors import CvflowError, InputError, OutputError, os_error
from cvflow.io.image import read_image
from cvflow.outputs import check_output_dir, check_output_file, write_image


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _create(args):
    """The algorithm named by the common model arguments (-m, --weights, --device, --iters, --opt)."""
    import cvflow

    return cvflow.create(args.model, weights=args.weights, device=args.device, **model_options(args))


def model_options(args) -> dict:
    """Model options from the common arguments: `--opt key=value` pairs, then `--iters`."""
    opts = _options(args.opt)
    if args.iters is not None:
        opts["iters"] = args.iters
    return opts


def _options(pairs):
    """`--opt key=value` pairs -> dict with ints/floats/bools parsed."""
    out = {}
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"--opt expects KEY=VALUE, got {item!r}")
        low = raw.lower()
        if low in ("true", "false"):
            val = low == "true"
        else:
            try:
                val = int(raw)
            except ValueError:
                try:
                    val = float(raw)
                except ValueError:
                    val = raw
        out[key.replace("-", "_")] = val
    return out


def cmd_flow(args) -> int:
    import cvflow

    check_output_file(args.output, "-o", "flo")  # every output checked before the model runs
    if args.png:
        check_output_file(args.png, "--png", "image")
    both = args.backward is not None or args.occlusion is not None
    if args.backward is not None:
        check_output_file(args.backward, "--backward", "flo")
    if args.occlusion is not None:
        check_output_file(args.occlusion, "--occlusion", "image")
    if args.occlusion_out_of_frame and args.occlusion is None:
        raise InputError("--occlusion-out-of-frame changes the --occlusion mask: give --occlusion MASK.png with it")
    img0, img1 = read_image(args.frame0), read_image(args.frame1)
    if img0.shape[:2] != img1.shape[:2]:  # before the model is loaded (seconds), not after
        raise InputError(f"FRAME0 {args.frame0} is {img0.shape[1]}x{img0.shape[0]} but FRAME1 {args.frame1} is "
                         f"{img1.shape[1]}x{img1.shape[0]}; the frames must have the same size")
    algo = _create(args)
    if both:
        flow, back, occ, _ = algo.calcBidirectional(img0, img1, occlusion=True,
                                                    out_of_frame=args.occlusion_out_of_frame)
    else:
        flow = algo.calc(img0, img1, None)
    cvflow.writeOpticalFlow(args.output, flow)
    print(f"wrote {args.output} ({flow.shape[1]}x{flow.shape[0]}, {args.model})")
    if args.png:
        write_image(args.png, cvflow.flow_to_color(flow, max_flow=args.max_flow))
        print(f"wrote {args.png}")
    if args.backward is not None:
        cvflow.writeOpticalFlow(args.backward, back)
        print(f"wrote {args.backward} (backward flow)")
    if args.occlusion is not None:
        write_image(args.occlusion, occ.astype("uint8") * 255)
        print(f"wrote {args.occlusion} (occlusion mask: {100 * occ.mean():.1f}% of FRAME0 occluded)")
    return 0


def cmd_convert(args) -> int:
    from cvflow.api import get_model
    from cvflow.io import raft_layouts
    from cvflow.io.checkpoint import load_weights, save_converted
    from cvflow.weights import adapt_layout

    dst = check_output_file(args.dst, "DST", "npz")
    if dst.exists() and not args.overwrite:  # as `video` and `extract`: never replace a file silently
        raise OutputError(f"DST {dst} exists; pass --overwrite to replace it")
    weights = load_weights(args.src)
    if args.model:  # checked in the file's own layout, written in the model's
        weights = adapt_layout(weights, get_model(args.model))
    elif raft_layouts.detect_layout(weights) == raft_layouts.TORCHVISION:
        weights = raft_layouts.torchvision_to_authors(weights)
    save_converted(weights, args.dst)
    print(f"wrote {args.dst} ({len(weights)} tensors)")
    return 0


def cmd_models(args) -> int:
    import cvflow

    if args.names:
        print("\n".join(cvflow.list_models()))
        return 0
    for model in cvflow.list_models(verbose=True):
        default = f"  (weights=None: {model['default']})" if model["default"] else ""
        print(f"{model['name']}  {model['description']}{default}")
        for w in model["weights"]:
            name = f"weights={w['tag']!r}" if w["tag"] else "release file"
            print(f"  {name}{' [default]' if w['default'] else ''}: {w['file']}")
            if w["data"]:
                print(f"    data: {w['data']}; trained by {w['trained_by']}")
            if w["metrics"]:
                print("    published: " + "; ".join(f"{bench} " + ", ".join(f"{k} {v}" for k, v in m.items())
                                                for bench, m in w["metrics"].items()))
            print(f"    licence: {w['license']}")
            print(f"    from: {w['url'] or w['source']}")
    return 0


def cmd_viz(args) -> int:
    import cvflow

    check_output_file(args.output, "-o", "image")
    flow = cvflow.readOpticalFlow(args.flow)
    if args.image:
        img = read_image(args.image)
        if img.shape[:2] != flow.shape[:2]:
            raise InputError(f"--image {args.image} is {img.shape[1]}x{img.shape[0]} but the flow "
                             f"{args.flow} is {flow.shape[1]}x{flow.shape[0]}; they must match")
        out = cvflow.flow_panel(img, flow, max_flow=args.max_flow)
    else:
        out = cvflow.flow_to_color(flow, max_flow=args.max_flow)
    write_image(args.output, out)
    print(f"wrote {args.output} ({out.shape[1]}x{out.shape[0]})")
    return 0


def cmd_video(args) -> int:
    from cvflow.progress import plural
    from cvflow.video import VideoInterrupted, check_earlier_run, open_video, run_video

    if args.occlusion and args.npz:
        raise InputError("--occlusion writes per-pair .flo and .png files; it cannot be combined with --npz")
    open_video(args.input).release()  # a bad video or output fails before the weights are loaded
    check_output_dir(args.output, "-o")
    check_earlier_run(args.output, args.overwrite)
    algo = _create(args)
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


def cmd_eval(args) -> int:
    import json

    from cvflow.evaluate import evaluate, find_pairs, format_table, read_pairs

    if args.pairs is not None:
        if args.root is not None or args.dataset is not None:
            raise InputError("give either --pairs LIST or ROOT with --dataset, not both")
    elif args.root is None or args.dataset is None:
        raise InputError("give ROOT and --dataset {sintel,kitti,chairs,middlebury}, or --pairs LIST "
                         "(one `frame0 frame1 ground-truth` line each)")
    if args.json and args.json != "-":
        check_output_file(args.json, "--json", "json")  # before the evaluation, not after
    if args.pairs is not None:
        pairs = read_pairs(args.pairs, limit=args.limit)
    else:
        pairs = find_pairs(args.root, args.dataset, pass_name=args.pass_name, limit=args.limit)
    algo = _create(args)
    res = evaluate(algo, pairs, progress=not args.no_progress)
    if args.pairs is not None:
        info = {"pairs_list": str(args.pairs), "model": algo.name, "options": algo.options, "device": algo.device}
    else:
        info = {"dataset": args.dataset, "root": str(args.root), "model": algo.name, "options": algo.options,
                "device": algo.device}
    if args.dataset == "sintel":
        info["pass"] = args.pass_name
    res = {**info, **res}
    title = f"{args.dataset or args.pairs}" + (f" ({args.pass_name})" if args.dataset == "sintel" else "") \
        + f", {algo.name}" + "".join(f", {k}={v}" for k, v in algo.options.items())
    table = format_table(res, title=title, per_pair=args.per_pair)
    text = json.dumps(res, indent=1)
    if args.json == "-":
        print(table, file=sys.stderr)
        print(text)
        return 0
    print(table)
    if args.json:
        try:
            Path(args.json).write_text(text + "\n")
        except OSError as exc:
            raise os_error("write", args.json, exc) from None
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvflow", description="Deep optical flow with OpenCV's interface.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("flow", help="flow of one frame pair to .flo (and a colour PNG)",
                       description="Compute the optical flow from FRAME0 to FRAME1.")
    p.add_argument("frame0")
    p.add_argument("frame1")
    _model_args(p)
    p.add_argument("-o", "--output", default="flow.flo", help="output .flo (default flow.flo)")
    p.add_argument("--png", help="also write the colour-coded flow to this PNG")
    p.add_argument("--max-flow", type=_positive_float, default=None,
                   help="flow magnitude (px) mapped to full saturation (default: the largest)")
    p.add_argument("--backward", metavar="BW.flo",
                   help="also write the backward flow (FRAME1 -> FRAME0) to this .flo")
    p.add_argument("--occlusion", metavar="MASK.png",
                   help="also write the occlusion mask of FRAME0 (255: no match in FRAME1; "
                        "forward-backward check) to this image")
    p.add_argument("--occlusion-out-of-frame", action="store_true",
                   help="the --occlusion mask also marks the pixels whose flow leaves FRAME1 (as MPI-Sintel's "
                        "masks do); without it, only those failing the forward-backward check")
    p.set_defaults(func=cmd_flow)

    p = sub.add_parser(
        "video", help="flow of every frame pair of a video (.flo/.npz and a colour MP4)",
        description="Compute the flow between consecutive frames of a video. OUT (a directory) receives "
                    "flow_000000.flo, flow_000001.flo, ... (pair k: kept frames k -> k+1) or, with --npz, one "
                    "flow.npz (arrays `flow` N x H x W x 2 and `frame_index` N x 2), and flow.mp4: each frame "
                    "beside its flow colour. Files are renamed into place when complete, so Ctrl-C leaves the "
                    "finished pairs readable (exit status 130).")
    p.add_argument("input", metavar="IN", help="video file (anything OpenCV decodes: .mp4, .avi, ...)")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory (created if needed)")
    p.add_argument("--every", type=_positive_int, default=1, metavar="N",
                   help="use every N-th frame (pairs 0->N, N->2N, ...; default 1)")
    p.add_argument("--max-side", type=_positive_int, default=None, metavar="S",
                   help="downsize frames so the longer side is <= S px; the flow is then at that size")
    p.add_argument("--npz", action="store_true", help="write one flow.npz instead of .flo files")
    p.add_argument("--no-mp4", action="store_true", help="do not write flow.mp4")
    p.add_argument("--no-warm-start", action="store_true",
                   help="RAFT family: do not start each pair from the previous pair's flow")
    p.add_argument("--max-flow", type=_positive_float, default=None,
                   help="flow magnitude (px) of full colour in flow.mp4 (default: each frame's largest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT may hold an earlier run: remove its files first (without it, that is an error)")
    p.add_argument("--occlusion", action="store_true",
                   help="also write each pair's backward flow (flow_bw_000000.flo) and occlusion masks "
                        "(occ_000000.png: frame k, occ_bw_000000.png: frame k+1; 255 = occluded); "
                        "no warm start; not with --npz")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser(
        "eval", help="accuracy on Sintel / KITTI-2015 / FlyingChairs / Middlebury, or your own pairs",
        description="Evaluate a model on a dataset's training split with ground truth (ROOT --dataset D), or "
                    "on the pairs of a list (--pairs LIST): mean EPE (px), 1/3/5-px outlier rates, Fl-all "
                    "(KITTI ground truth) and pairs/s.")
    p.add_argument("root", metavar="ROOT", nargs="?", help="dataset directory (with --dataset)")
    p.add_argument("--pairs", metavar="LIST",
                   help="instead of ROOT and --dataset: a text file, one `frame0 frame1 ground-truth` line "
                        "per pair (.flo, Middlebury unknown values skipped, or KITTI 16-bit .png); relative "
                        "paths from the list's folder")
    p.add_argument("--dataset", choices=["sintel", "kitti", "chairs", "middlebury"],
                   help="sintel: ROOT/training/{clean,final}/<scene>/frame_XXXX.png + training/flow/; "
                        "kitti: ROOT/training/image_2/XXXXXX_1{0,1}.png + training/flow_occ/; "
                        "chairs: ROOT[/data]/NNNNN_img{1,2}.ppm + _flow.flo (or -img0/-img1.ppm + -gt.flo); "
                        "middlebury: ROOT/other-data/<seq>/frameNN.png + other-gt-flow/<seq>/flowNN.flo, or "
                        "flat: ROOT/<name>1.png, <name>2.png, <name>.flo")
    _model_args(p)
    p.add_argument("--pass", dest="pass_name", default="clean", choices=["clean", "final"],
                   help="Sintel rendering pass (default clean)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="evaluate the first N pairs")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON ('-': stdout only, "
                                                      "the table goes to stderr)")
    p.add_argument("--per-pair", action="store_true", help="print one table row per pair")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert", help="convert a release checkpoint to cvflow's .npz",
                       description="Read a release checkpoint without torch and write cvflow's .npz "
                                   "(RAFT in torchvision's key layout is renamed to the authors').")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-m", "--model", help="verify the keys and shapes against this model")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists (without it, an error)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("viz", help="colour-code a .flo file",
                       description="Draw a .flo file with the Middlebury colour wheel (hue: direction, "
                                   "saturation: magnitude; zero flow is white).")
    p.add_argument("flow", metavar="FLOW.flo")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--max-flow", type=_positive_float, default=None,
                   help="flow magnitude (px) mapped to full saturation (default: the largest)")
    p.add_argument("--image", help="put this image (same size as the flow) left of the flow colour")
    p.set_defaults(func=cmd_viz)

    from cvflow.extraction_cli import add_parser as add_extract_parser  # `cvflow extract` lives there

    add_extract_parser(sub, _model_args)

    p = sub.add_parser("models", help="list the models and their weights",
                       description="List the models and the weights each takes: tags, training data, "
                                   "published metrics, licences, where each file comes from.")
    p.add_argument("--names", action="store_true", help="only the model names, one per line")
    p.set_defaults(func=cmd_models)
    return parser


def _model_args(p) -> None:
    p.add_argument("-m", "--model", required=True, help="model name (see `cvflow models`)")
    p.add_argument("--weights", help="checkpoint (.pth/.pth.tar/.npz) or tag (see `cvflow models`); "
                                      "default: the model's default weights")
    p.add_argument("--iters", type=_positive_int, default=None,
                   help="update iterations (RAFT family; default 12)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option (repeatable)")


def _version() -> str:
    from cvflow import __version__

    return f"cvflow {__version__}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CvflowError as exc:
        print(f"cvflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an I/O failure no check could foresee (disk full, ...): no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cvflow {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cvflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
