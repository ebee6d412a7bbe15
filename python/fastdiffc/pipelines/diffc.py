"""DiffC (Theis et al. 2022, "Lossy Compression with Gaussian Diffusion"), docs/design.md §4.

The sender never transforms the image. It communicates a sample of the noisy image
z_λ ~ q(z_λ | x), one reverse-diffusion step at a time, each step by reverse channel
coding (RCC) against the model's own prediction:

    z_0 ~ N(0, I) from the shared seed                         (0 bits)
    for k = 1..K (λ_{k-1} < λ_k on the shared grid):
        x̂0  = denoiser(z_{k-1}, λ_{k-1})                        (both sides)
        μ_Q(·) = c_z z_{k-1} + c_x · (x or x̂0),  σ_Q          (q(z_k | z_{k-1}, x), docs/design.md §3)
        μ   = (μ_Q(x) − μ_Q(x̂0)) / σ_Q = c_x (x − x̂0) / σ_Q    (sender only)
        ε   = RCC sample of N(μ, I) coded against N(0, I)       (segment k of the file)
        z_k = μ_Q(x̂0) + σ_Q ε                                  (both sides, bit for bit)

The sender continues from the *communicated* z_k, exactly as the receiver will. Every
step is one container segment, so any prefix of whole steps decodes: the receiver
replays the steps it has, then reconstructs x from z_K by the probability-flow ODE
(`flow`, DiffC-F), ancestral sampling (`ancestral`, DiffC-A) or the denoiser mean
(`denoise`).

Shared randomness (parameter block version 2): z_0 and the ancestral sampler's noise are
Philox4x32-10 normal streams (`rcc.normal_stream`, domains 3 and 4; RCC itself uses 0..2),
so they are the same bits on every platform, library version and backend. Files whose
parameter block is version 1 (written before container v2) drew z_0 from numpy's PCG64 and
the sampling noise from a torch.Generator; they still decode through that path.

Determinism: the RCC decoder needs only integers from the bitstream (chunk counts,
indices) plus the seed and step, so a receiver whose float maths differed slightly
would drift by rounding error, never desynchronise. On one machine and thread count the
receiver's z_K equals the sender's bit for bit: both run the same `_model_step` in the same
precision. Model outputs drift slightly with the thread count (docs/design.md §11;
FASTDIFFC_MODEL_THREADS pins it, see base.model_threads).

Precision (docs/design.md §4, `precision.py`): the model calls run in the file's precision —
float32, bfloat16 (autocast; z, μ, the RCC and the ODE stay float32) or float64 — recorded in
the header; the receiver uses the header's by default. A receiver told to compute in the other
of float32 / bfloat16 drifts from the sender by that rounding, never desynchronises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from PIL import Image

from .. import precision as precisions
from .. import rcc, rcc_numpy
from ..container import Header, ModelRef, overhead_bytes, read, write
from ..diffusion.schedules import get_schedule
from ..diffusion.tiling import tiled
from ..diffusion.vp import posterior_coefficients_f
from ..errors import (
    FormatError,
    InvalidFieldError,
    UnknownPipelineError,
)
from ..image_io import image_size, prepare_image, tensor_to_pil
from ..models.resources import activation_bytes_per_pixel
from . import output_filter
from .base import Budget, Codec, Knob, model_identity, model_threads, resolve_model
from .diffc_format import (  # noqa: F401  (re-exported: the settings are part of the DiffC API)
    DEFAULT_FILE_SCHEME,
    DTYPE_IDS,
    FILTER_PARAMS_VERSION,
    LOGSNR_LIMIT,
    MAX_DECODE_PIXELS,
    PARAMS_VERSION,
    PARAMS_VERSIONS,
    SCHEDULE_IDS,
    SCHEME_DEFAULTS,
    SCHEME_IDS,
    TREE_PARAMS_VERSION,
    DiffCSettings,
)

METHODS = ("flow", "ancestral", "denoise")
# The precisions a receiver may compute a file's model calls in instead of the file's own: both
# keep z, μ and the RCC in float32, so they differ by model rounding only (float64 changes z's dtype).
RECEIVER_PRECISIONS = frozenset({"float32", "bfloat16"})


# ------------------------------------------------------------------------------ shared maths


def initial_latent(shape: Sequence[int], settings: DiffCSettings) -> torch.Tensor:
    """z_0 ~ N(0, I) drawn from the shared seed (costs no bits): the Philox stream of domain
    DOMAIN_LATENT (version 2), or numpy's PCG64 + ziggurat for version-1 files."""
    n = int(np.prod(shape))
    if settings.params_version == 1:
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([settings.seed, 0x44696666])))
        z = gen.standard_normal(n, dtype=np.float64)
    else:
        z = rcc.normal_stream(settings.seed, rcc_numpy.DOMAIN_LATENT, n, dtype=np.float64)
    return torch.from_numpy(z.reshape(tuple(shape))).to(settings.torch_dtype)


