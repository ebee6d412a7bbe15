"""`fastdiffc compress IN -o OUT.fdc [--pipeline P] [--model NAME] [--bpp X | rate knobs] [--seed S]`.

A folder IN compresses every image under it into the folder OUT (fastdiffc/batch.py: resumable,
`--jobs N` local processes or `--ray auto|local|ADDRESS`). The rate flags (--bpp, --steps,
--quality, ...) come from the pipelines' knob declarations.
"""

import os

from ..batch import add_batch_flags
from .knobs import add_knob_flags, knobs_for


def add_parser(sub):
    from ..pipelines import PIPELINES

    p = sub.add_parser("compress", help="compress an image into an .fdc file")
    p.add_argument("input", help="image file (PNG, JPEG, ...), or a folder of them (batch mode)")
    p.add_argument("-o", "--output", required=True, help="output .fdc file (a folder for a folder input)")
    p.add_argument("--pipeline", default="diffc", choices=list(PIPELINES), help="pipeline (default: diffc)")
    p.add_argument("--model", default=None, help="model name (see `fastdiffc models`); default: the shipped default")
    p.add_argument("--seed", type=int, default=0, help="shared seed stored in the file (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_knob_flags(p, "rate")
    add_batch_flags(p)
    p.set_defaults(func=run)


def run(args):
    if os.path.isdir(args.input):
        from .. import batch

        return batch.run(args, batch.COMPRESS)
    from ..image_io import load_image
    from ..pipelines import load_codec

    knobs = knobs_for(args, args.pipeline, "rate")  # a flag the pipeline lacks fails before any work
    image = load_image(args.input)  # fail on a non-image before loading any model
    codec = load_codec(args.pipeline, args.model, seed=args.seed, progress=not args.quiet)
    data = codec.compress(image, **knobs)
    tmp = args.output + ".part"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if not args.quiet:
        bpp = 8 * len(data) / (image.width * image.height)
        print(f"{args.output}: {len(data)} bytes, {bpp:.4f} bpp ({image.width}x{image.height})")
    return 0
