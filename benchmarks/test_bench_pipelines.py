"""Encode and decode of every pipeline this build has (pytest-benchmark), at 768x512 and a
0.25 bpp ceiling (quick mode: 128x96), each with its shipped default model: one group for the
encoders, one for the decoders. The pipelines whose model calls take a precision (DiffC, DIRAC)
run in float32 and in bfloat16 (the default where the CPU has it natively), in the same group.
A pipeline without a shipped model is skipped with the reason
(DIRAC, CDC: python/fastdiffc/weights/{dirac,cdc}.safetensors). DIRAC and CDC also decode at
their issues' step budgets (DIRAC 20, CDC 8). The image is scikit-image's astronaut
(what `fastdiffc bench pipeline` uses) or, without scikit-image, the bundled sample, resized.

    python -m pytest benchmarks/test_bench_pipelines.py -o addopts="" --benchmark-only
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from fastdiffc.pipelines import available_pipelines, load_codec
from PIL import Image

pytestmark = pytest.mark.quick

BPP = 0.25
WEIGHTS = Path(__import__("fastdiffc").__file__).parent / "weights"
SAMPLE = WEIGHTS.parent / "samples" / "sample.png"


@pytest.fixture(scope="module")
def photo(image_hw):
    h, w = image_hw
    try:
        from skimage import data

        im = Image.fromarray(data.astronaut())
    except ImportError:
        im = Image.open(SAMPLE)
    return im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)


_ENCODED: dict = {}
WITH_PRECISION = ("diffc", "dirac")  # codecs taking precision=
CASES = [(name, prec) for name in available_pipelines()
         for prec in (("float32", "bfloat16") if name in WITH_PRECISION else (None,))]
IDS = [name if prec is None else f"{name}-{prec}" for name, prec in CASES]


def _codec_and_file(name, prec, photo):
    """(codec, compressed bytes) of a pipeline, or a skip with the reason it cannot run here."""
    if name in ("dirac", "cdc") and not (WEIGHTS / f"{name}.safetensors").exists():
        pytest.skip(f"no shipped {name} model (python/fastdiffc/weights/{name}.safetensors)")
    if (name, prec) not in _ENCODED:
        try:
            codec = load_codec(name, **({} if prec is None else {"precision": prec}))
            _ENCODED[name, prec] = (codec, codec.compress(photo, bpp=BPP))
        except (ValueError, FileNotFoundError, KeyError) as e:
            _ENCODED[name, prec] = (None, f"{type(e).__name__}: {e}")
    codec, data = _ENCODED[name, prec]
    if codec is None:
        pytest.skip(f"{name} cannot encode with its default model here: {data}")
    return codec, data


def _info(benchmark, codec, data, photo):
    from fastdiffc import container

    benchmark.extra_info.update(bytes=len(data), bpp=8 * len(data) / (photo.width * photo.height),
                                precision=container.read(data).header.precision, threads=torch.get_num_threads())


@pytest.mark.parametrize("name,prec", CASES, ids=IDS)
def test_encode(benchmark, measure, photo, name, prec):
    codec, data = _codec_and_file(name, prec, photo)
    benchmark.group = f"encode {photo.width}x{photo.height} <= {BPP} bpp"
    _info(benchmark, codec, data, photo)
    out = measure(lambda: codec.compress(photo, bpp=BPP), rounds=2, warmup=0)
    assert out == data  # deterministic


@pytest.mark.parametrize("name,prec", CASES, ids=IDS)
def test_decode(benchmark, measure, photo, name, prec):
    codec, data = _codec_and_file(name, prec, photo)
    benchmark.group = f"decode {photo.width}x{photo.height} <= {BPP} bpp"
    _info(benchmark, codec, data, photo)
    img = measure(lambda: codec.decompress(data), rounds=2, warmup=0)
    assert img.size == photo.size
    benchmark.extra_info["psnr"] = float(10 * np.log10(255**2 / np.mean(
        (np.asarray(img, np.float64) - np.asarray(photo, np.float64)) ** 2)))


# The decode budgets of the DIRAC and CDC issues are stated at these step counts.
DIFFUSION_DECODE_STEPS = {"dirac": 20, "cdc": 8}


@pytest.mark.parametrize("name,prec", [c for c in CASES if c[0] in DIFFUSION_DECODE_STEPS],
                         ids=[i for c, i in zip(CASES, IDS) if c[0] in DIFFUSION_DECODE_STEPS])
def test_decode_diffusion_steps(benchmark, measure, photo, name, prec):
    codec, data = _codec_and_file(name, prec, photo)
    steps = DIFFUSION_DECODE_STEPS[name]
    benchmark.group = f"decode {photo.width}x{photo.height} <= {BPP} bpp, diffusion steps"
    _info(benchmark, codec, data, photo)
    benchmark.extra_info["decode_steps"] = steps
    img = measure(lambda: codec.decompress(data, decode_steps=steps), rounds=2, warmup=0)
    assert img.size == photo.size
