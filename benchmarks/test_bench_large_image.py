"""DiffC on a 12-megapixel photo: peak memory (RSS) and time of compress + decompress.

Each run is a fresh subprocess, so `resource.getrusage(RUSAGE_SELF).ru_maxrss` is the peak of that
codec round trip alone. The photo is a training photo (data/photos/train/mate_Dune.png, or the
bundled sample when the photos are not fetched) upscaled with Lanczos to 4000x3000; the run is
kept short: steps=4 (a modest rate), recon_steps=4, the default model.
Target (issue 12, docs/design.md §10): peak RSS <= 3 GiB.

    python -m pytest benchmarks/test_bench_large_image.py --benchmark-only -s
    python benchmarks/test_bench_large_image.py [--size 4000x3000] [--steps 4]   # prints JSON
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "data" / "photos" / "train" / "mate_Dune.png"
SAMPLE = ROOT / "python" / "fastdiffc" / "samples" / "sample.png"
GIB = 1 << 30


def worker(size=(4000, 3000), steps: int = 4, recon_steps: int = 4) -> dict:
    """Compress + decompress in this process; returns timings, sizes and peak RSS (bytes)."""
    import resource
    import time

    import numpy as np
    from fastdiffc import load_codec
    from fastdiffc.image_io import psnr
    from PIL import Image

    src = PHOTO if PHOTO.exists() else SAMPLE
    im = Image.open(src).convert("RGB").resize(size, Image.LANCZOS)
    rss_image = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    codec = load_codec("diffc", recon_steps=recon_steps)
    t0 = time.perf_counter()
    data = codec.compress(im, steps=steps)
    t1 = time.perf_counter()
    rss_encode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = codec.decompress(data)
    t2 = time.perf_counter()
    return {"photo": str(src.relative_to(ROOT)), "size": f"{size[0]}x{size[1]}", "steps": steps,
            "recon_steps": recon_steps, "bytes": len(data), "bpp": 8 * len(data) / (size[0] * size[1]),
            "psnr": psnr(np.asarray(im), np.asarray(out)), "encode_s": t1 - t0, "decode_s": t2 - t1,
            "peak_rss_after_load_bytes": rss_image, "peak_rss_encode_bytes": rss_encode,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_subprocess(size=(4000, 3000), steps: int = 4, recon_steps: int = 4, pythonpath: str | None = None) -> dict:
    import importlib.util
    import os

    # The worker imports the fastdiffc this process would import (the source tree on PYTHONPATH or
    # the installed wheel); a fresh clone's python/ has no native modules and no kernels link.
    package_parent = Path(importlib.util.find_spec("fastdiffc").origin).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = pythonpath or os.pathsep.join([str(package_parent), env.get("PYTHONPATH", "")])
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import test_bench_large_image as b; "
            f"print(json.dumps(b.worker({tuple(size)!r}, {steps}, {recon_steps})))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_diffc_12_megapixels(benchmark):
    result = benchmark.pedantic(run_subprocess, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(json.dumps(result, indent=1))
    assert result["peak_rss_bytes"] <= 3 * GIB, f"peak RSS {result['peak_rss_bytes'] / GIB:.2f} GiB > 3 GiB"


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="4000x3000")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--recon-steps", type=int, default=4)
    p.add_argument("--pythonpath", default=None, help="run another source tree (e.g. an older commit)")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    print(json.dumps(run_subprocess((w, h), a.steps, a.recon_steps, a.pythonpath), indent=1))
