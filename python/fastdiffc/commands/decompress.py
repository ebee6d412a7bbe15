"""`fastdiffc decompress IN.fdc -o OUT.png [--method flow|ancestral|denoise] [--max-steps K]`."""

import os
import sys


def add_parser(sub):
    p = sub.add_parser("decompress", help="decode an .fdc file to an image")
    p.add_argument("input", help=".fdc file")
    p.add_argument("-o", "--output", required=True, help="output image (format from the extension, e.g. .png)")
    p.add_argument("--method", default="flow", choices=["flow", "ancestral", "denoise"],
                   help="reconstruction from the last transmitted step (default: flow)")
    p.add_argument("--max-steps", type=int, default=None, help="decode only the first K steps (progressive)")
    p.add_argument("--model", default=None, help="model to use (default: the one named in the file)")
    p.add_argument("--recon-steps", type=int, default=20, help="sampler steps for flow/ancestral (default 20)")
    p.add_argument("--flow-offset", type=float, default=None, metavar="DELTA",
                   help="start the flow ODE at log-SNR λ_K − DELTA (DiffC; default 0.25, 0 = the paper's decoder)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="decode the complete steps of a truncated file instead of refusing it")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args):
    from ..container import read_header
    from ..errors import TruncatedError
    from ..pipelines import load_codec

    with open(args.input, "rb") as f:
        data = f.read()
    header, _ = read_header(data)
    options = {} if args.flow_offset is None else {"flow_logsnr_offset": args.flow_offset}
    codec = load_codec(header.pipeline, args.model, recon_steps=args.recon_steps, progress=not args.quiet, **options)
    try:
        image = codec.decompress(data, method=args.method, max_steps=args.max_steps,
                                 allow_truncated=args.allow_truncated)
    except TruncatedError as e:
        if args.allow_truncated:
            raise
        raise TruncatedError(f"{e}; --allow-truncated decodes the complete steps") from None
    ext = os.path.splitext(args.output)[1].lower()
    if not ext:
        raise ValueError(f"{args.output}: give the output an image extension such as .png")
    image.save(args.output)
    if not args.quiet:
        print(f"{args.output}: {image.width}x{image.height} {image.mode} ({args.method})", file=sys.stderr)
    return 0
