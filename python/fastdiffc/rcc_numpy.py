"""Pure-numpy reference of the RCC maths (docs/design.md §5); the C++ and CUDA backends match it bit for bit.

Everything here is defined by IEEE double/float32 arithmetic (+, -, *, /, floor, frexp, ldexp)
and integer operations only: no libm transcendental functions, whose last bits differ between
platforms and between numpy and C. The C++ twin lives in csrc/rng/ and csrc/rcc/.

Random numbers: Philox4x32-10 keyed by the 64-bit seed. The 128-bit counter is
(c0, c1, c2, c3) = (position block, candidate, chunk, domain << 28 | step); every index is its
own 32-bit counter word, so nothing is ever packed into an overflowing 32-bit offset.
"""

from __future__ import annotations

import functools

import numpy as np

# ------------------------------------------------------------------ constants shared with C++
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF

DOMAIN_CANDIDATES = 0  # normals of candidate i, chunk c
DOMAIN_SELECTION = 1  # exponential variates for the arrival times / Gumbel-style selection
DOMAIN_PERMUTATION = 2  # sort keys of the shared permutation
DOMAIN_LATENT = 3  # DiffC's initial latent z_0 (normal_stream)
DOMAIN_SAMPLER = 4  # DiffC's ancestral-sampling noise, one stream per sampler step
STREAM_DOMAINS = range(3, 16)  # domains of normal_stream; 0..2 belong to RCC
STEP_LIMIT = 1 << 28  # step occupies the low 28 bits of counter word 3
DIM_LIMIT = 1 << 31  # dimensions are indexed by 31-bit integers (permutation packing)
MAX_BITS = 20  # 2^20 candidates per chunk at most
ARRIVAL_FRACTION_BITS = 28  # exponentials are fixed-point integers in units of 2^-28
LANES = 16  # dot products accumulate in 16 double lanes (one per Philox block of a batch), then a fixed tree
BATCH_NORMALS = 8 * LANES  # positions per batch of 16 Philox blocks

LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n * LN2_HI is exact for |n| < 2^20
LN2_LO = 1.90821492927058770002e-10
LOG2E = 1.44269504088896338700e00
SQRT_HALF = 0.70710678118654752440
INV_SQRT_2PI = 0.39894228040143267794


# ------------------------------------------------------------------ Philox4x32-10
def philox4x32(c0, c1, c2, c3, seed: int):
    """Philox4x32-10 on arrays of 32-bit counter words (broadcast); returns four uint64 arrays < 2^32."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & MASK32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    k0 = seed & MASK32
    k1 = (seed >> 32) & MASK32
    m0 = np.uint64(PHILOX_M0)
    m1 = np.uint64(PHILOX_M1)
    s32 = np.uint64(32)
    lo_mask = np.uint64(MASK32)
    for r in range(10):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = m0 * c0
        p1 = m1 * c2
        hi0, lo0 = p0 >> s32, p0 & lo_mask
        hi1, lo1 = p1 >> s32, p1 & lo_mask
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    return c0, c1, c2, c3


# ------------------------------------------------------------------ deterministic elementary functions
def det_exp(y):
    """exp(y) for y <= 0 by range reduction and a fixed Taylor polynomial (no libm)."""
    y = np.asarray(y, dtype=np.float64)
    n = np.floor(y * LOG2E + 0.5)
    r = (y - n * LN2_HI) - n * LN2_LO
    e = np.ones_like(r)
    for k in range(18, 0, -1):
        e = 1.0 + e * r / float(k)
    return np.ldexp(e, n.astype(np.int32))


def det_log(x):
    """Natural log of x > 0 via frexp and the atanh series (no libm)."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)
    small = m < SQRT_HALF
    m = np.where(small, m * 2.0, m)
    e = (e - small.astype(e.dtype)).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    poly = np.full_like(s, 1.0 / 25.0)
    for k in range(11, -1, -1):
        poly = 1.0 / float(2 * k + 1) + s2 * poly
    return e * LN2_HI + (e * LN2_LO + 2.0 * s * poly)


def _normal_cdf_nonpositive(x):
    """Phi(x) for x <= 0: Taylor series of the error function above -3, the Mills-ratio continued fraction below."""
    x = np.asarray(x, dtype=np.float64)
    phi = det_exp(-0.5 * x * x) * INV_SQRT_2PI
    # series: Phi(x) = 1/2 + phi(x) * sum_n x^(2n+1) / (2n+1)!!
    term = x.copy()
    total = x.copy()
    x2 = x * x
    for n in range(1, 61):
        term = term * x2 / float(2 * n + 1)
        total = total + term
    series = 0.5 + phi * total
    # continued fraction: Phi(-t) = phi(t) / (t + 1/(t + 2/(t + 3/(t + ...))))
    t = np.where(x < -3.0, -x, 3.0)
    f = t.copy()
    for k in range(200, 0, -1):
        f = t + float(k) / f
    tail = phi / f
    return np.where(x < -3.0, tail, series)


