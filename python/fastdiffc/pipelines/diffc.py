"""DiffC (Theis et al. 2022, "Lossy Compression with Gaussian Diffusion"), DESIGN §4.

The sender never transforms the image. It communicates a sample of the noisy image
z_λ ~ q(z_λ | x), one reverse-diffusion step at a time, each step by reverse channel
coding (RCC) against the model's own prediction:

    z_0 ~ N(0, I) from the shared seed                         (0 bits)
    for k = 1..K (λ_{k-1} < λ_k on the shared grid):
        x̂0  = denoiser(z_{k-1}, λ_{k-1})                        (both sides)
        μ_Q(·) = c_z z_{k-1} + c_x · (x or x̂0),  σ_Q          (q(z_k | z_{k-1}, x), DESIGN §3)
        μ   = (μ_Q(x) − μ_Q(x̂0)) / σ_Q = c_x (x − x̂0) / σ_Q    (sender only)
        ε   = RCC sample of N(μ, I) coded against N(0, I)       (segment k of the file)
        z_k = μ_Q(x̂0) + σ_Q ε                                  (both sides, bit for bit)

The sender continues from the *communicated* z_k, exactly as the receiver will. Every
step is one container segment, so any prefix of whole steps decodes: the receiver
replays the steps it has, then reconstructs x from z_K by the probability-flow ODE
(`flow`, DiffC-F), ancestral sampling (`ancestral`, DiffC-A) or the denoiser mean
(`denoise`).

Determinism: the RCC decoder needs only integers from the bitstream (chunk counts,
indices) plus the seed and step, so a receiver whose float maths differed slightly
would drift by rounding error, never desynchronise. On one machine the receiver's
z_K equals the sender's bit for bit: both run the same `_model_step` on the same
dtype, and the models were measured thread-count invariant (see base.model_threads).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from .. import rcc
from ..container import Header, overhead_bytes, read, write
from ..diffusion.schedules import get_schedule
from ..diffusion.vp import posterior_coefficients
from ..errors import FormatError, ModelMismatchError, UnknownPipelineError
from ..image_io import prepare_image, tensor_to_pil
from .base import Codec, model_identity, model_threads

SCHEDULE_IDS = {"linear": 0, "cosine": 1}
SCHEME_IDS = {"pfr": 0, "importance": 1}
DTYPE_IDS = {"float32": 0, "float64": 1}
METHODS = ("flow", "ancestral", "denoise")


def _f32(v: float) -> float:
    """Round to the nearest float32: the header stores float32, so both sides use this value."""
    return float(np.float32(v))


@dataclass(frozen=True)
class DiffCSettings:
    """Everything sender and receiver share besides the model; all of it goes into the header.

    The λ grid is `schedule` from `logsnr_min` (≈ pure noise) to `logsnr_max` in
    `grid_steps` steps; the sender transmits a prefix of it. The λ end points are stored
    as float32 and used as stored; the RCC margin is a multiple of 1/16 bit (an integer).
    """

    # Defaults measured on photos (notes in the issue report): a linear log-SNR grid with
    # Δλ = 0.5 (halving it buys ~0.2 dB for twice the steps); λ_0 = −6 rather than −15 because
    # every step costs 2^b · D candidate draws whatever it carries, and the steps below −6
    # carry < 0.01 bpp (z_0 ~ N(0, I) then lacks a 0.05·x component; the protocol stays
    # exact and later steps absorb it); b = 10 is 4x cheaper than 12 for ~0.1 dB.
    seed: int = 0
    schedule: str = "linear"
    logsnr_min: float = -6.0
    logsnr_max: float = 10.0
    grid_steps: int = 32
    bits_per_chunk: int = 10
    margin: float = 2.0
    scheme: str = "pfr"
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 1 << 64:
            raise ValueError(f"seed must be an unsigned 64-bit integer, got {self.seed!r}")
        if self.schedule not in SCHEDULE_IDS:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {sorted(SCHEDULE_IDS)}")
        if self.dtype not in DTYPE_IDS:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_IDS)}, got {self.dtype!r}")
        if not 1 <= int(self.grid_steps) <= 100_000:
            raise ValueError(f"grid_steps must be in 1..100000, got {self.grid_steps}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "grid_steps", int(self.grid_steps))
        object.__setattr__(self, "rcc_settings", rcc.RCCSettings.create(self.bits_per_chunk, self.margin, self.scheme))
        for name in ("logsnr_min", "logsnr_max"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite")
            object.__setattr__(self, name, _f32(v))
        get_schedule(self.schedule, self.logsnr_min, self.logsnr_max)  # validates the end points

    # -- header serialisation ------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from ..container import put_varint

        out = bytearray()
        put_varint(out, self.seed)
        out.append(SCHEDULE_IDS[self.schedule])
        out += struct.pack("<ff", self.logsnr_min, self.logsnr_max)
        put_varint(out, self.grid_steps)
        out.append(self.rcc_settings.bits_per_chunk)
        put_varint(out, self.rcc_settings.margin_sixteenths)
        out.append(SCHEME_IDS[self.scheme])
        out.append(DTYPE_IDS[self.dtype])
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> DiffCSettings:
        from ..container import Reader

        r = Reader(data, what="DiffC parameters")
        seed = r.varint("seed")
        sched = r.u8("schedule")
        lo, hi = struct.unpack("<ff", r.take(8, "log-SNR range"))
        grid_steps = r.varint("grid steps")
        bits = r.u8("bits per chunk")
        margin = r.varint("margin") / rcc.MARGIN_UNITS
        scheme, dtype = r.u8("scheme"), r.u8("dtype")
        if not r.done():
            raise FormatError("malformed DiffC parameters: trailing bytes")
        names = [(SCHEDULE_IDS, sched, "schedule"), (SCHEME_IDS, scheme, "RCC scheme"), (DTYPE_IDS, dtype, "dtype")]
        decoded = []
        for table, value, what in names:
            inverse = {v: k for k, v in table.items()}
            if value not in inverse:
                raise FormatError(f"unknown {what} id {value} in DiffC parameters")
            decoded.append(inverse[value])
        try:
            return cls(seed, decoded[0], lo, hi, grid_steps, bits, margin, decoded[1], decoded[2])
        except ValueError as e:
            raise FormatError(f"invalid DiffC parameters: {e}") from None

    # -- derived -------------------------------------------------------------------------
    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def grid(self) -> list[float]:
        """λ_0 < λ_1 < … < λ_S as Python floats (float64), the same on both sides."""
        sched = get_schedule(self.schedule, self.logsnr_min, self.logsnr_max)
        return [float(v) for v in sched.grid(self.grid_steps, dtype=torch.float64)]

    def rcc_kwargs(self) -> dict:
        return dict(seed=self.seed, settings=self.rcc_settings)


# ------------------------------------------------------------------------------ shared maths


def initial_latent(shape: Sequence[int], settings: DiffCSettings) -> torch.Tensor:
    """z_0 ~ N(0, I) drawn from the shared seed (costs no bits). numpy's PCG64 + ziggurat
    is integer-driven and the same on every platform and thread count."""
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([settings.seed, 0x44696666])))
    z = gen.standard_normal(int(np.prod(shape)), dtype=np.float64).reshape(tuple(shape))
    return torch.from_numpy(z).to(settings.torch_dtype)


def _coefficients(lam_from: float, lam_to: float) -> tuple[float, float, float]:
    c_z, c_x, std = posterior_coefficients(torch.tensor(lam_from, dtype=torch.float64),
                                           torch.tensor(lam_to, dtype=torch.float64))
    return float(c_z), float(c_x), float(std)


def _model_step(denoiser, z: torch.Tensor, lam_from: float, lam_to: float):
    """(x̂0, μ_Q(x̂0), σ_Q, c_x) for the step λ_from → λ_to: identical code for both sides."""
    c_z, c_x, std = _coefficients(lam_from, lam_to)
    with model_threads():
        x_hat = denoiser(z, torch.full((z.shape[0],), lam_from, dtype=z.dtype)).to(z.dtype)
    return x_hat, c_z * z + c_x * x_hat, std, c_x


def _apply_sample(mean_p: torch.Tensor, std: float, eps: np.ndarray) -> torch.Tensor:
    return mean_p + std * torch.from_numpy(np.asarray(eps, dtype=np.float32).reshape(mean_p.shape)).to(mean_p.dtype)


@dataclass
class Encoding:
    """The result of `encode`: one RCC payload per step, and what the receiver will hold."""

    segments: list[bytes]
    z: torch.Tensor  # z_K, the communicated latent (bit-identical to the receiver's)
    logsnrs: list[float]  # λ_0 .. λ_K
    kl_bits: list[float] = field(default_factory=list)  # Σ KL of each step (the ideal rate)
    chunks: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.segments)


def encode(denoiser, x: torch.Tensor, settings: DiffCSettings, *, steps: int | None = None,
           stop: Callable[[Encoding], bool] | None = None, backend: str = "auto", progress: bool = False,
           on_step: Callable[[int, torch.Tensor], None] | None = None) -> Encoding:
    """Run the DiffC sender on x (NCHW in [-1, 1], N = 1).

    Stops after `steps` steps, or after the first step at which `stop(encoding_so_far)` is
    true, or at the end of the grid. `on_step(k, z_k)` sees every communicated latent.
    """
    grid = settings.grid()
    max_steps = len(grid) - 1
    if steps is not None and not 1 <= steps <= max_steps:
        raise ValueError(f"steps must be in 1..{max_steps} (the grid has {max_steps} steps), got {steps}")
    n_steps = max_steps if steps is None else steps
    x = x.to(settings.torch_dtype)
    z = initial_latent(x.shape, settings)
    enc = Encoding([], z, [grid[0]])
    bar = _bar(n_steps, progress, "encode")
    for k in range(1, n_steps + 1):
        x_hat, mean_p, std, c_x = _model_step(denoiser, z, grid[k - 1], grid[k])
        mu = ((c_x / std) * (x.to(torch.float64) - x_hat.to(torch.float64))).reshape(-1).to(torch.float32).numpy()
        coded = rcc.encode(mu, step=k, backend=backend, **settings.rcc_kwargs())
        z = _apply_sample(mean_p, std, coded.sample)
        enc.segments.append(bytes(coded.payload))
        enc.kl_bits.append(float(coded.kl_bits))
        enc.chunks.append(int(coded.chunks))
        enc.logsnrs.append(grid[k])
        enc.z = z
        if on_step is not None:
            on_step(k, z)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(bytes=sum(map(len, enc.segments)))
        if stop is not None and stop(enc):
            break
    if bar is not None:
        bar.close()
    return enc


def replay(denoiser, segments: Sequence[bytes], shape: Sequence[int], settings: DiffCSettings, *,
           backend: str = "auto", progress: bool = False,
           on_step: Callable[[int, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, float]:
    """The DiffC receiver: replay the transmitted steps; returns (z_K, λ_K)."""
    grid = settings.grid()
    if len(segments) > len(grid) - 1:
        raise FormatError(f"{len(segments)} steps in the file but the grid has only {len(grid) - 1}")
    z = initial_latent(shape, settings)
    dim = int(np.prod(shape))
    bar = _bar(len(segments), progress, "decode")
    for k, payload in enumerate(segments, start=1):
        _, mean_p, std, _ = _model_step(denoiser, z, grid[k - 1], grid[k])
        eps = rcc.decode(payload, dim, step=k, backend=backend, **settings.rcc_kwargs())
        z = _apply_sample(mean_p, std, eps)
        if on_step is not None:
            on_step(k, z)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return z, grid[len(segments)]


def reconstruction_grid(settings: DiffCSettings, logsnr: float, steps: int) -> list[float]:
    """λ values from the communicated λ_K to the clean end of the schedule, `steps` steps
    evenly spaced in the schedule's time (so a cosine schedule refines both ends)."""
    if logsnr >= settings.logsnr_max or steps < 1:
        return [logsnr]
    sched = get_schedule(settings.schedule, settings.logsnr_min, settings.logsnr_max)
    t_k = float(sched.t_of_logsnr(torch.tensor(logsnr, dtype=torch.float64)))
    lams = [float(v) for v in sched.logsnr(torch.linspace(t_k, 0.0, steps + 1, dtype=torch.float64))]
    lams[0] = logsnr
    return lams


