"""Command line: `cvflow flow|video|extract|eval|convert|viz|models ...` (also `python -m cvflow`).

One module per command (`flow`, `video`, `evaluate`, `convert`, `viz`, `extract`,
`models`), each adding its subcommand with `register(sub)`; `common` holds what they
share (argument types, the model arguments, creating the algorithm).

Every cvflow error (and any other OSError: disk full, ...) ends the command with its
message on stderr and exit status 2; outputs are checked before any model runs.
"""
from __future__ import annotations

import argparse
import sys

from cvflow.cli import convert, evaluate, extract, flow, models, video, viz
from cvflow.errors import CvflowError

# Each command's module adds its subcommand (`register(sub)`), in `cvflow --help` order.
COMMANDS = (flow, video, evaluate, convert, viz, extract, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvflow", description="Deep optical flow with OpenCV's interface.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def _version() -> str:
    from cvflow._version import __version__

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
