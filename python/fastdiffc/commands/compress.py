"""`fastdiffc compress IN -o OUT.fdc [--pipeline P] [--model NAME] [--bpp X | --steps K] [--seed S]`."""

import os


def add_parser(sub):
    p = sub.add_parser("compress", help="compress an image into an .fdc file")
    p.add_argument("input", help="image file (PNG, JPEG, ...)")
    p.add_argument("-o", "--output", required=True, help="output .fdc file")
    p.add_argument("--pipeline", default="diffc", choices=["diffc", "dirac", "cdc"])
    p.add_argument("--model", default=None, help="model name (see `fastdiffc models`); default: the shipped default")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=float, default=None, help="target bits per pixel (default 0.25)")
    rate.add_argument("--steps", type=int, default=None, help="number of DiffC steps to transmit")
    p.add_argument("--seed", type=int, default=0, help="shared seed stored in the file (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args):
    from ..image_io import load_image
    from ..pipelines import load_codec

    image = load_image(args.input)  # fail on a non-image before loading any model
    codec = load_codec(args.pipeline, args.model, seed=args.seed, progress=not args.quiet)
    data = codec.compress(image, bpp=args.bpp, steps=args.steps)
    tmp = args.output + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.output)
    if not args.quiet:
        bpp = 8 * len(data) / (image.width * image.height)
        print(f"{args.output}: {len(data)} bytes, {bpp:.4f} bpp ({image.width}x{image.height})")
    return 0
