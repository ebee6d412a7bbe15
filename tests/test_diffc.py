"""DiffC pipeline: bit-exact round trips, determinism, golden bitstream, progressive decoding, bad input.

Small images (32x48) and a coarse grid keep the file fast. Two models are used: the analytic
Gaussian image model of fastdiffc.models.gaussian (a real photo model), and `PixelGaussian`,
an exact i.i.d.-per-pixel Gaussian denoiser defined here so that the golden bitstream pins
the pipeline, RCC and container, not another module's model parameters.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastdiffc import container, rcc, rcc_numpy
from fastdiffc.errors import (
    DecodeBudgetError,
    FormatError,
    InvalidFieldError,
    MissingModelError,
    ModelMismatchError,
    TruncatedError,
    UnknownPipelineError,
    UnsupportedVersionError,
)
from fastdiffc.image_io import psnr, tensor_to_pil
from fastdiffc.pipelines import PIPELINES, codec_class, load_codec
from fastdiffc.pipelines.diffc import DiffCCodec, DiffCSettings
from PIL import Image

HERE = Path(__file__).parent
SAMPLE = HERE.parent / "python" / "fastdiffc" / "samples" / "sample.png"
GOLDEN = HERE / "golden"
# A linear log-SNR grid with Δλ = 1 and low rates: few RCC chunks, so even the numpy RCC backend is quick.
SETTINGS = dict(seed=7, schedule="linear", logsnr_min=-10.0, logsnr_max=4.0, grid_steps=14,
                bits_per_chunk=8, margin=3.0)


class PixelGaussian(torch.nn.Module):
    """Exact posterior mean for x ~ N(m, v I) per colour channel: x̂0 = m + α v (z − α m) / (α² v + σ²)."""

    name = "pixel-gaussian-test"
    content_hash = 0x0DDBA11C0FFEE123

    def __init__(self, mean=(0.1, 0.0, -0.2), var=(0.2, 0.15, 0.25)):
        super().__init__()
        self.m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
        self.v = torch.tensor(var, dtype=torch.float64).view(1, 3, 1, 1)

    def forward(self, z, logsnr, cond=None):
        lam = torch.as_tensor(logsnr, dtype=torch.float64).reshape(-1, 1, 1, 1)
        a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
        a = a2.sqrt()
        return (self.m + a * self.v * (z.double() - a * self.m) / (a2 * self.v + s2)).to(z.dtype)


def gaussian_model():
    from fastdiffc.models.gaussian import GaussianDenoiser

    g = GaussianDenoiser.power_law()
    g.name = "gaussian-powerlaw-test"
    return g


def tiny_unet():
    """A randomly initialised small UNet (conv, GroupNorm, SiLU, attention): the learned-model code path."""
    from fastdiffc.models.unet import UNet, UNetDenoiser

    torch.manual_seed(0)
    net = UNet(base_channels=16, channel_mults=(1, 2), attn_head_dim=16)
    return UNetDenoiser(net, name="tiny-unet-test", content_hash=0x1234).eval().requires_grad_(False)


def busy_unet():
    """tiny_unet with its zero-initialised layers (residual branches, attention output, output conv)
    drawn at random too, so every layer reaches the output as in a trained model and a change of
    precision shows (the freshly initialised net returns v̂ = 0 whatever it computes in)."""
    den = tiny_unet()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in den.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return den


def photo_crop(h=32, w=48, top=60, left=150) -> np.ndarray:
    """A crop of the bundled sample photograph (a real photo: the ladybird on its stem)."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))[top : top + h, left : left + w].copy()


@pytest.fixture(scope="module")
def photo_encoding():
    codec = DiffCCodec(gaussian_model(), recon_steps=6, **SETTINGS)
    data, enc = codec.encode_image(photo_crop(), steps=12)
    return codec, data, enc


# ---------------------------------------------------------------------------- round trip


def test_round_trip_final_latent_bit_exact(photo_encoding):
    codec, data, enc = photo_encoding
    z, lam, f, settings, _ = codec.decode_latent(data)
    assert z.dtype == torch.float32 and torch.equal(z, enc.z)
    assert lam == settings.grid()[12] and len(f.segments) == 12
    img = codec.decompress(data)
    assert img.size == (48, 32) and img.mode == "RGB"
    # The communicated latent carries the photo: the reconstruction beats decoding nothing (step 0).
    assert psnr(img, photo_crop()) > psnr(codec.decompress(data, max_steps=0), photo_crop()) + 2


