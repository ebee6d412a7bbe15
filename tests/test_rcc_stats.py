"""RCC statistics: over many seeds the communicated samples follow N(μ, I), and PFR payloads obey
the PFR coded-size bound.

Channel simulation with finitely many candidates is only approximately exact: with 2^b
candidates for a chunk of KL_c bits the sample is biased towards the prior unless the margin
b − KL_c is a few times the spread of the log importance weights (sqrt(2 KL_c ln 2) nats). The
settings below keep KL_c at or below 2 bits with a 6–8 bit margin, where the bias is below what 500
seeds resolve; `test_statistics_detect_a_too_small_margin` shows the same checks do fail when
the margin is too small.

Tolerances (S = 500 seeds, deterministic, so no flakiness):
- projection z = <ε − μ, μ/‖μ‖>: KS test against N(0, 1) p > 1e-3, |mean| < 4/sqrt(S), var within 0.2 of 1;
- every dimension: |mean(ε_d − μ_d)| < 4.5/sqrt(S), |var − 1| < 5 sqrt(2/S).
"""

import numpy as np
import pytest
from fastdiffc import rcc
from scipy import stats

SEEDS = 500


def shaped_mu(dim, kl_bits):
    mu = np.linspace(0.5, 1.5, dim) * np.where(np.arange(dim) % 3 == 0, -1.0, 1.0)
    mu *= np.sqrt(2.0 * kl_bits * np.log(2.0)) / np.linalg.norm(mu)
    return mu.astype(np.float32)


def communicated(mu, bits, margin, scheme, seeds=SEEDS):
    samples = []
    chunks = set()
    for s in range(seeds):
        enc = rcc.encode(mu, seed=1000 + s, step=s % 7, bits_per_chunk=bits, margin=margin, scheme=scheme,
                         backend="cpp")
        samples.append(enc.sample)
        chunks.add(enc.chunks)
    return np.asarray(samples, dtype=np.float64), chunks


def check_gaussian(samples, mu):
    s = samples.shape[0]
    resid = samples - mu.astype(np.float64)
    unit = mu / np.linalg.norm(mu)
    z = resid @ unit
    problems = []
    if stats.kstest(z, "norm").pvalue <= 1e-3:
        problems.append(f"KS p={stats.kstest(z, 'norm').pvalue:.2e}")
    if abs(z.mean()) >= 4 / np.sqrt(s):
        problems.append(f"projection mean {z.mean():+.3f}")
    if abs(z.var() - 1) >= 0.2:
        problems.append(f"projection var {z.var():.3f}")
    if np.max(np.abs(resid.mean(axis=0))) >= 4.5 / np.sqrt(s):
        problems.append(f"dimension mean {np.max(np.abs(resid.mean(axis=0))):.3f}")
    if np.max(np.abs(resid.var(axis=0) - 1)) >= 5 * np.sqrt(2 / s):
        problems.append(f"dimension var off by {np.max(np.abs(resid.var(axis=0) - 1)):.3f}")
    return problems


@pytest.mark.parametrize("scheme", rcc.SCHEMES)
@pytest.mark.parametrize("dim,kl,bits,margin,chunks", [
    (16, 2.0, 8, 6, 1),  # one chunk (KL exactly at the budget: 2 bits)
    (24, 5.0, 9, 7, 3),  # three 1.7-bit chunks of 8 dimensions
    (48, 8.0, 10, 8, 4),  # 2-bit chunks, 12 dimensions each
])
def test_samples_follow_the_target(scheme, dim, kl, bits, margin, chunks):
    mu = shaped_mu(dim, kl * 0.999)
    samples, n = communicated(mu, bits, margin, scheme)
    assert n == {chunks}
    assert check_gaussian(samples, mu) == []


def test_statistics_detect_a_too_small_margin():
    # 6-bit chunks with 2^6 candidates (margin 0): strongly biased towards the prior; the checks must see it.
    mu = shaped_mu(16, 12.0 * 0.999)
    samples, _ = communicated(mu, 6, 0, "importance", seeds=200)
    assert any(p.startswith("projection mean") for p in check_gaussian(samples, mu))


@pytest.mark.parametrize("dim,kl,bits,margin", [(32, 40.0, 6, 1), (64, 60.0, 10, 2), (128, 100.0, 8, 2)])
def test_pfr_payload_within_the_pfr_bound(dim, kl, bits, margin):
    mu = shaped_mu(dim, kl)
    sizes = []
    for s in range(150):
        enc = rcc.encode(mu, seed=s, bits_per_chunk=bits, margin=margin, scheme="pfr", backend="cpp")
        sizes.append(8 * len(enc.payload))
    n = enc.chunks
    assert n >= 8
    kl_chunk = enc.kl_bits / n
    bound = enc.kl_bits + n * (np.log2(kl_chunk + 1) + 5)
    assert np.mean(sizes) <= bound
    # and it is not trivially loose: at least the KL itself is paid
    assert np.mean(sizes) >= enc.kl_bits * 0.9
