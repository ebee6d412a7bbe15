"""Tree-codebook RCC (scheme "tree", issue 15): C++ ≡ numpy bit for bit, payload round trips and
validation, and the property the scheme exists for — the sample reaches μ (no shortfall)."""

import math

import numpy as np
import pytest
from fastdiffc import entropy, rcc, rcc_tree
from fastdiffc.errors import FormatError

_core = pytest.importorskip("fastdiffc._core")


def make_mu(dim, kl_bits, seed=0):
    mu = np.random.default_rng(seed).standard_normal(dim)
    return (mu * math.sqrt(2 * kl_bits * math.log(2) / float(mu @ mu))).astype(np.float32)


@pytest.mark.parametrize("dim,chunks,depth,level_bits,beam", [(1000, 3, 5, 3, 8), (130, 1, 4, 2, 5),
                                                              (3001, 7, 3, 4, 32), (64, 2, 1, 4, 1),
                                                              (300, 2, 6, 1, 3)])
def test_cpp_matches_numpy_bit_for_bit(dim, chunks, depth, level_bits, beam):
    mu = make_mu(dim, 20.0 * chunks)
    ref = rcc_tree.select(mu, chunks, depth, level_bits, beam, 2**40 + 5, 11)
    cpp = _core.rcc_tree_select(mu, chunks, depth, level_bits, beam, 2**40 + 5, 11)
    assert np.array_equal(ref, cpp)
    a = rcc_tree.chosen(ref, dim, 2**40 + 5, 11)
    b = _core.rcc_tree_chosen(cpp, dim, level_bits, 2**40 + 5, 11)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_encode_decode_round_trip_and_backends_agree():
    mu = make_mu(2000, 150.0, seed=1)
    cfg = rcc.RCCSettings.create(3, 4.0, "tree", levels=6, beam=8)
    enc = {be: rcc.encode(mu, seed=9, step=4, settings=cfg, backend=be) for be in ("numpy", "cpp")}
    assert enc["numpy"].payload == enc["cpp"].payload
    assert np.array_equal(enc["numpy"].sample, enc["cpp"].sample)
    for be in ("numpy", "cpp"):
        out = rcc.decode(enc["cpp"].payload, mu.size, seed=9, step=4, settings=cfg, backend=be)
        assert np.array_equal(out.view(np.uint32), enc["cpp"].sample.view(np.uint32))
    assert enc["cpp"].indices.shape[0] == enc["cpp"].chunks == cfg.chunk_count(enc["cpp"].kl_bits, mu.size)


def test_zero_kl_step_is_empty_and_a_prior_draw():
    cfg = rcc.RCCSettings.create(4, 8.0, "tree")
    enc = rcc.encode(np.zeros(100, np.float32), seed=1, step=2, settings=cfg, backend="cpp")
    assert enc.payload == b"" and enc.chunks == 0
    assert np.array_equal(rcc.decode(b"", 100, seed=1, step=2, settings=cfg), enc.sample)


def test_sample_reaches_mu_without_shortfall():
    # Default tree vs pfr at b = 12, margin 2 (the gaussian-rd defaults), on the same 4 000-bit shift:
    # pfr falls short (≈ 85 % of ‖μ‖ along μ), the tree lands on ≈ ‖μ‖; orthogonal noise stays N(0, 1).
    mu = make_mu(16384, 4000.0, seed=2)
    m = mu.astype(np.float64)
    tree = rcc.encode(mu, seed=3, step=1, settings=rcc.RCCSettings.create(4, 8.0, "tree"), backend="cpp")
    pfr = rcc.encode(mu, seed=3, step=1, settings=rcc.RCCSettings.create(12, 2.0, "pfr"), backend="cpp")
    ratio = {k: float(e.sample.astype(np.float64) @ m / (m @ m)) for k, e in (("tree", tree), ("pfr", pfr))}
    assert ratio["tree"] > 0.97 and ratio["pfr"] < 0.9
    s = tree.sample.astype(np.float64)
    resid = s - m * (s @ m) / (m @ m)
    assert abs(resid.var() - 1.0) < 0.05
    # 64 path bits per chunk of ≈ 56 KL bits, plus the count and depth
    assert 8 * len(tree.payload) < 1.2 * tree.kl_bits + 40


