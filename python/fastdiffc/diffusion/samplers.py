"""Samplers over any Denoiser (docs/design.md §3): ancestral (DDPM), DDIM with η, probability-flow ODE.

All samplers start from a given z at a given log-SNR (DiffC and DIRAC start mid-way) and
walk a 1-D grid of log-SNR values ``logsnrs = [λ_0, λ_1, …, λ_K]``; z is at λ_0. `sample`
returns the denoised x̂0 = denoiser(z_K, λ_K) (or z_K with ``return_z=True``).

- ``ancestral``: z_k ~ q(z_k | z_{k-1}, x̂0(z_{k-1})) — the model step of docs/design.md §3.
- ``ddim``: z_k = α_k x̂0 + sqrt(σ_k² − s²) ε̂ + s·noise with s = η · std_posterior;
  η = 1 is exactly the ancestral step, η = 0 the first-order deterministic step.
- ``flow``: the probability-flow ODE, integrated with an exponential integrator in log-SNR
  (the linear part is solved exactly, the denoiser output interpolated):
  ``solver="heun"`` (default) — 2nd order single-step, two denoiser calls per step, the most
  accurate per step; ``solver="dpm++2m"`` — DPM-Solver++(2M), 2nd order multistep, one call per
  step. The ODE may be integrated in either direction (λ increasing: noise → data; decreasing:
  data → noise), which makes encoding an image to its latent noise possible.

Noise comes only from the given ``generator``: a ``torch.Generator`` (drawn on the generator's
device, then moved), or a callable ``noise(z) -> Tensor`` shaped like z (DiffC passes a Philox
stream, identical on every platform), so the same seed gives the same result bit for bit.
All coefficients are computed in float64 from λ and applied in z's dtype (float32 for networks,
float64 for the theory tests). The element-wise updates go through the fused kernels of
``fastdiffc.kernels.sampler_updates``.
"""

from __future__ import annotations

import math

import torch

from ..kernels.sampler_updates import ancestral_update, flow_update
from .vp import alpha_sigma_f, posterior_coefficients_f

METHODS = ("flow", "ancestral", "ddim")
FLOW_SOLVERS = ("heun", "dpm++2m")


# ----------------------------------------------------------------------------- helpers

def _check_grid(logsnrs, *, increasing: bool) -> list[float]:
    lam = torch.as_tensor(logsnrs, dtype=torch.float64)
    if lam.ndim != 1 or lam.numel() < 1:
        raise ValueError(f"logsnrs must be a non-empty 1-D sequence, got shape {tuple(lam.shape)}")
    if not torch.isfinite(lam).all():
        raise ValueError("logsnrs must be finite")
    d = lam[1:] - lam[:-1]
    if increasing and not bool((d > 0).all()):
        raise ValueError("logsnrs must be strictly increasing (from noisy to clean) for stochastic samplers")
    if not increasing and not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("logsnrs must be strictly monotone")
    return [float(v) for v in lam]


def _check_z(z) -> None:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise ValueError("z must be a floating-point torch.Tensor")
    if z.ndim < 1:
        raise ValueError("z must have a batch dimension")


def _denoise(denoiser, z: torch.Tensor, lam: float, cond) -> torch.Tensor:
    # λ in at least float32: half precision would round λ ≈ 12 to steps of 0.01.
    lam_dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    lam_t = torch.full((z.shape[0],), lam, dtype=lam_dtype, device=z.device)
    x = denoiser(z, lam_t, cond)
    if x.shape != z.shape:
        raise ValueError(f"denoiser returned shape {tuple(x.shape)} for input {tuple(z.shape)}")
    return x.to(z.dtype)


def _noise_like(z: torch.Tensor, generator) -> torch.Tensor:
    if callable(generator):  # a noise source of the caller's (torch.Generator is not callable)
        eps = generator(z)
        if eps.shape != z.shape:
            raise ValueError(f"the noise source returned shape {tuple(eps.shape)} for z of shape {tuple(z.shape)}")
        return eps.to(device=z.device, dtype=z.dtype)
    # Draw on the generator's device so a CPU generator gives the same noise for CPU and CUDA z.
    device = generator.device if generator is not None else z.device
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=device).to(z.device)


def _progress(n: int, enabled: bool, desc: str):
    if not enabled:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, leave=False)


def _phi1(h: float) -> float:
    """1 − e^{−h} without cancellation."""
    return -math.expm1(-h)


