"""The analytic Gaussian denoiser (docs/design.md §3): images modelled as x ~ N(m, Σ).

Σ is a colour PCA followed, per decorrelated channel, by a stationary spectrum diagonal in the
orthonormal DCT basis (`models.gaussian_spectrum`: the DCT, the spectrum table, fitting). This
module is the model: the exact posterior-mean denoiser (Wiener filter), prior sampling, and the
closed-form theory for an H×W image — MMSE, I(X; Z_λ), the expected per-step KL, D(R) and R(D) —
computed by `diffusion.rd_theory` on the model's variances; plus safetensors I/O.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..diffusion import rd_theory
from ..diffusion.vp import alpha_sigma
from .gaussian_spectrum import (  # noqa: F401  (dct2/idct2/dct_matrix: re-exported for older callers)
    _PatchSource,
    _spectrum,
    dct2,
    dct_matrix,
    fit_spectrum,
    idct2,
    power_law_table,
)

CONFIG_KEY = "fastdiffc_config"
FORMAT_VERSION = 1


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
        # The exact filter stays float64 even inside a bfloat16 autocast region (the hybrid model runs
        # its UNet part there): rounding its DCTs would cost rate for no speed (they are cheap).
        with torch.autocast(z.device.type, enabled=False):
            lam = torch.as_tensor(logsnr, dtype=torch.float64, device=z.device).reshape(-1).expand(n)
            a, s = alpha_sigma(lam)
            v = self.variances(h, w)
            coeffs = self._to_coeffs(z.double(), a)
            gain = rd_theory.wiener_gain(v, torch.exp(lam)[:, None, None, None], a[:, None, None, None])
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
        return rd_theory.mmse(self.variances(height, width), logsnr)

    def mutual_information(self, logsnr: float, height: int, width: int) -> float:
        """I(X; Z_λ) = ½ Σ log(1 + e^λ v) in nats."""
        return rd_theory.mutual_information(self.variances(height, width), logsnr)

    def expected_step_kl(self, logsnr_from: float, logsnr_to: float, height: int, width: int) -> float:
        """E_x,z_s KL[q(z_t | z_s, x) ‖ q(z_t | z_s, x̂0(z_s))] = ½ (SNR_t − SNR_s) · mmse(λ_s), nats."""
        return rd_theory.expected_step_kl(self.variances(height, width), logsnr_from, logsnr_to)

    def distortion_rate(self, bits: float, height: int, width: int) -> float:
        """Shannon D(R) (reverse water-filling): the least mean squared error per dimension at `bits`
        for the whole C×H×W image."""
        v = self.variances(height, width)
        if bits < 0:
            raise ValueError("rate must be >= 0")
        return rd_theory.distortion_rate(v, bits / v.numel())

    def rate_distortion(self, mse: float, height: int, width: int) -> float:
        """Shannon R(D) in bits for the whole image at mean squared error `mse` per dimension."""
        v = self.variances(height, width)
        return rd_theory.rate_distortion(v, mse) * v.numel()

    # ------------------------------------------------------------------ construction
    @classmethod
    def power_law(cls, variance_at: tuple[float, ...] = (0.05, 0.01, 0.005), exponent: float = 2.0, *,
                  mean=(0.0, 0.0, 0.0), colour=None, ref_frequency: float = 0.05, dc_index: float = 0.5,
                  table_size: int = 32) -> GaussianDenoiser:
        """An isotropic power-law model v_c(f) = variance_at[c] · (|f| / ref_frequency)^(−exponent), for
        tests and experiments (no data needed)."""
        c = len(variance_at)
        log_var, slope = power_law_table(variance_at, exponent, ref_frequency, dc_index, table_size)
        colour = torch.eye(c, dtype=torch.float64) if colour is None else colour
        return cls(mean, colour, log_var, slope, dc_index=dc_index,
                   fit_info={"source": "power_law", "exponent": exponent, "variance_at": list(variance_at),
                             "ref_frequency": ref_frequency})

    @classmethod
    def fit(cls, images_or_patches, *, patch_size: int = 64, num_patches: int = 20000, seed: int = 0,
            dc_candidates=tuple(k / 40 for k in range(1, 41)),
            fit_info: dict | None = None) -> GaussianDenoiser:
        """The model fitted on image patches (`gaussian_spectrum.fit_spectrum`; `fit_info` is added
        to the fit's record)."""
        f = fit_spectrum(images_or_patches, patch_size=patch_size, num_patches=num_patches, seed=seed,
                         dc_candidates=dc_candidates)
        return cls(f.mean, f.colour, f.log_var, f.slope, dc_index=f.dc_index, fit_info={**f.info, **(fit_info or {})})

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
