"""Command line: `cvflow flow|convert|viz ...` (also `python -m cvflow`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvflow.errors import CvflowError


def _read_image(path: str):
    import cv2

    from cvflow.errors import CvflowFileNotFoundError, InputError

    if not Path(path).is_file():
        raise CvflowFileNotFoundError(f"no such image file: {path}")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot decode image {path} (not an image format OpenCV reads)")
    return img


def _options(pairs):
    """`--opt key=value` pairs -> dict with ints/floats/bools parsed."""
    out = {}
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--opt expects key=value, got {item!r}")
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
    import cv2

    import cvflow

    img0, img1 = _read_image(args.frame0), _read_image(args.frame1)
    opts = _options(args.opt)
    if args.iters is not None:
        opts["iters"] = args.iters
    algo = cvflow.create(args.model, weights=args.weights, device=args.device, **opts)
    flow = algo.calc(img0, img1, None)
    cvflow.writeOpticalFlow(args.output, flow)
    print(f"wrote {args.output} ({flow.shape[1]}x{flow.shape[0]}, {args.model})")
    if args.png:
        cv2.imwrite(args.png, cvflow.flow_to_color(flow, max_flow=args.max_flow))
        print(f"wrote {args.png}")
    return 0


def cmd_convert(args) -> int:
    from cvflow.api import get_model
    from cvflow.io.checkpoint import load_weights, save_converted
    from cvflow.weights import verify_weights

    weights = load_weights(args.src)
    if args.model:
        model = get_model(args.model)
        verify_weights(weights, model.param_shapes(model.config), model.name)
    save_converted(weights, args.dst)
    print(f"wrote {args.dst} ({len(weights)} tensors)")
    return 0


def cmd_viz(args) -> int:
    import cv2

    import cvflow

    flow = cvflow.readOpticalFlow(args.flow)
    if args.image:
        img = _read_image(args.image)
        out = cvflow.flow_panel(img, flow, max_flow=args.max_flow)
    else:
        out = cvflow.flow_to_color(flow, max_flow=args.max_flow)
    if not cv2.imwrite(args.output, out):
        raise CvflowError(f"could not write {args.output}")
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvflow", description="Deep optical flow with OpenCV's interface.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("flow", help="flow of one frame pair to .flo (and a colour PNG)",
                       description="Compute the optical flow from FRAME0 to FRAME1.")
    p.add_argument("frame0")
    p.add_argument("frame1")
    p.add_argument("-m", "--model", required=True, help="model name (see `cvflow models`)")
    p.add_argument("--weights", help="checkpoint (.pth/.pth.tar/.npz); default: the cache")
    p.add_argument("-o", "--output", default="flow.flo", help="output .flo (default flow.flo)")
    p.add_argument("--png", help="also write the colour-coded flow to this PNG")
    p.add_argument("--max-flow", type=float, default=None, help="flow magnitude mapped to full saturation")
    p.add_argument("--iters", type=int, default=None, help="update iterations (RAFT)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option (repeatable)")
    p.set_defaults(func=cmd_flow)

    p = sub.add_parser("convert", help="convert a release checkpoint to cvflow's .npz",
                       description="Read a release checkpoint without torch and write cvflow's .npz.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-m", "--model", help="verify the keys and shapes against this model")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("viz", help="colour-code a .flo file", description="Draw a .flo file as a PNG.")
    p.add_argument("flow")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--max-flow", type=float, default=None)
    p.add_argument("--image", help="put this image beside the flow (side-by-side panel)")
    p.set_defaults(func=cmd_viz)

    p = sub.add_parser("models", help="list the model names", description="List the model names.")
    p.set_defaults(func=lambda args: print("\n".join(__import__("cvflow").list_models())) or 0)
    return parser


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
    except KeyboardInterrupt:
        print(f"cvflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
