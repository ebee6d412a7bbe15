"""Bjøntegaard delta rate and interpolation of rate–quality curves.

BD-rate (Bjøntegaard, VCEG-M33; piecewise-cubic variant used by the JVET/AOM common test
conditions): interpolate log-rate as a function of quality for both curves with a
monotone piecewise cubic (PCHIP), integrate both over the quality interval they share,
and report exp(mean difference) − 1 in percent. Negative = the test curve needs fewer
bits than the anchor for the same quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def monotone_curve(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points of a curve that are not dominated: sorted by rate, quality strictly increasing.

    A point costing more bits for no better quality (a codec's setting that overshoots)
    says nothing about the trade-off and would make quality → rate non-invertible.
    Non-finite values (e.g. PSNR = inf for a lossless point) are dropped.
    """
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape:
        raise ValueError(f"rates and quality differ in length: {r.shape} vs {q.shape}")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    out_r, out_q = [], []
    for ri, qi in zip(r[order], q[order]):
        if out_q and qi <= out_q[-1]:
            continue
        if out_r and ri == out_r[-1]:
            continue
        out_r.append(ri)
        out_q.append(qi)
    return np.array(out_r), np.array(out_q)


def bd_rate(anchor_rates: Sequence[float], anchor_quality: Sequence[float],
            test_rates: Sequence[float], test_quality: Sequence[float]) -> float:
    """Average rate difference of `test` against `anchor` in percent at equal quality.

    Quality must be "higher is better" (PSNR in dB, MS-SSIM in dB, SSIMULACRA2).
    Raises ValueError when a curve has fewer than two usable points or the quality
    ranges do not overlap.
    """
    from scipy.interpolate import PchipInterpolator

    ra, qa = monotone_curve(anchor_rates, anchor_quality)
    rt, qt = monotone_curve(test_rates, test_quality)
    if len(ra) < 2 or len(rt) < 2:
        raise ValueError("BD-rate needs at least two distinct points on each curve")
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        raise ValueError(f"quality ranges do not overlap (anchor {qa[0]:.3g}–{qa[-1]:.3g}, "
                         f"test {qt[0]:.3g}–{qt[-1]:.3g})")
    anchor = PchipInterpolator(qa, np.log(ra))
    test = PchipInterpolator(qt, np.log(rt))
    mean_log_ratio = (test.integrate(lo, hi) - anchor.integrate(lo, hi)) / (hi - lo)
    return (math.exp(mean_log_ratio) - 1.0) * 100.0


def quality_at_rate(rates: Sequence[float], quality: Sequence[float], target: float, *,
                    tolerance: float = 0.02) -> float:
    """Quality interpolated at `target` rate (PCHIP in log-rate); NaN outside the measured range.

    A target at most `tolerance` (relative) beyond the end points is still evaluated
    (rate control landing at 0.999 bpp should not hide the 1 bpp value). Unlike
    `bd_rate` this keeps every point (sorted by rate, duplicates averaged): a metric
    such as the realism distance need not improve monotonically with rate.
    """
    from scipy.interpolate import PchipInterpolator

    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    if len(r) == 0 or not r.min() / (1 + tolerance) <= target <= r.max() * (1 + tolerance):
        return math.nan
    ur = np.unique(r)
    uq = np.array([q[r == v].mean() for v in ur])
    if len(ur) == 1:
        return float(uq[0])
    return float(PchipInterpolator(np.log(ur), uq)(math.log(target)))


def msssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, −10·log10(1 − MS-SSIM), the usual axis for BD on MS-SSIM."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)
