"""Patch data from image folders: random crops + flips for training, fixed tiles for evaluation.

All images of a folder are decoded once into memory (uint8, CHW); a batch is drawn with
an explicit torch.Generator, so a run is reproducible and resumable from the generator's
state alone (no DataLoader worker processes, whose RNG would live outside the checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    return files


def load_image(path) -> torch.Tensor:
    """RGB uint8 tensor [3, H, W]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def to_model_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] (docs/design.md §3)."""
    return x_uint8.to(torch.float32) / 127.5 - 1.0


def downscale(img: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8 [3, H, W] resized by `scale` ≤ 1 with Lanczos (PIL, antialiased)."""
    if scale == 1.0:
        return img
    h, w = max(1, round(img.shape[1] * scale)), max(1, round(img.shape[2] * scale))
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    arr = np.asarray(pil.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class PatchDataset:
    """Random patch_size² crops from every image under `folder` (recursively).

    Crops are drawn uniformly over all valid crop positions of all images (an image is
    picked with probability ∝ its number of crop positions), then flipped left-right
    with probability ½ (and up-down too if `vflip`). Images smaller than the patch are skipped.

    `scales` (each in (0, 1]): the images are also kept downscaled by each factor, and a
    batch element first picks a scale uniformly. Photos downscaled ~3× look like whole
    small images (the ≤ 256 px evaluation photos), so a patch sees global structure that
    native-resolution crops of large photos never show (sky, horizon, a whole object).
    """

    def __init__(self, folder, patch_size: int = 64, vflip: bool = False, scales=(1.0,)):
        if patch_size < 1:
            raise ValueError("patch_size must be positive")
        scales = tuple(float(s) for s in scales)
        if not scales or any(not 0.0 < s <= 1.0 for s in scales):
            raise ValueError(f"scales must be in (0, 1], got {scales}")
        self.patch_size = patch_size
        self.vflip = vflip
        self.scales = scales
        p = patch_size
        self.files, self.images = [], []
        self.levels: list[tuple[list[torch.Tensor], torch.Tensor]] = []  # per scale: images, crop weights
        originals = [(path, load_image(path)) for path in list_images(folder)]
        for scale in scales:
            imgs = [downscale(img, scale) for _, img in originals]
            keep = [i for i, im in enumerate(imgs) if im.shape[1] >= p and im.shape[2] >= p]
            if scale == scales[0]:
                self.files = [originals[i][0] for i in keep]
                self.images = [imgs[i] for i in keep]
            if not keep:
                raise ValueError(f"no image under {folder} is at least {p}x{p} pixels at scale {scale}")
            counts = [(imgs[i].shape[1] - p + 1) * (imgs[i].shape[2] - p + 1) for i in keep]
            self.levels.append(([imgs[i] for i in keep], torch.tensor(counts, dtype=torch.float64)))
        self.weights = self.levels[0][1]

    @property
    def num_pixels(self) -> int:
        return sum(im.shape[1] * im.shape[2] for im in self.images)

    def __len__(self) -> int:
        """Number of non-overlapping patches the images hold (one 'epoch' of pixels)."""
        p = self.patch_size
        return sum((im.shape[1] // p) * (im.shape[2] // p) for im in self.images)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """A float32 batch [B, 3, p, p] in [-1, 1]."""
        p = self.patch_size
        if len(self.levels) == 1:  # (one scale: the draws of the single-scale sampler, so old runs resume exactly)
            level = torch.zeros(batch_size, dtype=torch.long)
            idx = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        else:
            level = torch.randint(len(self.levels), (batch_size,), generator=generator)
            idx = torch.stack([torch.multinomial(self.levels[int(lv)][1], 1, generator=generator)[0] for lv in level])
        u = torch.rand(batch_size, 4, generator=generator, dtype=torch.float64)
        out = torch.empty(batch_size, 3, p, p, dtype=torch.uint8)
        for b in range(batch_size):
            img = self.levels[int(level[b])][0][int(idx[b])]
            y = int(u[b, 0] * (img.shape[1] - p + 1))
            x = int(u[b, 1] * (img.shape[2] - p + 1))
            crop = img[:, y : y + p, x : x + p]
            if u[b, 2] < 0.5:
                crop = crop.flip(2)
            if self.vflip and u[b, 3] < 0.5:
                crop = crop.flip(1)
            out[b] = crop
        return to_model_range(out)


def tile_patches(folder, patch_size: int = 64, max_patches: int | None = None, scales=(1.0,)) -> torch.Tensor:
    """Deterministic non-overlapping tiles of every image under `folder`, as float32 [-1, 1].

    With `max_patches`, an evenly spaced subset of all tiles (same set on every call), so
    held-out bits/dim are always measured on the same pixels. With `scales`, tiles of the
    downscaled images too (as PatchDataset trains on them)."""
    p = patch_size
    tiles = []
    for path, scale in ((path, scale) for path in list_images(folder) for scale in scales):
        img = downscale(load_image(path), float(scale))
        for y in range(0, img.shape[1] - p + 1, p):
            for x in range(0, img.shape[2] - p + 1, p):
                tiles.append(img[:, y : y + p, x : x + p])
    if not tiles:
        raise ValueError(f"no image under {folder} is at least {p}x{p} pixels")
    if max_patches is not None and len(tiles) > max_patches:
        keep = np.linspace(0, len(tiles) - 1, max_patches).round().astype(int)
        tiles = [tiles[i] for i in keep]
    return to_model_range(torch.stack(tiles))
