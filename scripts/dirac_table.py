"""DIRAC against its own base codecs, from a `fastdiffc eval` report folder (points.csv).

For every base codec X with a DIRAC curve `dirac[@MODEL]-X-s0` (0 decode steps, the same base
files as X's own points at each quality): PSNR BD-rate of DIRAC over X
- as .fdc files (the base bitstream, the container header and the signalled gain), and
- on X's plain files (DIRAC enhancing a file the user already has, with the model's gain
  table): from the curve `dirac[@MODEL]-X-gaintable-s0` — the same pixels as the plain file
  through DIRAC (seed 0) — at exactly X's bytes; "—" when the report has no such curve,
and the mean PSNR gain of the .fdc at equal base files. Writes a markdown table to stdout.

The learned base `cdc` is compared with a CDC curve `cdc[@MODEL]-s0` in the same report (the
CDC model the DIRAC model's cdc label was trained on; its `level=N` settings are DIRAC's `q=N`).

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
    cdc_curves = [c for c in sorted(curves) if re.fullmatch(r"cdc(?:@.+)?-s0", c)]
    for label in sorted(curves):
        m = re.fullmatch(r"dirac(?:@[^-]+)?-(\w+)-s0", label)
        if not m:
            continue
        base = m.group(1)
        if base == "cdc" and cdc_curves:
            base = cdc_curves[0]
        if base not in curves:
            continue
        theirs = {_as_quality(p["setting"]): p for p in curves[base]}
        ours = curves[label]
        pairs = [(p, theirs[p["setting"]]) for p in ours if p["setting"] in theirs]
        if len(pairs) < 4:
            continue
        fdc = bd_rate([b["bpp"] for _, b in pairs], [b["psnr"] for _, b in pairs],
                      [o["bpp"] for o, _ in pairs], [o["psnr"] for o, _ in pairs])
        plain = "—"
        table = {p["setting"]: p for p in curves.get(label[:-len("-s0")] + "-gaintable-s0", [])}
        plain_pairs = [(table[o["setting"]], b) for o, b in pairs if o["setting"] in table]
        if len(plain_pairs) >= 4:
            plain = "{:+.1f}%".format(bd_rate([b["bpp"] for _, b in plain_pairs], [b["psnr"] for _, b in plain_pairs],
                                              [b["bpp"] for _, b in plain_pairs], [t["psnr"] for t, _ in plain_pairs]))
        gains = defaultdict(list)
        for (image, codec, setting), r in by_key.items():
            their_setting = setting.replace("q=", "level=") if base in cdc_curves else setting
            if codec == label and (image, base, their_setting) in by_key and image in used:
                gains[setting].append(float(r["psnr"]) - float(by_key[image, base, their_setting]["psnr"]))
        mean_gain = sum(sum(v) for v in gains.values()) / max(1, sum(len(v) for v in gains.values()))
        print(f"| {base} | {fdc:+.1f}% | {plain} | {mean_gain:+.3f} dB | {len(pairs)} |")
    return 0


def _as_quality(setting: str) -> str:
    """A CDC curve's "level=N" as the DIRAC cdc curve's "q=N"; other settings unchanged."""
    return "q=" + setting[len("level="):] if setting.startswith("level=") else setting


if __name__ == "__main__":
    raise SystemExit(main())
