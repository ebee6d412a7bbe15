"""CDC's real files against the model's own likelihoods (issue 14's first acceptance item).

For every development photo (as evaluated: JPEG-sourced ones halved) and every rate level,
the .fdc written by `CDCCodec.compress` is compared with the float likelihood estimate
−log2 p(ŷ|ẑ) − log2 p(ẑ) of the same rounded latents (CDCModel.forward_rd, noise off):
the gap is the integer tables' quantisation, the scale table's grid, the ANS tail and the
container. The criterion is stated at 768×512, larger than any development photo, so a
768×512 centre crop of a held-out training photo (--large) is added.

    PYTHONPATH=python python scripts/cdc_rate_check.py [--model cdc] [--out docs/results/cdc_rate.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from fastdiffc.eval.contenders import resolve_model_ref
from fastdiffc.eval.images import DEV_IMAGES, centre_crop, load_dev_image
from fastdiffc.image_io import load_image, prepare_image
from fastdiffc.models.cdc import CDCModel
from fastdiffc.pipelines.cdc import CDCCodec


def estimate_bytes(model: CDCModel, image, level: int) -> float:
    """The float model's likelihood of the rounded latents, in bytes."""
    with torch.no_grad():
        out = model.forward_rd(CDCModel.pad(prepare_image(image).tensor), torch.tensor([level]), noise=False)
    return float(out["bits_y"][0] + out["bits_z"][0]) / 8.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cdc", help="a registry name or a .safetensors path")
    p.add_argument("--out", default=None, help="write the table as Markdown here too")
    p.add_argument("--large", default="data/photos/heldout/mate_Garden.png",
                   help="a photo of at least 768×512 whose centre crop is added")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    codec = CDCCodec(resolve_model_ref(args.model))  # a registry name or a model file
    model = codec.model_for_encoding()
    photos = {name: load_dev_image(name) for name in DEV_IMAGES}
    try:
        photos[f"{Path(args.large).stem} 768×512 crop"] = centre_crop(load_image(args.large))
    except ValueError as e:
        raise SystemExit(f"{args.large}: {e}") from None
    rows = ["| photo | size | level | file bytes | likelihood bytes | file / likelihood |", "|---|---|---|---|---|---|"]
    ratios = []
    for name, im in photos.items():
        for level in range(model.config.levels):
            size = len(codec.compress(im, level=level))
            est = estimate_bytes(model, im, level)
            ratios.append(size / est)
            rows.append(f"| {name} | {im.width}×{im.height} | {level} | {size} | {est:.0f} | {size / est:.4f} |")
    r = np.array(ratios)
    rows.append(f"\nfile / likelihood over {len(r)} files: mean {r.mean():.4f}, min {r.min():.4f}, max {r.max():.4f}")
    text = "\n".join(rows)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"# CDC: file bytes against the float likelihoods\n\n```\n"
                                  f"PYTHONPATH=python python scripts/cdc_rate_check.py --out {args.out}\n```\n\n"
                                  + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
