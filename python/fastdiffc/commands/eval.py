"""`fastdiffc eval IMAGES_DIR -o REPORT_DIR`: RD sweep against classical codecs (docs/design.md §7, §9)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CODECS = "jpeg,webp,avif,heic,jxl,jp2"
DEFAULT_PIPELINES = "diffc"


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _numbers(kind):
    def parse(text: str):
        try:
            values = [kind(t) for t in _list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse


def add_parser(sub):
    p = sub.add_parser(
        "eval",
        help="rate-distortion sweep of pipelines and classical codecs over an image folder",
        description="Measure RD points (points.csv), BD-rates and interpolated qualities (summary.md) and "
        "RD plots (rd_*.png) in REPORT_DIR. Resumable: finished points are skipped.",
    )
    p.add_argument("images", nargs="?", metavar="IMAGES_DIR", help="folder of images (PNG, JPEG, ...)")
    p.add_argument("-o", "--output", metavar="REPORT_DIR", help="report folder (created; reused to resume)")
    p.add_argument("--dev-images", action="store_true",
                   help="evaluate the development photos (exported to REPORT_DIR/images) instead of IMAGES_DIR")
    p.add_argument("--export-dev-images", metavar="DIR", help="only write the development photos as PNGs to DIR")
    p.add_argument("--pipelines", default=DEFAULT_PIPELINES,
                   help="fastdiffc pipelines, comma-separated NAME[@MODEL][:KNOB=VALUE[+VALUE...]]... specs, or "
                   "'none' (default %(default)s, i.e. DiffC with flow decoding). Knobs are the pipeline's own "
                   "(their compress/decompress flags: decode_steps for --decode-steps; MODEL may be a .safetensors "
                   "file); a decode knob with several values draws one curve per value, e.g. "
                   "dirac:base=avif:decode_steps=0+8+20 (curves dirac-avif-s0, -s8, -s20 from the same files); "
                   "a size knob's values are the rate axis (quality=20+50+80); DIRAC otherwise sweeps its base "
                   "codec's --qualities. Legacy NAME[@MODEL][:METHOD] (diffc:denoise) still works")
    p.add_argument("--codecs", default=DEFAULT_CODECS, help=f"classical codecs or 'none' (default {DEFAULT_CODECS})")
    p.add_argument("--max-size", type=int, metavar="PX", help="downscale images so the longer side is at most PX")
    p.add_argument("--qualities", type=_numbers(int), metavar="Q,...",
                   help="quality settings of jpeg/webp/avif/heic/jxl and of DIRAC's base codec "
                   "(default 5,10,20,...,90,95)")
    p.add_argument("--rates", type=_numbers(float), metavar="BPP,...",
                   help="target rates of jp2 and of non-progressive pipelines (default 0.05 ... 2)")
    p.add_argument("--steps", type=_numbers(int), metavar="K,...",
                   help="step prefixes decoded from a progressive (DiffC) stream encoded with max(K) steps "
                   "(default: a geometric grid over a stream encoded at --pipeline-bpp)")
    p.add_argument("--pipeline-bpp", type=float, default=1.0, metavar="BPP",
                   help="rate of the single DiffC encode whose prefixes give the curve (default 1.0)")
    p.add_argument("--pipeline-option", action="append", default=[], metavar="KEY=VALUE",
                   help="setting passed to every pipeline's load_codec, e.g. bits_per_chunk=12 (repeatable; "
                   "a report folder keeps the options it was made with)")
    p.add_argument("--metrics", default="psnr,msssim,ssimulacra2,realism",
                   help="metrics to compute (default psnr,msssim,ssimulacra2,realism)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise ValueError(f"bad --pipeline-option {text!r}: expected KEY=VALUE")
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), {"true": True, "false": False}.get(value.lower(), value)


def _warn(message: str) -> None:
    print(f"fastdiffc eval: warning: {message}", file=sys.stderr)


def run(args) -> int:
    from ..codecs.classical import get_codec, load_codecs
    from ..eval.contenders import ClassicalContender, PipelineUnavailableError, load_contenders, resolve_spec
    from ..eval.images import export_dev_images, list_images
    from ..eval.metrics import METRICS
    from ..eval.report import write_report
    from ..eval.sweep import run_sweep

    if args.export_dev_images:
        paths = export_dev_images(args.export_dev_images)
        print(f"wrote {len(paths)} development images to {args.export_dev_images}")
        return 0
    if not args.output:
        raise ValueError("missing -o REPORT_DIR")
    out_dir = Path(args.output)
    if args.dev_images:
        if args.images:
            raise ValueError("give either IMAGES_DIR or --dev-images, not both")
        images_dir = out_dir / "images"
        export_dev_images(images_dir)
    elif args.images:
        images_dir = Path(args.images)
    else:
        raise ValueError("missing IMAGES_DIR (or --dev-images)")
    image_paths = list_images(images_dir)

    metrics = _list(args.metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; known: {', '.join(METRICS)}")

    codec_names = [] if args.codecs.strip().lower() == "none" else _list(args.codecs)
    for name in codec_names:
        get_codec(name)  # unknown names are a usage error, before any work
    options = dict(_option(o) for o in args.pipeline_option)
    pipeline_specs = [] if args.pipelines.strip().lower() == "none" else _list(args.pipelines)
    unavailable = {}
    for spec in pipeline_specs:  # every spec's knobs are checked before any model is loaded
        try:
            resolve_spec(spec)
        except PipelineUnavailableError as e:
            unavailable[spec] = e
    contenders = []
    for codec in load_codecs(codec_names, warn=_warn):
        settings = args.rates if codec.setting_name == "bpp" else args.qualities
        contenders.append(ClassicalContender(codec, settings))

    for spec in pipeline_specs:
        try:
            if spec in unavailable:
                raise unavailable[spec]
            contenders += load_contenders(spec, steps=args.steps, rates=args.rates, qualities=args.qualities,
                                          max_bpp=args.pipeline_bpp, options=options)
        except PipelineUnavailableError as e:
            _warn(f"skipping {e}")
    if not contenders:
        raise ValueError("nothing to evaluate: no codec or pipeline is available")

    result = run_sweep(image_paths, contenders, out_dir, metrics=metrics, max_size=args.max_size,
                       progress=not args.no_progress, warn=_warn, config={"pipeline_options": options})
    descriptions = {}
    for c in contenders:
        descriptions.update(getattr(c, "descriptions", {c.name: c.description}))
    summary = write_report(out_dir, descriptions=descriptions,
                           failures=result.failures)
    curves = sum(len(getattr(c, "names", (c.name,))) for c in contenders)
    print(f"{result.computed} new points ({len(image_paths)} images, {curves} curves); "
          f"report: {summary}")
    return 0
