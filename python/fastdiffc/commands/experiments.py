"""`fastdiffc experiments gaussian-rd|model-kl [--json]`: reproducible measurements.

gaussian-rd: the paper's Gaussian theory, measured with coded bits.
model-kl: per-step DiffC rate of several models on photos, and the best switch log-SNR of a
composite model (optionally written as a composite model file).
"""

import json


def add_parser(sub):
    p = sub.add_parser("experiments", help="reproducible experiments (gaussian-rd, model-kl)")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    from ..experiments.gaussian_rd import DEFAULTS

    g = esub.add_parser("gaussian-rd", help="DiffC on Gaussian data: flow / ancestral / denoise vs D(R)")
    g.add_argument("--json", action="store_true", help="print a JSON list, one object per rate")
    g.add_argument("--dims", type=int, default=DEFAULTS["dims"], help="source dimension (default %(default)s)")
    g.add_argument("--exponent", type=float, default=DEFAULTS["exponent"], help="power-law exponent of the spectrum")
    g.add_argument("--knee", type=float, default=DEFAULTS["knee"], help="spectrum v_i ∝ (1 + i/knee)^-exponent")
    g.add_argument("--rates", default=",".join(str(r) for r in DEFAULTS["rates"]),
                   help="target ideal rates in bits/dim, comma-separated (default %(default)s)")
    g.add_argument("--grid-steps", type=int, default=DEFAULTS["grid_steps"], help="log-SNR grid steps")
    g.add_argument("--logsnr-min", type=float, default=DEFAULTS["logsnr_min"])
    g.add_argument("--logsnr-max", type=float, default=DEFAULTS["logsnr_max"])
    g.add_argument("--bits-per-chunk", type=int, default=DEFAULTS["bits_per_chunk"])
    g.add_argument("--margin", type=float, default=DEFAULTS["margin"])
    g.add_argument("--scheme", default=DEFAULTS["scheme"], choices=["pfr", "importance", "tree"],
                   help="RCC scheme (default %(default)s; pfr/importance use --bits-per-chunk/--margin)")
    g.add_argument("--tree", default=",".join(str(DEFAULTS[k]) for k in ("tree_level_bits", "tree_levels", "tree_beam",
                                                                          "tree_margin")),
                   help="tree scheme: BITS_PER_LEVEL,LEVELS,BEAM,MARGIN (default %(default)s)")
    g.add_argument("--recon-steps", type=int, default=DEFAULTS["recon_steps"], help="flow/ancestral sampler steps")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    g.add_argument("--backend", default="auto", choices=["auto", "cpp", "cuda", "numpy"], help="RCC backend")
    g.set_defaults(func=run_gaussian_rd)
    _add_model_kl(esub)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _add_model_kl(esub):
    from ..pipelines.diffc import DiffCSettings

    d = DiffCSettings()
    m = esub.add_parser("model-kl", help="per-step DiffC rate (Σ KL, bpp) of models on photos; composite switch point",
                        description="Runs the DiffC sender over every grid step on each image with each model and "
                                    "prints the per-step mean Σ KL in bits per pixel, the running totals and, for "
                                    "two models (low-λ one first), the switch log-SNR of the best 2-part composite.")
    m.add_argument("--models", required=True, help="comma-separated registry names, low-λ model first for a switch")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images (e.g. data/photos/heldout)")
    src.add_argument("--dev-images", action="store_true",
                     help="the development evaluation photos (the test set: do not tune on them)")
    m.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted by name)")
    m.add_argument("--max-size", type=int, default=256, help="downscale to this longer side (default %(default)s)")
    m.add_argument("--grid-steps", type=int, default=d.grid_steps, help="DiffC grid steps (default %(default)s)")
    m.add_argument("--logsnr-min", type=float, default=d.logsnr_min)
    m.add_argument("--logsnr-max", type=float, default=d.logsnr_max)
    m.add_argument("--schedule", default=d.schedule, choices=["linear", "cosine"])
    m.add_argument("--bits-per-chunk", type=int, default=d.bits_per_chunk)
    m.add_argument("--margin", type=float, default=d.margin)
    m.add_argument("--seed", type=int, default=d.seed)
    m.add_argument("--backend", default="auto", choices=["auto", "cpp", "cuda", "numpy"], help="RCC backend")
    m.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    m.add_argument("--write-composite", metavar="PATH.safetensors",
                   help="with two models: write a composite model file switching at the recommended λ "
                        "(its parts are looked up in the file's folder)")
    m.add_argument("--json", action="store_true", help="print the full result as JSON (incl. per-image tables)")
    m.set_defaults(func=run_model_kl)


