"""RCC (docs/design.md §5): exact agreement of the cpp and numpy backends, round trips, determinism, bad input."""

import json
import os
import subprocess
import sys

import fastdiffc
import numpy as np
import pytest
from fastdiffc import _core, entropy, rcc
from fastdiffc import rcc_numpy as ref


def make_mu(dim, kl_bits, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=dim) * rng.uniform(0.2, 1.8, size=dim)
    mu *= np.sqrt(2.0 * kl_bits * np.log(2.0)) / np.linalg.norm(mu)
    return mu.astype(np.float32)


# ------------------------------------------------------------------ building blocks agree bit for bit
def test_philox_known_answers():
    # Random123 known-answer vectors for Philox4x32-10.
    cases = [
        ((0, 0, 0, 0), 0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, 0xFFFFFFFFFFFFFFFF, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0x299F31D0 << 32) | 0xA4093822,
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for ctr, key, expected in cases:
        assert tuple(int(w) for w in ref.philox4x32(*ctr, key)) == expected
        assert _core.philox4x32_10(*ctr, key) == expected


def test_normal_table_identical_and_accurate():
    table = ref.normal_table()
    assert np.array_equal(_core.rcc_normal_table(), table)
    assert np.array_equal(table[::-1], -table)  # exact antisymmetry: mean exactly 0
    from scipy.special import ndtri

    exact = ndtri((np.arange(65536) + 0.5) / 65536)
    assert np.max(np.abs(table - exact) / np.maximum(1.0, np.abs(exact))) < 1.2e-7  # float32 rounding only
    assert abs(float(np.var(table.astype(np.float64))) - 1.0) < 5e-5


def test_deterministic_log_exp_accuracy():
    x = np.geomspace(1e-300, 1e300, 2001)
    assert np.max(np.abs(ref.det_log(x) - np.log(x)) / np.maximum(1.0, np.abs(np.log(x)))) < 4e-16
    y = np.linspace(-700.0, 0.0, 2001)
    assert np.max(np.abs(ref.det_exp(y) / np.exp(y) - 1.0)) < 1e-15


@pytest.mark.parametrize("dim", [1, 2, 7, 1000])
def test_permutation_identical_and_valid(dim):
    p = _core.rcc_permutation(11, 5, dim)
    assert np.array_equal(p, ref.permutation(11, 5, dim))
    assert np.array_equal(np.sort(p), np.arange(dim))
    if dim == 1000:
        assert not np.array_equal(p, ref.permutation(11, 6, dim))  # the step changes it
        assert not np.array_equal(p, ref.permutation(12, 5, dim))  # and so does the seed


@pytest.mark.parametrize("scheme", rcc.SCHEMES)
def test_chunk_scores_identical(scheme):
    mu = make_mu(203, 30.0)  # chunk lengths not multiples of 16 or 64
    for chunk in (0, 4):
        cpp = _core.rcc_chunk_scores(mu, 5, 7, 2**40 + 3, 9, scheme, chunk)
        assert np.array_equal(cpp, ref.chunk_scores(mu, 5, 7, 2**40 + 3, 9, scheme, chunk))


SIMD_PATHS = ("avx512", "avx2", "baseline")
SIMD_FEATURE = {"avx512": "avx512f", "avx2": "avx2", "baseline": None}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_simd_paths_compute_identical_bits(path):
    """Each SIMD path of the hot loop, forced, is the one that ran, and gives the numpy reference's bits."""
    feature = SIMD_FEATURE[path]
    if path not in _core.rcc_simd_paths():
        if feature is not None and feature not in _cpu_flags():
            pytest.skip(f"this CPU lacks {feature}, so the {path} path cannot run here")
        pytest.fail(f"the CPU has {feature} but _core offers only {_core.rcc_simd_paths()} (build without SIMD paths?)")
    mu = make_mu(1000, 200.0)  # chunk lengths 125: batches of 128 with padding
    results = {}
    try:
        for p in (path, "baseline"):
            _core.rcc_set_simd_path(p)
            assert _core.rcc_simd_path() == p
            scores = _core.rcc_chunk_scores(mu, 8, 6, 3, 1, "pfr", 5)
            assert _core.rcc_last_simd_path() == p, "the forced SIMD path is not the one that ran"
            chosen = _core.rcc_select(mu, 8, 6, 3, 1, "importance")
            assert _core.rcc_last_simd_path() == p
            checksum = _core.rcc_generate_checksum(300, 1000, 4)
            assert _core.rcc_last_simd_path() == p
            results[p] = (scores, chosen, checksum)
    finally:
        _core.rcc_set_simd_path("auto")
    assert np.array_equal(results[path][0], ref.chunk_scores(mu, 8, 6, 3, 1, "pfr", 5))
    assert np.array_equal(results[path][0], results["baseline"][0])
    assert np.array_equal(results[path][1], results["baseline"][1])
    assert abs(results[path][2] - results["baseline"][2]) < 1e-3 * 300 * 1000  # float sums in another order


def test_simd_path_selection():
    paths = _core.rcc_simd_paths()
    assert paths[-1] == "baseline" and set(paths) <= set(SIMD_PATHS)
    assert _core.rcc_simd_path() == paths[0]  # auto: the best the CPU has
    for p in SIMD_PATHS:
        if p not in paths:
            with pytest.raises(ValueError, match=f"no {p} path"):
                _core.rcc_set_simd_path(p)
    with pytest.raises(ValueError, match="auto, avx512, avx2 or baseline"):
        _core.rcc_set_simd_path("portable")
    assert _core.rcc_simd_path() == paths[0]


def test_chunks_are_near_equal_and_cover():
    b = ref.chunk_bounds(103, 10)
    assert b[0] == 0 and b[-1] == 103
    assert set(np.diff(b)) <= {10, 11}


def test_candidates_use_64bit_safe_counters():
    # Huge seed, the largest step, chunk and candidate indices: every index is its own counter word.
    eps = ref.candidate_normals(2**64 - 1, ref.STEP_LIMIT - 1, 2**31 - 1, [2**20 - 1], 20)
    assert eps.shape == (1, 20) and np.all(np.isfinite(eps))
    # A candidate index must never alias another chunk or block (no packing into 32 bits).
    a = ref.candidate_normals(1, 0, 1, [0], 64)
    b = ref.candidate_normals(1, 0, 0, [1], 64)
    c = ref.candidate_normals(1, 0, 0, [0], 128)[:, 64:]
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


# ------------------------------------------------------------------ encode / decode
@pytest.mark.parametrize("scheme", rcc.SCHEMES)
@pytest.mark.parametrize("dim,kl,bits", [(1, 3.0, 6), (50, 20.0, 6), (300, 60.0, 8), (129, 0.3, 4)])
def test_round_trip_and_backends_identical(scheme, dim, kl, bits):
    mu = make_mu(dim, kl, seed=dim)
    kw = dict(seed=2**63 + dim, step=17, bits_per_chunk=bits, margin=1.5, scheme=scheme)
    enc_cpp = rcc.encode(mu, backend="cpp", **kw)
    enc_np = rcc.encode(mu, backend="numpy", **kw)
    assert enc_cpp.payload == enc_np.payload
    assert np.array_equal(enc_cpp.sample, enc_np.sample)
    assert enc_cpp.sample.dtype == np.float32 and enc_cpp.sample.shape == mu.shape
    assert enc_cpp.chunks == min(dim, int(np.ceil(enc_cpp.kl_bits / (bits - 1.5))))
    for backend in ("cpp", "numpy"):
        out = rcc.decode(enc_cpp.payload, dim, backend=backend, **kw)
        assert out.dtype == np.float32 and np.array_equal(out, enc_cpp.sample.ravel())


def test_shape_is_kept_and_any_float_input_works():
    mu = make_mu(24, 10.0).reshape(2, 3, 4).astype(np.float64)
    enc = rcc.encode(mu, seed=1, bits_per_chunk=6)
    assert enc.sample.shape == (2, 3, 4)
    assert np.array_equal(rcc.decode(enc.payload, 24, seed=1, bits_per_chunk=6), enc.sample.ravel())
    assert rcc.encode(mu.tolist(), seed=1, bits_per_chunk=6).payload == enc.payload


def test_zero_kl_step_costs_nothing():
    enc = rcc.encode(np.zeros(40, np.float32), seed=3, step=2)
    assert enc.kl_bits == 0.0 and enc.chunks == 0 and enc.payload == b""
    out = rcc.decode(b"", 40, seed=3, step=2)
    assert np.array_equal(out, enc.sample) and np.std(out) > 0.5  # a prior draw, not zeros
    assert not np.array_equal(out, rcc.decode(b"", 40, seed=3, step=3))


def test_settings_change_the_stream():
    mu = make_mu(64, 20.0)
    base = rcc.encode(mu, seed=5, bits_per_chunk=6, margin=1)
    assert rcc.encode(mu, seed=6, bits_per_chunk=6, margin=1).payload != base.payload or \
        not np.array_equal(rcc.encode(mu, seed=6, bits_per_chunk=6, margin=1).sample, base.sample)
    assert not np.array_equal(rcc.encode(mu, seed=5, step=1, bits_per_chunk=6, margin=1).sample, base.sample)
    # Decoding with the wrong step gives a different sample (no silent reuse of randomness).
    assert not np.array_equal(rcc.decode(base.payload, 64, seed=5, step=1, bits_per_chunk=6, margin=1),
                              base.sample)


def test_thread_count_does_not_change_bits():
    script = (
        "import hashlib, json, numpy as np; from fastdiffc import rcc, _core\n"
        "rng = np.random.default_rng(7); mu = (rng.normal(size=3000) * 0.12).astype(np.float32)\n"
        "e = rcc.encode(mu, seed=99, step=4, bits_per_chunk=9, margin=2, backend='cpp')\n"
        "p = _core.rcc_permutation(1, 2, 200000)\n"
        "print(json.dumps([_core.openmp_max_threads(), e.payload.hex(), e.chunks,\n"
        "  hashlib.sha256(e.sample.tobytes()).hexdigest(), hashlib.sha256(p.tobytes()).hexdigest()]))\n"
    )
    results = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout))
    assert [r[0] for r in results] == [1, 2]
    assert results[0][2] > 1  # several chunks, several candidate blocks each: the parallel path ran
    assert results[0][1:] == results[1][1:]


