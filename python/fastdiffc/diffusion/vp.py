"""Variance-preserving diffusion maths in terms of log-SNR λ (docs/design.md §3).

z_λ = α x + σ ε with α² = sigmoid(λ), σ² = sigmoid(−λ). A reverse step goes from a
noisier λ_from to a cleaner λ_to (λ_from < λ_to). Everything is written with
expm1/sigmoid so that steps between nearby λ stay accurate in float32/float64.

This module is the one home of these formulas: the samplers, the pipelines, the ELBO, the
Gaussian models and the theory experiments all call it (tests/test_one_place.py checks that
no other module writes sigmoid/expm1 maths of its own). The `*_f` variants take and return
Python floats (float64) for per-step coefficients; they compute exactly what the tensor
versions compute, so a pipeline and a sampler using either get the same bits.
"""

from __future__ import annotations

import math

import torch


def _as_tensor(logsnr, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(logsnr, torch.Tensor):
        return logsnr
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(logsnr, dtype=dtype, device=device)


def _per_sample(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a scalar or [N] tensor so it broadcasts against an NCHW (or N...) tensor."""
    if t.ndim == 0:
        return t
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def alpha2_sigma2(logsnr) -> tuple[torch.Tensor, torch.Tensor]:
    """(α², σ²) for log-SNR λ: sigmoid(λ), sigmoid(−λ) (each accurate for any |λ|)."""
    lam = _as_tensor(logsnr)
    return torch.sigmoid(lam), torch.sigmoid(-lam)


def alpha_sigma(logsnr) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, σ) for log-SNR λ: α² = sigmoid(λ), σ² = sigmoid(−λ)."""
    a2, s2 = alpha2_sigma2(logsnr)
    return a2.sqrt(), s2.sqrt()


def alpha_sigma_f(logsnr: float) -> tuple[float, float]:
    """(α, σ) of one λ as Python floats, computed in float64 by `alpha_sigma`."""
    a, s = alpha_sigma(torch.tensor(float(logsnr), dtype=torch.float64))
    return float(a), float(s)


def snr(logsnr) -> torch.Tensor:
    return torch.exp(_as_tensor(logsnr))


def diffuse(x: torch.Tensor, logsnr, noise: torch.Tensor) -> torch.Tensor:
    """Sample z_λ = α x + σ ε for given noise ε."""
    a, s = alpha_sigma(_as_tensor(logsnr, x))
    a, s = _per_sample(a, x.ndim).to(x.dtype), _per_sample(s, x.ndim).to(x.dtype)
    return a * x + s * noise


def posterior_coefficients(logsnr_from, logsnr_to):
    """Coefficients of q(z_to | z_from, x) = N(c_z z_from + c_x x, std²).

    With e = exp(λ_from − λ_to) < 1 (VDM, Kingma et al. 2021, eq. 12–13, rewritten):
      c_z = e · α_to / α_from,  c_x = α_to (1 − e),  std² = σ_to² (1 − e).
    """
    lf, lt = _as_tensor(logsnr_from), _as_tensor(logsnr_to)
    one_minus_e = -torch.expm1(lf - lt)
    a_f, _ = alpha_sigma(lf)
    a_t, s_t = alpha_sigma(lt)
    c_z = torch.exp(lf - lt) * a_t / a_f
    c_x = a_t * one_minus_e
    std = s_t * one_minus_e.sqrt()
    return c_z, c_x, std


def posterior_coefficients_f(logsnr_from: float, logsnr_to: float) -> tuple[float, float, float]:
    """(c_z, c_x, std) of `posterior_coefficients` for two λ values, as Python floats (float64)."""
    c_z, c_x, std = posterior_coefficients(torch.tensor(float(logsnr_from), dtype=torch.float64),
                                           torch.tensor(float(logsnr_to), dtype=torch.float64))
    return float(c_z), float(c_x), float(std)


def posterior(z_from: torch.Tensor, x: torch.Tensor, logsnr_from, logsnr_to):
    """Mean and std of q(z_to | z_from, x); the model step uses x = x̂0(z_from)."""
    c_z, c_x, std = posterior_coefficients(logsnr_from, logsnr_to)
    nd = z_from.ndim
    c_z, c_x, std = (_per_sample(c, nd).to(z_from.dtype) for c in (c_z, c_x, std))
    return c_z * z_from + c_x * x, std


def step_kl(x: torch.Tensor, x_hat: torch.Tensor, logsnr_from, logsnr_to) -> torch.Tensor:
    """KL[q(z_to|z_from,x) ‖ p(z_to|z_from)] in nats, per batch element:
    ½ (SNR_to − SNR_from) ‖x − x̂‖² (docs/design.md §3)."""
    lf, lt = _as_tensor(logsnr_from, x), _as_tensor(logsnr_to, x)
    gain = 0.5 * (torch.exp(lt) - torch.exp(lf))
    sq = (x - x_hat).pow(2).flatten(1).sum(1) if x.ndim > 1 else (x - x_hat).pow(2).sum()
    return gain * sq


def nats_to_bits(n):
    return n / math.log(2.0)
