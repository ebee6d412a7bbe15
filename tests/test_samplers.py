"""Samplers (fastdiffc.diffusion.samplers): reproducibility, mid-way starts, the relations between
ancestral / DDIM / flow steps, and the convergence order of the flow solvers."""

import math

import pytest
import torch
from fastdiffc.diffusion import samplers
from fastdiffc.diffusion.denoiser import EpsDenoiser
from fastdiffc.diffusion.vp import alpha_sigma, posterior, posterior_coefficients
from fastdiffc.models.gaussian import GaussianDenoiser


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: extra intra-op threads only add synchronisation cost on a shared machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gauss():
    return GaussianDenoiser.power_law((0.05, 0.01, 0.004), exponent=2.0, mean=(0.1, -0.05, 0.02))


class _TinyEpsNet(torch.nn.Module):
    """A small random conv net (float32) standing in for a trained ε-predictor."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.w1 = torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=g) * 0.2)
        self.w2 = torch.nn.Parameter(torch.randn(3, 8, 3, 3, generator=g) * 0.2)

    def forward(self, z, logsnr, cond=None):
        t = (logsnr / 10).reshape(-1, 1, 1, 1).expand(z.shape[0], 1, *z.shape[2:]).to(z.dtype)
        h = torch.tanh(torch.nn.functional.conv2d(torch.cat([z, t], 1), self.w1, padding=1))
        return torch.nn.functional.conv2d(h, self.w2, padding=1)


def _grid(lo, hi, n, dtype=torch.float64):
    return torch.linspace(lo, hi, n + 1, dtype=dtype)


RUNS = [("ancestral", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.6}), ("flow", {"solver": "heun"}),
        ("flow", {"solver": "dpm++2m"})]


@pytest.mark.parametrize("method,kw", RUNS)
def test_bit_for_bit_reproducible_with_a_seed(method, kw):
    net = EpsDenoiser(_TinyEpsNet())
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    lam = _grid(-6.0, 6.0, 6, torch.float32)
    with torch.no_grad():
        runs = [samplers.sample(net, z, lam, method, generator=torch.Generator().manual_seed(s), **kw)
                for s in (11, 11, 12)]
    assert runs[0].dtype == torch.float32 and runs[0].shape == z.shape
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
    stochastic = method == "ancestral" or kw.get("eta", 0) > 0
    assert torch.equal(runs[0], runs[2]) is not stochastic


def test_ancestral_coefficients_equal_vp_posterior():
    for lf, lt in [(-15.0, -14.0), (-2.0, 3.0), (5.0, 5.001), (10.0, 15.0)]:
        ref = posterior_coefficients(torch.tensor(lf, dtype=torch.float64), torch.tensor(lt, dtype=torch.float64))
        got = samplers.ancestral_coefficients(lf, lt)
        for a, b in zip(got, ref):
            assert math.isclose(a, float(b), rel_tol=1e-12)


def test_mid_way_start_single_ancestral_step_is_the_model_posterior(gauss):
    # DiffC starts mid-way: one step from z at λ=1 to λ=2 is N(μ_Q(z, x̂0(z)), σ_Q²) with the seeded noise.
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    out = samplers.sample(gauss, z, torch.tensor([1.0, 2.0], dtype=torch.float64), "ancestral",
                          generator=torch.Generator().manual_seed(5), return_z=True)
    mu, std = posterior(z, gauss(z, torch.tensor(1.0, dtype=torch.float64)), 1.0, 2.0)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(out, mu + std * noise, rtol=1e-12, atol=1e-12)


def test_single_logsnr_means_denoise_only(gauss):
    z = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    for method in samplers.METHODS:
        assert torch.equal(samplers.sample(gauss, z, [0.5], method), gauss(z, torch.tensor(0.5, dtype=torch.float64)))


def test_ddim_eta_one_is_ancestral_and_eta_zero_is_first_order_flow(gauss):
    z = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lam = _grid(-4.0, 4.0, 5)
    a = samplers.sample(gauss, z, lam, "ancestral", generator=torch.Generator().manual_seed(9))
    d = samplers.sample(gauss, z, lam, "ddim", eta=1.0, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, d, rtol=1e-10, atol=1e-10)
    # η = 0: z_t = α_t x̂ + σ_t ε̂ with ε̂ = (z_s − α_s x̂)/σ_s (the DDIM paper's form).
    zs, lf, lt = z, 0.3, 1.7
    x = gauss(zs, torch.tensor(lf, dtype=torch.float64))
    (a_s, s_s), (a_t, s_t) = alpha_sigma(torch.tensor(lf)), alpha_sigma(torch.tensor(lt))
    ref = a_t.double() * x + s_t.double() * (zs - a_s.double() * x) / s_s.double()
    torch.testing.assert_close(samplers.ddim_step(gauss, zs, lf, lt), ref, rtol=1e-6, atol=1e-6)


def _exact_flow(model, x, lam_from, lam_to):
    """The probability-flow map of a Gaussian model in closed form: per coefficient,
    (z_λ − α_λ m) / sqrt(α_λ² v + σ_λ²) is invariant along the ODE."""
    n, _, h, w = x.shape
    v = model.variances(h, w)
    (a0, s0), (a1, s1) = (alpha_sigma(torch.tensor(float(t), dtype=torch.float64)) for t in (lam_from, lam_to))
    c = model._to_coeffs(x, torch.full((n,), float(a0), dtype=torch.float64))
    c = c * ((a1 * a1 * v + s1 * s1) / (a0 * a0 * v + s0 * s0)).sqrt()
    return model._from_coeffs(c) + (a1 - 1) * model.mean[None, :, None, None]


@pytest.mark.parametrize("solver", samplers.FLOW_SOLVERS)
def test_flow_solvers_are_second_order(gauss, solver):
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = _exact_flow(gauss, z, -8.0, 8.0)
    errs = []
    for n in (20, 40, 80):
        got = samplers.integrate_flow(gauss, z, _grid(-8.0, 8.0, n), solver=solver)
        errs.append(float((got - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt()))
    # Halving the step divides the error by ≈ 4 for a 2nd-order method (≈ 2 for 1st order).
    assert errs[1] / errs[2] > 3.0 and errs[0] / errs[1] > 3.0, errs
    assert errs[2] < 2e-3, errs


def test_flow_is_more_accurate_than_first_order_ddim(gauss):
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = _exact_flow(gauss, z, -8.0, 8.0)
    lam = _grid(-8.0, 8.0, 30)
    e_ddim = (samplers.integrate_ddim(gauss, z, lam) - exact).norm()
    e_heun = (samplers.integrate_flow(gauss, z, lam, solver="heun") - exact).norm()
    e_2m = (samplers.integrate_flow(gauss, z, lam, solver="dpm++2m") - exact).norm()
    assert e_heun < e_2m < e_ddim


def test_bad_arguments_raise():
    den = GaussianDenoiser.power_law()
    z = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="increasing"):
        samplers.sample(den, z, [1.0, 0.0], "ancestral")
    with pytest.raises(ValueError, match="increasing"):
        samplers.sample(den, z, [1.0, 0.0], "ddim", eta=0.5)
    with pytest.raises(ValueError, match="monotone"):
        samplers.sample(den, z, [0.0, 1.0, 0.5], "flow")
    with pytest.raises(ValueError, match="finite"):
        samplers.sample(den, z, [0.0, float("nan")], "flow")
    with pytest.raises(ValueError, match="unknown sampling method"):
        samplers.sample(den, z, [0.0, 1.0], "euler")
    with pytest.raises(ValueError, match="unknown flow solver"):
        samplers.sample(den, z, [0.0, 1.0], "flow", solver="rk4")
    with pytest.raises(ValueError, match="eta"):
        samplers.sample(den, z, [0.0, 1.0], "ddim", eta=-1.0)
    with pytest.raises(ValueError, match="floating-point"):
        samplers.sample(den, z.long(), [0.0, 1.0], "flow")
