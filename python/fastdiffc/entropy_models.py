"""Learned entropy models for transform coding (CDC, docs/design.md §4c), coded with constriction.

Two models, in the spirit of CompressAI's EntropyBottleneck / GaussianConditional:

- `FactorizedPrior` — a learned, per-channel density (Ballé et al. 2018, the "univariate
  non-parametric density": a monotone MLP gives each channel's CDF) for the hyper-latent ẑ.
- `GaussianConditional` — ŷ given (mean, scale) from the hyperprior, coded as the integer
  residual q = ŷ − mean with one of `NUM_SCALES` fixed tables (scale index k ↔ σ_k).

Training uses the continuous likelihoods of y + u, u ~ U(−½, ½) (`likelihood`); coding uses
integer frequency tables only (`IntTable`):

- A table is a list of integer frequencies over the symbols offset .. offset + n − 1, plus one
  **escape** symbol (the last entry). Every frequency is ≥ 1, they sum to 2^PRECISION, so any
  in-range value codes; a value outside the range codes as the escape symbol followed by its
  distance from the range (a sign and an Elias-gamma length/bits pair, both uniform), up to
  MAX_ESCAPE — so no input ever fails to code.
- The Gaussian tables are a fixed part of the format, not of a model: σ_k and the discretised
  normal masses are computed with Python's `decimal` module (software arithmetic, the same
  on every platform: no libm, no FMA, no compiler flags), then turned into integers with the
  largest-remainder rule. `gaussian_tables_digest()` pins them (a test checks the constant).
- The factorised prior's tables are computed once from the learned density, at export, and
  stored in the model file as integers; the decoder never evaluates the density.

The coded stream (`encode_symbols` / `decode_symbols`) groups the symbols by table, in table
order and then in raster order, into one stack-ANS stream (entropy.SymbolWriter), escapes
after all groups. Decoding re-encodes what it read and requires the same bytes, so a corrupt,
truncated or padded stream raises FormatError rather than decoding garbage.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, getcontext, localcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .entropy import SymbolReader, SymbolWriter, decode_canonical
from .errors import FormatError

PRECISION = 16  # table frequencies sum to 2^PRECISION
SCALE_MIN = Decimal("0.11")
SCALE_MAX = Decimal(128)
NUM_SCALES = 64
TAIL_SIGMAS = Decimal("4.5")  # a Gaussian table covers |q| <= ceil(4.5 σ_k); beyond: escape
MAX_ESCAPE_BITS = 20  # an escaped value lies at most 2^20 − 1 beyond its table's range
LIKELIHOOD_BOUND = 1e-9
_DIRECT_MIN = 1e-4  # below this bin mass the Gaussian likelihood is computed in log space


# ------------------------------------------------------------------------------------ tables


@dataclass(frozen=True, eq=False)
class IntTable:
    """Integer frequencies of the values offset .. offset + len(freqs) − 2, then the escape."""

    offset: int
    freqs: tuple[int, ...]

    def __post_init__(self):
        if len(self.freqs) < 2 or min(self.freqs) < 1 or sum(self.freqs) != 1 << PRECISION:
            raise ValueError(f"an IntTable needs >= 2 frequencies >= 1 summing to 2^{PRECISION}")

    @property
    def lo(self) -> int:
        return self.offset

    @property
    def hi(self) -> int:
        return self.offset + len(self.freqs) - 2

    @functools.cached_property
    def model(self):
        import constriction

        return constriction.stream.model.Categorical(np.asarray(self.freqs, dtype=np.float64), perfect=False)

    @functools.cached_property
    def bits_table(self) -> np.ndarray:
        f = np.asarray(self.freqs, dtype=np.float64)
        return PRECISION - np.log2(f)

    def cost_bits(self, values: np.ndarray) -> float:
        """Bits the table spends on `values` (escape payloads included), from the integer table."""
        v = np.asarray(values, dtype=np.int64)
        inside = (v >= self.lo) & (v <= self.hi)
        bits = float(self.bits_table[v[inside] - self.offset].sum())
        out = v[~inside]
        if out.size:
            dist = np.where(out < self.lo, self.lo - out - 1, out - self.hi - 1)
            nb = np.array([int(d + 1).bit_length() for d in dist])
            bits += out.size * (self.bits_table[-1] + 1 + 5) + float((nb - 1).sum())
        return bits


def quantize_pmf(probs: Sequence, precision: int = PRECISION) -> tuple[int, ...]:
    """Integer frequencies ≥ 1 summing to 2^precision, closest to `probs` (which sum to ≈ 1) by
    the largest-remainder rule. `probs` may be Decimals (exact, platform-independent) or floats;
    everything after the products is integer arithmetic, ties broken by position."""
    n = len(probs)
    total = 1 << precision
    free = total - n
    if free < 0:
        raise ValueError(f"{n} symbols do not fit in {precision}-bit frequencies")
    if isinstance(probs[0], Decimal):
        norm = sum(probs)
        with localcontext() as ctx:
            ctx.prec = 50
            scaled = [p * free / norm for p in probs]
            floors = [int(s) for s in scaled]  # int() truncates: s >= 0
            rema = [s - f for s, f in zip(scaled, floors)]
    else:
        p = np.asarray(probs, dtype=np.float64)
        p = np.maximum(p, 0.0)
        scaled = p * (free / p.sum())
        floors = [int(v) for v in np.floor(scaled)]
        rema = [float(v) for v in scaled - np.floor(scaled)]
    left = free - sum(floors)
    order = sorted(range(n), key=lambda i: (-rema[i], i))
    for i in order[:left]:
        floors[i] += 1
    return tuple(1 + f for f in floors)


# ------------------------------------------------------------------- Gaussian tables (decimal)


def _erf(x: Decimal) -> Decimal:
    """erf(x) by its Taylor series (x >= 0), rounded to the caller's decimal context.

    The alternating series' terms grow to ≈ e^{x²} before they shrink, so it runs with
    x²/ln 10 extra digits; the result is exact to the caller's precision for any x."""
    prec = getcontext().prec
    with localcontext() as ctx:
        ctx.prec = prec + 5 + int(float(x) ** 2 / 2.302585) + 1
        x2 = x * x
        term = x
        total = x
        n = 0
        eps = Decimal(10) ** (-(prec + 5))
        while True:
            n += 1
            term = -term * x2 / n
            add = term / (2 * n + 1)
            total += add
            if abs(add) < eps and n > x2:
                break
        out = total * 2 / _SQRT_PI
    return +out


