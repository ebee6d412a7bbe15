"""DIRAC's residual model: a conditional UNet that predicts the base codec's residual (docs/design.md §4b).

The diffused variable is the scaled residual r = K (x − x_base), K = `residual_scale`, so that
its spread (≈ 0.01–0.1 in [-1, 1] image units) is of order one and the usual log-SNR range
applies: z_λ = α r + σ ε. The UNet is x-parameterised (its output is r̂ = E[r | z_λ, ...]) and
conditioned on x_base (concatenated to z), on the base codec (a label: a classical codec or
CDC's mean decoder) and on the base rate
(log2 bpp, and the JPEG quality / 100 or −1). At λ_start z is practically pure noise, so the
first prediction is the MMSE estimate of the residual from the base reconstruction alone —
DIRAC's maximum-fidelity output.

The network is preconditioned (Karras et al. 2022, "EDM"): with u = z/α (the noisy residual
in variance-exploding form, noise level s = σ/α) it computes
    r̂ = c_skip(s) u + c_out(s) F(c_in(s) u, λ, ...),  c_skip = d²/(s² + d²),
    c_out = s d / √(s² + d²),  c_in = 1/√(s² + d²),  d = `sigma_data`,
so F's input and target have unit scale at every λ: at λ_start F alone predicts the residual
from the base image (z is pure noise there and weighs ≈ 0), at high λ r̂ ≈ u and F only
corrects it. Measured: without it (a plain x-output UNet) the 0-step output was still 0.1 dB
*worse* than the base codec after 5,000 steps — the net has to learn a 1/α gain spanning 1…20
and leaks noise at λ_start.

The model file is a UNet weight file whose config has class "dirac" plus the residual scale,
the preconditioning, the label order and the λ range it was trained on; `fastdiffc.load_model`
loads it by name.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from ..codecs.learned import DIRAC_BASES
from ..codecs.plain import BASE_CODECS, rate_features
from ..diffusion.denoiser import Conditioning
from .unet import UNet, UNetConfig, read_config

MODEL_CLASS = "dirac"


@dataclasses.dataclass(frozen=True)
class ResidualSpec:
    """What the residual model was trained for, stored in its file beside the UNet config."""

    residual_scale: float = 10.0
    sigma_data: float = 0.5  # typical std of the scaled residual (EDM preconditioning)
    logsnr_start: float = -6.0  # the decode schedule's start (z ≈ pure noise)
    logsnr_end: float = 10.0  # its clean end
    labels: tuple[str, ...] = DIRAC_BASES  # a file without labels predates learned bases: BASE_CODECS
    # Rate-dependent shrinkage of the 0-step output (x̂ = x_base + γ r̂ / K): rows (codec, upper
    # edge of log2 bpp, γ), fitted by least squares on the held-out photos (scripts/fit_dirac_gain.py).
    # γ < 1 where the model's residual estimate is noisy (high rates, smooth codecs), γ = 1 elsewhere.
    output_gain: tuple[tuple[str, float, float], ...] = ()
    # The CDC model behind the learned cdc base during training (registry name, 16 hex digits of
    # its content hash): DIRAC encodes with that one by default, since the residual it learned is
    # that model's. Empty when the model was not trained on the cdc base.
    cdc_model: str = ""
    cdc_hash: str = ""
    # Sampling bound β (0: off): each step's residual prediction r̂_k stays within r̂_0 ± β·ρ,
    # ρ the local RMS (a `sample_bound_window`² box, over channels) of the 0-step MMSE estimate
    # r̂_0. Where the base codec removed little (smooth sky at high rates) r̂_0 is small and the
    # sample must stay close to it; an undertrained model otherwise paints noise there (held-out
    # photos, AVIF q = 50, 20 steps: realism 5.5× worse than AVIF itself without the bound).
    sample_bound: float = 0.0
    sample_bound_window: int = 9
    # Self-ensemble of the 0-step estimate (`dihedral_mean`): the first prediction averaged over
    # this many orientations of (z, x_base) — flips, then transposes — each mapped back. An MMSE
    # estimator of a rotation- and flip-invariant image distribution is equivariant, a small
    # trained one only approximately; averaging removes part of its error (held-out photos, AVIF
    # and HEIC at 0.12–0.3 bpp: +0.01…+0.10 dB, design §4b). Only the 0-step output uses it: the
    # sampler continues from (and is bounded around) the plain first prediction, since the
    # averaged one is smoother. 1 = off (every model before it).
    ensemble: int = 1

    def __post_init__(self):
        check_ensemble_size(self.ensemble)
        if not (self.sample_bound >= 0 and self.sample_bound < float("inf")):
            raise ValueError(f"sample_bound must be a finite number >= 0, got {self.sample_bound}")
        if not (isinstance(self.sample_bound_window, int) and 1 <= self.sample_bound_window <= 63
                and self.sample_bound_window % 2):
            raise ValueError(f"sample_bound_window must be an odd integer in 1..63, got {self.sample_bound_window}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["output_gain"] = [list(row) for row in self.output_gain]
        return d

    def gain(self, codec: str, bpp: float) -> float:
        """γ for a base file of `codec` at `bpp` (1 when the table has no row for it)."""
        import math

        lb = math.log2(max(bpp, 2.0**-8))
        rows = sorted((edge, g) for c, edge, g in self.output_gain if c == codec)
        for edge, g in rows:
            if lb <= edge:
                return float(g)
        return float(rows[-1][1]) if rows else 1.0


ENSEMBLE_SIZES = (1, 2, 4, 8)


def check_ensemble_size(n) -> None:
    # an int, not a float or bool that compares equal to one (2.0 would not slice the orientations)
    if not (isinstance(n, int) and not isinstance(n, bool) and n in ENSEMBLE_SIZES):
        raise ValueError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {n!r}")


# The dihedral group's elements other than the identity, on the last two axes, as (forward,
# inverse), in the order the ensemble takes them: the flips, then the transposes.
_TURNS = (
    (lambda t: t.flip(-1), lambda t: t.flip(-1)),
    (lambda t: t.flip(-2), lambda t: t.flip(-2)),
    (lambda t: t.flip(-2, -1), lambda t: t.flip(-2, -1)),
    (lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1)),
    (lambda t: t.transpose(-2, -1).flip(-1), lambda t: t.flip(-1).transpose(-2, -1)),
    (lambda t: t.transpose(-2, -1).flip(-2), lambda t: t.flip(-2).transpose(-2, -1)),
    (lambda t: t.transpose(-2, -1).flip(-2, -1), lambda t: t.flip(-2, -1).transpose(-2, -1)),
)


def dihedral_predictions(denoiser, z: torch.Tensor, logsnr, cond: Conditioning, n: int) -> list[torch.Tensor]:
    """g⁻¹(denoiser(g z, λ, cond with g x_base)) for the first `n` orientations g, the first being
    the identity — the plain call. The noise z turns with the image, so each call sees the same
    (z, x_base) pair, only oriented differently."""
    check_ensemble_size(n)
    predictions = [denoiser(z, logsnr, cond)]
    for forward, inverse in _TURNS[:n - 1]:
        turned = dataclasses.replace(cond, image=forward(cond.image))
        predictions.append(inverse(denoiser(forward(z), logsnr, turned)))
    return predictions


def ensemble_mean(predictions: list[torch.Tensor]) -> torch.Tensor:
    """Their mean, summed in order (one prediction is returned as it is)."""
    if len(predictions) == 1:
        return predictions[0]
    return sum(predictions[1:], predictions[0]) / len(predictions)


def dihedral_mean(denoiser, z: torch.Tensor, logsnr, cond: Conditioning, n: int) -> torch.Tensor:
    """The self-ensemble of a residual prediction over `n` orientations (n = 1: the plain call)."""
    return ensemble_mean(dihedral_predictions(denoiser, z, logsnr, cond, n))


def default_unet_config() -> UNetConfig:
    return UNetConfig(cond_channels=3, num_labels=len(DIRAC_BASES), scalar_features=2, prediction="x")


def preconditioned(net, z: torch.Tensor, lam: torch.Tensor, image, label, scalars, sigma_data: float) -> torch.Tensor:
    """r̂ = c_skip u + c_out F(c_in u, λ, ...), u = z/α (see the module docstring); λ is [N]."""
    lam64 = lam.to(torch.float64)
    a2 = torch.sigmoid(lam64)
    s2 = torch.exp(-lam64)  # (σ/α)² = e^{-λ}
    d2 = sigma_data**2
    shape = (-1, 1, 1, 1)
    inv_a = a2.rsqrt().to(torch.float32).reshape(shape)
    c_skip = (d2 / (s2 + d2)).to(torch.float32).reshape(shape)
    c_out = (s2.sqrt() * sigma_data / (s2 + d2).sqrt()).to(torch.float32).reshape(shape)
    c_in = (s2 + d2).rsqrt().to(torch.float32).reshape(shape)
    u = z.float() * inv_a
    f = net(c_in * u, lam.to(torch.float32), image, label, scalars)
    return c_skip * u + c_out * f.float()


class ResidualDenoiser(nn.Module):
    """`denoiser(z, logsnr, cond: Conditioning) -> r̂` (scaled residual), plus the conditioning helper."""

    kind = MODEL_CLASS

    def __init__(self, net: UNet, spec: ResidualSpec | None = None, name: str = "dirac",
                 content_hash: int | None = None):
        super().__init__()
        cfg = net.config
        if cfg.prediction != "x" or cfg.cond_channels != 3 or cfg.scalar_features != 2:
            raise ValueError("a DIRAC residual UNet is x-parameterised with cond_channels=3 and scalar_features=2")
        self.net = net
        self.spec = spec or ResidualSpec()
        if cfg.num_labels != len(self.spec.labels):
            raise ValueError(f"UNet has {cfg.num_labels} labels, the spec names {len(self.spec.labels)}")
        self.name = name
        self.content_hash = content_hash
        self.channels_last = False

    @property
    def config(self) -> UNetConfig:
        return self.net.config

    def check_base(self, codec: str) -> None:
        """ValueError unless this model was trained on base codec `codec` (one of its labels)."""
        if codec not in self.spec.labels:
            raise ValueError(f"DIRAC model {self.name!r} was trained on base codecs {', '.join(self.spec.labels)}, "
                             f"not {codec}")

    def conditioning(self, x_base: torch.Tensor, codec: str, bpp: float, quality: int | None) -> Conditioning:
        """Conditioning for a batch of one base reconstruction (x_base [1, 3, H, W] in [-1, 1])."""
        self.check_base(codec)
        n = x_base.shape[0]
        label = torch.full((n,), self.spec.labels.index(codec), dtype=torch.long)
        scalars = torch.tensor([rate_features(codec, bpp, quality)] * n, dtype=torch.float32)
        return Conditioning(image=x_base, label=label, scalars=scalars)

    def forward(self, z, logsnr, cond: Conditioning):
        if not isinstance(cond, Conditioning):
            raise TypeError("the DIRAC residual model needs a Conditioning (base image, codec label, rate)")
        lam = torch.as_tensor(logsnr, dtype=torch.float32)
        if lam.ndim == 0:
            lam = lam.expand(z.shape[0])
        image = cond.image
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
            image = image.contiguous(memory_format=torch.channels_last)
        return preconditioned(self.net, z, lam, image, cond.label, cond.scalars, self.spec.sigma_data)

    def use_channels_last(self, on: bool = True) -> ResidualDenoiser:
        self.channels_last = on
        self.net.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        return self

    def save(self, path, extra_metadata: dict | None = None) -> None:
        save_residual(self.net, self.spec, path, extra_metadata)

    @classmethod
    def load(cls, path, name: str | None = None) -> ResidualDenoiser:
        from safetensors.torch import load_file

        from .hashing import content_hash

        meta = read_config(path)
        if meta.get("class") != MODEL_CLASS:
            raise ValueError(f"{path}: model class {meta.get('class')!r} is not {MODEL_CLASS!r}")
        unet_fields = {f.name for f in dataclasses.fields(UNetConfig)}
        spec_fields = {f.name for f in dataclasses.fields(ResidualSpec)}
        net = UNet(UNetConfig.from_dict({k: v for k, v in meta.items() if k in unet_fields}))
        net.load_state_dict(load_file(str(path)))
        spec_args = {k: v for k, v in meta.items() if k in spec_fields}
        spec_args["labels"] = tuple(spec_args.get("labels", BASE_CODECS))
        spec_args["output_gain"] = tuple((str(c), float(e), float(g)) for c, e, g in spec_args.get("output_gain", ()))
        model = cls(net.eval(), ResidualSpec(**spec_args), name=name or Path(path).stem,
                    content_hash=content_hash(path))
        model = model.eval().requires_grad_(False).use_channels_last()
        if os.environ.get("FASTDIFFC_TORCH_COMPILE") == "1":
            model.net = torch.compile(model.net)
        return model


def save_residual(net: UNet, spec: ResidualSpec, path, extra_metadata: dict | None = None,
                  state_dict: dict | None = None) -> None:
    from .unet import save_unet

    save_unet(net, path, {"class": MODEL_CLASS, **spec.to_dict(), **(extra_metadata or {})}, state_dict=state_dict)


__all__ = ["ENSEMBLE_SIZES", "ResidualDenoiser", "ResidualSpec", "check_ensemble_size", "default_unet_config",
           "dihedral_mean", "dihedral_predictions", "ensemble_mean", "preconditioned", "save_residual",
           "MODEL_CLASS"]
