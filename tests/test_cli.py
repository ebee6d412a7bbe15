"""CLI: compress / decompress / info round trip with the shipped Gaussian model; one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastdiffc import container, precision
from fastdiffc.cli import main
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "python" / "fastdiffc" / "samples" / "sample.png"
AUTO = precision.resolve("auto")  # what DiffC files record by default on this machine


@pytest.fixture(scope="module")
def small_png(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "crop.png"
    Image.open(SAMPLE).convert("RGB").crop((140, 50, 188, 82)).save(p)  # 48x32
    return p


@pytest.fixture(scope="module")
def compressed(small_png):
    out = small_png.with_suffix(".fdc")
    assert main(["compress", str(small_png), "-o", str(out), "--model", "gaussian", "--steps", "20",
                 "--seed", "5", "--quiet"]) == 0
    return out


def test_compress_decompress_info(compressed, tmp_path, capsys):
    data = compressed.read_bytes()
    h, lengths = container.read_header(data)
    assert (h.pipeline, h.model_name, h.width, h.height, len(lengths)) == ("diffc", "gaussian", 48, 32, 20)
    # the tree codebook with the output filter: version 5
    assert data[3] == 2 and h.params_version == 5 and h.precision == AUTO
    png = tmp_path / "out.png"
    assert main(["decompress", str(compressed), "-o", str(png), "--method", "denoise", "--quiet"]) == 0
    assert Image.open(png).size == (48, 32)
    paper = tmp_path / "paper.png"  # --flow-offset 0: the paper's flow decoder, a different image
    assert main(["decompress", str(compressed), "-o", str(png), "--quiet"]) == 0
    assert main(["decompress", str(compressed), "-o", str(paper), "--flow-offset", "0", "--quiet"]) == 0
    assert not np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(paper)))
    _one_line_error(["decompress", str(compressed), "-o", str(paper), "--flow-offset", "-1"], capsys, "offset")
    capsys.readouterr()
    assert main(["info", str(compressed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["segments"] == 20 and info["complete"] and info["bytes"] == len(data)
    assert info["params"]["seed"] == 5 and info["model"] == "gaussian" and info["container_version"] == 2
    assert info["models"] == [{"role": "denoiser", "name": "gaussian", "hash": f"{h.model_hash:016x}", "version": ""}]
    assert info["precision"] == AUTO and info["params_version"] == 5 and info["params"]["filter_steps"] == 20
    assert (info["params"]["scheme"], info["params"]["levels"], info["params"]["beam"]) == ("tree", 12, 8)
    assert info["params"]["shared_randomness"] == "philox" and info["params"]["grid_steps"] == 32
    assert main(["info", str(compressed)]) == 0
    text = capsys.readouterr().out
    assert "segments   20" in text and f"model      denoiser: gaussian (hash {h.model_hash:016x})" in text
    assert f"precision  {AUTO}" in text and "params     version 5" in text and "bits_per_chunk" in text


def test_scheme_flag(small_png, tmp_path, capsys):
    """--scheme pfr --no-filter writes the flat codebook (parameter version 2, as files before the tree
    default and the output filter; with the filter: version 5); a scheme the pipeline lacks is a
    one-line error. --skip-filter decodes a filtered file as its flow output alone."""
    out = tmp_path / "pfr.fdc"
    for flags, version in ((["--no-filter"], 2), ([], 5)):
        assert main(["compress", str(small_png), "-o", str(out), "--model", "gaussian", "--steps", "4",
                     "--scheme", "pfr", "--quiet", *flags]) == 0
        h, _ = container.read_header(out.read_bytes())
        assert h.params_version == version
    outs = []
    for flags in ([], ["--skip-filter"]):
        png = tmp_path / f"pfr{len(flags)}.png"
        assert main(["decompress", str(out), "-o", str(png), "--quiet", *flags]) == 0
        outs.append(np.asarray(Image.open(png)))
    assert not np.array_equal(*outs)
    _one_line_error(["compress", str(small_png), "-o", str(out), "--scheme", "best"], capsys,
                    "diffc knob scheme must be one of pfr, importance, tree")


def test_max_steps_and_truncated_file(compressed, tmp_path, capsys):
    data = compressed.read_bytes()
    cut = tmp_path / "cut.fdc"
    cut.write_bytes(data[:-30])
    png = tmp_path / "cut.png"
    assert main(["decompress", str(cut), "-o", str(png), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated" in err[0] and "--allow-truncated" in err[0]
    assert main(["decompress", str(cut), "-o", str(png), "--allow-truncated", "--method", "denoise", "--quiet"]) == 0
    a = np.asarray(Image.open(png))
    full = tmp_path / "k.png"
    n_complete = len(container.read(data[:-30], allow_truncated=True).segments)
    assert main(["decompress", str(compressed), "-o", str(full), "--max-steps", str(n_complete),
                 "--method", "denoise", "--quiet"]) == 0
    assert np.array_equal(a, np.asarray(Image.open(full)))


def _one_line_error(argv, capsys, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]


def test_errors_are_one_line(tmp_path, compressed, small_png, capsys):
    notimg = tmp_path / "notes.png"
    notimg.write_text("hello")
    _one_line_error(["compress", str(notimg), "-o", str(tmp_path / "a.fdc")], capsys, "not an image")
    _one_line_error(["compress", str(tmp_path / "missing.png"), "-o", str(tmp_path / "a.fdc")], capsys, "missing.png")
    _one_line_error(["compress", str(small_png), "-o", str(tmp_path / "a.fdc"), "--model", "nope", "--quiet"],
                    capsys, "nope")
    # A level the shipped CDC model does not have: the error names the knob, the range and the model.
    _one_line_error(["compress", str(small_png), "-o", str(tmp_path / "a.fdc"), "--pipeline", "cdc", "--level", "9",
                     "--quiet"], capsys, "cdc knob level must be in 0..5 for model 'cdc'")
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(rgba)
    _one_line_error(["compress", str(rgba), "-o", str(tmp_path / "a.fdc"), "--quiet"], capsys, "transparency")
    _one_line_error(["decompress", str(small_png), "-o", str(tmp_path / "x.png")], capsys, "magic")
    bad = bytearray(compressed.read_bytes())
    bad[-10] ^= 1
    (tmp_path / "bad.fdc").write_bytes(bytes(bad))
    _one_line_error(["decompress", str(tmp_path / "bad.fdc"), "-o", str(tmp_path / "x.png")], capsys, "checksum")
    _one_line_error(["info", str(tmp_path / "bad.fdc")], capsys, "checksum")
    _one_line_error(["decompress", str(compressed), "-o", str(tmp_path / "x.png"), "--model", "nope"], capsys, "nope")


def test_python_m_entry_point_error_exit(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastdiffc", "info", str(tmp_path / "none.fdc")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_info_on_a_version_1_file(capsys):
    golden = Path(__file__).parent / "golden" / "diffc_v1_pixel_gaussian_32x48.fdc"
    assert main(["info", str(golden), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["container_version"] == 1 and info["params_version"] == 1
    assert info["params"]["shared_randomness"].startswith("numpy PCG64") and info["params"]["seed"] == 7


def test_help_lists_knobs_from_declarations(capsys):
    from fastdiffc.pipelines import available_pipelines

    for command, stage in (("compress", "rate"), ("decompress", "decode")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for cls in available_pipelines().values():
            for knob in cls.knobs(stage):
                assert knob.flag in text, knob.flag
                assert " ".join(knob.help.split())[:40] in text
        assert "--recon-steps" in text if stage == "decode" else "--steps N" in text
        assert "(diffc" in text


def test_knob_flags_checked_by_the_pipeline(compressed, small_png, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    _one_line_error(["decompress", str(compressed), "-o", out, "--recon-steps", "-5"], capsys,
                    "diffc knob recon_steps must be an integer in 1..1000, got -5")
    _one_line_error(["decompress", str(compressed), "-o", out, "--recon-steps", "many"], capsys, "recon_steps")
    _one_line_error(["decompress", str(compressed), "-o", out, "--method", "magic"], capsys, "method")
    _one_line_error(["compress", str(small_png), "-o", str(tmp_path / "a.fdc"), "--bpp", "0.5", "--steps", "3"],
                    capsys, "either bpp or steps")
    _one_line_error(["compress", str(small_png), "-o", str(tmp_path / "a.fdc"), "--steps", "0"], capsys, "steps")
    _one_line_error(["compress", str(small_png), "-o", str(tmp_path / "a.fdc"), "--model", "gaussian",
                     "--bpp", "0.001", "--quiet"], capsys, "smallest")
    _one_line_error(["decompress", str(compressed), "-o", out, "--pipeline", "dirac"], capsys,
                    "written by the diffc pipeline; --pipeline dirac contradicts it")
    _one_line_error(["decompress", str(small_png), "-o", out], capsys,
                    "not an .fdc file (bad magic); to enhance a JPEG/WebP", "--pipeline dirac")
    _one_line_error(["decompress", str(compressed), "-o", str(tmp_path / "x.notanimage")], capsys, "extension")


def test_flag_of_another_pipeline_is_a_one_line_error(compressed, tmp_path, capsys, monkeypatch):
    """A knob only another pipeline declares: its flag exists, and using it with DiffC is refused."""
    from fastdiffc.pipelines import PIPELINES, Knob
    from fastdiffc.pipelines.base import Codec

    class FakeDirac(Codec):
        pipeline = "dirac"
        rate_knobs = (Knob("quality", int, "rate", "base codec quality", minimum=0, maximum=100),)
        decode_knobs = (Knob("decode_steps", int, "decode", "diffusion steps after the base decode", minimum=0,
                             maximum=20),)

        def __init__(self, model=None, **settings):
            self.settings = settings

        def compress(self, image, *, bpp=None, **rate_knobs):
            raise AssertionError("not used")

        def decompress(self, data, **decode_knobs):
            k = self.check_knobs("decode", decode_knobs)
            return Image.new("RGB", (3 + k["decode_steps"], 2))

    import types

    module = types.ModuleType("fake_dirac_module")
    module.FakeDirac = FakeDirac
    monkeypatch.setitem(sys.modules, "fake_dirac_module", module)
    monkeypatch.setitem(PIPELINES, "dirac", "fake_dirac_module:FakeDirac")
    out = str(tmp_path / "x.png")
    with pytest.raises(SystemExit):
        main(["decompress", "--help"])
    assert "diffusion steps after the base decode (dirac: 0..20)" in " ".join(capsys.readouterr().out.split())
    _one_line_error(["decompress", str(compressed), "-o", out, "--decode-steps", "3"], capsys,
                    "--decode-steps does not apply to the diffc pipeline (its decode flags: --method")
    _one_line_error(["compress", str(compressed), "-o", out, "--quality", "3"], capsys,
                    "--quality does not apply to the diffc pipeline")
    # A plain (non-.fdc) file goes to the named pipeline with its knobs, parsed by its declaration.
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    assert main(["decompress", str(jpeg), "-o", out, "--pipeline", "dirac", "--decode-steps", "4", "--quiet"]) == 0
    assert Image.open(out).size == (7, 2)
    _one_line_error(["decompress", str(jpeg), "-o", out, "--pipeline", "dirac", "--decode-steps", "-5"], capsys,
                    "dirac knob decode_steps must be an integer in 0..20, got -5")
    _one_line_error(["decompress", str(jpeg), "-o", out, "--pipeline", "dirac", "--max-steps", "2"], capsys,
                    "--max-steps does not apply to the dirac pipeline")


def test_unexpected_errors_are_one_line_and_debug_shows_them(compressed, tmp_path, capsys, monkeypatch):
    from fastdiffc.pipelines.diffc import DiffCCodec

    def boom(self, data, **knobs):
        raise MemoryError()

    monkeypatch.setattr(DiffCCodec, "decompress", boom)
    argv = ["decompress", str(compressed), "-o", str(tmp_path / "x.png"), "--quiet"]
    _one_line_error(argv, capsys, "out of memory")
    with pytest.raises(MemoryError):
        main(["--debug", *argv])
    with pytest.raises(MemoryError):
        main([*argv, "--debug"])

    def crash(self, data, **knobs):
        raise RuntimeError("kernel exploded\nwith details\n  on three lines")

    monkeypatch.setattr(DiffCCodec, "decompress", crash)
    _one_line_error(argv, capsys, "RuntimeError: kernel exploded with details on three lines", "--debug")
    monkeypatch.setattr(DiffCCodec, "decompress", lambda self, data, **k: {}["missing"])
    _one_line_error(argv, capsys, "KeyError")


def test_debug_prints_a_traceback_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.fdc"
    bad.write_bytes(b"FDC\x09" + bytes(20))
    r = subprocess.run([sys.executable, "-m", "fastdiffc", "--debug", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr and "UnsupportedVersionError" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fastdiffc", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "fastdiffc info: error: .fdc version 9 is not supported by this build (it reads versions 1, 2); "
        "a newer fastdiffc may read it"]


def test_threads_flag(compressed, tmp_path, capsys):
    import torch
    from fastdiffc import _core

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        assert main(["--threads", "1", "info", str(compressed)]) == 0
        assert torch.get_num_threads() == 1 and _core.openmp_max_threads() == 1
    finally:
        torch.set_num_threads(before)
        _core.set_openmp_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env
    capsys.readouterr()
    for bad in ("0", "-2", "two", "100000"):
        _one_line_error(["--threads", bad, "info", str(compressed)], capsys, "--threads must be an integer in 1..")
