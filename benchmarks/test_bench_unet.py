"""Model forward (pytest-benchmark) of every shipped UNet — DiffC's `unet` (the learned part of the
default `hybrid`) and DIRAC's residual model — at 768x512 (quick mode: 128x96): float32 against
bfloat16 autocast (`fastdiffc.precision.for_model`, what the pipelines run), each in NCHW and
channels_last, all four in one group per model so they are compared within one run. CDC ships no
model yet. The error of each variant against the float32 NCHW output goes into extra_info
(max_abs_error, rmse, in [-1, 1] image units). Budget (docs/design.md §10): a 768x512 forward in
about 1 s on 2 threads of the dev machine.

    python -m pytest benchmarks/test_bench_unet.py -o addopts="" --benchmark-only
"""

import pytest
import torch
from fastdiffc import precision
from fastdiffc.errors import ModelNotFoundError

pytestmark = pytest.mark.quick

MODELS = {"diffc unet": "unet", "dirac residual": "dirac"}
VARIANTS = [("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True)]
LOGSNR = 2.0  # mid-schedule: both models do real work there


@pytest.fixture(scope="module")
def models():
    return {}


def _setup(models, label: str, image_hw):
    """(model, (z, λ, cond), float32 NCHW reference output) of a shipped model, loaded once."""
    if label not in models:
        from fastdiffc.models.registry import load_model

        try:
            model = load_model(MODELS[label])
        except (ModelNotFoundError, FileNotFoundError) as e:
            pytest.skip(f"{label}: no shipped model ({e})")
        h, w = image_hw
        g = torch.Generator().manual_seed(0)
        z = torch.randn(1, 3, h, w, generator=g)
        cond = None
        if getattr(model, "kind", None) == "dirac":  # a base reconstruction and its rate, as DIRAC passes them
            cond = model.conditioning((torch.rand(1, 3, h, w, generator=g) * 2 - 1), "avif", 0.25, None)
        args = (z, torch.full((1,), LOGSNR), cond)
        model.use_channels_last(False)
        with torch.inference_mode():
            ref = model(*args).float()
        models[label] = (model, args, ref)
    return models[label]


@pytest.mark.parametrize("prec,channels_last", VARIANTS, ids=[f"{p}-{'nhwc' if c else 'nchw'}" for p, c in VARIANTS])
@pytest.mark.parametrize("label", list(MODELS))
def test_model_forward(benchmark, measure, models, image_hw, label, prec, channels_last):
    model, args, ref = _setup(models, label, image_hw)
    h, w = image_hw
    benchmark.group = f"{label} forward {w}x{h}"
    model.use_channels_last(channels_last)
    call = precision.for_model(model, prec)

    def forward():
        with torch.inference_mode():
            return call(*args)

    out = measure(forward, rounds=3)
    err = (out - ref).abs()
    benchmark.extra_info.update(precision=prec, channels_last=channels_last, threads=torch.get_num_threads(),
                                hardware_bfloat16=precision.hardware_bfloat16(),
                                max_abs_error=float(err.max()), rmse=float(err.pow(2).mean().sqrt()))
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # float32 in either layout is the same maths; bfloat16 stays within a grey level on average.
    assert float(err.pow(2).mean().sqrt()) < (1e-4 if prec == "float32" else 2 / 255)
