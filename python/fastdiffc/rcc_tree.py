"""Tree-codebook RCC (scheme "tree", issue 15): the numpy reference; C++ and CUDA match it bit for bit.

Why: with 2^b independent candidates per chunk (pfr/importance) a chunk of KL ≈ b − margin bits
is reached only partly — the sample's projection onto μ falls short (≈ 85 % of ‖μ‖ at margin 2),
so each chunk delivers ≈ 0.72 of the bits it costs and later steps pay again. The best of N
independent Gaussian candidates is at best ≈ sqrt(2 ln N) − O(ln ln N) along μ: a random
codebook wastes ≈ ½ log2(4π ln N) bits per chunk, which only a much larger codebook amortises.

What: chunk c's codebook is a K-ary tree (K = 2^bits_per_level) of depth L. Every node carries
its own seeded N(0, I) increment g_node over the chunk's positions; the candidate of a leaf is
ε = (g_1 + … + g_L) / sqrt(L) along its root path, so every leaf is N(0, I) and the chunk has
K^L candidates. Because q = N(μ, I) and p = N(0, I) differ only along μ, a candidate matters
only through its projection ⟨μ, ε⟩; the encoder searches the tree with a beam of width B
(keeping the B partial paths with the largest running ⟨μ, Σ g⟩, the "M-algorithm" of tree
source coding) and sends the leaf whose projection is closest to ‖μ‖², i.e. a sample
ε = μ + n⊥ whose noise orthogonal to μ is exactly N(0, I − μ̂μ̂ᵀ) (selection never looks at
it) and whose component along μ is ≈ ‖μ‖ instead of ‖μ‖ + N(0, 1): the step's information
arrives without the shortfall. Cost: L · bits_per_level bits per chunk (uniform digits), and
B · K · L candidate-position draws per position and step (B·K·L = 8192 ≈ 2x pfr at b = 12).
A beam reaches ≈ 0.84 of the path bits at K = 16, L = 16, B = 32 (vs ≈ 0.72 for pfr at b = 12).

Determinism: node keys are 64-bit Philox outputs (domain 15: counter (digit, parent key lo,
parent key hi, 15 << 28 | step); root = (chunk, 0xFFFFFFFF)); a node's increment is the
normal stream of counter (position block, key lo, key hi, 14 << 28 | step) — the candidate
layout of pfr with (candidate, chunk) replaced by the key, so the same lane-ordered dot product
scores it. Beam ranks sort by (running sum desc, parent rank · K + digit asc); the leaf is the
argmin of |S − ‖μ‖² sqrt(L)| with the same tie rule. The decoder sums a path's increments in
level order in double and multiplies by 1 / sqrt(L) (IEEE-exact operations only).

Chunking: n = ceil(KL / (L · bits_per_level − margin)) chunks as for pfr, then the depth used
for this step is the smallest L' <= L whose L' · (bits_per_level − margin / L) covers KL / n, so a
step with little KL pays for few levels. The payload (entropy.py) carries n, L', the n · L' digits
and a guard bit (so its size bounds the digits it declares).
"""

from __future__ import annotations

import math

import numpy as np

from . import rcc_numpy as _ref

DOMAIN_TREE_NORMALS = 14  # increments of tree nodes
DOMAIN_TREE_KEYS = 15  # node-key derivation
ROOT_KEY_HI = 0xFFFFFFFF
MAX_LEVELS = 64
MAX_BEAM = 4096
MAX_LEVEL_BITS = 8


def check_tree_args(levels: int, beam: int, level_bits: int) -> None:
    if not 1 <= int(level_bits) <= MAX_LEVEL_BITS:
        raise ValueError(f"bits per tree level must be in [1, {MAX_LEVEL_BITS}], got {level_bits}")
    if not 1 <= int(levels) <= MAX_LEVELS:
        raise ValueError(f"tree levels must be in [1, {MAX_LEVELS}], got {levels}")
    if not 1 <= int(beam) <= MAX_BEAM:
        raise ValueError(f"tree beam must be in [1, {MAX_BEAM}], got {beam}")


def child_keys(key_lo, key_hi, digits, step: int, seed: int):
    """64-bit keys (lo, hi) of children `digits` of nodes (key_lo, key_hi) (broadcast)."""
    r0, r1, _, _ = _ref.philox4x32(digits, key_lo, key_hi, _ref.counter_word3(DOMAIN_TREE_KEYS, step), seed)
    return r0, r1


def root_key(chunk: int):
    return np.uint64(chunk), np.uint64(ROOT_KEY_HI)


