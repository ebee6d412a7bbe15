"""`fastdiffc decompress IN -o OUT.png [--pipeline P] [decode knobs]`.

An .fdc file names its pipeline; any other input (a plain JPEG/WebP/AVIF/HEIC/JPEG XL file
for DIRAC) needs --pipeline. The decode flags (--method, --max-steps, --decode-steps, ...)
come from the pipelines' knob declarations. A folder IN decodes every .fdc file under it (with
--pipeline, plain image files too) into PNGs in the folder OUT (fastdiffc/batch.py).
"""

import os
import sys

from ..batch import add_batch_flags
from .knobs import add_knob_flags, knobs_for


def add_parser(sub):
    from ..pipelines import PIPELINES

    p = sub.add_parser("decompress", help="decode an .fdc file (or, with --pipeline dirac, enhance a JPEG etc.)")
    p.add_argument("input", help=".fdc file, or a plain image file with --pipeline, or a folder (batch mode)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (format from the extension, e.g. .png); a folder for a folder input")
    p.add_argument("--pipeline", default=None, choices=list(PIPELINES),
                   help="pipeline for an input that is not an .fdc file (an .fdc file names its own)")
    p.add_argument("--model", default=None, help="model to use (default: the one named in the file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_knob_flags(p, "decode")
    add_batch_flags(p)
    p.set_defaults(func=run)


def _pipeline(data: bytes, requested: str | None) -> str:
    from ..container import is_fdc, read_header
    from ..errors import BadMagicError

    if not is_fdc(data):
        if requested is None:
            raise BadMagicError("not an .fdc file (bad magic); to enhance a JPEG/WebP/AVIF/HEIC/JPEG XL file "
                                "use --pipeline dirac")
        return requested
    header, _ = read_header(data)
    if requested is not None and requested != header.pipeline:
        raise ValueError(f"the file was written by the {header.pipeline} pipeline; --pipeline {requested} "
                         "contradicts it (leave --pipeline out for .fdc files)")
    return header.pipeline


def decompress_with_hints(codec, data: bytes, knobs: dict):
    """codec.decompress, with a truncated file's error naming --allow-truncated where it helps."""
    from ..errors import TruncatedError

    try:
        return codec.decompress(data, **knobs)
    except TruncatedError as e:
        if knobs.get("allow_truncated") or "allow_truncated" not in {k.name for k in codec.decode_knobs}:
            raise
        raise TruncatedError(f"{e}; --allow-truncated decodes the complete steps") from None


def run(args):
    if os.path.isdir(args.input):
        from .. import batch

        return batch.run(args, batch.DECOMPRESS)
    from PIL import Image

    from ..pipelines import load_codec

    ext = os.path.splitext(args.output)[1].lower()
    if ext not in Image.registered_extensions():  # before decoding, not after
        raise ValueError(f"{args.output}: give the output an image extension such as .png")
    with open(args.input, "rb") as f:
        data = f.read()
    pipeline = _pipeline(data, args.pipeline)
    knobs = knobs_for(args, pipeline, "decode")
    codec = load_codec(pipeline, args.model, progress=not args.quiet)
    image = decompress_with_hints(codec, data, knobs)
    image.save(args.output)
    if not args.quiet:
        print(f"{args.output}: {image.width}x{image.height} {image.mode} ({pipeline})", file=sys.stderr)
    return 0