def check_flow_offset(offset: float) -> float:
    offset = float(offset)
    if not (math.isfinite(offset) and offset >= 0):
        raise ValueError(f"the flow log-SNR offset must be a finite number >= 0, got {offset}")
    return offset


def flow_start(settings: DiffCSettings, logsnr: float, offset: float) -> float:
    """Where the flow ODE starts for a z communicated at λ_K = `logsnr`: λ_K − offset, kept
    inside the schedule; the clean end (λ_K >= logsnr_max, nothing left to integrate) is kept."""
    offset = check_flow_offset(offset)
    if offset == 0 or logsnr >= settings.logsnr_max:
        return logsnr
    return max(logsnr - offset, float(settings.logsnr_min))


def reconstruct(denoiser, z: torch.Tensor, logsnr: float, settings: DiffCSettings, *, method: str = "flow",
                recon_steps: int = 20, solver: str = "heun", flow_logsnr_offset: float = 0.0,
                progress: bool = False) -> torch.Tensor:
    """x̂ from the communicated z at λ_K: flow ODE, ancestral sampling (seeded) or denoiser mean.

    `flow_logsnr_offset` δ starts the flow ODE at λ_K − δ, i.e. treats z as slightly noisier
    than nominal. With finitely many RCC candidates z is not an exact sample of q(z_K | x), and
    on photos δ ≈ 0.25 gains 0.3–0.5 dB (DiffCCodec's default; 0 is the paper's decoder).
    """
    from ..diffusion import samplers

    if method not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}; choose from {METHODS}")
    with model_threads():
        if method == "denoise":
            return denoiser(z, torch.full((z.shape[0],), logsnr, dtype=z.dtype)).to(z.dtype)
        if method == "flow":
            logsnr = flow_start(settings, logsnr, flow_logsnr_offset)
        lams = reconstruction_grid(settings, logsnr, recon_steps)
        gen = None
        if method == "ancestral":
            gen = torch.Generator().manual_seed(settings.seed ^ 0x5EED_A5CE)
        return samplers.sample(denoiser, z, lams, method=method, generator=gen, solver=solver, progress=progress)


