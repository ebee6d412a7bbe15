"""The learned entropy-model layer (entropy_models.py): integer tables, coding, likelihoods."""

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch
from fastdiffc import entropy_models as em
from fastdiffc.errors import FormatError

GOLDEN = Path(__file__).parent / "golden" / "entropy_gaussian_v1.json"
# The Gaussian tables are part of the format: changing them breaks every CDC file.
TABLES_DIGEST = "f2cd6c12049aad0ad237046a8887561f271bff79cc3e1ea4876336684b8b6d86"


def realistic_latent(rng, n=96 * 32 * 48):
    """Scale indices spread like a trained hyperprior's, values drawn from the matching Gaussians."""
    idx = np.clip(np.round(rng.normal(18, 9, n)), 0, em.NUM_SCALES - 1).astype(np.int64)
    sig = np.array([float(s) for s in em.scale_table()])[idx]
    return np.round(rng.standard_normal(n) * sig).astype(np.int64), idx


def test_gaussian_tables_are_the_format_constant():
    assert em.gaussian_tables_digest() == TABLES_DIGEST
    tabs = em.gaussian_tables()
    assert len(tabs) == em.NUM_SCALES
    for t in tabs:
        assert sum(t.freqs) == 1 << em.PRECISION and min(t.freqs) >= 1
        body = np.array(t.freqs[:-1])
        assert np.abs(body - body[::-1]).max() <= 1  # symmetric about 0 up to the rounding; escape last


def test_gaussian_tables_match_float64_closed_form():
    from scipy.stats import norm

    for k in (0, 17, 40, 63):
        s = float(em.scale_table()[k])
        t = em.gaussian_tables()[k]
        v = np.arange(t.lo, t.hi + 1)
        p = norm.cdf((v + 0.5) / s) - norm.cdf((v - 0.5) / s)
        f = em.quantize_pmf(list(p) + [1 - p.sum()])
        assert max(abs(a - b) for a, b in zip(f, t.freqs)) <= 1


def test_quantize_pmf_exact_and_floors():
    assert em.quantize_pmf([Decimal("0.25"), Decimal("0.5"), Decimal("0.25")]) == (16384, 32768, 16384)
    f = em.quantize_pmf([0.5, 0.5, 0.0, 1e-12])
    assert min(f) == 1 and sum(f) == 1 << 16


def test_round_trip_bit_exact_with_escapes(rng):
    v, idx = realistic_latent(rng, 20000)
    v[:6] = [10**5, -3000, 700, -700, 2**19, -(2**19)]  # far outside every table: escape codes
    tabs = em.gaussian_tables()
    data = em.encode_symbols(v, idx, tabs)
    assert np.array_equal(em.decode_symbols(data, idx, tabs), v)


def test_escape_limit_is_a_value_error():
    with pytest.raises(ValueError, match="too far"):
        em.encode_symbols([2**22], [0], em.gaussian_tables())
    with pytest.raises(ValueError, match="table ids"):
        em.encode_symbols([0], [em.NUM_SCALES], em.gaussian_tables())


def test_file_size_within_two_percent_of_likelihood(rng):
    """On a realistic latent the coded bytes match −Σ log2 P of the integer tables, and the
    integer tables cost (almost) nothing over the continuous Gaussian likelihood."""
    v, idx = realistic_latent(rng)
    tabs = em.gaussian_tables()
    bits = 8 * len(em.encode_symbols(v, idx, tabs))
    est = em.estimate_bits(v, idx, tabs)
    sig = torch.tensor([float(s) for s in em.scale_table()], dtype=torch.float64)[idx]
    lik = em.GaussianConditional().likelihood(torch.tensor(v, dtype=torch.float64), torch.zeros(1), sig)
    cont = float(-torch.log2(lik).sum())
    assert abs(bits / est - 1) < 0.02, (bits, est)
    assert abs(bits / cont - 1) < 0.02, (bits, cont)