# ------------------------------------------------------------------ settings
def test_settings_round_trip_and_validation():
    s = rcc.RCCSettings.create(10, 2.5, "importance")
    assert s.margin_sixteenths == 40 and s.margin == 2.5 and s.candidates == 1024
    d = s.to_dict()
    assert all(isinstance(v, int) for v in d.values())
    assert rcc.RCCSettings.from_dict(d) == s
    assert s.chunk_count(0.0, 100) == 0 and s.chunk_count(1e-9, 100) == 1
    assert s.chunk_count(7.5, 100) == 1 and s.chunk_count(7.6, 100) == 2 and s.chunk_count(1e9, 100) == 100
    for bad in [dict(bits_per_chunk=0), dict(bits_per_chunk=21), dict(bits_per_chunk=8.0),
                dict(margin_sixteenths=-1), dict(bits_per_chunk=4, margin_sixteenths=49), dict(scheme="mrc")]:
        with pytest.raises(ValueError):
            rcc.RCCSettings(**bad)
    with pytest.raises(ValueError, match="1/16"):
        rcc.RCCSettings.create(8, 0.01)
    with pytest.raises(ValueError):
        rcc.RCCSettings.from_dict({"bits_per_chunk": 8, "margin_sixteenths": 0, "scheme": 7})
    with pytest.raises(ValueError):
        rcc.RCCSettings.from_dict({"bits_per_chunk": 8})
    mu = make_mu(30, 12.0)
    assert rcc.encode(mu, seed=1, settings=s).payload == rcc.encode(
        mu, seed=1, bits_per_chunk=10, margin=2.5, scheme="importance").payload


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_bad_inputs_raise_clear_errors(backend):
    good = make_mu(10, 5.0)
    cases = [
        (dict(mu=np.array([0.0, np.nan], np.float32)), "NaN"),
        (dict(mu=np.array([np.inf, 1.0])), "NaN or infinity"),
        (dict(mu=np.zeros(0)), "empty"),
        (dict(mu=good, bits_per_chunk=0), r"\[1, 20\]"),
        (dict(mu=good, bits_per_chunk=21), r"\[1, 20\]"),
        (dict(mu=good, margin=12), "margin"),
        (dict(mu=good, margin=-1), "margin"),
        (dict(mu=good, scheme="foo"), "scheme"),
        (dict(mu=good, seed=-1), "seed"),
        (dict(mu=good, seed=2**64), "seed"),
        (dict(mu=good, step=2**28), "step"),
        (dict(mu=good, backend="tpu"), "backend"),
        (dict(mu=["a", "b"]), "float32"),
    ]
    for kwargs, msg in cases:
        kwargs = dict(dict(seed=1, backend=backend), **kwargs)
        mu = kwargs.pop("mu")
        with pytest.raises(ValueError, match=msg):
            rcc.encode(mu, **kwargs)


