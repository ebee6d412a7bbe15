"""An encoder-fitted output filter (docs/design.md §4, §4b): the encoder's least-squares
correction of a reconstruction, written into the file as a few integers. DIRAC applies it to its
0-step output (x_base = the base codec's decode, d = the model's residual estimate); DiffC to its
flow reconstruction (x_base = the flow ODE's output, d = the denoiser mean at z_K minus it).

In DIRAC's terms (where it was designed): the model's 0-step output x_base + r̂_0/K_r is an MMSE
estimate *on average over the training photos*; only the encoder has the original, so only it
can say how this image's estimate should be weighed. Version 2 of DIRAC's parameter block signals
one gain γ (x_base + γ d, d = r̂_0/K_r). The filter generalises it to a linear combination, per
output channel c, of fixed features:

    x̂_c = x_base,c + Σ_j w_cj f_cj

    f_c = ( d_R, d_G, d_B,            the model's residual estimate: a colour matrix on it
            d_c − G_1.5 d_c,          its fine detail, weighed apart from its coarse part
            x_c − G_1 x_c,            the base's own detail at two scales: what the base
            x_c − G_2.5 x_c,          codec's smoothing took from this channel
            ℓ − G_1 ℓ )               ℓ the mean of the base's channels: luma detail, which the
                                      chroma-subsampled codecs keep sharper than chroma

with x = x_base and G_s a Gaussian blur of σ = s pixels (reflected borders). The encoder fits w
per channel by least squares against the true residual x − x_base (float64) and writes
round(256 w) as 16-bit signed integers (w ∈ [−128, 128)): 42 bytes, a fixed size, so the bpp
search can size a file before the filter is fitted. The decoder reads only those integers.
Why 16 bits: at very low rates the fit amplifies the base's surviving detail by up to 3–4× (held-
out HEIC at 0.03 bpp), and one byte in 1/64 steps (range ±2) lost 0.17 dB there by clamping
and up to 0.03 dB at the highest rates, where the weights are small and finely balanced.

Why these features (held-out photos, AVIF and HEIC at q 20/40/60/75, each image's own fit): the
mean PSNR gain over the base went from +0.31 dB with γ alone to +0.37 with the colour matrix,
+0.45 with d's detail and the base's fine detail, +0.52 with the base's coarser detail and +0.56
with luma detail; two more features (all channels' d detail) added +0.01. The base-detail terms
alone — a signalled unsharp mask, no model — gave +0.27 dB: the model's share is largest at low
rates, the unsharp mask's at high rates (design §4b; scripts/dirac_filter_features.py).
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidFieldError

FILTER_ID = 1  # the feature set above; an id is written so a later set can be added beside it
NUM_FEATURES = 7
NUM_CODES = 3 * NUM_FEATURES
CODE_DENOM = 256  # w = code / 256
CODE_MIN, CODE_MAX = -32768, 32767


def gaussian_blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] (σ in pixels, radius ⌈3σ⌉, reflected borders;
    images smaller than the radius are replicated instead, which reflect padding cannot do)."""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(k * k) / (2 * sigma * sigma))
    g = (g / g.sum()).to(t.dtype)
    c = t.shape[1]
    mode = "reflect" if min(t.shape[-2:]) > radius else "replicate"
    t = F.pad(t, (radius, radius, radius, radius), mode=mode)
    t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def features(d: torch.Tensor, x_base: torch.Tensor) -> torch.Tensor:
    """The filter's features [1, 3, NUM_FEATURES, H, W] (module docstring) from the model's
    residual estimate d = r̂_0/K_r and the base reconstruction, both [1, 3, H, W] in image units."""
    if d.shape != x_base.shape or d.shape[:2] != (1, 3):
        raise ValueError(f"the output filter needs two [1, 3, H, W] tensors, got {tuple(d.shape)} and "
                         f"{tuple(x_base.shape)}")
    d, x = d.float(), x_base.float()
    d_detail = d - gaussian_blur(d, 1.5)
    x_fine = x - gaussian_blur(x, 1.0)
    x_coarse = x - gaussian_blur(x, 2.5)
    luma = x.mean(1, keepdim=True)
    luma_fine = (luma - gaussian_blur(luma, 1.0)).expand_as(x)
    colour = d[:, None].expand(1, 3, 3, *d.shape[-2:])  # every output channel sees d_R, d_G, d_B
    own = torch.stack([d_detail, x_fine, x_coarse, luma_fine], 2)
    return torch.cat([colour, own], 2)


