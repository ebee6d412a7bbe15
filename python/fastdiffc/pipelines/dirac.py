"""DIRAC (Ghouse et al. 2023, "A Residual Diffusion Model for High Perceptual Quality Codec
Augmentation"), docs/design.md §4b.

A classical base codec makes a high-fidelity reconstruction; a diffusion model conditioned on
it adds back what the codec removed. Only the base codec's bits are transmitted:

    sender:    payload = base_encode(x, quality)                      (the whole .fdc payload)
    receiver:  x_base  = base_decode(payload)
               c       = (x_base, codec, log2 bpp of the payload, JPEG quality)
               z_0     ~ N(0, I) from the shared seed                  (λ_0 = λ_start: pure noise)
               r̂_0     = model(z_0, λ_0, c)                            (= E[r | c]: 0 steps; the
                                                                        output averages it over the
                                                                        model's orientations)
               for k = 1..K (K = decode_steps ≤ 20, a prefix of one fixed schedule):
                   z_k = μ_Q(z_{k-1}, r̂_{k-1}) + σ_Q ε_k             (ancestral step, Philox noise)
                   r̂_k = model(z_k, λ_k, c)
               x̂ = x_base + r̂_K / K_r                                 (r = K_r (x − x_base))

The model is x-parameterised on the scaled residual (models/residual.py). With 0 steps the
output is the model's first prediction from pure noise, the MMSE estimate of the residual —
DIRAC's maximum-fidelity end, a learned post-filter. Each further step commits to part of a
sample from p(r | x_base), so detail comes back and PSNR falls: the distortion ↔ realism knob.
K steps are a *prefix* of one fixed 20-step schedule rather than a fresh K-step schedule, so
the outputs for K = 0..20 are snapshots of one sampling trajectory (any step can be the last,
one seeded run shows the whole trade-off) — the paper's "stop early" knob.

Determinism: the base bitstream is decoded by a third-party library (its version is in the
header; another version may change pixels slightly, never the file's meaning); the model and
its sampling noise (Philox, rcc.normal_stream) are the same on every machine, so a decoder
differs from another only by float rounding. Nothing is entropy-decoded from model floats.

Plain files: a JPEG/WebP/AVIF/HEIC/JPEG XL file made by any encoder is also a DIRAC input;
the conditioning comes from the file itself (codecs/plain.py) and the seed is 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image

from .. import precision as precisions
from ..codecs.classical import get_codec, library_version
from ..codecs.learned import DIRAC_BASES, LEARNED_BASES, cdc_levels, encode_base, open_base
from ..codecs.plain import PlainImage, open_plain
from ..container import MAGIC, Header, ModelRef, overhead_bytes, write
from ..diffusion.vp import posterior_coefficients_f
from ..errors import InvalidFieldError
from ..image_io import prepare_image, tensor_to_pil
from ..models.residual import dihedral_predictions, ensemble_mean
from . import output_filter
from .base import (
    Budget,
    Codec,
    Knob,
    checked_seed,
    model_identity,
    model_threads,
    read_own_file,
    resolve_model,
    shared_normals,
)

# Parameter block: version 1 = the seed; version 2 = the seed and the encoder's output gain code;
# version 3 (written since the output filter, the default) = the seed and the encoder's output
# filter (output_filter.py). All three decode.
PARAMS_VERSION = 3
PARAMS_VERSIONS = (1, 2, 3)
# The 0-step output gain the encoder chooses per image and writes into the file: γ = code / 64,
# code 0..128 (γ ∈ [0, 2]). Only the encoder has the original, so only it can measure how far
# the model's residual estimate is to be trusted on *this* image; the model's table of gains per
# (codec, rate) is a held-out average, and still what a plain file and a version-1 file get.
GAIN_DENOM = 64
MAX_GAIN_CODE = 128
GAIN_MODES = ("filter", "signalled", "table")
MAX_DECODE_STEPS = 20
# The fixed schedule: λ_0 = the model's λ_start (pure noise), then 20 steps evenly spaced in λ
# from FIRST_STEP_LOGSNR to the model's λ_end. Below ≈ −2 a step changes nothing visible (the
# residual's SNR e^λ·var(r) is < 1%), so the first step jumps there and all 20 steps do work.
FIRST_STEP_LOGSNR = -2.0
DEFAULT_BASE = "avif"
DEFAULT_BPP = 0.25
# Philox domains of rcc.normal_stream (0..2 are RCC's, 3..4 DiffC's).
DOMAIN_START = 5  # z_0
DOMAIN_STEP = 6  # ε_k, stream k
# The model's activations at 32 channels and half resolution take ~0.4 GB per megapixel at
# peak; 16 Mpx keeps a decode within ≈ 6 GB. Raise it with max_pixels=.
DEFAULT_DECODE_PIXELS = 16_000_000


def schedule(logsnr_start: float, logsnr_end: float, steps: int = MAX_DECODE_STEPS) -> list[float]:
    """λ_0 < λ_1 < … < λ_steps of the fixed decode schedule (float64, the same everywhere)."""
    first = max(FIRST_STEP_LOGSNR, logsnr_start)
    return [float(logsnr_start)] + [first + (logsnr_end - first) * k / (steps - 1) for k in range(steps)]


def sample_bounds(r0: torch.Tensor, beta: float, window: int):
    """(lower, upper) limits r̂_0 ∓ β·ρ for the sampler's later predictions, ρ the local RMS of
    the 0-step estimate r̂_0 [1, C, H, W] over channels and a window × window box (the box
    shrinks at the borders); None when β is 0 (no bound)."""
    if not beta:
        return None
    energy = r0.float().pow(2).mean(1, keepdim=True)
    rho = torch.nn.functional.avg_pool2d(energy, window, stride=1, padding=window // 2,
                                         count_include_pad=False).sqrt()
    return r0 - beta * rho, r0 + beta * rho


def enhance(model, x_base: torch.Tensor, cond, *, steps: int, seed: int, trajectory=None,
            precision: str = "float32", gain: float = 1.0, filter_codes=None) -> torch.Tensor:
    """DIRAC's decoder for a base reconstruction x_base [1, 3, H, W] in [-1, 1]: the output after
    `steps` ancestral steps (0 = the MMSE post-filter). `trajectory(k, x̂_k)` sees every snapshot.
    Model calls run in `precision` (precision.py); the sampler's own arithmetic in float32.
    `gain` γ shrinks the 0-step output's residual (the model's rate-dependent table, or the file's
    signalled gain); `filter_codes`, a file's output filter (output_filter.py), replaces it by the
    encoder's least-squares filter. Neither touches what the sampler does: it always continues
    from the unshrunk plain first prediction (not the self-ensembled one a model's `ensemble`
    makes the 0-step output from: averaging smooths it, and the sampler and its bound would
    inherit that and lose realism). A model whose spec sets a sampling
    bound β keeps every later prediction within β times the local RMS of the first one
    (`sample_bounds`)."""
    spec = model.spec
    if not 0 <= steps <= MAX_DECODE_STEPS:
        raise ValueError(f"decode_steps must be in 0..{MAX_DECODE_STEPS}, got {steps}")
    lams = schedule(spec.logsnr_start, spec.logsnr_end)
    k_r = spec.residual_scale
    model = precisions.for_model(model, precision)  # returns float32 whatever it computes in
    with model_threads():
        z, r_out, r_hat = _first_prediction(model, x_base, cond, seed, lams[0], spec.ensemble)
        if filter_codes is not None:
            first = output_filter.apply(r_out / k_r, x_base, filter_codes).clamp(-1, 1)
        else:
            first = (x_base + gain * r_out / k_r).clamp(-1, 1)
        if trajectory is not None:
            trajectory(0, first)
        if steps == 0:
            return first
        bounds = sample_bounds(r_hat, spec.sample_bound, spec.sample_bound_window)
        for k in range(1, steps + 1):
            c_z, c_x, std = posterior_coefficients_f(lams[k - 1], lams[k])
            z = c_z * z + c_x * r_hat + std * shared_normals(seed, DOMAIN_STEP, x_base.shape, stream=k)
            r_hat = model(z, lams[k], cond)
            if bounds is not None:  # the bounded prediction is also what the next step moves toward
                r_hat = torch.maximum(torch.minimum(r_hat, bounds[1]), bounds[0])
            if trajectory is not None:
                trajectory(k, (x_base + r_hat / k_r).clamp(-1, 1))
    return (x_base + r_hat / k_r).clamp(-1, 1)


def _first_prediction(model, x_base: torch.Tensor, cond, seed: int, logsnr: float, ensemble: int = 1):
    """(z_0, r̂_0, r̂_0 plain): the pure-noise start drawn from the file's seed, the model's first
    residual prediction from it self-ensembled over the model's `ensemble` orientations — what
    the 0-step output is made of, for the decoder and the encoder alike — and the plain
    (identity-orientation) prediction the sampler continues from."""
    z = shared_normals(seed, DOMAIN_START, x_base.shape)
    predictions = dihedral_predictions(model, z, logsnr, cond, ensemble)
    return z, ensemble_mean(predictions), predictions[0]


def zero_step_estimate(model, x_base: torch.Tensor, cond, seed: int, precision: str) -> torch.Tensor:
    """d = r̂_0 / K_r: the decoder's own 0-step residual estimate (self-ensembled as the model
    says), in image units — what the encoder fits the signalled gain or filter to."""
    spec = model.spec
    with model_threads():
        _, r_hat, _ = _first_prediction(precisions.for_model(model, precision), x_base, cond, seed,
                                        schedule(spec.logsnr_start, spec.logsnr_end)[0], spec.ensemble)
    return r_hat / spec.residual_scale


def signalled_gain_code(model, x: torch.Tensor, x_base: torch.Tensor, cond, seed: int, precision: str) -> int:
    """The encoder's output gain for this image, as the file's integer code: the least-squares
    γ = ⟨d, x − x_base⟩ / ⟨d, d⟩ of the decoder's own first prediction d = r̂_0 / K against the
    true residual, rounded to 1/GAIN_DENOM and clamped to [0, MAX_GAIN_CODE / GAIN_DENOM]. The
    decoder only reads the integer, so a float difference here changes which file is written,
    never how one decodes."""
    return _least_squares_gain_code(zero_step_estimate(model, x_base, cond, seed, precision), x - x_base)


def _least_squares_gain_code(d: torch.Tensor, residual: torch.Tensor) -> int:
    """round(64 γ) of γ = ⟨d, r⟩ / ⟨d, d⟩, clamped to 0..MAX_GAIN_CODE."""
    d, t = d.double(), residual.double()
    dd = float((d * d).sum())
    gamma = float((d * t).sum()) / dd if dd > 0 else 0.0
    return int(min(max(round(gamma * GAIN_DENOM), 0), MAX_GAIN_CODE))


def _params_version(mode: str) -> int:
    """The parameter block version a gain mode writes."""
    return {"filter": 3, "signalled": 2, "table": 1}[mode]


def _encode_params(seed: int, gain_code: int | None = None, filter_codes=None) -> bytes:
    """Version 3 with filter codes, version 2 with a gain code, version 1 (the seed only) without.
    Both the gain byte and the filter block have a fixed size, so a file's size does not depend
    on what the encoder fits."""
    from ..container import put_varint

    out = bytearray()
    put_varint(out, seed)
    if gain_code is not None:
        out.append(gain_code)
    if filter_codes is not None:
        out += output_filter.encode_block(filter_codes)
    return bytes(out)


@dataclasses.dataclass(frozen=True)
class Params:
    """A DIRAC parameter block: the seed and at most one of the signalled corrections."""

    seed: int
    gain_code: int | None = None  # version 2
    filter_codes: tuple[int, ...] | None = None  # version 3


def _decode_params(data: bytes, version: int) -> Params:
    """The fields of a version-1, -2 or -3 parameter block."""
    from ..container import Reader

    r = Reader(data, what="DIRAC parameters")
    seed = r.varint("seed")
    code = codes = None
    if version == 2:
        code = r.u8("gain code")
        if code > MAX_GAIN_CODE:
            raise InvalidFieldError(f"invalid DIRAC parameters: gain code {code} is outside 0..{MAX_GAIN_CODE}")
    elif version == 3:
        codes = output_filter.decode_block(r)
    if not r.done():
        raise InvalidFieldError("malformed DIRAC parameters: trailing bytes")
    return Params(seed, code, codes)


def _base_tensor(plain: PlainImage) -> torch.Tensor:
    """The decoded base image as the model sees it: 1×3×H×W float32 in [-1, 1]."""
    arr = np.asarray(plain.image, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


@dataclasses.dataclass(frozen=True)
class OpenedFile:
    """What decoding needs from a DIRAC .fdc or a plain image file."""

    plain: PlainImage
    model: object
    seed: int
    channels: int
    precision: str
    gain_code: int | None  # the encoder's signalled output gain; None: the model's table decides
    filter_codes: tuple[int, ...] | None = None  # the encoder's output filter (overrides the gain)

    def gain(self) -> float:
        if self.gain_code is not None:
            return self.gain_code / GAIN_DENOM
        return self.model.spec.gain(self.plain.codec, self.plain.bpp)


class DiracCodec(Codec):
    """DIRAC behind the Codec interface.

    `model`: None (the shipped default DIRAC model; for a file, the one it names), a registry
    name, or a ResidualDenoiser. Settings: `seed` (written into the file; the sampling noise),
    `max_pixels` (decode/encode budget), `precision` ("auto": bfloat16 model calls where the CPU
    has native bfloat16, else float32; written into the file, and a decoder constructed with
    "auto" follows the file), `progress` (accepted for the CLI; DIRAC is quick)."""

    pipeline = "dirac"
    rate_knobs = (
        Knob("base", str, "rate", choices=DIRAC_BASES, default=DEFAULT_BASE, sets_size=False,
             help="the base codec whose bitstream is the payload (cdc: CDC's mean decoder)"),
        Knob("quality", int, "rate", minimum=0, maximum=100,
             help="the base codec's quality setting (cdc: its level) instead of a bpp ceiling"),
        Knob("gain", str, "rate", choices=GAIN_MODES, default="filter", sets_size=False,
             help="the 0-step output's correction, fitted by the encoder for this image (one more model "
                  "call when encoding): filter = a least-squares filter on the model's estimate and the "
                  "base (43 bytes); signalled = one gain (1 byte); table = the model's table per codec "
                  "and rate, what a plain file gets (0 bytes)"),
    )
    decode_knobs = (
        Knob("decode_steps", int, "decode", default=0, minimum=0, maximum=MAX_DECODE_STEPS,
             help="diffusion steps after the first prediction: 0 = maximum fidelity (a learned post-filter), "
                  "more = more realistic detail, lower PSNR"),
    )

    def __init__(self, model=None, *, seed: int = 0, max_pixels: int | None = None,
                 precision: str = "auto", progress: bool = False, cdc_model=None):
        # The shared Budget (FASTDIFFC_MAX_PIXELS, CLI --max-pixels) with this pipeline's own
        # default when neither sets it.
        self.budget = Budget.default({"max_pixels": DEFAULT_DECODE_PIXELS}, max_pixels=max_pixels)
        self._model_arg = model
        self._model = None if model is None or isinstance(model, str) else model
        self._file_models: dict = {}
        self.seed = checked_seed(seed)
        self.precision = precision
        self._resolved_precision = precisions.resolve(precision)
        if self._resolved_precision == "float64":
            raise ValueError("DIRAC's residual model computes in float32 or bfloat16, not float64")
        self.progress = progress
        # The CDC model of the cdc base codec when encoding (None: the shipped CDC default); a
        # file names its own, which the decoder loads by name and hash.
        self._cdc_arg = cdc_model
        self._cdc = None if cdc_model is None or isinstance(cdc_model, str) else cdc_model

    # -- models --------------------------------------------------------------------------
    def model_for_encoding(self):
        if self._model is None:
            from ..models.registry import default_model_name, load_model

            self._model = load_model(self._model_arg or default_model_name("dirac"))
            if getattr(self._model, "kind", None) != "dirac":
                raise ValueError(f"model {self._model.name!r} is not a DIRAC residual model")
        return self._model

    def _model_for(self, ref: ModelRef | None):
        """The model a file names (its hash checked), or the default one for a plain file."""
        if ref is None:
            return self.model_for_encoding()
        # A model given by name is loaded once (model_for_encoding caches it); shipped models a
        # file names are kept per (name, hash) in self._file_models.
        given = self.model_for_encoding() if self._model_arg is not None else None
        return resolve_model(ref, given, kind="dirac", cache=self._file_models)

    def cdc_for_encoding(self):
        """The CDC model of the cdc base: the one given, else the one the DIRAC model was trained
        on (its spec names it by name and hash), else the shipped CDC default."""
        if self._cdc is None:
            from ..models.registry import default_model_name, load_model, load_model_for_file

            spec = self.model_for_encoding().spec
            if self._cdc_arg is None and spec.cdc_model:
                self._cdc = load_model_for_file(spec.cdc_model, int(spec.cdc_hash, 16))
            else:
                self._cdc = load_model(self._cdc_arg or default_model_name("cdc"))
        cdc_levels(self._cdc)  # a clear error if it is not a frozen CDC model
        return self._cdc

    def _base_encoder(self, base: str):
        """(encode(pil, setting) -> bytes, lowest setting, highest setting, header reference) of a
        base codec: a classical codec's quality 0..100, or CDC's level."""
        if base == "cdc":
            m = self.cdc_for_encoding()
            name, h = model_identity(m)
            # A learned base is pinned by its content hash; `version` holds the registry name it
            # is loaded by (a classical base keeps its library version there).
            return (lambda pil, q: encode_base(base, pil, q, cdc=m)), 0, cdc_levels(m) - 1, \
                ModelRef("base", base, h, name)
        reason = get_codec(base).unavailable_reason()
        if reason:
            raise ValueError(f"base codec {base} is unavailable: {reason}")
        return (lambda pil, q: encode_base(base, pil, q)), 0, 100, ModelRef("base", base, 0, library_version(base))

    # -- compress ------------------------------------------------------------------------
    def compress(self, image, *, bpp: float | None = None, **rate_knobs) -> bytes:
        knobs = self.check_knobs("rate", {"bpp": bpp, **rate_knobs})
        base, quality, bpp, mode = knobs["base"], knobs["quality"], knobs["bpp"], knobs["gain"]
        if quality is None and bpp is None:
            bpp = DEFAULT_BPP
        prep = prepare_image(image)
        self.budget.check_pixels(prep.height, prep.width, decoding=False)
        pil = tensor_to_pil(prep.tensor, 3)
        model = self.model_for_encoding()
        model.check_base(base)
        encode, lowest, highest, base_ref = self._base_encoder(base)
        header = Header("dirac", (base_ref, ModelRef("denoiser", model.name, int(model.content_hash))),
                        prep.height, prep.width, prep.channels, precision=self._resolved_precision,
                        params_version=_params_version(mode),
                        params=_encode_params(self.seed, 0 if mode == "signalled" else None,
                                              (0,) * output_filter.NUM_CODES if mode == "filter" else None))

        def finish(payload: bytes) -> bytes:
            # The gain code is one byte whatever its value, so the sizes below hold for the final file.
            if mode == "table":
                return write(header, [payload])
            x_base, d = self._zero_step(model, base, payload, prep.width, prep.height)
            if mode == "filter":
                params = _encode_params(self.seed, filter_codes=output_filter.choose_codes(d, x_base, prep.tensor))
            else:
                params = _encode_params(self.seed, _least_squares_gain_code(d, prep.tensor - x_base))
            return write(dataclasses.replace(header, params=params), [payload])

        if quality is not None:
            if not lowest <= quality <= highest:
                raise ValueError(f"dirac knob quality must be in {lowest}..{highest} for base {base}, got {quality}")
            return finish(encode(pil, quality))
        budget = bpp * prep.height * prep.width / 8.0

        def size(payload: bytes) -> int:
            return overhead_bytes(header, [len(payload)]) + len(payload)

        # The largest quality whose file fits (sizes grow with quality; a binary search over
        # 0..100 costs 7 encodes, then the neighbours are checked because sizes are not
        # strictly monotonic).
        lo, hi, best = lowest, highest, None
        cache = {}

        def enc(q):
            if q not in cache:
                cache[q] = encode(pil, q)
            return cache[q]

        while lo <= hi:
            mid = (lo + hi) // 2
            if size(enc(mid)) <= budget:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is None:
            smallest = 8 * size(enc(lowest)) / (prep.height * prep.width)
            raise ValueError(f"no {base} file fits in {bpp} bpp for this image; the smallest is {smallest:.4f} bpp")
        for q in range(best + 1, min(best + 3, highest) + 1):
            if size(enc(q)) <= budget:
                best = q
        return finish(enc(best))

    def _zero_step(self, model, base: str, payload: bytes, width: int, height: int):
        """(x_base, d): the decoded base of a payload and the decoder's 0-step residual estimate
        on it, which the signalled gain or filter is fitted to."""
        cdc = self.cdc_for_encoding() if base in LEARNED_BASES else None
        with model_threads():
            plain = open_base(base, payload, width, height, cdc=cdc, max_pixels=self.budget.max_pixels)
        x_base = _base_tensor(plain)
        cond = model.conditioning(x_base, plain.codec, plain.bpp, plain.quality)
        return x_base, zero_step_estimate(model, x_base, cond, self.seed, self._resolved_precision)

    # -- decompress ----------------------------------------------------------------------
    def open(self, data: bytes) -> OpenedFile:
        """The decoded base image, model, seed, channels, precision and signalled gain of an .fdc
        DIRAC file or a plain image file. The precision is the file's when this codec was built
        with "auto"."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if data[: len(MAGIC)] != MAGIC:
            plain = open_plain(data, max_pixels=self.budget.max_pixels)
            return OpenedFile(plain, self._model_for(None), 0, 3, self._resolved_precision, None)
        f = read_own_file(data, "dirac", PARAMS_VERSIONS, self.budget)
        h = f.header
        params = _decode_params(h.params, h.params_version)
        base = h.model("base")
        if base is None or base.name not in DIRAC_BASES:
            raise InvalidFieldError(f"this DIRAC file names no known base codec "
                                    f"({base.name if base else 'none'}; known: {', '.join(DIRAC_BASES)})")
        if len(f.segments) != 1:
            raise InvalidFieldError(f"a DIRAC file holds one base bitstream, this one declares {len(f.segments)}")
        model = self._model_for(h.model("denoiser") or _missing_denoiser())
        cdc = None
        if base.name in LEARNED_BASES:
            if not base.version:
                raise InvalidFieldError("this DIRAC file's cdc base names no CDC model")
            given = self.cdc_for_encoding() if self._cdc_arg is not None else None
            cdc = resolve_model(ModelRef("decoder", base.version, base.hash), given, kind="cdc",
                                cache=self._file_models)
        with model_threads():
            plain = open_base(base.name, f.segments[0], h.width, h.height, cdc=cdc,
                              max_pixels=self.budget.max_pixels)
        precision = self._resolved_precision
        if self.precision == "auto" and h.precision in ("float32", "bfloat16"):
            # bfloat16 named by a file but not native here runs emulated (slow but correct).
            precision = h.precision
        return OpenedFile(plain, model, params.seed, h.channels, precision, params.gain_code, params.filter_codes)

    def decompress(self, data: bytes, **decode_knobs) -> Image.Image:
        steps = self.check_knobs("decode", decode_knobs)["decode_steps"]
        f = self.open(data)
        return tensor_to_pil(self._enhance(f, steps), f.channels)

    def decompress_steps(self, data: bytes, steps) -> dict[int, Image.Image]:
        """Outputs after each of `steps` decode steps from one sampling run (the realism curve)."""
        wanted = sorted({int(Knob.check(self.decode_knobs[0], s, self.pipeline)) for s in steps})
        f = self.open(data)
        out = {}

        def keep(k, x):
            if k in wanted:
                out[k] = tensor_to_pil(x, f.channels)

        self._enhance(f, wanted[-1] if wanted else 0, trajectory=keep)
        return out

    @staticmethod
    def _enhance(f: OpenedFile, steps: int, trajectory=None) -> torch.Tensor:
        x_base = _base_tensor(f.plain)
        cond = f.model.conditioning(x_base, f.plain.codec, f.plain.bpp, f.plain.quality)
        return enhance(f.model, x_base, cond, steps=steps, seed=f.seed, trajectory=trajectory,
                       precision=f.precision, gain=f.gain(), filter_codes=f.filter_codes)

    @classmethod
    def describe_params(cls, header) -> dict:
        if header.params_version not in PARAMS_VERSIONS:
            return super().describe_params(header)
        params = _decode_params(header.params, header.params_version)
        out = {"params_version": header.params_version, "seed": params.seed}
        if params.filter_codes is not None:
            out["output_filter"] = (f"{output_filter.NUM_CODES} least-squares weights /{output_filter.CODE_DENOM} "
                                    f"(signalled): {' '.join(map(str, params.filter_codes))}")
        elif params.gain_code is not None:
            out["output_gain"] = f"{params.gain_code}/{GAIN_DENOM} (signalled)"
        else:
            out["output_gain"] = "the model's table (codec, rate)"
        out["decode_schedule"] = f"{MAX_DECODE_STEPS} ancestral steps (prefix), first at λ={FIRST_STEP_LOGSNR}"
        return out


def _missing_denoiser():
    raise InvalidFieldError("this DIRAC file names no residual (denoiser) model")


def make_codec(model=None, **settings) -> DiracCodec:
    return DiracCodec(model, **settings)


__all__ = ["DiracCodec", "enhance", "schedule", "MAX_DECODE_STEPS"]
