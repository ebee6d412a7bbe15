"""Training loop for the UNet denoiser on the continuous-time VDM objective.

Objective: the diffusion term of the ELBO, ∫ ½ e^λ ‖x − x̂0(z_λ, λ)‖² dλ over
[λmin, λmax] (see train/elbo.py), estimated with importance-sampled λ. For a
v-predicting net x − x̂0 = σ (v̂ − v), so the integrand is ½ α² ‖v̂ − v‖²; for ε it is
½ ‖ε̂ − ε‖² — the same quantity, computed without cancellation.

A run directory holds: checkpoint.safetensors (weights, EMA, AdamW state, λ-sampler
state and RNG state — resuming replays the exact same steps), loss.csv (training loss
in bits/dim), eval.csv (held-out bits/dim of the EMA weights at each checkpoint),
ema.safetensors / best_ema.safetensors (EMA weights loadable by the model registry).

Under torchrun the same loop runs data-parallel (train/distributed.py): DDP averages the
gradients, each rank draws its own batches, rank 0 writes the run directory.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.vp import alpha_sigma
from ..models.unet import UNet, UNetConfig, UNetDenoiser, save_unet
from . import distributed
from .data import PatchDataset, tile_patches
from .elbo import LN2, LogSNRSampler, elbo_bits_per_dim

CKPT_META_KEY = "fastdiffc_checkpoint"
# TrainConfig fields that define the held-out measurement (what best_bpd is comparable across).
HELDOUT_KEYS = ("heldout", "scales", "eval_patches", "eval_patch_size", "eval_logsnr", "logsnr_min", "logsnr_max")


@dataclass
class TrainConfig:
    data: str = ""
    heldout: str | None = None
    run_dir: str = "runs/unet"
    patch_size: int = 64
    scales: tuple[float, ...] = (1.0,)  # training images are also used downscaled by these factors
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    max_steps: int = 0  # 0: no step limit
    time_limit_min: float = 0.0  # 0: no wall-clock limit
    ckpt_every: int = 0  # steps (0: off)
    ckpt_minutes: float = 10.0  # wall clock (0: off)
    log_every: int = 25
    eval_patches: int = 64
    eval_patch_size: int = 64
    eval_logsnr: int = 12
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    progress: bool = True
    # Autocast the training forward/backward to bfloat16 (master weights, optimiser and loss stay
    # float32). Off by default for DiffC, whose UNet shipped float32-trained; the held-out
    # evaluation always runs in float32, so runs with and without it compare on one scale.
    bf16: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["scales"] = list(self.scales)
        return d


class EMA:
    """Exponential moving average of parameters (and buffers copied) with a warm-up:
    decay_t = min(decay, (1 + t) / (10 + t)), unless `warm`.

    `warm` (set by a warm start from trained weights, kept in checkpoints): the average already
    holds a trained model, so it starts at the full decay. The warm-up exists to forget a random
    initialisation; after a warm start it made the average follow the fresh optimiser's first,
    largest steps — and (1 + t)/(10 + t) reaches 0.999 only after ≈ 9,000 steps, about a whole
    session's run, so the exported average was one of a few hundred steps throughout (a
    2026-12-03 warm start measured 2.880 → 2.889 bits/dim after its first 10 minutes)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.warm = False

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.decay if self.warm else min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.model.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


