"""`fastdiffc info IN.fdc [--json]`: what an .fdc file holds, without decoding it."""

import json


def add_parser(sub):
    p = sub.add_parser("info", help="describe an .fdc file (pipeline, model, size, steps, settings)")
    p.add_argument("input", help=".fdc file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def describe(data: bytes) -> dict:
    from .. import container

    f = container.read(data, allow_truncated=True)
    h = f.header
    lengths = [len(s) for s in f.segments]
    info = {
        "pipeline": h.pipeline,
        "model": h.model_name,
        "model_hash": f"{h.model_hash:016x}",
        "width": h.width,
        "height": h.height,
        "channels": h.channels,
        "bytes": len(data),
        "bpp": 8 * len(data) / (h.width * h.height),
        "segments": len(lengths),
        "declared_segments": f.declared_segments,
        "complete": f.complete,
        "payload_bytes": sum(lengths),
        "overhead_bytes": len(data) - sum(lengths) if f.complete else None,
        "segment_bytes": lengths,
    }
    if h.pipeline == "diffc":
        import dataclasses

        from ..pipelines.diffc import DiffCSettings

        info["settings"] = dataclasses.asdict(DiffCSettings.from_bytes(h.params))
    return info


def run(args):
    with open(args.input, "rb") as f:
        data = f.read()
    info = describe(data)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lines = [
        f"file       {args.input}",
        f"pipeline   {info['pipeline']}",
        f"model      {info['model']} (hash {info['model_hash']})",
        f"image      {info['width']}x{info['height']}, {info['channels']} channel(s)",
        f"size       {info['bytes']} bytes, {info['bpp']:.4f} bpp",
        f"steps      {info['segments']}" + ("" if info["complete"] else f" of {info['declared_segments']} (truncated)"),
    ]
    if info["overhead_bytes"] is not None:
        lines.append(f"overhead   {info['overhead_bytes']} bytes "
                     f"({100 * info['overhead_bytes'] / max(1, info['payload_bytes']):.2f}% of the payload)")
    for k, v in info.get("settings", {}).items():
        lines.append(f"  {k:<14} {v}")
    print("\n".join(lines))
    return 0