def node_normals(key_lo, key_hi, step: int, seed: int, length: int) -> np.ndarray:
    """Increments of the nodes with the given keys: float32 (nodes, length)."""
    lo = np.asarray(key_lo, dtype=np.uint64).reshape(-1, 1)
    hi = np.asarray(key_hi, dtype=np.uint64).reshape(-1, 1)
    blocks = (length + 7) // 8
    b = np.arange(blocks, dtype=np.uint64).reshape(1, -1)
    words = _ref.philox4x32(b, lo, hi, _ref.counter_word3(DOMAIN_TREE_NORMALS, step), seed)
    w = np.stack(words, axis=-1)
    halves = np.stack([w & np.uint64(0xFFFF), w >> np.uint64(16)], axis=-1)
    idx = halves.reshape(lo.shape[0], blocks * 8)[:, :length]
    return _ref.normal_table()[idx.astype(np.int64)]


def depth_for(kl_bits: float, chunks: int, levels: int, level_bits: int, margin_sixteenths: int) -> int:
    """Depth L' of this step: the least L' with L' (16 level_bits L − margin16) >= 16 L KL / n, at most L.

    Computed on integers where it matters: the comparison is done in float64 on the encoder only
    (the decoder reads L' from the payload)."""
    if chunks <= 0:
        return 0
    per_level16 = (16 * level_bits * levels - margin_sixteenths) / levels  # sixteenths of a bit per level
    need = 16.0 * kl_bits / chunks
    return max(1, min(levels, math.ceil(need / per_level16)))


def chunk_count(kl_bits: float, dim: int, levels: int, level_bits: int, margin_sixteenths: int) -> int:
    if kl_bits <= 0.0:
        return 0
    budget16 = 16 * level_bits * levels - margin_sixteenths
    return max(1, min(dim, math.ceil(kl_bits * 16 / budget16)))


def chunk_search(mu_chunk: np.ndarray, chunk: int, depth: int, level_bits: int, beam: int, seed: int,
                 step: int) -> np.ndarray:
    """Beam search of one chunk's tree: the chosen path (depth digits)."""
    mu_chunk = np.asarray(mu_chunk, dtype=np.float32)
    length = mu_chunk.size
    k = 1 << level_bits
    m2 = float(_ref.lane_dot(mu_chunk.reshape(1, -1), mu_chunk)[0])
    target = m2 * math.sqrt(depth)
    lo0, hi0 = root_key(chunk)
    keys_lo = np.array([lo0], dtype=np.uint64)
    keys_hi = np.array([hi0], dtype=np.uint64)
    sums = np.zeros(1, dtype=np.float64)
    paths = np.zeros((1, 0), dtype=np.int64)
    digits = np.arange(k, dtype=np.uint64)
    for level in range(depth):
        c_lo, c_hi = child_keys(keys_lo[:, None], keys_hi[:, None], digits[None, :], step, seed)
        c_lo, c_hi = c_lo.reshape(-1), c_hi.reshape(-1)
        dots = _ref.lane_dot(node_normals(c_lo, c_hi, step, seed, length), mu_chunk)
        s = (sums[:, None] + dots.reshape(sums.size, k)).reshape(-1)
        flat = np.arange(s.size)
        if level < depth - 1:
            order = np.lexsort((flat, -s))[:beam]
        else:
            order = np.lexsort((flat, np.abs(s - target)))[:1]
        parent, digit = order // k, order % k
        paths = np.concatenate([paths[parent], digit[:, None]], axis=1)
        keys_lo, keys_hi, sums = c_lo[order], c_hi[order], s[order]
    return paths[0]


def select(mu_perm, chunks: int, depth: int, level_bits: int, beam: int, seed: int, step: int) -> np.ndarray:
    """Chosen paths (chunks, depth) for mu in permuted order."""
    mu_perm = np.asarray(mu_perm, dtype=np.float32)
    _ref.check_common(seed, step, mu_perm.size)
    bounds = _ref.chunk_bounds(mu_perm.size, chunks)
    out = np.empty((chunks, depth), dtype=np.int64)
    for c in range(chunks):
        out[c] = chunk_search(mu_perm[bounds[c]:bounds[c + 1]], c, depth, level_bits, beam, seed, step)
    return out


def chosen(paths, dim: int, seed: int, step: int) -> np.ndarray:
    """The leaves of the given paths laid out in permuted order: float32 (dim,)."""
    _ref.check_common(seed, step, dim)
    paths = np.asarray(paths, dtype=np.int64)
    chunks, depth = paths.shape
    bounds = _ref.chunk_bounds(dim, chunks)
    inv = 1.0 / math.sqrt(depth)
    out = np.empty(dim, dtype=np.float32)
    for c in range(chunks):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        k_lo, k_hi = root_key(c)
        acc = np.zeros(hi - lo, dtype=np.float64)
        for level in range(depth):
            k_lo, k_hi = child_keys(k_lo, k_hi, np.uint64(paths[c, level]), step, seed)
            acc = acc + node_normals(k_lo, k_hi, step, seed, hi - lo)[0].astype(np.float64)
        out[lo:hi] = (acc * inv).astype(np.float32)
    return out