def _phi_upper(x: Decimal) -> Decimal:
    """P(N(0,1) > x) for x >= 0."""
    return (1 - _erf(x / _SQRT2)) / 2


_SQRT2: Decimal | None = None  # set by gaussian_tables() in its 40-digit context
_SQRT_PI: Decimal | None = None


@functools.lru_cache(maxsize=1)
def scale_table() -> tuple[Decimal, ...]:
    """σ_k = SCALE_MIN · (SCALE_MAX / SCALE_MIN)^(k / (NUM_SCALES − 1)), correctly rounded decimals."""
    with localcontext() as ctx:
        ctx.prec = 40
        step = (SCALE_MAX / SCALE_MIN).ln() / (NUM_SCALES - 1)
        return tuple(+(SCALE_MIN * (step * k).exp()) for k in range(NUM_SCALES))


def log_scale_step() -> float:
    """ln(σ_{k+1} / σ_k): the float path's scale is SCALE_MIN · exp(t · step), index = round(t)."""
    return float((SCALE_MAX / SCALE_MIN).ln() / (NUM_SCALES - 1))


@functools.lru_cache(maxsize=1)
def gaussian_tables() -> tuple[IntTable, ...]:
    """The NUM_SCALES integer tables of the discretised N(0, σ_k²) over |q| <= ceil(4.5 σ_k),
    computed in 40-digit decimal arithmetic (identical on every platform)."""
    global _SQRT2, _SQRT_PI
    out = []
    with localcontext() as ctx:
        ctx.prec = 40
        _SQRT2 = Decimal(2).sqrt()
        _SQRT_PI = Decimal("3.141592653589793238462643383279502884197").sqrt()
        for sigma in scale_table():
            t = int((TAIL_SIGMAS * sigma).to_integral_value(rounding="ROUND_CEILING"))
            # upper[j] = P(N > (j + ½)/σ), j = 0..t: the mass above each half-integer
            upper = [_phi_upper((Decimal(j) + Decimal("0.5")) / sigma) for j in range(t + 1)]
            centre = 1 - 2 * upper[0]
            side = [upper[j - 1] - upper[j] for j in range(1, t + 1)]  # P(q = ±j)
            probs = side[::-1] + [centre] + side + [2 * upper[t]]
            out.append(IntTable(-t, quantize_pmf(probs)))
    return tuple(out)


