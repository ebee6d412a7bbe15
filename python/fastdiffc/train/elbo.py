"""The continuous-time VDM ELBO (Kingma et al. 2021) in log-SNR form, and bits/dim.

For data x (8-bit, scaled to [-1, 1]) and any Denoiser x̂0(z_λ, λ), the negative ELBO is

    −log p(x) ≤ KL(q(z_λmin|x) ‖ N(0, I))                          prior
              + ∫_{λmin}^{λmax} ½ e^λ E_ε‖x − x̂0(z_λ, λ)‖² dλ       diffusion
              + E[−log p(x | z_λmax)]                               8-bit decoder

The diffusion integrand is exactly the limit of DiffC's per-step rate
½ (SNR_to − SNR_from) ‖x − x̂0‖² (docs/design.md §3) divided by the step's Δλ, so a model
trained on it minimises DiffC's rate. One estimator, `elbo_bits_per_dim`, serves the
UNet and the analytic Gaussian denoiser alike (same patches, same λ, same noise).
"""

from __future__ import annotations

import math

import torch

from ..diffusion.vp import alpha2_sigma2, alpha_sigma

LN2 = math.log(2.0)
BIN = 2.0 / 255.0  # spacing of 8-bit values in [-1, 1]


def prior_kl(x: torch.Tensor, logsnr_min: float) -> torch.Tensor:
    """KL(N(α x, σ² I) ‖ N(0, I)) per sample, nats."""
    lam = torch.tensor(logsnr_min, dtype=torch.float64)
    a2, s2 = alpha2_sigma2(lam)
    x = x.double().flatten(1)
    return 0.5 * (a2 * x.pow(2) + s2 - 1.0 - torch.log(s2)).sum(1)


def decoder_nll(x: torch.Tensor, logsnr_max: float, noise: torch.Tensor) -> torch.Tensor:
    """−log p(x | z_λmax) per sample (nats) with VDM's discretised decoder:
    p(x = v_k | z) ∝ N(z/α; v_k, σ²/α²) over the 256 8-bit values v_k."""
    a, s = alpha_sigma(torch.tensor(logsnr_max, dtype=torch.float64))
    x = x.double()
    y = x + (s / a) * noise.double()  # z / α
    scale = float(s / a)
    k_true = torch.round((x + 1.0) / BIN)
    # The posterior over values is concentrated within a few std of y: sum a window.
    radius = min(255, int(math.ceil(12.0 * scale / BIN)) + 2)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = k_true.unsqueeze(-1) + offsets
    valid = (k >= 0) & (k <= 255)
    vals = k * BIN - 1.0
    logits = -0.5 * ((y.unsqueeze(-1) - vals) / scale).pow(2)
    logits = logits.masked_fill(~valid, -math.inf)
    true_logit = -0.5 * ((y - (k_true * BIN - 1.0)) / scale).pow(2)
    nll = torch.logsumexp(logits, dim=-1) - true_logit
    return nll.flatten(1).sum(1)


