"""Prototype: DiffC on the gaussian-rd source with simulated channel simulators (issue 15).

Every candidate codebook here is isotropic, so a chunk's selection depends only on the candidates'
projections onto mu-hat: the chosen sample is t mu-hat + n_perp, n_perp ~ N(0, I - mu-hat mu-hat^T)
independent of everything. The 1-D selection is simulated (PFR with 2^b candidates, or a K-ary tree
codebook with beam search), which is exact in distribution and ~100x faster than real candidates.
Rates: PFR index coded with the Zipf model (log2(k+1) + log2 H_N bits), tree paths uniform; plus a
fixed cost per coded step. Reconstruction: the probability-flow ODE in closed form (per-dimension
scaling, exact for the diagonal Gaussian). Usage: python proj_sim.py [scheme ...]
"""
import math
import os
import sys

import numpy as np

D = 16384
rng = np.random.default_rng(0)
v = (1.0 + np.arange(D) / 64.0) ** -1.0
v /= v.mean()
x = rng.standard_normal(D) * np.sqrt(v)


def sig(a):
    return 1 / (1 + np.exp(-a))


def coeffs(lf, lt):
    e = math.exp(lf - lt)
    at, af, st = math.sqrt(sig(lt)), math.sqrt(sig(lf)), math.sqrt(sig(-lt))
    return e * at / af, at * (1 - e), st * math.sqrt(1 - e)


def denoise(z, lam):
    snr_v = math.exp(lam) * v
    return snr_v / (1 + snr_v) / math.sqrt(sig(lam)) * z


def post_var(lam):  # Var(x | z_lam) per dim
    return v / (1 + math.exp(lam) * v)


def flow_db(z, lam, lam_end=16.0):  # closed-form probability-flow map z_lam -> z_end, then denoise there
    a2, s2 = sig(lam), sig(-lam)
    a2e, s2e = sig(lam_end), sig(-lam_end)
    ze = z * np.sqrt((a2e * v + s2e) / (a2 * v + s2))
    xr = denoise(ze, lam_end)
    return 10 * math.log10(np.mean((xr - x) ** 2))


def d_of_r(bits):
    lo, hi = math.log(v.min()) - 60, math.log(v.max())
    for _ in range(100):
        mid = (lo + hi) / 2
        r = np.mean(np.clip(0.5 * np.log2(v / math.exp(mid)), 0, None))
        lo, hi = (mid, hi) if r > bits else (lo, mid)
    return 10 * math.log10(np.mean(np.minimum(v, math.exp(lo))))


def mi(lam):
    return float(np.mean(0.5 * np.log2(1 + math.exp(lam) * v)))


H = {}
STATS = dict(index=0.0, deliv=0.0)


def pfr_1d(m, bits, tau=1.0):
    """m: (n,) chunk norms -> (t, cost_bits) per chunk."""
    N = 1 << bits
    n = m.size
    u = rng.standard_normal((n, N))
    T = np.cumsum(rng.exponential(size=(n, N)), axis=1)
    k = np.argmin(np.log(T) - tau * m[:, None] * u, axis=1)
    key = (bits, ZIPF_A)
    if key not in H:
        H[key] = math.log2(np.sum(np.arange(1, N + 1, dtype=float) ** -ZIPF_A))
    STATS["deliv"] += float(0.5 * np.sum(np.minimum(u[np.arange(n), k], m) ** 2) / math.log(2))
    cost = ZIPF_A * np.log2(k + 1.0) + H[key]
    STATS["index"] += float(cost.sum())
    return u[np.arange(n), k], cost


def tree_1d(m, K, L, B):
    n = m.size
    sd = math.sqrt(1.0 / L)
    s = np.zeros((n, 1))
    for level in range(L):
        ch = (s[:, :, None] + rng.standard_normal((n, s.shape[1], K)) * sd).reshape(n, -1)
        if level < L - 1:
            keep = min(B, ch.shape[1])
            s = -np.sort(-ch, axis=1)[:, :keep]
        else:
            s = ch
    idx = np.argmin(np.abs(s - m[:, None]), axis=1)
    return s[np.arange(n), idx], np.full(n, L * math.log2(K))