def diffusion_loss(net: UNet, x: torch.Tensor, logsnr: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample ELBO integrand ½ e^λ ‖x − x̂0‖², in nats per dimension per unit λ."""
    a, s = (t.to(x.dtype)[:, None, None, None] for t in alpha_sigma(logsnr))
    z = a * x + s * noise
    out = net(z, logsnr.to(x.dtype))  # net may be the DDP wrapper of the UNet (train/distributed.py)
    config = net.module.config if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net.config
    if config.prediction == "v":
        target = a * noise - s * x
        sq = (a * (out - target)).pow(2)  # e^λ σ² = α²
    elif config.prediction == "x":
        sq = torch.exp(logsnr.to(x.dtype))[:, None, None, None] * (out - x).pow(2)
    else:
        sq = (out - noise).pow(2)
    return 0.5 * sq.flatten(1).mean(1)


class Trainer:
    # What evaluate() returns and eval.csv records; SCORE (lower is better) picks best_ema.
    EVAL_FIELDS = ("bpd", "diffusion", "prior", "decoder", "bpd_stderr")
    SCORE, SCORE_UNIT = "bpd", "bits/dim"
    LOSS_FIELD = "loss_bpd"  # what train_step()["loss"] is, in loss.csv

    def __init__(self, cfg: TrainConfig, model_config: UNetConfig | None = None, dataset: PatchDataset | None = None):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # parameter init
        self.net = UNet(model_config or UNetConfig())
        self.ema = EMA(self.net, cfg.ema_decay)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                     weight_decay=cfg.weight_decay)
        self.sampler = LogSNRSampler(cfg.logsnr_min, cfg.logsnr_max)
        self.dist = distributed.current()  # None: one process
        self.gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed, self.dist.rank if self.dist else 0))
        self._train_net = None  # the DDP wrapper under torchrun, made at the first step
        self._rank_states = None  # every rank's (generator, λ-sampler) state, gathered for a checkpoint
        self.data = dataset if dataset is not None else PatchDataset(cfg.data, cfg.patch_size, scales=cfg.scales)
        self.step = 0
        self.elapsed = 0.0  # training wall time carried across resumes
        self.best_bpd = math.inf
        self._heldout = None

    def data_summary(self) -> str:
        d = self.data
        return (f"{len(d.images)} images, {d.num_pixels / 1e6:.1f} Mpixel, "
                f"{len(d)} non-overlapping {self.cfg.patch_size}px patches")

    # --- one optimisation step -----------------------------------------------------------
    @property
    def train_net(self) -> torch.nn.Module:
        """The module the training forward goes through: self.net, or its DDP wrapper."""
        if self._train_net is None:
            self._train_net = distributed.wrap(self.net)
        return self._train_net

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup_steps))

    def train_step(self) -> dict:
        cfg = self.cfg
        self.net.train()
        x = self.data.sample(cfg.batch_size, self.gen)
        lam, weight = self.sampler.sample(cfg.batch_size, self.gen)
        noise = torch.randn(x.shape, generator=self.gen, dtype=x.dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            per_sample = diffusion_loss(self.train_net, x, lam, noise).float()
        loss = (per_sample * weight.to(per_sample.dtype)).mean()  # ≈ ∫ integrand dλ, nats/dim
        stats = self.optimize(loss)
        self.sampler.update(lam, per_sample)
        return {"loss": loss.item() / LN2, **stats}

    def optimize(self, loss: torch.Tensor) -> dict:
        """One optimiser step on `loss` (every task's): warm-up LR, clipped gradients of the
        trainable parameters, EMA update. Returns the grad norm and LR for the logs."""
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.net.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        self.ema.update(self.net, self.step)
        return {"grad_norm": grad_norm.item(), "lr": self.opt.param_groups[0]["lr"]}

    # --- evaluation ------------------------------------------------------------------------
    def heldout_patches(self) -> torch.Tensor | None:
        if self._heldout is None and self.cfg.heldout:
            self._heldout = tile_patches(self.cfg.heldout, self.cfg.eval_patch_size, self.cfg.eval_patches,
                                         scales=self.cfg.scales)
        return self._heldout

    def evaluate(self, model: torch.nn.Module | None = None) -> dict | None:
        x = self.heldout_patches()
        if x is None:
            return None
        den = UNetDenoiser(model or self.ema.model).eval()
        return elbo_bits_per_dim(den, x, logsnr_min=self.cfg.logsnr_min, logsnr_max=self.cfg.logsnr_max,
                                 n_logsnr=self.cfg.eval_logsnr, seed=1234)

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for k, v in self.net.state_dict().items():
            tensors[f"model/{k}"] = v.detach().contiguous()
        for k, v in self.ema.model.state_dict().items():
            tensors[f"ema/{k}"] = v.detach().contiguous()
        opt_sd = self.opt.state_dict()
        for idx, st in opt_sd["state"].items():
            for name, val in st.items():
                tensors[f"opt/{idx}/{name}"] = val.detach().reshape(-1).contiguous()
        for k, v in self.sampler.state_dict().items():
            tensors[f"sampler/{k}"] = v
        tensors["rng/gen"] = self.gen.get_state()
        for r, (gen_state, sampler_state) in enumerate(self._rank_states or []):
            if r > 0:  # rank 0's are the keys above (what a single-process resume reads)
                tensors[f"rank{r}/rng/gen"] = gen_state
                tensors.update({f"rank{r}/sampler/{k}": v for k, v in sampler_state.items()})
        meta = {
            "step": self.step,
            "elapsed": self.elapsed,
            "best_bpd": self.best_bpd if math.isfinite(self.best_bpd) else None,
            "train": self.cfg.to_dict(),
            "model": self.net.config.to_dict(),
            "param_groups": opt_sd["param_groups"],
            "world_size": len(self._rank_states or [None]),
            "ema_warm": self.ema.warm,
        }
        tmp = Path(str(path) + ".tmp")
        save_file(tensors, str(tmp), metadata={CKPT_META_KEY: json.dumps(meta)})
        tmp.replace(path)  # atomic: a crash mid-write never leaves a broken checkpoint

    def load_checkpoint(self, path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()[CKPT_META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta["model"] != self.net.config.to_dict():
            raise ValueError(f"{path}: checkpoint model config differs from this run's")
        self.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        self.ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
        params = list(self.net.parameters())
        state = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, idx, name = k.split("/", 2)
                idx = int(idx)
                shape = () if name == "step" else params[idx].shape
                state.setdefault(idx, {})[name] = v.reshape(shape)
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.sampler.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("sampler/")})
        self.gen.set_state(tensors["rng/gen"])
        rank = self.dist.rank if self.dist else 0
        if rank > 0:  # this rank's own stream: saved by a run of as many processes, else a fresh one
            if f"rank{rank}/rng/gen" in tensors:
                self.gen.set_state(tensors[f"rank{rank}/rng/gen"])
                prefix = f"rank{rank}/sampler/"
                self.sampler.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            else:
                self.gen.manual_seed(distributed.rank_seed(self.cfg.seed + int(meta["step"]), rank))
        self.step = int(meta["step"])
        self.elapsed = float(meta["elapsed"])
        self.ema.warm = bool(meta.get("ema_warm", False))  # absent: a checkpoint from before the flag
        self.best_bpd = meta["best_bpd"] if meta["best_bpd"] is not None else math.inf
        # The best held-out bits/dim is only comparable on the same held-out tiles and λ range:
        # resumed with other ones, the old best would block every new best_ema export.
        old, new = meta.get("train", {}), self.cfg.to_dict()
        if any(old.get(k) != new[k] for k in HELDOUT_KEYS):
            self.best_bpd = math.inf

    def init_weights(self, path) -> None:
        """Warm start from a weight file (model and EMA; fresh optimiser)."""
        from ..models.unet import load_unet

        net, _ = load_unet(path)
        if net.config.to_dict() != self.net.config.to_dict():
            raise ValueError(f"{path}: model config differs from this run's")
        self.net.load_state_dict(net.state_dict())
        self.ema.model.load_state_dict(net.state_dict())
        self.ema.warm = True

    def export(self, path, extra: dict | None = None) -> None:
        info = {"trained_steps": self.step, "logsnr_min": self.cfg.logsnr_min, "logsnr_max": self.cfg.logsnr_max,
                **(extra or {})}
        save_unet(self.ema.model, path, {"training": info})

    # --- the run -------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        run_dir = Path(cfg.run_dir)
        ckpt = run_dir / "checkpoint.safetensors"
        main = distributed.is_main()  # only rank 0 writes the run directory
        world = self.dist.world_size if self.dist else 1
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(
                {"train": cfg.to_dict(), "model": self.net.config.to_dict(), "world_size": world}, indent=2))
            loss_log = _CsvLog(run_dir / "loss.csv",
                               ["step", "elapsed_s", "images", self.LOSS_FIELD, "grad_norm", "lr"])
            eval_log = _CsvLog(run_dir / "eval.csv", ["step", "elapsed_s", *self.EVAL_FIELDS])
        start = time.monotonic() - self.elapsed
        deadline = start + cfg.time_limit_min * 60 if cfg.time_limit_min > 0 else math.inf
        last_ckpt, last_ckpt_step = time.monotonic(), -1
        acc, n_acc = {"loss": 0.0, "grad_norm": 0.0}, 0
        bar = None
        if cfg.progress and main:
            from tqdm import tqdm

            bar = tqdm(initial=self.step, total=cfg.max_steps or None, unit="step", dynamic_ncols=True)
        result = {}

        def checkpoint():
            self._rank_states = distributed.gather_objects((self.gen.get_state(), self.sampler.state_dict()))
            if not main:
                return None
            self.save_checkpoint(ckpt)
            ev = self.evaluate()
            row = {"step": self.step, "elapsed_s": round(self.elapsed, 1)}
            if ev is not None:
                eval_log.write({**row, **{k: round(ev[k], 5) for k in self.EVAL_FIELDS}})
                score = ev[self.SCORE]
                if score < self.best_bpd:
                    self.best_bpd = score
                    self.export(run_dir / "best_ema.safetensors", {f"heldout_{self.SCORE}": score})
                    self.save_checkpoint(ckpt)  # record best_bpd
                if bar is not None:
                    bar.write(f"step {self.step}: held-out {score:.4f} {self.SCORE_UNIT} (EMA)")
            self.export(run_dir / "ema.safetensors")
            return ev

        try:
            while True:
                if cfg.max_steps and self.step >= cfg.max_steps:
                    break
                (out_of_time,) = distributed.agree(time.monotonic() >= deadline)
                if out_of_time:
                    break
                out = self.train_step()
                self.elapsed = time.monotonic() - start
                acc["loss"] += out["loss"]
                acc["grad_norm"] += out["grad_norm"]
                n_acc += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{out['loss']:.3f}")
                if self.step % cfg.log_every == 0:
                    if main:  # rank 0's loss (its batch); images counts every rank's
                        loss_log.write({"step": self.step, "elapsed_s": round(self.elapsed, 1),
                                        "images": self.step * cfg.batch_size * world,
                                        self.LOSS_FIELD: round(acc["loss"] / n_acc, 5),
                                        "grad_norm": round(acc["grad_norm"] / n_acc, 4), "lr": out["lr"]})
                    acc, n_acc = {"loss": 0.0, "grad_norm": 0.0}, 0
                due_steps = cfg.ckpt_every and self.step % cfg.ckpt_every == 0
                due_time = cfg.ckpt_minutes > 0 and time.monotonic() - last_ckpt >= cfg.ckpt_minutes * 60
                (due_time,) = distributed.agree(due_time)
                if due_steps or due_time:
                    result["final_eval"] = checkpoint()
                    last_ckpt, last_ckpt_step = time.monotonic(), self.step
            if last_ckpt_step != self.step:
                result["final_eval"] = checkpoint()
        finally:
            if bar is not None:
                bar.close()
        result.update(step=self.step, elapsed_s=self.elapsed, best_bpd=self.best_bpd, run_dir=str(run_dir))
        if self.dist is not None:  # the replicas must agree bit for bit
            result.update(world_size=world, replica_digests=distributed.replica_digests(self.net))
            self._train_net = None  # drop the DDP wrapper (and its reducer) while the process group lives
        return result


class _CsvLog:
    """Append-only CSV (header written once), flushed per row so a crash loses nothing."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if not path.exists():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])
