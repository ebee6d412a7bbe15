"""pytest-benchmark suite settings (docs/design.md §10).

Full mode (default): the sizes the README quotes (768x512 images, 2^14-dimensional RCC steps).
Quick mode, FASTDIFFC_BENCH_QUICK=1: small sizes and one round, for CI (report-only: timings
never fail a run); a benchmark module opts in with `pytestmark = pytest.mark.quick`, the
others are skipped in quick mode.

    python -m pytest benchmarks -o addopts="" --benchmark-only --benchmark-json=bench.json
    FASTDIFFC_BENCH_QUICK=1 python -m pytest benchmarks -o addopts="" --benchmark-only
"""

import os

import pytest

QUICK = os.environ.get("FASTDIFFC_BENCH_QUICK", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: has a quick mode (FASTDIFFC_BENCH_QUICK=1): small sizes, one round")


def pytest_collection_modifyitems(config, items):
    if not QUICK:
        return
    skip = pytest.mark.skip(reason="no quick mode (unset FASTDIFFC_BENCH_QUICK to run it)")
    for item in items:
        if item.get_closest_marker("quick") is None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def quick() -> bool:
    return QUICK


@pytest.fixture(scope="session")
def image_hw() -> tuple[int, int]:
    """(H, W) of the image benchmarks: 512x768 (the README's 768x512), quick 96x128."""
    return (96, 128) if QUICK else (512, 768)


@pytest.fixture
def measure(benchmark):
    """benchmark.pedantic with the mode's rounds: measure(fn, rounds=3, warmup=1) (quick: 1 round)."""
    def run(fn, rounds: int = 3, warmup: int = 1):
        if QUICK:  # one round; a warm-up only where the first call is known to be slow (oneDNN kernel creation)
            rounds, warmup = 1, min(warmup, 1)
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)

    return run
