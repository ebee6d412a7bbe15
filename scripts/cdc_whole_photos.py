"""CDC models on whole held-out photos: real-file bpp, PSNR and file / float-likelihood per level.

The rd stage's held-out score is computed on tiles; a hyperprior trained on crops too small for
its hyper-latent (design §4c: 128 px crops give a 2×2 ẑ) looks fine on small tiles and codes a
whole photo at a multiple of the bits. This compares models where it matters — whole photos of
the held-out training set (never the development photos) — with the file each would write.

    PYTHONPATH=python python scripts/cdc_whole_photos.py cdc-20261202b runs/cdc_rd5/ema.safetensors \\
        --photos mate_Garden,mate_Storm,opencv_aero3 --levels 0,2,5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from cdc_rate_check import estimate_bytes
from fastdiffc.eval.contenders import resolve_model_ref
from fastdiffc.image_io import load_image, psnr
from fastdiffc.pipelines.cdc import CDCCodec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="registry names or .safetensors paths")
    p.add_argument("--photos", default="mate_Garden,mate_Storm,opencv_aero3",
                   help="comma-separated stems under --folder")
    p.add_argument("--folder", default="data/photos/heldout")
    p.add_argument("--levels", default="0,2,5")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    levels = [int(v) for v in args.levels.split(",")]
    images = {name: load_image(f"{args.folder}/{name}.png") for name in args.photos.split(",")}
    print("| model | photo | size | " + " | ".join(f"level {lv}: bpp / dB / file÷likelihood" for lv in levels) + " |")
    print("|---|---|---|" + "---|" * len(levels))
    for ref in args.models:
        codec = CDCCodec(resolve_model_ref(ref))
        model = codec.model_for_encoding()
        for name, im in images.items():
            cells = []
            for level in levels:
                data = codec.compress(im, level=level)
                bpp = 8 * len(data) / (im.width * im.height)
                quality = psnr(np.asarray(codec.decompress(data)), np.asarray(im.convert("RGB")))
                cells.append(f"{bpp:.4f} / {quality:.2f} / {len(data) / estimate_bytes(model, im, level):.3f}")
            print(f"| {ref} | {name} | {im.width}×{im.height} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