def test_settings_validation():
    cfg = rcc.RCCSettings.create(4, 8.0, "tree")
    assert (cfg.levels, cfg.beam, cfg.chunk_bits) == (rcc.DEFAULT_TREE_LEVELS, rcc.DEFAULT_TREE_BEAM, 64)
    assert rcc.RCCSettings.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        rcc.RCCSettings.create(9, 2.0, "tree")  # at most 8 bits per level
    with pytest.raises(ValueError):
        rcc.RCCSettings.create(4, 64.0, "tree", levels=16)  # margin must leave >= 1 bit per chunk
    with pytest.raises(ValueError):
        rcc.RCCSettings(12, 32, "pfr", levels=4, beam=4)
    with pytest.raises(ValueError):
        _core.rcc_tree_select(make_mu(10, 5), 1, 65, 4, 4, 0, 0)
    with pytest.raises(ValueError):
        _core.rcc_tree_chosen(np.full((1, 2), 16, np.int64), 10, 4, 0, 0)


def test_tree_payload_is_canonical():
    paths = np.random.default_rng(0).integers(0, 16, size=(5, 7))
    data = entropy.encode_tree_paths(paths, level_bits=4)
    assert np.array_equal(entropy.decode_tree_paths(data, level_bits=4, max_chunks=100, max_depth=16), paths)
    with pytest.raises(FormatError):
        entropy.decode_tree_paths(data, level_bits=4, max_chunks=100, max_depth=6)  # deeper than the settings
    with pytest.raises(FormatError):
        entropy.decode_tree_paths(data, level_bits=4, max_chunks=4, max_depth=16)
    with pytest.raises(FormatError):
        entropy.decode_tree_paths(data + b"\x01", level_bits=4, max_chunks=100, max_depth=16)


def test_cuda_tree_select_needs_a_device():
    try:
        from fastdiffc import _cuda
    except ImportError:
        pytest.skip("no _cuda module")
    if _cuda.device_count() > 0:
        mu = make_mu(3001, 140.0)
        args = (mu, 7, 3, 4, 32, 5, 11)
        assert np.array_equal(_cuda.rcc_tree_select(*args), _core.rcc_tree_select(*args))
    else:
        with pytest.raises(RuntimeError):
            _cuda.rcc_tree_select(make_mu(100, 10.0), 1, 2, 4, 4, 0, 0)


def test_declared_digits_are_checked_against_the_payload_size():
    """Every digit costs its bits (the guard bit under them), so a payload's size bounds the digits it
    declares; a payload declaring more is refused before they are read (no allocation of n·L' digits)."""
    rng = np.random.default_rng(1)
    for n, depth, bits in [(1, 1, 1), (1, 64, 1), (37, 16, 4), (500, 64, 8), (3000, 3, 2)]:
        for paths in (np.zeros((n, depth), np.int64), rng.integers(0, 1 << bits, (n, depth))):
            data = entropy.encode_tree_paths(paths, level_bits=bits)
            assert n * depth * bits <= 8 * len(data)
            back = entropy.decode_tree_paths(data, level_bits=bits, max_chunks=n, max_depth=depth)
            assert np.array_equal(back, paths)
    # The payload without the guard: 10^6 chunks x 64 levels of zero digits in 6 bytes.
    w = entropy.SymbolWriter()
    n = 1_000_000
    w.write_uint(n.bit_length(), 5)
    w.write_uint(n - (1 << (n.bit_length() - 1)), n.bit_length() - 1)
    w.write_uint(63, 6)
    w.write(np.zeros(n * 64, np.int32), entropy.uniform_model(4))
    forged = w.to_bytes()
    assert len(forged) < 16
    with pytest.raises(FormatError, match="declares 1000000 chunks x 64 levels x 4 bits of tree digits but holds only"):
        entropy.decode_tree_paths(forged, level_bits=4, max_chunks=n, max_depth=64)