def _bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def settings_with(settings: DiffCSettings, **changes) -> DiffCSettings:
    return replace(settings, **changes)


# ------------------------------------------------------------------------------ the codec (images, files, models)

DEFAULT_BPP = 0.25
# Flow decoding starts at λ_K − 0.25. On the 7 held-out photos (≤ 256 px, the shipped hybrid
# model), over no offset at steps 10 / 13 / 16 / 18: δ = 0.25 +0.37 / +0.59 / +0.52 / +0.45 dB,
# δ = 0.15 +0.36 / +0.58 / +0.47 / +0.40, δ = 0.35 +0.21 / +0.41 / +0.43 / +0.40 (the previous
# UNet peaked at 0.2–0.3 too). The denoiser mean gets worse with any offset, so it keeps none.
DEFAULT_FLOW_LOGSNR_OFFSET = 0.25


class DiffCCodec(Codec):
    """DiffC behind the Codec interface: images in, .fdc bytes out, and back.

    `model`: None (the default model for compressing; the model named in the file for
    decompressing), a registry name, or a Denoiser object with `.name` / `.content_hash`.
    `settings`: fields of DiffCSettings (seed, grid_steps, bits_per_chunk, ...), plus the
    decoder-side `recon_steps`, `solver`, `flow_logsnr_offset`, `backend` and `progress`. The
    flow ODE defaults to DPM-Solver++(2M) with 20 steps: one model call per step, and on photos
    within 0.01 dB of Heun with 50 steps (measured). It starts at λ_K − `flow_logsnr_offset`
    (see `reconstruct`; the default was chosen on the held-out photos, never the evaluation ones).
    """

    pipeline = "diffc"

    def __init__(self, model=None, *, recon_steps: int = 20, solver: str = "dpm++2m",
                 flow_logsnr_offset: float = DEFAULT_FLOW_LOGSNR_OFFSET, backend: str = "auto",
                 progress: bool = False, **settings):
        self._model_arg = model
        self._model = None if model is None or isinstance(model, str) else model
        self.settings = DiffCSettings(**settings)
        self.recon_steps = int(recon_steps)
        self.solver = solver
        self.flow_logsnr_offset = check_flow_offset(flow_logsnr_offset)  # now, not at decode time
        self.backend = backend
        self.progress = progress

    # -- models --------------------------------------------------------------------------
    def model_for_encoding(self):
        if self._model is None:
            from ..models.registry import load_model

            self._model = load_model(self._model_arg or default_model_name())
        return self._model

    def model_for_file(self, header: Header):
        """The model the file was written with: ours if its hash matches, else loaded by name."""
        if self._model is None and self._model_arg is None:
            from ..models.registry import load_model

            model = load_model(header.model_name)
        else:
            model = self.model_for_encoding()
        name, h = model_identity(model)
        if h != header.model_hash:
            raise ModelMismatchError(
                f"the file was written with model {header.model_name!r} (hash {header.model_hash:016x}); "
                f"the given model is {name!r} (hash {h:016x})"
            )
        return model

    # -- compress ------------------------------------------------------------------------
    def encode_image(self, image, *, bpp: float | None = None, steps: int | None = None) -> tuple[bytes, Encoding]:
        """`compress`, also returning the sender's Encoding (per-step KL, chunks, final z)."""
        if bpp is not None and steps is not None:
            raise ValueError("give either bpp or steps, not both")
        if bpp is None and steps is None:
            bpp = DEFAULT_BPP
        if bpp is not None and not (math.isfinite(bpp) and bpp > 0):
            raise ValueError(f"bpp must be a positive number, got {bpp}")
        prep = prepare_image(image)
        model = self.model_for_encoding()
        name, h = model_identity(model)
        header = Header("diffc", name, h, prep.height, prep.width, prep.channels, self.settings.to_bytes())
        stop = None
        if bpp is not None:
            target = bpp * prep.height * prep.width / 8.0

            def stop(enc):  # stop once the whole file reaches the target size
                lengths = [len(s) for s in enc.segments]
                return overhead_bytes(header, lengths) + sum(lengths) >= target

        enc = encode(model, prep.tensor, self.settings, steps=steps, stop=stop, backend=self.backend,
                     progress=self.progress)
        return write(header, enc.segments), enc

    def compress(self, image, *, bpp: float | None = None, steps: int | None = None) -> bytes:
        return self.encode_image(image, bpp=bpp, steps=steps)[0]

    # -- decompress ----------------------------------------------------------------------
    def open(self, data: bytes, *, allow_truncated: bool = False):
        """Parse a DiffC file: (FdcFile, DiffCSettings, model)."""
        f = read(data, allow_truncated=allow_truncated)
        if f.header.pipeline != "diffc":
            raise UnknownPipelineError(
                f"this file was written by the {f.header.pipeline!r} pipeline; use load_codec({f.header.pipeline!r})"
            )
        settings = DiffCSettings.from_bytes(f.header.params)
        return f, settings, self.model_for_file(f.header)

    def decode_latent(self, data: bytes, *, max_steps: int | None = None, allow_truncated: bool = False):
        """Replay the steps: (z_K, λ_K, FdcFile, settings, model)."""
        f, settings, model = self.open(data, allow_truncated=allow_truncated)
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        segments = f.segments if max_steps is None else f.segments[:max_steps]
        shape = (1, 3, f.header.height, f.header.width)
        z, lam = replay(model, segments, shape, settings, backend=self.backend, progress=self.progress)
        return z, lam, f, settings, model

    def decompress(self, data: bytes, *, method: str = "flow", max_steps: int | None = None,
                   allow_truncated: bool = False) -> Image.Image:
        if method not in METHODS:
            raise ValueError(f"unknown reconstruction method {method!r}; choose from {METHODS}")
        z, lam, f, settings, model = self.decode_latent(data, max_steps=max_steps, allow_truncated=allow_truncated)
        x = reconstruct(model, z, lam, settings, method=method, recon_steps=self.recon_steps, solver=self.solver,
                        flow_logsnr_offset=self.flow_logsnr_offset,
                        progress=self.progress)
        return tensor_to_pil(x, f.header.channels)

    def decompress_progressive(self, data: bytes, steps: Sequence[int], *, method: str = "flow",
                               allow_truncated: bool = False) -> dict[int, Image.Image]:
        """Reconstructions after each of `steps` transmitted steps, replaying the file once
        (an RD curve from one encode: pair with container.step_file_sizes)."""
        if method not in METHODS:
            raise ValueError(f"unknown reconstruction method {method!r}; choose from {METHODS}")
        f, settings, model = self.open(data, allow_truncated=allow_truncated)
        wanted = sorted(set(int(k) for k in steps))
        if wanted and not 0 <= wanted[0] <= wanted[-1] <= len(f.segments):
            raise ValueError(f"steps must lie in 0..{len(f.segments)}")
        latents = {}
        shape = (1, 3, f.header.height, f.header.width)

        def keep(k, z):
            if k in wanted:
                latents[k] = z

        if 0 in wanted:
            latents[0] = initial_latent(shape, settings)
        n = wanted[-1] if wanted else 0
        replay(model, f.segments[:n], shape, settings, backend=self.backend, progress=self.progress, on_step=keep)
        grid = settings.grid()
        out = {}
        for k in wanted:
            x = reconstruct(model, latents[k], grid[k], settings, method=method, recon_steps=self.recon_steps,
                            solver=self.solver, flow_logsnr_offset=self.flow_logsnr_offset)
            out[k] = tensor_to_pil(x, f.header.channels)
        return out


def default_model_name() -> str:
    """DiffC's shipped default model (python/fastdiffc/weights/defaults.json)."""
    from ..models.registry import default_model_name as registry_default

    return registry_default("diffc")
