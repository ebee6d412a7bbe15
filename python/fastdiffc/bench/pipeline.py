"""Pipeline encode / decode seconds for a 768x512 photo at about 0.25 bpp with the default model.

`--pipeline diffc` (default): encode (with the output filter unless --no-filter), flow decode,
container overhead, PSNR.
`--pipeline dirac`: the base codec's encode (bpp search), decode with 0 and 20 diffusion steps.
`--pipeline cdc`: the transform coder's encode (level search), decode with 0 and 8 diffusion steps.
Every run also times the bare RCC generation loop (Philox + normal table, 2^20 candidates x
1024 dims) as a calibration figure, so timings from machines of different speed (or one
machine at different loads) can be compared. The photo is --image if given, else
scikit-image's astronaut (an evaluation photo, here only timed), else the bundled sample;
it is resized to --size.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import container
from ..eval.contenders import resolve_model_ref

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.png"


def add_arguments(p):
    p.add_argument("--pipeline", default="diffc", choices=["diffc", "dirac", "cdc"])
    p.add_argument("--base", default="avif", help="DIRAC's base codec (default avif)")
    p.add_argument("--decode-steps", default=None,
                   help="DIRAC / CDC decode_steps to time (default 0,20 for DIRAC, 0,8 for CDC: their budgets)")
    p.add_argument("--image", default=None, help="photo to use (resized to --size)")
    p.add_argument("--size", default="768x512", help="WxH (default 768x512)")
    p.add_argument("--bpp", type=float, default=0.25, help="target bits per pixel (default 0.25)")
    p.add_argument("--model", default=None,
                   help="model name or .safetensors file (default: the pipeline's default model)")
    p.add_argument("--method", default="flow", choices=["flow", "ancestral", "denoise"])
    p.add_argument("--recon-steps", type=int, default=20)
    p.add_argument("--no-filter", action="store_true",
                   help="diffc: write no output filter (its cost: one flow reconstruction more in the encoder)")
    p.add_argument("--precision", default=None, choices=["auto", "float32", "bfloat16"],
                   help="model-call precision (default: the pipeline's, \"auto\": bfloat16 where the CPU has it)")


def _photo(path, size):
    from PIL import Image

    if path:
        im, src = Image.open(path), str(path)
    else:
        try:
            from skimage import data

            im, src = Image.fromarray(data.astronaut()), "skimage astronaut"
        except ImportError:
            im, src = Image.open(SAMPLE), "bundled sample"
    return im.convert("RGB").resize(size, Image.LANCZOS), src


def calibration() -> dict:
    """Seconds of the bare RCC generation loop for 2^20 x 1024 normals (OpenMP, this machine now)."""
    from .. import _core

    n, dim = 1 << 20, 1024
    _core.rcc_generate_checksum(1 << 12, dim, 1)  # warm-up: table, threads
    best = min(_timed(lambda: _core.rcc_generate_checksum(n, dim, 1)) for _ in range(3))
    return {"calibration_seconds": best, "calibration_gnormals_per_s": n * dim / best / 1e9}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# The step counts each pipeline's decode budget is stated at (its issue's acceptance).
DEFAULT_DECODE_STEPS = {"dirac": "0,20", "cdc": "0,8"}


def run(args) -> dict:
    if args.pipeline in DEFAULT_DECODE_STEPS:
        return {**run_diffusion_decoder(args), **calibration()}
    return {**run_diffc(args), **calibration()}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 768x512, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ValueError(f"--size must be between 16 and 8192 pixels per side, got {text!r}")
    return w, h


def run_diffusion_decoder(args) -> dict:
    """DIRAC or CDC: one encode at the bpp ceiling, then a decode per step count."""
    import torch

    from ..image_io import psnr
    from ..pipelines import load_codec

    text = args.decode_steps or DEFAULT_DECODE_STEPS[args.pipeline]
    try:
        steps = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise ValueError(f"--decode-steps must be comma-separated integers, got {text!r}") from None
    w, h = _size(args.size)
    image, source = _photo(args.image, (w, h))
    options = _precision(args)
    if options and args.pipeline != "dirac":
        raise ValueError(f"--precision applies to diffc and dirac, not {args.pipeline}")
    if getattr(args, "no_filter", False):
        raise ValueError(f"--no-filter applies to diffc, not {args.pipeline}")
    codec = load_codec(args.pipeline, model=resolve_model_ref(args.model), **options)
    model = codec.model_for_encoding()
    rate = {"base": args.base} if args.pipeline == "dirac" else {}
    t0 = time.perf_counter()
    data = codec.compress(image, bpp=args.bpp, **rate)
    t1 = time.perf_counter()
    out = {"pipeline": args.pipeline, "model": model.name, "image": source, "width": w, "height": h, **rate,
           "target_bpp": args.bpp, "bpp": 8 * len(data) / (w * h), "bytes": len(data), "encode_seconds": t1 - t0,
           "precision": container.read(data).header.precision, "torch_threads": torch.get_num_threads(),
           "decode": {}}
    for k in steps:
        t0 = time.perf_counter()
        rec = codec.decompress(data, decode_steps=k)
        out["decode"][str(k)] = {"seconds": time.perf_counter() - t0, "psnr": psnr(rec, np.asarray(image))}
    return out


def run_diffc(args) -> dict:
    import torch

    from ..image_io import psnr
    from ..pipelines.diffc import DiffCCodec

    w, h = _size(args.size)
    image, source = _photo(args.image, (w, h))
    codec = DiffCCodec(resolve_model_ref(args.model), recon_steps=args.recon_steps, **_precision(args))
    model = codec.model_for_encoding()
    t0 = time.perf_counter()
    no_filter = bool(getattr(args, "no_filter", False))
    data, enc = codec.encode_image(image, bpp=args.bpp, no_filter=no_filter)
    t1 = time.perf_counter()
    out = codec.decompress(data, method=args.method)
    t2 = time.perf_counter()
    f = container.read(data)
    payload = sum(len(s) for s in f.segments)
    return {
        "pipeline": "diffc",
        "model": getattr(model, "name", "?"),
        "image": source,
        "width": w,
        "height": h,
        "target_bpp": args.bpp,
        "bpp": 8 * len(data) / (w * h),
        "bytes": len(data),
        "steps": enc.steps,
        "output_filter": not no_filter,
        "rcc_chunks": int(sum(enc.chunks)),
        "ideal_bpp": float(sum(enc.kl_bits)) / (w * h),
        "container_overhead_bytes": len(data) - payload,
        "container_overhead_pct": 100.0 * (len(data) - payload) / max(1, payload),
        "encode_seconds": t1 - t0,
        "decode_seconds": t2 - t1,
        "method": args.method,
        "recon_steps": args.recon_steps,
        "psnr": psnr(out, np.asarray(image)),
        "precision": f.header.precision,
        "torch_threads": torch.get_num_threads(),
    }


def _precision(args) -> dict:
    """The codec's precision argument when --precision was given (else the pipeline's default)."""
    value = getattr(args, "precision", None)
    return {} if value is None else {"precision": value}


def format_report(r: dict) -> str:
    calib = (f"  calibration: bare RCC generation loop {r['calibration_seconds']:.3f} s "
             f"({r['calibration_gnormals_per_s']:.2f} G normals/s)")
    if r["pipeline"] in DEFAULT_DECODE_STEPS:
        what = f"base {r['base']}, " if "base" in r else ""
        search = "base codec, quality search" if "base" in r else "level search"
        lines = [f"{r['pipeline'].upper()} pipeline, model {r['model']}, {what}{r['width']}x{r['height']} "
                 f"({r['image']}), {r['torch_threads']} threads, {r['precision']}",
                 f"  rate      {r['bpp']:.4f} bpp ({r['bytes']} bytes; ceiling {r['target_bpp']})",
                 f"  encode    {r['encode_seconds']:.2f} s ({search})"]
        for k, d in r["decode"].items():
            lines.append(f"  decode    {d['seconds']:.2f} s with {k} steps, PSNR {d['psnr']:.2f} dB")
        return "\n".join(lines + [calib])
    return "\n".join([
        f"DiffC pipeline, model {r['model']}, {r['width']}x{r['height']} ({r['image']}), {r['torch_threads']} threads, "
        f"{r['precision']}",
        f"  rate      {r['bpp']:.4f} bpp ({r['bytes']} bytes; target {r['target_bpp']}), {r['steps']} steps, "
        f"{r['rcc_chunks']} RCC chunks, ideal (sum KL) {r['ideal_bpp']:.4f} bpp",
        f"  container {r['container_overhead_bytes']} bytes = {r['container_overhead_pct']:.2f}% of the payload",
        f"  encode    {r['encode_seconds']:.2f} s ({'with' if r['output_filter'] else 'without'} the output filter)",
        f"  decode    {r['decode_seconds']:.2f} s ({r['method']}, {r['recon_steps']} sampler steps)",
        f"  PSNR      {r['psnr']:.2f} dB",
        calib,
    ])
