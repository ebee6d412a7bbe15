"""Image quality metrics for rate–distortion evaluation (DESIGN §9).

All metrics take two RGB 8-bit images of the same size (PIL images or HxWx3 uint8
arrays): the original first, the reconstruction second.

- `psnr`: over all pixels and the three channels, peak 255.
- `ms_ssim`: pytorch-msssim (data range 255, the standard 5 scales and weights); small
  images, where five dyadic scales with an 11-tap window do not fit, use as many scales
  as fit with the standard weights renormalised.
- `ssimulacra2`: the pip `ssimulacra2` implementation (100 = identical, higher is better).
- `realism_swd`: weight-free distribution distance (lower is more realistic): the sliced
  Wasserstein distance between the sets of 7×7 patches of the Laplacian pyramid bands of
  the original and of the reconstruction (the measure of Karras et al. 2018, per image).
  Patches are compared as *sets* — their positions play no role — so a reconstruction
  with different but equally sharp texture scores well, while blur does not.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

METRICS: tuple[str, ...] = ("psnr", "msssim", "ssimulacra2", "realism")

# Standard MS-SSIM scale weights (Wang et al. 2003), finest scale first.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_WINDOW = 11


def as_rgb_array(image) -> np.ndarray:
    """An HxWx3 uint8 array from a PIL image or an HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def _pair(original, reconstruction) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_rgb_array(original), as_rgb_array(reconstruction)
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: original {a.shape[1]}x{a.shape[0]}, "
                         f"reconstruction {b.shape[1]}x{b.shape[0]}")
    return a, b


def psnr(original, reconstruction) -> float:
    """PSNR in dB over RGB 8-bit values; inf for identical images."""
    a, b = _pair(original, reconstruction)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)[None]


def ms_ssim(original, reconstruction) -> float:
    """MS-SSIM on RGB 8-bit values (1 = identical)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = _pair(original, reconstruction)
    x, y = _to_tensor(a).float(), _to_tensor(b).float()
    side = min(a.shape[:2])
    # pytorch-msssim requires the smaller side to exceed (win-1)·2^4 for its 4 downsamplings.
    if side > (_MS_SSIM_WINDOW - 1) * 16:
        return float(_ms_ssim(x, y, data_range=255, win_size=_MS_SSIM_WINDOW))
    return _ms_ssim_few_scales(x, y, side)


def _ms_ssim_few_scales(x: torch.Tensor, y: torch.Tensor, side: int) -> float:
    """MS-SSIM with as many scales as fit an 11-tap window (fewer taps below 11 pixels)."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    levels = 1
    while levels < len(_MS_SSIM_WEIGHTS) and side // 2**levels >= _MS_SSIM_WINDOW:
        levels += 1
    win_size = min(_MS_SSIM_WINDOW, side if side % 2 else side - 1)
    if win_size < 1:
        raise ValueError("image too small for MS-SSIM")
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:levels], dtype=x.dtype)
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(win_size, 1.5).to(x.dtype).repeat([x.shape[1], 1, 1, 1])
    values = []
    for level in range(levels):
        ssim_per_channel, cs = _ssim(x, y, data_range=255, win=win, size_average=False, K=(0.01, 0.03))
        if level < levels - 1:
            values.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]  # as pytorch-msssim does for odd sides
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    values.append(torch.relu(ssim_per_channel))
    stacked = torch.stack(values, dim=0)  # (levels, N, C)
    return float(torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean())


def ssimulacra2(original, reconstruction) -> float:
    """SSIMULACRA2 score (pip `ssimulacra2`): 100 for identical images, higher is better."""
    from ssimulacra2 import compute_ssimulacra2

    a, b = _pair(original, reconstruction)
    # The package reads images through Image.open; lossless in-memory PNGs keep it off disk.
    files = []
    for arr in (a, b):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG", compress_level=0)
        buf.seek(0)
        files.append(buf)
    return float(compute_ssimulacra2(files[0], files[1]))