def test_flow_logsnr_offset_starts_the_ode_lower(photo_encoding):
    from fastdiffc.pipelines.diffc import flow_start, reconstruct

    codec, data, _ = photo_encoding
    z, lam, _, settings, model = codec.decode_latent(data, max_steps=6)
    assert codec.flow_logsnr_offset == 0.25  # the shipped default
    ref = reconstruct(model, z, lam - 0.25, settings, method="flow", recon_steps=6, solver="dpm++2m")
    got = reconstruct(model, z, lam, settings, method="flow", recon_steps=6, solver="dpm++2m",
                      flow_logsnr_offset=0.25)
    assert torch.equal(got, ref)
    assert np.array_equal(np.asarray(codec.decompress(data, max_steps=6)), np.asarray(tensor_to_pil(ref)))
    plain = DiffCCodec(gaussian_model(), recon_steps=6, flow_logsnr_offset=0.0)
    assert not np.array_equal(np.asarray(plain.decompress(data, max_steps=6)),
                              np.asarray(codec.decompress(data, max_steps=6)))
    # The denoiser mean takes no offset; progressive decoding applies the same one as decompress.
    assert np.array_equal(np.asarray(plain.decompress(data, method="denoise")),
                          np.asarray(codec.decompress(data, method="denoise")))
    assert np.array_equal(np.asarray(codec.decompress_progressive(data, [6])[6]),
                          np.asarray(codec.decompress(data, max_steps=6)))
    # Kept inside the schedule: clamped at λ_min, nothing to integrate at the clean end.
    assert flow_start(settings, settings.logsnr_min + 0.1, 0.25) == settings.logsnr_min
    assert flow_start(settings, settings.logsnr_max, 0.25) == settings.logsnr_max
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="offset"):
            DiffCCodec(gaussian_model(), flow_logsnr_offset=bad)


def test_every_intermediate_latent_matches():
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    sent = {}
    from fastdiffc.pipelines import diffc

    enc = diffc.encode(codec.model_for_encoding(), torch.from_numpy(photo_crop()).permute(2, 0, 1)[None] / 127.5 - 1,
                       codec.settings, steps=8, on_step=lambda k, z: sent.__setitem__(k, z.clone()))
    got = {}
    diffc.replay(codec.model_for_encoding(), enc.segments, (1, 3, 32, 48), codec.settings,
                 on_step=lambda k, z: got.__setitem__(k, z))
    assert sorted(sent) == sorted(got) == list(range(1, 9))
    assert all(torch.equal(sent[k], got[k]) for k in sent)


def test_float64_pipeline_round_trip():
    codec = DiffCCodec(gaussian_model(), dtype="float64", **SETTINGS)
    data, enc = codec.encode_image(photo_crop(16, 24), steps=6)
    z, *_ = codec.decode_latent(data)
    assert z.dtype == torch.float64 and torch.equal(z, enc.z)


def test_same_bytes_across_runs_and_thread_counts():
    """Compress in fresh processes with 1 and 2 OpenMP/torch threads: identical bytes (Gaussian image
    model, exact pixel model, and a small random UNet — convolutions, GroupNorm, attention)."""
    code = (
        "import sys, hashlib, torch; sys.path.insert(0, {tests!r}); torch.set_num_threads({n});"
        "import test_diffc as t; from fastdiffc.pipelines.diffc import DiffCCodec;"
        "d1 = DiffCCodec(t.gaussian_model(), **t.SETTINGS).compress(t.photo_crop(), steps=8);"
        "d2 = DiffCCodec(t.PixelGaussian(), **t.SETTINGS).compress(t.photo_crop(), steps=8);"
        "d3 = DiffCCodec(t.tiny_unet(), **t.SETTINGS).compress(t.photo_crop(), steps=8);"
        "print(hashlib.md5(d1).hexdigest(), hashlib.md5(d2).hexdigest(), hashlib.md5(d3).hexdigest())"
    )
    outs = []
    for n in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        r = subprocess.run([sys.executable, "-c", code.format(tests=str(HERE), n=n)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.split())
    here = [hashlib.md5(DiffCCodec(m, **SETTINGS).compress(photo_crop(), steps=8)).hexdigest()
            for m in (gaussian_model(), PixelGaussian(), tiny_unet())]
    assert outs[0] == outs[1] == here


# ---------------------------------------------------------------------------- golden bitstream


def _golden_bytes() -> bytes:
    # float32 pinned: the golden file is a float32 file whatever the default precision becomes; written
    # before the output filter (parameter version 5), so without it.
    return DiffCCodec(PixelGaussian(), precision="float32", **SETTINGS).compress(photo_crop(), steps=10,
                                                                                 no_filter=True)


def _pixels_md5(img) -> str:
    return hashlib.md5(np.asarray(img).tobytes()).hexdigest()


def check_golden(name: str, data: bytes, params_version: int, codec) -> None:
    """GOLDEN/name.fdc is what the encoder writes today (`data`), a float32 container-v2 file with
    that parameter version, and `codec` decodes it to the recorded pixels with every method
    (ancestral: the Philox noise is pinned too)."""
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert hashlib.md5(data).hexdigest() == expected["fdc_md5"], "encoder output drifted from the golden bitstream"
    stored = (GOLDEN / f"{name}.fdc").read_bytes()
    assert hashlib.md5(stored).hexdigest() == expected["fdc_md5"]
    f = container.read(stored)
    assert (f.version, f.header.params_version, f.header.precision) == (2, params_version, "float32")
    for method in ("denoise", "flow", "ancestral"):
        assert _pixels_md5(codec.decompress(stored, method=method)) == expected[f"{method}_pixels_md5"], method


def test_golden_bitstream():
    check_golden("diffc_v2_pixel_gaussian_32x48", _golden_bytes(), 2,
                 DiffCCodec(PixelGaussian(), recon_steps=4, precision="float32", **SETTINGS))


def test_v1_golden_file_still_decodes():
    """A file written before container v2 (numpy PCG64 z_0, DiffC parameters v1) decodes to the
    pixels recorded when it was written, and rewriting it as v2 keeps its decoding."""
    expected = json.loads((GOLDEN / "diffc_v1_pixel_gaussian_32x48.json").read_text())
    stored = (GOLDEN / "diffc_v1_pixel_gaussian_32x48.fdc").read_bytes()
    assert hashlib.md5(stored).hexdigest() == expected["fdc_md5"]
    f = container.read(stored)
    assert (f.version, f.header.params_version, f.header.precision) == (1, 1, "float32")
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    img = codec.decompress(stored, method="denoise")
    assert _pixels_md5(img) == expected["denoise_png_pixels_md5"]
    as_v2 = container.truncate_to_steps(stored, len(f.segments))
    assert as_v2[3] == 2 and _pixels_md5(codec.decompress(as_v2, method="denoise")) == _pixels_md5(img)
    # Its z_0 is numpy's PCG64 draw, not the Philox stream of version 2.
    v1 = DiffCSettings.from_bytes(f.header.params, 1)
    z1 = diffc_module().initial_latent((1, 3, 4, 4), v1)
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([v1.seed, 0x44696666])))
    assert np.array_equal(z1.numpy().ravel(), gen.standard_normal(48).astype(np.float32))


