"""The `fastdiffc` command line (DESIGN §7).

Each subcommand lives in fastdiffc/commands/<name>.py and exposes
`add_parser(subparsers)` (which sets `func`) — cli.py only wires them together and
turns every expected error into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import FastDiffCError

# Subcommand modules, in the order `fastdiffc --help` lists them.
COMMAND_MODULES = [
    "compress",
    "decompress",
    "info",
    "eval",
    "bench",
    "experiments",
    "train",
    "models",
    "doctor",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastdiffc", description="Lossy image compression with diffusion models."
    )
    parser.add_argument("--version", action="version", version=f"fastdiffc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"fastdiffc.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fastdiffc.commands.{name}":
                continue  # command not implemented in this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("fastdiffc: interrupted", file=sys.stderr)
        return 130
    except (FastDiffCError, ValueError, OSError) as e:
        # Expected failures (bad input, missing files, corrupt streams): one line, no traceback.
        print(f"fastdiffc {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