# Acklam's rational approximation of the normal quantile: only the starting point of Newton's method.
_ACKLAM_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
             -3.066479806614716e01, 2.506628277459239e00)
_ACKLAM_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
             -1.328068155288572e01)
_ACKLAM_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
             4.374664141464968e00, 2.938163982698783e00)
_ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _quantile_guess(p):
    """Acklam's approximation for 0 < p <= 1/2 (relative error ~1e-9)."""
    q = p - 0.5
    r = q * q
    num = np.full_like(p, _ACKLAM_A[0])
    for a in _ACKLAM_A[1:]:
        num = num * r + a
    den = np.full_like(p, _ACKLAM_B[0])
    for b in _ACKLAM_B[1:]:
        den = den * r + b
    central = num * q / (den * r + 1.0)
    t = np.sqrt(-2.0 * det_log(p))
    num = np.full_like(p, _ACKLAM_C[0])
    for c in _ACKLAM_C[1:]:
        num = num * t + c
    den = np.full_like(p, _ACKLAM_D[0])
    for d in _ACKLAM_D[1:]:
        den = den * t + d
    tail = num / (den * t + 1.0)
    return np.where(p < 0.02425, tail, central)


@functools.lru_cache(maxsize=1)
def normal_table() -> np.ndarray:
    """The 65,536 float32 normal quantiles Phi^-1((k + 1/2) / 65536), exactly antisymmetric."""
    k = np.arange(32768, dtype=np.float64)
    p = (k + 0.5) / 65536.0
    x = _quantile_guess(p)
    for _ in range(3):  # Newton on Phi(x) = p: the guess is good to ~1e-9, so this reaches double precision
        pdf = det_exp(-0.5 * x * x) * INV_SQRT_2PI
        x = x - (_normal_cdf_nonpositive(x) - p) / pdf
    half = x.astype(np.float32)
    table = np.concatenate([half, -half[::-1]])
    table.setflags(write=False)
    return table


# ------------------------------------------------------------------ shared structure of a step
def check_common(seed: int, step: int, dim: int) -> None:
    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed}")
    if not 0 <= int(step) < STEP_LIMIT:
        raise ValueError(f"step must be an integer in [0, 2^28), got {step}")
    if not 0 < int(dim) < DIM_LIMIT:
        raise ValueError(f"dimension must be in [1, 2^31), got {dim}")


def counter_word3(domain: int, step: int) -> int:
    return (domain << 28) | step


def permutation(seed: int, step: int, dim: int) -> np.ndarray:
    """The shared permutation of range(dim) for (seed, step): sort by 33-bit Philox keys, ties by index."""
    check_common(seed, step, dim)
    j = np.arange(dim, dtype=np.uint64)
    r0, r1, r2, r3 = philox4x32(j >> np.uint64(1), 0, 0, counter_word3(DOMAIN_PERMUTATION, step), seed)
    odd = (j & np.uint64(1)).astype(bool)
    lo = np.where(odd, r2, r0)
    hi = np.where(odd, r3, r1)
    key = (hi << np.uint64(32)) | lo
    packed = ((key >> np.uint64(31)) << np.uint64(31)) | j
    return (np.sort(packed) & np.uint64(DIM_LIMIT - 1)).astype(np.int64)


def chunk_bounds(dim: int, chunks: int) -> np.ndarray:
    """start offsets (chunks + 1 of them) of n near-equal chunks: start_c = floor(c * dim / n)."""
    c = np.arange(chunks + 1, dtype=np.int64)
    return (c * dim) // chunks


def candidate_normals(seed: int, step: int, chunk: int, candidates, length: int) -> np.ndarray:
    """Normals of the given candidates of one chunk: float32 array (len(candidates), length)."""
    cand = np.asarray(candidates, dtype=np.uint64).reshape(-1, 1)
    blocks = (length + 7) // 8
    b = np.arange(blocks, dtype=np.uint64).reshape(1, -1)
    words = philox4x32(b, cand, chunk, counter_word3(DOMAIN_CANDIDATES, step), seed)
    w = np.stack(words, axis=-1)  # (cand, blocks, 4)
    halves = np.stack([w & np.uint64(0xFFFF), w >> np.uint64(16)], axis=-1)  # (cand, blocks, 4, 2)
    idx = halves.reshape(cand.shape[0], blocks * 8)[:, :length]
    return normal_table()[idx.astype(np.int64)]