def diffc_module():
    from fastdiffc.pipelines import diffc

    return diffc


# ---------------------------------------------------------------------------- shared randomness


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 4608, 100_003])
def test_normal_stream_cpp_equals_numpy(n):
    for seed, domain, stream in [(0, 3, 0), ((1 << 64) - 1, 4, 5), (7, 15, (1 << 32) - 1)]:
        cpp = rcc.normal_stream(seed, domain, n, stream=stream, backend="cpp")
        ref = rcc.normal_stream(seed, domain, n, stream=stream, backend="numpy")
        assert cpp.dtype == ref.dtype == np.float32 and np.array_equal(cpp, ref)
        wide = rcc.normal_stream(seed, domain, n, stream=stream, dtype=np.float64)
        assert wide.dtype == np.float64 and np.array_equal(wide, cpp.astype(np.float64))


def test_normal_stream_statistics_and_independence():
    a = rcc.normal_stream(1, rcc_numpy.DOMAIN_LATENT, 200_000)
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1) < 0.01
    others = [rcc.normal_stream(2, 3, 1000), rcc.normal_stream(1, 4, 1000), rcc.normal_stream(1, 3, 1000, stream=1)]
    assert all(abs(np.corrcoef(a[:1000], o)[0, 1]) < 0.15 for o in others)
    assert np.array_equal(rcc.normal_stream(1, 3, 10), a[:10])  # a prefix of a longer stream


@pytest.mark.parametrize("kw,match", [
    (dict(domain=2), "domain"), (dict(domain=16), "domain"), (dict(n=-1), "n must"), (dict(stream=1 << 32), "stream"),
    (dict(seed=-1), "seed"), (dict(dtype=np.float16), "dtype"),
])
def test_normal_stream_rejects_bad_arguments(kw, match):
    args = dict(seed=1, domain=3, n=4)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        rcc.normal_stream(**args)


def test_v2_z0_and_sampling_noise_are_philox_streams():
    from fastdiffc.pipelines.diffc import PhiloxNoise, initial_latent

    settings = DiffCSettings(**SETTINGS)
    z0 = initial_latent((1, 3, 5, 7), settings)
    assert z0.dtype == torch.float32
    assert np.array_equal(z0.numpy().ravel(), rcc_numpy.normal_stream(7, rcc_numpy.DOMAIN_LATENT, 105))
    z64 = initial_latent((1, 3, 5, 7), DiffCSettings(**{**SETTINGS, "dtype": "float64"}))
    assert z64.dtype == torch.float64 and torch.equal(z64.float(), z0)
    noise = PhiloxNoise(7)
    first, second = noise(z0), noise(z0)
    assert np.array_equal(first.numpy().ravel(), rcc_numpy.normal_stream(7, rcc_numpy.DOMAIN_SAMPLER, 105, 0))
    assert np.array_equal(second.numpy().ravel(), rcc_numpy.normal_stream(7, rcc_numpy.DOMAIN_SAMPLER, 105, 1))


def test_ancestral_decoding_is_reproducible_and_seeded(photo_encoding):
    codec, data, _ = photo_encoding
    a = np.asarray(codec.decompress(data, method="ancestral", max_steps=6))
    assert np.array_equal(a, np.asarray(codec.decompress(data, method="ancestral", max_steps=6)))
    assert not np.array_equal(a, np.asarray(codec.decompress(data, method="flow", max_steps=6)))


# ---------------------------------------------------------------------------- progressive


