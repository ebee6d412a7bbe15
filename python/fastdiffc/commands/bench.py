"""`fastdiffc bench rcc|unet|pipeline [--json]`: speed figures on this machine.

Each target is a module fastdiffc.bench.<target> with `add_arguments(parser)` (optional),
`run(args) -> dict` (JSON-ready) and `format_report(result) -> str`.
"""

import importlib
import json

TARGETS = ["rcc", "unet", "pipeline"]


def add_parser(sub):
    p = sub.add_parser("bench", help="measure speed (RCC candidates/s, UNet seconds, pipeline encode/decode)")
    bsub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in TARGETS:
        try:
            mod = importlib.import_module(f"fastdiffc.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fastdiffc.bench.{name}":
                continue
            raise
        bp = bsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
        bp.add_argument("--json", action="store_true", help="print one JSON object")
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(bp)
        bp.set_defaults(func=lambda args, mod=mod: _run(mod, args))
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _run(mod, args):
    result = mod.run(args)
    print(json.dumps(result, indent=2) if args.json else mod.format_report(result))
    return 0
