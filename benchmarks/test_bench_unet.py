"""UNet denoiser speed (pytest-benchmark). Budget (docs/design.md §10): a 768×512 forward in about 1 s
on 2 threads of the dev machine. Run: python -m pytest benchmarks/test_bench_unet.py --benchmark-only"""

import pytest
import torch
from fastdiffc.models.unet import UNet, UNetDenoiser


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    den = UNetDenoiser(UNet()).eval()
    den.net.to(memory_format=torch.channels_last)
    return den


@pytest.mark.parametrize("hw", [(512, 768), (128, 128)])
def test_unet_forward(benchmark, denoiser, hw):
    z = torch.randn(1, 3, *hw).contiguous(memory_format=torch.channels_last)
    lam = torch.tensor([2.0])

    def forward():
        with torch.inference_mode():
            return denoiser(z, lam)

    out = benchmark.pedantic(forward, rounds=3, warmup_rounds=1)
    assert out.shape == z.shape
