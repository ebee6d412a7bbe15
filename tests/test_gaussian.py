"""The analytic Gaussian denoiser (fastdiffc.models.gaussian) and the Gaussian theory checks:
exact Wiener posterior mean, sampling statistics, flow round trip, KL-sum → mutual information."""

import json
import math

import numpy as np
import pytest
import scipy.fft
import torch
from fastdiffc.diffusion import samplers
from fastdiffc.diffusion.schedules import get_schedule
from fastdiffc.diffusion.vp import alpha_sigma, step_kl
from fastdiffc.models.gaussian import CONFIG_KEY, GaussianDenoiser


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rotation():
    # A fixed orthonormal colour transform (not the identity) so the colour path is exercised.
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 0.4, 0.2], [0.9, -0.3, 0.5], [0.8, 0.1, -0.6]], dtype=torch.float64))
    return q


@pytest.fixture(scope="module")
def model():
    return GaussianDenoiser.power_law((0.05, 0.01, 0.004), exponent=2.0, mean=(0.1, -0.05, 0.02), colour=_rotation())


def _dense_covariance(model, h, w):
    """Σ built independently: x − m = (colour ⊗ Dᵀ_H ⊗ Dᵀ_W) c with scipy's orthonormal DCT matrices."""
    dh = torch.from_numpy(scipy.fft.dct(np.eye(h), norm="ortho", axis=0))
    dw = torch.from_numpy(scipy.fft.dct(np.eye(w), norm="ortho", axis=0))
    m = torch.kron(model.colour, torch.kron(dh.T, dw.T))
    return m @ torch.diag(model.variances(h, w).flatten()) @ m.T


def test_posterior_mean_equals_brute_force_wiener_filter(model):
    c, h, w = 3, 4, 5
    sigma_x = _dense_covariance(model, h, w)
    mean = model.mean.repeat_interleave(h * w)
    g = torch.Generator().manual_seed(0)
    lams = torch.tensor([-6.0, -1.0, 0.5, 4.0, 9.0], dtype=torch.float64)
    z = torch.randn(len(lams), c, h, w, generator=g, dtype=torch.float64)
    got = model(z, lams)  # per-sample log-SNR
    for i, lam in enumerate(lams):
        a, s = alpha_sigma(lam)
        zi = z[i].flatten()
        ref = mean + a * sigma_x @ torch.linalg.solve(a * a * sigma_x + s * s * torch.eye(len(zi), dtype=torch.float64),
                                                     zi - a * mean)
        torch.testing.assert_close(got[i].flatten(), ref, rtol=1e-9, atol=1e-10)
    # float32 in → float32 out, same values up to float32 rounding.
    torch.testing.assert_close(model(z.float(), lams.float()), got.float(), rtol=1e-5, atol=1e-6)


def test_mutual_information_and_mmse_match_dense_formulas(model):
    h, w = 4, 4
    sigma_x = _dense_covariance(model, h, w)
    eye = torch.eye(len(sigma_x), dtype=torch.float64)
    for lam in (-3.0, 0.0, 5.0):
        snr = math.exp(lam)
        mi = 0.5 * torch.logdet(eye + snr * sigma_x)
        mmse = torch.trace(sigma_x - snr * sigma_x @ torch.linalg.solve(eye + snr * sigma_x, sigma_x))
        assert math.isclose(model.mutual_information(lam, h, w), float(mi), rel_tol=1e-10)
        assert math.isclose(model.mmse(lam, h, w), float(mmse), rel_tol=1e-9)


def test_samples_have_the_model_covariance(model):
    x = model.sample_prior(4000, 3, 4, generator=torch.Generator().manual_seed(1))
    sigma_x = _dense_covariance(model, 3, 4)
    emp = torch.cov(x.flatten(1).T)
    # Each entry's standard error is ≤ sqrt((Σ_ii Σ_jj + Σ_ij²)/n) ≤ sqrt(2/n)·max Σ_ii.
    assert (emp - sigma_x).abs().max() < 5 * math.sqrt(2 / 4000) * float(sigma_x.diagonal().max())
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), model.mean, atol=0.02, rtol=0)


