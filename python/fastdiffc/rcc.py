"""Reverse channel coding of a Gaussian: communicate ε ~ N(μ, I) against the prior N(0, I) (docs/design.md §5).

    enc = encode(mu, seed=s, step=k)          # enc.payload: bytes, enc.sample: ε (mu's shape)
    eps = decode(enc.payload, mu.size, seed=s, step=k)   # == enc.sample.ravel(), bit for bit

A step's dimensions are split by a permutation shared through (seed, step) into n near-equal
chunks, n = ceil(KL_bits / (b − margin)); chunk c picks one of 2^b seeded candidates (`pfr`:
Poisson functional representation, `importance`: index drawn ∝ its importance weight) and the
payload carries n and the indices (fastdiffc.entropy). Decoding regenerates only the chosen
candidates. A step with μ = 0 has KL = 0, zero chunks, and an empty payload; its sample is a
prior draw from the shared randomness.

Backends compute identical bits: "cpp" (fastdiffc._core, OpenMP), "cuda" (fastdiffc._cuda,
selection only; the rest runs on the CPU), "numpy" (fastdiffc.rcc_numpy, the reference).

Choosing b and the margin: a step costs 2^b · D normal draws to encode. With finitely many
candidates the sample is pulled towards the prior; the pull shrinks as the margin grows, while the
coded size grows (more chunks, each with its index-coding overhead). Measured with pfr, b = 10,
8 chunks (tests/test_rcc_stats.py has the exact settings the statistics hold for):
margin 1 / 2 / 4 / 6 bits -> coded bits / KL 1.35 / 1.48 / 1.84 / 2.49, and the sample reaches
82 / 85 / 90 / 97 % of the shift μ. A step payload also has ~20 bits of fixed cost (chunk count
and the ANS coder's final state); zero-KL steps cost 0 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import entropy
from . import rcc_numpy as _ref
from . import rcc_tree as _tree

SCHEMES = ("pfr", "importance")  # flat codebooks: 2^b independent candidates per chunk
ALL_SCHEMES = SCHEMES + ("tree",)  # + the tree codebook (rcc_tree.py)
BACKENDS = ("auto", "cpp", "cuda", "numpy")
MIN_BITS_PER_CHUNK = 1
MAX_BITS_PER_CHUNK = _ref.MAX_BITS
MARGIN_UNITS = 16  # margins are stored as integer sixteenths of a bit
DEFAULT_BITS_PER_CHUNK = 12
DEFAULT_MARGIN = 2.0
# Tree codebook defaults (scheme "tree", rcc_tree.py): 16 levels of 4 bits, beam 32 — 64 path bits
# per chunk, 8192 candidate-position draws per position (2x pfr at b = 12); margin 8 bits.
DEFAULT_TREE_LEVEL_BITS = 4
DEFAULT_TREE_LEVELS = 16
DEFAULT_TREE_BEAM = 32
DEFAULT_TREE_MARGIN = 8.0

# Scheme ids as stored in a file (DiffC parameter block); one table for every reader and writer.
SCHEME_IDS = {"pfr": 0, "importance": 1, "tree": 2}


@dataclass(frozen=True)
class RCCSettings:
    """RCC settings as integers, as stored in a file header (`to_dict` / `from_dict`).

    bits_per_chunk b in [1, 20]: 2^b candidates per chunk. margin_sixteenths m: the target KL
    per chunk is b − m/16 bits; 0 <= m <= 16 (b − 1), so every chunk carries at least 1 bit.

    Scheme "tree" (rcc_tree.py): b in [1, 8] is the bits per tree level (2^b children per node),
    `levels` L in [1, 64] and `beam` B in [1, 4096]; a chunk's path costs L·b bits and the target
    KL per chunk is L·b − m/16 bits (0 <= m <= 16 (L·b − 1)). Other schemes have levels = beam = 0.
    """

    bits_per_chunk: int = DEFAULT_BITS_PER_CHUNK
    margin_sixteenths: int = int(DEFAULT_MARGIN * MARGIN_UNITS)
    scheme: str = "pfr"
    levels: int = 0
    beam: int = 0

    def __post_init__(self) -> None:
        b, m = self.bits_per_chunk, self.margin_sixteenths
        if self.scheme not in ALL_SCHEMES:
            raise ValueError(f"unknown RCC scheme {self.scheme!r}; expected one of {ALL_SCHEMES}")
        for name, v in (("bits_per_chunk", b), ("margin_sixteenths", m), ("levels", self.levels), ("beam", self.beam)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.scheme == "tree":
            _tree.check_tree_args(self.levels, self.beam, b)
            total = b * self.levels
        else:
            if not MIN_BITS_PER_CHUNK <= b <= MAX_BITS_PER_CHUNK:
                raise ValueError(f"bits_per_chunk must be in [{MIN_BITS_PER_CHUNK}, {MAX_BITS_PER_CHUNK}], got {b}")
            if self.levels or self.beam:
                raise ValueError(f"levels and beam belong to the tree scheme, not {self.scheme!r}")
            total = b
        if not 0 <= m <= MARGIN_UNITS * (total - 1):
            what = "levels · bits_per_chunk" if self.scheme == "tree" else "bits_per_chunk"
            raise ValueError(f"margin must be in [0, {what} - 1] = [0, {total - 1}] bits, got {m / MARGIN_UNITS}")
        for name in ("bits_per_chunk", "margin_sixteenths", "levels", "beam"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def create(cls, bits_per_chunk: int = DEFAULT_BITS_PER_CHUNK, margin: float = DEFAULT_MARGIN,
               scheme: str = "pfr", levels: int | None = None, beam: int | None = None) -> RCCSettings:
        """Settings from a margin in bits (a multiple of 1/16); the tree scheme's levels and beam
        default to DEFAULT_TREE_LEVELS / DEFAULT_TREE_BEAM."""
        try:
            scaled = float(margin) * MARGIN_UNITS
        except (TypeError, ValueError):
            raise ValueError(f"margin must be a number of bits, got {margin!r}") from None
        if not math.isfinite(scaled) or scaled != round(scaled):
            raise ValueError(f"margin must be a finite multiple of 1/{MARGIN_UNITS} bit, got {margin!r}")
        if scheme == "tree":
            levels = DEFAULT_TREE_LEVELS if levels is None else levels
            beam = DEFAULT_TREE_BEAM if beam is None else beam
        return cls(bits_per_chunk, int(round(scaled)), scheme, levels or 0, beam or 0)

    @property
    def margin(self) -> float:
        return self.margin_sixteenths / MARGIN_UNITS

    @property
    def candidates(self) -> int:
        return 1 << self.bits_per_chunk

    @property
    def chunk_bits(self) -> int:
        """Bits of one chunk's index: b, or levels · b for the tree."""
        return self.bits_per_chunk * self.levels if self.scheme == "tree" else self.bits_per_chunk

    def chunk_count(self, kl_bits: float, dim: int) -> int:
        """n = ceil(KL / (chunk bits − margin)), at most dim; 0 only when KL is exactly 0."""
        if kl_bits <= 0.0:
            return 0
        budget16 = MARGIN_UNITS * self.chunk_bits - self.margin_sixteenths
        return max(1, min(dim, math.ceil(kl_bits * MARGIN_UNITS / budget16)))

    def to_dict(self) -> dict[str, int]:
        d = {"bits_per_chunk": self.bits_per_chunk, "margin_sixteenths": self.margin_sixteenths,
             "scheme": SCHEME_IDS[self.scheme]}
        if self.scheme == "tree":
            d.update(levels=self.levels, beam=self.beam)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RCCSettings:
        try:
            scheme_id = int(d["scheme"])
            names = {v: k for k, v in SCHEME_IDS.items()}
            if scheme_id not in names:
                raise ValueError(f"unknown RCC scheme id {scheme_id}")
            return cls(int(d["bits_per_chunk"]), int(d["margin_sixteenths"]), names[scheme_id],
                       int(d.get("levels", 0)), int(d.get("beam", 0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad RCC settings {d!r}: {e}") from None


@dataclass(frozen=True)
class Encoded:
    """One coded step: payload bytes, the communicated sample ε (float32, μ's shape), KL in bits, chunk count."""

    payload: bytes
    sample: np.ndarray
    kl_bits: float
    chunks: int
    indices: np.ndarray


# ------------------------------------------------------------------ backends
class _NumpyBackend:
    name = "numpy"

    def permutation(self, seed, step, dim):
        return _ref.permutation(seed, step, dim)

    def select(self, mu_perm, chunks, bits, seed, step, scheme):
        return _ref.select(mu_perm, chunks, bits, seed, step, scheme)

    def chosen(self, indices, dim, bits, seed, step):
        return _ref.chosen_candidates(indices, dim, seed, step)

    def tree_select(self, mu_perm, chunks, depth, level_bits, beam, seed, step):
        return _tree.select(mu_perm, chunks, depth, level_bits, beam, seed, step)

    def tree_chosen(self, paths, dim, level_bits, seed, step):
        return _tree.chosen(paths, dim, seed, step)


class _CppBackend:
    name = "cpp"

    def __init__(self) -> None:
        from . import _core

        if not hasattr(_core, "rcc_select"):
            raise RuntimeError("fastdiffc._core was built without RCC support; rebuild (scripts/dev_build.sh)")
        self._core = _core

    def permutation(self, seed, step, dim):
        return self._core.rcc_permutation(int(seed), int(step), int(dim))

    def select(self, mu_perm, chunks, bits, seed, step, scheme):
        return self._core.rcc_select(mu_perm, int(chunks), int(bits), int(seed), int(step), scheme)

    def chosen(self, indices, dim, bits, seed, step):
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        return self._core.rcc_chosen(idx, int(dim), int(bits), int(seed), int(step))

    def tree_select(self, mu_perm, chunks, depth, level_bits, beam, seed, step):
        return self._core.rcc_tree_select(mu_perm, int(chunks), int(depth), int(level_bits), int(beam), int(seed),
                                          int(step))

    def tree_chosen(self, paths, dim, level_bits, seed, step):
        p = np.ascontiguousarray(paths, dtype=np.int64)
        return self._core.rcc_tree_chosen(p, int(dim), int(level_bits), int(seed), int(step))


class _CudaBackend(_CppBackend):
    """Candidate selection on the GPU; permutation and the chosen candidates come from the CPU (cheap, identical)."""

    name = "cuda"

    def __init__(self) -> None:
        super().__init__()
        from . import _cuda

        if _cuda.device_count() <= 0:
            raise RuntimeError("backend='cuda' needs a CUDA device; none was found")
        self._cuda = _cuda

    def select(self, mu_perm, chunks, bits, seed, step, scheme):
        return self._cuda.rcc_select(mu_perm, int(chunks), int(bits), int(seed), int(step), scheme)

    def tree_select(self, mu_perm, chunks, depth, level_bits, beam, seed, step):
        return self._cuda.rcc_tree_select(mu_perm, int(chunks), int(depth), int(level_bits), int(beam), int(seed),
                                          int(step))


def cuda_available() -> bool:
    try:
        from . import _cuda
    except ImportError:
        return False
    return hasattr(_cuda, "rcc_select") and _cuda.device_count() > 0


def cpp_available() -> bool:
    try:
        from . import _core
    except ImportError:
        return False
    return hasattr(_core, "rcc_select")


def get_backend(name: str = "auto"):
    """auto: cuda when a device exists, else cpp (numpy only if the native module is missing)."""
    if name == "auto":
        name = "cuda" if cuda_available() else "cpp" if cpp_available() else "numpy"
    if name == "numpy":
        return _NumpyBackend()
    if name == "cpp":
        return _CppBackend()
    if name == "cuda":
        return _CudaBackend()
    raise ValueError(f"unknown RCC backend {name!r}; expected one of {BACKENDS}")


# ------------------------------------------------------------------ public API
def _settings(bits_per_chunk, margin, scheme, settings) -> RCCSettings:
    if settings is not None:
        if not isinstance(settings, RCCSettings):
            raise TypeError("settings must be an RCCSettings")
        return settings
    return RCCSettings.create(bits_per_chunk, margin, scheme)


def _check_seed_step(seed, step) -> tuple[int, int]:
    for name, v in (("seed", seed), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    seed, step = int(seed), int(step)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    if not 0 <= step < _ref.STEP_LIMIT:
        raise ValueError(f"step must be in [0, 2^28), got {step}")
    return seed, step


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise ValueError(f"dim must be an integer, got {dim!r}")
    if not 1 <= int(dim) < _ref.DIM_LIMIT:
        raise ValueError(f"dim must be in [1, 2^31), got {dim}")
    return int(dim)


def kl_bits(mu) -> float:
    """KL[N(μ, I) ‖ N(0, I)] = ‖μ‖² / 2 nats, in bits."""
    m = np.asarray(mu, dtype=np.float32).astype(np.float64).ravel()
    return float(np.dot(m, m)) / (2.0 * math.log(2.0))


def encode(mu, *, seed: int, step: int = 0, bits_per_chunk: int = DEFAULT_BITS_PER_CHUNK,
           margin: float = DEFAULT_MARGIN, scheme: str = "pfr", backend: str = "auto",
           settings: RCCSettings | None = None) -> Encoded:
    """Communicate ε ≈ N(mu, I): returns the payload and the sample the decoder will reproduce."""
    cfg = _settings(bits_per_chunk, margin, scheme, settings)
    seed, step = _check_seed_step(seed, step)
    try:
        arr = np.asarray(mu, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"mu must be convertible to a float32 array: {e}") from None
    if arr.size == 0:
        raise ValueError("mu is empty")
    dim = _check_dim(arr.size)
    flat = np.ascontiguousarray(arr.reshape(-1))
    if not np.all(np.isfinite(flat)):
        raise ValueError("mu contains NaN or infinity")
    be = get_backend(backend)
    kl = kl_bits(flat)
    chunks = cfg.chunk_count(kl, dim)
    perm = be.permutation(seed, step, dim)
    if cfg.scheme == "tree" and chunks:
        depth = _tree.depth_for(kl, chunks, cfg.levels, cfg.bits_per_chunk, cfg.margin_sixteenths)
        paths = np.asarray(be.tree_select(flat[perm], chunks, depth, cfg.bits_per_chunk, cfg.beam, seed, step),
                           np.int64).reshape(chunks, depth)
        payload = entropy.encode_tree_paths(paths, level_bits=cfg.bits_per_chunk)
        sample = np.empty(dim, dtype=np.float32)
        sample[perm] = be.tree_chosen(paths, dim, cfg.bits_per_chunk, seed, step)
        return Encoded(payload=payload, sample=sample.reshape(arr.shape), kl_bits=kl, chunks=chunks, indices=paths)
    if cfg.scheme == "tree":  # KL = 0: the empty tree payload, and the free prior draw of every scheme
        return Encoded(payload=entropy.encode_tree_paths(np.zeros((0, 1), np.int64), level_bits=cfg.bits_per_chunk),
                       sample=_assemble(be, np.zeros(0, np.int64), perm, dim, 1, seed, step).reshape(arr.shape),
                       kl_bits=kl, chunks=0, indices=np.zeros((0, 1), np.int64))
    if chunks:
        indices = np.asarray(be.select(flat[perm], chunks, cfg.bits_per_chunk, seed, step, cfg.scheme), np.int64)
    else:
        indices = np.zeros(0, dtype=np.int64)
    payload = entropy.encode_rcc_indices(indices, bits=cfg.bits_per_chunk, scheme=cfg.scheme)
    sample = _assemble(be, indices, perm, dim, cfg.bits_per_chunk, seed, step)
    return Encoded(payload=payload, sample=sample.reshape(arr.shape), kl_bits=kl, chunks=chunks, indices=indices)


def decode(payload: bytes, dim: int, *, seed: int, step: int = 0, bits_per_chunk: int = DEFAULT_BITS_PER_CHUNK,
           margin: float = DEFAULT_MARGIN, scheme: str = "pfr", backend: str = "auto",
           settings: RCCSettings | None = None) -> np.ndarray:
    """The float32 (dim,) sample that `encode` communicated with `payload` (same seed, step, settings)."""
    cfg = _settings(bits_per_chunk, margin, scheme, settings)
    seed, step = _check_seed_step(seed, step)
    dim = _check_dim(dim)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    be = get_backend(backend)
    if be.name == "cuda":  # decoding is cheap; the CPU path avoids a device round trip
        be = _CppBackend()
    if cfg.scheme == "tree":
        paths = entropy.decode_tree_paths(bytes(payload), level_bits=cfg.bits_per_chunk, max_chunks=dim,
                                          max_depth=cfg.levels)
        perm = be.permutation(seed, step, dim)
        if paths.shape[0] == 0:
            return _assemble(be, np.zeros(0, np.int64), perm, dim, 1, seed, step)
        sample = np.empty(dim, dtype=np.float32)
        sample[perm] = be.tree_chosen(paths, dim, cfg.bits_per_chunk, seed, step)
        return sample
    indices = entropy.decode_rcc_indices(bytes(payload), bits=cfg.bits_per_chunk, scheme=cfg.scheme, max_chunks=dim)
    perm = be.permutation(seed, step, dim)
    return _assemble(be, indices, perm, dim, cfg.bits_per_chunk, seed, step)


def normal_stream(seed: int, domain: int, n: int, *, stream: int = 0, dtype=np.float32,
                  backend: str = "auto") -> np.ndarray:
    """n standard normals shared by sender and receiver: Philox4x32-10 keyed by `seed`, counter
    (block, stream, 0, domain << 28), and RCC's normal transform (a 65,536-entry quantile table,
    so values are exact float32 quantiles of N(0, 1), |x| <= 4.17). Identical bits on every
    platform and backend ("cpp" or the "numpy" reference; "auto" = cpp when built).

    `domain` is 3..15 (0..2 are RCC's): rcc_numpy.DOMAIN_LATENT (DiffC's z_0) and DOMAIN_SAMPLER
    (its sampling noise) are taken. `dtype` float32 or float64 (the same values, widened).
    """
    seed, _ = _check_seed_step(seed, 0)
    for name, v, hi in (("domain", domain, 16), ("stream", stream, 1 << 32), ("n", n, _ref.DIM_LIMIT)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < hi:
            raise ValueError(f"{name} must be an integer in [0, {hi}), got {v!r}")
    if int(domain) not in _ref.STREAM_DOMAINS:
        raise ValueError(f"domain must be in [3, 16) (0..2 are RCC's), got {domain}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    name = get_backend("cpp" if backend == "cuda" else backend).name
    if name == "numpy":
        out = _ref.normal_stream(seed, int(domain), int(n), int(stream))
    else:
        from . import _core

        out = _core.normal_stream(seed, int(domain), int(n), int(stream))
    return out.astype(dtype, copy=False)


def _assemble(be, indices: np.ndarray, perm: np.ndarray, dim: int, bits: int, seed: int, step: int) -> np.ndarray:
    # Zero chunks (μ = 0): the sample is candidate 0 of a single chunk, a free draw from the prior.
    chosen = be.chosen(indices if indices.size else np.zeros(1, dtype=np.int64), dim, bits, seed, step)
    sample = np.empty(dim, dtype=np.float32)
    sample[perm] = chosen
    return sample
