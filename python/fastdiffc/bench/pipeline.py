"""DiffC encode / decode seconds for a 768x512 photo at about 0.25 bpp with the default model.

Also reports what the file spends on the container (header, segment table, CRCs) and the
reconstruction's PSNR. The photo is --image if given, else scikit-image's astronaut (an
evaluation photo, here only timed), else the bundled sample; it is resized to 768x512.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.png"


def add_arguments(p):
    p.add_argument("--image", default=None, help="photo to use (resized to --size)")
    p.add_argument("--size", default="768x512", help="WxH (default 768x512)")
    p.add_argument("--bpp", type=float, default=0.25, help="target bits per pixel (default 0.25)")
    p.add_argument("--model", default=None, help="model name (default: the default model)")
    p.add_argument("--method", default="flow", choices=["flow", "ancestral", "denoise"])
    p.add_argument("--recon-steps", type=int, default=20)


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


def run(args) -> dict:
    import torch

    from .. import container
    from ..image_io import psnr
    from ..pipelines.diffc import DiffCCodec

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 768x512, got {args.size!r}") from None
    image, source = _photo(args.image, (w, h))
    codec = DiffCCodec(args.model, recon_steps=args.recon_steps)
    model = codec.model_for_encoding()
    t0 = time.perf_counter()
    data, enc = codec.encode_image(image, bpp=args.bpp)
    t1 = time.perf_counter()
    out = codec.decompress(data, method=args.method)
    t2 = time.perf_counter()
    f = container.read(data)
    payload = sum(len(s) for s in f.segments)
    return {
        "model": getattr(model, "name", "?"),
        "image": source,
        "width": w,
        "height": h,
        "target_bpp": args.bpp,
        "bpp": 8 * len(data) / (w * h),
        "bytes": len(data),
        "steps": enc.steps,
        "rcc_chunks": int(sum(enc.chunks)),
        "ideal_bpp": float(sum(enc.kl_bits)) / (w * h),
        "container_overhead_bytes": len(data) - payload,
        "container_overhead_pct": 100.0 * (len(data) - payload) / max(1, payload),
        "encode_seconds": t1 - t0,
        "decode_seconds": t2 - t1,
        "method": args.method,
        "recon_steps": args.recon_steps,
        "psnr": psnr(out, np.asarray(image)),
        "torch_threads": torch.get_num_threads(),
    }


def format_report(r: dict) -> str:
    return "\n".join([
        f"DiffC pipeline, model {r['model']}, {r['width']}x{r['height']} ({r['image']}), {r['torch_threads']} threads",
        f"  rate      {r['bpp']:.4f} bpp ({r['bytes']} bytes; target {r['target_bpp']}), {r['steps']} steps, "
        f"{r['rcc_chunks']} RCC chunks, ideal (sum KL) {r['ideal_bpp']:.4f} bpp",
        f"  container {r['container_overhead_bytes']} bytes = {r['container_overhead_pct']:.2f}% of the payload",
        f"  encode    {r['encode_seconds']:.2f} s",
        f"  decode    {r['decode_seconds']:.2f} s ({r['method']}, {r['recon_steps']} sampler steps)",
        f"  PSNR      {r['psnr']:.2f} dB",
    ])
