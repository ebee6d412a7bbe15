"""Classical codecs, pipeline adapters, the resumable sweep, the report and `fastdiffc eval`."""

import csv
import io
import struct

import numpy as np
import pytest
from fastdiffc import cli, container
from fastdiffc.codecs import classical as codecs
from fastdiffc.eval import contenders, images, metrics, report, sweep
from PIL import Image


def _photo(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    base = np.stack([128 + 100 * np.sin(6 * x + 2 * y), 128 + 90 * np.cos(5 * y), 80 + 150 * (x > 0.5)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _photo(40, 56, seed=1).save(folder / "a.png")
    _photo(48, 40, seed=2).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --- classical codecs --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(codecs.CODECS))
def test_codec_round_trip_size_mode_and_rate_order(name):
    codec = codecs.get_codec(name)
    reason = codec.unavailable_reason()
    if reason:
        pytest.skip(reason)  # an optional Pillow plugin is missing here
    image = _photo(40, 56)
    low, high = sorted(codec.default_settings)[1], sorted(codec.default_settings)[-2]
    data_low, data_high = codec.encode(image, low), codec.encode(image, high)
    for data in (data_low, data_high):
        recon = codec.decode(data)
        assert recon.size == image.size and recon.mode == "RGB"
    assert len(data_low) < len(data_high)
    assert metrics.psnr(image, codec.decode(data_low)) < metrics.psnr(image, codec.decode(data_high))
    assert codec.setting_label(high) in (f"q={high}", f"bpp={high:g}")


def test_codec_errors_and_unavailable_codec_is_skipped_with_warning(monkeypatch):
    with pytest.raises(ValueError, match="unknown codec"):
        codecs.get_codec("bpg")
    with pytest.raises(ValueError, match="RGB"):
        codecs.get_codec("jpeg").encode(Image.new("L", (8, 8)), 50)
    with pytest.raises(ValueError, match="quality"):
        codecs.get_codec("jpeg").encode(Image.new("RGB", (8, 8)), 150)
    missing = codecs.ClassicalCodec("fake", "fake codec", "q", (50,), lambda im, s: b"", lambda: "plugin not installed")
    monkeypatch.setitem(codecs.CODECS, "fake", missing)
    messages = []
    loaded = codecs.load_codecs(["jpeg", "fake"], warn=messages.append)
    assert [c.name for c in loaded] == ["jpeg"]
    assert messages == ["skipping codec fake: plugin not installed"]
    with pytest.raises(codecs.CodecUnavailableError, match="plugin not installed"):
        missing.encode(Image.new("RGB", (8, 8)), 50)


# --- a progressive test double standing in for DiffC -------------------------------------


class BitPlaneCodec:
    """Test double with DiffC's progressive API: step k sends the k-th most significant bit plane.

    Stream: b"BP" + height, width (uint16) + per step (uint32 length + packed bits).
    """

    def __init__(self):
        self.compress_calls = 0
        self.decode_methods = []

    def compress(self, image, *, bpp=None, steps=None):
        self.compress_calls += 1
        a = np.asarray(image.convert("RGB"))
        steps = 8 if steps is None else steps
        out = [b"BP", struct.pack("<HH", *a.shape[:2])]
        for k in range(steps):
            plane = np.packbits((a >> (7 - k)) & 1)
            out += [struct.pack("<I", len(plane)), plane.tobytes()]
        return b"".join(out)

    def decompress(self, data, *, method="flow", max_steps=None):
        self.decode_methods.append(method)
        h, w = struct.unpack_from("<HH", data, 2)
        acc = np.zeros(h * w * 3, np.uint16)
        pos, k = 6, 0
        while pos < len(data):
            (n,) = struct.unpack_from("<I", data, pos)
            bits = np.unpackbits(np.frombuffer(data[pos + 4:pos + 4 + n], np.uint8))[: h * w * 3]
            acc |= bits.astype(np.uint16) << (7 - k)
            pos, k = pos + 4 + n, k + 1
        acc += (1 << (8 - k)) // 2 if k < 8 else 0  # reconstruct at the middle of the quantisation bin
        return Image.fromarray(acc.reshape(h, w, 3).astype(np.uint8))


def truncate_bitplanes(data, k):
    pos = 6
    for _ in range(k):
        if pos >= len(data):
            raise ValueError("stream has fewer steps")
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4 + n
    return data[:pos]


def test_load_pipeline_reports_failures_and_builds_progressive_adapter():
    def broken(name, model):
        raise FileNotFoundError("no weights for model 'default'")

    with pytest.raises(contenders.PipelineUnavailableError, match="no weights"):
        contenders.load_pipeline("diffc", load_codec=broken, truncate=truncate_bitplanes)
    class NoWeights(BitPlaneCodec):
        def model_for_encoding(self):
            raise ModuleNotFoundError("No module named 'fastdiffc.models.registry'")

    with pytest.raises(contenders.PipelineUnavailableError, match="models.registry"):  # found before any image
        contenders.load_pipeline("diffc", load_codec=lambda n, m: NoWeights(), truncate=truncate_bitplanes)
    with pytest.raises(ValueError, match="bad pipeline spec"):
        contenders.parse_pipeline_spec("diffc:flow:extra")
    assert contenders.parse_pipeline_spec("diffc@gaussian:ancestral") == ("diffc", "gaussian", "ancestral")
    with pytest.raises(ValueError, match="unknown pipeline 'nosuch'"):  # a usage error, before loading
        contenders.load_pipeline("nosuch", load_codec=broken)

    seen = []
    fake = BitPlaneCodec()
    adapter = contenders.load_pipeline("diffc@gaussian", options={"bits_per_chunk": 12},
                                       load_codec=lambda n, m, **kw: seen.append((n, m, kw)) or fake,
                                       truncate=truncate_bitplanes)
    assert seen == [("diffc", "gaussian", {"bits_per_chunk": 12})]
    assert isinstance(adapter, contenders.ProgressivePipeline) and adapter.names == ("diffc@gaussian-flow",)
    both = contenders.load_pipeline("diffc:method=flow+denoise", load_codec=lambda n, m: fake,
                                    truncate=truncate_bitplanes)
    assert both.names == ("diffc-flow", "diffc-denoise")


def test_progressive_pipeline_decodes_prefixes_of_one_encode(tmp_path, image_dir):
    fake = BitPlaneCodec()
    adapter = contenders.ProgressivePipeline("diffc-flow", fake, truncate_bitplanes, method="flow")
    image = images.load_image(image_dir / "a.png")
    trials = list(adapter.run(image, "a.png", {}, tmp_path / "streams"))
    assert fake.compress_calls == 1 and set(fake.decode_methods) == {"flow"}
    assert [t.setting for t in trials] == [f"steps={k}" for k in range(1, 9)]  # every step of the stream
    full = (tmp_path / "streams" / "a.diffc-flow.bpp1.fdc").read_bytes()
    for t in trials:
        assert t.nbytes == len(truncate_bitplanes(full, int(t.setting.split("=")[1])))
    psnrs = [metrics.psnr(image, t.reconstruction) for t in trials]
    assert psnrs == sorted(psnrs) and psnrs[-1] == float("inf")  # 8 bit planes are lossless
    # A resumed run reuses the cached stream and only decodes what is missing.
    again = list(adapter.run(image, "a.png", {"diffc-flow": {"steps=1", "steps=2"}}, tmp_path / "streams"))
    assert fake.compress_calls == 1 and [t.setting for t in again] == [f"steps={k}" for k in range(3, 9)]
    assert not adapter.pending("a.png", {"diffc-flow": {t.setting for t in trials}}, tmp_path / "streams")
    # Variants share the stream; one cached by a report made before variants existed is reused.
    shared = contenders.ProgressivePipeline("diffc", fake, truncate_bitplanes, cache_name="diffc",
                                            variants=[contenders.Variant("diffc-flow", {"method": "flow"}),
                                                      contenders.Variant("diffc-denoise", {"method": "denoise"})],
                                            legacy_cache_names=["diffc-flow"])
    both = list(shared.run(image, "a.png", {"diffc-flow": {t.setting for t in trials}}, tmp_path / "streams"))
    assert fake.compress_calls == 1 and {t.codec for t in both} == {"diffc-denoise"} and len(both) == 8


def test_progressive_pipeline_passes_how_knobs_to_the_encode(tmp_path, image_dir):
    """diffc:scheme=pfr+tree: one contender per RCC scheme, each encoding with its scheme."""

    class SchemeCodec(BitPlaneCodec):
        def __init__(self):
            super().__init__()
            self.schemes = []

        def compress(self, image, *, bpp=None, steps=None, scheme=None):
            self.schemes.append(scheme)
            return super().compress(image, bpp=bpp, steps=steps)

    fake = SchemeCodec()
    found = contenders.load_contenders("diffc:scheme=pfr+tree", steps=[2, 4], load_codec=lambda n, m: fake,
                                       truncate=truncate_bitplanes)
    assert [c.names for c in found] == [("diffc-schemepfr-flow",), ("diffc-schemetree-flow",)]
    image = images.load_image(image_dir / "a.png")
    for c in found:
        assert [t.setting for t in c.run(image, "a.png", {}, tmp_path / "streams")] == ["steps=2", "steps=4"]
    assert fake.schemes == ["pfr", "tree"]
    assert sorted(p.name for p in (tmp_path / "streams").iterdir()) == ["a.diffc-schemepfr.steps4.fdc",
                                                                         "a.diffc-schemetree.steps4.fdc"]
    # Without the knob the encode gets none (the codec's own scheme) and the label stays diffc-flow.
    plain = contenders.load_pipeline("diffc", steps=[2], load_codec=lambda n, m: fake, truncate=truncate_bitplanes)
    list(plain.run(image, "a.png", {}, None))
    assert plain.names == ("diffc-flow",) and fake.schemes[-1] is None


def test_progressive_pipeline_uses_one_replay_when_offered(tmp_path, image_dir):
    class Replaying(BitPlaneCodec):
        replays = []

        def decompress_progressive(self, data, steps, *, method="flow"):
            self.replays.append(list(steps))
            return {k: self.decompress(truncate_bitplanes(data, k), method=method) for k in steps}

    image = images.load_image(image_dir / "b.png")
    plain = contenders.ProgressivePipeline("p", BitPlaneCodec(), truncate_bitplanes, steps=[1, 3, 5])
    fast_codec = Replaying()
    fast = contenders.ProgressivePipeline("p", fast_codec, truncate_bitplanes, method="flow", steps=[1, 3, 5])
    expected = list(plain.run(image, "b.png", set(), None))
    got = list(fast.run(image, "b.png", {"steps=3"}, None))
    assert fast_codec.replays == [[1, 5]] and fast_codec.compress_calls == 1
    assert [t.setting for t in got] == ["steps=1", "steps=5"]
    for g, e in zip(got, [expected[0], expected[2]]):
        assert g.nbytes == e.nbytes and np.array_equal(np.asarray(g.reconstruction), np.asarray(e.reconstruction))


# --- sweep and report ----------------------------------------------------------------------


def test_sweep_is_resumable_and_bytes_are_exact(tmp_path, image_dir):
    paths = images.list_images(image_dir)
    assert [p.name for p in paths] == ["a.png", "b.png"]
    fake = BitPlaneCodec()
    make = [
        lambda: contenders.ClassicalContender(codecs.get_codec("jpeg"), [30, 80]),
        lambda: contenders.ClassicalContender(codecs.get_codec("webp"), [30, 80]),
        lambda: contenders.ProgressivePipeline("diffc-flow", fake, truncate_bitplanes, method="flow", steps=[2, 4]),
    ]
    out = tmp_path / "report"
    first = sweep.run_sweep(paths, [m() for m in make], out, progress=False, metrics=["psnr"])
    assert first.computed == 2 * (2 + 2 + 2) and not first.failures
    rows = sweep.read_points(out / sweep.POINTS_FILE)
    assert len(rows) == 12 and tuple(rows[0]) == sweep.COLUMNS
    jpeg_a80 = next(r for r in rows if r["image"] == "a.png" and r["codec"] == "jpeg" and r["setting"] == "q=80")
    image = images.load_image(image_dir / "a.png")
    assert int(jpeg_a80["bytes"]) == len(codecs.get_codec("jpeg").encode(image, 80))
    assert float(jpeg_a80["bpp"]) == pytest.approx(int(jpeg_a80["bytes"]) * 8 / (56 * 40), rel=1e-6)

    mtime = (out / sweep.POINTS_FILE).stat().st_mtime_ns
    second = sweep.run_sweep(paths, [m() for m in make], out, progress=False, metrics=["psnr"])
    assert second.computed == 0 and second.skipped_tasks == 6
    assert fake.compress_calls == 2  # one encode per image in the first run, none in the second
    assert (out / sweep.POINTS_FILE).stat().st_mtime_ns == mtime

    # Deleting points makes exactly those be measured again.
    kept = [r for r in rows if not (r["codec"] == "webp" and r["image"] == "b.png")]
    with (out / sweep.POINTS_FILE).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sweep.COLUMNS)
        w.writeheader()
        w.writerows(kept)
    third = sweep.run_sweep(paths, [m() for m in make], out, progress=False, metrics=["psnr"])
    assert third.computed == 2
    with pytest.raises(ValueError, match="max_size"):
        sweep.run_sweep(paths, [m() for m in make], out, max_size=32, progress=False)


def test_sweep_reports_a_failing_contender_and_continues(tmp_path, image_dir):
    class Broken(BitPlaneCodec):
        def compress(self, image, *, bpp=None, steps=None):
            raise RuntimeError("model exploded")

    jpeg = contenders.ClassicalContender(codecs.get_codec("jpeg"), [50])
    broken = contenders.RatePipeline("dirac", Broken(), rates=[0.5])
    warnings = []
    result = sweep.run_sweep(images.list_images(image_dir), [broken, jpeg], tmp_path / "r", progress=False,
                             metrics=["psnr"], warn=warnings.append)
    assert result.computed == 2
    assert warnings == [f"dirac on {n}: RuntimeError: model exploded" for n in ("a.png", "b.png")]


def test_cached_stream_of_another_model_is_encoded_anew(tmp_path):
    """A stream cached by an earlier run is reused only while the contender encodes with the model
    that wrote it: after a retrained model takes the name, the old stream would decode through the
    retired model (by hash) and report its points under today's label."""
    from fastdiffc.pipelines.cdc import CDCCodec
    from test_cdc import tiny_model

    image = _photo(32, 48)
    streams = tmp_path / "streams"
    settings = [contenders.RateSetting("level=1", {"level": 1})]

    def run(model):
        pipe = contenders.RatePipeline("cdc", CDCCodec(model, seed=7), settings=settings)
        (trial,) = pipe.run(image, "a.png", {}, streams)
        return trial, (streams / "a.cdc.level_1.fdc").read_bytes()

    first, cached = run(tiny_model(0))
    assert not np.isnan(first.encode_s)
    again, same = run(tiny_model(0))
    assert np.isnan(again.encode_s) and same == cached  # the same model: the cached stream is reused
    retrained = tiny_model(1)
    other, replaced = run(retrained)
    assert not np.isnan(other.encode_s) and replaced != cached
    assert container.read(replaced).header.model("decoder").hash == retrained.content_hash
    (streams / "a.cdc.level_1.fdc").write_bytes(b"not a stream")  # unreadable: encoded anew, no failure
    fresh, _ = run(retrained)
    assert not np.isnan(fresh.encode_s)


def test_sweep_refuses_to_resume_a_curve_of_another_model(tmp_path, image_dir):
    """Points are resumed by (image, curve, setting): after a retrained model takes the name, the
    finished points would be skipped and the old model's numbers reported under today's label.
    sweep.json records each pipeline curve's model hash and a resume with another model is refused."""
    import json

    from fastdiffc.pipelines.cdc import CDCCodec
    from test_cdc import tiny_model

    paths = images.list_images(image_dir)[:1]
    settings = [contenders.RateSetting("level=1", {"level": 1})]
    out = tmp_path / "r"

    def run(model):
        pipe = contenders.RatePipeline("cdc", CDCCodec(model, seed=7), settings=settings)
        jpeg = contenders.ClassicalContender(codecs.get_codec("jpeg"), [50])
        return sweep.run_sweep(paths, [jpeg, pipe], out, progress=False, metrics=["psnr"])

    assert run(tiny_model(0)).computed == 2
    recorded = json.loads((out / sweep.CONFIG_FILE).read_text())["models"]
    assert recorded == {"cdc": f"{tiny_model(0).content_hash:016x}"}  # classical codecs: no model
    assert run(tiny_model(0)).computed == 0  # the same model resumes
    with pytest.raises(ValueError, match="curve 'cdc' was measured with model"):
        run(tiny_model(1))


def test_report_tables_and_plots(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    rates = np.geomspace(0.08, 1.5, 5)
    with (out / sweep.POINTS_FILE).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(sweep.COLUMNS)
        for image in ("x.png", "y.png"):
            for codec, factor in (("jpeg", 1.0), ("heic", 0.8), ("diffc-flow", 0.5)):
                for i, r in enumerate(rates):
                    psnr = 10 * np.log10(r) + 32  # the rate at equal quality is `factor` times JPEG's
                    bpp = r * factor
                    w.writerow([image, codec, f"q={i}", int(bpp * 64), bpp, psnr, 0.9, 50, 0.1, 8, 8, 0.01, 0.01])
    path = report.write_report(out)
    text = path.read_text()
    bd_row = next(line for line in text.splitlines() if line.startswith("| diffc-flow |") and "%" in line)
    assert bd_row.split("|")[2].strip() == "-50.0%" and bd_row.split("|")[3].strip() == "-37.5%"
    pipeline_table = text.split("against every classical codec")[1]
    ours = next(line for line in pipeline_table.splitlines() if line.startswith("| diffc-flow |"))
    assert [c.strip() for c in ours.split("|")[2:4]] == ["-50.0%", "-37.5%"]  # vs JPEG, vs HEIC
    psnr_table = text.split("## PSNR")[1]
    jpeg_row = next(line for line in psnr_table.splitlines() if line.startswith("| jpeg |"))
    assert jpeg_row.split("|")[2:6] == [f" {10 * np.log10(r) + 32:.2f} " for r in (0.1, 0.25, 0.5, 1.0)]
    for name in ("rd_psnr.png", "rd_msssim.png", "rd_ssimulacra2.png", "rd_realism.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 100


# --- CLI ------------------------------------------------------------------------------------


def test_cli_eval_writes_report_and_resumes(tmp_path, image_dir, capsys):
    out = tmp_path / "report"
    argv = ["eval", str(image_dir), "-o", str(out), "--codecs", "jpeg,webp", "--qualities", "30,80",
            "--pipelines", "none", "--no-progress"]
    assert cli.main(argv) == 0
    assert "8 new points" in capsys.readouterr().out
    rows = sweep.read_points(out / "points.csv")
    assert len(rows) == 8 and {r["codec"] for r in rows} == {"jpeg", "webp"}
    for column in ("image", "codec", "setting", "bytes", "bpp", "psnr", "msssim", "ssimulacra2", "realism"):
        assert all(r[column] != "" for r in rows), column
    summary = (out / "summary.md").read_text()
    assert "## BD-rate" in summary and "| webp |" in summary
    assert Image.open(io.BytesIO((out / "rd_psnr.png").read_bytes())).format == "PNG"
    assert cli.main(argv) == 0
    assert "0 new points" in capsys.readouterr().out


def test_cli_eval_skips_unloadable_pipeline_and_rejects_bad_input(tmp_path, image_dir, capsys):
    out = tmp_path / "report"
    argv = ["eval", str(image_dir), "-o", str(out), "--codecs", "jpeg", "--qualities", "50",
            "--pipelines", "nosuchpipeline", "--metrics", "psnr", "--no-progress"]
    assert cli.main(argv) == 1
    assert "unknown pipeline 'nosuchpipeline'" in capsys.readouterr().err
    argv[argv.index("nosuchpipeline")] = "cdc@nosuchmodel:level=1+2"  # known, but its model is missing: skipped
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "skipping pipeline 'cdc@nosuchmodel:level=1+2' unavailable" in err and "no model named 'nosuchmodel'" in err
    for spec, message in (("dirac:decode_steps=21", "decode_steps must be an integer in 0..20"),
                          ("dirac:flow", "method is not a knob of the dirac pipeline"),
                          ("diffc,dirac:quality=5:bpp=0.1", "give one of bpp, quality")):
        argv[argv.index("--pipelines") + 1] = spec
        assert cli.main(argv) == 1  # before any model is loaded (diffc's included)
        assert message in capsys.readouterr().err
    assert cli.main(["eval", str(image_dir), "-o", str(out), "--codecs", "bpg", "--pipelines", "none"]) == 1
    assert "unknown codec 'bpg'" in capsys.readouterr().err
    assert cli.main(["eval", str(image_dir), "-o", str(out), "--pipeline-option", "bits_per_chunk"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["eval", str(empty), "-o", str(out), "--pipelines", "none"]) == 1
    assert "no images" in capsys.readouterr().err


def test_dev_images_export(tmp_path):
    paths = images.export_dev_images(tmp_path / "dev")
    assert [p.stem for p in paths] == list(images.DEV_IMAGES)
    for p in paths:
        with Image.open(p) as im:
            assert im.mode == "RGB" and min(im.size) >= 200
            native = images.load_dev_image(p.stem, as_evaluated=False)
            if p.stem in images.JPEG_SOURCED:  # halved to remove the JPEG block artefacts
                assert im.size == (round(native.width / 2), round(native.height / 2))
            else:
                assert im.size == native.size
    assert images.load_image(paths[0], max_size=64).size == (64, 64)  # astronaut is 512×512
