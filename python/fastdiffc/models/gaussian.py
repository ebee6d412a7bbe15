"""The analytic Gaussian denoiser (docs/design.md §3): images modelled as x ~ N(m, Σ).

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

Everything is closed-form (float64):
- posterior mean (Wiener filter): ĉ = α v / (α² v + σ²) · c for the coefficients c of Pᵀ(z − α m);
- MMSE, mutual information I(X; Z_λ) = ½ Σ log(1 + e^λ v), expected per-step KL
  E KL[q(z_t|z_s,x) ‖ p(z_t|z_s)] = ½ (e^λt − e^λs) Σ v / (1 + e^λs v);
- reverse water-filling distortion–rate D(R), the Shannon bound for these data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

import torch

from ..diffusion.vp import alpha_sigma

CONFIG_KEY = "fastdiffc_config"
FORMAT_VERSION = 1


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


# ----------------------------------------------------------------------------- the model

class GaussianDenoiser(torch.nn.Module):
    """Exact posterior-mean denoiser of a stationary Gaussian image model (see module docstring).

    Buffers (float64): ``mean`` [C], ``colour`` [C, C] (orthonormal, columns = decorrelated axes),
    ``log_var`` [C, P, P] (log variances at the frequencies k̃ / 2P), ``slope`` [C] (low-frequency
    power-law exponent γ_c). Scalars: ``dc_index`` κ and a free-form ``fit_info`` dict.
    """

    def __init__(self, mean, colour, log_var, slope, *, dc_index: float = 0.5, fit_info: dict | None = None):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64)
        colour = torch.as_tensor(colour, dtype=torch.float64)
        log_var = torch.as_tensor(log_var, dtype=torch.float64)
        slope = torch.as_tensor(slope, dtype=torch.float64)
        c = mean.numel()
        if mean.shape != (c,) or colour.shape != (c, c):
            raise ValueError(f"need mean [C] and colour [C, C], got {tuple(mean.shape)} and {tuple(colour.shape)}")
        if log_var.ndim != 3 or log_var.shape[0] != c or log_var.shape[1] != log_var.shape[2] or log_var.shape[1] < 2:
            raise ValueError(f"need log_var [C, P, P] with C={c}, P >= 2, got {tuple(log_var.shape)}")
        if slope.shape != (c,):
            raise ValueError(f"need slope [C] with C={c}")
        if not torch.allclose(colour.T @ colour, torch.eye(c, dtype=torch.float64), atol=1e-6):
            raise ValueError("the colour transform must be orthonormal")
        if not (torch.isfinite(log_var).all() and torch.isfinite(mean).all() and torch.isfinite(slope).all()):
            raise ValueError("model parameters must be finite")
        if not 0 < dc_index <= 1:
            raise ValueError(f"dc_index must be in (0, 1], got {dc_index}")
        self.register_buffer("mean", mean)
        self.register_buffer("colour", colour)
        self.register_buffer("log_var", log_var)
        self.register_buffer("slope", slope)
        self.dc_index = float(dc_index)
        self.fit_info = dict(fit_info or {})
        self._var_cache: dict = {}

    @property
    def channels(self) -> int:
        return self.mean.numel()

    # ------------------------------------------------------------------ spectrum
    def variances(self, height: int, width: int) -> torch.Tensor:
        """Variance [C, H, W] (float64) of every DCT coefficient of the decorrelated channels."""
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        key = (int(height), int(width), self.log_var.device, self.log_var.data_ptr())
        v = self._var_cache.get(key)
        if v is None:
            v = _spectrum(self.log_var.double(), self.slope.double(), self.dc_index, int(height), int(width))
            if len(self._var_cache) > 16:
                self._var_cache.clear()
            self._var_cache[key] = v
        return v

    def _to_coeffs(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """DCT coefficients of Pᵀ(x − offset·m), x: [N, C, H, W] float64, offset: [N]."""
        y = torch.einsum("cd,nchw->ndhw", self.colour.double(), x - offset[:, None, None, None] * self.mean.double()
                         [None, :, None, None])
        return dct2(y)

    def _from_coeffs(self, c: torch.Tensor) -> torch.Tensor:
        y = idct2(c)
        return torch.einsum("cd,ndhw->nchw", self.colour.double(), y) + self.mean.double()[None, :, None, None]

    def _check_image(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.ndim != 4:
            raise ValueError("expected a floating-point NCHW tensor")
        if z.shape[1] != self.channels:
            raise ValueError(f"the model has {self.channels} channels, the input {z.shape[1]}")

    # ------------------------------------------------------------------ Denoiser protocol
    def forward(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        """Exact posterior mean E[x | z_λ = z] (Wiener filter in the decorrelated DCT basis)."""
        if cond is not None:
            raise ValueError("the Gaussian denoiser is unconditional; cond must be None")
        self._check_image(z)
        n, _, h, w = z.shape
        lam = torch.as_tensor(logsnr, dtype=torch.float64, device=z.device).reshape(-1).expand(n)
        a, s = alpha_sigma(lam)
        v = self.variances(h, w)
        coeffs = self._to_coeffs(z.double(), a)
        a4, snr4 = a[:, None, None, None], torch.exp(lam)[:, None, None, None]
        # α v / (α² v + σ²) = (1/α) · SNR v / (1 + SNR v): stable for any λ.
        gain = (snr4 * v) / (1 + snr4 * v) / a4
        return self._from_coeffs(gain * coeffs).to(z.dtype)

    # ------------------------------------------------------------------ sampling
    def sample_prior(self, n: int, height: int, width: int, *, generator=None, dtype=torch.float64) -> torch.Tensor:
        """n samples x ~ N(m, Σ) [n, C, H, W]."""
        v = self.variances(height, width)
        eps = torch.randn((n, self.channels, height, width), generator=generator, dtype=torch.float64,
                          device=generator.device if generator is not None else v.device).to(v.device)
        return self._from_coeffs(eps * v.sqrt()).to(dtype)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Decorrelated DCT coefficients of x − m ([N, C, H, W] float64): independent, variance `variances`."""
        self._check_image(x)
        return self._to_coeffs(x.double(), torch.ones(x.shape[0], dtype=torch.float64, device=x.device))

    # ------------------------------------------------------------------ closed-form theory (nats, whole image)
    def mmse(self, logsnr: float, height: int, width: int) -> float:
        """E‖x − E[x|z_λ]‖² summed over the C·H·W dimensions."""
        v = self.variances(height, width)
        return float((v / (1 + math.exp(logsnr) * v)).sum())

    def mutual_information(self, logsnr: float, height: int, width: int) -> float:
        """I(X; Z_λ) = ½ Σ log(1 + e^λ v) in nats."""
        v = self.variances(height, width)
        return float(0.5 * torch.log1p(math.exp(logsnr) * v).sum())

    def expected_step_kl(self, logsnr_from: float, logsnr_to: float, height: int, width: int) -> float:
        """E_x,z_s KL[q(z_t | z_s, x) ‖ q(z_t | z_s, x̂0(z_s))] = ½ (SNR_t − SNR_s) · mmse(λ_s), nats."""
        gain = 0.5 * (math.exp(logsnr_to) - math.exp(logsnr_from))
        return gain * self.mmse(logsnr_from, height, width)

    def distortion_rate(self, bits: float, height: int, width: int) -> float:
        """Shannon D(R) (reverse water-filling): the least mean squared error per dimension at `bits`
        for the whole C×H×W image."""
        if bits < 0:
            raise ValueError("rate must be >= 0")
        v = self.variances(height, width).flatten()
        if bits == 0:
            return float(v.mean())
        lv = torch.log(v)
        lo, hi = float(lv.min()) - 2 * bits * math.log(2) / v.numel() - 50, float(lv.max())

        def rate(log_theta):  # bits at water level θ
            return float(0.5 * (lv - log_theta).clamp(min=0).sum() / math.log(2))

        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if rate(mid) > bits else (lo, mid)
        theta = math.exp(0.5 * (lo + hi))
        return float(v.clamp(max=theta).mean())

    def rate_distortion(self, mse: float, height: int, width: int) -> float:
        """Shannon R(D) in bits for the whole image at mean squared error `mse` per dimension."""
        v = self.variances(height, width).flatten()
        if mse <= 0:
            raise ValueError("distortion must be > 0")
        if mse >= float(v.mean()):
            return 0.0
        lo, hi = 0.0, float(v.max())
        for _ in range(200):  # water level θ with mean(min(θ, v)) = mse
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float(v.clamp(max=mid).mean()) < mse else (lo, mid)
        theta = 0.5 * (lo + hi)
        return float(0.5 * torch.log2(v / theta).clamp(min=0).sum())

    # ------------------------------------------------------------------ construction
    @classmethod
    def power_law(cls, variance_at: tuple[float, ...] = (0.05, 0.01, 0.005), exponent: float = 2.0, *,
                  mean=(0.0, 0.0, 0.0), colour=None, ref_frequency: float = 0.05, dc_index: float = 0.5,
                  table_size: int = 32) -> GaussianDenoiser:
        """An isotropic power-law model v_c(f) = variance_at[c] · (|f| / ref_frequency)^(−exponent), for
        tests and experiments (no data needed)."""
        c = len(variance_at)
        nodes = _log_nodes(table_size, dc_index)
        log_rho = 0.5 * torch.logaddexp(2 * nodes[:, None], 2 * nodes[None, :])
        base = torch.log(torch.as_tensor(variance_at, dtype=torch.float64))
        log_var = base[:, None, None] - exponent * (log_rho - math.log(ref_frequency))[None]
        colour = torch.eye(c, dtype=torch.float64) if colour is None else colour
        return cls(mean, colour, log_var, torch.full((c,), float(exponent), dtype=torch.float64), dc_index=dc_index,
                   fit_info={"source": "power_law", "exponent": exponent, "variance_at": list(variance_at),
                             "ref_frequency": ref_frequency})

    @classmethod
    def fit(cls, images_or_patches, *, patch_size: int = 64, num_patches: int = 20000, seed: int = 0,
            dc_candidates=tuple(k / 40 for k in range(1, 41)),
            fit_info: dict | None = None) -> GaussianDenoiser:
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
        table, slope = cls._spectrum_table(meas[p])
        # κ places the zero-frequency rows/columns (k = 0) on the continuous spectrum; choose it by
        # predicting the measured variances of those coefficients at the fit size and smaller sizes.
        best = None
        for kappa in dc_candidates:
            model = cls(mean, colour, table, slope, dc_index=kappa)
            err = [(torch.log(model.variances(s, s)) - torch.log(meas[s]))[:, (torch.arange(s)[:, None] == 0)
                                                                             | (torch.arange(s)[None, :] == 0)]
                   for s in sizes]
            score = float(torch.cat([e.flatten() for e in err]).pow(2).mean())
            if best is None or score < best[0]:
                best = (score, kappa, model)
        _, kappa, model = best
        errs = {s: float((torch.log(model.variances(s, s)) - torch.log(meas[s])).abs().mean()) for s in sizes}
        info = {"source": "fit", "patch_size": p, "num_patches": n, "seed": seed, "dc_index": kappa,
                "mean_abs_log_error_by_size": {str(k): v for k, v in errs.items()},
                "low_frequency_exponent": [float(v) for v in slope],
                "pixel_variance": [float(v) for v in torch.diag(cov)]}
        info.update(fit_info or {})
        model.fit_info = info
        return model

    @staticmethod
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

    # ------------------------------------------------------------------ safetensors I/O
    def config(self) -> dict:
        return {"class": "gaussian", "version": FORMAT_VERSION, "channels": self.channels,
                "table_size": self.log_var.shape[-1], "dc_index": self.dc_index,
                "fit": self.fit_info}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach().double().cpu().contiguous() for k in ("mean", "colour", "log_var",
                                                                                     "slope")}

    def save(self, path) -> None:
        from safetensors.torch import save_file

        save_file(self.state_tensors(), str(path), metadata={CONFIG_KEY: json.dumps(self.config(), sort_keys=True)})

    @classmethod
    def from_state(cls, tensors: dict, config: dict) -> GaussianDenoiser:
        if config.get("class") != "gaussian":
            raise ValueError(f"not a Gaussian model config: class={config.get('class')!r}")
        if int(config.get("version", -1)) != FORMAT_VERSION:
            raise ValueError(f"unsupported Gaussian model version {config.get('version')!r}")
        missing = {"mean", "colour", "log_var", "slope"} - set(tensors)
        if missing:
            raise ValueError(f"Gaussian model file lacks tensors {sorted(missing)}")
        return cls(tensors["mean"], tensors["colour"], tensors["log_var"], tensors["slope"],
                   dc_index=float(config["dc_index"]), fit_info=config.get("fit", {}))

    @classmethod
    def load(cls, path) -> GaussianDenoiser:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
        if CONFIG_KEY not in meta:
            raise ValueError(f"{path}: missing {CONFIG_KEY!r} metadata")
        return cls.from_state(tensors, json.loads(meta[CONFIG_KEY]))

    def tensor_digest(self) -> str:
        """sha256 (hex) of the parameters and config (independent of file layout)."""
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for k, t in sorted(self.state_tensors().items()):
            h.update(k.encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    @property
    def content_hash(self) -> int:
        """The 64-bit identity bitstreams record: the registry sets it to the blake2b-64 of the model
        file; a model built in memory uses the first 64 bits of its `tensor_digest`."""
        h = self.__dict__.get("_content_hash")
        return int(self.tensor_digest()[:16], 16) if h is None else h

    @content_hash.setter
    def content_hash(self, value: int | None) -> None:
        self.__dict__["_content_hash"] = None if value is None else int(value)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dc_index={self.dc_index}, table={tuple(self.log_var.shape)}"


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
