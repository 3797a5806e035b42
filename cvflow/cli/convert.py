"""`cvflow convert`: a release checkpoint to cvflow's .npz."""
from __future__ import annotations

from cvflow.errors import OutputError
from cvflow.outputs import check_output_file


def register(sub) -> None:
    """Add `cvflow convert` to the subcommands `sub`."""
    p = sub.add_parser("convert", help="convert a release checkpoint to cvflow's .npz",
                       description="Read a release checkpoint without torch and write cvflow's .npz "
                                   "(RAFT in torchvision's key layout is renamed to the authors').")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-m", "--model", help="verify the keys and shapes against this model")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists (without it, an error)")
    p.set_defaults(func=cmd_convert)


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