class RealismReference:
    """Precomputed Laplacian patch sets of one original, for `distance(reconstruction)`.

    levels: Laplacian bands (finest first; fewer on small images); patch: side of the
    square patches; max_patches: patches sampled per band (same positions for both
    images, which does not matter for a set distance but keeps identical inputs at 0);
    projections: random unit directions of the sliced Wasserstein estimate. Everything
    random is seeded, so the metric is deterministic.
    """

    def __init__(self, original, *, levels: int = 4, patch: int = 7, max_patches: int = 4096,
                 projections: int = 128, seed: int = 0):
        self.shape = as_rgb_array(original).shape
        self.patch = patch
        self.max_patches = max_patches
        self.seed = seed
        self.levels = levels
        bands = _laplacian_bands(_unit_tensor(as_rgb_array(original)), levels, min_side=2 * patch)
        if not bands:
            raise ValueError(f"image too small for the realism metric (needs sides >= {2 * patch})")
        gen = torch.Generator().manual_seed(seed)
        dim = 3 * patch * patch
        dirs = torch.randn(dim, projections, generator=gen, dtype=torch.float64)
        self._directions = dirs / dirs.norm(dim=0, keepdim=True)
        self._positions = []
        self._norm = []
        self._reference = []
        for level, band in enumerate(bands):
            positions = _patch_positions(band.shape[-2:], patch, max_patches, seed * 1000 + level + 1)
            ref = _gather_patches(band, positions, patch)
            # Per-channel normalisation from the original's patches, applied to both sets,
            # so that every band weighs the same whatever its energy.
            per_channel = ref.view(ref.shape[0], 3, -1)
            mean = per_channel.mean(dim=(0, 2))
            std = per_channel.std(dim=(0, 2))
            std = torch.where(std > 0, std, torch.ones_like(std))
            self._positions.append(positions)
            self._norm.append((mean, std))
            self._reference.append(self._project(ref, level))

    def _project(self, cols: torch.Tensor, level: int) -> torch.Tensor:
        mean, std = self._norm[level]
        n = cols.shape[0]
        normalised = ((cols.view(n, 3, -1) - mean.view(1, 3, 1)) / std.view(1, 3, 1)).view(n, -1)
        return torch.sort(normalised @ self._directions, dim=0).values

    def distance(self, reconstruction) -> float:
        """Mean over bands of the sliced Wasserstein-1 distance to the original's patches."""
        arr = as_rgb_array(reconstruction)
        if arr.shape != self.shape:
            raise ValueError(f"image sizes differ: original {self.shape[1]}x{self.shape[0]}, "
                             f"reconstruction {arr.shape[1]}x{arr.shape[0]}")
        bands = _laplacian_bands(_unit_tensor(arr), len(self._reference), min_side=2 * self.patch)
        total = 0.0
        for level, band in enumerate(bands):
            proj = self._project(_gather_patches(band, self._positions[level], self.patch), level)
            total += float((proj - self._reference[level]).abs().mean())
        return total / len(bands)


def realism_swd(original, reconstruction, **options) -> float:
    """Sliced Wasserstein distance between Laplacian patch sets (0 = identical sets)."""
    a, b = _pair(original, reconstruction)
    return RealismReference(a, **options).distance(b)


def _patch_positions(shape, patch: int, max_patches: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of up to `max_patches` distinct patches, drawn with a seeded generator."""
    rows, cols = shape[0] - patch + 1, shape[1] - patch + 1
    count = rows * cols
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(count, generator=gen)[:max_patches] if count > max_patches else torch.arange(count)
    return flat // cols, flat % cols


def _gather_patches(band: torch.Tensor, positions, patch: int) -> torch.Tensor:
    """(n, 3·patch²) patches of a (1, 3, H, W) band, channel-major like F.unfold."""
    ys, xs = positions
    img = band[0]
    parts = [img[:, ys + dy, xs + dx] for dy in range(patch) for dx in range(patch)]  # each (3, n)
    return torch.stack(parts, dim=-1).permute(1, 0, 2).reshape(len(ys), -1)


def _unit_tensor(a: np.ndarray) -> torch.Tensor:
    return _to_tensor(a) / 255.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    # 5-tap binomial filter, separable, reflect padding (Burt & Adelson's pyramid kernel).
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype) / 16.0
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def _laplacian_bands(x: torch.Tensor, levels: int, *, min_side: int) -> list[torch.Tensor]:
    """Band-pass levels g_i − up(down(g_i)), finest first, while sides stay >= min_side."""
    bands = []
    g = x
    for _ in range(levels):
        if min(g.shape[-2:]) < max(min_side, 5):
            break
        low = _blur(g)[..., ::2, ::2]
        up = F.interpolate(low, size=g.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(g - up)
        g = low
    return bands


def compute_metrics(original, reconstruction, metrics=METRICS, *, realism_reference=None) -> dict[str, float]:
    """The requested metrics for one pair; `realism_reference` reuses the original's patches."""
    a, b = _pair(original, reconstruction)
    out: dict[str, float] = {}
    for name in metrics:
        if name == "psnr":
            out[name] = psnr(a, b)
        elif name == "msssim":
            out[name] = ms_ssim(a, b)
        elif name == "ssimulacra2":
            out[name] = ssimulacra2(a, b)
        elif name == "realism":
            ref = realism_reference if realism_reference is not None else RealismReference(a)
            out[name] = ref.distance(b)
        else:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return out
