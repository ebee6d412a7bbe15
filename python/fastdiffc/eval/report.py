"""summary.md and RD plots from a points.csv.

Curves: for each codec and setting, the mean over images of bpp and of each metric
(the usual way to average RD curves, e.g. in CompressAI). Every curve uses the same
images — those for which every codec has points — so averages are comparable. A
(codec, setting) missing on one of those images is left out of the curve.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .bdrate import bd_rate, msssim_db, quality_at_rate
from .sweep import CONFIG_FILE, POINTS_FILE, read_points

REPORT_RATES = (0.1, 0.25, 0.5, 1.0)
BD_ANCHORS = ("jpeg", "heic")
CLASSICAL = ("jpeg", "webp", "avif", "heic", "jxl", "jp2")
METRIC_INFO = {  # name: (axis label, higher is better, decimals)
    "psnr": ("PSNR (dB, RGB)", True, 2),
    "msssim": ("MS-SSIM", True, 4),
    "ssimulacra2": ("SSIMULACRA2", True, 2),
    "realism": ("realism: Laplacian-patch SWD (lower is better)", False, 4),
}
SUMMARY_FILE = "summary.md"
# Rates of the distortion ↔ realism figure: the base settings whose mean bpp is nearest these.
REALISM_RATES = (0.1, 0.25, 0.5)
_STEPS_PART = re.compile(r"s(\d+)")


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _setting_order(setting: str) -> tuple:
    name, _, value = setting.partition("=")
    return (name, _float(value))


def build_curves(rows: Sequence[Mapping[str, str]]) -> tuple[dict[str, list[dict]], list[str], list[str]]:
    """(curves by codec, images used, images left out); a curve is a list of mean points by rate."""
    images_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        images_of[row["codec"]].add(row["image"])
    all_images = sorted({row["image"] for row in rows})
    common = set(all_images)
    for images in images_of.values():
        common &= images
    used = sorted(common)
    groups: dict[tuple[str, str], list[Mapping[str, str]]] = defaultdict(list)
    for row in rows:
        if row["image"] in common:
            groups[(row["codec"], row["setting"])].append(row)
    curves: dict[str, list[dict]] = {}
    for codec in sorted(images_of):
        points = []
        settings = sorted({s for (c, s) in groups if c == codec}, key=_setting_order)
        for setting in settings:
            members = groups[(codec, setting)]
            if {r["image"] for r in members} != common:
                continue
            point = {"setting": setting, "images": len(members)}
            for column in ("bpp", *METRIC_INFO, "encode_s", "decode_s"):
                values = np.array([_float(r.get(column, "")) for r in members])
                point[column] = float(values.mean()) if len(values) and not np.isnan(values).any() else math.nan
            points.append(point)
        points.sort(key=lambda p: p["bpp"])
        curves[codec] = points
    return curves, used, sorted(set(all_images) - common)


def _column(points: Sequence[Mapping], key: str) -> np.ndarray:
    return np.array([p[key] for p in points], dtype=np.float64)


def _bd_quality(points: Sequence[Mapping], metric: str) -> np.ndarray:
    values = _column(points, metric)
    if metric == "msssim":
        values = np.array([msssim_db(v) if not math.isnan(v) else math.nan for v in values])
    return values


def bd_table(curves: Mapping[str, Sequence[Mapping]], metric: str, anchors=BD_ANCHORS) -> dict[str, dict[str, float]]:
    """BD-rate (%) of every codec against each anchor on `metric` (NaN where undefined)."""
    table: dict[str, dict[str, float]] = {}
    for codec, points in curves.items():
        table[codec] = {}
        for anchor in anchors:
            ref = curves.get(anchor)
            value = math.nan
            if ref:
                try:
                    value = bd_rate(_column(ref, "bpp"), _bd_quality(ref, metric),
                                    _column(points, "bpp"), _bd_quality(points, metric))
                except ValueError:
                    pass
            table[codec][anchor] = value
    return table


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN marks a time not measured, e.g. a cached encode); NaN if none."""
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _cell(value: float, decimals: int, suffix: str = "") -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{decimals}f}{suffix}"


def _has(curves, metric) -> bool:
    return any(not math.isnan(p[metric]) for points in curves.values() for p in points)


