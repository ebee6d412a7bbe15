"""Training CDC (docs/design.md §4c) with the shared training loop, in two stages.

Stage "rd": the transform-coding half — g_a, h_a, h_s, g_s, the factorised prior and the
per-level gains — on the rate–distortion loss, one λ per level drawn per image:

    L = E[ bpp(ŷ, ẑ) + λ_level · 255² · MSE₀₁(x, g_s(ŷ)) ]

(rates from the continuous likelihoods of y + u and z + u; ŷ into g_s and ẑ into h_s are
rounded with straight-through gradients).

Stage "diffusion": everything of stage 1 frozen; the conditional UNet (and the 1×1 projection
of ŷ it is conditioned on) learns x on ŷ of the frozen encoder, x-parameterised on the scaled
residual r = K (x − x̄) like DIRAC's model: E ‖r̂(z_λ, λ, x̄, features(ŷ)) − r‖² / K², λ uniform
in [λ_start, λ_end] with a share `p_start` exactly at λ_start (the first decode step).

Everything else — optimiser, EMA, exactly resuming checkpoints, loss.csv / eval.csv, best-EMA
export, time limits — is `Trainer` (train/loop.py). The exported file is a frozen CDCModel
(integer coding tables filled), loadable by the registry ("cdc" class).

    python -m fastdiffc.train.cdc --stage rd --data data/photos/train --heldout data/photos/heldout \\
        --run-dir runs/cdc_rd --time-limit 240 --threads 1
    python -m fastdiffc.train.cdc --stage diffusion --init runs/cdc_rd/best_ema.safetensors ...
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.vp import alpha_sigma
from ..image_io import psnr
from ..models.cdc import CDCConfig, CDCModel
from ..models.unet import UNetConfig
from .data import PatchDataset, tile_patches
from .loop import EMA, TrainConfig, Trainer

STAGES = ("rd", "diffusion")
# Parameters of the diffusion decoder (stage "diffusion"); everything else is stage "rd".
DECODER_PREFIXES = ("unet.", "cond_proj.")


@dataclass
class CDCTrainConfig(TrainConfig):
    run_dir: str = "runs/cdc"
    stage: str = "rd"
    patch_size: int = 128
    batch_size: int = 8
    scales: tuple[float, ...] = (0.5, 1.0)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_start: float = 0.3
    logsnr_min: float = -6.0  # kept equal to the model's λ_start / λ_end (for the diffusion stage)
    logsnr_max: float = 10.0
    eval_patches: int = 24
    eval_patch_size: int = 128
    bf16: bool = True  # diffusion stage: autocast the UNet to bfloat16


def _to_uint8(x: torch.Tensor):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


class CDCTrainer(Trainer):
    EVAL_FIELDS = ("score", "bpp", "psnr_mean", "psnr_diffusion")
    SCORE, SCORE_UNIT = "score", "(rd: mean of bpp + λ·255²·MSE over levels; diffusion: −dB gain of 1 step)"
    LOSS_FIELD = "loss"

    def __init__(self, cfg: CDCTrainConfig, model_config: CDCConfig | None = None, dataset=None):
        if cfg.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}")
        if dataset is None:
            dataset = PatchDataset(cfg.data, cfg.patch_size, scales=cfg.scales)
        # The shared Trainer builds a UNet, its EMA and optimiser; a tiny one, replaced below.
        super().__init__(cfg, UNetConfig(base_channels=8, channel_mults=(1,), num_res_blocks=1), dataset)
        mcfg = model_config or CDCConfig(logsnr_start=cfg.logsnr_min, logsnr_end=cfg.logsnr_max)
        torch.manual_seed(cfg.seed)
        self.net = CDCModel(mcfg)
        self._set_trainable(self.net)
        self.ema = EMA(self.net, cfg.ema_decay)
        # One group over every parameter (frozen ones get no gradient, so AdamW skips them): the
        # optimiser's state indices are net.parameters() indices, as Trainer's checkpoints expect.
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                     weight_decay=cfg.weight_decay)

    def _set_trainable(self, net: CDCModel) -> None:
        diffusion = self.cfg.stage == "diffusion"
        for name, p in net.named_parameters():
            p.requires_grad_(name.startswith(DECODER_PREFIXES) == diffusion)

    def data_summary(self) -> str:
        return (f"stage {self.cfg.stage}; {len(self.data.images)} images, {self.cfg.patch_size}px patches, "
                f"{self.net.config.levels} rate levels")

    # ------------------------------------------------------------------ steps
    def _levels(self, n: int) -> torch.Tensor:
        return torch.randint(self.net.config.levels, (n,), generator=self.gen)

    def train_step(self) -> dict:
        cfg = self.cfg
        self.net.train()
        x = self.data.sample(cfg.batch_size, self.gen)
        level = self._levels(cfg.batch_size)
        torch.manual_seed(int(torch.randint(1 << 62, (1,), generator=self.gen)))  # the uniform noise of forward_rd
        if cfg.stage == "rd":
            loss, _ = self._rd_loss(self.net, x, level, noise=True)
            report = loss.item()
        else:
            loss = self._diffusion_loss(x, level)
            report = loss.item() * 1e4
        return {"loss": report, **self.optimize(loss)}

    @staticmethod
    def _rd_loss(net: CDCModel, x: torch.Tensor, level: torch.Tensor, noise: bool):
        out = net.forward_rd(x, level, noise=noise)
        pixels = x.shape[-2] * x.shape[-1]
        bpp = (out["bits_y"] + out["bits_z"]) / pixels
        mse01 = (out["x_bar"] - x).pow(2).flatten(1).mean(1) / 4.0
        lam = torch.tensor(net.config.lambdas, dtype=x.dtype)[level]
        return (bpp + lam * 255.0**2 * mse01).mean(), {"bpp": bpp, "x_bar": out["x_bar"], "y_hat": out["y_hat"]}

    def _diffusion_loss(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        cfg, net = self.cfg, self.net
        with torch.no_grad():
            _, rd = self._rd_loss(net, x, level, noise=False)
            x_bar, y_hat = rd["x_bar"], rd["y_hat"]
        k = net.config.residual_scale
        r = k * (x - x_bar)
        n = x.shape[0]
        u = torch.rand(n, generator=self.gen, dtype=torch.float64)
        lam = cfg.logsnr_min + (cfg.logsnr_max - cfg.logsnr_min) * u
        at_start = torch.rand(n, generator=self.gen, dtype=torch.float64) < cfg.p_start
        lam = torch.where(at_start, torch.full_like(lam, cfg.logsnr_min), lam).to(torch.float32)
        a, s = (t[:, None, None, None] for t in alpha_sigma(lam))
        noise = torch.randn(r.shape, generator=self.gen)
        cond = net.cond_image(y_hat, level, x_bar)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = net.unet(a * r + s * noise, lam, cond)
        return (out.float() - r).pow(2).mean() / k**2

    # ------------------------------------------------------------------ evaluation
    def heldout_patches(self):
        if self._heldout is None and self.cfg.heldout:
            self._heldout = tile_patches(self.cfg.heldout, self.cfg.eval_patch_size, self.cfg.eval_patches,
                                         scales=self.cfg.scales)
        return self._heldout

    @torch.no_grad()
    def evaluate(self, model=None) -> dict | None:
        """Over every level on fixed held-out tiles: bpp of the rounded latents (likelihoods),
        PSNR of the mean decoder, and PSNR of one diffusion step (the UNet's first prediction)."""
        x = self.heldout_patches()
        if x is None:
            return None
        net = (model or self.ema.model).eval()
        gen = torch.Generator().manual_seed(1234)
        levels = net.config.levels
        scores, bpps, pm, pd = [], [], [], []
        for lv in range(levels):
            level = torch.full((x.shape[0],), lv, dtype=torch.long)
            torch.manual_seed(0)
            loss, rd = self._rd_loss(net, x, level, noise=False)
            scores.append(float(loss))
            bpps.append(float(rd["bpp"].mean()))
            x_bar = rd["x_bar"]
            pm.append(sum(psnr(_to_uint8(a), _to_uint8(b)) for a, b in zip(x_bar, x)) / len(x))
            cond = net.cond_image(rd["y_hat"], level, x_bar)
            z = torch.randn(x.shape, generator=gen)
            x1 = net.denoise(z, self.cfg.logsnr_min, cond)
            pd.append(sum(psnr(_to_uint8(a), _to_uint8(b)) for a, b in zip(x1, x)) / len(x))
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        score = mean(scores) if self.cfg.stage == "rd" else -(mean(pd) - mean(pm))
        return {"score": score, "bpp": mean(bpps), "psnr_mean": mean(pm), "psnr_diffusion": mean(pd)}

    # ------------------------------------------------------------------ weights
    def export(self, path, extra: dict | None = None) -> None:
        info = {"stage": self.cfg.stage, "trained_steps": self.step, "trained_minutes": round(self.elapsed / 60, 1),
                **(extra or {})}
        copy.deepcopy(self.ema.model).freeze().save(path, {"training": info})

    def load_checkpoint(self, path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # table buffers take the checkpoint's width first
            keys = set(f.keys())
            for prefix, m in (("model/", self.net), ("ema/", self.ema.model)):
                if prefix + "prior_z.table_freqs" in keys:
                    m.prior_z.table_freqs = torch.zeros_like(f.get_tensor(prefix + "prior_z.table_freqs"))
        super().load_checkpoint(path)

    def _load_same_config(self, path) -> dict:
        src = CDCModel.load(path)
        if src.config.to_dict() != self.net.config.to_dict():
            raise ValueError(f"{path}: CDC model config differs from this run's "
                             "(pass --config with the same settings)")
        return {k: v.contiguous() for k, v in src.state_dict().items()}

    def init_weights(self, path, decoder_from=None) -> None:
        """Warm start (e.g. the diffusion stage from the rd stage's export); fresh optimiser.

        `decoder_from`: take the diffusion decoder (UNet and ŷ projection) from another CDC
        model — one trained on an earlier encoder — instead of from `path`. A retrained
        transform changes ŷ only a little, so the decoder starts far closer than from scratch."""
        sd = self._load_same_config(path)
        if decoder_from is not None:
            dec = self._load_same_config(decoder_from)
            sd.update({k: v for k, v in dec.items() if k.startswith(DECODER_PREFIXES)})
        for m in (self.net, self.ema.model):
            m.load_state(sd)
        self._set_trainable(self.net)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastdiffc.train.cdc", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=STAGES, default="rd")
    p.add_argument("--data", required=True)
    p.add_argument("--heldout")
    p.add_argument("--run-dir", default=None, help="default runs/cdc_<stage>")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", metavar="WEIGHTS", help="warm start from a CDC .safetensors (fresh optimiser)")
    p.add_argument("--init-decoder", metavar="WEIGHTS",
                   help="with --init: the diffusion decoder from this CDC model instead (same config)")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=0.0, metavar="MIN")
    # The rd stage trains on 256 px crops (z is 4×4): on 128 px crops z is 2×2, every position of
    # the hyper-synthesis is a border one, and the interior — most of a real image — went
    # untrained (measured: the second model coded a 768×512 photo at 113 k bits of ŷ against 36 k
    # for the same photo as 24 separate 128 px tiles). Its held-out score uses 512 px tiles.
    p.add_argument("--batch-size", type=int, default=None, help="default 4 (rd), 8 (diffusion)")
    p.add_argument("--patch-size", type=int, default=None, help="default 256 (rd), 128 (diffusion)")
    p.add_argument("--eval-patch-size", type=int, default=None, help="default 512 (rd), 128 (diffusion)")
    p.add_argument("--scales", default="0.5,1")
    p.add_argument("--lr", type=float, default=None, help="default 1e-4 (rd), 3e-4 (diffusion)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-patches", type=int, default=24)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", metavar="JSON", help="CDCConfig overrides, e.g. '{\"channels\": 48}'")
    p.add_argument("--export", metavar="PATH", help="copy the best EMA model here at the end")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    run_dir = args.run_dir or f"runs/cdc_{args.stage}"
    cfg = CDCTrainConfig(
        data=args.data, heldout=args.heldout, run_dir=run_dir, stage=args.stage, max_steps=args.steps,
        time_limit_min=args.time_limit,
        batch_size=args.batch_size or (4 if args.stage == "rd" else 8),
        patch_size=args.patch_size or (256 if args.stage == "rd" else 128),
        eval_patch_size=args.eval_patch_size or (512 if args.stage == "rd" else 128),
        scales=tuple(float(s) for s in args.scales.split(",")), lr=args.lr or (1e-4 if args.stage == "rd" else 3e-4),
        ckpt_minutes=args.ckpt_minutes, ckpt_every=args.ckpt_every, log_every=args.log_every,
        eval_patches=args.eval_patches, threads=args.threads, seed=args.seed, progress=not args.no_progress)
    overrides = json.loads(args.config) if args.config else {}
    mcfg = CDCConfig.from_dict({**CDCConfig(logsnr_start=cfg.logsnr_min, logsnr_end=cfg.logsnr_max).to_dict(),
                                **overrides})
    ckpt = Path(run_dir) / "checkpoint.safetensors"
    if ckpt.exists() and not args.resume:
        raise SystemExit(f"{ckpt} exists: pass --resume to continue it, or choose another --run-dir")
    trainer = CDCTrainer(cfg, mcfg)
    if args.resume:
        trainer.load_checkpoint(ckpt)
    elif args.init:
        trainer.init_weights(args.init, decoder_from=args.init_decoder)
    elif args.init_decoder:
        raise SystemExit("--init-decoder needs --init (the transforms and entropy models to train on)")
    n_train = sum(p.numel() for p in trainer.net.parameters() if p.requires_grad)
    print(f"data: {trainer.data_summary()}; training {n_train / 1e6:.2f} M parameters")
    result = trainer.run()
    if args.export:
        best = Path(run_dir) / "best_ema.safetensors"
        src = best if best.exists() else Path(run_dir) / "ema.safetensors"
        shutil.copyfile(src, args.export)
        print(f"exported {src} -> {args.export}")
    ev = result.pop("final_eval", None)
    print(json.dumps(result, default=str))
    if ev:
        print("held-out (EMA, final): " + ", ".join(f"{k} {v:.4f}" for k, v in ev.items() if math.isfinite(v)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
