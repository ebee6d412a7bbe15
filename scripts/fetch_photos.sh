#!/usr/bin/env bash
# Fetch the training photographs of docs/design.md §8 from Debian packages and write
#   data/photos/train/*.png, data/photos/heldout/*.png, data/photos/manifest.tsv
# (file, sha256 of the written PNG, split, source path inside the package, size).
#
# Only photographs are kept: the packages also ship paintings, renders, logos and
# abstract gradients, which would teach the model a distribution we never compress.
# The selection below is an explicit allow-list, made by looking at every image.
# Images are downscaled >= 2x with Lanczos to wash out their JPEG artefacts.
#
# Usage: scripts/fetch_photos.sh [OUT_DIR]   (default: data/photos; needs apt-get, dpkg-deb, python+Pillow)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/data/photos}"
WORK="$ROOT/data/debs"
mkdir -p "$WORK/extract" "$OUT"

cd "$WORK"
if ! ls mate-backgrounds_*.deb plasma-workspace-wallpapers_*.deb opencv-doc_*.deb >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download mate-backgrounds plasma-workspace-wallpapers opencv-doc
fi
for deb in mate-backgrounds_*.deb plasma-workspace-wallpapers_*.deb opencv-doc_*.deb; do
    dpkg-deb -x "$deb" extract
done

PY="${PYTHON:-python3}"
[ -x /work/venv/bin/python ] && PY="${PYTHON:-/work/venv/bin/python}"

"$PY" - "$WORK/extract" "$OUT" <<'EOF'
import hashlib
import math
import sys
from pathlib import Path

from PIL import Image

src, out = Path(sys.argv[1]), Path(sys.argv[2])
OCV = "usr/share/doc/opencv-doc/examples/"
MATE = "usr/share/backgrounds/mate/nature/"

# Plasma wallpapers that are photographs (the others are vector art / renders).
PLASMA_PHOTOS = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                 "Grey", "Kite", "MilkyWay", "OneStandsOut", "Path", "summer_1am"]
# mate-backgrounds: the nature/ folder is all photographs; abstract/ and desktop/ are not.
MATE_PHOTOS = ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
               "Storm", "TwoWings", "Wood", "YellowFlower"]
# opencv-doc sample data: colour photographs only (no grey-scale, calibration boards,
# drawings, synthetic scenes, renders, maps, paintings such as starry_night).
OPENCV_PHOTOS = [
    "data/fruits.jpg", "data/baboon.jpg", "data/leuvenA.jpg", "data/leuvenB.jpg", "data/squirrel_cls.jpg",
    "data/home.jpg", "data/messi5.jpg", "data/aloeL.jpg", "data/board.jpg", "data/orange.jpg",
    "data/stuff.jpg", "data/apple.jpg", "data/butterfly.jpg", "data/building.jpg", "data/aero1.jpg",
    "data/aero3.jpg", "data/graf1.png", "data/graf3.png", "data/ela_original.jpg",
    "data/licenseplate_motion.jpg", "data/chicky_512.png", "data/rubberwhale1.png", "data/right.jpg",
    "hfs/data/000.jpg", "hfs/data/001.jpg", "hfs/data/002.jpg", "dnn_superres/butterfly.png",
    "alphamat/input_images/plant.jpg", "text/scenetext01.jpg", "text/scenetext02.jpg",
    "text/scenetext03.jpg", "text/scenetext04.jpg", "text/scenetext05.jpg", "text/scenetext06.jpg",
    "reg/home.png",
]
# Held out for bits/dim evaluation: different scenes from every source (no near-duplicates in train).
HELDOUT = {"plasma_Path", "mate_Garden", "mate_Storm", "opencv_squirrel_cls", "opencv_scenetext02",
           "opencv_hfs_001", "opencv_aero3"}
MAX_SIDE = 1280  # after downscaling; the factor is never below 2


def largest(folder: Path) -> Path:
    return max(folder.iterdir(), key=lambda p: Image.open(p).size[0] * Image.open(p).size[1])


items = []
for name in PLASMA_PHOTOS:
    items.append((f"plasma_{name}", largest(src / "usr/share/wallpapers" / name / "contents/images")))
for name in MATE_PHOTOS:
    items.append((f"mate_{name}", src / MATE / f"{name}.jpg"))
for rel in OPENCV_PHOTOS:
    stem = Path(rel).stem if rel.startswith("data/") or rel.startswith("text/") else rel.split("/")[0] + "_" + Path(rel).stem
    items.append((f"opencv_{stem}", src / OCV / rel))

for split in ("train", "heldout"):
    (out / split).mkdir(parents=True, exist_ok=True)
rows = []
for name, path in items:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    factor = max(2.0, max(w, h) / MAX_SIDE)
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = im.resize(size, Image.Resampling.LANCZOS)
    split = "heldout" if name in HELDOUT else "train"
    dest = out / split / f"{name}.png"
    small.save(dest, optimize=False)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    rows.append(f"{split}/{name}.png\t{digest}\t{split}\t{path.relative_to(src)}\t{size[0]}x{size[1]}\t{math.prod(size)}")
    print(f"{split:8s} {name:32s} {w}x{h} -> {size[0]}x{size[1]}")

header = "file\tsha256\tsplit\tsource\tsize\tpixels"
(out / "manifest.tsv").write_text(header + "\n" + "\n".join(rows) + "\n")
ntrain = sum(r.split("\t")[2] == "train" for r in rows)
print(f"wrote {len(rows)} photos ({ntrain} train, {len(rows) - ntrain} heldout) to {out}")
EOF
