"""`cvflow viz`: colour-code a .flo file."""
from __future__ import annotations

from cvflow.cli import common
from cvflow.errors import InputError
from cvflow.io.image import read_image
from cvflow.outputs import check_output_file, write_image


def register(sub) -> None:
    """Add `cvflow viz` to the subcommands `sub`."""
    p = sub.add_parser("viz", help="colour-code a .flo file",
                       description="Draw a .flo file with the Middlebury colour wheel (hue: direction, "
                                   "saturation: magnitude; zero flow is white).")
    p.add_argument("flow", metavar="FLOW.flo")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--max-flow", type=common.positive_float, default=None,
                   help="flow magnitude (px) mapped to full saturation (default: the largest)")
    p.add_argument("--image", help="put this image (same size as the flow) left of the flow colour")
    p.set_defaults(func=cmd_viz)


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
