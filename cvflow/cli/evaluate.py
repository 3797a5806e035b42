"""`cvflow eval`: accuracy on a dataset's training split with ground truth."""
from __future__ import annotations

import sys
from pathlib import Path

from cvflow.cli import common
from cvflow.errors import os_error
from cvflow.outputs import check_output_file


def register(sub) -> None:
    """Add `cvflow eval` to the subcommands `sub`."""
    p = sub.add_parser(
        "eval", help="accuracy on Sintel / KITTI-2015 / FlyingChairs / Middlebury training data",
        description="Evaluate a model on a dataset's training split with ground truth: mean EPE (px), "
                    "1/3/5-px outlier rates, Fl-all (KITTI) and pairs/s.")
    p.add_argument("root", metavar="ROOT", help="dataset directory")
    p.add_argument("--dataset", required=True, choices=["sintel", "kitti", "chairs", "middlebury"],
                   help="sintel: ROOT/training/{clean,final}/<scene>/frame_XXXX.png + training/flow/; "
                        "kitti: ROOT/training/image_2/XXXXXX_1{0,1}.png + training/flow_occ/; "
                        "chairs: ROOT[/data]/NNNNN_img{1,2}.ppm + _flow.flo (or -img0/-img1.ppm + -gt.flo); "
                        "middlebury: ROOT/other-data/<seq>/frameNN.png + other-gt-flow/<seq>/flowNN.flo")
    common.add_model_args(p)
    p.add_argument("--pass", dest="pass_name", default="clean", choices=["clean", "final"],
                   help="Sintel rendering pass (default clean)")
    p.add_argument("--limit", type=common.positive_int, default=None, metavar="N",
                   help="evaluate the first N pairs")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON ('-': stdout only, "
                                                      "the table goes to stderr)")
    p.add_argument("--per-pair", action="store_true", help="print one table row per pair")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    import json

    from cvflow.evaluate import evaluate, find_pairs, format_table

    if args.json and args.json != "-":
        check_output_file(args.json, "--json", "json")  # before the evaluation, not after
    pairs = find_pairs(args.root, args.dataset, pass_name=args.pass_name, limit=args.limit)
    algo = common.create(args)
    res = evaluate(algo, pairs, progress=not args.no_progress)
    info = {"dataset": args.dataset, "root": str(args.root), "model": algo.name, "options": algo.options,
            "device": algo.device}
    if args.dataset == "sintel":
        info["pass"] = args.pass_name
    res = {**info, **res}
    title = f"{args.dataset}" + (f" ({args.pass_name})" if args.dataset == "sintel" else "") \
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
