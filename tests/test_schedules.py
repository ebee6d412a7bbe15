"""Log-SNR schedules, VP maths (fastdiffc.diffusion.vp) and the ε / v adapters, in float64."""

import math

import pytest
import torch
from fastdiffc.diffusion.denoiser import EpsDenoiser, VDenoiser
from fastdiffc.diffusion.schedules import CosineSchedule, LinearSchedule, get_schedule, schedule_from_dict
from fastdiffc.diffusion.vp import alpha_sigma, diffuse, posterior, posterior_coefficients, snr, step_kl

SCHEDULES = [LinearSchedule(-15.0, 15.0), CosineSchedule(-15.0, 15.0), CosineSchedule(-20.0, 8.0),
             LinearSchedule(-3.0, 12.5)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: f"{s.name}{s.logsnr_min:g}..{s.logsnr_max:g}")
def test_end_points_monotonicity_and_inverse(sched):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lam = sched.logsnr(t)
    assert math.isclose(float(lam[0]), sched.logsnr_max, abs_tol=1e-10)
    assert math.isclose(float(lam[-1]), sched.logsnr_min, abs_tol=1e-10)
    assert bool((lam[1:] < lam[:-1]).all())  # t = 0 clean, t = 1 noise
    torch.testing.assert_close(sched.t_of_logsnr(lam), t, rtol=0, atol=1e-12)
    grid = sched.grid(37)
    assert grid.shape == (38,) and grid.dtype == torch.float64
    assert bool((grid[1:] > grid[:-1]).all())
    assert math.isclose(float(grid[0]), sched.logsnr_min, abs_tol=1e-10)
    assert math.isclose(float(grid[-1]), sched.logsnr_max, abs_tol=1e-10)
    assert schedule_from_dict(sched.to_dict()) == sched


def test_cosine_schedule_is_the_nichol_dhariwal_form():
    # Unclipped ᾱ(t) = cos²(π t / 2) ⇔ λ = −2 log tan(π t / 2): the limits λ_max → ∞, λ_min → −∞.
    s = CosineSchedule(-60.0, 60.0)
    t = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(s.logsnr(t), -2 * torch.log(torch.tan(math.pi * t / 2)), rtol=0, atol=1e-9)


def test_schedule_errors():
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        LinearSchedule(5.0, 5.0)
    with pytest.raises(ValueError, match="finite"):
        CosineSchedule(-math.inf, 5.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("sigmoid")
    with pytest.raises(ValueError, match="steps"):
        LinearSchedule().grid(0)


def test_alpha_sigma_and_diffuse():
    lam = torch.tensor([-30.0, -2.0, 0.0, 3.5, 30.0], dtype=torch.float64)
    a, s = alpha_sigma(lam)
    torch.testing.assert_close(a * a + s * s, torch.ones_like(lam), rtol=0, atol=1e-15)
    torch.testing.assert_close(torch.log(a * a) - torch.log(s * s), lam, rtol=0, atol=1e-10)
    torch.testing.assert_close(snr(lam), torch.exp(lam))
    x, e = torch.randn(5, 3, 2, 2, dtype=torch.float64), torch.randn(5, 3, 2, 2, dtype=torch.float64)
    z = diffuse(x, lam, e)
    torch.testing.assert_close(z, a[:, None, None, None] * x + s[:, None, None, None] * e)


def _vdm_textbook(lam_noisy, lam_clean):
    """Kingma et al. 2021 (VDM) eq. 12–13 in their notation: s < t in time, z_t noisier; the reverse
    q(z_s | z_t, x) = N(μ, σ_Q²) with μ = α_{t|s} σ_s²/σ_t² z_t + α_s σ_{t|s}²/σ_t² x,
    σ_Q² = σ_{t|s}² σ_s² / σ_t², α_{t|s} = α_t/α_s, σ_{t|s}² = σ_t² − α_{t|s}² σ_s²."""
    a_t, s_t = (float(v) for v in alpha_sigma(torch.tensor(lam_noisy, dtype=torch.float64)))
    a_s, s_s = (float(v) for v in alpha_sigma(torch.tensor(lam_clean, dtype=torch.float64)))
    a_ts = a_t / a_s
    s2_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2
    return a_ts * s_s ** 2 / s_t ** 2, a_s * s2_ts / s_t ** 2, math.sqrt(s2_ts * s_s ** 2 / s_t ** 2)


@pytest.mark.parametrize("lf,lt", [(-15.0, -14.0), (-3.0, 2.0), (0.0, 0.5), (4.0, 9.0), (10.0, 10.25)])
def test_posterior_coefficients_match_vdm_textbook(lf, lt):
    got = posterior_coefficients(torch.tensor(lf, dtype=torch.float64), torch.tensor(lt, dtype=torch.float64))
    for g, r in zip(got, _vdm_textbook(lf, lt)):
        assert math.isclose(float(g), r, rel_tol=1e-9), (lf, lt, float(g), r)


def test_posterior_is_accurate_for_tiny_steps():
    # The textbook form cancels catastrophically for tiny steps; the expm1 form must not:
    # std² = σ_t² (1 − e^{−Δλ}) ≈ σ_t² Δλ and c_x = α_t (1 − e^{−Δλ}) ≈ α_t Δλ.
    lf, d = 1.0, 1e-9
    c_z, c_x, std = posterior_coefficients(torch.tensor(lf, dtype=torch.float64),
                                           torch.tensor(lf + d, dtype=torch.float64))
    a_t, s_t = (float(v) for v in alpha_sigma(torch.tensor(lf + d, dtype=torch.float64)))
    assert math.isclose(float(std) ** 2, s_t ** 2 * d, rel_tol=1e-6)
    assert math.isclose(float(c_x), a_t * d, rel_tol=1e-6)


def test_posterior_and_step_kl_match_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    x, x_hat, z = (torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    lf, lt = -1.0, 0.7
    mu_q, std = posterior(z, x, lf, lt)
    mu_p, std_p = posterior(z, x_hat, lf, lt)
    assert torch.equal(std, std_p)
    # KL of two Gaussians with the same isotropic covariance.
    kl_ref = (mu_q - mu_p).pow(2).flatten(1).sum(1) / (2 * std ** 2)
    torch.testing.assert_close(step_kl(x, x_hat, lf, lt), kl_ref, rtol=1e-10, atol=0)
    # The posterior mean is unbiased for z_t: E[z_t] = α_t x when z_s ~ q(z_s | x).
    a_f, s_f = alpha_sigma(torch.tensor(lf, dtype=torch.float64))
    a_t, _ = alpha_sigma(torch.tensor(lt, dtype=torch.float64))
    c_z, c_x, _ = posterior_coefficients(torch.tensor(lf, dtype=torch.float64), torch.tensor(lt, dtype=torch.float64))
    assert math.isclose(float(c_z * a_f + c_x), float(a_t), rel_tol=1e-12)


def test_eps_and_v_adapters_invert_exact_predictions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    e = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    lam = torch.tensor([-4.0, 0.0, 6.0], dtype=torch.float64)
    a, s = (v[:, None, None, None] for v in alpha_sigma(lam))
    z = a * x + s * e
    torch.testing.assert_close(EpsDenoiser(lambda z_, l_, c_: e)(z, lam), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(VDenoiser(lambda z_, l_, c_: a * e - s * x)(z, lam), x, rtol=1e-9, atol=1e-9)
