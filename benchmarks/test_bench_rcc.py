"""RCC (pytest-benchmark): the C++ selection (both schemes), the numpy reference doing the same
selection, and the bare Philox + normal generation loop that bounds them — one group, one step of
2^14 dimensions at 10 bits per chunk (quick mode: 2^12).

    python -m pytest benchmarks/test_bench_rcc.py -o addopts="" --benchmark-only

Every benchmark of the "rcc select" group does the same work, 2^10 candidates x DIM dimensions
(extra_info["candidate_dims"]), so their times compare directly: candidate-dims/s =
candidate_dims / mean. The targets (cpp >= 20x numpy, cpp within 2x of the bare generation
loop) are read off these numbers, not asserted. `fastdiffc bench rcc` reports the same figures.
"""

import math
import os

import numpy as np
import pytest
from fastdiffc import _core, rcc
from fastdiffc import rcc_numpy as ref

pytestmark = pytest.mark.quick

QUICK = os.environ.get("FASTDIFFC_BENCH_QUICK", "") not in ("", "0")  # as benchmarks/conftest.py
DIM = 1 << (12 if QUICK else 14)
BITS = 10
KL_BITS = 250.0 * DIM / (1 << 14)
GROUP = f"rcc select: 2^{BITS} candidates x {DIM} dims"


@pytest.fixture(scope="module")
def step():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=DIM)
    mu *= math.sqrt(2 * KL_BITS * math.log(2)) / np.linalg.norm(mu)
    mu = mu.astype(np.float32)
    chunks = rcc.RCCSettings(bits_per_chunk=BITS).chunk_count(rcc.kl_bits(mu), DIM)
    perm = _core.rcc_permutation(1, 0, DIM)
    return np.ascontiguousarray(mu[perm]), chunks


def _info(benchmark, backend):
    benchmark.group = GROUP
    benchmark.extra_info.update(candidate_dims=(1 << BITS) * DIM, backend=backend)


@pytest.mark.parametrize("scheme", rcc.SCHEMES)
def test_cpp_select(benchmark, step, scheme):
    mu_perm, chunks = step
    _info(benchmark, f"cpp {scheme}")
    idx = benchmark(_core.rcc_select, mu_perm, chunks, BITS, 1, 0, scheme)
    assert idx.shape == (chunks,)


def test_numpy_select(measure, benchmark, step):
    mu_perm, chunks = step
    _info(benchmark, "numpy pfr")
    ref.normal_table()
    idx = measure(lambda: ref.select(mu_perm, chunks, BITS, 1, 0, "pfr"), rounds=2)
    assert np.array_equal(idx, _core.rcc_select(mu_perm, chunks, BITS, 1, 0, "pfr"))


def test_bare_generation_loop(benchmark):
    _info(benchmark, "limit: Philox + normal table only")
    total = benchmark(_core.rcc_generate_checksum, 1 << BITS, DIM, 1)
    assert math.isfinite(total)


@pytest.mark.skipif(not rcc.cuda_available(), reason="needs a CUDA device")
def test_cuda_select(benchmark, step):
    from fastdiffc import _cuda

    mu_perm, chunks = step
    _info(benchmark, "cuda pfr")
    idx = benchmark(_cuda.rcc_select, mu_perm, chunks, BITS, 1, 0, "pfr")
    assert np.array_equal(idx, _core.rcc_select(mu_perm, chunks, BITS, 1, 0, "pfr"))


def test_encode_decode_end_to_end(benchmark, step):
    mu_perm, _ = step
    benchmark.group = f"rcc encode + decode: {DIM} dims"
    benchmark.extra_info["candidate_dims"] = (1 << BITS) * DIM

    def round_trip():
        enc = rcc.encode(mu_perm, seed=3, bits_per_chunk=BITS, backend="cpp")
        return enc, rcc.decode(enc.payload, DIM, seed=3, bits_per_chunk=BITS, backend="cpp")

    enc, out = benchmark(round_trip)
    assert np.array_equal(out, enc.sample)
