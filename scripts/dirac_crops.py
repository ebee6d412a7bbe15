"""Side-by-side crops: original, base codec, DIRAC at 0 and at 20 decode steps — the same bytes.

    python scripts/dirac_crops.py --dev chelsea --base avif --quality 30 -o docs/results/dirac_crops.png
    python scripts/dirac_crops.py --image PHOTO --bpp 0.15 --model runs/dirac/ema.safetensors -o crops.png

One DIRAC file is encoded (its payload is the base codec's bitstream, unchanged); the base panel
decodes that bitstream with the base codec alone, the DIRAC panels decode the same file with 0
and 20 steps from one sampling run (`decompress_steps`). Each panel is a crop (default: the
centre, 192 px, shown ×2 with nearest-neighbour pixels), labelled with the whole image's bpp,
PSNR and realism (Laplacian-patch SWD, lower = more realistic).
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw


def _crop_box(size: tuple[int, int], crop: str | None, side: int) -> tuple[int, int, int, int]:
    w, h = size
    if crop:
        x, y, cw, ch = (int(v) for v in crop.split(","))
    else:
        cw, ch = min(side, w), min(side, h)
        x, y = (w - cw) // 2, (h - ch) // 2
    if not (0 <= x < x + cw <= w and 0 <= y < y + ch <= h):
        raise SystemExit(f"crop {x},{y},{cw},{ch} does not fit in the {w}x{h} image")
    return x, y, x + cw, y + ch


def main(argv=None) -> int:
    from fastdiffc.codecs.classical import get_codec
    from fastdiffc.container import read
    from fastdiffc.eval.contenders import resolve_model_ref
    from fastdiffc.eval.images import downscale, load_dev_image, load_image
    from fastdiffc.eval.metrics import RealismReference, psnr
    from fastdiffc.pipelines.dirac import MAX_DECODE_STEPS, DiracCodec

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="a photo")
    src.add_argument("--dev", metavar="NAME", help="a development photo, e.g. chelsea")
    p.add_argument("--max-size", type=int, help="downscale so the longer side is at most PX (default: native size)")
    p.add_argument("--model", default=None, help="DIRAC model: registry name or .safetensors file (default: shipped)")
    p.add_argument("--base", default="avif", help="base codec (default avif)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, help="base codec quality")
    rate.add_argument("--bpp", type=float, help="size ceiling (default 0.15 unless --quality)")
    p.add_argument("--steps", type=int, default=MAX_DECODE_STEPS, help="the realistic panel's decode steps")
    p.add_argument("--crop", metavar="X,Y,W,H", help="crop box (default: the centre)")
    p.add_argument("--side", type=int, default=192, help="side of the default centre crop (default 192)")
    p.add_argument("--zoom", type=int, default=2, help="crop magnification (default 2)")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    args = p.parse_args(argv)

    if args.image:
        image = load_image(args.image, max_size=args.max_size)
    else:  # as `fastdiffc eval --dev-images [--max-size]` sees it
        image = load_dev_image(args.dev)
        if args.max_size:
            image = downscale(image, args.max_size)
    w, h = image.size
    codec = DiracCodec(resolve_model_ref(args.model))
    if args.quality is not None:
        data = codec.compress(image, base=args.base, quality=args.quality)
    else:
        data = codec.compress(image, base=args.base, bpp=0.15 if args.bpp is None else args.bpp)
    base = get_codec(args.base).decode(read(data).segments[0])
    outs = codec.decompress_steps(data, [0, args.steps])
    bpp = 8 * len(data) / (w * h)
    ref = RealismReference(image)

    def label(name, img):
        return f"{name}: {psnr(image, img):.2f} dB, realism {ref.distance(img):.3f}"

    panels = [("original", image), (label(args.base, base), base), (label("DIRAC 0 steps", outs[0]), outs[0]),
              (label(f"DIRAC {args.steps} steps", outs[args.steps]), outs[args.steps])]
    box = _crop_box(image.size, args.crop, args.side)
    cw, ch = (box[2] - box[0]) * args.zoom, (box[3] - box[1]) * args.zoom
    top = 30
    canvas = Image.new("RGB", (len(panels) * (cw + 4) - 4, ch + top), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), f"{args.dev or args.image} {w}x{h}, one file of {len(data)} bytes ({bpp:.3f} bpp), "
                      f"crop {box}", fill="black")
    for i, (text, img) in enumerate(panels):
        x = i * (cw + 4)
        canvas.paste(img.convert("RGB").crop(box).resize((cw, ch), Image.NEAREST), (x, top))
        draw.text((x + 2, 16), text, fill="black")
    canvas.save(args.output, "PNG")
    print(f"{bpp:.4f} bpp | " + " | ".join(text for text, _ in panels[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
