"""`fastdiffc train --data DIR ...`: train a model on an image folder.

`--task diffc` (default): DiffC's unconditional UNet denoiser (VDM ELBO objective).
`--task dirac`: DIRAC's residual model on base-codec pairs of the photos (x-parameterised MSE).

Under torchrun (`torchrun --nproc-per-node N -m fastdiffc train ...`) either task trains
data-parallel with DDP (train/distributed.py); rank 0 prints and writes the run directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("train", help="train a model (DiffC UNet or DIRAC residual model) on a folder of images")
    p.add_argument("--task", choices=("diffc", "dirac"), default="diffc",
                   help="diffc: the unconditional UNet (ELBO); dirac: the residual model over base codecs")
    p.add_argument("--data", required=True, help="folder of training images (searched recursively)")
    p.add_argument("--heldout", help="folder of held-out images: bits/dim at every checkpoint")
    p.add_argument("--run-dir", default=None, help="checkpoints, loss.csv, eval.csv (default: runs/unet or runs/dirac)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.safetensors")
    p.add_argument("--init", metavar="WEIGHTS", help="warm start from a UNet .safetensors (fresh optimiser)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps in total (0: no limit)")
    p.add_argument("--time-limit", type=float, default=0.0, metavar="MIN",
                   help="stop after this many minutes of training in total (0: no limit)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (diffc), 8 (dirac)")
    p.add_argument("--patch-size", type=int, default=None, help="default 64 (diffc), 128 (dirac)")
    p.add_argument("--cache-dir", default="data/dirac_pairs", help="dirac: cached base-codec bitstreams")
    p.add_argument("--workers", type=int, default=1, help="dirac: processes encoding the pair cache")
    p.add_argument("--base-codecs", default=None, metavar="NAME,...",
                   help="dirac: the base codecs to train on (default: all, jpeg,webp,avif,heic,jxl,cdc)")
    p.add_argument("--cdc-model", default=None, metavar="NAME",
                   help="dirac: registry name of the CDC model behind the cdc base (default: cdc)")
    p.add_argument("--loss-weighting", choices=("mse", "relative", "relative-start"), default=None,
                   help="dirac: plain MSE (default), each patch's MSE relative to its base codec's "
                        "(aligns training with the mean PSNR gain), or that at the 0-step point only "
                        "(docs/design.md §4b)")
    p.add_argument("--scales", default=None, metavar="S,...",
                   help="also train on the images downscaled by these factors in (0, 1], e.g. 1,0.5,0.33 "
                        "(a crop first picks a scale uniformly)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200, help="linear LR warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay")
    p.add_argument("--logsnr-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="default -15 15 (diffc), -6 10 (dirac: the decode schedule's range)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint + eval every N minutes")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint + eval every N steps (0: off)")
    p.add_argument("--log-every", type=int, default=25, help="loss.csv row every N steps")
    p.add_argument("--eval-patches", type=int, default=64)
    p.add_argument("--eval-patch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                   help="training forward/backward (bfloat16: autocast, float32 weights and optimiser; "
                        "1.5-1.9x faster where the CPU has native bfloat16); default float32 (diffc), "
                        "bfloat16 (dirac)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-config", metavar="JSON",
                   help='UNet config overrides, e.g. \'{"base_channels": 32, "channel_mults": [1,2,2,2]}\'')
    p.add_argument("--export", metavar="PATH", help="copy the best EMA weights here at the end")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=run)
    return p


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if any(not 0.0 < s <= 1.0 for s in scales):
        raise ValueError(f"--scales must be in (0, 1], got {text!r}")
    return scales


def _parse_codecs(text: str) -> tuple[str, ...]:
    from ..codecs.learned import DIRAC_BASES

    codecs = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in codecs if c not in DIRAC_BASES]
    if not codecs or unknown:
        raise ValueError(f"--base-codecs must name some of {', '.join(DIRAC_BASES)}, got {text!r}")
    return codecs


def run(args) -> int:
    from ..train import distributed

    dist = distributed.init_from_env()  # None unless launched by torchrun with several processes
    try:
        code = _run(args, dist)
        distributed.shutdown(clean=True)
        return code
    finally:
        distributed.shutdown()  # after an error: leave the group without waiting for the others


def _run(args, dist) -> int:
    from ..models.unet import UNetConfig
    from ..train.loop import TrainConfig, Trainer

    say = print if dist is None or dist.is_main else (lambda *a, **k: None)

    if args.task == "dirac":
        from ..models.residual import default_unet_config
        from ..train.residual import ResidualTrainConfig as config_cls
        from ..train.residual import ResidualTrainer as trainer_cls

        base_config = default_unet_config().to_dict()
    else:
        config_cls, trainer_cls, base_config = TrainConfig, Trainer, {}
        dirac_only = {"--base-codecs": args.base_codecs, "--cdc-model": args.cdc_model,
                      "--loss-weighting": args.loss_weighting}
        given_dirac = [name for name, value in dirac_only.items() if value is not None]
        if given_dirac:
            raise ValueError(f"{', '.join(given_dirac)}: only for --task dirac")
    # Options left unset take the task's own defaults (its config dataclass).
    given = dict(
        run_dir=args.run_dir, patch_size=args.patch_size, batch_size=args.batch_size,
        scales=None if args.scales is None else _parse_scales(args.scales),
        logsnr_min=None if args.logsnr_range is None else args.logsnr_range[0],
        logsnr_max=None if args.logsnr_range is None else args.logsnr_range[1],
        bf16=None if args.precision is None else args.precision == "bfloat16",
    )
    if args.task == "dirac":
        given.update(cache_dir=args.cache_dir, workers=args.workers, cdc_model=args.cdc_model,
                     loss_weighting=args.loss_weighting,
                     codecs=None if args.base_codecs is None else _parse_codecs(args.base_codecs))
    cfg = config_cls(
        data=args.data, heldout=args.heldout, lr=args.lr, warmup_steps=args.warmup, ema_decay=args.ema,
        max_steps=args.steps, time_limit_min=args.time_limit, ckpt_every=args.ckpt_every,
        ckpt_minutes=args.ckpt_minutes, eval_patches=args.eval_patches, eval_patch_size=args.eval_patch_size,
        log_every=args.log_every, seed=args.seed, threads=args.threads, progress=not args.no_progress,
        **{k: v for k, v in given.items() if v is not None},
    )
    overrides = {}
    if args.model_config:
        try:
            overrides = json.loads(args.model_config)
        except json.JSONDecodeError as e:
            raise ValueError(f"--model-config is not valid JSON: {e}") from None
    model_config = UNetConfig.from_dict({**base_config, **overrides})
    args.run_dir = cfg.run_dir
    ckpt = Path(args.run_dir) / "checkpoint.safetensors"
    if ckpt.exists() and not args.resume:
        raise ValueError(f"{ckpt} exists: pass --resume to continue it, or choose another --run-dir")
    trainer = trainer_cls(cfg, model_config)
    if args.resume:
        if not ckpt.exists():
            raise ValueError(f"--resume: no checkpoint at {ckpt}")
        trainer.load_checkpoint(ckpt)
    elif args.init:
        trainer.init_weights(args.init)
    say(f"data: {trainer.data_summary()}; "
        f"model: {sum(p.numel() for p in trainer.net.parameters()) / 1e6:.2f} M parameters"
        + (f"; {dist.world_size} processes ({dist.backend}), global batch {dist.world_size * cfg.batch_size}"
           if dist else ""))
    result = trainer.run()
    digests = result.get("replica_digests")
    if digests and len(set(digests)) != 1:
        raise RuntimeError(f"the replicas' parameters differ after training: {digests}")
    if dist is not None and not dist.is_main:
        return 0
    best = Path(args.run_dir) / "best_ema.safetensors"
    if args.export:
        src = best if best.exists() else Path(args.run_dir) / "ema.safetensors"
        shutil.copyfile(src, args.export)
        print(f"exported {src} -> {args.export}")
    print(json.dumps({k: v for k, v in result.items() if k != "final_eval"}, default=str))
    if result.get("final_eval"):
        print(f"held-out {trainer.SCORE} (EMA, final): {result['final_eval'][trainer.SCORE]:.4f}")
    return 0

