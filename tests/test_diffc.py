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
from fastdiffc import container
from fastdiffc.errors import FormatError, ModelMismatchError, UnknownPipelineError
from fastdiffc.image_io import psnr, tensor_to_pil
from fastdiffc.pipelines import load_codec
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
    return DiffCCodec(PixelGaussian(), **SETTINGS).compress(photo_crop(), steps=10)


def test_golden_bitstream():
    expected = json.loads((GOLDEN / "diffc_pixel_gaussian_32x48.json").read_text())
    data = _golden_bytes()
    assert hashlib.md5(data).hexdigest() == expected["fdc_md5"], "encoder output drifted from the golden bitstream"
    stored = (GOLDEN / "diffc_pixel_gaussian_32x48.fdc").read_bytes()
    assert hashlib.md5(stored).hexdigest() == expected["fdc_md5"]
    # The decoder on the stored file: its denoised reconstruction is pinned too.
    img = DiffCCodec(PixelGaussian(), **SETTINGS).decompress(stored, method="denoise")
    assert hashlib.md5(np.asarray(img).tobytes()).hexdigest() == expected["denoise_png_pixels_md5"]


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


def test_bpp_target_stops_at_first_step_reaching_it():
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    x = photo_crop()
    for bpp in (0.5, 2.0):
        data = codec.compress(x, bpp=bpp)
        sizes = container.step_file_sizes(data)
        target = bpp * 32 * 48 / 8
        assert sizes[-1] >= target > sizes[-2]
    full = codec.compress(x, bpp=1000.0)  # unreachable: the whole grid is sent
    assert container.read(full).declared_segments == SETTINGS["grid_steps"]


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
    (Image.new("I;16", (4, 4)), "unsupported image mode"),
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


def test_other_pipeline_and_bad_params_rejected():
    h = container.Header("cdc", PixelGaussian.name, PixelGaussian.content_hash, 4, 4, 3, b"")
    with pytest.raises(UnknownPipelineError, match="cdc"):
        DiffCCodec(PixelGaussian()).decompress(container.write(h, []))
    good = DiffCSettings(**SETTINGS).to_bytes()
    for params, match in [(good[:-1], "truncated"), (good + b"\0", "trailing"), (good[:-1] + b"\x09", "dtype")]:
        h = container.Header("diffc", PixelGaussian.name, PixelGaussian.content_hash, 4, 4, 3, params)
        with pytest.raises(FormatError, match=match):
            DiffCCodec(PixelGaussian()).decompress(container.write(h, []))


def test_corrupt_segment_is_an_error_not_a_crash(photo_encoding):
    codec, data, enc = photo_encoding
    f = container.read(data)
    for i in (0, 3):
        segs = list(f.segments)
        segs[i] = b"\xff" * 3 + segs[i][3:]
        try:  # a valid-looking payload may decode to other indices; anything else must be a FormatError
            codec.decode_latent(container.write(f.header, segs))
        except (FormatError, ValueError):
            pass
    segs = list(f.segments) + [b"\x00"] * 20
    with pytest.raises(FormatError, match="grid"):
        codec.decode_latent(container.write(f.header, segs))


def test_settings_validation_and_header_round_trip():
    s = DiffCSettings(seed=(1 << 64) - 1, schedule="linear", logsnr_min=-12.3, logsnr_max=9.1, grid_steps=300,
                      bits_per_chunk=14, margin=1.5, scheme="importance", dtype="float64")
    assert DiffCSettings.from_bytes(s.to_bytes()) == s
    assert s.logsnr_min == float(np.float32(-12.3))
    assert len(DiffCSettings().to_bytes()) <= 16
    for bad in [dict(seed=-1), dict(schedule="sqrt"), dict(grid_steps=0), dict(bits_per_chunk=0),
                dict(margin=0.3), dict(scheme="best"), dict(dtype="float16"), dict(logsnr_min=5, logsnr_max=1)]:
        with pytest.raises(ValueError):
            DiffCSettings(**bad)
    codec = DiffCCodec(PixelGaussian(), **SETTINGS)
    with pytest.raises(ValueError, match="steps"):
        codec.compress(photo_crop(4, 4), steps=15)
    with pytest.raises(ValueError, match="either"):
        codec.compress(photo_crop(4, 4), steps=2, bpp=1.0)
    with pytest.raises(ValueError, match="bpp"):
        codec.compress(photo_crop(4, 4), bpp=-1.0)
    with pytest.raises(ValueError, match="method"):
        codec.decompress(codec.compress(photo_crop(4, 4), steps=1), method="magic")


def test_load_codec_pipelines():
    assert isinstance(load_codec("diffc", PixelGaussian()), DiffCCodec)
    for p in ("dirac", "cdc"):
        try:
            load_codec(p)
        except ValueError as e:
            assert "not implemented" in str(e)
    with pytest.raises(ValueError, match="unknown pipeline"):
        load_codec("jpeg")
