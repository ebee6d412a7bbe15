"""The Gaussian image model's spectrum (docs/design.md §3): the orthonormal DCT, the variance
table with its power-law continuation, and fitting it on photo patches.

Structure of Σ: a fixed orthonormal 3×3 colour transform P (PCA of RGB) decorrelates the colour
channels, y = Pᵀ(x − m); each decorrelated channel is stationary and modelled as diagonal in the
orthonormal 2-D DCT-II basis: the DCT coefficient (k_h, k_w) of channel c has variance
v_c(k_h, k_w; H, W) and all coefficients are independent.

Any image size: the variances are a function of continuous frequency f = (f_h, f_w) (cycles per
pixel). The DCT coefficient k of an N-point axis sits at f = k̃ / 2N with k̃ = max(k, κ): κ
(``dc_index``) places the zero-frequency row/column, whose basis function covers a band ~1/(2N)
wide around 0, at an effective frequency; it is fitted by predicting smaller patch sizes. The
spectrum is stored as the fitted P×P table of log variances at the fit size's frequencies
(k̃ / 2P), interpolated bilinearly in (log f_h, log f_w) — which keeps the strong horizontal and
vertical ridges of natural images — and, outside the table (low frequencies of images larger than
P), continued radially as a power law: v(f) = v(f_clamped) · (|f| / |f_clamped|)^(−γ_c), with the
exponent γ_c fitted per channel. The zero-frequency coefficient is capped at H·W·(pixel variance),
the most a mean over H·W pixels can vary.

The denoiser built on this spectrum is `models.gaussian.GaussianDenoiser`; its closed-form
theory is `diffusion.rd_theory`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

# ----------------------------------------------------------------------------- DCT

@functools.lru_cache(maxsize=32)
def _dct_matrix_cpu(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n×n, float64): coefficients = D @ signal, signal = Dᵀ @ coefficients."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def dct_matrix(n: int, device=None) -> torch.Tensor:
    return _dct_matrix_cpu(int(n)).to(device)


def _sep2(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """mh @ x @ mwᵀ over the last two dims, as two right-multiplications (each one large GEMM;
    broadcasting a left 2-D matrix over a batch takes a much slower path in torch)."""
    y = x @ mw.T
    return (y.transpose(-1, -2) @ mh.T).transpose(-1, -2)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dims (float64)."""
    return _sep2(x, dct_matrix(x.shape[-2], x.device), dct_matrix(x.shape[-1], x.device))


def idct2(c: torch.Tensor) -> torch.Tensor:
    return _sep2(c, dct_matrix(c.shape[-2], c.device).T, dct_matrix(c.shape[-1], c.device).T)


# ----------------------------------------------------------------------------- spectrum table

def _log_nodes(p: int, dc_index: float) -> torch.Tensor:
    """log of the table's frequencies along one axis: k̃ / 2P for k = 0..P−1."""
    return torch.log(torch.arange(p, dtype=torch.float64).clamp(min=dc_index) / (2 * p))


def _axis_lookup(n: int, p: int, dc_index: float, device=None):
    """For an n-point axis: (lower node index, interpolation weight, log f, log f clamped to the table)."""
    nodes = _log_nodes(p, dc_index).to(device)
    logf = torch.log(torch.arange(n, dtype=torch.float64, device=device).clamp(min=dc_index) / (2 * n))
    clamped = logf.clamp(float(nodes[0]), float(nodes[-1]))
    i0 = (torch.searchsorted(nodes, clamped, right=True) - 1).clamp(0, max(p - 2, 0))
    i1 = (i0 + 1).clamp(max=p - 1)
    span = nodes[i1] - nodes[i0]
    wgt = torch.where(span > 0, (clamped - nodes[i0]) / torch.where(span > 0, span, 1.0), torch.zeros_like(span))
    return i0, i1, wgt, logf, clamped


def _spectrum(log_var: torch.Tensor, slope: torch.Tensor, dc_index: float, h: int, w: int) -> torch.Tensor:
    """Variances [C, h, w] from the table log_var [C, P, P] (see the module docstring)."""
    c, p, _ = log_var.shape
    hi0, hi1, hw_, hlogf, hcl = _axis_lookup(h, p, dc_index, log_var.device)
    wi0, wi1, ww_, wlogf, wcl = _axis_lookup(w, p, dc_index, log_var.device)
    t = log_var
    a = t[:, hi0][:, :, wi0] * (1 - ww_) + t[:, hi0][:, :, wi1] * ww_
    b = t[:, hi1][:, :, wi0] * (1 - ww_) + t[:, hi1][:, :, wi1] * ww_
    lv = a * (1 - hw_)[:, None] + b * hw_[:, None]
    # Radial power-law continuation for the part of f outside the table.
    log_rho = 0.5 * torch.logaddexp(2 * hlogf[:, None], 2 * wlogf[None, :])
    log_rho_cl = 0.5 * torch.logaddexp(2 * hcl[:, None], 2 * wcl[None, :])
    lv = lv - slope[:, None, None] * (log_rho - log_rho_cl)[None]
    v = torch.exp(lv)
    # The mean of H·W pixels cannot vary more than one pixel: cap the zero-frequency coefficient.
    pixel_var = torch.exp(log_var).mean(dim=(1, 2))
    v[:, 0, 0] = torch.minimum(v[:, 0, 0], h * w * pixel_var)
    return v


