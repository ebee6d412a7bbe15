#!/usr/bin/env python3
"""Write the development evaluation photos (docs/design.md §8) as PNGs into a folder.

    python scripts/export_dev_images.py data/dev_images

The photos come from pip packages (scikit-image, scikit-learn, matplotlib: the `eval`
extra), so nothing is downloaded. Same as `fastdiffc eval --export-dev-images DIR`.
"""

import argparse
import sys

from fastdiffc.eval.images import DEV_IMAGES, export_dev_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="output folder (created)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite PNGs that already exist")
    args = parser.parse_args(argv)
    try:
        paths = export_dev_images(args.folder, overwrite=args.overwrite)
    except ImportError as e:
        print(f"export_dev_images: error: {e}", file=sys.stderr)
        return 1
    for name, path in zip(DEV_IMAGES, paths):
        print(f"{name}: {path} ({DEV_IMAGES[name][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
