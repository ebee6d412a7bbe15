"""PSNR gain of DIRAC at 0 steps over plain files written by Pillow (no .fdc container).

On the bundled sample photo, for one or more DIRAC model files: what each model's gain table
does to plain JPEG, AVIF, HEIC, WebP and JPEG XL files across qualities.

    PYTHONPATH=python python scripts/dirac_plain_files.py python/fastdiffc/weights/dirac.safetensors [more ...]
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "python" / "fastdiffc" / "samples" / "sample.png"
QUALITIES = {"jpeg": (10, 30, 50, 70), "avif": (10, 30, 50, 70), "heic": (10, 30, 50, 70),
             "webp": (10, 50, 80), "jxl": (10, 50, 80)}


def main(paths: list[str]) -> int:
    from fastdiffc.codecs import classical
    from fastdiffc.image_io import psnr
    from fastdiffc.models.residual import ResidualDenoiser
    from fastdiffc.pipelines.dirac import DiracCodec

    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    im = Image.open(SAMPLE).convert("RGB")
    for path in paths:
        codec = DiracCodec(ResidualDenoiser.load(path))
        cells = []
        for name, qualities in QUALITIES.items():
            for q in qualities:
                data = classical.get_codec(name).encode(im, q)
                base = Image.open(io.BytesIO(data)).convert("RGB")
                gain = psnr(codec.decompress(data, decode_steps=0), im) - psnr(base, im)
                cells.append(f"{name} q{q} {gain:+.3f} dB")
        print(f"{path}: " + "; ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