def test_native_functions_validate_their_arguments():
    mu = make_mu(16, 5.0)
    bad_calls = [
        lambda: _core.rcc_select(mu, 0, 8, 1, 0, "pfr"),
        lambda: _core.rcc_select(mu, 17, 8, 1, 0, "pfr"),
        lambda: _core.rcc_select(mu, 2, 0, 1, 0, "pfr"),
        lambda: _core.rcc_select(mu, 2, 21, 1, 0, "pfr"),
        lambda: _core.rcc_select(mu, 2, 8, 1, 2**28, "pfr"),
        lambda: _core.rcc_select(mu, 2, 8, 1, 0, "nope"),
        lambda: _core.rcc_select(mu.reshape(4, 4), 2, 8, 1, 0, "pfr"),
        lambda: _core.rcc_select(np.array([1.0, np.nan], np.float32), 1, 8, 1, 0, "pfr"),
        lambda: _core.rcc_select(np.zeros(0, np.float32), 1, 8, 1, 0, "pfr"),
        lambda: _core.rcc_chosen(np.array([256]), 16, 8, 1, 0),
        lambda: _core.rcc_chosen(np.array([-1]), 16, 8, 1, 0),
        lambda: _core.rcc_chosen(np.zeros(17, np.int64), 16, 8, 1, 0),
        lambda: _core.rcc_chosen(np.zeros(1, np.int64), 0, 8, 1, 0),
        lambda: _core.rcc_chosen(np.zeros(1, np.int64), 2**31, 8, 1, 0),
        lambda: _core.rcc_permutation(1, 0, 0),
        lambda: _core.rcc_permutation(1, 0, -5),
        lambda: _core.rcc_chunk_scores(mu, 2, 4, 1, 0, "pfr", 2),
        lambda: _core.rcc_generate_checksum(0, 10, 1),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


def test_decode_rejects_mismatched_or_corrupt_payloads():
    mu = make_mu(40, 30.0)
    kw = dict(seed=4, step=1, bits_per_chunk=8, margin=2)
    enc = rcc.encode(mu, **kw)
    assert enc.chunks > 2
    with pytest.raises(fastdiffc.FormatError):
        rcc.decode(enc.payload, enc.chunks - 1, **kw)  # dimension too small for the declared chunk count
    for cut in range(1, len(enc.payload)):
        with pytest.raises(fastdiffc.FormatError):
            rcc.decode(enc.payload[:cut], 40, **kw)
    with pytest.raises(fastdiffc.FormatError):
        rcc.decode(enc.payload + b"\x01", 40, **kw)
    with pytest.raises(fastdiffc.FormatError):
        rcc.decode(enc.payload + b"\x00", 40, **kw)
    with pytest.raises(TypeError):
        rcc.decode("text", 40, **kw)
    for dim in (0, -3, 2**31):
        with pytest.raises(ValueError):
            rcc.decode(enc.payload, dim, **kw)


def test_decoder_fuzzed_with_random_bytes():
    rng = np.random.default_rng(2024)
    outcomes = {"ok": 0, "format": 0}
    for trial in range(600):
        data = rng.integers(0, 256, size=int(rng.integers(0, 24)), dtype=np.uint8).tobytes()
        bits = int(rng.integers(1, 21))
        scheme = rcc.SCHEMES[trial % 2]
        dim = int(rng.integers(1, 300))
        try:
            out = rcc.decode(data, dim, seed=trial, bits_per_chunk=bits, margin=0, scheme=scheme)
        except fastdiffc.FormatError:
            outcomes["format"] += 1
            continue
        # Accepted input must be exactly what the encoder writes for the indices it carries.
        assert out.shape == (dim,) and np.all(np.isfinite(out))
        idx = entropy.decode_rcc_indices(data, bits=bits, scheme=scheme, max_chunks=dim)
        assert entropy.encode_rcc_indices(idx, bits=bits, scheme=scheme) == data
        outcomes["ok"] += 1
    assert outcomes["format"] > 300


def test_index_coding_round_trip_and_cost():
    rng = np.random.default_rng(5)
    for scheme in rcc.SCHEMES:
        for bits in (1, 8, 20):
            for n in (0, 1, 2, 3, 100, 4097):
                idx = rng.integers(0, 1 << bits, size=n)
                data = entropy.encode_rcc_indices(idx, bits=bits, scheme=scheme)
                assert np.array_equal(entropy.decode_rcc_indices(data, bits=bits, scheme=scheme, max_chunks=n), idx)
    # uniform indices cost b bits each plus a bounded constant
    idx = rng.integers(0, 1 << 12, size=500)
    size = len(entropy.encode_rcc_indices(idx, bits=12, scheme="importance")) * 8
    assert 500 * 12 <= size <= 500 * 12 + 64
    with pytest.raises(ValueError):
        entropy.encode_rcc_indices([4], bits=2, scheme="pfr")