class PhiloxNoise:
    """Ancestral-sampling noise from the shared seed: call k returns the k-th Philox stream of
    domain DOMAIN_SAMPLER, shaped like z (a `generator` for diffusion.samplers)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.calls = 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        eps = rcc.normal_stream(self.seed, rcc_numpy.DOMAIN_SAMPLER, z.numel(), stream=self.calls, dtype=np.float64)
        self.calls += 1
        return torch.from_numpy(eps.reshape(tuple(z.shape))).to(device=z.device, dtype=z.dtype)


def sampler_noise(settings: DiffCSettings):
    """The ancestral sampler's noise source for these settings (see PhiloxNoise)."""
    if settings.params_version == 1:
        return torch.Generator().manual_seed(settings.seed ^ 0x5EED_A5CE)
    return PhiloxNoise(settings.seed)


def model_calls(denoiser, settings: DiffCSettings, precision: str | None = None):
    """`denoiser` as both sides call it: in `precision` (None: the file's, settings.dtype) and tiled
    as the file says. Only float32 and bfloat16 can stand in for each other (both keep z in
    float32); a float64 file computes in float64."""
    precision = settings.dtype if precision is None else precision
    if precision != settings.dtype and not {precision, settings.dtype} <= RECEIVER_PRECISIONS:
        raise ValueError(f"a {settings.dtype} DiffC file cannot be decoded in {precision}; a receiver may "
                         f"only swap {' and '.join(sorted(RECEIVER_PRECISIONS))}")
    return tiled(precisions.for_model(denoiser, precision), settings.tile, settings.tile_overlap)


def _model_step(denoiser, z: torch.Tensor, lam_from: float, lam_to: float):
    """(x̂0, μ_Q(x̂0), σ_Q, c_x) for the step λ_from → λ_to: identical code for both sides."""
    c_z, c_x, std = posterior_coefficients_f(lam_from, lam_to)
    with model_threads():
        x_hat = denoiser(z, torch.full((z.shape[0],), lam_from, dtype=z.dtype)).to(z.dtype)
    return x_hat, c_z * z + c_x * x_hat, std, c_x


def _apply_sample(mean_p: torch.Tensor, std: float, eps: np.ndarray) -> torch.Tensor:
    """μ_Q(x̂0) + σ_Q ε, computed in ε's buffer (which the caller gives up): the same bits as the
    expression, without two full-size temporaries."""
    e = torch.from_numpy(np.asarray(eps, dtype=np.float32).reshape(mean_p.shape)).to(mean_p.dtype)
    return e.mul_(std).add_(mean_p)


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
           stop: Callable[[Encoding], bool] | None = None,
           fits: Callable[[list[bytes]], bool] | None = None, backend: str = "auto", progress: bool = False,
           on_step: Callable[[int, torch.Tensor], None] | None = None) -> Encoding:
    """Run the DiffC sender on x (NCHW in [-1, 1], N = 1).

    Stops after `steps` steps, or after the first step at which `stop(encoding_so_far)` is
    true, or before the first step whose segments would make `fits(segments)` false (that
    step is coded, since its size is unknown before, then dropped), or at the end of the
    grid. `on_step(k, z_k)` sees every communicated latent that is kept.
    """
    grid = settings.grid()
    max_steps = len(grid) - 1
    if steps is not None and not 1 <= steps <= max_steps:
        raise ValueError(f"steps must be in 1..{max_steps} (the grid has {max_steps} steps), got {steps}")
    n_steps = max_steps if steps is None else steps
    x = x.to(settings.torch_dtype)
    denoiser = model_calls(denoiser, settings)
    z = initial_latent(x.shape, settings)
    enc = Encoding([], z, [grid[0]])
    bar = _bar(n_steps, progress, "encode")
    for k in range(1, n_steps + 1):
        x_hat, mean_p, std, c_x = _model_step(denoiser, z, grid[k - 1], grid[k])
        # μ = c_x (x − x̂0) / σ_Q in float64, element by element (in place: no full-size temporaries).
        mu = x.to(torch.float64, copy=True).sub_(x_hat).mul_(c_x / std).reshape(-1).to(torch.float32).numpy()
        del x_hat
        coded = rcc.encode(mu, step=k, backend=backend, **settings.rcc_kwargs())
        if fits is not None and not fits([*enc.segments, bytes(coded.payload)]):
            break
        del mu
        z = _apply_sample(mean_p, std, coded.sample)
        enc.segments.append(bytes(coded.payload))
        enc.kl_bits.append(float(coded.kl_bits))
        enc.chunks.append(int(coded.chunks))
        del mean_p, coded  # full-size buffers: not held through the next model call
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
           on_step: Callable[[int, torch.Tensor], None] | None = None,
           precision: str | None = None) -> tuple[torch.Tensor, float]:
    """The DiffC receiver: replay the transmitted steps; returns (z_K, λ_K). The model calls run
    in `precision` (default: the file's, settings.dtype; see `model_calls`)."""
    grid = settings.grid()
    if len(segments) > len(grid) - 1:
        raise FormatError(f"{len(segments)} steps in the file but the grid has only {len(grid) - 1}")
    denoiser = model_calls(denoiser, settings, precision)
    z = initial_latent(shape, settings)
    dim = int(np.prod(shape))
    bar = _bar(len(segments), progress, "decode")
    for k, payload in enumerate(segments, start=1):
        _, mean_p, std, _ = _model_step(denoiser, z, grid[k - 1], grid[k])
        del z
        eps = rcc.decode(payload, dim, step=k, backend=backend, **settings.rcc_kwargs())
        z = _apply_sample(mean_p, std, eps)
        del mean_p, eps
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
                progress: bool = False, precision: str | None = None) -> torch.Tensor:
    """x̂ from the communicated z at λ_K: flow ODE, ancestral sampling (seeded) or denoiser mean.

    `flow_logsnr_offset` δ starts the flow ODE at λ_K − δ, i.e. treats z as slightly noisier
    than nominal. With finitely many RCC candidates z is not an exact sample of q(z_K | x), and
    on photos δ ≈ 0.25 gains 0.3–0.5 dB (DiffCCodec's default; 0 is the paper's decoder).
    The model calls run in `precision` (default: the file's; see `model_calls`).
    """
    from ..diffusion import samplers

    if method not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}; choose from {METHODS}")
    denoiser = model_calls(denoiser, settings, precision)
    with model_threads():
        if method == "denoise":
            return denoiser(z, torch.full((z.shape[0],), logsnr, dtype=z.dtype)).to(z.dtype)
        if method == "flow":
            logsnr = flow_start(settings, logsnr, flow_logsnr_offset)
        lams = reconstruction_grid(settings, logsnr, recon_steps)
        gen = sampler_noise(settings) if method == "ancestral" else None
        return samplers.sample(denoiser, z, lams, method=method, generator=gen, solver=solver, progress=progress)


