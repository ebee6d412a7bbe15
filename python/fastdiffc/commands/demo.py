"""`fastdiffc demo`: compress and decompress the bundled sample photo; print size, bpp and PSNR."""

import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.png"


def add_parser(sub):
    p = sub.add_parser("demo", help="compress + decompress the bundled sample photo (size, bpp, PSNR)")
    p.add_argument("--bpp", type=float, default=0.25, help="target bits per pixel (default 0.25)")
    p.add_argument("--model", default=None, help="model name (default: the shipped default)")
    p.add_argument("--method", default="flow", choices=["flow", "ancestral", "denoise"])
    p.add_argument("--image", default=str(SAMPLE), help="another image instead of the bundled sample")
    p.add_argument("-o", "--output", default=None, help="also write the .fdc file and a PNG next to it")
    p.set_defaults(func=run)


def run(args):
    import numpy as np

    from ..image_io import load_image, psnr
    from ..pipelines import load_codec

    image = load_image(args.image).convert("RGB")
    codec = load_codec("diffc", args.model, progress=True)
    t0 = time.perf_counter()
    data = codec.compress(image, bpp=args.bpp)
    t1 = time.perf_counter()
    out = codec.decompress(data, method=args.method)
    t2 = time.perf_counter()
    if args.output:
        Path(args.output).write_bytes(data)
        out.save(str(Path(args.output).with_suffix(".png")))
    model = codec.model_for_encoding()
    print(f"image   {Path(args.image).name} {image.width}x{image.height}, model {model.name}")
    print(f"size    {len(data)} bytes = {8 * len(data) / (image.width * image.height):.4f} bpp "
          f"(target {args.bpp})")
    print(f"PSNR    {psnr(out, np.asarray(image)):.2f} dB ({args.method})")
    print(f"time    encode {t1 - t0:.1f} s, decode {t2 - t1:.1f} s")
    return 0