def power_law_table(variance_at, exponent: float, ref_frequency: float, dc_index: float,
                    table_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_var [C, P, P], slope [C]) of the isotropic power law
    v_c(f) = variance_at[c] · (|f| / ref_frequency)^(−exponent)."""
    c = len(variance_at)
    nodes = _log_nodes(table_size, dc_index)
    log_rho = 0.5 * torch.logaddexp(2 * nodes[:, None], 2 * nodes[None, :])
    base = torch.log(torch.as_tensor(variance_at, dtype=torch.float64))
    log_var = base[:, None, None] - exponent * (log_rho - math.log(ref_frequency))[None]
    return log_var, torch.full((c,), float(exponent), dtype=torch.float64)


# ----------------------------------------------------------------------------- fitting

@dataclass
class SpectrumFit:
    """What `fit_spectrum` measured: the model's parameters and a record of the fit."""

    mean: torch.Tensor
    colour: torch.Tensor
    log_var: torch.Tensor
    slope: torch.Tensor
    dc_index: float
    info: dict = field(default_factory=dict)


def fit_spectrum(images_or_patches, *, patch_size: int = 64, num_patches: int = 20000, seed: int = 0,
                 dc_candidates=tuple(k / 40 for k in range(1, 41))) -> SpectrumFit:
    """Fit mean, colour PCA and the DCT spectrum on image patches.

    images_or_patches: a float tensor [N, C, P, P] of patches in [-1, 1], or a sequence of images
    (CHW float tensors in [-1, 1], HWC uint8 arrays or PIL images) from which `num_patches` random
    patch_size² patches are cut (uniform positions, random horizontal flips; seeded).
    """
    source = _PatchSource(images_or_patches, patch_size, num_patches, seed)
    n, c, p = source.count, source.channels, source.patch_size
    # Pass 1: mean and colour covariance (streamed: 20k 64² patches would not fit in memory as float64).
    total = torch.zeros(c, dtype=torch.float64)
    for xb in source.batches():
        total += xb.sum(dim=(0, 2, 3))
    mean = total / (n * p * p)
    cov = torch.zeros(c, c, dtype=torch.float64)
    for xb in source.batches():
        flat = (xb - mean[None, :, None, None]).permute(1, 0, 2, 3).reshape(c, -1)
        cov += flat @ flat.T
    cov /= n * p * p
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)
    colour = evecs[:, order]
    # Deterministic signs: the largest-magnitude entry of each axis is positive.
    idx = colour.abs().argmax(dim=0)
    colour = colour * torch.sign(colour[idx, torch.arange(c)])[None, :]

    # Pass 2: DCT variances at the fit size and at two smaller sizes (top-left sub-patches).
    sizes = [s for s in (p, p // 2, p // 4) if s >= 4]
    meas = {s: torch.zeros(c, s, s, dtype=torch.float64) for s in sizes}
    for xb in source.batches():
        y = torch.einsum("cd,nchw->ndhw", colour, xb - mean[None, :, None, None])
        for s_ in sizes:
            meas[s_] += dct2(y[:, :, :s_, :s_]).pow(2).sum(0)
    meas = {s_: v / n for s_, v in meas.items()}
    table, slope = _spectrum_table(meas[p])
    # κ places the zero-frequency rows/columns (k = 0) on the continuous spectrum; choose it by
    # predicting the measured variances of those coefficients at the fit size and smaller sizes.
    best = None
    for kappa in dc_candidates:
        err = [(torch.log(_spectrum(table, slope, kappa, s, s)) - torch.log(meas[s]))[
            :, (torch.arange(s)[:, None] == 0) | (torch.arange(s)[None, :] == 0)] for s in sizes]
        score = float(torch.cat([e.flatten() for e in err]).pow(2).mean())
        if best is None or score < best[0]:
            best = (score, kappa)
    _, kappa = best
    errs = {s: float((torch.log(_spectrum(table, slope, kappa, s, s)) - torch.log(meas[s])).abs().mean())
            for s in sizes}
    info = {"source": "fit", "patch_size": p, "num_patches": n, "seed": seed, "dc_index": kappa,
            "mean_abs_log_error_by_size": {str(k): v for k, v in errs.items()},
            "low_frequency_exponent": [float(v) for v in slope],
            "pixel_variance": [float(v) for v in torch.diag(cov)]}
    return SpectrumFit(mean, colour, table, slope, kappa, info)


def _spectrum_table(var: torch.Tensor):
    """The log-variance table [C, P, P] and the low-frequency exponent γ_c: least squares of log v on
    log |f| over the lowest decade of the coefficients with k_h, k_w ≥ 1 (frequencies independent of κ)."""
    c, p, _ = var.shape
    lv = torch.log(var.clamp(min=1e-12))
    k = torch.arange(1, p, dtype=torch.float64)
    log_rho = torch.log(torch.hypot(k[:, None], k[None, :]) / (2 * p)).flatten()
    inner = lv[:, 1:, 1:].reshape(c, -1)
    sel = log_rho < float(log_rho.min()) + math.log(10.0)
    xr = log_rho[sel] - log_rho[sel].mean()
    slope = -((inner[:, sel] - inner[:, sel].mean(1, keepdim=True)) * xr).sum(1) / (xr * xr).sum()
    return lv, slope.clamp(0.0, 4.0)


# ----------------------------------------------------------------------------- data

class _PatchSource:
    """Seeded random patches from a patch tensor [N, C, P, P] or a list of images, served in float64 batches.

    Images are kept as given (uint8 stays uint8) and patches converted per batch, so fitting on
    many large photos does not hold them all in float64."""

    def __init__(self, source, patch_size: int, num_patches: int, seed: int, batch: int = 256):
        self.batch = batch
        if isinstance(source, torch.Tensor) and source.ndim == 4:
            if source.shape[-1] != source.shape[-2]:
                raise ValueError("patches must be square")
            if not source.is_floating_point():
                raise ValueError("patch tensors must be floating point in [-1, 1]")
            self.patches, self.images, self.picks = source, None, None
            self.count, self.channels, self.patch_size = source.shape[0], source.shape[1], source.shape[-1]
            return
        if patch_size < 4 or num_patches < 1:
            raise ValueError("need patch_size >= 4 and num_patches >= 1")
        images = [_image_chw(im) for im in source]
        images = [im for im in images if im.shape[1] >= patch_size and im.shape[2] >= patch_size]
        if not images:
            raise ValueError(f"no image is at least {patch_size}x{patch_size}")
        if len({im.shape[0] for im in images}) != 1:
            raise ValueError("all images must have the same number of channels")
        g = torch.Generator().manual_seed(seed)
        # Patches per image proportional to its area, so large photos are not under-represented.
        areas = torch.tensor([im.shape[1] * im.shape[2] for im in images], dtype=torch.float64)
        which = torch.multinomial(areas / areas.sum(), num_patches, replacement=True, generator=g).tolist()
        picks = []
        for k in which:
            im = images[k]
            top = int(torch.randint(0, im.shape[1] - patch_size + 1, (1,), generator=g))
            left = int(torch.randint(0, im.shape[2] - patch_size + 1, (1,), generator=g))
            flip = bool(torch.randint(0, 2, (1,), generator=g))
            picks.append((k, top, left, flip))
        self.patches, self.images, self.picks = None, images, picks
        self.count, self.channels, self.patch_size = num_patches, images[0].shape[0], patch_size

    def batches(self):
        for start in range(0, self.count, self.batch):
            if self.patches is not None:
                yield self.patches[start:start + self.batch].double()
                continue
            out = []
            for k, top, left, flip in self.picks[start:start + self.batch]:
                patch = self.images[k][:, top:top + self.patch_size, left:left + self.patch_size].double()
                if self.images[k].dtype == torch.uint8:
                    patch = patch / 127.5 - 1.0
                out.append(patch.flip(-1) if flip else patch)
            yield torch.stack(out)


def _image_chw(img) -> torch.Tensor:
    """CHW tensor: float in [-1, 1] kept as is; HWC uint8 arrays and PIL images become CHW uint8."""
    if isinstance(img, torch.Tensor):
        if img.ndim != 3 or not (img.is_floating_point() or img.dtype == torch.uint8):
            raise ValueError("image tensors must be CHW (float in [-1, 1] or uint8)")
        return img
    import numpy as np

    arr = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError("image arrays must be HWC uint8")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)
