"""RCC speed (candidate-dimensions/s per backend vs the bare generation limit) and coded-bits / KL overhead.

Workload (defaults): D = 2^16 dimensions, bits_per_chunk b = 12, KL = 1000 bits, so 2^12 * 2^16
candidate-dimensions per step. `cpp` and `cuda` time the whole candidate selection of the step;
`numpy` (the reference, ~100x slower) times the same per-chunk work on a few chunks of that step;
`limit` is a bare Philox4x32-10 + table-normal generation loop over as many normals (OpenMP, same
SIMD dispatch), i.e. what any implementation must at least spend. Each figure is the best of
`--repeat` runs. `overhead` maps b = 8..16 to the mean coded bits / KL of pfr payloads at the
default margin, on steps of `--overhead-chunks` chunks.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import rcc
from .. import rcc_numpy as ref


def add_arguments(parser) -> None:
    parser.add_argument("--dim", type=int, default=1 << 16, help="dimensions per step (default 65536)")
    parser.add_argument("--bits", type=int, default=12, help="bits_per_chunk (default 12)")
    parser.add_argument("--kl", type=float, default=1000.0, help="KL of the step in bits (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure; the best counts (default 3)")
    parser.add_argument("--numpy-chunks", type=int, default=2, help="chunks the numpy reference scores (default 2)")
    parser.add_argument("--overhead-dim", type=int, default=1024, help="dimensions of the overhead steps")
    parser.add_argument("--overhead-chunks", type=int, default=16, help="chunks per overhead step (default 16)")
    parser.add_argument("--overhead-seeds", type=int, default=3, help="seeds per bits_per_chunk (default 3)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the overhead table")


def _best_time(fn, repeat: int) -> float:
    best = math.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _mu(dim: int, kl_bits: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=dim)
    mu *= math.sqrt(2.0 * kl_bits * math.log(2.0)) / np.linalg.norm(mu)
    return mu.astype(np.float32)


def measure_speed(dim: int, bits: int, kl: float, repeat: int, numpy_chunks: int) -> dict[str, float]:
    settings = rcc.RCCSettings(bits_per_chunk=bits)
    mu = _mu(dim, kl)
    chunks = settings.chunk_count(rcc.kl_bits(mu), dim)
    n_cand = 1 << bits
    work = float(n_cand) * dim  # candidate-dimensions of the step
    out: dict[str, float] = {}
    from .. import _core

    perm = _core.rcc_permutation(1, 0, dim)
    mu_perm = np.ascontiguousarray(mu[perm])
    _core.rcc_select(mu_perm, chunks, bits, 1, 0, "pfr")  # warm-up: table, threads, pages
    out["cpp"] = work / _best_time(lambda: _core.rcc_select(mu_perm, chunks, bits, 1, 0, "pfr"), repeat)
    if rcc.cuda_available():
        from .. import _cuda

        _cuda.rcc_select(mu_perm, chunks, bits, 1, 0, "pfr")
        out["cuda"] = work / _best_time(lambda: _cuda.rcc_select(mu_perm, chunks, bits, 1, 0, "pfr"), repeat)
    bounds = ref.chunk_bounds(dim, chunks)
    k = max(1, min(numpy_chunks, chunks))
    np_work = float(n_cand) * float(bounds[k] - bounds[0])
    ref.normal_table()

    def numpy_run():
        for c in range(k):
            np.argmin(ref.chunk_scores(mu_perm, chunks, bits, 1, 0, "pfr", c))

    out["numpy"] = np_work / _best_time(numpy_run, max(1, min(repeat, 2)))
    _core.rcc_generate_checksum(n_cand, dim, 1)
    out["limit"] = work / _best_time(lambda: _core.rcc_generate_checksum(n_cand, dim, 1), repeat)
    return out


def measure_overhead(dim: int, chunks: int, seeds: int, bits_range=range(8, 17)) -> dict[str, float]:
    """Mean coded bits / mean KL of pfr payloads, per bits_per_chunk, at the default margin."""
    table: dict[str, float] = {}
    for bits in bits_range:
        settings = rcc.RCCSettings(bits_per_chunk=bits)
        budget = bits - settings.margin
        coded, kl = 0.0, 0.0
        for s in range(seeds):
            # KL just below `chunks` budgets, so the step uses exactly `chunks` chunks.
            mu = _mu(dim, chunks * budget * 0.98, seed=100 + s)
            enc = rcc.encode(mu, seed=s, settings=settings, backend="auto")
            coded += 8 * len(enc.payload)
            kl += enc.kl_bits
        table[str(bits)] = coded / kl
    return table


def run(args) -> dict:
    result = measure_speed(args.dim, args.bits, args.kl, args.repeat, args.numpy_chunks)
    if not args.no_overhead:
        result["overhead"] = measure_overhead(args.overhead_dim, args.overhead_chunks, args.overhead_seeds)
    return result


def format_report(result: dict) -> str:
    lines = ["RCC candidate-dimensions per second:"]
    limit = result.get("limit")
    for name in ("cuda", "cpp", "numpy", "limit"):
        if name in result:
            extra = ""
            if limit and name != "limit":
                extra = f"  ({result[name] / limit:.2f} x limit)"
            lines.append(f"  {name:6s} {result[name] / 1e9:8.3f} G/s{extra}")
    if "cpp" in result and "numpy" in result:
        lines.append(f"  cpp / numpy = {result['cpp'] / result['numpy']:.1f}x")
    if "overhead" in result:
        lines.append("coded bits / KL (pfr, default margin):")
        for bits, ratio in result["overhead"].items():
            lines.append(f"  b={bits:>2s}  {ratio:.3f}")
    return "\n".join(lines)
