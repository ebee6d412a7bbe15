"""Diffusion-core speed (pytest-benchmark): the analytic Gaussian denoiser (float64 DCT Wiener filter)
and the sampler updates. Run: python -m pytest benchmarks/test_bench_diffusion.py --benchmark-only"""

import pytest
import torch
from fastdiffc.diffusion import samplers
from fastdiffc.kernels import sampler_updates as su
from fastdiffc.models.gaussian import GaussianDenoiser


@pytest.fixture(scope="module")
def gaussian():
    return GaussianDenoiser.power_law()


@pytest.mark.parametrize("hw", [(512, 768), (128, 128)])
def test_gaussian_denoiser_forward(benchmark, gaussian, hw):
    z = torch.randn(1, 3, *hw)
    lam = torch.tensor([2.0])
    out = benchmark.pedantic(lambda: gaussian(z, lam), rounds=3, warmup_rounds=1)
    assert out.shape == z.shape


def test_ancestral_update_512x768(benchmark):
    z, x, n = (torch.randn(1, 3, 512, 768) for _ in range(3))
    out = benchmark(su.ancestral_update, z, x, n, 0.9, 0.3, 0.1)
    assert out.shape == z.shape


def test_flow_sampler_10_heun_steps_128(benchmark, gaussian):
    z = torch.randn(1, 3, 128, 128)
    lam = torch.linspace(0.0, 12.0, 11)
    out = benchmark.pedantic(lambda: samplers.sample(gaussian, z, lam, "flow"), rounds=2, warmup_rounds=0)
    assert out.shape == z.shape
