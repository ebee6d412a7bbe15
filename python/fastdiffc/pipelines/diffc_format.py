"""DiffC's file parameters (docs/design.md §4, §6): the settings sender and receiver share, and
their parameter block in the .fdc header.

`DiffCSettings` holds everything both sides need besides the model; `to_bytes` / `from_bytes`
are the parameter block: version 2 (whole-image model calls, a flat RCC codebook), 3 (version 2
+ the tiling), 4 (version 3 + the tree codebook's levels and beam: every file of RCC scheme
`tree`), 5 (version 4 + the encoder's output filter and the step count it was fitted for), and
version 1 (read only: files written before container v2, whose z_0 came from
numpy's PCG64 and whose sampling noise came from a torch.Generator). The protocol that uses
these settings is in `pipelines/diffc.py`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import rcc
from ..container import Reader, put_varint
from ..diffusion.schedules import get_schedule
from ..errors import FormatError, InvalidFieldError, UnsupportedVersionError
from ..precision import PRECISIONS
from . import output_filter
from .base import checked_seed

SCHEDULE_IDS = {"linear": 0, "cosine": 1}
SCHEME_IDS = rcc.SCHEME_IDS  # pfr 0, importance 1 (versions 1-4), tree 2 (version 4 only)
DTYPE_IDS = {"float32": 0, "float64": 1}  # the dtype byte of a version-1 parameter block
# What this build writes: 2 for images whose model calls see the whole image (every image up to
# the tile size), 3 for tiled model calls (version 2 + the tile geometry), 4 for the tree
# codebook (version 3 + its levels and beam; tile 0 = untiled). A new RCC scheme's parameters
# bump the version, so files of the flat schemes stay byte for byte what they were (2 or 3).
# 1 = numpy PCG64 z_0 + torch.Generator noise, read only.
# 5 = version 4 + the output filter (any scheme; written by DiffCCodec unless output_filter=False).
PARAMS_VERSION = 2
TREE_PARAMS_VERSION = 4
FILTER_PARAMS_VERSION = 5
PARAMS_VERSIONS = (1, 2, 3, 4, 5)
# The RCC settings a scheme brings when only the scheme is chosen (the codec's `scheme` setting or
# knob; explicit bits_per_chunk / margin / levels / beam override them). pfr: b = 10, margin 2 bits
# (docs/design.md §4). tree (bits_per_chunk = bits per level): 12 levels of 4 bits, beam 8, margin 3
# bits, chosen on centre crops (384x256) of 3 held-out photos at ≤ 2x pfr's encode time per step:
# PSNR BD-rate vs pfr −9.3% at 1.27x its encode time per step (1.31x its RCC time; timed in one
# process). Runners-up (times from the loaded tuning run): margin 2 −9.1%, margin 4 −8.7%, margin 6
# −5.8%; 16 levels beam 8 −8.4% (≈1.6x); 16 levels beam 4 −3.5% (≈0.7x); 3 bits x 16 beam 12 −7.1%;
# 2 bits x 32 beam 12 −6.0%. A flow offset of 0.25 stays best for the tree (0.4: +7 points, 0 / 0.1
# worse too). On the development photos at native size: −8.5%
# vs pfr (every photo −5.4 … −10.4%), so DiffCCodec writes the tree by default (DEFAULT_FILE_SCHEME).
# DEFAULT_SCHEME is what a bare DiffCSettings — a parameter block — holds, as before the tree: pfr.
DEFAULT_SCHEME = "pfr"
DEFAULT_FILE_SCHEME = "tree"
SCHEME_DEFAULTS = {
    "pfr": dict(bits_per_chunk=10, margin=2.0, levels=0, beam=0),
    "importance": dict(bits_per_chunk=10, margin=2.0, levels=0, beam=0),
    "tree": dict(bits_per_chunk=4, margin=3.0, levels=12, beam=8),
}
TILE_LIMITS = (16, 1 << 16)  # a tile side (a multiple of 16, the UNet's stride) in this range
# |λ| beyond 30 buys nothing (σ² = sigmoid(−30) ≈ 1e-13 is below float32 resolution of z) and
# at a few hundred sigmoid(−λ) underflows to 0, making σ_Q = 0 and the step maths infinite.
LOGSNR_LIMIT = 30.0
# Decode budget: z and a few model activations of this many pixels still fit a laptop's memory
# (64 Mpx x 3 channels x 4 bytes = 768 MB per tensor); a file declaring more is refused before
# anything is allocated.
MAX_DECODE_PIXELS = 1 << 26


def _f32(v: float) -> float:
    """Round to the nearest float32: the header stores float32, so both sides use this value."""
    return float(np.float32(v))


@dataclass(frozen=True)
class DiffCSettings:
    """Everything sender and receiver share besides the model; all of it goes into the header.

    The λ grid is `schedule` from `logsnr_min` (≈ pure noise) to `logsnr_max` in
    `grid_steps` steps; the sender transmits a prefix of it. The λ end points are stored
    as float32 and used as stored; the RCC margin is a multiple of 1/16 bit (an integer).
    RCC: `scheme` pfr / importance (2^bits_per_chunk candidates per chunk; levels = beam = 0) or
    tree (rcc_tree.py: `levels` levels of bits_per_chunk bits, beam width `beam`; version 4).
    """

    # Defaults measured on the held-out photos (docs/design.md §4, README "Defaults"): a linear log-SNR grid with
    # Δλ = 0.5 (halving it buys ~0.2 dB for twice the steps); λ_0 = −6 rather than −15 because
    # every step costs 2^b · D candidate draws whatever it carries, and the steps below −6
    # carry < 0.01 bpp (z_0 ~ N(0, I) then lacks a 0.05·x component; the protocol stays
    # exact and later steps absorb it); b = 10 is 4x cheaper than 12 for ~0.1 dB.
    seed: int = 0
    schedule: str = "linear"
    logsnr_min: float = -6.0
    logsnr_max: float = 10.0
    grid_steps: int = 32
    bits_per_chunk: int = SCHEME_DEFAULTS[DEFAULT_SCHEME]["bits_per_chunk"]
    margin: float = SCHEME_DEFAULTS[DEFAULT_SCHEME]["margin"]
    scheme: str = DEFAULT_SCHEME
    # The compute precision, recorded as the header's precision: float32; bfloat16 (the model calls
    # under autocast, everything else — z, μ, RCC — float32); or float64 (a model that computes in it).
    dtype: str = "float32"
    # 1 only for files written before container v2; 3 when tiled; 4 for the tree scheme
    params_version: int = PARAMS_VERSION
    # Tiled model calls (diffusion.tiling; version 3 only): the window side and the blended overlap
    # in pixels. 0 = every model call sees the whole image (versions 1 and 2).
    tile: int = 0
    tile_overlap: int = 0
    # The tree codebook's depth and beam width (version 4, scheme tree); 0 for the flat schemes.
    levels: int = SCHEME_DEFAULTS[DEFAULT_SCHEME]["levels"]
    beam: int = SCHEME_DEFAULTS[DEFAULT_SCHEME]["beam"]
    # The encoder's output filter (version 5; output_filter.py): it was fitted to the flow
    # reconstruction after `filter_steps` steps, so it applies only when exactly that many steps are
    # decoded (a truncated file or max_steps decodes unfiltered). 0 = no filter (and no codes).
    filter_steps: int = 0
    filter_codes: tuple[int, ...] = ()

    def __post_init__(self):
        checked_seed(self.seed)
        if self.schedule not in SCHEDULE_IDS:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {sorted(SCHEDULE_IDS)}")
        if self.dtype not in PRECISIONS:
            raise ValueError(f"DiffC precision (dtype) must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")
        if self.params_version not in PARAMS_VERSIONS:
            raise ValueError(f"DiffC parameter version must be one of {PARAMS_VERSIONS}, got {self.params_version!r}")
        if self.params_version == 1 and self.dtype not in DTYPE_IDS:
            raise ValueError(f"version-1 parameter blocks record {' or '.join(DTYPE_IDS)}, not {self.dtype}")
        if not 1 <= int(self.grid_steps) <= 100_000:
            raise ValueError(f"grid_steps must be in 1..100000, got {self.grid_steps}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "grid_steps", int(self.grid_steps))
        tile, overlap = int(self.tile), int(self.tile_overlap)
        if self.scheme == "tree" and self.params_version in (2, 3):
            object.__setattr__(self, "params_version", TREE_PARAMS_VERSION)  # the tree's fields: version 4
        if tile and self.params_version == 2:
            object.__setattr__(self, "params_version", 3)  # tiling is recorded: version 3
        tree_fields = self.params_version in (TREE_PARAMS_VERSION, FILTER_PARAMS_VERSION)
        if self.scheme == "tree" and not tree_fields:
            raise ValueError(f"RCC scheme tree needs parameter version {TREE_PARAMS_VERSION} or "
                             f"{FILTER_PARAMS_VERSION}, not {self.params_version}")
        if self.params_version == 3 or (tree_fields and (tile or overlap)):
            lo, hi = TILE_LIMITS
            if not (lo <= tile <= hi and tile % 16 == 0):
                raise ValueError(f"tile must be a multiple of 16 in {lo}..{hi} (parameter version "
                                 f"{self.params_version}), got {tile}")
            if not (0 <= overlap <= tile // 4 and overlap % 2 == 0):
                raise ValueError(f"tile_overlap must be an even number in 0..tile/4 = {tile // 4}, got {overlap}")
        elif tile or overlap:
            raise ValueError(f"tiled model calls need parameter version 3, 4 or 5, not {self.params_version}")
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "tile_overlap", overlap)
        if (self.levels or self.beam) and not tree_fields:
            raise ValueError(f"levels and beam need parameter version {TREE_PARAMS_VERSION} or "
                             f"{FILTER_PARAMS_VERSION}, not {self.params_version}")
        self._check_filter()
        # RCCSettings validates b, the margin and the tree's levels / beam (rcc_tree.check_tree_args).
        object.__setattr__(self, "rcc_settings", rcc.RCCSettings.create(self.bits_per_chunk, self.margin, self.scheme,
                                                                        self.levels, self.beam))
        object.__setattr__(self, "levels", self.rcc_settings.levels)
        object.__setattr__(self, "beam", self.rcc_settings.beam)
        for name in ("logsnr_min", "logsnr_max"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and abs(v) <= LOGSNR_LIMIT):
                raise ValueError(f"{name} must be a log-SNR in [-{LOGSNR_LIMIT:g}, {LOGSNR_LIMIT:g}], got {v}")
            object.__setattr__(self, name, _f32(v))
        get_schedule(self.schedule, self.logsnr_min, self.logsnr_max)  # validates the end points

    def _check_filter(self) -> None:
        steps, codes = self.filter_steps, tuple(self.filter_codes)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= self.grid_steps:
            raise ValueError(f"filter_steps must be an integer in 0..grid_steps = {self.grid_steps}, got {steps!r}")
        if (steps or codes) and self.params_version != FILTER_PARAMS_VERSION:
            raise ValueError(f"an output filter needs parameter version {FILTER_PARAMS_VERSION}, "
                             f"not {self.params_version}")
        if steps:
            output_filter.check_codes(codes)
        elif codes:
            raise ValueError("output filter codes without the step count they were fitted for (filter_steps 0)")
        object.__setattr__(self, "filter_codes", codes)

    # -- header serialisation ------------------------------------------------------------
    # Version 2: seed, schedule, λ range (2 x f32), grid steps, b, margin/16, scheme; the dtype is
    # the container header's precision. Version 1 had the same fields plus a dtype byte at the end.
    # Version 3 is version 2 followed by the tile side and overlap (2 varints). Version 4 is version 3
    # (tile 0 = untiled) followed by the tree's levels and beam (2 varints; 0 for a flat scheme).
    # Version 5 is version 4 followed by the filter's step count (varint) and, when it is not 0, the
    # filter block (output_filter.encode_block: an id byte and 21 int16 codes).
    def to_bytes(self) -> bytes:
        out = bytearray()
        put_varint(out, self.seed)
        out.append(SCHEDULE_IDS[self.schedule])
        out += struct.pack("<ff", self.logsnr_min, self.logsnr_max)
        put_varint(out, self.grid_steps)
        out.append(self.rcc_settings.bits_per_chunk)
        put_varint(out, self.rcc_settings.margin_sixteenths)
        out.append(SCHEME_IDS[self.scheme])
        if self.params_version == 1:
            out.append(DTYPE_IDS[self.dtype])
        if self.params_version >= 3:
            put_varint(out, self.tile)
            put_varint(out, self.tile_overlap)
        if self.params_version >= TREE_PARAMS_VERSION:
            put_varint(out, self.levels)
            put_varint(out, self.beam)
        if self.params_version == FILTER_PARAMS_VERSION:
            put_varint(out, self.filter_steps)
            if self.filter_steps:
                out += output_filter.encode_block(self.filter_codes)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, version: int = PARAMS_VERSION, precision: str = "float32") -> DiffCSettings:
        """Settings from a parameter block of the given version; `precision` is the header's
        (version 1 blocks carry their own dtype, which must agree with it)."""
        if version not in PARAMS_VERSIONS:
            raise UnsupportedVersionError(f"DiffC parameter block version {version} is not supported by this "
                                          f"build (it reads versions {', '.join(map(str, PARAMS_VERSIONS))})")
        r = Reader(data, what="DiffC parameters")
        seed = r.varint("seed")
        sched = r.u8("schedule")
        lo, hi = struct.unpack("<ff", r.take(8, "log-SNR range"))
        grid_steps = r.varint("grid steps")
        bits = r.u8("bits per chunk")
        margin = r.varint("margin") / rcc.MARGIN_UNITS
        scheme = r.u8("scheme")
        names = [(SCHEDULE_IDS, sched, "schedule"), (SCHEME_IDS, scheme, "RCC scheme")]
        if version == 1:
            names.append((DTYPE_IDS, r.u8("dtype"), "dtype"))
        tile = overlap = levels = beam = filter_steps = 0
        filter_codes = ()
        if version >= 3:
            tile, overlap = r.varint("tile"), r.varint("tile overlap")
        if version >= TREE_PARAMS_VERSION:
            levels, beam = r.varint("tree levels"), r.varint("tree beam")
        if version == FILTER_PARAMS_VERSION:
            filter_steps = r.varint("output filter steps")
            if filter_steps:
                filter_codes = output_filter.decode_block(r, "DiffC")
        if not r.done():
            raise FormatError("malformed DiffC parameters: trailing bytes")
        decoded = []
        for table, value, what in names:
            inverse = {v: k for k, v in table.items()}
            if value not in inverse:
                raise InvalidFieldError(f"unknown {what} id {value} in DiffC parameters")
            decoded.append(inverse[value])
        dtype = decoded[2] if version == 1 else precision
        if dtype != precision:
            raise InvalidFieldError(f"DiffC parameters say {dtype} but the header's precision is {precision}")
        if dtype not in PRECISIONS:
            raise InvalidFieldError(f"DiffC computes in {', '.join(PRECISIONS)}, not {dtype}")
        if decoded[1] == "tree" and version < TREE_PARAMS_VERSION:  # (construction would upgrade it)
            raise InvalidFieldError(f"RCC scheme tree in a version-{version} DiffC parameter block "
                                    f"(it needs version {TREE_PARAMS_VERSION} or {FILTER_PARAMS_VERSION})")
        try:
            return cls(seed, decoded[0], lo, hi, grid_steps, bits, margin, decoded[1], dtype, version, tile, overlap,
                       levels, beam, filter_steps, filter_codes)
        except ValueError as e:
            raise InvalidFieldError(f"invalid DiffC parameters: {e}") from None

    # -- derived -------------------------------------------------------------------------
    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype of z, x̂0 and μ_Q: bfloat16 is only the model calls' precision."""
        return torch.float64 if self.dtype == "float64" else torch.float32

    def grid(self) -> list[float]:
        """λ_0 < λ_1 < … < λ_S as Python floats (float64), the same on both sides."""
        sched = get_schedule(self.schedule, self.logsnr_min, self.logsnr_max)
        return [float(v) for v in sched.grid(self.grid_steps, dtype=torch.float64)]

    def rcc_kwargs(self) -> dict:
        return dict(seed=self.seed, settings=self.rcc_settings)

    def for_image(self, height: int, width: int, tile: int, tile_overlap: int) -> DiffCSettings:
        """The settings to write for an image: whole-image model calls when it fits one `tile` ×
        `tile` window or `tile` is 0, else the tiling; the least version that holds them (flat
        schemes: 2, or 3 when tiled, as before the tree existed; the tree: 4)."""
        if not tile or (height <= tile and width <= tile):
            tile = tile_overlap = 0
        # __post_init__ derives the version from the scheme and the tiling.
        return replace(self, params_version=PARAMS_VERSION, tile=tile, tile_overlap=tile_overlap)

    def with_filter(self, steps: int, codes: Sequence[int]) -> DiffCSettings:
        """These settings with an output filter fitted after `steps` steps (version 5). All-zero codes
        (the encoder found no filter that helps) are written too: a file's size then depends only on
        its steps, which the bpp search relies on; the decoder skips them (filter_for)."""
        if self.params_version == 1:
            raise ValueError("a version-1 DiffC parameter block predates the output filter")
        return replace(self, params_version=FILTER_PARAMS_VERSION, filter_steps=int(steps),
                       filter_codes=tuple(int(c) for c in codes) if steps else ())

    def without_filter(self) -> DiffCSettings:
        """These settings without an output filter, in the least version that holds the rest."""
        if self.params_version != FILTER_PARAMS_VERSION:
            return self
        # __post_init__ derives the version from the scheme and the tiling (a pfr file without tiling: 2).
        return replace(self, params_version=PARAMS_VERSION, filter_steps=0, filter_codes=())

    def filter_for(self, steps: int) -> tuple[int, ...] | None:
        """The output filter's codes if `steps` decoded steps are the ones it was fitted for (and it
        is not the identity: all-zero codes), else None."""
        if self.filter_steps and steps == self.filter_steps and any(self.filter_codes):
            return self.filter_codes
        return None

    def with_scheme(self, scheme: str) -> DiffCSettings:
        """These settings with another RCC scheme and that scheme's RCC defaults (SCHEME_DEFAULTS)."""
        if scheme not in SCHEME_DEFAULTS:
            raise ValueError(f"unknown RCC scheme {scheme!r}; choose from {sorted(SCHEME_DEFAULTS)}")
        # __post_init__ derives the version (tiling and scheme) from the least one
        return replace(self, scheme=scheme, params_version=PARAMS_VERSION, **SCHEME_DEFAULTS[scheme])
