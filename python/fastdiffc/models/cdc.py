"""CDC's transforms, hyperprior and conditional diffusion decoder (Yang & Mandt 2023; docs/design.md §4c).

    x ──g_a──▶ y₀ ──×gain[level]──▶ y ──h_a──▶ z ──round──▶ ẑ  (factorised prior, per-channel tables)
                                        ẑ ──h_s (integer)──▶ (μ, t) ; table index k = round(t)
                                        ŷ = μ + round(y − μ)          (Gaussian conditional, table k)
    ŷ ──÷gain'[level]──▶ g_s ──▶ x̄                                   (the mean decoder: 0 decode steps)
    (x̄, upsampled features of ŷ) ──▶ conditional UNet, x-parameterised on r = K (x − x̄)  (DDIM steps)

Sizes (defaults): g_a/g_s are 4 stride-2 5×5 (transposed) convolutions with GDN / inverse GDN
and 64 channels, y has 96 channels at 1/16 resolution; h_a/h_s work at 1/64 with 32 hyper
channels. The encoder pads the image to a multiple of 64 (edge replicate); the decoder crops.

Variable rate: one model, `levels` λ values, per-level gain vectors on y and inverse gains
before g_s (Cui et al. 2021, "asymmetric gained VAE"): a level costs 2·96 numbers instead of a
model, every level shares the transforms and the diffusion decoder, and training one model
covers the whole rate range in the CPU budget that several models would split.

Determinism (§4c.3): the decoder's table indices and means come from `hyper_synthesis_int`,
which runs h_s in fixed point: weights quantised to round(w · 2^12), activations in units
2^-8, int64 convolutions (exact, so any summation order, thread count or ISA gives the same
integers), rescaling by floor division, ReLU, nearest upsampling. Its outputs are μ in units
2^-8 (so ŷ = q + μ is exact) and t in units 2^-8 (index = ⌊t + ½⌋ clamped). The quantised
weights are buffers saved in the model file, so the file's content hash pins them. The
float h_s is used only in training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..entropy_models import NUM_SCALES, FactorizedPrior, GaussianConditional, lower_bound
from .unet import CONFIG_KEY, UNet, UNetConfig

MODEL_CLASS = "cdc"
STRIDE = 64  # g_a (16) × h_a (4): the image is padded to a multiple of this
LATENT_STRIDE = 16
# CompressAI's MSE λ's for loss = bpp + λ·255²·MSE (images in [0, 1]).
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)
ACT_LIMIT = 1 << 24  # |fixed-point activation| bound (units 2^-frac_bits_a): 65536 in real units
WEIGHT_LIMIT = 1 << 20  # |fixed-point weight| bound (units 2^-frac_bits_w)


def default_unet_config(cond_features: int = 5) -> dict:
    return UNetConfig(cond_channels=3 + cond_features, prediction="x").to_dict()


@dataclass
class CDCConfig:
    channels: int = 64  # g_a / g_s width
    latent_channels: int = 96  # y
    hyper_channels: int = 32  # z
    hyper_hidden: int = 64  # h_s width
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS  # one rate level per λ, increasing
    cond_features: int = 5  # learned features of ŷ upsampled to image size for the UNet
    residual_scale: float = 4.0  # the UNet sees r = K (x − x̄)
    logsnr_start: float = -6.0
    logsnr_end: float = 10.0
    frac_bits_w: int = 12
    frac_bits_a: int = 8
    unet: dict = field(default_factory=default_unet_config)

    def __post_init__(self):
        self.lambdas = tuple(float(v) for v in self.lambdas)
        if not self.lambdas or any(b <= a for a, b in zip(self.lambdas, self.lambdas[1:])):
            raise ValueError("lambdas must be a non-empty increasing sequence")
        cfg = UNetConfig.from_dict(dict(self.unet))
        if cfg.prediction != "x" or cfg.cond_channels != 3 + self.cond_features or cfg.in_channels != 3:
            raise ValueError("CDC's UNet is x-parameterised with in_channels 3 and cond_channels 3 + cond_features")
        self.unet = cfg.to_dict()

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lambdas"] = list(self.lambdas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CDCConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CDC config keys: {sorted(unknown)}")
        return cls(**d)


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé et al.): y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²);
    inverse=True multiplies instead (IGDN). β, γ kept non-negative by a lower bound."""

    def __init__(self, ch: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1 * torch.eye(ch))

    def forward(self, x):
        beta = lower_bound(self.beta, 1e-6)
        gamma = lower_bound(self.gamma, 0.0)
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta).sqrt()
        return x * norm if self.inverse else x / norm