def _ancestral_variance_prediction(model, lam, h, w):
    """Exact per-coefficient variance of the ancestral sampler's output for this model: the update
    z_t = (c_z + c_x g_s) z_s + std·ε is linear with g_s = α_s v / (α_s² v + σ_s²)."""
    v = model.variances(h, w)
    a0, s0 = (float(t) for t in alpha_sigma(torch.tensor(lam[0], dtype=torch.float64)))
    var = torch.ones_like(v)  # the sampler starts from pure noise N(0, I)
    for lf, lt in zip(lam[:-1], lam[1:]):
        c_z, c_x, std = samplers.ancestral_coefficients(lf, lt)
        a_f = float(alpha_sigma(torch.tensor(lf, dtype=torch.float64))[0])
        g = math.exp(lf) * v / (1 + math.exp(lf) * v) / a_f
        var = (c_z + c_x * g) ** 2 * var + std ** 2
    a_k = float(alpha_sigma(torch.tensor(lam[-1], dtype=torch.float64))[0])
    g = math.exp(lam[-1]) * v / (1 + math.exp(lam[-1]) * v) / a_k
    return g * g * var


def test_ancestral_sampling_from_noise_reproduces_the_spectrum(model):
    h, w, n, steps = 8, 8, 500, 400
    lam = torch.linspace(-8.0, 16.0, steps + 1, dtype=torch.float64)
    z = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = samplers.sample(model, z, lam, "ancestral", generator=torch.Generator().manual_seed(3))
    emp = model.coefficients(x).pow(2).mean(0)  # zero-mean coefficients: E c² is the variance
    v = model.variances(h, w)
    se = math.sqrt(2 / n)  # relative standard error of a variance estimate from n Gaussian samples
    # 1) the sampler does exactly what its maths says: per-frequency variance = exact linear recursion.
    pred = _ancestral_variance_prediction(model, lam.tolist(), h, w)
    ratio_pred = emp / pred
    assert (ratio_pred - 1).abs().max() < 5 * se
    assert abs(float(ratio_pred.mean()) - 1) < 4 * se / math.sqrt(v.numel())
    # 2) the spectrum is reproduced: ancestral sampling loses ≈ Δλ/2 of the variance (here Δλ = 0.06),
    #    so the stated tolerance is 4 % on average over frequencies and 4 % + 5 s.e. per frequency.
    ratio = emp / v
    assert abs(float(ratio.mean()) - 1) < 0.04
    assert (ratio - 1).abs().max() < 0.04 + 5 * se
    # and the sample mean is the model mean
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), model.mean, atol=0.01, rtol=0)


@pytest.mark.parametrize("solver", samplers.FLOW_SOLVERS)
def test_flow_round_trip_image_to_noise_and_back(model, solver):
    x = model.sample_prior(4, 16, 16, generator=torch.Generator().manual_seed(4))
    lam = torch.linspace(-12.0, 12.0, 61, dtype=torch.float64)
    a_hi = alpha_sigma(lam[-1])[0]
    z_hi = a_hi * x  # x seen at λ = 12 (noise-free start: the ODE is a deterministic bijection)
    noise = samplers.integrate_flow(model, z_hi, lam.flip(0), solver=solver)
    assert abs(float(noise.std()) - 1) < 0.1  # at λ = −12 the latent is essentially white noise
    back = samplers.integrate_flow(model, noise, lam, solver=solver)
    rel = float((back - z_hi).norm() / z_hi.norm())
    assert rel < 1e-3, rel
    x_rec = samplers.sample(model, noise, lam, "flow", solver=solver)
    assert float((x_rec - x).pow(2).mean().sqrt()) < 1e-3


def test_kl_sum_over_fine_schedule_approaches_mutual_information(model):
    h, w = 16, 16
    sched = get_schedule("linear", -10.0, 10.0)
    target = model.mutual_information(10.0, h, w) - model.mutual_information(-10.0, h, w)
    errs = []
    for steps in (1000, 2000):
        lam = sched.grid(steps).tolist()
        total = sum(model.expected_step_kl(lf, lt, h, w) for lf, lt in zip(lam[:-1], lam[1:]))
        errs.append(total / target - 1)
    # Σ KL ≥ I (a left Riemann sum of a decreasing integrand) and the gap is O(Δλ).
    assert 0 < errs[0] < 0.01 and 0 < errs[1] < errs[0] * 0.55, errs
    # Before the first step the latent carries almost nothing: I(X; Z_-10) is < 0.1 % of the total.
    assert model.mutual_information(-10.0, h, w) < 1e-3 * target


