"""UNet denoiser forward (pytest-benchmark): float32 against bfloat16 autocast
(`fastdiffc.precision.autocast`) in one group, at 768x512 (quick mode: 128x96), with the
shipped UNet's architecture (random weights: the time does not depend on them). Budget
(docs/design.md §10): a 768x512 forward in about 1 s on 2 threads of the dev machine.

    python -m pytest benchmarks/test_bench_unet.py -o addopts="" --benchmark-only
"""

import pytest
import torch
from fastdiffc import precision
from fastdiffc.models.unet import UNet, UNetDenoiser

pytestmark = pytest.mark.quick


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    den = UNetDenoiser(UNet()).eval()
    den.net.to(memory_format=torch.channels_last)
    return den


@pytest.mark.parametrize("prec", ["float32", "bfloat16"])
def test_unet_forward(benchmark, measure, denoiser, image_hw, prec):
    h, w = image_hw
    benchmark.group = f"unet forward {w}x{h}"
    benchmark.extra_info.update(precision=prec, hardware_bfloat16=precision.hardware_bfloat16(),
                                threads=torch.get_num_threads())
    z = torch.randn(1, 3, h, w).contiguous(memory_format=torch.channels_last)
    lam = torch.tensor([2.0])

    def forward():
        with torch.inference_mode(), precision.autocast(prec):
            return denoiser(z, lam)

    out = measure(forward, rounds=3)
    assert out.shape == z.shape and torch.isfinite(out).all()
