"""`fastdiffc doctor`: what a user pastes into a bug report."""

import json


def add_parser(sub):
    p = sub.add_parser("doctor", help="report versions, native modules, threads and devices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args):
    from ..doctor import collect, format_report

    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0
