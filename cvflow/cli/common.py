"""What the commands share: argument types, the model arguments, creating the algorithm."""
from __future__ import annotations

import argparse

from cvflow.backends import PRECISIONS
from cvflow.errors import InputError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def add_model_args(p) -> None:
    """-m/--model, --weights, --iters, --device, --precision, --threads, --opt: the model arguments of every command that
    runs one."""
    p.add_argument("-m", "--model", required=True, help="model name (see `cvflow models`)")
    p.add_argument("--weights", help="checkpoint (.pth/.pth.tar/.npz) or tag (see `cvflow models`); "
                                      "default: the model's default weights")
    p.add_argument("--iters", type=positive_int, default=None,
                   help="update iterations (RAFT family; default 12)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="numeric mode (CUDA: fp32 = parity with the authors' code, tf32 = TF32 tensor-core "
                        "products, fp16/bf16 = half storage; the CPU computes in fp32 only); default: the "
                        "device's")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads of the model (default: the cores this process may use); on a machine "
                        "busy with other work, give this process's share, e.g. 1")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option (repeatable)")


def add_frame_args(p, sized: str) -> None:
    """--every and --max-side, the frame selection of the commands that read clips; `sized`
    names what comes out at the downsized resolution (e.g. "the flow")."""
    p.add_argument("--every", type=positive_int, default=1, metavar="N",
                   help="use every N-th frame (pairs 0->N, N->2N, ...; default 1)")
    p.add_argument("--max-side", type=positive_int, default=None, metavar="S",
                   help=f"downsize frames so the longer side is <= S px; {sized} then at that size")


def create(args):
    """The algorithm named by the common model arguments (-m, --weights, --device, --precision, --threads,
    --iters, --opt)."""
    import cvflow

    return cvflow.create(args.model, weights=args.weights, device=args.device, threads=args.threads,
                         precision=args.precision, **model_options(args))


def model_options(args) -> dict:
    """Model options from the common arguments: `--opt key=value` pairs, then `--iters`."""
    opts = parse_options(args.opt)
    if args.iters is not None:
        opts["iters"] = args.iters
    return opts


def parse_options(pairs):
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
