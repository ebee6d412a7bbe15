"""Search CDC's 4-step decode grid on held-out photos (docs/design.md §4c, pipelines/cdc.py TUNED_GRIDS).

Each held-out photo's centre crop (--size, default 384×256: a 64-step reference per file is the
cost) is coded at levels 1/3/5; every candidate grid (λ_0 = λ_start, then three points from
--second × --last, evenly spaced between them) decodes the same files with DPM-Solver++(2M).
Printed: the mean PSNR gap to the 64-step decode (range over files) and the mean realism. The
development photos are never used.

    PYTHONPATH=python python scripts/cdc_tune_grid.py [--second -3,-2,-1,0,1] [--last 6,7,8,9,10]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
from fastdiffc.eval.images import centre_crop
from fastdiffc.eval.metrics import realism_swd
from fastdiffc.image_io import psnr, tensor_to_pil
from fastdiffc.pipelines import cdc as cdc_pipeline
from PIL import Image

HELDOUT = Path("data/photos/heldout")


def decode(opened, steps: int, grid=None) -> np.ndarray:
    """One decode of an opened CDC file with `steps` 2M steps, on `grid` (λ's) if given."""
    model, h, level, seed, y_hat = opened
    original = cdc_pipeline.schedule
    if grid is not None:
        cdc_pipeline.schedule = lambda *_args, **_kw: list(grid)
    try:
        with torch.no_grad():
            x = cdc_pipeline.reconstruct(model, y_hat, level, h.height, h.width, steps=steps, seed=seed)
    finally:
        cdc_pipeline.schedule = original
    return np.asarray(tensor_to_pil(x, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="mate_Storm,mate_Garden,opencv_scenetext02,plasma_Path")
    ap.add_argument("--size", default="384x256")
    ap.add_argument("--second", default="-3,-2,-1,0,1", help="candidate second grid points (λ)")
    ap.add_argument("--last", default="6,7,8,9,10", help="candidate last grid points (λ)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    codec = cdc_pipeline.CDCCodec()
    start = codec.model_for_encoding().config.logsnr_start
    files = []
    for name in args.photos.split(","):
        img = centre_crop(Image.open(HELDOUT / f"{name}.png").convert("RGB"), width, height)
        for level in (1, 3, 5):
            files.append((np.asarray(img), codec.open(codec.compress(img, level=level))))
    reference = [psnr(decode(opened, 64), ref) for ref, opened in files]
    grids = [None] + [[start, a, (a + b) / 2, b] for a, b in itertools.product(
        (float(v) for v in args.second.split(",")), (float(v) for v in args.last.split(",")))]
    for grid in grids:
        outs = [(decode(opened, 4, grid), ref) for ref, opened in files]
        gaps = [psnr(out, ref) - r64 for (out, ref), r64 in zip(outs, reference)]
        swd = np.mean([realism_swd(ref, out) for out, ref in outs])
        label = "shipped" if grid is None else "(" + ", ".join(f"{v:g}" for v in grid) + ")"
        print(f"{label:28s} gap {np.mean(gaps):+.3f} dB ({min(gaps):+.2f} … {max(gaps):+.2f}), realism {swd:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
