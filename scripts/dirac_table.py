"""DIRAC against its own base codecs, from a `fastdiffc eval` report folder (points.csv).

For every base codec X with a DIRAC curve `dirac[@MODEL]-X-s0` (0 decode steps, the same base
files as X's own points at each quality): PSNR BD-rate of DIRAC over X
- as .fdc files (the base bitstream plus the container header), and
- on X's plain files (DIRAC enhancing a file the user already has: the same pixels — seed 0 —
  and exactly X's bytes),
and the mean PSNR gain at equal base files. Writes a markdown table to stdout.

    python scripts/dirac_table.py docs/results/native
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path


def main() -> int:
    from fastdiffc.eval.bdrate import bd_rate
    from fastdiffc.eval.report import build_curves

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="report folder with points.csv")
    args = ap.parse_args()
    rows = list(csv.DictReader((Path(args.report) / "points.csv").open()))
    curves, used, _ = build_curves(rows)
    by_key = {(r["image"], r["codec"], r["setting"]): r for r in rows}
    print(f"{len(used)} photos\n")
    print("| base codec | BD-rate, .fdc | BD-rate, plain file | mean PSNR gain at equal base file | qualities |")
    print("|---|---|---|---|---|")
    for label in sorted(curves):
        m = re.fullmatch(r"dirac(?:@[^-]+)?-(\w+)-s0", label)
        if not m or m.group(1) not in curves:
            continue
        base = m.group(1)
        ours, theirs = curves[label], {p["setting"]: p for p in curves[base]}
        pairs = [(p, theirs[p["setting"]]) for p in ours if p["setting"] in theirs]
        if len(pairs) < 4:
            continue
        fdc = bd_rate([b["bpp"] for _, b in pairs], [b["psnr"] for _, b in pairs],
                      [o["bpp"] for o, _ in pairs], [o["psnr"] for o, _ in pairs])
        plain = bd_rate([b["bpp"] for _, b in pairs], [b["psnr"] for _, b in pairs],
                        [b["bpp"] for _, b in pairs], [o["psnr"] for o, _ in pairs])
        gains = defaultdict(list)
        for (image, codec, setting), r in by_key.items():
            if codec == label and (image, base, setting) in by_key and image in used:
                gains[setting].append(float(r["psnr"]) - float(by_key[image, base, setting]["psnr"]))
        mean_gain = sum(sum(v) for v in gains.values()) / max(1, sum(len(v) for v in gains.values()))
        print(f"| {base} | {fdc:+.1f}% | {plain:+.1f}% | {mean_gain:+.3f} dB | {len(pairs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