def filter_inputs(denoiser, z: torch.Tensor, logsnr: float, settings: DiffCSettings, *, recon_steps: int = 20,
                  solver: str = "heun", flow_logsnr_offset: float = 0.0,
                  precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the output filter (output_filter.py) works on at z_K: the flow reconstruction x_f and
    d = x_d − x_f, x_d the denoiser mean at λ_K, both clamped to the pixel range. x_d is smoother
    than x_f (a posterior mean, where the flow output is a sample-like point): the filter's colour
    matrix on d blends the two per channel, its detail terms sharpen or soften x_f (docs/design.md §4)."""
    kw = dict(recon_steps=recon_steps, solver=solver, precision=precision)
    x_f = reconstruct(denoiser, z, logsnr, settings, method="flow", flow_logsnr_offset=flow_logsnr_offset,
                      **kw).clamp(-1, 1)
    x_d = reconstruct(denoiser, z, logsnr, settings, method="denoise", **kw).clamp(-1, 1)
    return x_f, x_d - x_f


def _bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def settings_with(settings: DiffCSettings, **changes) -> DiffCSettings:
    return replace(settings, **changes)


# ------------------------------------------------------------------------------ the codec (images, files, models)

DEFAULT_BPP = 0.25
DEFAULT_RECON_STEPS = 20
# The precision new files are written in: "auto" = bfloat16 model calls where the CPU has native
# bfloat16 (precision.hardware_bfloat16), else float32. Measured on 4 development photos at native
# size, steps 8–20 (0.02–1.4 bpp), each precision encoding and decoding its own files: mean PSNR
# difference at equal bytes +0.002 dB, BD-PSNR −0.013…+0.035 dB per photo (mean +0.003); the
# model calls take about half the time (docs/design.md §10).
DEFAULT_PRECISION = "auto"
# Flow decoding starts at λ_K − 0.25. On the 7 held-out photos (≤ 256 px, the shipped hybrid
# model), over no offset at steps 10 / 13 / 16 / 18: δ = 0.25 +0.37 / +0.59 / +0.52 / +0.45 dB,
# δ = 0.15 +0.36 / +0.58 / +0.47 / +0.40, δ = 0.35 +0.21 / +0.41 / +0.43 / +0.40 (the previous
# UNet peaked at 0.2–0.3 too). The denoiser mean gets worse with any offset, so it keeps none.
DEFAULT_FLOW_LOGSNR_OFFSET = 0.25

# Tiled model calls (diffusion.tiling): images larger than DEFAULT_TILE on a side are denoised in
# windows of DEFAULT_TILE² pixels blended over DEFAULT_TILE_OVERLAP, recorded in the parameter
# block (version 3); smaller images are coded exactly as before tiling existed (version 2). A 1024²
# window of the shipped UNet takes ≈ 0.5 GB, so a 12 Mpx photo stays within 3 GiB (docs/design.md §10).
DEFAULT_TILE = 1024
DEFAULT_TILE_OVERLAP = 64
# Memory estimate of a compress / decompress call (Budget.max_memory_gb): the process with torch and
# the model, plus these bytes per pixel of the pipeline's full-size float32 tensors (x, z, x̂0, μ_Q,
# float64 μ, RCC buffers, the tiled output), plus one model call's activations
# (models.resources). Measured at 4000x3000 with the default tiling (benchmarks/test_bench_large_image.py):
# 3.13e9 bytes peak RSS for compress + decompress, i.e. ≈ 185 B/px over process and one 1024² UNet window;
# rounded up. The decoder holds fewer full-size buffers than the encoder (no x, no μ).
PROCESS_BYTES = 400 << 20
ENCODE_BYTES_PER_PIXEL = 190
DECODE_BYTES_PER_PIXEL = 160

RATE_KNOBS = (
    Knob("steps", int, "rate", minimum=1,
         help="number of diffusion steps to transmit (1..the grid's steps, 32 by default); instead of bpp"),
    Knob("scheme", str, "rate", choices=tuple(SCHEME_DEFAULTS), sets_size=False,
         help="RCC scheme of the file, with that scheme's default settings: tree (a beam-searched tree codebook "
              "per chunk, parameter version 4; the default), pfr (2^10 candidates per chunk, the default "
              "before) or importance"),
    Knob("no_filter", bool, "rate", default=False, sets_size=False,
         help="write no output filter (by default the encoder fits one to the flow reconstruction of the "
              f"whole file: {output_filter.BLOCK_BYTES + 1} bytes, parameter version {FILTER_PARAMS_VERSION})"),
)
DECODE_KNOBS = (
    Knob("method", str, "decode", default="flow", choices=METHODS,
         help="reconstruction from the last transmitted step: flow (probability-flow ODE), "
              "ancestral (seeded sampling) or denoise (the denoiser mean)"),
    Knob("max_steps", int, "decode", minimum=0,
         help="decode only the first K steps (progressive; default: all the file holds)"),
    Knob("recon_steps", int, "decode", minimum=1, maximum=1000,
         help=f"sampler steps of flow/ancestral (default {DEFAULT_RECON_STEPS}); 0 is refused: "
              "method=denoise is the denoiser mean"),
    Knob("flow_offset", float, "decode", minimum=0.0, maximum=2 * LOGSNR_LIMIT, aliases=("flow_logsnr_offset",),
         help=f"start the flow ODE at log-SNR λ_K − offset (default {DEFAULT_FLOW_LOGSNR_OFFSET:g}; "
              "0 = the paper's decoder)"),
    Knob("allow_truncated", bool, "decode", default=False,
         help="decode the complete steps of a truncated file instead of refusing it"),
    Knob("skip_filter", bool, "decode", default=False,
         help="ignore the file's output filter (it applies to flow decoding of all the steps it was fitted for)"),
)


def supports_float64(model) -> bool:
    """Whether a denoiser can compute in float64: its own `supports_float64` if it declares one,
    else a torch module qualifies only when all its floating-point parameters are float64
    (the UNet's float32 convolutions cannot take float64 inputs; the Gaussian model has none)."""
    declared = getattr(model, "supports_float64", None)
    if declared is not None:
        return bool(declared)
    if isinstance(model, torch.nn.Module):
        return all(p.dtype == torch.float64 for p in model.parameters() if p.is_floating_point())
    return True


class DiffCCodec(Codec):
    """DiffC behind the Codec interface: images in, .fdc bytes out, and back.

    `model`: None (the default model for compressing; the model named in the file for
    decompressing), a registry name, or a Denoiser object with `.name` / `.content_hash`.
    `precision` ("auto", "float32", "bfloat16" or "float64"; `dtype` is its older name): what the
    model calls of new files compute in, written into the header — "auto" is bfloat16 where the
    CPU has it natively (precision.hardware_bfloat16), else float32; bfloat16 runs only the model
    under autocast (z, μ, the RCC and the ODE stay float32). Decoding follows the file's precision
    unless this codec was given float32 or bfloat16 explicitly and the file is float32 or bfloat16:
    then the model calls use the codec's, and the output drifts from the sender's by that rounding
    (it never desynchronises: RCC decoding reads integers).
    `settings`: fields of DiffCSettings (seed, grid_steps, bits_per_chunk, ...), plus the
    decoder-side defaults `recon_steps` and `flow_offset` (alias `flow_logsnr_offset`), and
    `solver`, `backend`, `progress`. The flow ODE defaults to DPM-Solver++(2M) with 20 steps:
    one model call per step, and on photos within 0.01 dB of Heun with 50 steps (measured). It
    starts at λ_K − `flow_offset` (see `reconstruct`; the default was chosen on the held-out
    photos, never the evaluation ones). dtype="float64" needs a model that runs in float64
    (the analytic Gaussian one; not the UNet or the hybrid).

    The RCC scheme is the setting `scheme` (tree by default, parameter version 4; pfr and importance
    write versions 2 / 3): given alone it brings its own RCC settings (diffc_format.SCHEME_DEFAULTS),
    which bits_per_chunk, margin, levels and beam override; bits_per_chunk or margin without a
    scheme mean pfr, as they did before the tree was the default.

    Knobs (docs/design.md §7): compress(image, *, bpp=None, steps=None, scheme=None) — `bpp` is a
    ceiling: the file holds the most steps whose whole file is <= bpp·H·W/8 bytes (0.25 bpp when
    neither is given); `scheme` codes this file with another RCC scheme and its defaults;
    decompress(data, *, method, max_steps, recon_steps, flow_offset, allow_truncated).
    """

    pipeline = "diffc"
    rate_knobs = RATE_KNOBS
    decode_knobs = DECODE_KNOBS

    def __init__(self, model=None, *, recon_steps: int = DEFAULT_RECON_STEPS, solver: str = "dpm++2m",
                 flow_offset: float | None = None, flow_logsnr_offset: float | None = None,
                 backend: str = "auto", progress: bool = False, tile: int = DEFAULT_TILE,
                 tile_overlap: int = DEFAULT_TILE_OVERLAP, max_pixels: int | None = None,
                 max_model_calls: int | None = None, max_memory_gb: float | None = None,
                 precision: str | None = None, **settings):
        self._model_arg = model
        self._model = None if model is None or isinstance(model, str) else model
        self._file_models: dict = {}  # shipped models named by files, by (name, hash)
        if precision is not None and "dtype" in settings:
            raise ValueError("DiffC precision given twice (as precision and as its older name dtype)")
        # What the caller asked for (None: nothing — new files get DEFAULT_PRECISION and decoding
        # follows each file, as it does for "auto").
        self.precision = settings.pop("dtype", precision)
        requested = DEFAULT_PRECISION if self.precision is None else self.precision
        # New files use the tree codebook. b or a margin given without a scheme keep the meaning they had
        # before the tree was the default — pfr's (e.g. bits_per_chunk=12 is pfr with 2^12 candidates).
        scheme = settings.get("scheme") or ("pfr" if {"bits_per_chunk", "margin"} & settings.keys()
                                            else DEFAULT_FILE_SCHEME)
        if settings.get("params_version", PARAMS_VERSION) not in (2, 3, TREE_PARAMS_VERSION):
            raise ValueError("DiffC writes parameter versions 2 and 3 only for the flat RCC schemes, 4 for the tree "
                             "(version 1 files are read, never written); give the tiling as tile= and tile_overlap=")
        self.settings = DiffCSettings(**{**SCHEME_DEFAULTS.get(scheme, {}), **settings, "scheme": scheme},
                                      dtype=precisions.resolve(requested))
        if tile:  # validated as DiffCSettings would validate a version-3 block
            replace(self.settings, tile=int(tile), tile_overlap=int(tile_overlap))
        self.tile, self.tile_overlap = int(tile), int(tile_overlap)
        self.budget = Budget.default(max_pixels=max_pixels, max_model_calls=max_model_calls,
                                     max_memory_gb=max_memory_gb)
        offsets = {"flow_offset": flow_offset, "flow_logsnr_offset": flow_logsnr_offset}
        decode_defaults = self.check_knobs("decode", {"recon_steps": recon_steps,
                                                      **{k: v for k, v in offsets.items() if v is not None}})
        self.recon_steps = decode_defaults["recon_steps"]
        self.flow_logsnr_offset = (DEFAULT_FLOW_LOGSNR_OFFSET if decode_defaults["flow_offset"] is None
                                   else decode_defaults["flow_offset"])
        self.solver = solver
        self.backend = backend
        self.progress = progress
        if self._model is not None:
            self._check_precision(self._model)

    def decode_precision(self, settings: DiffCSettings) -> str:
        """What a file's model calls compute in here: the file's precision, or this codec's
        explicit float32 / bfloat16 for a float32 / bfloat16 file (drifting; see the class doc)."""
        if self.precision in RECEIVER_PRECISIONS and settings.dtype in RECEIVER_PRECISIONS:
            return self.precision
        return settings.dtype

    # -- models --------------------------------------------------------------------------
    def _check_precision(self, model, settings: DiffCSettings | None = None, error=ValueError):
        settings = settings or self.settings
        if settings.dtype == "float64" and not supports_float64(model):
            name, _ = model_identity(model)
            raise error(f"model {name!r} cannot compute in float64 (its weights are float32); "
                        "use dtype='float32', or float64 with the analytic Gaussian model")

    def model_for_encoding(self):
        if self._model is None:
            from ..models.registry import load_model

            self._model = load_model(self._model_arg or default_model_name())
            self._check_precision(self._model)
        return self._model

    def model_for_file(self, header: Header):
        """The model the file was written with (its hash checked): the given one, or the shipped
        one it names — a retired default is found by its hash (base.resolve_model)."""
        ref = header.model("denoiser")
        if ref is None:
            raise InvalidFieldError("this DiffC file names no denoiser model")
        given = self.model_for_encoding() if (self._model is not None or self._model_arg is not None) else None
        return resolve_model(ref, given, cache=self._file_models)

    # -- compress ------------------------------------------------------------------------
    def _header(self, model, prep, settings: DiffCSettings) -> Header:
        name, h = model_identity(model)
        return Header("diffc", (ModelRef("denoiser", name, h),), prep.height, prep.width, prep.channels,
                      precision=settings.dtype, params_version=settings.params_version, params=settings.to_bytes())

    # -- resources -----------------------------------------------------------------------
    def estimate_memory(self, model, height: int, width: int, settings: DiffCSettings, *, decoding: bool) -> int:
        """Estimated peak bytes of compressing / decompressing an image of this size (see
        `Budget`): the process with its model, the pipeline's full-size tensors and one model
        call's activations on a tile (or the whole image)."""
        pixels = height * width
        per_pixel = DECODE_BYTES_PER_PIXEL if decoding else ENCODE_BYTES_PER_PIXEL
        if settings.dtype == "float64":
            per_pixel *= 2
        window = min(height, settings.tile) * min(width, settings.tile) if settings.tile else pixels
        return int(PROCESS_BYTES + per_pixel * pixels + activation_bytes_per_pixel(model) * window)

    def _check_budget(self, model, height: int, width: int, settings: DiffCSettings, calls: int, what: str, *,
                      decoding: bool, extra_bytes: int = 0) -> None:
        """Model calls and estimated memory against the budget, before anything large is allocated."""
        self.budget.check_model_calls(calls, f"{what} of a {width}x{height} image", decoding=decoding)
        hint = "" if decoding or settings.tile else f"or tile the model calls: tile={DEFAULT_TILE}"
        need = self.estimate_memory(model, height, width, settings, decoding=decoding) + extra_bytes
        self.budget.check_memory(need, f"{what} a {width}x{height} image", decoding=decoding, hint=hint)

    def recon_calls(self, method: str, recon_steps: int) -> int:
        """Model calls of the reconstruction from z at λ_K (flow: 1 per DPM-Solver++(2M) step, 2 per
        Heun step; ancestral: 1 per step; both + 1 final x̂0; denoise: 1)."""
        if method == "denoise":
            return 1
        per = 2 if (method == "flow" and self.solver == "heun") else 1
        return per * recon_steps + 1

    def settings_for(self, scheme: str | None = None) -> DiffCSettings:
        """The codec's settings, or with another RCC scheme (and its defaults) when `scheme` differs."""
        if scheme is None or scheme == self.settings.scheme:
            return self.settings
        return self.settings.with_scheme(scheme)

    def encode_image(self, image, *, bpp: float | None = None, steps: int | None = None,
                     scheme: str | None = None, no_filter: bool = False) -> tuple[bytes, Encoding]:
        """`compress`, also returning the sender's Encoding (per-step KL, chunks, final z)."""
        knobs = self.check_knobs("rate", {"bpp": bpp, "steps": steps, "scheme": scheme, "no_filter": no_filter})
        bpp, steps, with_filter = knobs["bpp"], knobs["steps"], not knobs["no_filter"]
        if bpp is None and steps is None:
            bpp = DEFAULT_BPP
        height, width = image_size(image)
        self.budget.check_pixels(height, width, decoding=False)
        model = self.model_for_encoding()
        settings = self.settings_for(knobs["scheme"]).for_image(height, width, self.tile, self.tile_overlap)
        calls = (steps if steps is not None else settings.grid_steps) + (self._filter_calls() if with_filter else 0)
        self._check_budget(model, height, width, settings, calls, "compressing", decoding=False)
        prep = prepare_image(image)
        fits = None
        if bpp is not None:
            pixels = prep.height * prep.width
            # A relative 1e-12 of slack: a bpp computed from a byte count, 8·n / (H·W), admits those n bytes.
            ceiling = bpp * pixels / 8.0 * (1 + 1e-12)

            def fits(segments):  # the whole file with these steps (and a filter for them) is within the ceiling
                lengths = [len(s) for s in segments]
                sized = settings.with_filter(len(segments), (0,) * output_filter.NUM_CODES) if with_filter else settings
                size = overhead_bytes(self._header(model, prep, sized), lengths) + sum(lengths)
                if size > ceiling and len(segments) == 1:
                    raise ValueError(f"bpp {bpp:g} is below the smallest file this image can have: one step "
                                     f"makes {size} bytes = {8 * size / pixels:.4g} bpp")
                return size <= ceiling

        enc = encode(model, prep.tensor, settings, steps=steps, fits=fits, backend=self.backend,
                     progress=self.progress)
        if with_filter:
            settings = self._fitted(model, enc.z, enc.logsnrs[-1], settings, enc.steps, prep.tensor)[0]
        return write(self._header(model, prep, settings), enc.segments), enc

    def compress(self, image, *, bpp: float | None = None, **rate_knobs) -> bytes:
        """.fdc bytes of `image` with `steps` steps or within the `bpp` ceiling (default 0.25 bpp);
        `scheme` picks the RCC scheme of this file (default: the codec's); `no_filter` leaves out the
        output filter the encoder otherwise fits to the whole file's flow reconstruction."""
        knobs = self.check_knobs("rate", {"bpp": bpp, **rate_knobs})
        return self.encode_image(image, bpp=knobs["bpp"], steps=knobs["steps"], scheme=knobs["scheme"],
                                 no_filter=knobs["no_filter"])[0]

    # -- the output filter ---------------------------------------------------------------
    def _filter_calls(self) -> int:
        """Model calls of the output filter's inputs: the flow reconstruction and one denoiser mean."""
        return self.recon_calls("flow", self.recon_steps) + 1

    def _fitted(self, model, z: torch.Tensor, logsnr: float, settings: DiffCSettings, steps: int,
                x: torch.Tensor) -> tuple[DiffCSettings, torch.Tensor]:
        """The encoder's side of the output filter (docs/design.md §4): `settings` with the filter
        fitted to x after `steps` steps (output_filter.choose_codes: all-zero codes, the identity,
        when it would not improve the 8-bit flow output), and the receiver's output with it. The
        filter is fitted to the flow reconstruction this codec decodes by default (its recon_steps,
        solver, flow offset) in the file's precision."""
        x_f, d = filter_inputs(model, z, logsnr, settings, recon_steps=self.recon_steps, solver=self.solver,
                               flow_logsnr_offset=self.flow_logsnr_offset)
        fitted = settings.with_filter(steps, output_filter.choose_codes(d, x_f, x))
        codes = fitted.filter_for(steps)
        return fitted, (x_f if codes is None else output_filter.apply(d, x_f, codes).clamp(-1, 1))

    def _filter_applies(self, knobs: dict) -> bool:
        return knobs["method"] == "flow" and not knobs["skip_filter"]

    def _output(self, model, z: torch.Tensor, logsnr: float, settings: DiffCSettings, steps: int,
                knobs: dict) -> torch.Tensor:
        """The receiver's reconstruction from z after `steps` decoded steps: `reconstruct` with the
        knobs, through the file's output filter when it was fitted for these steps and the method is
        flow (the knobs may differ from the encoder's recon_steps / flow offset: the filter then
        corrects a slightly different flow output, still the one it resembles most)."""
        precision = self.decode_precision(settings)
        kw = dict(recon_steps=self._recon_steps(knobs), solver=self.solver, precision=precision)
        codes = settings.filter_for(steps) if self._filter_applies(knobs) else None
        if codes is None:
            return reconstruct(model, z, logsnr, settings, method=knobs["method"], progress=self.progress,
                               flow_logsnr_offset=self._flow_offset(knobs), **kw)
        x_f, d = filter_inputs(model, z, logsnr, settings, flow_logsnr_offset=self._flow_offset(knobs), **kw)
        return output_filter.apply(d, x_f, codes).clamp(-1, 1)

    # -- decompress ----------------------------------------------------------------------
    @classmethod
    def describe_params(cls, header: Header) -> dict:
        settings = DiffCSettings.from_bytes(header.params, header.params_version, header.precision)
        out = {f.name: getattr(settings, f.name) for f in fields(settings)}
        out["shared_randomness"] = "numpy PCG64 + torch.Generator" if settings.params_version == 1 else "philox"
        return out

    def open(self, data: bytes, *, allow_truncated: bool = False):
        """Parse a DiffC file: (FdcFile, DiffCSettings, model)."""
        f = read(data, allow_truncated=allow_truncated)
        if f.header.pipeline != "diffc":
            raise UnknownPipelineError(
                f"this file was written by the {f.header.pipeline!r} pipeline; use load_codec({f.header.pipeline!r})"
            )
        h = f.header
        self.budget.check_pixels(h.height, h.width, decoding=True)
        settings = DiffCSettings.from_bytes(h.params, h.params_version, h.precision)
        model = self.model_for_file(h)
        self._check_precision(model, settings, error=InvalidFieldError)
        return f, settings, model

    def decode_latent(self, data: bytes, *, max_steps: int | None = None, allow_truncated: bool = False,
                      recon_calls: int = 0):
        """Replay the steps: (z_K, λ_K, FdcFile, settings, model). The budget is checked for the
        replayed steps plus `recon_calls` model calls of the reconstruction that follows."""
        max_steps = self.check_knobs("decode", {"max_steps": max_steps})["max_steps"]
        f, settings, model = self.open(data, allow_truncated=allow_truncated)
        segments = f.segments if max_steps is None else f.segments[:max_steps]
        h = f.header
        self._check_budget(model, h.height, h.width, settings, len(segments) + recon_calls, "decoding",
                           decoding=True)
        shape = (1, 3, f.header.height, f.header.width)
        z, lam = replay(model, segments, shape, settings, backend=self.backend, progress=self.progress,
                        precision=self.decode_precision(settings))
        return z, lam, f, settings, model

    def _decode_calls(self, knobs: dict) -> int:
        """Model calls after the replay: the reconstruction, + 1 denoiser mean if a filter may apply."""
        return self.recon_calls(knobs["method"], self._recon_steps(knobs)) + int(self._filter_applies(knobs))

    def decompress(self, data: bytes, **decode_knobs) -> Image.Image:
        """The image of a DiffC file; knobs: method ("flow"), max_steps (all), recon_steps and
        flow_offset (the constructor's), allow_truncated (False), skip_filter (False: a flow decode of
        the steps the file's output filter was fitted for goes through it)."""
        k = self.check_knobs("decode", decode_knobs)
        z, lam, f, settings, model = self.decode_latent(data, max_steps=k["max_steps"],
                                                        allow_truncated=k["allow_truncated"],
                                                        recon_calls=self._decode_calls(k))
        steps = len(f.segments) if k["max_steps"] is None else min(k["max_steps"], len(f.segments))
        return tensor_to_pil(self._output(model, z, lam, settings, steps, k), f.header.channels)

    def _recon_steps(self, knobs: dict) -> int:
        return self.recon_steps if knobs["recon_steps"] is None else knobs["recon_steps"]

    def _flow_offset(self, knobs: dict) -> float:
        return self.flow_logsnr_offset if knobs["flow_offset"] is None else knobs["flow_offset"]

    def decompress_progressive(self, data: bytes, steps: Sequence[int], *, method: str = "flow",
                               allow_truncated: bool = False, **decode_knobs) -> dict[int, Image.Image]:
        """Reconstructions after each of `steps` transmitted steps, replaying the file once
        (an RD curve from one encode: pair with container.step_file_sizes). Takes the decode
        knobs except max_steps."""
        if "max_steps" in decode_knobs:
            raise ValueError("decompress_progressive takes the steps to decode, not max_steps")
        k = self.check_knobs("decode", {"method": method, "allow_truncated": allow_truncated, **decode_knobs})
        f, settings, model = self.open(data, allow_truncated=k["allow_truncated"])
        wanted = sorted(set(int(s) for s in steps))
        if wanted and not 0 <= wanted[0] <= wanted[-1] <= len(f.segments):
            raise ValueError(f"steps must lie in 0..{len(f.segments)}")
        latents = {}
        shape = (1, 3, f.header.height, f.header.width)

        def keep(step, z):
            if step in wanted:
                latents[step] = z

        if 0 in wanted:
            latents[0] = initial_latent(shape, settings)
        n = wanted[-1] if wanted else 0
        h = f.header
        calls = n + len(wanted) * self._decode_calls(k)
        kept = len(wanted) * 3 * h.height * h.width * settings.torch_dtype.itemsize  # the latents kept
        self._check_budget(model, h.height, h.width, settings, calls, "decoding", decoding=True, extra_bytes=kept)
        precision = self.decode_precision(settings)
        replay(model, f.segments[:n], shape, settings, backend=self.backend, progress=self.progress, on_step=keep,
               precision=precision)
        grid = settings.grid()
        return {step: tensor_to_pil(self._output(model, latents.pop(step), grid[step], settings, step, k),
                                    f.header.channels)
                for step in wanted}

    def prefix_files(self, image, data: bytes, steps: Sequence[int], *, no_filter: bool = False,
                     **decode_knobs) -> dict[int, tuple[bytes, Image.Image]]:
        """For each k in `steps`: the file `compress(image, steps=k, no_filter=...)` writes and its
        decode with `decode_knobs`, made from `data` — a file of the same image, by this codec's
        settings, holding at least max(steps) steps — with one replay of its steps.

        Why this is exact: the sender is prefix-consistent (step k depends only on steps 1..k), so the
        k-step file's segments are `data`'s first k; only the output filter differs, fitted for k
        steps. An RD curve of per-rate files then costs one encode (fastdiffc eval does this)."""
        if "max_steps" in decode_knobs:
            raise ValueError("prefix_files takes the steps to make files of, not max_steps")
        no_filter = self.check_knobs("rate", {"no_filter": no_filter})["no_filter"]
        k = self.check_knobs("decode", {"allow_truncated": True, **decode_knobs})
        f, settings, model = self.open(data, allow_truncated=True)
        prep = prepare_image(image)
        h = f.header
        if (prep.height, prep.width, prep.channels) != (h.height, h.width, h.channels):
            raise ValueError(f"the image is {prep.width}x{prep.height} with {prep.channels} channels but the file "
                             f"holds {h.width}x{h.height} with {h.channels}")
        if settings.params_version == 1:  # (with_filter would say so too, after the replay)
            raise ValueError("a version-1 DiffC file predates the output filter; re-encode the image")
        wanted = sorted(set(int(s) for s in steps))
        if not wanted or not 1 <= wanted[0] <= wanted[-1] <= len(f.segments):
            raise ValueError(f"steps must lie in 1..{len(f.segments)} (the file's complete steps)")
        plain = settings.without_filter()
        fit = not no_filter
        calls = wanted[-1] + len(wanted) * (self._filter_calls() * fit + self._decode_calls(k))
        self._check_budget(model, h.height, h.width, plain, calls, "compressing", decoding=False,
                           extra_bytes=len(wanted) * 3 * h.height * h.width * plain.torch_dtype.itemsize)
        latents = {}

        def keep(step, z):
            if step in wanted:
                latents[step] = z

        shape = (1, 3, h.height, h.width)
        replay(model, f.segments[:wanted[-1]], shape, plain, backend=self.backend, progress=self.progress,
               on_step=keep)  # in the file's precision, as the sender computed
        grid = plain.grid()
        # The encoder's filter output is the receiver's when the decode knobs are the codec's defaults.
        same_decode = (self._filter_applies(k) and self._recon_steps(k) == self.recon_steps
                       and self._flow_offset(k) == self.flow_logsnr_offset)
        out = {}
        for step in wanted:
            z = latents.pop(step)
            file_settings, x = self._fitted(model, z, grid[step], plain, step, prep.tensor) if fit else (plain, None)
            if x is None or not same_decode:
                x = self._output(model, z, grid[step], file_settings, step, k)
            header = replace(h, params_version=file_settings.params_version, params=file_settings.to_bytes())
            out[step] = (write(header, f.segments[:step]), tensor_to_pil(x, h.channels))
        return out


def default_model_name() -> str:
    """DiffC's shipped default model (python/fastdiffc/weights/defaults.json)."""
    from ..models.registry import default_model_name as registry_default

    return registry_default("diffc")