def _down(cin, cout, k=5):
    return nn.Conv2d(cin, cout, k, stride=2, padding=k // 2)


def _up(cin, cout, k=5):
    return nn.ConvTranspose2d(cin, cout, k, stride=2, padding=k // 2, output_padding=1)


class HyperSynthesis(nn.Module):
    """h_s: ẑ → (μ, t) at y's resolution. conv3 → ReLU → up2 → conv3 → ReLU → up2 → conv3.

    `forward` is the float path (training); `forward_int` the fixed-point one (coding), from
    the buffers `freeze()` fills."""

    def __init__(self, cz: int, hidden: int, cy: int, frac_w: int, frac_a: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(cz, hidden, 3, padding=1), nn.Conv2d(hidden, hidden, 3, padding=1),
                                    nn.Conv2d(hidden, 2 * cy, 3, padding=1)])
        self.frac_w, self.frac_a = frac_w, frac_a
        for i, c in enumerate(self.convs):
            self.register_buffer(f"int_weight{i}", torch.zeros(c.weight.shape, dtype=torch.int32))
            self.register_buffer(f"int_bias{i}", torch.zeros(c.out_channels, dtype=torch.int64))

    def forward(self, zhat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = zhat
        for i, c in enumerate(self.convs):
            if i:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = c(h)
            if i < len(self.convs) - 1:
                h = F.relu(h)
        mean, t = h.chunk(2, dim=1)
        return mean, t

    @torch.no_grad()
    def freeze(self) -> None:
        fw, fa = self.frac_w, self.frac_a
        for i, c in enumerate(self.convs):
            w = torch.round(c.weight.double() * (1 << fw)).clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT)
            b = torch.round(c.bias.double() * (1 << (fw + fa))).clamp(-(1 << 50), 1 << 50)
            setattr(self, f"int_weight{i}", w.to(torch.int32))
            setattr(self, f"int_bias{i}", b.to(torch.int64))

    @property
    def frozen(self) -> bool:
        return bool(self.int_weight0.abs().sum() > 0)

    def forward_int(self, zhat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-point h_s on integer ẑ [N, Cz, h, w] → (μ, t) int64 in units 2^-frac_bits_a.

        Every intermediate is an exact int64: |acc| <= 9·hidden·2^20·2^24 < 2^53."""
        fw, fa = self.frac_w, self.frac_a
        a = zhat.to(torch.int64).clamp(-ACT_LIMIT >> fa, ACT_LIMIT >> fa) * (1 << fa)
        n = len(self.convs)
        for i in range(n):
            if i:
                a = a.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            w = getattr(self, f"int_weight{i}").to(torch.int64)
            acc = F.conv2d(a, w, padding=1) + getattr(self, f"int_bias{i}")[None, :, None, None]
            a = torch.div(acc + (1 << (fw - 1)), 1 << fw, rounding_mode="floor")
            a = a.clamp(0 if i < n - 1 else -ACT_LIMIT, ACT_LIMIT)
        mean, t = a.chunk(2, dim=1)
        return mean.contiguous(), t.contiguous()


class CDCModel(nn.Module):
    """All of CDC in one module (one weight file, one content hash). See the module docstring."""

    kind = MODEL_CLASS

    def __init__(self, config: CDCConfig | None = None, name: str = "cdc", content_hash: int | None = None):
        super().__init__()
        cfg = config or CDCConfig()
        self.config = cfg
        n, m, cz, hh = cfg.channels, cfg.latent_channels, cfg.hyper_channels, cfg.hyper_hidden
        self.g_a = nn.Sequential(_down(3, n), GDN(n), _down(n, n), GDN(n), _down(n, n), GDN(n), _down(n, m))
        self.g_s = nn.Sequential(_up(m, n), GDN(n, True), _up(n, n), GDN(n, True), _up(n, n), GDN(n, True),
                                 _up(n, 3))
        self.h_a = nn.Sequential(nn.Conv2d(m, hh, 3, padding=1), nn.ReLU(), _down(hh, hh), nn.ReLU(), _down(hh, cz))
        self.h_s = HyperSynthesis(cz, hh, m, cfg.frac_bits_w, cfg.frac_bits_a)
        lam = torch.tensor(cfg.lambdas, dtype=torch.float32)
        init = 0.5 * torch.log(lam / lam[-1])[:, None].expand(-1, m)  # finer quantisation at higher λ
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())
        self.prior_z = FactorizedPrior(cz)
        self.gaussian = GaussianConditional()
        self.cond_proj = nn.Conv2d(m, cfg.cond_features, 1)
        self.unet = UNet(UNetConfig.from_dict(cfg.unet))
        self.name = name
        self.content_hash = content_hash
        self.channels_last = False

    def use_channels_last(self, on: bool = True) -> CDCModel:
        """NHWC for the UNet (loaded models use it, as DIRAC's: faster CPU convolutions)."""
        self.channels_last = on
        self.unet.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        return self

    # ------------------------------------------------------------------ shapes
    @staticmethod
    def padded_size(h: int, w: int) -> tuple[int, int]:
        return -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE

    @staticmethod
    def latent_shapes(h: int, w: int, cfg: CDCConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """([Cz, h/64, w/64], [M, h/16, w/16]) for an image of h × w (after padding)."""
        ph, pw = CDCModel.padded_size(h, w)
        return ((cfg.hyper_channels, ph // STRIDE, pw // STRIDE),
                (cfg.latent_channels, ph // LATENT_STRIDE, pw // LATENT_STRIDE))

    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        ph, pw = CDCModel.padded_size(x.shape[-2], x.shape[-1])
        if (ph, pw) == tuple(x.shape[-2:]):
            return x
        return F.pad(x, (0, pw - x.shape[-1], 0, ph - x.shape[-2]), mode="replicate")

    # ------------------------------------------------------------------ pieces
    def gain(self, level) -> torch.Tensor:
        return torch.exp(self.log_gain[level])[..., None, None]

    def inv_gain(self, level) -> torch.Tensor:
        return torch.exp(self.log_inv_gain[level])[..., None, None]

    def analysis(self, x: torch.Tensor, level) -> torch.Tensor:
        """y (gained) for a padded image batch; `level` an int or a [N] long tensor."""
        return self.g_a(x) * self.gain(level)

    def mean_decode(self, y_hat: torch.Tensor, level) -> torch.Tensor:
        """x̄ = g_s(ŷ / gain'): the deterministic mean decoder (padded size, unclamped)."""
        return self.g_s(y_hat * self.inv_gain(level))

    def cond_image(self, y_hat: torch.Tensor, level, x_bar: torch.Tensor) -> torch.Tensor:
        feats = self.cond_proj(y_hat * self.inv_gain(level))
        feats = F.interpolate(feats, size=x_bar.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x_bar, feats], dim=1)

    def denoise(self, z: torch.Tensor, logsnr, cond_image: torch.Tensor) -> torch.Tensor:
        """x̂ = x̄ + r̂ / K from the x-parameterised UNet (cond_image's first 3 channels are x̄)."""
        lam = torch.as_tensor(logsnr, dtype=torch.float32)
        if lam.ndim == 0:
            lam = lam.expand(z.shape[0])
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
            cond_image = cond_image.contiguous(memory_format=torch.channels_last)
        r_hat = self.unet(z, lam, cond_image)
        return cond_image[:, :3] + r_hat.float() / self.config.residual_scale

    # ------------------------------------------------------------------ training forward
    def forward_rd(self, x: torch.Tensor, level: torch.Tensor, noise: bool = True) -> dict:
        """Training pass (noisy likelihoods, straight-through rounding): x̄ and the rate per image
        in bits (y and z), for a padded batch x [N, 3, H, W] and per-image levels [N].
        noise=False: the likelihoods of the rounded latents (what coding spends, up to the tables)."""
        y = self.analysis(x, level)
        z = self.h_a(y)
        z_hat = z + (torch.round(z) - z).detach()
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5) if noise else z_hat
        mean, t = self.h_s(z_hat)
        scale = self.gaussian.scale_from_t(t)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5) if noise else mean + torch.round(y - mean)
        log_lik_y = self.gaussian.log_likelihood(y_noisy, mean, scale)
        lik_z = self.prior_z.likelihood(z_noisy)
        y_hat = mean + (torch.round(y - mean) - (y - mean)).detach() + (y - mean)
        x_bar = self.mean_decode(y_hat, level)
        bits_y = -log_lik_y.flatten(1).sum(1) / math.log(2)
        bits_z = -torch.log2(lik_z).flatten(1).sum(1)
        return {"x_bar": x_bar, "bits_y": bits_y, "bits_z": bits_z, "y_hat": y_hat}

    # ------------------------------------------------------------------ coding support
    @torch.no_grad()
    def freeze(self) -> CDCModel:
        """Fill the integer parts coding uses: h_s's fixed-point weights and ẑ's tables."""
        self.h_s.freeze()
        self.prior_z.build_tables()
        return self

    @property
    def frozen(self) -> bool:
        return self.h_s.frozen and int(self.prior_z.table_len.min()) >= 2

    def compute_content_hash(self) -> int:
        """blake2b-64 of every tensor of the state dict (names, dtypes, shapes, bytes) and the config."""
        h = hashlib.blake2b(digest_size=8)
        h.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        return int.from_bytes(h.digest(), "little")

    # ------------------------------------------------------------------ I/O
    def load_state(self, state_dict: dict) -> None:
        """load_state_dict, first resizing the factorised prior's table buffer (its width is the
        widest table's, known only once the tables are built)."""
        key = "prior_z.table_freqs"
        if key in state_dict:
            self.prior_z.table_freqs = torch.zeros_like(state_dict[key])
        self.load_state_dict(state_dict)

    def save(self, path, extra_metadata: dict | None = None) -> None:
        """safetensors: every parameter and buffer (the integer coding tables too), config in metadata."""
        from safetensors.torch import save_file

        if not self.frozen:
            raise ValueError("freeze() the model before saving it: its integer coding tables are empty")
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        meta = {"class": MODEL_CLASS, "config": self.config.to_dict(), **(extra_metadata or {})}
        save_file(tensors, str(path), metadata={CONFIG_KEY: json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path, name: str | None = None) -> CDCModel:
        from safetensors import safe_open
        from safetensors.torch import load_file

        from .hashing import content_hash

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(CONFIG_KEY, "{}"))
        if meta.get("class") != MODEL_CLASS:
            raise ValueError(f"{path}: model class {meta.get('class')!r} is not {MODEL_CLASS!r}")
        model = cls(CDCConfig.from_dict(meta["config"]), name=name or Path(path).stem,
                    content_hash=content_hash(path))
        model.load_state(load_file(str(path)))
        if not model.frozen:
            raise ValueError(f"{path}: the CDC model file has no integer coding tables")
        return model.eval().requires_grad_(False).use_channels_last()


def level_lambda(cfg: CDCConfig, level: int) -> float:
    return cfg.lambdas[level]


__all__ = ["CDCConfig", "CDCModel", "HyperSynthesis", "GDN", "STRIDE", "LATENT_STRIDE", "NUM_SCALES",
           "DEFAULT_LAMBDAS", "MODEL_CLASS"]
