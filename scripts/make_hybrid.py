#!/usr/bin/env python
"""Write the shipped composite model python/fastdiffc/weights/hybrid.safetensors: the Gaussian
model below a switch log-SNR, the UNet at and above it, with the parts' current content hashes.

Re-run it whenever gaussian.safetensors or unet.safetensors changes (until then loading "hybrid"
refuses: its recorded part hashes no longer match). Choose the switch on the HELD-OUT training
photos, never the development (test) photos:

    fastdiffc experiments model-kl --models gaussian,unet --images data/photos/heldout --max-size 256

prints the recommended switch (and --write-composite does this script's job in the same run).

Usage: scripts/make_hybrid.py --switch X [--low gaussian] [--high unet] [--out .../hybrid.safetensors]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from fastdiffc.models.registry import WEIGHTS_DIR, load_model, save_composite  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switch", type=float, required=True, help="log-SNR from which the high model is used")
    ap.add_argument("--low", default="gaussian", help="model below the switch (default %(default)s)")
    ap.add_argument("--high", default="unet", help="model at and above the switch (default %(default)s)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR / "hybrid.safetensors")
    args = ap.parse_args(argv)
    try:
        h = save_composite(args.out, [args.low, args.high], [args.switch])
        model = load_model(args.out.stem, args.out.parent)  # proves it loads with the parts as they are now
    except (ValueError, LookupError) as e:
        print(f"make_hybrid: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {args.low} for λ < {args.switch:g}, {args.high} for λ >= {args.switch:g}; "
          f"content hash {h:016x}; parts " + ", ".join(f"{p.name} {p.content_hash:016x}" for p in model.parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
