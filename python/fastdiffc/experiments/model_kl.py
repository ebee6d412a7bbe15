"""Per-step DiffC rate of several models on real photos, and where a composite should switch.

DiffC codes step k (λ_{k-1} → λ_k) at the rate KL[q(z_k | z_{k-1}, x) ‖ p(z_k | z_{k-1})], which
depends only on the model's denoising error at the step's *starting* λ_{k-1}. This runs the
real DiffC sender (`pipelines.diffc.encode`, every step of the grid) on each image with each
model and reports the per-step Σ KL in bits per pixel, averaged over the images, with its
running total.

For two models (low-λ part first) the best 2-part composite (models/composite.py) switches at
the grid λ_s minimising Σ_{λ_k < λ_s} KL_low(k) + Σ_{λ_k >= λ_s} KL_high(k) over the steps'
starting λ_k (`choose_switch`). Caveat: each model's KL is measured along its own
communicated trajectory z_0..z_K, not along the composite's; both trajectories are samples of
the same q(z_λ | x), so the per-step means are estimates of the same expectations — good
enough to choose the switch (check the composite with `fastdiffc eval`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..pipelines import diffc

DEFAULT_MAX_SIZE = 256


@dataclass(frozen=True)
class SwitchChoice:
    """The best 2-part composite: steps starting at λ < `switch_logsnr` use the low model."""

    index: int  # first step (0-based) coded with the high model; 0 = all high, K = all low
    switch_logsnr: float  # grid λ_index (the starting λ of that step)
    total_bpp: float  # Σ KL of the composite (per-step means)
    low_only_bpp: float
    high_only_bpp: float


def choose_switch(lam_from: Sequence[float], kl_low: Sequence[float], kl_high: Sequence[float],
                  lam_end: float | None = None) -> SwitchChoice:
    """Switch index s minimising Σ_{k<s} kl_low[k] + Σ_{k>=s} kl_high[k] (ties: the lowest s).

    lam_from: each step's starting λ (increasing); kl_*: each model's per-step rate. The switch λ
    is lam_from[s], or `lam_end` (the grid's last λ; default lam_from[-1] + 1) when the low model
    is best for every step.
    """
    lam = np.asarray(lam_from, dtype=np.float64)
    lo = np.asarray(kl_low, dtype=np.float64)
    hi = np.asarray(kl_high, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or lo.shape != lam.shape or hi.shape != lam.shape:
        raise ValueError(f"need equal-length non-empty 1-D tables, got {lam.shape}, {lo.shape}, {hi.shape}")
    if not (np.isfinite(lam).all() and np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("per-step tables must be finite")
    if np.any(np.diff(lam) <= 0):
        raise ValueError("step log-SNRs must be strictly increasing")
    # total[s] = Σ_{k<s} lo + Σ_{k>=s} hi for s = 0..K
    low_prefix = np.concatenate([[0.0], np.cumsum(lo)])
    high_suffix = np.concatenate([np.cumsum(hi[::-1])[::-1], [0.0]])
    total = low_prefix + high_suffix
    s = int(np.argmin(total))  # argmin returns the first minimum
    end = float(lam[-1] + 1.0) if lam_end is None else float(lam_end)
    if s == lam.size and end <= lam[-1]:
        raise ValueError("lam_end must lie above the last step's starting λ")
    switch = float(lam[s]) if s < lam.size else end
    return SwitchChoice(s, switch, float(total[s]), float(total[-1]), float(total[0]))


def load_images(paths: Sequence[Path], max_size: int | None) -> list[tuple[str, torch.Tensor]]:
    """(name, NCHW tensor in [-1, 1]) of each image, downscaled to `max_size` (longer side)."""
    from ..eval.images import load_image
    from ..image_io import prepare_image

    out = []
    for p in paths:
        prep = prepare_image(load_image(p, max_size=max_size))
        out.append((Path(p).stem, prep.tensor))
    return out


def measure(models: dict, images: Sequence[tuple[str, torch.Tensor]], settings: diffc.DiffCSettings, *,
            backend: str = "auto", progress: bool = False) -> dict:
    """Per-step Σ KL in bits per pixel of each model on each image (DiffC sender, all grid steps).

    Returns {"logsnr": grid λ_0..λ_K, "per_image": {model: {image: [K]}}, "mean": {model: [K]}}.
    """
    if not models or not images:
        raise ValueError("need at least one model and one image")
    grid = settings.grid()
    per_image: dict = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(models) * len(images), desc="model-kl", unit="encode", leave=False)
    for name, model in models.items():
        per_image[name] = {}
        for img_name, x in images:
            enc = diffc.encode(model, x, settings, backend=backend)
            pixels = x.shape[-2] * x.shape[-1]
            per_image[name][img_name] = [b / pixels for b in enc.kl_bits]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(model=name, image=img_name)
    if bar is not None:
        bar.close()
    mean = {name: np.mean(np.array(list(rows.values())), axis=0).tolist() for name, rows in per_image.items()}
    return {"logsnr": grid, "per_image": per_image, "mean": mean}


def run(models: Sequence[str], image_paths: Sequence[Path], *, max_size: int | None = DEFAULT_MAX_SIZE,
        settings: diffc.DiffCSettings | None = None, backend: str = "auto", progress: bool = False,
        weights_dir: Path | None = None) -> dict:
    """Load the models (from `weights_dir`, default the shipped ones) and images, measure, and
    (for two models) choose the switch."""
    from ..models.registry import load_model
    from ..pipelines.base import model_identity

    settings = settings or diffc.DiffCSettings()
    if len(set(models)) != len(models):
        raise ValueError(f"model names repeat: {list(models)}")
    loaded = {name: load_model(name, weights_dir) for name in models}
    images = load_images(image_paths, max_size)
    result = measure(loaded, images, settings, backend=backend, progress=progress)
    result.update(models=list(models), model_hashes={n: f"{model_identity(m)[1]:016x}" for n, m in loaded.items()},
                  images=[str(p) for p in image_paths], max_size=max_size,
                  image_sizes={n: list(x.shape[-2:]) for n, x in images},
                  settings={"schedule": settings.schedule, "logsnr_min": settings.logsnr_min,
                            "logsnr_max": settings.logsnr_max, "grid_steps": settings.grid_steps,
                            "bits_per_chunk": settings.bits_per_chunk, "margin": settings.margin,
                            "seed": settings.seed, "dtype": settings.dtype})
    result["total_bpp"] = {n: float(sum(v)) for n, v in result["mean"].items()}
    if len(models) == 2:
        lam = result["logsnr"]
        c = choose_switch(lam[:-1], result["mean"][models[0]], result["mean"][models[1]], lam_end=lam[-1])
        result["switch"] = {"low": models[0], "high": models[1], "index": c.index, "switch_logsnr": c.switch_logsnr,
                            "composite_bpp": c.total_bpp, "low_only_bpp": c.low_only_bpp,
                            "high_only_bpp": c.high_only_bpp}
    return result


def format_table(result: dict) -> str:
    names = result["models"]
    lam = result["logsnr"]
    sw = result.get("switch")
    w = max(10, *(len(n) + 1 for n in names))
    head = f"{'step':>4} {'λ_from':>7} | " + " ".join(f"{n:>{w}}" for n in names) + " | " + " ".join(
        f"{'cum ' + n:>{w + 4}}" for n in names)
    if sw is not None:
        head += f" | {'composite':>10} {'cum':>8} {'saving':>7}"
    lines = [f"DiffC per-step Σ KL in bits per pixel, mean over {len(result['per_image'][names[0]])} images "
             f"(max side {result['max_size']}), grid {result['settings']['schedule']} "
             f"λ {result['settings']['logsnr_min']:g}..{result['settings']['logsnr_max']:g} in "
             f"{result['settings']['grid_steps']} steps; a step's rate depends on the model at its λ_from"
             + ("; saving: cum composite vs the better single model's cum" if sw is not None else ""),
             head, "-" * len(head)]
    cum = dict.fromkeys(names, 0.0)
    cum_c = 0.0
    for k in range(len(lam) - 1):
        row = f"{k + 1:>4} {lam[k]:>7.2f} | " + " ".join(f"{result['mean'][n][k]:>{w}.5f}" for n in names)
        for n in names:
            cum[n] += result["mean"][n][k]
        row += " | " + " ".join(f"{cum[n]:>{w + 4}.4f}" for n in names)
        if sw is not None:
            part = sw["low"] if k < sw["index"] else sw["high"]
            cum_c += result["mean"][part][k]
            best = min(cum.values())  # the composite's rate vs the better single model over the same steps
            row += f" | {part:>10} {cum_c:>8.4f} {100.0 * (1.0 - cum_c / best) if best > 0 else 0.0:>6.1f}%"
        lines.append(row)
    lines.append("total bpp: " + ", ".join(f"{n} {result['total_bpp'][n]:.4f}" for n in names))
    if sw is not None:
        best = min(sw["low_only_bpp"], sw["high_only_bpp"])
        gain = 100.0 * (1.0 - sw["composite_bpp"] / best) if best > 0 else 0.0
        lines.append(f"recommended switch: {sw['low']} for λ < {sw['switch_logsnr']:g}, {sw['high']} for "
                     f"λ >= {sw['switch_logsnr']:g} (from step {sw['index'] + 1}): {sw['composite_bpp']:.4f} bpp "
                     f"({gain:.1f}% below the better single model)")
    return "\n".join(lines)
