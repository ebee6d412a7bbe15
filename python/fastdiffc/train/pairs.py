"""(original, base reconstruction) pairs for training DIRAC's residual model (docs/design.md §4b, §8).

Every training photo is compressed by every base codec at a few qualities drawn at random
(seeded, per photo, scale and codec) from the codec's range, so one model sees the whole
distortion ↔ rate range of each codec. The learned base codec `cdc` (CDC's mean decoder) takes
its levels as qualities; its cache files carry the CDC model's content hash, so another CDC
model never reuses them. The base *bitstreams* are cached on disk (small: about
1/50 of the pixels), and decoded into memory when a run starts, so a resumed or later run
skips the encoding and sees exactly the same pairs.

Patches are cut at offsets that are multiples of 16 (the JPEG 4:2:0 macroblock and the UNet's
stride), so the block grid sits at the same phase in training as in a whole image decoded
from its origin; horizontal flips keep that phase because patch sizes are multiples of 16.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..codecs.learned import DIRAC_BASES, LEARNED_BASES, cdc_levels, encode_base, open_base
from ..codecs.plain import rate_features
from .data import downscale, list_images, load_image, to_model_range

# Quality ranges per codec covering ≈ 0.05–2 bpp on photos (HEIC above 80 jumps past 2 bpp).
QUALITY_RANGE = {"jpeg": (5, 95), "webp": (5, 95), "avif": (5, 95), "heic": (5, 80), "jxl": (5, 95)}
ALIGN = 16
DEFAULT_CDC_MODEL = "cdc"  # the registry name of the CDC model the cdc base uses


_CDC_MODELS: dict = {}  # per process: the pair encoder loads each CDC model once


def load_cdc(name: str):
    if name not in _CDC_MODELS:
        from ..models.registry import load_model

        _CDC_MODELS[name] = load_model(name)
    return _CDC_MODELS[name]


def quality_range(codec: str, cdc_model: str = DEFAULT_CDC_MODEL) -> tuple[int, int]:
    if codec == "cdc":
        return 0, cdc_levels(load_cdc(cdc_model)) - 1
    return QUALITY_RANGE[codec]


@dataclass(frozen=True)
class PairSpec:
    image: str  # path of the original
    scale: float
    codec: str
    quality: int


def draw_specs(files, codecs=DIRAC_BASES, scales=(0.5, 1.0), per_codec: int = 4, seed: int = 0,
               cdc_model: str = DEFAULT_CDC_MODEL) -> list[PairSpec]:
    """Which (photo, scale, codec, quality) pairs a run uses: `per_codec` distinct qualities per
    photo, scale and codec, drawn uniformly from the codec's range with a seeded generator."""
    out = []
    for f in files:
        for scale in scales:
            for codec in codecs:
                lo, hi = quality_range(codec, cdc_model)
                key = f"{Path(f).name}|{scale}|{codec}|{seed}".encode()
                rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
                qs = sorted(rng.choice(np.arange(lo, hi + 1), size=min(per_codec, hi - lo + 1), replace=False))
                out.extend(PairSpec(str(f), float(scale), codec, int(q)) for q in qs)
    return out


def _cache_name(spec: PairSpec, cdc_model: str = DEFAULT_CDC_MODEL) -> str:
    codec = spec.codec
    if codec == "cdc":
        codec = f"cdc-{int(load_cdc(cdc_model).content_hash) & 0xFFFFFFFF:08x}"
    return f"{Path(spec.image).stem}_s{spec.scale:g}_{codec}_q{spec.quality}.bin"


def _encode_one(args) -> tuple[str, int]:
    spec, cache, cdc_model = args
    path = Path(cache) / _cache_name(spec, cdc_model)
    if not path.exists():
        img = downscale(load_image(spec.image), spec.scale)
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        data = encode_base(spec.codec, pil, spec.quality, cdc=_cdc_for(spec, cdc_model))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path), path.stat().st_size


def _cdc_for(spec: PairSpec, cdc_model: str):
    return load_cdc(cdc_model) if spec.codec in LEARNED_BASES else None


def _open_pair_base(spec: PairSpec, data: bytes, width: int, height: int, cdc_model: str):
    """The decoded base file of a pair (codecs.plain.PlainImage)."""
    return open_base(spec.codec, data, width, height, cdc=_cdc_for(spec, cdc_model))


