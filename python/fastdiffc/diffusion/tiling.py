"""Tiled model calls (docs/design.md §4, "Large images"): a Denoiser evaluated window by window.

A network's activations grow with the image (the shipped UNet needs ≈ 450 bytes per pixel
in one forward, 5.4 GB for 12 Mpx), so large images are denoised in overlapping square windows
of `tile` pixels; the outputs are blended with weights that ramp linearly across the overlap
(1 inside a window, falling towards a window edge that borders another window, 1 at the image
border), and normalised by the summed weights. The result is a deterministic function of
(z, λ, tile, overlap) — sender and receiver compute the same x̂0 — but not the same function as
one whole-image call (GroupNorm statistics and global attention see one window), so the tile
geometry is part of a bitstream's parameters (DiffC parameter block version 3).

Windows: along an axis of length n > tile, starts are 0, s, 2s, … with s = tile − overlap,
the last one moved back to end at n; an axis with n <= tile has one window covering it.
"""

from __future__ import annotations

import torch


def window_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the windows along an axis of n pixels (see the module docstring)."""
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return starts


def _ramp(size: int, overlap: int, first: bool, last: bool, dtype) -> torch.Tensor:
    """Weights of one window along one axis: linear ramps over `overlap` pixels at inner edges."""
    w = torch.ones(size, dtype=dtype)
    if overlap > 0:
        r = (torch.arange(overlap, dtype=dtype) + 0.5) / overlap
        if not first:
            w[:overlap] = r
        if not last:
            w[size - overlap:] = torch.minimum(w[size - overlap:], r.flip(0))
    return w


class TiledDenoiser:
    """`denoiser` evaluated on overlapping tile × tile windows and blended (Denoiser protocol).

    `cond` (a tensor or a diffusion.denoiser.Conditioning whose image has z's H×W) is cut with
    the same windows. Inputs no larger than one tile go to the denoiser unchanged.
    """

    def __init__(self, denoiser, tile: int, overlap: int):
        if tile < 16 or not 0 <= overlap <= tile // 2:
            raise ValueError(f"tile must be >= 16 and 0 <= overlap <= tile/2, got tile={tile}, overlap={overlap}")
        self.denoiser = denoiser
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.name = getattr(denoiser, "name", type(denoiser).__name__)

    def __getattr__(self, item):  # name, content_hash, supports_float64, ... of the wrapped model
        if item == "denoiser":
            raise AttributeError(item)
        return getattr(self.denoiser, item)

    def __call__(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        h, w = z.shape[-2], z.shape[-1]
        if h <= self.tile and w <= self.tile:
            return self.denoiser(z, logsnr, cond)
        ys, xs = window_starts(h, self.tile, self.overlap), window_starts(w, self.tile, self.overlap)
        th, tw = min(self.tile, h), min(self.tile, w)
        out = torch.zeros(z.shape, dtype=z.dtype, device=z.device)
        total = torch.zeros((h, w), dtype=z.dtype, device=z.device)
        for i, y in enumerate(ys):
            wy = _ramp(th, self.overlap, i == 0, i == len(ys) - 1, z.dtype).to(z.device)
            for j, x in enumerate(xs):
                wx = _ramp(tw, self.overlap, j == 0, j == len(xs) - 1, z.dtype).to(z.device)
                weight = wy[:, None] * wx[None, :]
                part = self.denoiser(z[..., y:y + th, x:x + tw], logsnr, _crop_cond(cond, y, x, th, tw))
                out[..., y:y + th, x:x + tw] += part.to(z.dtype) * weight
                total[y:y + th, x:x + tw] += weight
                del part
        out /= total
        return out


def _crop_cond(cond, y: int, x: int, th: int, tw: int):
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond[..., y:y + th, x:x + tw]
    image = getattr(cond, "image", None)
    if image is None:
        return cond
    from dataclasses import replace

    return replace(cond, image=image[..., y:y + th, x:x + tw])


def tiled(denoiser, tile: int, overlap: int):
    """`denoiser` itself when tile is 0 (whole-image calls), else a TiledDenoiser."""
    return denoiser if not tile else TiledDenoiser(denoiser, tile, overlap)


__all__ = ["TiledDenoiser", "tiled", "window_starts"]