def test_every_prefix_decodes_and_quality_grows(photo_encoding):
    codec, data, enc = photo_encoding
    x = photo_crop()
    sizes = container.step_file_sizes(data)
    prev = {"denoise": -np.inf, "flow": -np.inf}
    by_method = {m: codec.decompress_progressive(data, range(13), method=m) for m in prev}
    first = {m: psnr(by_method[m][0], x) for m in prev}
    for k in range(13):
        part = container.truncate_to_steps(data, k)
        assert len(part) == sizes[k]
        z, *_ = codec.decode_latent(part)
        z_max, *_ = codec.decode_latent(data, max_steps=k)
        assert torch.equal(z, z_max)
        for m in prev:
            img = by_method[m][k]
            if k in (0, 6, 12):  # the one-pass progressive decoder agrees with decoding a truncated file
                assert np.array_equal(np.asarray(img), np.asarray(codec.decompress(part, method=m)))
            q = psnr(img, x)
            assert q >= prev[m] - 0.05, f"{m} PSNR fell from {prev[m]:.2f} to {q:.2f} dB at step {k}"
            prev[m] = q
    assert prev["denoise"] > first["denoise"] + 2 and prev["flow"] > first["flow"] + 2


def test_truncated_file_decodes_complete_prefix(photo_encoding):
    codec, data, enc = photo_encoding
    head = len(data) - sum(len(s) for s in enc.segments) - 4  # header bytes
    cut = head + sum(len(s) for s in enc.segments[:5]) + 3  # 5 complete steps and 3 bytes of the 6th
    with pytest.raises(FormatError, match="truncated"):
        codec.decompress(data[:cut])
    z, *_ = codec.decode_latent(data[:cut], allow_truncated=True)
    z5, *_ = codec.decode_latent(data, max_steps=5)
    assert torch.equal(z, z5)
    assert codec.decompress(data[:cut], allow_truncated=True).size == (48, 32)


def test_bpp_is_a_ceiling():
    """The file is the largest prefix of whole steps (with its output filter: its size depends only on
    the steps) whose size is <= bpp·H·W/8 bytes; without the filter, a truncation of the full file."""
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    x = photo_crop()
    full = codec.compress(x, steps=SETTINGS["grid_steps"])
    files = codec.prefix_files(x, full, range(1, SETTINGS["grid_steps"] + 1))  # what compress(steps=k) writes
    sizes = [0] + [len(files[k][0]) for k in range(1, SETTINGS["grid_steps"] + 1)]
    plain = codec.compress(x, steps=SETTINGS["grid_steps"], no_filter=True)
    # the filter's block (steps varint, id, 21 int16) and the version-5 tiling/tree fields (4 varints)
    assert [s - t for s, t in zip(sizes[1:], container.step_file_sizes(plain)[1:])] == [48] * SETTINGS["grid_steps"]
    for k in (1, 5, 9):
        for ceiling in (sizes[k], sizes[k + 1] - 1):  # exactly fitting, and one byte short of the next step
            bpp = ceiling * 8 / (32 * 48)
            data = codec.compress(x, bpp=bpp)
            assert len(data) == sizes[k] <= bpp * 32 * 48 / 8, (k, ceiling)
            assert data == files[k][0]
            assert codec.compress(x, bpp=bpp - 48 * 8 / (32 * 48), no_filter=True) == \
                container.truncate_to_steps(plain, k)
    assert codec.compress(x, bpp=1000.0) == full  # the whole grid fits
    smallest = sizes[1] * 8 / (32 * 48)
    with pytest.raises(ValueError, match=f"smallest file.*{smallest:.4g} bpp"):
        codec.compress(x, bpp=smallest * 0.99)
    with pytest.raises(ValueError, match="smallest"):
        codec.compress(x, bpp=0.0)
    # encode_image's Encoding matches the file: its final latent is the kept step's.
    data, enc = codec.encode_image(x, bpp=sizes[5] * 8 / (32 * 48))
    assert enc.steps == 5 and torch.equal(codec.decode_latent(data)[0], enc.z)


# ---------------------------------------------------------------------------- images


def test_greyscale_round_trip_gives_greyscale():
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    grey = Image.fromarray(photo_crop()).convert("L")
    data = codec.compress(grey, steps=6)
    assert container.read_header(data)[0].channels == 1
    out = codec.decompress(data, method="denoise")
    assert out.mode == "L" and out.size == grey.size
    assert psnr(out, grey) > 15