def run(scheme, grid_steps=280, lmin=-12.0, lmax=16.0, fixed_bits=29.0, target_chunk_bits=10.0, stop_bits=7.0,
        skip_bits=0.0, kernel="narrow", **kw):
    lams = np.linspace(lmin, lmax, grid_steps + 1)
    z = rng.standard_normal(D)
    coded = kl_sum = 0.0
    rows = []
    for k in range(1, len(lams)):
        ls, lt = lams[k - 1], lams[k]
        cz, cx, sq = coeffs(ls, lt)
        xh = denoise(z, ls - DELTA)
        mu = cx * (x - xh) / sq
        kl = 0.5 * float(mu @ mu) / math.log(2)
        if kernel == "wide":  # exact reverse kernel: prior N(mean_p, sq^2 + cx^2 V); true KL per dim
            r2 = 1 + cx * cx * post_var(ls) / (sq * sq)
            klw = 0.5 * np.sum(np.log(r2) + (1 + mu * mu) / r2 - 1) / math.log(2)
        if scheme == "exact":
            eps = mu + rng.standard_normal(D)
            if kernel == "wide":
                kl = float(klw)
            cost = kl
        elif kl < skip_bits:
            eps = rng.standard_normal(D)
            cost = 0.0
        else:
            if scheme == "tree" and kw.get("vardepth"):
                kb = math.log2(kw["K"])
                eff = target_chunk_bits / (kw["L"] * kb)
                n = max(1, math.ceil(kl / target_chunk_bits))
                depth = max(1, min(kw["L"], math.ceil(kl / (n * kb * eff))))
                kw = dict(kw, Ld=depth)
            else:
                n = max(1, min(D, math.ceil(kl / target_chunk_bits)))
            perm = rng.permutation(D)
            bounds = (np.arange(n + 1) * D) // n
            mp = mu[perm]
            norms = np.sqrt(np.add.reduceat(mp * mp, bounds[:-1]))
            if scheme == "pfr":
                t, c = pfr_1d(norms, kw.get("bits", 12), kw.get("tau", 1.0))
            else:
                t, c = tree_1d(norms, kw["K"], kw.get("Ld", kw["L"]), kw["B"])
                STATS["index"] += float(c.sum())
                STATS["deliv"] += float(0.5 * np.sum(np.minimum(t, norms) ** 2) / math.log(2))
            g = rng.standard_normal(D)
            mhat = mp / np.repeat(np.maximum(norms, 1e-300), np.diff(bounds))
            proj = np.add.reduceat(g * mhat, bounds[:-1])
            e = g + np.repeat(t - proj, np.diff(bounds)) * mhat
            eps = np.empty(D)
            eps[perm] = e
            cost = float(c.sum()) + fixed_bits
        z = cz * z + cx * xh + sq * eps
        coded += cost
        kl_sum += kl
        rows.append((k, lt, coded / D, kl_sum / D, mi(lt), flow_db(z, lt - FLOWOFF)))
        if coded / D > stop_bits:
            break
    return rows


def summary(name, rows):
    r = np.array(rows)
    out = [name]
    for target in (1.0, 2.0, 4.0):
        i = int(np.searchsorted(r[:, 2], target))
        i = min(i, len(r) - 1)
        gap = r[i, 5] - d_of_r(r[i, 2])
        out.append(f"@{r[i, 2]:.2f}b: KL {r[i, 3]:.2f} I {r[i, 4]:.2f} flow {r[i, 5]:.2f} gap {gap:.2f}")
    hi = r[(r[:, 2] >= 4.0)]
    if len(hi) > 3:
        slope = -np.polyfit(hi[:, 2], hi[:, 5], 1)[0]
        out.append(f"slope(>=4b) {slope:.2f} dB/bit")
    print(" | ".join(out), flush=True)


def print_index_stats():
    idx, deliv = STATS["index"], STATS["deliv"]
    print(f"   index bits/dim {idx / D:.3f} delivered {deliv / D:.3f} ratio {deliv / max(idx, 1):.3f}")


ZIPF_A = 1.0
DELTA = float(os.environ.get('DELTA', 0))
FLOWOFF = float(os.environ.get('FLOWOFF', 0))
FIXED = float(os.environ.get("FIXED", 16))
VARDEPTH = bool(int(os.environ.get("VARDEPTH", 0)))
SKIP = float(os.environ.get("SKIP", 0))
if __name__ == "__main__":
    which = sys.argv[1:] or ["exact", "exact-wide", "pfr"]
    for s in which:
        if s == "exact":
            summary(s, run("exact"))
        elif s == "exact-wide":
            summary(s, run("exact", kernel="wide"))
        elif s.startswith("pfr"):
            _, tau, tgt, a = (s.split(":") + ["1", "10", "1"])[:4] if ":" in s else ("", "1", "10", "1")
            ZIPF_A = float(a)
            STATS.update(index=0.0, deliv=0.0)
            summary(s, run("pfr", bits=12, tau=float(tau), target_chunk_bits=float(tgt), fixed_bits=FIXED,
                           skip_bits=SKIP))
            print_index_stats()
        elif s.startswith("tree"):
            _, K, L, B, tgt = s.split(":")
            STATS.update(index=0.0, deliv=0.0)
            summary(s, run("tree", K=int(K), L=int(L), B=int(B), target_chunk_bits=float(tgt), fixed_bits=FIXED,
                           vardepth=VARDEPTH, skip_bits=SKIP))
            print_index_stats()
