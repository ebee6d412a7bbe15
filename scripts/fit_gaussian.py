#!/usr/bin/env python
"""Fit the shipped analytic Gaussian model (python/fastdiffc/weights/gaussian.safetensors) on the
training photos of docs/design.md §8 (data/photos/train, made by scripts/fetch_photos.sh). Never the
evaluation photos. Reproducible: fixed seed, patch positions drawn from it.

Usage: scripts/fit_gaussian.py [--data data/photos] [--out python/fastdiffc/weights/gaussian.safetensors]
                               [--patch-size 64] [--num-patches 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from fastdiffc.models.gaussian import GaussianDenoiser  # noqa: E402
from PIL import Image  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "photos")
    ap.add_argument("--out", type=Path, default=ROOT / "python" / "fastdiffc" / "weights" / "gaussian.safetensors")
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--num-patches", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    train = args.data / "train"
    files = sorted(p for p in train.glob("*.png"))
    if not files:
        print(f"no training photos under {train}; run scripts/fetch_photos.sh first", file=sys.stderr)
        return 1
    manifest = args.data / "manifest.tsv"
    info = {"data": "data/photos/train", "images": len(files),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None,
            "script": "scripts/fit_gaussian.py"}
    images = []
    for f in files:
        with Image.open(f) as im:
            images.append(im.convert("RGB"))
    t0 = time.time()
    model = GaussianDenoiser.fit(images, patch_size=args.patch_size, num_patches=args.num_patches, seed=args.seed,
                                 fit_info=info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(json.dumps(model.config(), indent=1, sort_keys=True))
    print(f"fitted in {time.time() - t0:.1f} s -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