def arrival_log_terms(seed: int, step: int, chunk: int, n_candidates: int, scheme: str) -> np.ndarray:
    """log T_i (pfr: T = cumulative sum of exponentials) or log E_i (importance), fixed-point exact sums."""
    i = np.arange(n_candidates, dtype=np.uint64)
    r0, r1, _, _ = philox4x32(0, i, chunk, counter_word3(DOMAIN_SELECTION, step), seed)
    u52 = (r1 << np.uint64(20)) | (r0 >> np.uint64(12))
    u = (u52.astype(np.float64) * 2.0 + 1.0) * 2.0**-53
    e = -det_log(u)
    eq = np.floor(e * float(1 << ARRIVAL_FRACTION_BITS)).astype(np.uint64) + np.uint64(1)
    if scheme == "pfr":
        eq = np.cumsum(eq, dtype=np.uint64)
    return det_log(eq.astype(np.float64))


def lane_dot(eps: np.ndarray, mu_chunk: np.ndarray) -> np.ndarray:
    """<mu, eps_i> for every row, in the exact order of the C++/CUDA code.

    Products in double (exact); 16 lanes, lane b taking the positions of Philox block b mod 16
    (positions 8b .. 8b+7 of every 128-position batch) in increasing order; then a fixed tree.
    """
    rows, length = eps.shape
    batches = max(1, -(-length // BATCH_NORMALS))
    prod = np.zeros((rows, batches * BATCH_NORMALS), dtype=np.float64)
    prod[:, :length] = eps.astype(np.float64) * mu_chunk.astype(np.float64)
    prod = prod.reshape(rows, batches, LANES, 8)
    acc = np.zeros((rows, LANES), dtype=np.float64)
    for q in range(batches):
        for pos in range(8):
            acc = acc + prod[:, q, :, pos]
    width = LANES
    while width > 1:
        width //= 2
        acc = acc[:, :width] + acc[:, width : 2 * width]
    return acc[:, 0]


def chunk_scores(mu_perm, chunks: int, bits: int, seed: int, step: int, scheme: str, chunk: int) -> np.ndarray:
    """Selection scores log T_i - <mu_c, eps_i> of every candidate of one chunk (argmin wins)."""
    mu_perm = np.asarray(mu_perm, dtype=np.float32)
    bounds = chunk_bounds(mu_perm.size, chunks)
    lo, hi = int(bounds[chunk]), int(bounds[chunk + 1])
    n_cand = 1 << bits
    eps = candidate_normals(seed, step, chunk, np.arange(n_cand), hi - lo)
    return arrival_log_terms(seed, step, chunk, n_cand, scheme) - lane_dot(eps, mu_perm[lo:hi])


def select(mu_perm, chunks: int, bits: int, seed: int, step: int, scheme: str) -> np.ndarray:
    """Chosen candidate index of every chunk (ties: lowest index)."""
    mu_perm = np.asarray(mu_perm, dtype=np.float32)
    check_common(seed, step, mu_perm.size)
    out = np.empty(chunks, dtype=np.int64)
    for c in range(chunks):
        out[c] = int(np.argmin(chunk_scores(mu_perm, chunks, bits, seed, step, scheme, c)))
    return out


def chosen_candidates(indices, dim: int, seed: int, step: int) -> np.ndarray:
    """The chosen candidates laid out in permuted order: float32 (dim,)."""
    check_common(seed, step, dim)
    indices = np.asarray(indices, dtype=np.int64)
    chunks = indices.size
    bounds = chunk_bounds(dim, chunks)
    out = np.empty(dim, dtype=np.float32)
    for c in range(chunks):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        out[lo:hi] = candidate_normals(seed, step, c, [int(indices[c])], hi - lo)[0]
    return out


def normal_stream(seed: int, domain: int, n: int, stream: int = 0) -> np.ndarray:
    """n float32 standard normals of stream `stream` in `domain` (3..15): Philox counter
    (j // 8, stream, 0, domain << 28), normal j = table[16-bit half j % 8 of that block]."""
    if domain not in STREAM_DOMAINS:
        raise ValueError(f"normal stream domain must be in [3, 16) (0..2 are RCC's), got {domain}")
    if not 0 <= n < DIM_LIMIT:
        raise ValueError(f"n must be in [0, 2^31), got {n}")
    blocks = (n + 7) // 8
    words = philox4x32(np.arange(blocks, dtype=np.uint64), stream, 0, counter_word3(domain, 0), seed)
    w = np.stack(words, axis=-1)  # (blocks, 4)
    halves = np.stack([w & np.uint64(0xFFFF), w >> np.uint64(16)], axis=-1)  # (blocks, 4, 2)
    return normal_table()[halves.reshape(-1)[:n].astype(np.int64)]
