"""The analytic Gaussian denoiser (DESIGN §3): images modelled as x ~ N(m, Σ).

Structure of Σ: a fixed orthonormal 3×3 colour transform P (PCA of RGB) decorrelates the colour
channels, y = Pᵀ(x − m); each decorrelated channel is stationary and modelled as diagonal in the
orthonormal 2-D DCT-II basis: the DCT coefficient (k_h, k_w) of channel c has variance
v_c(k_h, k_w; H, W) and all coefficients are independent.

Any image size: the variances are a function of continuous frequency, stored as a smooth table
``log v_c(log ρ, θ)`` over radial frequency ρ = |f| (cycles / pixel) and orientation θ, with
f = (k̃_h / 2H, k̃_w / 2W) and k̃ = max(k, κ). κ (``dc_index``) places the DCT's zero-frequency
rows/columns, whose basis function has a bandwidth ~1/(2N) around 0, at an effective frequency;
it is fitted by predicting smaller patch sizes. Below the table's lowest frequency the spectrum
continues as a power law ρ^(−γ_c), γ_c fitted per channel.

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

def _frequencies(h: int, w: int, dc_index: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log ρ, θ) [h, w] of the DCT coefficients of an h×w image."""
    kh = torch.arange(h, dtype=torch.float64, device=device).clamp(min=dc_index) / (2 * h)
    kw = torch.arange(w, dtype=torch.float64, device=device).clamp(min=dc_index) / (2 * w)
    fh, fw = kh[:, None].expand(h, w), kw[None, :].expand(h, w)
    return torch.log(torch.hypot(fh, fw)), torch.atan2(fh, fw)


