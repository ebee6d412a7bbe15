"""`fastdiffc experiments gaussian-rd [--json]`: the paper's Gaussian theory, measured with coded bits."""

import json


def add_parser(sub):
    p = sub.add_parser("experiments", help="reproducible experiments (gaussian-rd)")
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
    g.add_argument("--recon-steps", type=int, default=DEFAULTS["recon_steps"], help="flow/ancestral sampler steps")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    g.add_argument("--backend", default="auto", choices=["auto", "cpp", "cuda", "numpy"], help="RCC backend")
    g.set_defaults(func=run_gaussian_rd)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_gaussian_rd(args):
    from ..experiments import gaussian_rd

    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated numbers, got {args.rates!r}") from None
    rows = gaussian_rd.run(dims=args.dims, exponent=args.exponent, knee=args.knee, rates=rates,
                           logsnr_min=args.logsnr_min, logsnr_max=args.logsnr_max, grid_steps=args.grid_steps,
                           bits_per_chunk=args.bits_per_chunk, margin=args.margin, recon_steps=args.recon_steps,
                           seed=args.seed, backend=args.backend, progress=not args.json)
    print(json.dumps(rows, indent=2) if args.json else gaussian_rd.format_table(rows))
    return 0
