"""Training DIRAC's residual model (docs/design.md §4b) with the shared training loop.

Objective (x-parameterisation): E ‖r̂(z_λ, λ, x_base, codec, rate) − r‖², r = K (x − x_base),
z_λ = α r + σ ε, measured in image units (divided by K²) so the loss is the MSE a decoder
would see. λ is drawn uniformly over the model's decode range [λ_start, λ_end], except that a
fraction `p_start` of the batch sits exactly at λ_start: that point is the 0-step output
(the MMSE post-filter), the fidelity end of DIRAC's knob, and it decides the BD-rate.

`loss_weighting="relative"` weights each patch's squared error by 1 / (its base codec's MSE + a
floor), rescaled by the batch's mean base MSE so the loss keeps the plain MSE's magnitude (the
learning rate and gradient clipping mean the same). Why: the held-out score and the acceptance
are the *mean PSNR gain* per image, and a relative MSE change is a PSNR change
(Δ10 log10 MSE ≈ 4.34 ΔMSE/MSE); under the plain MSE, patches with large residuals (JPEG and
low rates) dominate the gradient and HEIC/AVIF at good rates, where the post-filter's gain is
smallest, hardly count.

`loss_weighting="relative-start"` applies that weighting only to the patches at λ_start (the
0-step post-filter, which decides the BD-rate) and keeps the plain MSE (weight 1) at the sampling
λ's. The relative weights b̄/(b_i + floor) average ≥ 1 (Jensen), so the λ_start patches take a
larger share of the loss than `p_start`, varying from batch to batch — an emphasis on the 0-step
output the sixth model was trained with; renormalising them to mean 1 over the start patches
would keep the share at `p_start` (not measured). Why:
the fifth model, relatively weighted everywhere, gained +0.10 dB at 0 steps but its 20-step
samples lost realism (design §4b): the weighting also moved the denoiser at the λ's the sampler
walks through, where the plain MSE is the loss whose optimum is the posterior mean a sampler
needs.

Everything else — optimiser, EMA, checkpoints that resume exactly, loss.csv / eval.csv, best
EMA export, time limits — is the shared `Trainer` (train/loop.py); this module only changes
the data (base-codec pairs), the loss and the held-out measurement (PSNR gain of the 0-step
output over the base codec on fixed held-out photos).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..codecs.learned import DIRAC_BASES
from ..diffusion.vp import alpha_sigma
from ..image_io import psnr
from ..models.residual import ResidualDenoiser, ResidualSpec, default_unet_config, preconditioned, save_residual
from ..models.unet import UNetConfig
from .loop import TrainConfig, Trainer
from .pairs import DEFAULT_CDC_MODEL, BasePairs, heldout_pairs, load_cdc


@dataclass
class ResidualTrainConfig(TrainConfig):
    run_dir: str = "runs/dirac"
    patch_size: int = 128
    batch_size: int = 8
    scales: tuple[float, ...] = (0.5, 1.0)
    cache_dir: str = "data/dirac_pairs"
    per_codec: int = 4  # qualities per photo, scale and codec
    p_start: float = 0.4  # share of the batch at λ_start (the 0-step post-filter)
    residual_scale: float = 10.0
    sigma_data: float = 0.5
    logsnr_min: float = -6.0  # = the model's λ_start
    logsnr_max: float = 10.0  # = its λ_end
    workers: int = 1  # processes encoding the pair cache
    codecs: tuple[str, ...] = DIRAC_BASES  # the base codecs trained on (the model's labels are DIRAC_BASES)
    cdc_model: str = DEFAULT_CDC_MODEL  # registry name of the CDC model behind the cdc base
    bf16: bool = True  # autocast the forward/backward to bfloat16 (AMX/AVX512-BF16: 1.5x faster, measured)
    # "mse": plain MSE; "relative": each patch's MSE over its base codec's; "relative-start": that
    # at λ_start only (module docstring)
    loss_weighting: str = "mse"

    def __post_init__(self):
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, "
                             f"got {self.loss_weighting!r}")


LOSS_WEIGHTINGS = ("mse", "relative", "relative-start")
# Floor of the per-patch base MSE in relative weighting, in [-1, 1] image units: an 8-bit MSE of
# 0.5 (≈ 51 dB), so a patch the base codec left almost exact cannot take the whole batch's weight.
RELATIVE_MSE_FLOOR = 0.5 * (2.0 / 255.0) ** 2


def patch_loss_weights(x: torch.Tensor, x_base: torch.Tensor, weighting: str,
                       at_start: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch weights (n,) of the squared error: ones for "mse"; for "relative"
    mean(b) / (b_i + floor), b_i the base codec's MSE on patch i (no gradient); for
    "relative-start" those weights where `at_start` (bool, (n,): the patch sits at λ_start) and
    ones elsewhere."""
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {weighting!r}")
    n = x.shape[0]
    if weighting == "mse":
        return torch.ones(n)
    b = (x - x_base).detach().float().pow(2).reshape(n, -1).mean(1)
    relative = b.mean() / (b + RELATIVE_MSE_FLOOR)
    if weighting == "relative":
        return relative
    if at_start is None or at_start.shape != (n,):
        raise ValueError("relative-start weighting needs at_start, one bool per patch")
    return torch.where(at_start, relative, torch.ones(n))