def gaussian_tables_digest() -> str:
    """SHA-256 (hex) of every Gaussian table's offset and frequencies: the format constant."""
    h = hashlib.sha256()
    for tab in gaussian_tables():
        h.update(np.asarray([tab.offset, len(tab.freqs), *tab.freqs], dtype="<i8").tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ coding


def _check_codable(values: np.ndarray, table_ids: np.ndarray, n_tables: int) -> None:
    if values.shape != table_ids.shape:
        raise ValueError(f"values {values.shape} and table ids {table_ids.shape} differ in shape")
    if table_ids.size and (table_ids.min() < 0 or table_ids.max() >= n_tables):
        raise ValueError(f"table ids must lie in 0..{n_tables - 1}")


def _escape_parts(v: int, tab: IntTable) -> tuple[int, int]:
    """(side, distance) of a value outside the table: side 0 below lo, 1 above hi."""
    if v < tab.lo:
        return 0, tab.lo - v - 1
    return 1, v - tab.hi - 1


def _write_symbols(w: SymbolWriter, values: np.ndarray, table_ids: np.ndarray, tables) -> None:
    order, starts = _groups(table_ids, len(tables))
    v_sorted = values[order]
    escapes = []
    for k in range(len(tables)):
        seg = v_sorted[starts[k]:starts[k + 1]]
        if not seg.size:
            continue
        tab = tables[k]
        idx = seg - tab.offset
        out = (seg < tab.lo) | (seg > tab.hi)
        idx = np.where(out, len(tab.freqs) - 1, idx)
        w.write(idx, tab.model)
        escapes.extend((int(v), tab) for v in seg[out])
    for v, tab in escapes:
        side, dist = _escape_parts(v, tab)
        nb = (dist + 1).bit_length()
        if nb > MAX_ESCAPE_BITS:
            raise ValueError(f"value {v} lies too far outside its table ({tab.lo}..{tab.hi}) to code")
        w.write_uint(side, 1)
        w.write_uint(nb - 1, 5)
        if nb > 1:
            w.write_uint((dist + 1) - (1 << (nb - 1)), nb - 1)


def _groups(table_ids: np.ndarray, n_tables: int):
    """Positions sorted by table id (stable: raster order within a table) and group starts."""
    order = np.argsort(table_ids, kind="stable")
    counts = np.bincount(table_ids, minlength=n_tables)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return order, starts


def _read_symbols(r: SymbolReader, table_ids: np.ndarray, tables) -> np.ndarray:
    order, starts = _groups(table_ids, len(tables))
    v_sorted = np.empty(table_ids.size, dtype=np.int64)
    esc_pos = []
    for k in range(len(tables)):
        n = int(starts[k + 1] - starts[k])
        if not n:
            continue
        tab = tables[k]
        idx = r.read(n, tab.model)
        v_sorted[starts[k]:starts[k + 1]] = idx + tab.offset
        esc = np.nonzero(idx == len(tab.freqs) - 1)[0]
        esc_pos.extend((int(starts[k] + i), tab) for i in esc)
    for pos, tab in esc_pos:
        side = r.read_uint(1)
        nb = r.read_uint(5) + 1
        if nb > MAX_ESCAPE_BITS:
            raise FormatError(f"corrupt entropy-coded latent: escape length {nb} bits exceeds {MAX_ESCAPE_BITS}")
        dist = ((1 << (nb - 1)) | (r.read_uint(nb - 1) if nb > 1 else 0)) - 1
        v_sorted[pos] = tab.lo - 1 - dist if side == 0 else tab.hi + 1 + dist
    values = np.empty_like(v_sorted)
    values[order] = v_sorted
    return values


def encode_symbols(values, table_ids, tables: Sequence[IntTable]) -> bytes:
    """One stack-ANS stream of integer `values`, each coded with tables[table_ids[i]]."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    t = np.asarray(table_ids, dtype=np.int64).reshape(-1)
    _check_codable(v, t, len(tables))
    w = SymbolWriter()
    _write_symbols(w, v, t, tables)
    return w.to_bytes()


def decode_symbols(payload: bytes, table_ids, tables: Sequence[IntTable]) -> np.ndarray:
    """Inverse of encode_symbols (the table ids must be the encoder's); int64, flat.

    FormatError for anything the encoder would not have produced (bit flips, truncation,
    padding, impossible escapes)."""
    t = np.asarray(table_ids, dtype=np.int64).reshape(-1)
    _check_codable(t, t, len(tables))
    return decode_canonical(bytes(payload), lambda r: _read_symbols(r, t, tables),
                            lambda w, v: _write_symbols(w, v, t, tables))


def estimate_bits(values, table_ids, tables: Sequence[IntTable]) -> float:
    """What encode_symbols should spend on these values, from the integer tables alone."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    t = np.asarray(table_ids, dtype=np.int64).reshape(-1)
    order, starts = _groups(t, len(tables))
    vs = v[order]
    return sum(tables[k].cost_bits(vs[starts[k]:starts[k + 1]]) for k in range(len(tables))
               if starts[k + 1] > starts[k])


# ------------------------------------------------------------------------- training modules


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient passes where x < bound if it pushes x up (CompressAI's trick)."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (g < 0)
        return g * pass_through, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x * (2 ** -0.5))


class GaussianConditional(nn.Module):
    """ŷ | (μ, σ): the likelihood of a noisy or rounded latent, and table indices for coding.

    The float scale is parameterised as σ = SCALE_MIN · exp(step · t), so the table index of a
    fixed-point t (models/cdc.py's integer hyper-synthesis) is round(t) clamped to the table."""

    def __init__(self):
        super().__init__()
        self.step = log_scale_step()
        self.scale_min = float(SCALE_MIN)

    def scale_from_t(self, t: torch.Tensor) -> torch.Tensor:
        t = lower_bound(t, 0.0)
        return self.scale_min * torch.exp(self.step * t.clamp_max(NUM_SCALES - 1))

    def log_likelihood(self, y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """ln P(the unit bin around y) under N(mean, scale²), in float32 or wider, exact far into the tails.

        Training's rate term uses this, not a floored probability: with P floored at
        LIKELIHOOD_BOUND an outlier (|y − μ| ≫ σ) has no gradient, so neither the encoder nor the
        hyperprior learns that it costs anything, and the rd stage learned to park information
        there (measured on the second CDC model: 846 latents at the floor, 97% in two channels,
        the file paying ~20 escape bits for each). In log space their gradient widens σ or pulls
        y back. The bin is mirrored into the lower tail (v = |y − μ|), where log Φ is accurate."""
        dt = torch.promote_types(y.dtype, torch.float32)
        v = (y.to(dt) - mean.to(dt)).abs()
        s = lower_bound(scale.to(dt), self.scale_min)
        hi, lo = (0.5 - v) / s, (-0.5 - v) / s
        direct = _std_normal_cdf(hi) - _std_normal_cdf(lo)
        log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
        # ln(Φ(hi) − Φ(lo)) = ln Φ(hi) + ln(1 − Φ(lo)/Φ(hi)); the clamp keeps the unused branch finite
        tail = log_hi + torch.log1p(-torch.exp((log_lo - log_hi).clamp_max(-1e-6)))
        use_direct = direct > _DIRECT_MIN
        return torch.where(use_direct, torch.log(direct.clamp_min(_DIRECT_MIN)), tail)

    def likelihood(self, y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """P(the unit bin around y), floored at LIKELIHOOD_BOUND (for estimates, not for training)."""
        return lower_bound(self.log_likelihood(y, mean, scale).exp(), LIKELIHOOD_BOUND)

    @staticmethod
    def tables() -> tuple[IntTable, ...]:
        return gaussian_tables()

    @staticmethod
    def indices_from_fixed(t_fixed: torch.Tensor, frac_bits: int) -> torch.Tensor:
        """Table indices from t in fixed point (int64, units 2^-frac_bits): round half up, clamped."""
        if t_fixed.dtype != torch.int64:
            raise TypeError("fixed-point t must be int64")
        half = 1 << (frac_bits - 1)
        return torch.div(t_fixed + half, 1 << frac_bits, rounding_mode="floor").clamp(0, NUM_SCALES - 1)


class FactorizedPrior(nn.Module):
    """A learned density per channel (Ballé et al. 2018, appendix 6.1): the CDF of channel c is
    sigmoid(f_c(x)), f_c a monotone MLP 1 → 3 → 3 → 3 → 1 (softplus weights, tanh gates).

    `likelihood(z)` for training (z [N, C, H, W], noisy or rounded). `build_tables()` freezes
    the density into integer tables (buffers `table_offset` [C], `table_freqs` [C, n_max] with
    0 padding, `table_len` [C]) saved with the model; coding uses only those."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0,
                 max_support: int = 255):
        super().__init__()
        self.channels = channels
        self.max_support = max_support
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.register_buffer("table_offset", torch.zeros(channels, dtype=torch.int32))
        self.register_buffer("table_len", torch.zeros(channels, dtype=torch.int32))
        self.register_buffer("table_freqs", torch.zeros(channels, 2, dtype=torch.int32))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x [C, 1, K] → CDF logits [C, 1, K]."""
        for i, m in enumerate(self.matrices):
            x = torch.matmul(F.softplus(m), x) + self.biases[i]
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        n, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        lik = lower_bound(lik, LIKELIHOOD_BOUND)
        return lik.reshape(c, n, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def build_tables(self) -> None:
        """Integer tables from the current density: the support is every integer whose mass,
        with the tails, keeps the escape probability below ~2^-12 (at most 2·max_support + 1)."""
        r = self.max_support
        grid = torch.arange(-r, r + 2, dtype=torch.float64) - 0.5  # half-integers -r-½ .. r+½
        logits = self.logits_cdf(grid.to(self.matrices[0].dtype).expand(self.channels, 1, -1)).double()
        cdf = torch.sigmoid(logits[:, 0, :])  # [C, 2r + 2]
        tables = []
        for c in range(self.channels):
            cc = cdf[c]
            tail = 2.0 ** -(PRECISION - 4)
            lo_i = int(torch.nonzero(cc > tail / 2)[0]) if bool((cc > tail / 2).any()) else r
            hi_i = int(torch.nonzero(cc < 1 - tail / 2)[-1]) if bool((cc < 1 - tail / 2).any()) else r + 1
            lo_i = min(max(lo_i - 1, 0), r)
            hi_i = max(min(hi_i + 1, 2 * r + 1), lo_i + 1)
            probs = (cc[lo_i + 1:hi_i + 1] - cc[lo_i:hi_i]).clamp_min(0).tolist()
            esc = float(cc[lo_i] + (1 - cc[hi_i]))
            tables.append((lo_i - r, quantize_pmf([*probs, max(esc, 0.0)])))
        n_max = max(len(f) for _, f in tables)
        freqs = torch.zeros(self.channels, n_max, dtype=torch.int32)
        for c, (_, f) in enumerate(tables):
            freqs[c, :len(f)] = torch.tensor(f, dtype=torch.int32)
        self.table_offset = torch.tensor([o for o, _ in tables], dtype=torch.int32)
        self.table_len = torch.tensor([len(f) for _, f in tables], dtype=torch.int32)
        self.table_freqs = freqs

    def tables(self) -> tuple[IntTable, ...]:
        """The stored integer tables (ValueError if build_tables never ran; FormatError-free:
        they come from the model file, whose hash the bitstream pins)."""
        return _tables_from_buffers(self.table_offset, self.table_len, self.table_freqs)


def _tables_from_buffers(offset, length, freqs) -> tuple[IntTable, ...]:
    if int(length.min()) < 2:
        raise ValueError("the factorised prior has no integer tables (call build_tables() before coding)")
    key = (offset.numpy().tobytes(), length.numpy().tobytes(), freqs.numpy().tobytes())
    return _cached_tables(key)


@functools.lru_cache(maxsize=8)
def _cached_tables(key) -> tuple[IntTable, ...]:
    offset = np.frombuffer(key[0], dtype=np.int32)
    length = np.frombuffer(key[1], dtype=np.int32)
    freqs = np.frombuffer(key[2], dtype=np.int32).reshape(len(offset), -1)
    return tuple(IntTable(int(o), tuple(int(v) for v in freqs[c, :n])) for c, (o, n) in enumerate(zip(offset, length)))


__all__ = ["IntTable", "FactorizedPrior", "GaussianConditional", "gaussian_tables", "gaussian_tables_digest",
           "scale_table", "log_scale_step", "quantize_pmf", "encode_symbols", "decode_symbols", "estimate_bits",
           "lower_bound", "PRECISION", "NUM_SCALES", "SCALE_MIN", "SCALE_MAX"]