def plot_rd(curves: Mapping[str, Sequence[Mapping]], metric: str, path: Path, *, max_bpp: float = 2.0) -> Path:
    """One RD plot (bpp on x) of `metric` for every codec, as a PNG (Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    label, _, _ = METRIC_INFO[metric]
    fig = Figure(figsize=(7, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    visible = []
    for codec, points in curves.items():
        pts = [p for p in points if math.isfinite(p["bpp"]) and math.isfinite(p[metric])]
        if not pts:
            continue
        visible += [p[metric] for p in pts if p["bpp"] <= max_bpp]
        ours = codec not in CLASSICAL
        ax.plot(_column(pts, "bpp"), _column(pts, metric), marker="o", markersize=3,
                linewidth=2.2 if ours else 1.2, linestyle="-" if ours else "--", label=codec)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(label)
    ax.set_xlim(0, max_bpp)
    if visible:  # scale y to the points inside the x range, not to a codec's far-off top setting
        lo, hi = min(visible), max(visible)
        pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
        ax.set_ylim(lo - pad, hi + pad)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(out_dir: str | Path, *, descriptions: Mapping[str, str] | None = None,
                 failures: Sequence[str] = (), rates: Sequence[float] = REPORT_RATES) -> Path:
    """Write summary.md and rd_<metric>.png into out_dir from its points.csv; returns summary.md's path."""
    out_dir = Path(out_dir)
    rows = read_points(out_dir / POINTS_FILE)
    if not rows:
        raise ValueError(f"no RD points in {out_dir / POINTS_FILE}: nothing to report")
    descriptions = descriptions or {}
    curves, used, left_out = build_curves(rows)
    metrics = [m for m in METRIC_INFO if _has(curves, m)]
    codecs = list(curves)

    lines = ["# fastdiffc evaluation", ""]
    lines.append(f"{len(used)} images: {', '.join(used)}.")
    if left_out:
        lines.append(f"Left out (not measured for every codec): {', '.join(left_out)}.")
    config_path = out_dir / CONFIG_FILE
    if config_path.exists():
        config = json.loads(config_path.read_text())
        size = config.get("max_size")
        lines.append(f"Image size: {'as stored' if size is None else f'longer side at most {size} px'}"
                     + (f"; pipeline options {config['pipeline_options']}" if config.get("pipeline_options") else "")
                     + ".")
    lines.append("Curves average bpp and each metric over the images at every setting; "
                 "bpp counts every byte of the stored file.")
    lines += ["", "## Codecs", "", "| codec | configuration | points | bpp range | encode s | decode s |",
              "|---|---|---|---|---|---|"]
    for codec in codecs:
        pts = curves[codec]
        bpps = [p["bpp"] for p in pts]
        rng = f"{min(bpps):.3f}–{max(bpps):.3f}" if bpps else "—"
        enc, dec = (_nanmean(_column(pts, c)) if pts else math.nan for c in ("encode_s", "decode_s"))
        lines.append(f"| {codec} | {descriptions.get(codec, '')} | {len(pts)} | {rng} | "
                     f"{_cell(enc, 3)} | {_cell(dec, 3)} |")

    bd_metrics = [m for m in ("psnr", "msssim", "ssimulacra2") if m in metrics]
    if bd_metrics:
        lines += ["", "## BD-rate", "",
                  "Bjøntegaard delta rate (%, piecewise cubic in log-rate) against JPEG and HEIC: negative = "
                  "fewer bits for the same quality. MS-SSIM is taken in dB. — = anchor missing or no overlap.", ""]
        header = ["codec"] + [f"{METRIC_INFO[m][0].split(' ')[0]} vs {a.upper()}" for m in bd_metrics
                              for a in BD_ANCHORS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        tables = {m: bd_table(curves, m) for m in bd_metrics}
        for codec in codecs:
            cells = [_cell(tables[m][codec][a], 1, "%") for m in bd_metrics for a in BD_ANCHORS]
            lines.append(f"| {codec} | " + " | ".join(cells) + " |")

    ours = [c for c in codecs if c not in CLASSICAL]
    anchors = [c for c in CLASSICAL if c in curves]
    if "psnr" in metrics and ours and anchors:
        lines += ["", "## BD-rate (PSNR) of the pipelines against every classical codec", "",
                  "| pipeline | " + " | ".join(f"vs {a.upper()}" for a in anchors) + " |",
                  "|---|" + "---|" * len(anchors)]
        table = bd_table({c: curves[c] for c in ours + anchors}, "psnr", anchors=anchors)
        for codec in ours:
            lines.append(f"| {codec} | " + " | ".join(_cell(table[codec][a], 1, "%") for a in anchors) + " |")

    for metric in metrics:
        label, _, decimals = METRIC_INFO[metric]
        lines += ["", f"## {label} at fixed rates", "",
                  "Interpolated (piecewise cubic in log-rate); — = outside the measured rates.", "",
                  "| codec | " + " | ".join(f"{r:g} bpp" for r in rates) + " |",
                  "|---|" + "---|" * len(rates)]
        for codec in codecs:
            pts = curves[codec]
            cells = [_cell(quality_at_rate(_column(pts, "bpp"), _column(pts, metric), r), decimals)
                     for r in rates]
            lines.append(f"| {codec} | " + " | ".join(cells) + " |")

    lines += ["", "## RD plots", ""]
    for metric in metrics:
        name = f"rd_{metric}.png"
        plot_rd(curves, metric, out_dir / name)
        lines.append(f"![{METRIC_INFO[metric][0]}]({name})")
    if "psnr" in metrics and "realism" in metrics:
        for family, by_steps in realism_families(curves).items():
            lines += realism_section(family, by_steps, curves, out_dir, len(used))
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    path = out_dir / SUMMARY_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- distortion ↔ realism


def split_decode_steps(label: str) -> tuple[str, int] | None:
    """("dirac-avif", 8) for the curve label "dirac-avif-s8" (the last `-sN` part, see
    eval.contenders), None for a label without decode steps."""
    parts = label.split("-")
    for i in range(len(parts) - 1, 0, -1):
        m = _STEPS_PART.fullmatch(parts[i])
        if m:
            return "-".join(parts[:i] + parts[i + 1:]), int(m.group(1))
    return None


def realism_families(curves: Mapping[str, Sequence[Mapping]]) -> dict[str, dict[int, list[dict]]]:
    """{family: {decode_steps: curve}} for the families (DIRAC, CDC curves that differ only in
    decode_steps) measured at two or more step counts."""
    families: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for label, points in curves.items():
        split = split_decode_steps(label)
        if split is not None and points:
            families[split[0]][split[1]] = list(points)
    return {f: dict(sorted(by.items())) for f, by in sorted(families.items()) if len(by) >= 2}


def realism_settings(by_steps: Mapping[int, Sequence[Mapping]], targets: Sequence[float] = REALISM_RATES) -> list[dict]:
    """Up to len(targets) settings measured at every step count, the ones whose mean bpp is
    nearest each target (in log-rate); as {setting, bpp}, by rate."""
    common = None
    for points in by_steps.values():
        settings = {p["setting"] for p in points}
        common = settings if common is None else common & settings
    first = next(iter(by_steps.values()))
    candidates = [{"setting": p["setting"], "bpp": p["bpp"]} for p in first
                  if p["setting"] in (common or set()) and math.isfinite(p["bpp"]) and p["bpp"] > 0]
    chosen: list[dict] = []
    for target in targets:
        left = [c for c in candidates if c not in chosen]
        if left:
            chosen.append(min(left, key=lambda c: abs(math.log(c["bpp"] / target))))
    return sorted(chosen, key=lambda c: c["bpp"])


def _point(points: Sequence[Mapping], setting: str) -> Mapping | None:
    return next((p for p in points if p["setting"] == setting), None)


def _base_codec(family: str, curves: Mapping[str, Sequence[Mapping]]) -> str | None:
    """The classical codec a family is built on ("dirac-avif" → "avif"), if its curve was measured."""
    last = family.rsplit("-", 1)[-1]
    return last if last in CLASSICAL and last in curves else None


def plot_realism(family: str, by_steps: Mapping[int, Sequence[Mapping]], settings: Sequence[Mapping],
                 curves: Mapping[str, Sequence[Mapping]], path: Path) -> Path:
    """PSNR and realism against decode_steps, one line per rate (the base codec dashed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = _base_codec(family, curves)
    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    steps = list(by_steps)
    for i, metric in enumerate(("psnr", "realism")):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, s in enumerate(settings):
            colour = f"C{j}"
            values = [(_point(by_steps[k], s["setting"]) or {}).get(metric, math.nan) for k in steps]
            ax.plot(steps, values, marker="o", markersize=3, color=colour,
                    label=f"{s['setting']} ({s['bpp']:.3f} bpp)")
            ref = _point(curves[base], s["setting"]) if base else None
            if ref is not None and math.isfinite(ref[metric]):
                ax.axhline(ref[metric], color=colour, linestyle="--", linewidth=1,
                           label=f"{base} alone (dashed)" if j == 0 else None)
        ax.set_xlabel("decode steps")
        ax.set_ylabel(METRIC_INFO[metric][0])
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle(f"{family}: distortion ↔ realism (dashed: {base or 'no base codec'} alone, same bitstream)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def realism_section(family: str, by_steps: Mapping[int, Sequence[Mapping]], curves: Mapping[str, Sequence[Mapping]],
                    out_dir: Path, images: int) -> list[str]:
    """summary.md lines of one family's distortion ↔ realism table, and its figure
    (realism_<family>.png) written to out_dir."""
    settings = realism_settings(by_steps)
    if not settings:
        return []
    name = "realism_" + re.sub(r"[^A-Za-z0-9._-]+", "_", family) + ".png"
    plot_realism(family, by_steps, settings, curves, out_dir / name)
    base = _base_codec(family, curves)
    lines = ["", f"## Distortion ↔ realism: {family}", "",
             f"Mean over the {images} images of PSNR (dB) / realism (Laplacian-patch SWD, lower = more realistic) "
             f"against decode_steps, at {len(settings)} rates; every step count decodes the same files."
             + (f" The {base} row is the base codec's own decode of the same bitstream." if base else ""), "",
             "| decode steps | " + " | ".join(f"{s['setting']} ({s['bpp']:.3f} bpp)" for s in settings) + " |",
             "|---|" + "---|" * len(settings)]

    def cells(points):
        out = []
        for s in settings:
            p = _point(points, s["setting"]) if points else None
            out.append("—" if p is None else f"{_cell(p['psnr'], 2)} / {_cell(p['realism'], 4)}")
        return " | ".join(out)

    if base:
        lines.append(f"| {base} | {cells(curves[base])} |")
    for k, points in by_steps.items():
        lines.append(f"| {k} | {cells(points)} |")
    lines += ["", f"![{family}: PSNR and realism against decode steps]({name})"]
    return lines
