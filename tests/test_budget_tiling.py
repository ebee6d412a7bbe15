"""Resource budgets checked before allocation, and tiled model calls for large images (issue 12).

- `pipelines.base.Budget` (max_pixels, max_model_calls, max_memory_gb): DiffC refuses, from the
  header alone, a file that declares too many pixels, needs too many model calls (a tiny file of
  empty segments over a 100000-step grid) or too much memory; an encode is refused the same way
  before the image is converted. Messages name the limit and the setting (and CLI flag) raising it.
- `diffusion.tiling.TiledDenoiser`: windows cover the image, a per-pixel model is unchanged by
  tiling, a global one is deterministic; DiffC codes images up to the tile size exactly as before
  (parameter version 2, identical bytes), larger ones record the tiling (version 3) and decode
  bit-exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastdiffc import container
from fastdiffc.diffusion.tiling import TiledDenoiser, window_starts
from fastdiffc.errors import BudgetError, DecodeBudgetError, FormatError
from fastdiffc.pipelines.base import Budget
from fastdiffc.pipelines.diffc import DiffCCodec, DiffCSettings
from test_diffc import SETTINGS, PixelGaussian, photo_crop, tiny_unet


def _header(settings: DiffCSettings, height: int, width: int) -> container.Header:
    return container.Header("diffc", (container.ModelRef("denoiser", PixelGaussian.name, PixelGaussian.content_hash),),
                            height, width, 3, precision="float32", params_version=settings.params_version,
                            params=settings.to_bytes())


# ---------------------------------------------------------------------------- budgets


def test_budget_defaults_env_and_validation(monkeypatch):
    b = Budget()
    assert (b.max_pixels, b.max_model_calls, b.max_memory_gb) == (1 << 26, 2000, 6.0)
    monkeypatch.setenv("FASTDIFFC_MAX_MEMORY_GB", "1.5")
    monkeypatch.setenv("FASTDIFFC_MAX_PIXELS", "1000")
    assert Budget.default() == Budget(max_pixels=1000, max_memory_gb=1.5)
    assert Budget.default(max_pixels=5, max_model_calls=None).max_pixels == 5
    monkeypatch.setenv("FASTDIFFC_MAX_MODEL_CALLS", "lots")
    with pytest.raises(ValueError, match="FASTDIFFC_MAX_MODEL_CALLS"):
        Budget.default()
    for bad in (dict(max_pixels=0), dict(max_model_calls=1.5), dict(max_memory_gb=float("nan"))):
        with pytest.raises(ValueError):
            Budget(**bad)


def test_header_declaring_too_many_pixels_is_refused_before_allocation():
    data = container.write(_header(DiffCSettings(**SETTINGS), 26000, 27000), [])
    assert len(data) < 80
    msg = r"27000x26000 = 702,000,000 pixels.*max_pixels=67,108,864.*--max-pixels"
    with pytest.raises(DecodeBudgetError, match=msg):
        DiffCCodec(PixelGaussian()).decompress(data)
    with pytest.raises(DecodeBudgetError, match="max_pixels=100"):
        DiffCCodec(PixelGaussian(), max_pixels=100).decompress(container.write(_header(DiffCSettings(**SETTINGS),
                                                                                       16, 16), []))


def test_file_demanding_many_model_calls_is_refused_from_its_header():
    settings = DiffCSettings(**{**SETTINGS, "grid_steps": 100_000})
    data = container.write(_header(settings, 8, 8), [b""] * 5000)  # ≈ 5 KB: 5000 steps of nothing
    assert len(data) < 6000
    with pytest.raises(DecodeBudgetError, match=r"5,022 model calls.*max_model_calls=2,000.*--max-model-calls"):
        DiffCCodec(PixelGaussian()).decompress(data)  # 5000 steps + 20 flow steps + 1 + 1 for a filter
    with pytest.raises(DecodeBudgetError, match="max_model_calls"):
        DiffCCodec(PixelGaussian()).decompress_progressive(data, [4999])
    # Decoding fewer steps is within the budget (empty segments are KL = 0 steps: free prior draws).
    assert DiffCCodec(PixelGaussian()).decompress(data, max_steps=10, method="denoise").size == (8, 8)


def test_memory_estimate_refuses_a_decode_and_an_encode():
    codec = DiffCCodec(PixelGaussian(), recon_steps=3, **SETTINGS)
    data = codec.compress(photo_crop(), steps=2)
    small = DiffCCodec(PixelGaussian(), max_memory_gb=0.1)
    with pytest.raises(DecodeBudgetError, match=r"decoding a 48x32 image needs an estimated .* GiB.*max_memory_gb=0.1"):
        small.decompress(data)
    with pytest.raises(BudgetError, match="max_memory_gb=0.1") as e:
        DiffCCodec(PixelGaussian(), max_memory_gb=0.1, **SETTINGS).compress(photo_crop(), steps=2)
    assert isinstance(e.value, ValueError) and not isinstance(e.value, FormatError)
    # 12 Mpx with the default tiling fits the default budget; untiled it would not.
    model = tiny_unet()
    big = DiffCCodec(model)
    tiled_bytes = big.estimate_memory(model, 3000, 4000, DiffCSettings().for_image(3000, 4000, 1024, 64),
                                      decoding=False)
    whole_bytes = big.estimate_memory(model, 3000, 4000, DiffCSettings(), decoding=False)
    assert tiled_bytes < 3 << 30 < whole_bytes


def test_encode_pixel_budget_checked_before_conversion():
    img = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (60000, 70000, 3))  # no memory behind it
    with pytest.raises(BudgetError, match=r"image is 70000x60000.*max_pixels"):
        DiffCCodec(PixelGaussian(), **SETTINGS).compress(img, steps=1)


# ---------------------------------------------------------------------------- tiling


def test_windows_cover_the_axis():
    for n, tile, overlap in [(100, 32, 8), (64, 64, 16), (65, 64, 16), (1000, 128, 0), (17, 64, 8)]:
        starts = window_starts(n, tile, overlap)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + min(tile, n)] = True
            assert 0 <= s and s + min(tile, n) <= n
        assert covered.all(), (n, tile, overlap, starts)


def test_tiling_keeps_a_per_pixel_model_and_is_deterministic():
    z = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    lam = torch.tensor([0.5])
    exact = PixelGaussian()
    tiled = TiledDenoiser(exact, 32, 8)
    assert torch.allclose(tiled(z, lam), exact(z, lam), atol=1e-6)
    net = tiny_unet()
    with torch.inference_mode():
        a, b, whole = TiledDenoiser(net, 32, 8)(z, lam), TiledDenoiser(net, 32, 8)(z, lam), net(z, lam)
    assert torch.equal(a, b) and not torch.equal(a, whole)
    assert TiledDenoiser(net, 128, 8)(z, lam).shape == z.shape


def test_images_up_to_the_tile_are_coded_as_before():
    img = photo_crop(32, 48)
    plain = DiffCCodec(PixelGaussian(), tile=0, **SETTINGS).compress(img, steps=3, no_filter=True)
    default = DiffCCodec(PixelGaussian(), **SETTINGS).compress(img, steps=3, no_filter=True)
    assert default == plain and container.read(default).header.params_version == 2
    filtered = DiffCCodec(PixelGaussian(), **SETTINGS).compress(img, steps=3)
    assert filtered == DiffCCodec(PixelGaussian(), tile=0, **SETTINGS).compress(img, steps=3)
    assert DiffCCodec.describe_params(container.read(filtered).header)["tile"] == 0


def test_large_images_record_the_tiling_and_decode_bit_exactly():
    img = photo_crop(40, 72)
    model = tiny_unet()
    codec = DiffCCodec(model, tile=32, tile_overlap=8, recon_steps=2, **SETTINGS)
    for no_filter, version in ((True, 3), (False, 5)):  # 5: version 4's tiling fields + the filter
        data, enc = codec.encode_image(img, steps=3, no_filter=no_filter)
        f = container.read(data)
        assert f.header.params_version == version
        settings = DiffCSettings.from_bytes(f.header.params, version)
        assert (settings.tile, settings.tile_overlap, settings.filter_steps) == (32, 8, 0 if no_filter else 3)
        assert DiffCCodec.describe_params(f.header)["tile"] == 32
        z, *_ = DiffCCodec(model).decode_latent(data)
        assert torch.equal(z, enc.z)
        assert DiffCCodec(model, recon_steps=2).decompress(data).size == (72, 40)
        untiled = DiffCCodec(model, tile=0, **SETTINGS).compress(img, steps=3, no_filter=no_filter)
        assert untiled != data and container.read(untiled).header.params_version == (2 if no_filter else 5)


def test_tile_settings_validated():
    for bad in (100, 8):
        with pytest.raises(ValueError, match="multiple of 16"):
            DiffCCodec(PixelGaussian(), tile=bad)
    with pytest.raises(ValueError, match="tile_overlap"):
        DiffCCodec(PixelGaussian(), tile=64, tile_overlap=40)
    with pytest.raises(ValueError, match="version 3"):
        DiffCSettings(params_version=1, tile=64)


def test_cli_budget_flags(tmp_path, capsys):
    import os

    from fastdiffc.cli import main
    from fastdiffc.models.registry import load_model

    settings = DiffCSettings(**SETTINGS)
    ref = container.ModelRef("denoiser", "gaussian", load_model("gaussian").content_hash)  # a shipped model
    header = container.Header("diffc", (ref,), 64, 64, 3, params_version=2, params=settings.to_bytes())
    big = tmp_path / "big.fdc"
    big.write_bytes(container.write(header, []))
    out = str(tmp_path / "x.png")
    assert main(["decompress", str(big), "-o", out, "--max-pixels", "100"]) == 1
    err = capsys.readouterr().err
    assert "max_pixels=100" in err and "--max-pixels" in err
    assert main(["--max-memory-gb", "0.01", "decompress", str(big), "-o", out]) == 1
    assert "max_memory_gb=0.01" in capsys.readouterr().err
    assert main(["--max-model-calls", "many", "decompress", str(big), "-o", out]) == 1
    assert "--max-model-calls must be a number" in capsys.readouterr().err
    assert "FASTDIFFC_MAX_PIXELS" not in os.environ  # restored after the command
