"""`fastdiffc info IN.fdc [--json]`: what an .fdc file holds, without decoding it."""

import json


def add_parser(sub):
    p = sub.add_parser("info", help="describe an .fdc file (pipeline, models, precision, size, segments, parameters)")
    p.add_argument("input", help=".fdc file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _params(header) -> dict:
    """The pipeline's own description of its parameter block (raw bytes if this build lacks it)."""
    from ..pipelines import codec_class
    from ..pipelines.base import Codec

    try:
        cls = codec_class(header.pipeline)
    except ValueError:
        cls = Codec
    return cls.describe_params(header)


def describe(data: bytes) -> dict:
    from .. import container

    f = container.read(data, allow_truncated=True)
    h = f.header
    lengths = [len(s) for s in f.segments]
    denoiser = h.model("denoiser")
    return {
        "container_version": f.version,
        "pipeline": h.pipeline,
        "models": [{"role": m.role, "name": m.name, "hash": f"{m.hash:016x}", "version": m.version}
                   for m in h.models],
        "model": denoiser.name if denoiser else None,  # the denoiser's, as version-1 tools showed it
        "model_hash": f"{denoiser.hash:016x}" if denoiser else None,
        "precision": h.precision,
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
        "params_version": h.params_version,
        "params": _params(h),
    }


def run(args):
    with open(args.input, "rb") as f:
        data = f.read()
    info = describe(data)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lines = [
        f"file       {args.input} (.fdc version {info['container_version']})",
        f"pipeline   {info['pipeline']}",
    ]
    for m in info["models"]:
        version = f", {m['version']}" if m["version"] else ""
        lines.append(f"model      {m['role']}: {m['name']} (hash {m['hash']}{version})")
    lines += [
        f"precision  {info['precision']}",
        f"image      {info['width']}x{info['height']}, {info['channels']} channel(s)",
        f"size       {info['bytes']} bytes, {info['bpp']:.4f} bpp",
        f"segments   {info['segments']}" + ("" if info["complete"] else f" of {info['declared_segments']} (truncated)"),
    ]
    if info["overhead_bytes"] is not None:
        lines.append(f"overhead   {info['overhead_bytes']} bytes "
                     f"({100 * info['overhead_bytes'] / max(1, info['payload_bytes']):.2f}% of the payload)")
    lines.append(f"params     version {info['params_version']}")
    for k, v in info["params"].items():
        lines.append(f"  {k:<17} {v}")
    print("\n".join(lines))
    return 0
