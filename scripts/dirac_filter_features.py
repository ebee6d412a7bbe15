"""Why DIRAC's output filter has the features it has (docs/design.md §4b, pipelines/output_filter.py).

On held-out photos (768×512 centre crops where they are that large; never the development
photos), each compressed by AVIF and HEIC at several qualities, the decoder's 0-step estimate
d = r̂_0/K_r is computed once and every feature set is fitted to the image's own residual by
least squares (what the encoder does), per output channel. Printed per file and on average: the
PSNR gain over the base of

- `gamma`: one gain γ on d (the version-2 signalled gain, in its 1/64 steps);
- `colour`: a 3×3 colour matrix on d;
- `+detail`: that and d_c's detail and the base's fine detail;
- `+coarse`: that and the base's coarser detail;
- `filter`: that and luma detail — the shipped filter, through output_filter itself, its weights
  in the file's 1/256 steps;
- `filter/64`: the same weights rounded to 1/64 and clamped to one byte (±2);
- `base-only`: the base-detail features alone (no model: a signalled unsharp mask);
- `+offset`: the filter and a constant per channel.

    PYTHONPATH=python python scripts/dirac_filter_features.py \
        [--photos mate_Storm,plasma_Path,mate_Garden,opencv_scenetext02] [--qualities 20,40,60,75]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from fastdiffc.eval.images import centre_crop
from fastdiffc.image_io import prepare_image
from fastdiffc.pipelines import output_filter
from fastdiffc.pipelines.dirac import DiracCodec, _base_tensor, zero_step_estimate
from PIL import Image

HELDOUT = Path("data/photos/heldout")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [-1, 1] images after clamping a (what the decoder outputs)."""
    return float(10 * torch.log10(4.0 / ((a.clamp(-1, 1) - b) ** 2).mean()))


def least_squares(feats: list[torch.Tensor], target: torch.Tensor, step: float | None = None, lim: float = 1e9):
    """Σ w_j f_j with w fitted to target (float64); weights rounded to `step` and clamped to ±lim."""
    a = torch.stack([f.flatten() for f in feats], 1).double()
    w = torch.linalg.lstsq(a, target.flatten().double()[:, None]).solution[:, 0]
    if step is not None:
        w = torch.clamp(torch.round(w / step) * step, -lim, lim - step)
    return (a @ w).view_as(target).float()


# Feature subsets in output_filter.features' order: d_R, d_G, d_B, d_c detail, base fine, coarse, luma.
SUBSETS = {"colour": slice(0, 3), "+detail": slice(0, 5), "+coarse": slice(0, 6)}


def fit_channels(xb, t, f, features: slice, *, offset: bool = False, **rounding) -> torch.Tensor:
    """x_base + the per-channel least-squares fit of `features` of f [3, 7, H, W] to t."""
    out = []
    for c in range(3):
        feats = list(f[c, features]) + ([torch.ones_like(t[0, c])] if offset else [])
        out.append(least_squares(feats, t[0, c], **rounding))
    return xb + torch.stack(out)[None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="mate_Storm,plasma_Path,mate_Garden,opencv_scenetext02")
    ap.add_argument("--qualities", default="20,40,60,75")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = DiracCodec()
    model = codec.model_for_encoding()
    gains = defaultdict(list)
    for name in args.photos.split(","):
        img = Image.open(HELDOUT / f"{name}.png").convert("RGB")
        if img.width >= 768 and img.height >= 512:
            img = centre_crop(img)
        x = prepare_image(img).tensor
        for base in ("avif", "heic"):
            for q in (int(v) for v in args.qualities.split(",")):
                opened = codec.open(codec.compress(img, base=base, quality=q, gain="table"))
                xb = _base_tensor(opened.plain)
                cond = model.conditioning(xb, opened.plain.codec, opened.plain.bpp, opened.plain.quality)
                with torch.no_grad():
                    d = zero_step_estimate(model, xb, cond, 0, "float32")
                t = x - xb
                f = output_filter.features(d, xb)[0]  # [3, 7, H, W]
                gamma = round(float((d * t).sum() / (d * d).sum()) * 64) / 64
                outs = {
                    "gamma": xb + gamma * d,
                    **{k: fit_channels(xb, t, f, sl) for k, sl in SUBSETS.items()},
                    "filter": output_filter.apply(d, xb, output_filter.fit_codes(d, xb, x)),
                    "filter/64": fit_channels(xb, t, f, slice(0, 7), step=1 / 64, lim=2.0),
                    "base-only": fit_channels(xb, t, f, slice(4, 7)),
                    "+offset": fit_channels(xb, t, f, slice(0, 7), offset=True),
                }
                ref = psnr(xb, x)
                row = {k: psnr(v, x) - ref for k, v in outs.items()}
                for k, v in row.items():
                    gains[k].append(v)
                print(f"{name} {base} q={q} {opened.plain.bpp:.3f} bpp: "
                      + " ".join(f"{k} {v:+.3f}" for k, v in row.items()), flush=True)
    print("\nmean PSNR gain over the base (dB): " + ", ".join(f"{k} {np.mean(v):+.3f}" for k, v in gains.items()))


if __name__ == "__main__":
    main()
