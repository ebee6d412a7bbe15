"""Rate–distortion theory of Gaussian data under the VP diffusion (docs/design.md §3, §4).

For x with independent components x_i ~ N(0, v_i) (a stationary Gaussian image in its
decorrelated DCT basis, or the power-law source of `experiments gaussian-rd`) and
z_λ = α x + σ ε, everything DiffC's theory needs is closed-form. This module is the one home
of these formulas; `models.gaussian.GaussianDenoiser` and `experiments.gaussian_rd` use it.

- Wiener gain of the posterior mean E[x | z_λ] = g · z: g = α v / (α² v + σ²) = SNR v / (1 + SNR v) / α;
- MMSE Σ v / (1 + SNR v) and I(X; Z_λ) = ½ Σ log(1 + SNR v) (nats);
- expected per-step KL E KL[q(z_t|z_s,x) ‖ q(z_t|z_s,x̂0)] = ½ (SNR_t − SNR_s) · MMSE(λ_s);
- reverse water-filling: D(R) and R(D), the Shannon bounds for these data.

Variances are float64 tensors of any shape (flattened); sums are over all their elements.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def wiener_gain(var: torch.Tensor, snr: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """g with E[x | z] = g · z for x ~ N(0, var), z = α x + σ ε: SNR v / (1 + SNR v) / α (stable for any λ)."""
    return (snr * var) / (1 + snr * var) / alpha


def mmse(var: torch.Tensor, logsnr: float) -> float:
    """E‖x − E[x|z_λ]‖² summed over the dimensions."""
    return float((var / (1 + math.exp(logsnr) * var)).sum())


def mutual_information(var: torch.Tensor, logsnr: float) -> float:
    """I(X; Z_λ) = ½ Σ log(1 + e^λ v) in nats."""
    return float(0.5 * torch.log1p(math.exp(logsnr) * var).sum())


def expected_step_kl(var: torch.Tensor, logsnr_from: float, logsnr_to: float) -> float:
    """E KL[q(z_t | z_s, x) ‖ q(z_t | z_s, x̂0(z_s))] = ½ (SNR_t − SNR_s) · mmse(λ_s), nats."""
    return 0.5 * (math.exp(logsnr_to) - math.exp(logsnr_from)) * mmse(var, logsnr_from)


def distortion_rate(var: torch.Tensor, bits_per_dim: float) -> float:
    """Shannon D(R) by reverse water-filling: the least mean squared error per dimension at
    `bits_per_dim` bits per dimension."""
    if bits_per_dim < 0:
        raise ValueError("rate must be >= 0")
    v = var.flatten().to(torch.float64)
    if bits_per_dim == 0:
        return float(v.mean())
    lv = torch.log(v)
    # rate(θ) = mean max(0, ½ log2(v/θ)) falls as θ grows; at θ = min v · 2^(−2R) it is >= R.
    lo, hi = float(lv.min()) - 2 * bits_per_dim * LN2 - 50, float(lv.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        rate = float(0.5 * (lv - mid).clamp(min=0).mean() / LN2)
        lo, hi = (mid, hi) if rate > bits_per_dim else (lo, mid)
    theta = math.exp(0.5 * (lo + hi))
    return float(v.clamp(max=theta).mean())


def rate_distortion(var: torch.Tensor, mse: float) -> float:
    """Shannon R(D) in bits per dimension at mean squared error `mse` per dimension."""
    v = var.flatten().to(torch.float64)
    if mse <= 0:
        raise ValueError("distortion must be > 0")
    if mse >= float(v.mean()):
        return 0.0
    lo, hi = 0.0, float(v.max())
    for _ in range(200):  # water level θ with mean(min(θ, v)) = mse
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(v.clamp(max=mid).mean()) < mse else (lo, mid)
    theta = 0.5 * (lo + hi)
    return float(0.5 * torch.log2(v / theta).clamp(min=0).mean())


__all__ = ["wiener_gain", "mmse", "mutual_information", "expected_step_kl", "distortion_rate", "rate_distortion"]
