"""Side-by-side figure: a development photo, DiffC (default model, flow) and JPEG at about the same rate.

    python scripts/compare_figure.py --image PHOTO|--dev NAME --bpp 0.25 -o docs/results/dev256/compare.png

The DiffC file is encoded once at the target rate; JPEG (the report's configuration,
fastdiffc.codecs.classical) takes the quality whose size is closest to the DiffC file's. Each
panel is labelled with its bpp and PSNR.
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw


def _jpeg_at(image: Image.Image, nbytes: int) -> tuple[Image.Image, int]:
    """The report's JPEG at the quality whose file size is closest to `nbytes`: (decoded, size)."""
    from fastdiffc.codecs.classical import get_codec

    jpeg = get_codec("jpeg")
    data = min((jpeg.encode(image, q) for q in range(1, 96)), key=lambda d: abs(len(d) - nbytes))
    return jpeg.decode(data), len(data)


def main(argv=None) -> int:
    import fastdiffc
    from fastdiffc.eval.images import downscale, load_dev_image, load_image
    from fastdiffc.image_io import psnr

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image")
    src.add_argument("--dev", metavar="NAME", help="a development photo, e.g. chelsea")
    p.add_argument("--max-size", type=int, default=256)
    p.add_argument("--bpp", type=float, default=0.25)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)

    if args.image:
        image = load_image(args.image, max_size=args.max_size)
    else:  # downscaled exactly as `fastdiffc eval --dev-images --max-size` does
        image = downscale(load_dev_image(args.dev), args.max_size)
    w, h = image.size
    codec = fastdiffc.load_codec("diffc")
    data = codec.compress(image, bpp=args.bpp)
    diffc = codec.decompress(data)
    jpeg, jbytes = _jpeg_at(image, len(data))
    panels = [("original", image), (f"DiffC {8 * len(data) / (w * h):.3f} bpp {psnr(diffc, image):.2f} dB", diffc),
              (f"JPEG {8 * jbytes / (w * h):.3f} bpp {psnr(jpeg, image):.2f} dB", jpeg)]
    canvas = Image.new("RGB", (3 * w, h + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels):
        canvas.paste(img, (i * w, 16))
        draw.text((i * w + 4, 2), label, fill="black")
    canvas.save(args.output)
    print(" | ".join(label for label, _ in panels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
