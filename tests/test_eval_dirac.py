"""DIRAC in the evaluation harness: v2 contender specs, one encode per rate for every decode_steps
curve, the same base files as the base codec, resuming, and the distortion ↔ realism report."""

import csv
import re

import numpy as np
import pytest
import torch
from fastdiffc.codecs import classical
from fastdiffc.container import read
from fastdiffc.eval import contenders, images, report, sweep
from fastdiffc.pipelines.dirac import DiracCodec
from PIL import Image


def _photo(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    base = np.stack([128 + 100 * np.sin(6 * x + 2 * y), 128 + 90 * np.cos(5 * y), 80 + 150 * (x > 0.5)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny_model():
    from fastdiffc.models.residual import ResidualDenoiser, default_unet_config
    from fastdiffc.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**default_unet_config().to_dict(), "base_channels": 16, "channel_mults": [1, 2]})
    torch.manual_seed(0)
    m = ResidualDenoiser(UNet(cfg), name="tiny-dirac", content_hash=0x1234).eval()
    torch.nn.init.normal_(m.net.conv_out.weight, std=1e-2)  # zero-initialised: would be the identity
    return m


class CountingDirac(DiracCodec):
    """The real DIRAC codec, counting encodes and sampling runs."""

    def __init__(self, model):
        super().__init__(model)
        self.compress_calls = []
        self.step_runs = []

    def compress(self, image, **knobs):
        self.compress_calls.append(knobs)
        return super().compress(image, **knobs)

    def decompress_steps(self, data, steps):
        self.step_runs.append(sorted(steps))
        return super().decompress_steps(data, steps)


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _photo(32, 48, seed=1).save(folder / "a.png")
    _photo(40, 32, seed=2).save(folder / "b.png")
    return folder


def test_spec_syntax_and_validation():
    spec = contenders.parse_contender_spec("dirac@m:base=avif:decode-steps=0+8+20")
    assert (spec.name, spec.model) == ("dirac", "m")
    assert spec.knobs == (("base", ("avif",)), ("decode_steps", ("0", "8", "20")))
    assert contenders.parse_contender_spec("diffc@hybrid:denoise").knobs == (("method", ("denoise",)),)
    r = contenders.resolve_spec("diffc:recon_steps=8:flow_logsnr_offset=0+0.5")  # an alias maps to its knob
    assert r.decode == {"recon_steps": (8,), "flow_offset": (0.0, 0.5)}
    assert [v.label for v in contenders.decode_variants(r, "diffc")] == [
        "diffc-flow-recon_steps8-flow_offset0", "diffc-flow-recon_steps8-flow_offset0.5"]
    r = contenders.resolve_spec("dirac:quality=20+50")
    settings = contenders.rate_settings(r, rates=None, qualities=None, base="avif")
    assert [s.label for s in settings] == ["q=20", "q=50"]
    r = contenders.resolve_spec("dirac")
    settings = contenders.rate_settings(r, rates=None, qualities=[10, 30], base="avif")
    assert [s.label for s in settings] == ["q=10", "q=30"]
    assert [v.label for v in contenders.decode_variants(r, "dirac-avif")] == ["dirac-avif-s0"]
    # The learned base sweeps the shipped CDC model's levels, not the classical qualities.
    r = contenders.resolve_spec("dirac:base=cdc")
    settings = contenders.rate_settings(r, rates=None, qualities=None, base="cdc")
    assert [s.label for s in settings] == [f"q={lv}" for lv in range(6)]
    for bad, message in (("dirac:decode_steps=0+21", "decode_steps must be an integer in 0..20, got 21"),
                         ("dirac:steps=3", "steps is not a knob of the dirac pipeline (rate knobs: bpp, base, quality"),
                         ("dirac:denoise", "'denoise' (a bare METHOD, i.e. method=denoise): method is not a knob"),
                         ("dirac:base=png", "base must be one of jpeg, webp, avif, heic, jxl, cdc"),
                         ("dirac:quality=5:bpp=0.1", "give one of"),
                         ("dirac:quality=5:quality=6", "quality given twice"),
                         ("dirac::quality=5", "empty segment"),
                         ("dirac:quality=", "empty value"),
                         ("nosuch:x=1", "unknown pipeline 'nosuch'")):
        with pytest.raises(ValueError, match=re.escape(message)):
            contenders.resolve_spec(bad)
    with pytest.raises(ValueError, match="progressive: give one bpp"):
        contenders.load_contenders("diffc:bpp=0.5+1", load_codec=lambda *a: pytest.fail("loaded"))


def test_dirac_contender_one_encode_per_rate_and_same_base_files(tiny_model, tmp_path):
    codec = CountingDirac(tiny_model)
    found = contenders.load_contenders("dirac:base=jpeg+webp:decode_steps=0+2+1", qualities=[30, 70],
                                       load_codec=lambda name, model, **kw: codec)
    assert [c.names for c in found] == [("dirac-jpeg-s0", "dirac-jpeg-s2", "dirac-jpeg-s1"),
                                        ("dirac-webp-s0", "dirac-webp-s2", "dirac-webp-s1")]
    jpeg = found[0]
    image = _photo(32, 48)
    trials = list(jpeg.run(image, "x.png", {}, tmp_path / "streams"))
    expected = [(f"dirac-jpeg-s{k}", f"q={q}") for q in (30, 70) for k in (0, 2, 1)]
    assert [(t.codec, t.setting) for t in trials] == expected
    # One encode and one sampling run per rate serve the three curves.
    assert codec.compress_calls == [{"base": "jpeg", "quality": 30}, {"base": "jpeg", "quality": 70}]
    assert codec.step_runs == [[0, 1, 2], [0, 1, 2]]
    for q in (30, 70):
        data = (tmp_path / "streams" / f"x.dirac-jpeg.q={q}.fdc".replace("=", "_")).read_bytes()
        assert read(data).segments[0] == classical.get_codec("jpeg").encode(image, q)  # the base codec's file
        same = [t for t in trials if t.setting == f"q={q}"]
        assert {t.nbytes for t in same} == {len(data)}
        for t in same:  # each snapshot equals a plain decode with that many steps
            k = int(t.codec.rsplit("-s", 1)[1])
            assert np.array_equal(np.asarray(t.reconstruction), np.asarray(codec.decompress(data, decode_steps=k)))
    assert trials[0].decode_s < trials[1].decode_s  # 1 of 3 model calls vs 3 of 3
    # Resuming: a missing curve decodes the cached file, no new encode.
    done = {f"dirac-jpeg-s{k}": {"q=30", "q=70"} for k in (0, 1)}
    again = list(jpeg.run(image, "x.png", done, tmp_path / "streams"))
    assert [(t.codec, t.setting) for t in again] == [("dirac-jpeg-s2", "q=30"), ("dirac-jpeg-s2", "q=70")]
    assert len(codec.compress_calls) == 2
    assert not jpeg.pending("x.png", {**done, "dirac-jpeg-s2": {"q=30", "q=70"}}, tmp_path / "streams")


def test_dirac_sweep_and_realism_report(tiny_model, tmp_path, image_dir):
    codec = CountingDirac(tiny_model)
    make = lambda: [  # noqa: E731
        contenders.ClassicalContender(classical.get_codec("jpeg"), [20, 50, 80]),
        *contenders.load_contenders("dirac:base=jpeg:decode_steps=0+3", qualities=[20, 50, 80],
                                    load_codec=lambda name, model, **kw: codec),
    ]
    out = tmp_path / "report"
    paths = images.list_images(image_dir)
    first = sweep.run_sweep(paths, make(), out, progress=False, metrics=["psnr", "realism"])
    assert first.computed == 2 * 3 * 3 and not first.failures
    rows = sweep.read_points(out / sweep.POINTS_FILE)
    assert {r["codec"] for r in rows} == {"jpeg", "dirac-jpeg-s0", "dirac-jpeg-s3"}
    by = {(r["image"], r["codec"], r["setting"]): r for r in rows}
    for key in ("a.png", "b.png"):
        for q in (20, 50, 80):
            s0, s3, base = (by[(key, c, f"q={q}")] for c in ("dirac-jpeg-s0", "dirac-jpeg-s3", "jpeg"))
            assert s0["bytes"] == s3["bytes"] and int(s0["bytes"]) > int(base["bytes"])  # + the .fdc header
    assert len(codec.compress_calls) == 6
    # Resuming after losing one curve's points on one image: decoded again from the cached files.
    kept = [r for r in rows if not (r["codec"] == "dirac-jpeg-s3" and r["image"] == "b.png")]
    with (out / sweep.POINTS_FILE).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sweep.COLUMNS)
        w.writeheader()
        w.writerows(kept)
    again = sweep.run_sweep(paths, make(), out, progress=False, metrics=["psnr", "realism"])
    assert again.computed == 3 and len(codec.compress_calls) == 6

    summary = report.write_report(out).read_text()
    section = summary.split("## Distortion ↔ realism: dirac-jpeg")[1]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0].startswith("| decode steps | q=20 (") and table[0].count("bpp)") == 3
    assert [line.split("|")[1].strip() for line in table[2:]] == ["jpeg", "0", "3"]
    curves, _, _ = report.build_curves(sweep.read_points(out / sweep.POINTS_FILE))
    jpeg50 = next(p for p in curves["jpeg"] if p["setting"] == "q=50")
    assert f"{jpeg50['psnr']:.2f} / {jpeg50['realism']:.4f}" in table[2]
    with Image.open(out / "realism_dirac-jpeg.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    assert "realism_dirac-jpeg.png" in section


def test_split_decode_steps_labels():
    assert report.split_decode_steps("dirac-avif-s8") == ("dirac-avif", 8)
    assert report.split_decode_steps("dirac@ema-jxl-s20") == ("dirac@ema-jxl", 20)
    assert report.split_decode_steps("cdc-s4-foo1") == ("cdc-foo1", 4)
    assert report.split_decode_steps("diffc@hybrid-flow-recon_steps8") is None
    assert report.split_decode_steps("jpeg") is None


def test_model_file_in_spec_is_loaded_and_labelled_by_its_stem(tiny_model, tmp_path):
    path = tmp_path / "ckpt" / "ema.safetensors"
    path.parent.mkdir()
    tiny_model.save(path)
    (c,) = contenders.load_contenders(f"dirac@{path}:base=jpeg:decode_steps=0+1", qualities=[40])
    assert c.names == ("dirac@ema-jpeg-s0", "dirac@ema-jpeg-s1")
    trials = list(c.run(_photo(24, 32), "x.png", {}, None))
    assert [t.codec for t in trials] == ["dirac@ema-jpeg-s0", "dirac@ema-jpeg-s1"]
    with pytest.raises(contenders.PipelineUnavailableError, match="no model file"):
        contenders.load_contenders(f"dirac@{tmp_path / 'missing.safetensors'}")


def test_dirac_table_reads_fdc_and_plain_file_curves(tmp_path, capsys, monkeypatch):
    """scripts/dirac_table.py: the .fdc column from `dirac-X-s0`, the plain-file column from
    `dirac-X-gaintable-s0` at X's own bytes ("—" without that curve)."""
    import csv
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "scripts" / "dirac_table.py"
    spec = importlib.util.spec_from_file_location("dirac_table", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fields = ["image", "codec", "setting", "bytes", "bpp", "psnr", "msssim", "ssimulacra2", "realism", "width",
              "height", "encode_s", "decode_s"]
    rows = []
    for q, (bpp, p) in zip((10, 30, 50, 70), ((0.1, 28.0), (0.2, 31.0), (0.4, 34.0), (0.8, 37.0))):
        for codec, db, dp in (("jpeg", 0, 0), ("dirac-jpeg-s0", 0.001, 0.5), ("dirac-jpeg-gaintable-s0", 0, 0.3),
                              ("webp", 0, 0), ("dirac-webp-s0", 0.001, 0.2)):
            rows.append({"image": "a.png", "codec": codec, "setting": f"q={q}", "bytes": 1, "bpp": bpp + db,
                         "psnr": p + dp, "width": 8, "height": 8})
    with (tmp_path / "points.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    monkeypatch.setattr(sys, "argv", ["dirac_table.py", str(tmp_path)])
    assert mod.main() == 0
    out = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
           for line in capsys.readouterr().out.splitlines() if line.startswith("| jpeg") or line.startswith("| webp")}
    fdc, plain = float(out["jpeg"][0].rstrip("%")), float(out["jpeg"][1].rstrip("%"))
    assert fdc < plain < 0  # +0.5 dB for 0.001 bpp more beats +0.3 dB at the same bytes
    assert out["webp"][1] == "—" and float(out["webp"][0].rstrip("%")) < 0
