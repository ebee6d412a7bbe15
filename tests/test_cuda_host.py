"""Host side of the CUDA RCC backend: argument validation, launch plan, 64-bit offsets, no-device errors.

These run everywhere: the plan and the validation are host code. On a machine with a GPU the
kernel's indices are also compared with the CPU's.
"""

import numpy as np
import pytest
from fastdiffc import _core, rcc

_cuda = pytest.importorskip("fastdiffc._cuda", reason="fastdiffc._cuda is built only where nvcc exists")


def test_plan_for_a_typical_step():
    p = _cuda.rcc_plan_launch(3 * 768 * 512, 1000, 12)
    assert p["candidates"] == 4096 and p["threads_per_block"] == 256 and p["blocks_per_chunk"] == 16
    assert p["launches"] == 1 and p["chunks_per_launch"] == 1000 and p["blocks_per_launch"] == 16000
    assert p["max_chunk_length"] == -(-3 * 768 * 512 // 1000)
    assert p["scratch_bytes"] == 16000 * 24 + 1000 * 8


def test_plan_for_tiny_candidate_sets_uses_one_warp():
    p = _cuda.rcc_plan_launch(10, 3, 3)
    assert p["threads_per_block"] == 32 and p["blocks_per_chunk"] == 1 and p["blocks_per_launch"] == 3
    p = _cuda.rcc_plan_launch(10, 3, 7)
    assert p["threads_per_block"] == 128 and p["blocks_per_chunk"] == 1


def test_enormous_steps_are_split_into_bounded_launches():
    dim = 2**31 - 1
    p = _cuda.rcc_plan_launch(dim, dim, 20)
    assert p["blocks_per_chunk"] == 4096
    assert p["blocks_per_launch"] <= _cuda.kMaxBlocksPerLaunch < 2**31 - 1  # fits CUDA's grid limit
    assert p["chunks_per_launch"] * p["launches"] >= dim > p["chunks_per_launch"] * (p["launches"] - 1)
    assert p["max_chunk_length"] == 1


def test_chunk_offsets_are_64_bit():
    dim = 2**31 - 1
    rng = np.random.default_rng(3)
    for n in [1, 7, 65537, 2**31 - 1]:
        for c in [0, 1, n // 2, n - 1, n] + [int(x) for x in rng.integers(0, n + 1, size=5)]:
            # c * dim reaches 2^62: a 32-bit product would wrap and desynchronise the chunks.
            assert _cuda.rcc_chunk_offset(c, dim, n) == c * dim // n
    assert _cuda.rcc_chunk_offset(5, 100, 10) == int(rcc._ref.chunk_bounds(100, 10)[5])


@pytest.mark.parametrize("args", [
    (0, 1, 8), (2**31, 1, 8), (10, 0, 8), (10, 11, 8), (10, 2, 0), (10, 2, 21),
])
def test_plan_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        _cuda.rcc_plan_launch(*args)
    with pytest.raises(ValueError):
        _cuda.rcc_plan_launch(10, 2, 8, 2**28)


def test_select_validates_before_touching_the_device():
    mu = np.ones(16, np.float32)
    for call in [
        lambda: _cuda.rcc_select(mu, 0, 8, 1, 0, "pfr"),
        lambda: _cuda.rcc_select(mu, 2, 21, 1, 0, "pfr"),
        lambda: _cuda.rcc_select(mu, 2, 8, 1, 2**28, "pfr"),
        lambda: _cuda.rcc_select(mu, 2, 8, 1, 0, "gumbel"),
        lambda: _cuda.rcc_select(mu.reshape(4, 4), 2, 8, 1, 0, "pfr"),
        lambda: _cuda.rcc_select(np.array([np.nan], np.float32), 1, 8, 1, 0, "pfr"),
    ]:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("scheme", rcc.SCHEMES)
def test_select_matches_cpu_or_reports_missing_device(scheme):
    rng = np.random.default_rng(1)
    mu = (rng.normal(size=700) * 0.3).astype(np.float32)
    if _cuda.device_count() > 0:
        for bits, chunks in [(3, 5), (9, 40), (12, 3)]:
            assert np.array_equal(_cuda.rcc_select(mu, chunks, bits, 5, 2, scheme),
                                  _core.rcc_select(mu, chunks, bits, 5, 2, scheme))
    else:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            _cuda.rcc_select(mu, 5, 8, 5, 2, scheme)
        with pytest.raises(RuntimeError, match="CUDA device"):
            rcc.encode(mu, seed=5, backend="cuda")
        assert rcc.get_backend("auto").name == "cpp"