def _interp_table(log_var: torch.Tensor, log_rho_lo: float, log_rho_hi: float, slope: torch.Tensor,
                  log_rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of log_var [C, R, T] (nodes uniform in log ρ ∈ [lo, hi], θ ∈ [0, π/2])
    at the points (log_rho, theta); power law −slope_c below lo, constant above hi."""
    c, r, t = log_var.shape
    u = (log_rho - log_rho_lo) / (log_rho_hi - log_rho_lo) * (r - 1)
    below = (log_rho_lo - log_rho).clamp(min=0)
    u = u.clamp(0, r - 1)
    v = (theta / (math.pi / 2) * (t - 1)).clamp(0, t - 1)
    i0 = u.floor().long().clamp(max=r - 2) if r > 1 else u.floor().long()
    j0 = v.floor().long().clamp(max=t - 2) if t > 1 else v.floor().long()
    fu, fv = u - i0, v - j0
    i1, j1 = (i0 + 1).clamp(max=r - 1), (j0 + 1).clamp(max=t - 1)
    flat = log_var.reshape(c, r * t)

    def at(i, j):
        return flat[:, (i * t + j).reshape(-1)].reshape((c,) + tuple(i.shape))

    val = (at(i0, j0) * (1 - fu) * (1 - fv) + at(i1, j0) * fu * (1 - fv)
           + at(i0, j1) * (1 - fu) * fv + at(i1, j1) * fu * fv)
    return val + slope.reshape(c, *([1] * below.ndim)) * below


def _smooth_table(log_rho: torch.Tensor, theta: torch.Tensor, log_var: torch.Tensor, nodes_r: torch.Tensor,
                  nodes_t: torch.Tensor, bw_r: float, bw_t: float) -> torch.Tensor:
    """Local-linear (Gaussian kernel) regression of scattered log-variances [C, M] onto the grid nodes.

    Local-linear rather than a plain kernel average: a steep spectrum (≈ ρ⁻²) and the table's edges would
    otherwise bias every node toward its neighbours' values."""
    dr = (log_rho[None, None, :] - nodes_r[:, None, None])  # [R, 1, M]
    dt = (theta[None, None, :] - nodes_t[None, :, None])  # [1, T, M]
    logw = -0.5 * ((dr / bw_r) ** 2 + (dt / bw_t) ** 2)  # [R, T, M]
    w = torch.softmax(logw, dim=-1)  # normalised weights; sparse regions fall back to the nearest points
    dr, dt = dr.expand_as(w), dt.expand_as(w)
    feats = torch.stack([torch.ones_like(w), dr, dt], dim=-1)  # [R, T, M, 3]
    gram = torch.einsum("rtm,rtmi,rtmj->rtij", w, feats, feats)
    gram = gram + 1e-9 * torch.eye(3, dtype=gram.dtype)  # a node with collinear neighbours stays solvable
    rhs = torch.einsum("rtm,rtmi,cm->crti", w, feats, log_var)
    coef = torch.linalg.solve(gram.expand(log_var.shape[0], *gram.shape), rhs.unsqueeze(-1)).squeeze(-1)
    return coef[..., 0]


# ----------------------------------------------------------------------------- the model

class GaussianDenoiser(torch.nn.Module):
    """Exact posterior-mean denoiser of a stationary Gaussian image model (see module docstring).

    Buffers (float64): ``mean`` [C], ``colour`` [C, C] (orthonormal, columns = decorrelated axes),
    ``log_var`` [C, R, T] (log variance table over log ρ × θ), ``slope`` [C] (low-frequency power-law
    exponent γ_c). Scalars: ``log_rho_lo``, ``log_rho_hi``, ``dc_index`` and a free-form ``fit_info``.
    """

    def __init__(self, mean, colour, log_var, slope, *, log_rho_lo: float, log_rho_hi: float, dc_index: float = 0.5,
                 fit_info: dict | None = None):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64)
        colour = torch.as_tensor(colour, dtype=torch.float64)
        log_var = torch.as_tensor(log_var, dtype=torch.float64)
        slope = torch.as_tensor(slope, dtype=torch.float64)
        c = mean.numel()
        if mean.shape != (c,) or colour.shape != (c, c):
            raise ValueError(f"need mean [C] and colour [C, C], got {tuple(mean.shape)} and {tuple(colour.shape)}")
        if log_var.ndim != 3 or log_var.shape[0] != c or slope.shape != (c,):
            raise ValueError(f"need log_var [C, R, T] and slope [C] with C={c}")
        if not torch.allclose(colour.T @ colour, torch.eye(c, dtype=torch.float64), atol=1e-6):
            raise ValueError("the colour transform must be orthonormal")
        if not (torch.isfinite(log_var).all() and torch.isfinite(mean).all() and torch.isfinite(slope).all()):
            raise ValueError("model parameters must be finite")
        if not (math.isfinite(log_rho_lo) and math.isfinite(log_rho_hi) and log_rho_lo < log_rho_hi):
            raise ValueError("need finite log_rho_lo < log_rho_hi")
        if not 0 < dc_index <= 1:
            raise ValueError(f"dc_index must be in (0, 1], got {dc_index}")
        self.register_buffer("mean", mean)
        self.register_buffer("colour", colour)
        self.register_buffer("log_var", log_var)
        self.register_buffer("slope", slope)
        self.log_rho_lo, self.log_rho_hi, self.dc_index = float(log_rho_lo), float(log_rho_hi), float(dc_index)
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
            log_rho, theta = _frequencies(height, width, self.dc_index, self.log_var.device)
            v = torch.exp(_interp_table(self.log_var.double(), self.log_rho_lo, self.log_rho_hi, self.slope.double(),
                                        log_rho, theta))
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
                  n_rho: int = 16, n_theta: int = 3) -> GaussianDenoiser:
        """An isotropic power-law model v_c(ρ) = variance_at[c] · (ρ / ref_frequency)^(−exponent), for tests
        and experiments (no data needed)."""
        c = len(variance_at)
        lo, hi = math.log(1e-3), math.log(math.sqrt(0.5))
        nodes = torch.linspace(lo, hi, n_rho, dtype=torch.float64)
        base = torch.log(torch.as_tensor(variance_at, dtype=torch.float64))
        log_var = base[:, None, None] - exponent * (nodes - math.log(ref_frequency))[None, :, None]
        log_var = log_var.expand(c, n_rho, n_theta).clone()
        colour = torch.eye(c, dtype=torch.float64) if colour is None else colour
        return cls(mean, colour, log_var, torch.full((c,), float(exponent), dtype=torch.float64),
                   log_rho_lo=lo, log_rho_hi=hi, dc_index=dc_index,
                   fit_info={"source": "power_law", "exponent": exponent, "variance_at": list(variance_at),
                             "ref_frequency": ref_frequency})

    @classmethod
    def fit(cls, images_or_patches, *, patch_size: int = 64, num_patches: int = 20000, seed: int = 0,
            n_rho: int = 24, n_theta: int = 7, dc_candidates=tuple(k / 20 for k in range(2, 21)),
            fit_info: dict | None = None) -> GaussianDenoiser:
        """Fit mean, colour PCA and the DCT spectrum on image patches.

        images_or_patches: a float tensor [N, C, P, P] of patches in [-1, 1], or a sequence of images
        (CHW float tensors in [-1, 1], HWC uint8 arrays or PIL images) from which `num_patches` random
        patch_size² patches are cut (uniform positions, random horizontal flips; seeded).
        """
        patches = _collect_patches(images_or_patches, patch_size, num_patches, seed)
        n, c, p, _ = patches.shape
        x = patches.double()
        mean = x.mean(dim=(0, 2, 3))
        flat = (x - mean[None, :, None, None]).permute(1, 0, 2, 3).reshape(c, -1)
        cov = flat @ flat.T / flat.shape[1]
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        colour = evecs[:, order]
        # Deterministic signs: the largest-magnitude entry of each axis is positive.
        idx = colour.abs().argmax(dim=0)
        colour = colour * torch.sign(colour[idx, torch.arange(c)])[None, :]

        def measured(size: int) -> torch.Tensor:
            acc = torch.zeros(c, size, size, dtype=torch.float64)
            for start in range(0, n, 512):  # top-left size² sub-patches, in batches
                xb = x[start:start + 512, :, :size, :size] - mean[None, :, None, None]
                y = torch.einsum("cd,nchw->ndhw", colour, xb)
                acc += dct2(y).pow(2).sum(0)
            return acc / n

        sizes = [s for s in (p, p // 2, p // 4) if s >= 4]
        meas = {s: measured(s) for s in sizes}
        table, slope, lo, hi = cls._spectrum_table(meas[p], n_rho, n_theta)
        # κ places the zero-frequency rows/columns (k = 0) on the continuous spectrum; choose it by
        # predicting the measured variances of those coefficients at the fit size and smaller sizes.
        best = None
        for kappa in dc_candidates:
            model = cls(mean, colour, table, slope, log_rho_lo=lo, log_rho_hi=hi, dc_index=kappa)
            err = [(torch.log(model.variances(s, s)) - torch.log(meas[s]))[:, (torch.arange(s)[:, None] == 0)
                                                                             | (torch.arange(s)[None, :] == 0)]
                   for s in sizes]
            score = float(torch.cat([e.flatten() for e in err]).pow(2).mean())
            if best is None or score < best[0]:
                best = (score, kappa, model)
        _, kappa, model = best
        errs = {s: float((torch.log(model.variances(s, s)) - torch.log(meas[s])).abs().mean()) for s in sizes}
        info = {"source": "fit", "patch_size": p, "num_patches": n, "seed": seed, "n_rho": n_rho,
                "n_theta": n_theta, "dc_index": kappa,
                "mean_abs_log_error_by_size": {str(k): v for k, v in errs.items()},
                "low_frequency_exponent": [float(v) for v in slope],
                "pixel_variance": [float(v) for v in torch.diag(cov)]}
        info.update(fit_info or {})
        model.fit_info = info
        return model

    @staticmethod
    def _spectrum_table(var: torch.Tensor, n_rho: int, n_theta: int):
        """Smooth log-variance table over (log ρ, θ) from the measured variances [C, P, P] of the coefficients
        with k_h, k_w ≥ 1 (whose frequencies k / 2P are well defined), plus the low-frequency exponent."""
        c, p, _ = var.shape
        log_rho, theta = _frequencies(p, p, 1.0)
        ac = torch.zeros(p, p, dtype=torch.bool)
        ac[1:, 1:] = True
        log_rho, theta, lv = log_rho[ac], theta[ac], torch.log(var.clamp(min=1e-12))[:, ac]
        lo, hi = float(log_rho.min()), float(log_rho.max())
        nodes_r = torch.linspace(lo, hi, n_rho, dtype=torch.float64)
        nodes_t = torch.linspace(0, math.pi / 2, n_theta, dtype=torch.float64)
        bw_r = (hi - lo) / (n_rho - 1) * 0.75
        bw_t = (math.pi / 2) / max(n_theta - 1, 1) * 0.75
        table = _smooth_table(log_rho, theta, lv, nodes_r, nodes_t, bw_r, bw_t)
        # Low-frequency power-law exponent γ: least squares of log v on log ρ over the lowest decade.
        sel = log_rho < lo + math.log(10.0)
        xr = log_rho[sel] - log_rho[sel].mean()
        slope = -((lv[:, sel] - lv[:, sel].mean(1, keepdim=True)) * xr).sum(1) / (xr * xr).sum()
        return table, slope.clamp(0.0, 4.0), lo, hi

    # ------------------------------------------------------------------ safetensors I/O
    def config(self) -> dict:
        return {"class": "gaussian", "version": FORMAT_VERSION, "channels": self.channels,
                "log_rho_lo": self.log_rho_lo, "log_rho_hi": self.log_rho_hi, "dc_index": self.dc_index,
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
                   log_rho_lo=float(config["log_rho_lo"]), log_rho_hi=float(config["log_rho_hi"]),
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

    def content_hash(self) -> str:
        """sha256 of the parameters and config (independent of file layout)."""
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for k, t in sorted(self.state_tensors().items()):
            h.update(k.encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dc_index={self.dc_index}, table={tuple(self.log_var.shape)}"


# ----------------------------------------------------------------------------- data

def _image_to_tensor(img) -> torch.Tensor:
    """CHW float64 in [-1, 1] from a CHW float tensor, an HWC uint8 array or a PIL image."""
    if isinstance(img, torch.Tensor):
        if img.ndim != 3 or not img.is_floating_point():
            raise ValueError("image tensors must be CHW floating point in [-1, 1]")
        return img.double()
    import numpy as np

    arr = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError("image arrays must be HWC uint8")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).double() / 127.5 - 1.0


def _collect_patches(source, patch_size: int, num_patches: int, seed: int) -> torch.Tensor:
    if isinstance(source, torch.Tensor) and source.ndim == 4:
        if source.shape[-1] != source.shape[-2]:
            raise ValueError("patches must be square")
        return source.double()
    images = [_image_to_tensor(im) for im in source]
    images = [im for im in images if im.shape[1] >= patch_size and im.shape[2] >= patch_size]
    if not images:
        raise ValueError(f"no image is at least {patch_size}x{patch_size}")
    g = torch.Generator().manual_seed(seed)
    # Patches per image proportional to its area, so large photos are not under-represented.
    areas = torch.tensor([im.shape[1] * im.shape[2] for im in images], dtype=torch.float64)
    which = torch.multinomial(areas / areas.sum(), num_patches, replacement=True, generator=g)
    out = torch.empty(num_patches, images[0].shape[0], patch_size, patch_size, dtype=torch.float32)
    for i, k in enumerate(which.tolist()):
        im = images[k]
        top = int(torch.randint(0, im.shape[1] - patch_size + 1, (1,), generator=g))
        left = int(torch.randint(0, im.shape[2] - patch_size + 1, (1,), generator=g))
        patch = im[:, top:top + patch_size, left:left + patch_size]
        if int(torch.randint(0, 2, (1,), generator=g)):
            patch = patch.flip(-1)
        out[i] = patch.float()
    return out