def fit_codes(d: torch.Tensor, x_base: torch.Tensor, x: torch.Tensor) -> tuple[int, ...]:
    """The encoder's filter: per channel the least-squares weights of the features against the
    true residual x − x_base (float64), as NUM_CODES integer codes (channel-major)."""
    return _fit(features(d, x_base), x_base, x)


def choose_codes(d: torch.Tensor, x_base: torch.Tensor, x: torch.Tensor) -> tuple[int, ...]:
    """What the encoder writes: the least-squares filter (fit_codes), unless the decoder's 8-bit
    output with it is no closer to x than the base itself, in which case all-zero codes (the base).
    Why: the fit is made on continuous values, and at the highest rates the residual is below a
    grey level, where corrections that help before rounding can hurt after it (development photos,
    HEIC q 80–95: −0.01 … −0.04 dB without this check)."""
    from ..image_io import tensor_to_uint8

    def error(out: torch.Tensor) -> float:
        return float(((tensor_to_uint8(out.clamp(-1, 1)).astype(np.float64) - truth) ** 2).mean())

    truth = tensor_to_uint8(x).astype(np.float64)
    f = features(d, x_base)  # once: the fit and the decoder's output with it share them
    fitted = _fit(f, x_base, x)
    return fitted if error(_combine(f, x_base, fitted)) < error(x_base.float()) else (0,) * NUM_CODES


def apply(d: torch.Tensor, x_base: torch.Tensor, codes) -> torch.Tensor:
    """x_base + Σ w f with w = codes / 256 (not clamped: the caller clamps to the pixel range)."""
    check_codes(codes)
    return _combine(features(d, x_base), x_base, codes)


def _fit(f: torch.Tensor, x_base: torch.Tensor, x: torch.Tensor) -> tuple[int, ...]:
    """fit_codes on precomputed features f [1, 3, NUM_FEATURES, H, W]."""
    f = f.double()
    target = x.double() - x_base.double()
    codes = []
    for c in range(3):
        a = f[0, c].reshape(NUM_FEATURES, -1).T
        b = target[0, c].reshape(-1, 1)
        # The normal equations with a tiny ridge: a flat image makes features vanish (collinear),
        # where plain lstsq would still answer but with arbitrary large weights.
        ata = a.T @ a
        ata = ata + 1e-9 * (torch.trace(ata) / NUM_FEATURES + 1e-30) * torch.eye(NUM_FEATURES, dtype=ata.dtype)
        w = torch.linalg.solve(ata, a.T @ b)[:, 0]
        codes.extend(int(min(max(round(float(v) * CODE_DENOM), CODE_MIN), CODE_MAX)) for v in w)
    return tuple(codes)


def _combine(f: torch.Tensor, x_base: torch.Tensor, codes) -> torch.Tensor:
    """x_base + Σ w f for precomputed features f, w = codes / 256."""
    w = torch.tensor(codes, dtype=torch.float32).view(1, 3, NUM_FEATURES, 1, 1) / CODE_DENOM
    return x_base.float() + (f * w).sum(2)


def check_codes(codes) -> None:
    if len(codes) != NUM_CODES or not all(isinstance(c, int) and CODE_MIN <= c <= CODE_MAX for c in codes):
        raise ValueError(f"an output filter is {NUM_CODES} integers in {CODE_MIN}..{CODE_MAX}")


def encode_block(codes) -> bytes:
    """The filter's bytes in the parameter block: its id, then the codes as little-endian int16."""
    check_codes(codes)
    return bytes([FILTER_ID]) + struct.pack(f"<{NUM_CODES}h", *codes)


def decode_block(reader, pipeline: str = "DIRAC") -> tuple[int, ...]:
    """The codes of a filter block read from a container Reader (the id checked)."""
    filter_id = reader.u8("output filter id")
    if filter_id != FILTER_ID:
        raise InvalidFieldError(f"invalid {pipeline} parameters: output filter {filter_id} is unknown "
                                f"(this version knows {FILTER_ID})")
    return struct.unpack(f"<{NUM_CODES}h", reader.take(2 * NUM_CODES, "output filter coefficients"))


BLOCK_BYTES = 1 + 2 * NUM_CODES  # encode_block's size: the id byte and the int16 codes


__all__ = ["BLOCK_BYTES", "CODE_DENOM", "FILTER_ID", "NUM_CODES", "NUM_FEATURES", "apply", "choose_codes",
           "decode_block", "encode_block", "features", "fit_codes", "gaussian_blur"]
