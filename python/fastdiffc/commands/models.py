"""`fastdiffc models [--json]`: list the shipped models."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("models", help="list the shipped models (name, class, size, content hash)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..models.registry import content_hash, list_models

    rows = []
    for m in list_models():
        rows.append({"name": m.name, "class": m.cls, "bytes": m.size_bytes,
                     "content_hash": f"{content_hash(m.path):016x}", "path": str(m.path)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models shipped")
        return 0
    print(f"{'name':16s} {'class':10s} {'size':>10s}  content hash")
    for r in rows:
        print(f"{r['name']:16s} {r['class']:10s} {r['bytes'] / 1e6:9.2f}M  {r['content_hash']}")
    return 0
