"""`cvflow flow`: the flow of one frame pair to .flo (and a colour PNG, the backward flow, the occlusion mask,
the uncertainty picture of models that predict one)."""
from __future__ import annotations

from cvflow.cli import common
from cvflow.errors import InputError
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
    p.add_argument("--uncertainty", metavar="UNC.png",
                   help="also write the per-pixel expected flow error (SEA-RAFT models) as a colour map")
    p.add_argument("--occlusion", metavar="MASK.png",
                   help="also write the occlusion mask of FRAME0 (255: no match in FRAME1; "
                        "forward-backward check) to this image")
    p.add_argument("--occlusion-out-of-frame", action="store_true",
                   help="the --occlusion mask also marks the pixels whose flow leaves FRAME1 (as MPI-Sintel's "
                        "masks do); without it, only those failing the forward-backward check")
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
    if args.uncertainty is not None:
        check_output_file(args.uncertainty, "--uncertainty", "image")
        _check_uncertainty_model(args.model)
    if args.occlusion_out_of_frame and args.occlusion is None:
        raise InputError("--occlusion-out-of-frame changes the --occlusion mask: give --occlusion MASK.png with it")
    img0, img1 = read_image(args.frame0), read_image(args.frame1)
    if img0.shape[:2] != img1.shape[:2]:  # before the model is loaded (seconds), not after
        raise InputError(f"FRAME0 {args.frame0} is {img0.shape[1]}x{img0.shape[0]} but FRAME1 {args.frame1} is "
                         f"{img1.shape[1]}x{img1.shape[0]}; the frames must have the same size")
    algo = common.create(args)
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
    if args.uncertainty is not None:
        import numpy as np

        unc = algo.getUncertainty()
        write_image(args.uncertainty, cvflow.uncertainty_to_color(unc))
        print(f"wrote {args.uncertainty} (expected flow error: median {float(np.median(unc)):.2f} px, "
              f"99th percentile {float(np.percentile(unc, 99)):.2f} px)")
    return 0


def _check_uncertainty_model(name):
    """--uncertainty needs a model that predicts one: say so before any work."""
    from cvflow.api import get_model, list_models

    if not get_model(name).info_channels:
        have = ", ".join(n for n in list_models() if get_model(n).info_channels)
        raise InputError(f"--uncertainty: model {name!r} predicts no uncertainty; models that do: {have}")