def test_corrupt_streams_are_format_errors(rng):
    v, idx = realistic_latent(rng, 3000)
    tabs = em.gaussian_tables()
    data = em.encode_symbols(v, idx, tabs)
    bad = 0
    for i in range(0, len(data), max(1, len(data) // 40)):
        for bit in (0, 5):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            try:
                out = em.decode_symbols(bytes(flipped), idx, tabs)
            except FormatError:
                bad += 1
                continue
            assert not np.array_equal(out, v)  # a flip never decodes silently to the same latent
    assert bad > 0
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(FormatError):
            em.decode_symbols(data[:cut], idx, tabs)
    with pytest.raises(FormatError):
        em.decode_symbols(data + b"\x07", idx, tabs)


def test_factorized_prior_tables_round_trip_and_rate():
    torch.manual_seed(0)
    prior = em.FactorizedPrior(4)
    z = torch.randn(2, 4, 8, 8) * torch.tensor([0.3, 2.0, 5.0, 20.0])[None, :, None, None]
    # a few steps of fitting so the density is not the initial one
    opt = torch.optim.Adam(prior.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        (-torch.log2(prior.likelihood(z + torch.rand_like(z) - 0.5))).sum().backward()
        opt.step()
    prior.build_tables()
    tabs = prior.tables()
    vals = torch.round(z).long().permute(1, 0, 2, 3).reshape(-1).numpy()
    ids = np.repeat(np.arange(4), z.numel() // 4)
    data = em.encode_symbols(vals, ids, tabs)
    assert np.array_equal(em.decode_symbols(data, ids, tabs), vals)
    with torch.no_grad():
        cont = float(-torch.log2(prior.likelihood(torch.round(z))).sum())
    assert abs(8 * len(data) / cont - 1) < 0.05, (8 * len(data), cont)


def test_indices_from_fixed_round_half_up_and_clamp():
    t = torch.tensor([-1000, -128, -129, 0, 127, 128, 383, 384, 63 * 256, 10**9], dtype=torch.int64)
    got = em.GaussianConditional.indices_from_fixed(t, 8).tolist()
    assert got == [0, 0, 0, 0, 0, 1, 1, 2, 63, 63]
    with pytest.raises(TypeError):
        em.GaussianConditional.indices_from_fixed(t.float(), 8)


def _golden_case():
    rng = np.random.default_rng(20240601)
    idx = rng.integers(0, em.NUM_SCALES, 500)
    sig = np.array([float(s) for s in em.scale_table()])[idx]
    v = np.round(rng.standard_normal(500) * sig * 1.3).astype(np.int64)
    v[::97] += 4000  # escapes
    return v, idx


def test_golden_entropy_bitstream():
    """Bytes of a fixed symbol/index set (escapes included): the entropy layer's format."""
    v, idx = _golden_case()
    data = em.encode_symbols(v, idx, em.gaussian_tables())
    golden = json.loads(GOLDEN.read_text())
    assert hashlib.sha256(v.tobytes()).hexdigest() == golden["symbols_sha256"]
    assert data.hex() == golden["bytes_hex"]
    assert np.array_equal(em.decode_symbols(bytes.fromhex(golden["bytes_hex"]), idx, em.gaussian_tables()), v)


def test_gaussian_log_likelihood_is_exact_in_the_tails_and_keeps_its_gradient():
    """Training's rate term: ln P of the unit bin matches scipy from the centre far into the tail
    (where a floored probability would read 1e-9), and an outlier's gradient widens σ and pulls y
    towards μ — with the floor both gradients are zero and the outlier's rate goes unpunished."""
    from scipy.stats import norm

    g = em.GaussianConditional()
    cases = [(0.0, 0.11), (0.3, 1.0), (1.0, 0.5), (0.6, 0.11), (5.0, 0.39), (20.0, 0.2), (3.0, 128.0), (100.0, 128.0)]
    for v, s in cases:
        y = torch.tensor([v], dtype=torch.float32, requires_grad=True)
        sigma = torch.tensor([s], dtype=torch.float32, requires_grad=True)
        ll = g.log_likelihood(y, torch.zeros(1), sigma)
        ll.sum().backward()
        s_eff = max(s, 0.11)
        hi, lo = norm.logcdf((0.5 - v) / s_eff), norm.logcdf((-0.5 - v) / s_eff)
        ref = hi + np.log1p(-np.exp(lo - hi))
        assert abs(float(ll) - ref) <= 1e-5 * max(1.0, abs(ref)), (v, s, float(ll), ref)
        assert np.isfinite(float(sigma.grad)) and np.isfinite(float(y.grad))
        if v >= 5 * s:  # far outliers: more σ and less |y − μ| raise the likelihood, strongly
            assert float(sigma.grad) > 1.0 and float(y.grad) < -1.0, (v, s, float(sigma.grad), float(y.grad))
    # the floored probability of the estimates is the same function
    y = torch.tensor([0.0, 0.7, 5.0, 40.0])
    lik = g.likelihood(y, torch.zeros(1), torch.full((4,), 0.3))
    assert torch.allclose(lik[:3].clamp_min(em.LIKELIHOOD_BOUND),
                          g.log_likelihood(y, torch.zeros(1), torch.full((4,), 0.3))[:3].exp().clamp_min(1e-9))
    assert float(lik[3]) == pytest.approx(em.LIKELIHOOD_BOUND)