def test_input_kinds_agree():
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    arr = photo_crop(8, 12)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    outs = {codec.compress(v, steps=4) for v in (arr, Image.fromarray(arr), t, Image.fromarray(rgba), rgba)}
    assert len(outs) == 1


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (5, 3), (17, 33)])
def test_tiny_and_odd_sizes(h, w):
    codec = DiffCCodec(gaussian_model(), **SETTINGS)
    data, enc = codec.encode_image(photo_crop(h, w), steps=5)
    z, *_ = codec.decode_latent(data)
    assert torch.equal(z, enc.z)
    assert codec.decompress(data).size == (w, h)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((4, 4, 2), np.uint8), "channels"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
    (Image.new("CMYK", (4, 4)), "unsupported image mode"),
    (Image.new("I", (4, 4)), "unsupported image mode"),  # 32-bit integer (16-bit I;16 is rounded to 8)
    (Image.new("F", (4, 4)), "unsupported image mode"),
    (Image.new("RGBA", (4, 4), (1, 2, 3, 100)), "transparency"),
    (Image.new("LA", (4, 4), (1, 100)), "transparency"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), "float"),
    (torch.full((3, 4, 4), 2.0), r"\[-1, 1\]"),
    (torch.full((3, 4, 4), float("nan")), "NaN"),
    (torch.zeros(2, 3, 4, 4), "batch"),
    (torch.zeros(4, 4, 4), "channels"),
])
def test_bad_images_rejected(bad, match):
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    with pytest.raises(ValueError, match=match):
        codec.compress(bad, steps=1)


