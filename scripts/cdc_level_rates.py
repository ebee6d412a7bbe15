"""Record a CDC model's rate levels in its file: the bpp and PSNR of real files per level.

A user picks CDC's `level` (or a `--bpp` ceiling) without knowing what the λ's mean in bits;
this measures, on the held-out training photos (never the development photos), the mean bpp
of the .fdc files and the mean PSNR of the deterministic decode at every level, and writes
them into the model file's metadata ("level_rates"), where `fastdiffc models` shows them.
The tensors are unchanged; the file (and so its content hash) changes, so run it before a
model is shipped, never on a shipped one.

    PYTHONPATH=python python scripts/cdc_level_rates.py python/fastdiffc/weights/cdc.safetensors \\
        --photos data/photos/heldout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from fastdiffc.eval.images import list_images, load_image
from fastdiffc.image_io import psnr
from fastdiffc.models.cdc import CDCModel
from fastdiffc.models.registry import CONFIG_KEY
from fastdiffc.pipelines.cdc import CDCCodec
from safetensors import safe_open
from safetensors.torch import save_file


def measure(model: CDCModel, photos: list[Path]) -> list[dict]:
    codec = CDCCodec(model)
    images = [load_image(p) for p in photos]
    rows = []
    for level in range(model.config.levels):
        bpps, psnrs = [], []
        for im in images:
            data = codec.compress(im, level=level)
            bpps.append(8 * len(data) / (im.width * im.height))
            psnrs.append(psnr(np.asarray(codec.decompress(data)), np.asarray(im.convert("RGB"))))
        rows.append({"level": level, "lambda": model.config.lambdas[level],
                     "bpp": round(float(np.mean(bpps)), 4), "psnr": round(float(np.mean(psnrs)), 2)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a CDC .safetensors file (rewritten in place)")
    p.add_argument("--photos", default="data/photos/heldout", help="folder of held-out photos")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    photos = list_images(args.photos)
    if not photos:
        raise SystemExit(f"no images in {args.photos}")
    rows = measure(CDCModel.load(args.model), photos)
    with safe_open(args.model, framework="pt") as f:
        meta = json.loads(f.metadata()[CONFIG_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["level_rates"] = {"photos": f"{len(photos)} held-out photos ({Path(args.photos).as_posix()})",
                           "levels": rows}
    save_file(tensors, args.model, metadata={CONFIG_KEY: json.dumps(meta, sort_keys=True)})
    for r in rows:
        print(f"level {r['level']}: λ {r['lambda']}, {r['bpp']:.4f} bpp, {r['psnr']:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
