"""`cvflow eval`: accuracy on a dataset's training split with ground truth."""
from __future__ import annotations

import sys
from pathlib import Path

from cvflow.cli import common
from cvflow.errors import InputError, os_error
from cvflow.outputs import check_output_file


def register(sub) -> None:
    """Add `cvflow eval` to the subcommands `sub`."""
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
    algo = common.create(args)
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
