"""`cvflow flow`: the flow of one frame pair to .flo (and a colour PNG, the backward flow, the occlusion mask)."""
from __future__ import annotations

from cvflow.cli import common
from cvflow.io.image import read_image
from cvflow.outputs import check_output_file, write_image


def register(sub) -> None:
    """Add `cvflow flow` to the subcommands `sub`."""
    p = sub.add_parser("flow", help="flow of one frame pair to .flo (and a colour PNG)",
                       description="Compute the optical flow from FRAME0 to FRAME1.")
    p.add_argument("frame0")
    p.add_argument("frame1")
    common.add_model_args(p)
    p.add_argument("-o", "--output", default="flow.flo", help="output .flo (default flow.flo)")
    p.add_argument("--png", help="also write the colour-coded flow to this PNG")
    p.add_argument("--max-flow", type=common.positive_float, default=None,
                   help="flow magnitude (px) mapped to full saturation (default: the largest)")
    p.add_argument("--backward", metavar="BW.flo",
                   help="also write the backward flow (FRAME1 -> FRAME0) to this .flo")
    p.add_argument("--occlusion", metavar="MASK.png",
                   help="also write the occlusion mask of FRAME0 (255: no match in FRAME1; "
                        "forward-backward check) to this image")
    p.set_defaults(func=cmd_flow)


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
    img0, img1 = read_image(args.frame0), read_image(args.frame1)
    algo = common.create(args)
    if both:
        flow, back, occ, _ = algo.calcBidirectional(img0, img1, occlusion=True)
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
