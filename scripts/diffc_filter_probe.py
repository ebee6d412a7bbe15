"""How much an encoder-fitted output filter would add to DiffC (docs/design.md §4, "measured, not
built yet"): DIRAC's filter (pipelines/output_filter.py) on the flow reconstruction.

Each held-out photo's centre crop is encoded once (1 bpp ceiling) with the default model; at each
prefix the flow reconstruction x_f and the denoiser mean x_d are decoded, and per channel the
filter's features of (d = x_d − x_f, base = x_f) are fitted to the original by least squares (what
an encoder would do). Printed: PSNR of flow, denoiser mean, the best flow/denoise blend and the
filter. Held-out photos only.

    PYTHONPATH=python python scripts/diffc_filter_probe.py [--photos mate_Storm,plasma_Path,mate_Garden]
        [--size 512x384] [--steps 8,11,14,17,20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from fastdiffc import load_codec
from fastdiffc.eval.images import centre_crop
from fastdiffc.image_io import prepare_image
from fastdiffc.pipelines import output_filter
from PIL import Image

HELDOUT = Path("data/photos/heldout")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4.0 / ((a.clamp(-1, 1) - b) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="mate_Storm,plasma_Path,mate_Garden")
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--steps", default="8,11,14,17,20")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    codec = load_codec("diffc")
    for name in args.photos.split(","):
        img = centre_crop(Image.open(HELDOUT / f"{name}.png").convert("RGB"), width, height)
        x = prepare_image(img).tensor
        data = codec.compress(img, bpp=1.0)
        for k in (int(v) for v in args.steps.split(",")):
            flow = prepare_image(codec.decompress(data, max_steps=k)).tensor
            mean = prepare_image(codec.decompress(data, max_steps=k, method="denoise")).tensor
            d = mean - flow
            filtered = output_filter.apply(d, flow, output_filter.fit_codes(d, flow, x))
            g = float((d * (x - flow)).sum() / (d * d).sum())
            print(f"{name} {k} steps: flow {psnr(flow, x):.2f} dB, denoiser mean {psnr(mean, x):.2f}, "
                  f"blend ({g:.2f}) {psnr(flow + g * d, x):.2f}, filter {psnr(filtered, x):.2f}", flush=True)


if __name__ == "__main__":
    main()
