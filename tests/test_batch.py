"""Batch mode of compress / decompress (fastdiffc/batch.py): the same bytes as the single-file
command through local worker processes and through Ray; per-file errors; resuming."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastdiffc
import numpy as np
import pytest
from fastdiffc import batch, container
from fastdiffc.cli import main
from PIL import Image

# Subprocesses import the fastdiffc this test imported (the source tree or the installed wheel).
PACKAGE_PARENT = Path(fastdiffc.__file__).resolve().parents[1]
KNOBS = ["--steps", "2"]  # the default DiffC (hybrid model), two steps: fast on 48x32 images


def _folder(path: Path, n=6) -> Path:
    rng = np.random.default_rng(7)
    (path / "sub").mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((48, 32), Image.Resampling.BICUBIC)
        img.save(path / ("sub" if i % 3 == 2 else ".") / f"im{i}.png")
    (path / "notes.txt").write_text("not an image, not listed")
    (path / ".hidden.png").write_bytes(b"hidden: not listed")
    return path


def _outputs(folder: Path, ext: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*" + ext))}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("batch") / "in")


@pytest.fixture(scope="module")
def single(photos, tmp_path_factory):
    """What the single-file command writes for each photo: {relative .fdc path: bytes}."""
    out = tmp_path_factory.mktemp("single")
    for src in sorted(photos.rglob("im*.png")):
        dst = out / src.relative_to(photos).with_suffix(".fdc")
        dst.parent.mkdir(parents=True, exist_ok=True)
        assert main(["compress", str(src), "-o", str(dst), *KNOBS, "--quiet"]) == 0
    return _outputs(out, ".fdc")


def test_plan(photos, tmp_path):
    items = batch.plan(batch.COMPRESS, photos, tmp_path / "o", take_images=False)
    assert [it.rel for it in items] == ["im0.png", "im1.png", "im3.png", "im4.png", "sub/im2.png", "sub/im5.png"]
    assert items[-1].dst == tmp_path / "o" / "sub" / "im5.fdc"
    clash = tmp_path / "clash"
    clash.mkdir()
    for ext in ("png", "jpg"):
        Image.new("RGB", (8, 8)).save(clash / f"a.{ext}")
    with pytest.raises(ValueError, match="a.jpg and a.png would both be written"):
        batch.plan(batch.COMPRESS, clash, tmp_path / "o", take_images=False)


def test_local_pool_same_bytes_and_errors(photos, single, tmp_path, capsys):
    """Two worker processes: every output equals the single-file command's; a broken input is
    reported at the end (one line) and makes the exit code 1 without stopping the others."""
    src = tmp_path / "in"
    shutil.copytree(photos, src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    assert main(["compress", str(src), "-o", str(out), *KNOBS, "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert _outputs(out, ".fdc") == single
    assert "6 written" in err and "1 failed" in err
    assert [ln for ln in err.splitlines() if ln.startswith("fastdiffc compress: ")] == [
        "fastdiffc compress: broken.png: error: broken.png: not an image file Pillow can read"]
    assert not list(out.rglob("*.part"))

    # decompress the folder (inline worker) = the single-file decompress of each file
    dec = tmp_path / "dec"
    assert main(["decompress", str(out), "-o", str(dec), "--method", "denoise", "--jobs", "1", "--quiet"]) == 0
    ref = tmp_path / "ref.png"
    assert main(["decompress", str(out / "sub" / "im5.fdc"), "-o", str(ref), "--method", "denoise", "--quiet"]) == 0
    assert sorted(_outputs(dec, ".png")) == ["im0.png", "im1.png", "im3.png", "im4.png", "sub/im2.png", "sub/im5.png"]
    assert (dec / "sub" / "im5.png").read_bytes() == ref.read_bytes()


def test_resume_skips_complete_outputs(photos, single, tmp_path, capsys):
    """Complete outputs are kept (not rewritten), a truncated one and a stale .part are redone;
    other settings in the same folder are refused."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "im0.fdc").write_bytes(single["im0.fdc"])
    (out / "im1.fdc").write_bytes(single["im1.fdc"][:-5])  # truncated: redone
    (out / "im3.fdc.part").write_bytes(b"half")  # a killed run's temp file
    kept = (out / "im0.fdc").stat().st_mtime_ns
    time.sleep(0.01)
    assert main(["compress", str(photos), "-o", str(out), *KNOBS, "--jobs", "1"]) == 0
    err = capsys.readouterr().err
    assert "5 written" in err and "1 already done" in err
    assert (out / "im0.fdc").stat().st_mtime_ns == kept
    assert _outputs(out, ".fdc") == single and not list(out.rglob("*.part"))
    assert main(["compress", str(photos), "-o", str(out), "--steps", "3", "--quiet"]) == 1
    assert "other settings (knob_text=" in capsys.readouterr().err


def test_killed_batch_resumes(photos, single, tmp_path):
    """SIGKILL in the middle of a batch, run it again: the same files as an uninterrupted batch.

    The third file in the batch's order is a larger image, so the batch is certainly still
    working on it when the first two outputs appear, however fast the machine is."""
    src = tmp_path / "in"
    shutil.copytree(photos, src)
    rng = np.random.default_rng(3)
    big = Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).resize((576, 384))
    big.save(src / "im3.png")
    expected = dict(single)
    assert main(["compress", str(src / "im3.png"), "-o", str(tmp_path / "im3.fdc"), *KNOBS, "--quiet"]) == 0
    expected["im3.fdc"] = (tmp_path / "im3.fdc").read_bytes()

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fastdiffc", "compress", str(src), "-o", str(out), *KNOBS, "--jobs", "1",
           "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.rglob("*.fdc"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.fdc"))
    assert done == ["im0.fdc", "im1.fdc"], f"killed while coding the large third file, found {done}"
    for p in out.rglob("*.fdc"):  # whatever was there under a final name is complete
        container.read(p.read_bytes())
    assert subprocess.run(cmd, env=env).returncode == 0
    assert _outputs(out, ".fdc") == expected


def test_ray_same_bytes(photos, single, tmp_path, capsys):
    """One Ray task per file on a local Ray instance: the same files as the single-file command."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fastdiffc[cluster]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        assert main(["compress", str(photos), "-o", str(out), *KNOBS, "--ray", "auto"]) == 0
        assert "Ray (auto)" in capsys.readouterr().err
        assert _outputs(out, ".fdc") == single
    finally:
        ray.shutdown()
