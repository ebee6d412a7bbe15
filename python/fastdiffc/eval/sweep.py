"""Resumable rate–distortion sweep over an image folder, written to points.csv.

Each finished point is appended (and flushed) as soon as it is measured, keyed by
(image, codec, setting) — `codec` is the curve's label; a contender may draw several
curves (`contender.names`, e.g. one per DIRAC decode_steps value). A later run over the
same report folder skips every key already in points.csv, so an interrupted sweep continues where it stopped and a
finished one computes nothing. `sweep.json` records the settings that change the
meaning of a point (the image size limit); resuming with different ones is refused.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .images import load_image
from .metrics import METRICS, RealismReference, as_rgb_array, compute_metrics

POINTS_FILE = "points.csv"
CONFIG_FILE = "sweep.json"
STREAMS_DIR = "streams"
COLUMNS = ("image", "codec", "setting", "bytes", "bpp", "psnr", "msssim", "ssimulacra2", "realism",
           "width", "height", "encode_s", "decode_s")


@dataclass
class SweepResult:
    computed: int = 0
    skipped_tasks: int = 0
    failures: list[str] = field(default_factory=list)
    points_path: Path | None = None


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, ".7g")


def read_points(path: str | Path) -> list[dict[str, str]]:
    """Rows of a points.csv as dicts of strings ([] if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("image", "codec", "setting", "bytes", "bpp") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a fastdiffc points file (missing columns {', '.join(missing)})")
        return list(reader)


def _check_config(out_dir: Path, config: dict, contenders: Sequence) -> None:
    """Check a resumed sweep against sweep.json, then record it there.

    `config`: the settings that change what a point means; resuming with another value is refused.
    Models: each pipeline curve's model content hash is recorded under `models`, and a curve
    whose contender now encodes with another model (a retrained default under the same name) is
    refused, since its finished points would be skipped and the old model's numbers reported
    under today's label. Classical codecs have no model and are not recorded."""
    from .contenders import encoding_model_hash

    path = out_dir / CONFIG_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    for key, value in config.items():
        if key in old and old[key] != value:
            raise ValueError(f"{out_dir} holds a sweep made with {key}={old[key]}, not {value}: "
                             "use the same setting or another report folder")
    models = dict(old.get("models", {}))
    for contender in contenders:
        codec = getattr(contender, "codec", None)
        h = encoding_model_hash(codec) if codec is not None else None
        if h is None:
            continue
        want = f"{h:016x}"
        for label in getattr(contender, "names", (contender.name,)):
            if models.get(label, want) != want:
                raise ValueError(f"{out_dir}: curve {label!r} was measured with model {models[label]}, but "
                                 f"{contender.name!r} now encodes with {want}: use another report folder, or "
                                 f"delete that curve's rows from {POINTS_FILE} and its entry under 'models' in "
                                 f"{CONFIG_FILE}")
            models[label] = want
    record = {**old, **config}
    if models:
        record["models"] = models
    path.write_text(json.dumps(record, indent=2) + "\n")


def run_sweep(image_paths: Sequence[str | Path], contenders: Sequence, out_dir: str | Path, *,
              metrics: Sequence[str] = METRICS, max_size: int | None = None, progress: bool = True,
              warn: Callable[[str], None] | None = None, config: Mapping | None = None) -> SweepResult:
    """Measure every (image, contender, setting) not already in out_dir/points.csv.

    `config`: further settings that change what a point means (e.g. pipeline options);
    stored with max_size in sweep.json and checked when resuming.
    """
    for name in metrics:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if max_size is not None and max_size < 8:
        raise ValueError(f"max_size must be at least 8 pixels, got {max_size}")
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_config(out_dir, {"max_size": max_size, **dict(config or {})}, contenders)
    points_path = out_dir / POINTS_FILE
    done: dict[tuple[str, str], set[str]] = {}
    for row in read_points(points_path):
        done.setdefault((row["image"], row["codec"]), set()).add(row["setting"])
    cache_dir = out_dir / STREAMS_DIR
    result = SweepResult(points_path=points_path)

    from tqdm import tqdm

    new_file = not points_path.exists() or points_path.stat().st_size == 0
    if not new_file:
        with points_path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != COLUMNS:
            raise ValueError(f"{points_path} has columns {header}, expected {list(COLUMNS)}: "
                             "use another report folder")
    with points_path.open("a", newline="") as f, tqdm(total=len(image_paths) * len(contenders), unit="task",
                                                      disable=not progress, desc="eval") as bar:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(COLUMNS)
            f.flush()
        for path in image_paths:
            key = Path(path).name
            image = None
            reference = None
            for contender in contenders:
                bar.set_postfix_str(f"{key} {contender.name}", refresh=False)
                # The finished settings of each curve the contender draws (label -> set).
                names = getattr(contender, "names", (contender.name,))
                finished = {label: done.setdefault((key, label), set()) for label in names}
                try:
                    if not contender.pending(key, finished, cache_dir):
                        result.skipped_tasks += 1
                        bar.update(1)
                        continue
                    if image is None:
                        image = load_image(path, max_size=max_size)
                        original = as_rgb_array(image)
                        if "realism" in metrics:
                            reference = RealismReference(original)
                    for trial in contender.run(image, key, finished, cache_dir):
                        label = trial.codec or contender.name
                        bar.set_postfix_str(f"{key} {label} {trial.setting}", refresh=False)
                        recon = as_rgb_array(trial.reconstruction)
                        values = compute_metrics(original, recon, metrics, realism_reference=reference)
                        h, w = original.shape[:2]
                        row = {"image": key, "codec": label, "setting": trial.setting,
                               "bytes": trial.nbytes, "bpp": _fmt(trial.nbytes * 8 / (w * h)),
                               "width": w, "height": h, "encode_s": _fmt(trial.encode_s),
                               "decode_s": _fmt(trial.decode_s)}
                        row.update({k: _fmt(v) for k, v in values.items()})
                        writer.writerow([row.get(c, "") for c in COLUMNS])
                        f.flush()
                        finished.setdefault(label, done.setdefault((key, label), set())).add(trial.setting)
                        result.computed += 1
                except Exception as e:  # noqa: BLE001 — one failing codec/image must not end the sweep
                    message = f"{contender.name} on {key}: {type(e).__name__}: {e}"
                    result.failures.append(message)
                    warn(message)
                bar.update(1)
    return result
