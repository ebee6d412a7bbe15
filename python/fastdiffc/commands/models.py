"""`fastdiffc models [--json]`: list the shipped models (today's defaults, then the retired ones if installed)."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("models", help="list the shipped models (name, class, size, content hash)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run)
    return p


def _composite_fields(m) -> dict:
    """Parts, switch points and whether the parts still match their recorded hashes."""
    from ..models.registry import composite_status

    cfg = m.config
    return {"parts": cfg.get("parts"), "switch_logsnr": cfg.get("switch_logsnr"), "status": composite_status(m)}


def _level_rates(m) -> list | None:
    """A CDC model's measured rate per level (scripts/cdc_level_rates.py), if recorded."""
    rates = m.config.get("level_rates")
    return rates.get("levels") if isinstance(rates, dict) and isinstance(rates.get("levels"), list) else None


def _describe(r: dict) -> str:
    if r.get("level_rates"):
        levels = r["level_rates"]
        try:
            return "  [levels " + ", ".join(f"{lv['level']}: {lv['bpp']:.2f} bpp" for lv in levels) + " (held-out)]"
        except (KeyError, TypeError, ValueError):
            return "  [level rates unreadable]"
    if r["class"] != "composite":
        return ""
    parts, switches = r.get("parts"), r.get("switch_logsnr")
    route = "?"  # a malformed config is reported by the status
    if isinstance(parts, list) and parts and isinstance(switches, list) and len(switches) == len(parts) - 1:
        route = " | ".join([str(parts[0])] + [f"λ>={s}: {p}" for s, p in zip(switches, parts[1:])])
    return f"  [{route}]" + ("" if r["status"] == "ok" else f"  REFUSES TO LOAD: {r['status']}")


def run(args) -> int:
    from ..models.registry import RETIRED_HINT, WEIGHTS_DIR, content_hash, list_models, retired_weights_dir

    rows = []
    for m in list_models():
        row = {"name": m.name, "class": m.cls, "bytes": m.size_bytes,
               "content_hash": f"{content_hash(m.path):016x}", "path": str(m.path),
               "retired": m.path.parent.resolve() != WEIGHTS_DIR.resolve()}
        if m.cls == "composite":
            row.update(_composite_fields(m))
        rates = _level_rates(m)
        if rates:
            row["level_rates"] = rates
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models shipped")
        return 0
    print(f"{'name':16s} {'class':10s} {'size':>10s}  content hash")
    for r in rows:
        retired = "  (retired default)" if r["retired"] else ""
        print(f"{r['name']:16s} {r['class']:10s} {r['bytes'] / 1e6:9.2f}M  {r['content_hash']}{_describe(r)}{retired}")
    if retired_weights_dir() is None:
        print(f"(not installed: {RETIRED_HINT})")
    return 0