def test_non_image_file_rejected(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image")
    with pytest.raises(ValueError, match="not an image"):
        DiffCCodec(PixelGaussian(), **SETTINGS).compress(str(p), steps=1)


# ---------------------------------------------------------------------------- bad files and settings


def test_mismatched_model_rejected(photo_encoding):
    _, data, _ = photo_encoding
    with pytest.raises(ModelMismatchError, match="gaussian-powerlaw-test"):
        DiffCCodec(PixelGaussian(), **SETTINGS).decompress(data)


def _diffc_header(params: bytes, **kw) -> container.Header:
    args = dict(pipeline="diffc", models=(container.ModelRef("denoiser", PixelGaussian.name,
                                                            PixelGaussian.content_hash),),
                height=4, width=4, channels=3, precision="float32", params_version=2, params=params)
    args.update(kw)
    return container.Header(**args)


def test_other_pipeline_and_bad_params_rejected():
    h = _diffc_header(b"", pipeline="cdc")
    with pytest.raises(UnknownPipelineError, match="cdc"):
        DiffCCodec(PixelGaussian()).decompress(container.write(h, []))
    good = DiffCSettings(**SETTINGS).to_bytes()
    v1 = DiffCSettings(**SETTINGS, params_version=1).to_bytes()
    assert v1 == good + b"\x00"  # version 1 = version 2 + the dtype byte
    v4 = good + b"\0\0\0\0"
    v5 = DiffCSettings(**SETTINGS).with_filter(3, range(-10, 11)).to_bytes()
    assert v5[:len(v4) + 2] == v4 + b"\x03\x01" and len(v5) == len(v4) + 2 + 42
    cases = [
        (dict(params=good[:-1]), FormatError, "truncated"),
        (dict(params=good + b"\0"), FormatError, "trailing"),
        (dict(params=good[:-1] + b"\x09"), InvalidFieldError, "RCC scheme id 9"),
        (dict(params=v1[:-1] + b"\x09", params_version=1), InvalidFieldError, "dtype id 9"),
        (dict(params=v1[:-1] + b"\x01", params_version=1), InvalidFieldError, "float64 but the header"),
        (dict(params=good, params_version=6), UnsupportedVersionError, "parameter block version 6"),
        # version 5 = version 4 (here untiled, flat: 4 zero varints) + the filter's steps and block
        (dict(params=v5[:-1], params_version=5), TruncatedError, "output filter coefficients"),
        (dict(params=v5 + b"\0", params_version=5), FormatError, "trailing"),
        (dict(params=v4 + b"\x03\x02" + v5[-42:], params_version=5), InvalidFieldError, "output filter 2 is unknown"),
        (dict(params=v4 + bytes([SETTINGS["grid_steps"] + 1]) + v5[-43:], params_version=5), InvalidFieldError,
         "filter_steps must be an integer in 0..grid_steps"),
        (dict(params=v4 + b"\x00" + v5[-43:], params_version=5), FormatError, "trailing"),
        (dict(params=good, params_version=3), TruncatedError, "tile"),  # version 3 = version 2 + tiling
        (dict(params=good + b"\x08\x00", params_version=3), InvalidFieldError, "tile must be a multiple of 16"),
        (dict(params=v1, params_version=1, precision="bfloat16"), InvalidFieldError,
         "float32 but the header's precision is bfloat16"),  # version-1 files predate bfloat16
        (dict(params=good, models=()), InvalidFieldError, "no denoiser"),
        (dict(params=DiffCSettings(**{**SETTINGS, "seed": 3}).to_bytes().replace(
            np.float32(4.0).tobytes(), np.float32(2560.0).tobytes())), InvalidFieldError, "2560"),
        (dict(params=good, height=8192, width=8193), DecodeBudgetError, "8193x8192"),
    ]
    for kw, error, match in cases:
        data = container.write(_diffc_header(**kw), [])
        with pytest.raises(error, match=match):
            DiffCCodec(PixelGaussian()).decompress(data)


def test_file_naming_a_missing_model_says_which():
    h = _diffc_header(DiffCSettings(**SETTINGS).to_bytes(),
                      models=(container.ModelRef("denoiser", "no-such-model", 0xABCDEF0123456789),))
    with pytest.raises(MissingModelError, match="no-such-model.*abcdef0123456789") as e:
        DiffCCodec().decompress(container.write(h, []))
    assert isinstance(e.value, FormatError) and isinstance(e.value, ValueError)


def test_corrupt_segment_is_an_error_not_a_crash(photo_encoding):
    codec, data, enc = photo_encoding
    f = container.read(data)
    for i, pos, match in [(0, 0, "chunks"), (3, 0, "chunks"), (11, 100, "corrupt"), (11, -5, "corrupt")]:
        segs = list(f.segments)
        seg = bytearray(segs[i])
        if pos == 0:
            seg[:3] = b"\xff" * 3  # an absurd chunk count
        else:
            seg[pos] ^= 0x04  # one flipped bit inside the entropy-coded indices
        segs[i] = bytes(seg)
        with pytest.raises(FormatError, match=match):
            codec.decode_latent(container.write(f.header, segs))
    segs = list(f.segments) + [b"\x00"] * 20
    with pytest.raises(FormatError, match="grid"):
        codec.decode_latent(container.write(f.header, segs))


def test_settings_validation_and_header_round_trip():
    s = DiffCSettings(seed=(1 << 64) - 1, schedule="linear", logsnr_min=-12.3, logsnr_max=9.1, grid_steps=300,
                      bits_per_chunk=14, margin=1.5, scheme="importance", dtype="float64")
    assert DiffCSettings.from_bytes(s.to_bytes(), 2, "float64") == s
    old = DiffCSettings(**{**SETTINGS, "dtype": "float64", "params_version": 1})
    assert DiffCSettings.from_bytes(old.to_bytes(), 1, "float64") == old
    assert s.logsnr_min == float(np.float32(-12.3))
    assert len(DiffCSettings().to_bytes()) <= 16
    for bad, match in [(dict(seed=-1), "seed"), (dict(schedule="sqrt"), "schedule"), (dict(grid_steps=0), "grid"),
                       (dict(bits_per_chunk=0), "bits_per_chunk"), (dict(margin=0.3), "margin"),
                       (dict(scheme="best"), "scheme"), (dict(dtype="float16"), "dtype"),
                       (dict(dtype="bfloat16", params_version=1), "version-1 parameter blocks record"),
                       (dict(logsnr_min=5, logsnr_max=1), "logsnr_min < logsnr_max"),
                       (dict(logsnr_max=2560.0), "logsnr_max must be a log-SNR in \\[-30, 30\\]"),
                       (dict(logsnr_min=-30.5), "logsnr_min"), (dict(params_version=3), "version")]:
        with pytest.raises(ValueError, match=match):
            DiffCSettings(**bad)
    assert DiffCSettings(logsnr_min=-30.0, logsnr_max=30.0).grid()[-1] == 30.0
    with pytest.raises(ValueError, match="writes parameter versions 2 and 3 only"):
        DiffCCodec(PixelGaussian(), params_version=1)
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    with pytest.raises(ValueError, match="steps"):
        codec.compress(photo_crop(4, 4), steps=15)
    with pytest.raises(ValueError, match="either bpp or steps"):
        codec.compress(photo_crop(4, 4), steps=2, bpp=1.0)
    with pytest.raises(ValueError, match="bpp"):
        codec.compress(photo_crop(4, 4), bpp=-1.0)
    with pytest.raises(ValueError, match="method"):
        codec.decompress(codec.compress(photo_crop(4, 4), steps=1), method="magic")


def test_float64_needs_a_model_that_runs_it():
    with pytest.raises(ValueError, match="tiny-unet-test.*cannot compute in float64"):
        DiffCCodec(tiny_unet(), dtype="float64")
    from fastdiffc.models.composite import CompositeDenoiser

    hybrid = CompositeDenoiser([gaussian_model(), tiny_unet()], [-1.5], name="hybrid-test", content_hash=9)
    with pytest.raises(ValueError, match="hybrid-test.*float64"):
        DiffCCodec(hybrid, dtype="float64")
    # By name: refused when the model is loaded, before any encoding.
    by_name = DiffCCodec("gaussian", dtype="float64")
    assert by_name.compress(photo_crop(4, 4), steps=1)[:4] == b"FDC\x02"  # the analytic model runs float64
    # A crafted float64 file for a float32-only model is a format error, not a crash.
    unet = tiny_unet()
    params = DiffCSettings(**SETTINGS, dtype="float64").to_bytes()
    h = _diffc_header(params, precision="float64", models=(container.ModelRef("denoiser", unet.name, 0x1234),))
    with pytest.raises(InvalidFieldError, match="float64"):
        DiffCCodec(unet).decompress(container.write(h, []))


# ---------------------------------------------------------------------------- precision


@pytest.fixture(scope="module")
def unet_files():
    """The same crop coded with the small UNet in float32 and in bfloat16: {precision: (bytes, Encoding)}."""
    return {p: DiffCCodec(busy_unet(), precision=p, **SETTINGS).encode_image(photo_crop(), steps=8)
            for p in ("float32", "bfloat16")}


def test_bfloat16_file_round_trips_exactly(unet_files):
    data, enc = unet_files["bfloat16"]
    assert container.read(data).header.precision == "bfloat16"
    assert DiffCCodec.describe_params(container.read(data).header)["dtype"] == "bfloat16"
    # A decoder given no precision follows the header: the sender's z_K bit for bit, in float32.
    z, *_ = DiffCCodec(busy_unet(), **SETTINGS).decode_latent(data)
    assert z.dtype == torch.float32 and torch.equal(z, enc.z)
    z_auto, *_ = DiffCCodec(busy_unet(), precision="auto", **SETTINGS).decode_latent(data)
    assert torch.equal(z_auto, enc.z)
    # bfloat16 really ran: the float32 encoder's latent differs (by model rounding only).
    z32 = unet_files["float32"][1].z
    assert not torch.equal(z32, enc.z)
    assert DiffCCodec(busy_unet(), precision="bfloat16", **SETTINGS).compress(photo_crop(), steps=8) == data


def test_float32_file_decodes_in_float32(unet_files):
    data, enc = unet_files["float32"]
    assert container.read(data).header.precision == "float32"
    for decoder in (DiffCCodec(busy_unet()), DiffCCodec(busy_unet(), precision="auto")):
        assert decoder.decode_precision(DiffCSettings(**SETTINGS)) == "float32"
        z, *_ = decoder.decode_latent(data)
        assert torch.equal(z, enc.z)


def test_explicit_receiver_precision_drifts_but_stays_in_sync(unet_files):
    """A decoder told float32 for a bfloat16 file computes in float32: its z_K differs from the
    sender's by model rounding, never by a desynchronised step (RCC decoding reads integers)."""
    data, enc = unet_files["bfloat16"]
    drifting = DiffCCodec(busy_unet(), precision="float32", recon_steps=4, **SETTINGS)
    z, *_ = drifting.decode_latent(data)
    assert not torch.equal(z, enc.z)
    assert float((z - enc.z).abs().max()) < 0.05  # a desynchronised step would be off by O(1)
    following = DiffCCodec(busy_unet(), recon_steps=4, **SETTINGS)
    a, b = np.asarray(drifting.decompress(data), np.int16), np.asarray(following.decompress(data), np.int16)
    assert np.abs(a - b).max() <= 8
    # Only float32 and bfloat16 stand in for each other: a float64 file stays float64.
    from fastdiffc.pipelines.diffc import model_calls

    s64 = DiffCSettings(**SETTINGS, dtype="float64")
    assert DiffCCodec(gaussian_model(), precision="bfloat16").decode_precision(s64) == "float64"
    with pytest.raises(ValueError, match="float64 DiffC file cannot be decoded in bfloat16"):
        model_calls(gaussian_model(), s64, "bfloat16")


def test_auto_precision_follows_the_hardware(monkeypatch):
    from fastdiffc import precision

    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(precision, "hardware_bfloat16", lambda native=native: native)
        codec = DiffCCodec(PixelGaussian(), precision="auto", **SETTINGS)
        assert codec.settings.dtype == want
        assert container.read(codec.compress(photo_crop(8, 8), steps=1)).header.precision == want


def test_precision_names_and_the_dtype_alias():
    assert DiffCCodec(PixelGaussian(), dtype="bfloat16").settings.dtype == "bfloat16"  # the older name
    assert DiffCCodec(PixelGaussian(), precision="float32").settings.dtype == "float32"
    with pytest.raises(ValueError, match="precision must be 'auto' or one of float32, bfloat16, float64, got 'fp16'"):
        DiffCCodec(PixelGaussian(), precision="fp16")
    with pytest.raises(ValueError, match="precision must be 'auto' or one of .*, got 'float16'"):
        DiffCCodec(PixelGaussian(), dtype="float16")
    with pytest.raises(ValueError, match="precision given twice"):
        DiffCCodec(PixelGaussian(), precision="float32", dtype="float32")


def test_hybrid_keeps_its_gaussian_part_exact_in_bfloat16():
    """bfloat16 is the UNet's: the analytic Gaussian part of a hybrid computes in float64 either way."""
    from fastdiffc import precision
    from fastdiffc.models.composite import CompositeDenoiser

    hybrid = CompositeDenoiser([gaussian_model(), busy_unet()], [-1.5], name="hybrid-test", content_hash=9)
    fast = precision.for_model(hybrid, "bfloat16")
    z = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    low, high = torch.full((1,), -4.0), torch.full((1,), 2.0)
    assert torch.equal(fast(z, low), hybrid(z, low))  # the Gaussian: identical
    out = fast(z, high)
    assert out.dtype == torch.float32 and not torch.equal(out, hybrid(z, high))  # the UNet: bfloat16
    assert float((out - hybrid(z, high)).abs().max()) < 0.05


# ---------------------------------------------------------------------------- knobs


def test_knob_declarations():
    names = lambda knobs: [k.name for k in knobs]  # noqa: E731
    assert names(DiffCCodec.rate_knobs) == ["steps", "scheme", "no_filter"]
    assert names(DiffCCodec.knobs("rate")) == ["bpp", "steps", "scheme", "no_filter"]
    # the scheme and the filter combine with bpp (they choose how, not how big)
    assert not DiffCCodec.rate_knobs[1].sets_size and not DiffCCodec.rate_knobs[2].sets_size
    assert names(DiffCCodec.decode_knobs) == ["method", "max_steps", "recon_steps", "flow_offset", "allow_truncated",
                                              "skip_filter"]
    assert all(k.stage == "decode" for k in DiffCCodec.decode_knobs)
    assert "ceiling" in DiffCCodec.knobs("rate")[0].help and "denoiser mean" in DiffCCodec.decode_knobs[2].help


def test_knob_errors_name_the_pipeline_and_its_knobs(photo_encoding):
    codec, data, _ = photo_encoding
    with pytest.raises(ValueError, match=r"^decode_steps is not a knob of the diffc pipeline \(its decode knobs: "
                                         r"method, max_steps, recon_steps, flow_offset, allow_truncated, "
                                         r"skip_filter\)$"):
        codec.decompress(data, decode_steps=3)
    with pytest.raises(ValueError, match=r"^quality is not a knob of the diffc pipeline \(its rate knobs: bpp, steps"):
        codec.compress(photo_crop(4, 4), quality=80)
    with pytest.raises(ValueError, match="steps is a rate knob of the diffc pipeline: give it to compress"):
        codec.decompress(data, steps=3)
    with pytest.raises(ValueError, match="method is a decode knob"):
        codec.compress(photo_crop(4, 4), method="flow")
    for kw, match in [(dict(recon_steps=-5), r"diffc knob recon_steps must be an integer in 1\.\.1000, got -5"),
                      (dict(recon_steps=0), "recon_steps"), (dict(recon_steps=2.5), "recon_steps"),
                      (dict(max_steps=-1), "max_steps must be an integer >= 0"),
                      (dict(flow_offset=float("nan")), "flow_offset"), (dict(method=3), "method must be one of"),
                      (dict(allow_truncated="yes"), "allow_truncated must be true or false"),
                      (dict(flow_offset=0.1, flow_logsnr_offset=0.2), "given twice")]:
        with pytest.raises(ValueError, match=match):
            codec.decompress(data, **kw)
    for kw in (dict(recon_steps=-5), dict(recon_steps=0), dict(flow_offset=-1.0)):
        with pytest.raises(ValueError, match="diffc knob"):
            DiffCCodec(PixelGaussian(), **kw)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        codec.compress(photo_crop(4, 4), steps=0)


def test_decode_knobs_override_the_constructor(photo_encoding):
    codec, data, _ = photo_encoding
    plain = DiffCCodec(gaussian_model(), recon_steps=3, flow_offset=0.0)
    ref = np.asarray(plain.decompress(data, max_steps=6))
    got = codec.decompress(data, max_steps=6, recon_steps=3, flow_offset=0.0)
    assert np.array_equal(ref, np.asarray(got))
    alias = codec.decompress(data, max_steps=6, recon_steps=3, flow_logsnr_offset=0.0)  # the old name
    assert np.array_equal(ref, np.asarray(alias))
    assert np.array_equal(np.asarray(codec.decompress(data, max_steps=6)),
                          np.asarray(codec.decompress(data, max_steps=6, recon_steps=codec.recon_steps)))


def test_load_codec_pipelines(monkeypatch):
    assert isinstance(load_codec("diffc", PixelGaussian()), DiffCCodec)
    assert codec_class("diffc") is DiffCCodec and list(PIPELINES) == ["diffc", "dirac", "cdc"]
    monkeypatch.setitem(PIPELINES, "cdc", "fastdiffc.pipelines.no_such_module:CDCCodec")
    with pytest.raises(ValueError, match="^pipeline 'cdc' is not implemented in this build$"):
        load_codec("cdc")
    monkeypatch.setitem(PIPELINES, "cdc", "fastdiffc.pipelines.diffc:NoSuchClass")
    with pytest.raises(ValueError, match="not implemented"):
        codec_class("cdc")
    with pytest.raises(ValueError, match="unknown pipeline 'jpeg'"):
        load_codec("jpeg")


def test_shipped_default_model_round_trip():
    """End to end with what a user gets: load_codec("diffc") (the shipped default model), a 64x96
    crop of the sample photo at 0.5 bpp (measured: 335 bytes, 16 steps, 28.6 dB)."""
    from fastdiffc.models.registry import default_model_name

    crop = Image.open(SAMPLE).convert("RGB").crop((80, 40, 176, 104))
    codec = load_codec("diffc")
    data = codec.compress(crop, bpp=0.5)
    assert len(data) <= 0.5 * 64 * 96 / 8
    header = container.read(data).header
    assert header.model("denoiser").name == default_model_name("diffc")
    out = load_codec("diffc").decompress(data)  # a fresh codec: the model comes from the file
    assert out.size == crop.size and out.mode == "RGB"
    assert psnr(out, crop) > 26.0