def _phi2(h: float) -> float:
    """(h − 1 + e^{−h}) / h: weight of the linear term of the exponential integrator."""
    if abs(h) < 1e-4:  # series: h/2 − h²/6 + h³/24
        return h / 2 - h * h / 6 + h ** 3 / 24
    return (h + math.expm1(-h)) / h


# ----------------------------------------------------------------------------- coefficients

def ancestral_coefficients(lf: float, lt: float) -> tuple[float, float, float]:
    """(c_z, c_x, std) of q(z_t | z_s, x) = N(c_z z_s + c_x x, std²), VDM form, float64
    (`diffusion.vp.posterior_coefficients`: the same numbers as the DiffC and DIRAC steps)."""
    if not lt > lf:
        raise ValueError(f"an ancestral step needs λ_to > λ_from, got {lf} -> {lt}")
    return posterior_coefficients_f(lf, lt)


def ddim_coefficients(lf: float, lt: float, eta: float = 0.0) -> tuple[float, float, float]:
    """(c_z, c_x, std) of the DDIM step z_t = c_z z_s + c_x x̂0 + std·noise.

    std = η σ_t sqrt(1 − e) (η = 1: the posterior std), c_z = sqrt(σ_t² − std²)/σ_s,
    c_x = α_t − α_s c_z. With η = 0 this is the first-order exponential integrator of the
    flow ODE (valid in both directions)."""
    if eta < 0 or not math.isfinite(eta):
        raise ValueError(f"eta must be a finite value >= 0, got {eta}")
    a_f, s_f = alpha_sigma_f(lf)
    a_t, s_t = alpha_sigma_f(lt)
    if eta == 0.0:
        c_z = s_t / s_f
        # α_t − α_s σ_t/σ_s = α_t (1 − e^{−h}), h = (λ_t − λ_s)/2: no cancellation for small steps.
        return c_z, a_t * _phi1(0.5 * (lt - lf)), 0.0
    if not lt > lf:
        raise ValueError(f"a stochastic DDIM step needs λ_to > λ_from, got {lf} -> {lt}")
    std = eta * posterior_coefficients_f(lf, lt)[2]
    if std > s_t:
        raise ValueError(f"eta={eta} too large for the step {lf} -> {lt} (noise std would exceed σ_t)")
    c_z = math.sqrt((s_t - std) * (s_t + std)) / s_f
    return c_z, a_t - a_f * c_z, std


# ----------------------------------------------------------------------------- single steps

def ancestral_step(denoiser, z, logsnr_from: float, logsnr_to: float, *, generator=None, cond=None,
                   x_hat=None) -> torch.Tensor:
    """One DDPM step: z_to ~ N(μ_Q(z, x̂0), std²) with x̂0 = denoiser(z, λ_from) unless given."""
    lf, lt = float(logsnr_from), float(logsnr_to)
    c_z, c_x, std = ancestral_coefficients(lf, lt)
    if x_hat is None:
        x_hat = _denoise(denoiser, z, lf, cond)
    return ancestral_update(z, x_hat, _noise_like(z, generator), c_z, c_x, std)


def ddim_step(denoiser, z, logsnr_from: float, logsnr_to: float, *, eta: float = 0.0, generator=None, cond=None,
              x_hat=None) -> torch.Tensor:
    lf, lt = float(logsnr_from), float(logsnr_to)
    c_z, c_x, std = ddim_coefficients(lf, lt, eta)
    if x_hat is None:
        x_hat = _denoise(denoiser, z, lf, cond)
    if std == 0.0:
        return flow_update(z, x_hat, c_z, c_x)
    return ancestral_update(z, x_hat, _noise_like(z, generator), c_z, c_x, std)


# ----------------------------------------------------------------------------- integrators (return z at λ_K)

def integrate_ancestral(denoiser, z, logsnrs, *, generator=None, cond=None, progress=False) -> torch.Tensor:
    _check_z(z)
    lam = _check_grid(logsnrs, increasing=True)
    for k in _progress(len(lam) - 1, progress, "ancestral"):
        z = ancestral_step(denoiser, z, lam[k], lam[k + 1], generator=generator, cond=cond)
    return z


def integrate_ddim(denoiser, z, logsnrs, *, eta: float = 0.0, generator=None, cond=None,
                   progress=False) -> torch.Tensor:
    _check_z(z)
    lam = _check_grid(logsnrs, increasing=eta > 0)
    for k in _progress(len(lam) - 1, progress, "ddim"):
        z = ddim_step(denoiser, z, lam[k], lam[k + 1], eta=eta, generator=generator, cond=cond)
    return z


