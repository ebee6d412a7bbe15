"""The `fastdiffc` command line (docs/design.md §7).

Each subcommand lives in fastdiffc/commands/<name>.py and exposes
`add_parser(subparsers)` (which sets `func`) — cli.py only wires them together, applies
the global flags (--threads, --debug, the budgets --max-pixels / --max-model-calls /
--max-memory-gb) and turns *every* error escaping a command into one line on stderr and a
non-zero exit (docs/design.md §7); --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import FastDiffCError

MAX_THREADS = 1024

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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of one line")
    parser.add_argument("--threads", dest="global_threads", default=None, metavar="N",
                        help="threads for torch and OpenMP (default: what they pick, usually all cores)")
    for flag, dest, text in BUDGET_FLAGS:
        parser.add_argument(flag, dest=dest, default=None, metavar="N", help=text)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"fastdiffc.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fastdiffc.commands.{name}":
                continue  # command not implemented in this build
            raise
        mod.add_parser(sub)
    for p in sub.choices.values():  # `fastdiffc compress ... --debug` works as well as `fastdiffc --debug compress`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for flag, _, _ in BUDGET_FLAGS:
            p.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


# Resource budgets (pipelines.base.Budget): global flags, also accepted after the command; they set
# the FASTDIFFC_MAX_* environment variables that every codec's default budget reads (worker
# processes inherit them) for the duration of the command.
BUDGET_FLAGS = (
    ("--max-pixels", "max_pixels", "largest image (H*W pixels) to compress or decode (default 67108864)"),
    ("--max-model-calls", "max_model_calls", "most model calls one compress/decompress may make (default 2000)"),
    ("--max-memory-gb", "max_memory_gb", "largest estimated peak memory of one compress/decompress, GiB (default 6)"),
)


def _budget_env(args) -> dict[str, str]:
    from .pipelines.base import BUDGET_ENV, Budget

    values = {name: getattr(args, name, None) for _, name, _ in BUDGET_FLAGS}
    given = {}
    for flag, name, _ in BUDGET_FLAGS:
        text = values[name]
        if text is None:
            continue
        try:
            given[name] = float(text) if name == "max_memory_gb" else int(text)
        except ValueError:
            raise ValueError(f"{flag} must be a number, got {text!r}") from None
    Budget.default(**given)  # validates
    return {BUDGET_ENV[name]: str(v) for name, v in given.items()}


def set_threads(text: str) -> int:
    """Apply --threads N to torch, fastdiffc's OpenMP code and child processes."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"--threads must be an integer in 1..{MAX_THREADS}, got {text!r}")
    os.environ["OMP_NUM_THREADS"] = str(n)  # inherited by worker processes
    import torch

    torch.set_num_threads(n)
    try:
        from . import _core
    except ImportError:  # no native module: nothing of ours runs OpenMP
        return n
    _core.set_openmp_threads(n)
    return n


def one_line(e: BaseException) -> str:
    """An exception as one line: its message for expected errors (bad input, missing files,
    corrupt streams); type and message for anything else, with the way to see more."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    if isinstance(e, (FastDiffCError, ValueError, OSError)) and text:
        return text
    if isinstance(e, MemoryError):
        return f"out of memory{': ' + text if text else ''} (try a smaller image or fewer --threads)"
    return f"{type(e).__name__}: {text or 'no message'} (an internal error; --debug shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.global_threads is not None:
            set_threads(args.global_threads)
        env = _budget_env(args)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return int(args.func(args) or 0)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    except KeyboardInterrupt:
        print("fastdiffc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastdiffc info x.fdc | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception as e:  # every error, expected or not: one line unless --debug
        if args.debug:
            raise
        print(f"fastdiffc {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