def run_model_kl(args):
    import tempfile
    from pathlib import Path

    import torch

    from ..eval.images import export_dev_images, list_images
    from ..experiments import model_kl
    from ..pipelines.diffc import DiffCSettings

    models = [n.strip() for n in args.models.split(",") if n.strip()]
    if not models:
        raise ValueError("--models needs at least one model name")
    weights_dir = None  # the shipped models, unless a composite is written: then its neighbours
    if args.write_composite:  # fail before the long measurement, not after
        from ..models.registry import list_models

        if len(models) != 2:
            raise ValueError("--write-composite needs exactly two models (low-λ first)")
        out = Path(args.write_composite)
        weights_dir = out.parent
        if out.suffix != ".safetensors":
            raise ValueError(f"--write-composite must name a .safetensors file, got {out.name}")
        if args.dev_images:
            raise ValueError("--write-composite: choose the switch on held-out photos (IMAGES_DIR), not on the "
                             "development evaluation photos the results are reported on")
        if out.stem in models:
            raise ValueError(f"--write-composite: composite {out.stem!r} cannot be one of its own parts")
        there = {m.name: m for m in list_models(out.parent)} if out.parent.is_dir() else {}
        missing = [n for n in models if n not in there]
        if missing:
            raise ValueError(f"--write-composite: the parts must sit in the composite's folder {out.parent}; "
                             f"missing {', '.join(missing)}")
        if out.stem in there and there[out.stem].cls != "composite":
            raise ValueError(f"--write-composite: {out} is a {there[out.stem].cls} model; refusing to overwrite it")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
    settings = DiffCSettings(seed=args.seed, schedule=args.schedule, logsnr_min=args.logsnr_min,
                             logsnr_max=args.logsnr_max, grid_steps=args.grid_steps,
                             bits_per_chunk=args.bits_per_chunk, margin=args.margin)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_dev_images(tmp) if args.dev_images else list_images(args.images)
        paths = sorted(paths)[: args.limit]
        # Measure the very files the composite will record (its parts sit next to it).
        result = model_kl.run(models, paths, max_size=args.max_size, settings=settings, backend=args.backend,
                              progress=not args.json, weights_dir=weights_dir)
    if args.dev_images:
        result["images"] = [f"dev:{Path(p).stem}" for p in paths]
    if args.write_composite:
        from ..models.registry import save_composite

        # A part replaced during the measurement would ship a switch tuned for another model.
        measured = [int(result["model_hashes"][n], 16) for n in models]
        h = save_composite(args.write_composite, models, [result["switch"]["switch_logsnr"]], expect_hashes=measured)
        result["composite"] = {"path": str(args.write_composite), "content_hash": f"{h:016x}"}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(model_kl.format_table(result))
        if args.write_composite:
            print(f"wrote {args.write_composite} (content hash {result['composite']['content_hash']})")
    return 0


def _tree_args(text: str) -> dict:
    try:
        bits, levels, beam, margin = text.split(",")
        return dict(tree_level_bits=int(bits), tree_levels=int(levels), tree_beam=int(beam), tree_margin=float(margin))
    except ValueError:
        raise ValueError(f"--tree must be BITS_PER_LEVEL,LEVELS,BEAM,MARGIN, got {text!r}") from None


def run_gaussian_rd(args):
    from ..experiments import gaussian_rd

    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated numbers, got {args.rates!r}") from None
    rows = gaussian_rd.run(dims=args.dims, exponent=args.exponent, knee=args.knee, rates=rates,
                           logsnr_min=args.logsnr_min, logsnr_max=args.logsnr_max, grid_steps=args.grid_steps,
                           bits_per_chunk=args.bits_per_chunk, margin=args.margin, recon_steps=args.recon_steps,
                           seed=args.seed, backend=args.backend, progress=not args.json, scheme=args.scheme,
                           **_tree_args(args.tree))
    print(json.dumps(rows, indent=2) if args.json else gaussian_rd.format_table(rows))
    return 0
