"""pytest-benchmark suite for RCC: the same figures as `fastdiffc bench rcc`, at a smaller size.

    python -m pytest benchmarks/test_bench_rcc.py --benchmark-enable

Each benchmark stores its candidate-dimensions per call in `extra_info["candidate_dims"]`, so
candidate-dimensions/s = candidate_dims / mean time. The targets (cpp >= 20x numpy, cpp within
2x of the bare generation `limit`) are read off these numbers, not asserted.
"""

import math

import numpy as np
import pytest
from fastdiffc import _core, rcc
from fastdiffc import rcc_numpy as ref

DIM = 1 << 14
BITS = 10
KL_BITS = 250.0


@pytest.fixture(scope="module")
def step():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=DIM)
    mu *= math.sqrt(2 * KL_BITS * math.log(2)) / np.linalg.norm(mu)
    mu = mu.astype(np.float32)
    chunks = rcc.RCCSettings(bits_per_chunk=BITS).chunk_count(rcc.kl_bits(mu), DIM)
    perm = _core.rcc_permutation(1, 0, DIM)
    return np.ascontiguousarray(mu[perm]), chunks


@pytest.mark.parametrize("scheme", rcc.SCHEMES)
def test_cpp_select(benchmark, step, scheme):
    mu_perm, chunks = step
    benchmark.extra_info["candidate_dims"] = (1 << BITS) * DIM
    idx = benchmark(_core.rcc_select, mu_perm, chunks, BITS, 1, 0, scheme)
    assert idx.shape == (chunks,)


def test_numpy_reference_one_chunk(benchmark, step):
    mu_perm, chunks = step
    bounds = ref.chunk_bounds(DIM, chunks)
    benchmark.extra_info["candidate_dims"] = (1 << BITS) * int(bounds[1] - bounds[0])
    ref.normal_table()
    scores = benchmark(ref.chunk_scores, mu_perm, chunks, BITS, 1, 0, "pfr", 0)
    assert scores.shape == (1 << BITS,)


def test_limit_bare_generation(benchmark):
    benchmark.extra_info["candidate_dims"] = (1 << BITS) * DIM
    total = benchmark(_core.rcc_generate_checksum, 1 << BITS, DIM, 1)
    assert math.isfinite(total)


def test_encode_decode_end_to_end(benchmark, step):
    mu_perm, _ = step
    benchmark.extra_info["candidate_dims"] = (1 << BITS) * DIM

    def round_trip():
        enc = rcc.encode(mu_perm, seed=3, bits_per_chunk=BITS, backend="cpp")
        return enc, rcc.decode(enc.payload, DIM, seed=3, bits_per_chunk=BITS, backend="cpp")

    enc, out = benchmark(round_trip)
    assert np.array_equal(out, enc.sample)


@pytest.mark.skipif(not rcc.cuda_available(), reason="needs a CUDA device")
def test_cuda_select(benchmark, step):
    from fastdiffc import _cuda

    mu_perm, chunks = step
    benchmark.extra_info["candidate_dims"] = (1 << BITS) * DIM
    idx = benchmark(_cuda.rcc_select, mu_perm, chunks, BITS, 1, 0, "pfr")
    assert np.array_equal(idx, _core.rcc_select(mu_perm, chunks, BITS, 1, 0, "pfr"))