def _to_uint8(x: torch.Tensor):
    """[-1, 1] → the 8-bit pixels a decoder would write (PSNR is measured on those)."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


class ResidualTrainer(Trainer):
    EVAL_FIELDS = ("neg_gain_db", "psnr_base", "psnr_dirac", "mse")
    SCORE, SCORE_UNIT = "neg_gain_db", "dB (minus the PSNR gain at 0 steps)"
    LOSS_FIELD = "loss_mse_x1e4"

    def __init__(self, cfg: ResidualTrainConfig, model_config: UNetConfig | None = None, dataset=None):
        if dataset is None:
            dataset = BasePairs(cfg.data, cfg.cache_dir, patch_size=cfg.patch_size, scales=cfg.scales,
                                per_codec=cfg.per_codec, codecs=tuple(cfg.codecs), seed=cfg.seed,
                                workers=cfg.workers, cdc_model=cfg.cdc_model)
        super().__init__(cfg, model_config or default_unet_config(), dataset)
        cdc = {}
        if "cdc" in cfg.codecs:
            m = load_cdc(cfg.cdc_model)
            cdc = {"cdc_model": m.name, "cdc_hash": f"{int(m.content_hash):016x}"}
        self.spec = ResidualSpec(residual_scale=cfg.residual_scale, sigma_data=cfg.sigma_data,
                                 logsnr_start=cfg.logsnr_min,
                                 logsnr_end=cfg.logsnr_max, **cdc)
        ResidualDenoiser(self.net, self.spec)  # validates the config against the spec

    def data_summary(self) -> str:
        return f"{len(self.data)} (photo, scale, codec, quality) pairs, {self.cfg.patch_size}px patches"

    def sample_logsnr(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """λ for n patches, and which of them sit exactly at λ_start (the 0-step point)."""
        cfg = self.cfg
        u = torch.rand(n, generator=self.gen, dtype=torch.float64)
        lam = cfg.logsnr_min + (cfg.logsnr_max - cfg.logsnr_min) * u
        at_start = torch.rand(n, generator=self.gen, dtype=torch.float64) < cfg.p_start
        return torch.where(at_start, torch.full_like(lam, cfg.logsnr_min), lam).to(torch.float32), at_start

    def train_step(self) -> dict:
        cfg = self.cfg
        self.net.train()
        x, xb, label, scalars = self.data.sample(cfg.batch_size, self.gen)
        k = cfg.residual_scale
        r = k * (x - xb)
        lam, at_start = self.sample_logsnr(cfg.batch_size)
        a, s = (t[:, None, None, None] for t in alpha_sigma(lam))
        noise = torch.randn(r.shape, generator=self.gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = preconditioned(self.train_net, a * r + s * noise, lam, xb, label, scalars, cfg.sigma_data)
        w = patch_loss_weights(x, xb, cfg.loss_weighting, at_start=at_start)
        loss = ((out.float() - r).pow(2).flatten(1).mean(1) * w).mean() / k**2
        return {"loss": loss.item() * 1e4, **self.optimize(loss)}

    def heldout_patches(self):
        if self._heldout is None and self.cfg.heldout:
            self._heldout = heldout_pairs(self.cfg.heldout, self.cfg.cache_dir, codecs=tuple(self.cfg.codecs),
                                          labels=self.spec.labels, cdc_model=self.cfg.cdc_model)
        return self._heldout

    @torch.no_grad()
    def evaluate(self, model=None) -> dict | None:
        """Mean PSNR of the base codec and of the 0-step output over the held-out pairs."""
        pairs = self.heldout_patches()
        if not pairs:
            return None
        net = (model or self.ema.model).eval()
        k = self.cfg.residual_scale
        gen = torch.Generator().manual_seed(1234)
        pb, pd, mse = [], [], []
        for x, xb, label, scalars, _ in pairs:
            lam = torch.full((1,), self.cfg.logsnr_min)
            z = torch.randn(xb.shape, generator=gen)  # z at λ_start ≈ pure noise, as the decoder starts
            r_hat = preconditioned(net, z, lam, xb, label, scalars, self.cfg.sigma_data)
            x_hat = (xb + r_hat / k).clamp(-1, 1)
            pb.append(psnr(_to_uint8(xb), _to_uint8(x)))
            pd.append(psnr(_to_uint8(x_hat), _to_uint8(x)))
            mse.append(float((x_hat - x).pow(2).mean()))
        n = len(pairs)
        gain = sum(pd) / n - sum(pb) / n
        return {"neg_gain_db": -gain, "psnr_base": sum(pb) / n, "psnr_dirac": sum(pd) / n, "mse": sum(mse) / n}

    def export(self, path, extra: dict | None = None) -> None:
        info = {"trained_steps": self.step, "trained_minutes": round(self.elapsed / 60, 1), **(extra or {})}
        save_residual(self.ema.model, self.spec, path, {"training": info})

    def init_weights(self, path) -> None:
        """Warm start from a DIRAC model file. A model trained on fewer base codecs (its labels a
        prefix of this run's, e.g. before the learned cdc base) is extended: its label embeddings
        are kept and each new label starts at their mean, the codec-average conditioning."""
        old = ResidualDenoiser.load(path)
        net, labels = old.net, tuple(old.spec.labels)
        sd = {k: v.contiguous() for k, v in net.state_dict().items()}
        mine = self.net.config.to_dict()
        if labels != tuple(self.spec.labels):
            if tuple(self.spec.labels[: len(labels)]) != labels:
                raise ValueError(f"{path}: its base codecs {labels} are not a prefix of this run's {self.spec.labels}")
            if {**net.config.to_dict(), "num_labels": mine["num_labels"]} != mine:
                raise ValueError(f"{path}: model config differs from this run's")
            emb = sd["label_embed.weight"]
            extra = emb.mean(0, keepdim=True).expand(len(self.spec.labels) - len(labels), -1)
            sd["label_embed.weight"] = torch.cat([emb, extra]).contiguous()
        elif net.config.to_dict() != mine:
            raise ValueError(f"{path}: model config differs from this run's")
        self.net.load_state_dict(sd)
        self.ema.model.load_state_dict(sd)
        self.ema.warm = True  # trained weights: no EMA warm-up (train/loop.py EMA)