def test_expected_step_kl_matches_monte_carlo_with_step_kl(model):
    h, w, n = 6, 6, 4000
    lf, lt = 2.0, 2.5
    g = torch.Generator().manual_seed(5)
    x = model.sample_prior(n, h, w, generator=g)
    a, s = alpha_sigma(torch.tensor(lf, dtype=torch.float64))
    z = a * x + s * torch.randn(x.shape, generator=g, dtype=torch.float64)
    kl = step_kl(x, model(z, torch.tensor(lf, dtype=torch.float64)), lf, lt)
    expected = model.expected_step_kl(lf, lt, h, w)
    assert abs(float(kl.mean()) - expected) < 4 * float(kl.std()) / math.sqrt(n)


def test_any_image_size(model):
    for h, w in [(1, 1), (5, 7), (96, 64), (37, 200)]:
        v = model.variances(h, w)
        assert v.shape == (3, h, w) and torch.isfinite(v).all() and (v > 0).all()
    z = torch.randn(1, 3, 37, 53, dtype=torch.float64)
    out = model(z, 3.0)
    assert out.shape == z.shape and torch.isfinite(out).all()
    # For a power law the variances scale with size exactly like the continuous spectrum says:
    # coefficient (2k, 2k) at size 2N sits at the same frequency as (k, k) at size N.
    v8, v16 = model.variances(8, 8), model.variances(16, 16)
    torch.testing.assert_close(v16[:, 2:16:2, 2:16:2], v8[:, 1:8, 1:8], rtol=1e-9, atol=0)


def test_distortion_rate_and_rate_distortion_are_inverse(model):
    h, w = 8, 8
    v = model.variances(h, w)
    assert math.isclose(model.distortion_rate(0.0, h, w), float(v.mean()), rel_tol=1e-12)
    for bits in (10.0, 100.0, 1000.0):
        d = model.distortion_rate(bits, h, w)
        assert math.isclose(model.rate_distortion(d, h, w), bits, rel_tol=1e-6)
    assert model.distortion_rate(100.0, h, w) < model.distortion_rate(10.0, h, w)
    # At high rate every dimension is above the water level: D = (Π v)^(1/n) · 2^(−2R/n).
    n = v.numel()
    hi = model.distortion_rate(5000.0, h, w)
    assert math.isclose(hi, math.exp(float(torch.log(v).mean())) * 2 ** (-2 * 5000.0 / n), rel_tol=1e-6)


def test_fit_recovers_a_known_model():
    true = GaussianDenoiser.power_law((0.08, 0.02, 0.005), exponent=2.2, mean=(0.2, 0.0, -0.1), colour=_rotation(),
                                      dc_index=0.5)
    patches = true.sample_prior(3000, 32, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float32)
    fitted = GaussianDenoiser.fit(patches, seed=0)
    assert fitted.fit_info["patch_size"] == 32 and fitted.fit_info["num_patches"] == 3000
    torch.testing.assert_close(fitted.mean, true.mean, atol=0.02, rtol=0)
    # colour axes recovered up to sign (the channel variances differ enough to identify them)
    assert (fitted.colour.T @ true.colour).abs().diagonal().min() > 0.99
    for size in (32, 16, 64):
        ratio = fitted.variances(size, size) / true.variances(size, size)
        assert float(torch.log(ratio).abs().mean()) < 0.03, size  # ≈ 3 % on average, incl. extrapolation
    assert abs(float(fitted.slope.mean()) - 2.2) < 0.1


def test_fit_from_images_cuts_seeded_patches():
    g = torch.Generator().manual_seed(8)
    images = [torch.rand(3, 40, 50, generator=g) * 2 - 1, (torch.rand(30, 45, 3, generator=g) * 255).byte().numpy()]
    a = GaussianDenoiser.fit(images, patch_size=16, num_patches=200, seed=1)
    b = GaussianDenoiser.fit(images, patch_size=16, num_patches=200, seed=1)
    assert torch.equal(a.log_var, b.log_var) and a.fit_info["num_patches"] == 200
    with pytest.raises(ValueError, match="at least"):
        GaussianDenoiser.fit(images, patch_size=64, num_patches=10)