def diffusion_integrand(x: torch.Tensor, x_hat: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """½ e^λ ‖x − x̂0‖² per sample (nats per unit λ)."""
    sq = (x.double() - x_hat.double()).pow(2).flatten(1).sum(1)
    return 0.5 * torch.exp(logsnr.double()) * sq


@torch.inference_mode()
def elbo_bits_per_dim(
    denoiser,
    x: torch.Tensor,
    *,
    logsnr_min: float = -15.0,
    logsnr_max: float = 15.0,
    n_logsnr: int = 16,
    seed: int = 0,
    batch_size: int = 32,
    cond: torch.Tensor | None = None,
) -> dict:
    """Negative ELBO of 8-bit patches x ([N, C, H, W] in [-1, 1]) in bits per dimension.

    The λ integral uses stratified sampling: n_logsnr equal strata of [λmin, λmax], one
    jittered λ per stratum and patch, with noise drawn from `seed` — so two denoisers
    evaluated with the same arguments see identical λ and ε (common random numbers)."""
    if x.ndim != 4:
        raise ValueError("x must be [N, C, H, W]")
    if not logsnr_min < logsnr_max:
        raise ValueError("need logsnr_min < logsnr_max")
    n = x.shape[0]
    dims = x[0].numel()
    gen = torch.Generator().manual_seed(seed)
    width = (logsnr_max - logsnr_min) / n_logsnr
    diffusion = torch.zeros(n, dtype=torch.float64)
    for k in range(n_logsnr):
        jitter = torch.rand(n, generator=gen, dtype=torch.float64)
        lam = logsnr_min + (k + jitter) * width
        eps = torch.randn(x.shape, generator=gen, dtype=torch.float32)
        for i in range(0, n, batch_size):
            xb, eb, lb = x[i : i + batch_size], eps[i : i + batch_size], lam[i : i + batch_size]
            a, s = alpha_sigma(lb)
            z = (a[:, None, None, None] * xb.double() + s[:, None, None, None] * eb.double()).to(x.dtype)
            cb = cond[i : i + batch_size] if cond is not None else None
            x_hat = denoiser(z, lb.to(x.dtype), cb)
            diffusion[i : i + batch_size] += width * diffusion_integrand(xb, x_hat, lb)
    prior = prior_kl(x, logsnr_min)
    dec_noise = torch.randn(x.shape, generator=gen, dtype=torch.float32)
    decoder = decoder_nll(x, logsnr_max, dec_noise)
    to_bpd = 1.0 / (dims * LN2)
    parts = {
        "diffusion": float(diffusion.mean()) * to_bpd,
        "prior": float(prior.mean()) * to_bpd,
        "decoder": float(decoder.mean()) * to_bpd,
    }
    total = diffusion + prior + decoder
    return {
        "bpd": sum(parts.values()),
        **parts,
        "bpd_stderr": float(total.std() / math.sqrt(n)) * to_bpd if n > 1 else float("nan"),
        "per_patch_bpd": (total * to_bpd).tolist(),
        "n_patches": n,
        "n_logsnr": n_logsnr,
        "logsnr_min": logsnr_min,
        "logsnr_max": logsnr_max,
    }


class LogSNRSampler:
    """Importance sampling of λ for the ELBO's diffusion integral.

    The density over [λmin, λmax] is piecewise constant on `bins` bins, ∝ the square root
    of a running mean of the squared per-sample loss in each bin (the variance-optimal
    proposal, as in Nichol & Dhariwal 2021), mixed with `uniform_mix` of the uniform
    density. Batches are stratified in the proposal's CDF. `sample` returns λ and the
    weights 1/p(λ), so mean(loss · weight) is an unbiased estimate of ∫ loss dλ."""

    def __init__(self, logsnr_min: float, logsnr_max: float, bins: int = 32, uniform_mix: float = 0.25,
                 momentum: float = 0.98, warmup: int = 8):
        self.lo, self.hi, self.bins = float(logsnr_min), float(logsnr_max), int(bins)
        self.uniform_mix, self.momentum, self.warmup = uniform_mix, momentum, warmup
        self.mean_sq = torch.zeros(self.bins, dtype=torch.float64)
        self.count = torch.zeros(self.bins, dtype=torch.int64)

    def probs(self) -> torch.Tensor:
        uniform = torch.full((self.bins,), 1.0 / self.bins, dtype=torch.float64)
        if int(self.count.min()) < self.warmup:
            return uniform
        m = self.mean_sq.sqrt()
        return (1 - self.uniform_mix) * m / m.sum() + self.uniform_mix * uniform

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.probs()
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), p.cumsum(0)])
        cdf[-1] = 1.0
        u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n
        j = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, self.bins - 1)
        frac = ((u - cdf[j]) / p[j]).clamp(0.0, 1.0)
        width = (self.hi - self.lo) / self.bins
        lam = self.lo + (j.double() + frac) * width
        weight = width / p[j]  # 1 / density
        return lam, weight

    def update(self, logsnr: torch.Tensor, loss: torch.Tensor) -> None:
        width = (self.hi - self.lo) / self.bins
        j = ((logsnr.double() - self.lo) / width).floor().long().clamp(0, self.bins - 1)
        for b, val in zip(j.tolist(), loss.detach().double().pow(2).tolist()):
            if self.count[b] == 0:
                self.mean_sq[b] = val
            else:
                self.mean_sq[b] = self.momentum * self.mean_sq[b] + (1 - self.momentum) * val
            self.count[b] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean_sq": self.mean_sq.clone(), "count": self.count.clone()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        if sd["mean_sq"].shape != (self.bins,):
            raise ValueError("sampler state has a different number of bins")
        self.mean_sq = sd["mean_sq"].to(torch.float64).clone()
        self.count = sd["count"].to(torch.int64).clone()
