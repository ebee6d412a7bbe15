"""CLI: compress / decompress / info round trip with the shipped Gaussian model; one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastdiffc import container
from fastdiffc.cli import main
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "python" / "fastdiffc" / "samples" / "sample.png"


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
    assert info["settings"]["seed"] == 5 and info["model"] == "gaussian"
    assert main(["info", str(compressed)]) == 0
    assert "steps      20" in capsys.readouterr().out


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
    _one_line_error(["compress", str(small_png), "-o", str(tmp_path / "a.fdc"), "--pipeline", "cdc", "--quiet"],
                    capsys, "not implemented")
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