def build_cache(specs, cache_dir, workers: int = 1, cdc_model: str = DEFAULT_CDC_MODEL) -> list[Path]:
    """Encode every spec not yet cached (in `workers` processes); returns the bitstream paths."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(s, str(cache), cdc_model) for s in specs]
    if workers > 1:
        # spawn, not fork: a child forked after torch has started its thread pool (the cdc base
        # runs CDC's transforms) can wait forever on a lock copied in the held state (seen: every
        # worker asleep on a futex, no pair written)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_encode_one, jobs, chunksize=4))
    else:
        done = [_encode_one(j) for j in jobs]
    return [Path(p) for p, _ in done]


class BasePairs:
    """Aligned random patches (x, x_base) with their conditioning (codec label, rate scalars)."""

    def __init__(self, folder, cache_dir, *, patch_size: int = 128, scales=(0.5, 1.0), per_codec: int = 4,
                 codecs=DIRAC_BASES, labels=DIRAC_BASES, seed: int = 0, workers: int = 1,
                 cdc_model: str = DEFAULT_CDC_MODEL):
        if patch_size % ALIGN:
            raise ValueError(f"patch_size must be a multiple of {ALIGN}")
        self.patch_size = patch_size
        self.codecs = tuple(codecs)
        files = list_images(folder)
        specs = draw_specs(files, self.codecs, scales, per_codec, seed, cdc_model)
        paths = build_cache(specs, cache_dir, workers, cdc_model)
        originals = {}
        self.items = []  # (original uint8 [3,H,W], base uint8 [3,H,W], label, scalars)
        for spec, path in zip(specs, paths):
            key = (spec.image, spec.scale)
            if key not in originals:
                originals[key] = downscale(load_image(spec.image), spec.scale)
            orig = originals[key]
            if orig.shape[1] < patch_size or orig.shape[2] < patch_size:
                continue
            plain = _open_pair_base(spec, path.read_bytes(), orig.shape[2], orig.shape[1], cdc_model)
            base = torch.from_numpy(np.asarray(plain.image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
            feats = torch.tensor(rate_features(spec.codec, plain.bpp, plain.quality), dtype=torch.float32)
            self.items.append((orig, base, labels.index(spec.codec), feats))
        if not self.items:
            raise ValueError(f"no image under {folder} is at least {patch_size}x{patch_size} pixels")
        self.manifest = [dict(image=Path(s.image).name, scale=s.scale, codec=s.codec, quality=s.quality)
                         for s in specs]

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, batch_size: int, generator: torch.Generator):
        """(x, x_base) float32 [B, 3, p, p] in [-1, 1], labels [B] long, scalars [B, 2]."""
        p = self.patch_size
        idx = torch.randint(len(self.items), (batch_size,), generator=generator)
        u = torch.rand(batch_size, 3, generator=generator, dtype=torch.float64)
        xs = torch.empty(batch_size, 3, p, p, dtype=torch.uint8)
        bs = torch.empty_like(xs)
        labels = torch.empty(batch_size, dtype=torch.long)
        scalars = torch.empty(batch_size, 2, dtype=torch.float32)
        for b in range(batch_size):
            orig, base, label, feats = self.items[int(idx[b])]
            ny, nx = (orig.shape[1] - p) // ALIGN + 1, (orig.shape[2] - p) // ALIGN + 1
            y, x = int(u[b, 0] * ny) * ALIGN, int(u[b, 1] * nx) * ALIGN
            a, c = orig[:, y : y + p, x : x + p], base[:, y : y + p, x : x + p]
            if u[b, 2] < 0.5:
                a, c = a.flip(2), c.flip(2)
            xs[b], bs[b], labels[b], scalars[b] = a, c, label, feats
        return to_model_range(xs), to_model_range(bs), labels, scalars


def heldout_settings(codec: str, qualities, cdc_model: str = DEFAULT_CDC_MODEL) -> list[int]:
    """The held-out qualities of a codec; for cdc the levels at the same fractions of its range."""
    if codec != "cdc":
        return list(qualities)
    top = quality_range("cdc", cdc_model)[1]
    return sorted({round(q / 100 * top) for q in qualities})


def heldout_pairs(folder, cache_dir, *, scale: float = 0.5, qualities=(20, 50, 80), codecs=DIRAC_BASES,
                  labels=DIRAC_BASES, max_side: int = 512, cdc_model: str = DEFAULT_CDC_MODEL):
    """Fixed held-out whole images (cropped from the origin to ≤ max_side, multiple of 16) for
    each codec and quality: [(x, x_base, label, scalars, spec)] as float tensors [1, 3, H, W]."""
    out = []
    specs = [PairSpec(str(f), scale, c, q) for f in list_images(folder) for c in codecs
             for q in heldout_settings(c, qualities, cdc_model)]
    originals = {}  # each photo decoded and downscaled once, not once per codec and quality
    for spec, path in zip(specs, build_cache(specs, cache_dir, cdc_model=cdc_model)):
        if spec.image not in originals:
            originals[spec.image] = downscale(load_image(spec.image), spec.scale)
        orig = originals[spec.image]
        plain = _open_pair_base(spec, path.read_bytes(), orig.shape[2], orig.shape[1], cdc_model)
        base = torch.from_numpy(np.asarray(plain.image, dtype=np.uint8).copy()).permute(2, 0, 1)
        h = min(orig.shape[1], max_side) // ALIGN * ALIGN
        w = min(orig.shape[2], max_side) // ALIGN * ALIGN
        # Crop from the origin: the codec's block grid stays where it was encoded.
        x, xb = orig[:, :h, :w], base[:, :h, :w]
        feats = torch.tensor([rate_features(spec.codec, plain.bpp, plain.quality)], dtype=torch.float32)
        out.append((to_model_range(x)[None], to_model_range(xb.contiguous())[None],
                    torch.tensor([labels.index(spec.codec)]), feats, spec))
    return out


def write_manifest(pairs: BasePairs, path) -> None:
    Path(path).write_text(json.dumps(pairs.manifest, indent=1))