def test_save_load_round_trip(tmp_path, model):
    path = tmp_path / "g.safetensors"
    model.save(path)
    loaded = GaussianDenoiser.load(path)
    for k in ("mean", "colour", "log_var", "slope"):
        assert torch.equal(getattr(loaded, k), getattr(model, k))
    z = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    assert torch.equal(loaded(z, 1.5), model(z, 1.5))
    assert loaded.tensor_digest() == model.tensor_digest()
    assert loaded.content_hash == model.content_hash == int(model.tensor_digest()[:16], 16)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        cfg = json.loads(f.metadata()[CONFIG_KEY])
    assert cfg["class"] == "gaussian" and cfg["fit"]["source"] == "power_law"


def test_bad_inputs_raise_clear_errors(tmp_path, model):
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 1, 4, 4), 0.0)
    with pytest.raises(ValueError, match="NCHW"):
        model(torch.zeros(3, 4, 4), 0.0)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.zeros(1, 3, 4, 4), 0.0, cond=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="orthonormal"):
        GaussianDenoiser([0, 0, 0], torch.ones(3, 3), torch.zeros(3, 2, 2), [1, 1, 1])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        GaussianDenoiser.load(bad)
    with pytest.raises(FileNotFoundError):
        GaussianDenoiser.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other), metadata={CONFIG_KEY: json.dumps({"class": "unet"})})
    with pytest.raises(ValueError, match="not a Gaussian"):
        GaussianDenoiser.load(other)


def test_shipped_model_loads_and_is_sane():
    from pathlib import Path

    import fastdiffc

    path = Path(fastdiffc.__file__).parent / "weights" / "gaussian.safetensors"
    model = GaussianDenoiser.load(path)
    info = model.fit_info
    assert info["source"] == "fit" and info["data"] == "data/photos/train"
    assert info["patch_size"] == model.log_var.shape[-1] and info["num_patches"] >= 1000
    assert len(info["manifest_sha256"]) == 64
    # Per-pixel variance of photos in [-1, 1]: between 0.02 and 1 per colour channel, spectrum falling
    # with frequency (natural images: exponent ≈ 2).
    pix = torch.exp(model.log_var).mean(dim=(1, 2))
    assert float(pix.sum()) == pytest.approx(sum(info["pixel_variance"]), rel=0.2)
    assert ((model.slope > 1.0) & (model.slope < 3.5)).all()
    v = model.variances(48, 80)
    assert v[:, 1, 1].min() > v[:, 20, 40].max()
    z = torch.randn(1, 3, 48, 80)
    out = model(z, 0.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_reconstruction_from_a_noisy_latent_flow_beats_ancestral_as_theory_says(model):
    # DiffC's reconstruction from z_λ ~ q(z_λ | x) on Gaussian data, per coefficient of variance v
    # (Theis et al. 2022): denoise → mmse = vσ²/(α²v + σ²); ancestral → a posterior sample, 2·mmse;
    # flow → the deterministic map z ↦ m + (z − αm)·sqrt(v / (α²v + σ²)): 2v − 2αv^1.5 / sqrt(α²v + σ²).
    h, w, n, lam0 = 8, 8, 300, 4.0
    v = model.variances(h, w)
    a, s = (float(t) for t in alpha_sigma(torch.tensor(lam0, dtype=torch.float64)))
    g = torch.Generator().manual_seed(11)
    x = model.sample_prior(n, h, w, generator=g)
    z = a * x + s * torch.randn(x.shape, generator=g, dtype=torch.float64)
    mmse = float((v * s * s / (a * a * v + s * s)).mean())
    flow_theory = float((2 * v - 2 * a * v * v.sqrt() / (a * a * v + s * s).sqrt()).mean())
    d_denoise = float((model(z, lam0) - x).pow(2).mean())
    d_flow = float((samplers.sample(model, z, torch.linspace(lam0, 18.0, 31, dtype=torch.float64), "flow") - x)
                   .pow(2).mean())
    d_anc = float((samplers.sample(model, z, torch.linspace(lam0, 18.0, 401, dtype=torch.float64), "ancestral",
                                   generator=torch.Generator().manual_seed(12)) - x).pow(2).mean())
    assert d_denoise == pytest.approx(mmse, rel=0.05)
    assert d_flow == pytest.approx(flow_theory, rel=0.05)
    assert d_anc == pytest.approx(2 * mmse, rel=0.07)  # 400 steps lose ≈ Δλ/2 ≈ 2 % of the sample variance
    gap_db = 10 * math.log10(d_anc / d_flow)
    assert gap_db == pytest.approx(10 * math.log10(2 * mmse / flow_theory), abs=0.35) and gap_db > 1.0