def integrate_flow(denoiser, z, logsnrs, *, solver: str = "heun", cond=None, progress=False) -> torch.Tensor:
    """Probability-flow ODE from λ_0 to λ_K (either direction), exponential integrator in log-SNR.

    With h = (λ_t − λ_s)/2 (the step in log(α/σ)) and D the denoiser output, the exact solution for
    D varying linearly over the step is z_t = (σ_t/σ_s) z_s + α_t φ1(h) D_s + α_t φ2(h) (D_t − D_s).
    Heun predicts D_t from the first-order step; DPM-Solver++(2M) extrapolates it from the previous step.
    """
    _check_z(z)
    if solver not in FLOW_SOLVERS:
        raise ValueError(f"unknown flow solver {solver!r}; choose from {FLOW_SOLVERS}")
    lam = _check_grid(logsnrs, increasing=False)
    d_prev, h_prev = None, None
    for k in _progress(len(lam) - 1, progress, f"flow/{solver}"):
        lf, lt = lam[k], lam[k + 1]
        a_t, s_t = alpha_sigma_f(lt)
        _, s_f = alpha_sigma_f(lf)
        h = 0.5 * (lt - lf)
        c_z, c_1, c_lin = s_t / s_f, a_t * _phi1(h), a_t * _phi2(h)
        d = _denoise(denoiser, z, lf, cond)
        if solver == "heun":
            z_pred = flow_update(z, d, c_z, c_1)
            d_t = _denoise(denoiser, z_pred, lt, cond)
            z = flow_update(z, d, c_z, c_1 - c_lin, d_t, c_lin)
        else:
            if d_prev is None:
                z = flow_update(z, d, c_z, c_1)
            else:
                # D_t − D_s ≈ (D_s − D_prev) · h / h_prev (linear extrapolation in log-SNR).
                slope = h / h_prev
                z = flow_update(z, d, c_z, c_1 + c_lin * slope, d_prev, -c_lin * slope)
            d_prev, h_prev = d, h
    return z


# ----------------------------------------------------------------------------- public entry points

def sample_ancestral(denoiser, z, logsnrs, *, generator=None, cond=None, progress=False, return_z=False):
    z = integrate_ancestral(denoiser, z, logsnrs, generator=generator, cond=cond, progress=progress)
    return z if return_z else _denoise(denoiser, z, float(torch.as_tensor(logsnrs)[-1]), cond)


def sample_ddim(denoiser, z, logsnrs, *, eta: float = 0.0, generator=None, cond=None, progress=False,
                return_z=False):
    z = integrate_ddim(denoiser, z, logsnrs, eta=eta, generator=generator, cond=cond, progress=progress)
    return z if return_z else _denoise(denoiser, z, float(torch.as_tensor(logsnrs)[-1]), cond)


def sample_flow(denoiser, z, logsnrs, *, solver: str = "heun", cond=None, progress=False, return_z=False):
    z = integrate_flow(denoiser, z, logsnrs, solver=solver, cond=cond, progress=progress)
    return z if return_z else _denoise(denoiser, z, float(torch.as_tensor(logsnrs)[-1]), cond)


def sample(denoiser, z, logsnrs, method: str = "flow", eta: float = 0.0, generator=None, cond=None,
           progress: bool = False, *, solver: str = "heun", return_z: bool = False) -> torch.Tensor:
    """Run `method` from z at logsnrs[0] through logsnrs[-1]; return x̂0 there (or z with return_z).

    logsnrs: 1-D, strictly increasing for "ancestral" and "ddim" with η > 0; strictly monotone for
    "flow" and "ddim" with η = 0. A single value means no steps: the result is denoiser(z, λ_0).
    """
    if method == "flow":
        return sample_flow(denoiser, z, logsnrs, solver=solver, cond=cond, progress=progress, return_z=return_z)
    if method == "ancestral":
        return sample_ancestral(denoiser, z, logsnrs, generator=generator, cond=cond, progress=progress,
                                return_z=return_z)
    if method == "ddim":
        return sample_ddim(denoiser, z, logsnrs, eta=eta, generator=generator, cond=cond, progress=progress,
                           return_z=return_z)
    raise ValueError(f"unknown sampling method {method!r}; choose from {METHODS}")
