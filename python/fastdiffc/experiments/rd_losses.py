"""Where DiffC's rate goes on the gaussian-rd source (issue 15): the losses separated.

One encode of the power-law Gaussian (experiments.gaussian_rd) with a given RCC scheme, cut at
the steps whose *coded* size first passes each target (bits/dim), and per cut:

- `mutual_info`: I(X; Z_K), the rate of ideal continuous-time channel simulation;
- `kl_exact`: Σ KL along an *exact-sample* trajectory (z_k drawn exactly from q(z_k | z_{k-1}, x),
  same grid and model steps): I(X; Z_K) plus the discrete-step excess of the model's reverse
  kernel p(z_k | z_{k-1}) = q(z_k | z_{k-1}, x̂0) (it ignores the posterior variance of x);
- `kl_coded`: Σ KL along the coded trajectory (the chain the RCC samples actually produced):
  larger than `kl_exact` when samples fall short of μ and later steps pay again;
- `coded`: the payload bits (index codes, chunk counts, ANS flush, byte rounding);
- flow reconstruction (paper's decoder, no offset) vs D(R) at the coded rate, and the flow from an
  exact sample of q(z_K | x) vs D(R) at I(X; Z_K).

`summary` reports the flow's dB per coded bit/dim from the cuts at >= 4 coded bits/dim (vs
6.02 for D(R)) and the gap to D(R) at ≈ 1, 2, 4 coded bits/dim. `PHOTO` is DiffC's photo grid
and RCC defaults (b = 10, λ −6…10 in 32 steps, float32) on the same source.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..diffusion.vp import posterior_coefficients
from ..pipelines import diffc
from . import gaussian_rd as g

DEFAULTS = dict(dims=16384, exponent=1.0, knee=64.0, coded_targets=(1.0, 2.0, 4.0, 5.0, 6.0), logsnr_min=-12.0,
                logsnr_max=16.0, grid_steps=280, scheme="tree", bits_per_chunk=12, margin=2.0, tree_level_bits=4,
                tree_levels=16, tree_beam=32, tree_margin=8.0, dtype="float64", recon_steps=100, seed=0)
PHOTO = dict(DEFAULTS, logsnr_min=-6.0, logsnr_max=10.0, grid_steps=32, bits_per_chunk=10, margin=2.0,
             tree_levels=8, tree_beam=16, tree_margin=5.0, dtype="float32",
             coded_targets=(0.25, 0.5, 1.0, 2.0, 3.0, 4.0))


make_settings = g.make_settings


def exact_trajectory_kl(model, x, grid, steps, settings, seed) -> np.ndarray:
    """Cumulative Σ KL (bits) along a trajectory of exact samples z_k ~ q(z_k | z_{k-1}, x)."""
    gen = torch.Generator().manual_seed(seed + 7)
    z = diffc.initial_latent(x.shape, settings).to(torch.float64)
    x = x.to(torch.float64)
    out = []
    total = 0.0
    for k in range(1, steps + 1):
        c_z, c_x, std = (float(v) for v in posterior_coefficients(torch.tensor(grid[k - 1], dtype=torch.float64),
                                                                  torch.tensor(grid[k], dtype=torch.float64)))
        x_hat = model(z, torch.tensor([grid[k - 1]], dtype=torch.float64)).to(torch.float64)
        mu = c_x * (x - x_hat) / std
        total += float((mu * mu).sum()) / (2 * math.log(2))
        z = c_z * z + c_x * x + std * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        out.append(total)
    return np.asarray(out)


def run(dims=DEFAULTS["dims"], exponent=DEFAULTS["exponent"], knee=DEFAULTS["knee"],
        coded_targets=DEFAULTS["coded_targets"], logsnr_min=DEFAULTS["logsnr_min"],
        logsnr_max=DEFAULTS["logsnr_max"], grid_steps=DEFAULTS["grid_steps"], scheme=DEFAULTS["scheme"],
        bits_per_chunk=DEFAULTS["bits_per_chunk"], margin=DEFAULTS["margin"],
        tree_level_bits=DEFAULTS["tree_level_bits"], tree_levels=DEFAULTS["tree_levels"],
        tree_beam=DEFAULTS["tree_beam"], tree_margin=DEFAULTS["tree_margin"], dtype=DEFAULTS["dtype"],
        recon_steps=DEFAULTS["recon_steps"], seed=DEFAULTS["seed"], backend="auto", progress=False) -> dict:
    targets = sorted(float(r) for r in coded_targets)
    var = g.power_law_variances(dims, exponent, knee).reshape(1, 1, 1, dims)
    model = g.DiagonalGaussianDenoiser(var)
    settings = make_settings(scheme, bits_per_chunk, margin, tree_level_bits, tree_levels, tree_beam, tree_margin,
                             seed, logsnr_min, logsnr_max, grid_steps, dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(var.shape, generator=gen, dtype=torch.float64) * var.sqrt()
    grid = settings.grid()
    stop_bits = targets[-1] * dims
    import time

    t0 = time.perf_counter()
    enc = diffc.encode(model, x.to(settings.torch_dtype), settings, backend=backend, progress=progress,
                       stop=lambda e: 8 * sum(map(len, e.segments)) >= stop_bits)
    encode_s = time.perf_counter() - t0
    coded = np.cumsum([8 * len(s) for s in enc.segments]) / dims
    ideal = np.cumsum(enc.kl_bits) / dims
    ks = sorted({min(int(np.searchsorted(coded, r)) + 1, enc.steps) for r in targets})
    kl_exact = exact_trajectory_kl(model, x, grid, enc.steps, settings, seed) / dims
    kept = {}
    diffc.replay(model, enc.segments, x.shape, settings, backend=backend,
                 on_step=lambda k, z: kept.__setitem__(k, z) if k in ks else None)
    rows = []
    for k in ks:
        z, lam = kept[k], grid[k]
        row = {"steps": k, "logsnr": lam, "coded": float(coded[k - 1]), "kl_coded": float(ideal[k - 1]),
               "kl_exact": float(kl_exact[k - 1]), "mutual_info": g.mutual_information_bits(var, lam)}
        xr = diffc.reconstruct(model, z, lam, settings, method="flow", recon_steps=recon_steps)
        row["flow_db"] = g._db(float(((xr.double() - x) ** 2).mean()))
        a, sd = math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))
        z_exact = (a * x + sd * torch.randn(x.shape, generator=gen, dtype=torch.float64)).to(settings.torch_dtype)
        xr = diffc.reconstruct(model, z_exact, lam, settings, method="flow", recon_steps=recon_steps)
        row["flow_exact_sample_db"] = g._db(float(((xr.double() - x) ** 2).mean()))
        row["d_of_r_db"] = g._db(g.distortion_rate(var, row["coded"]))
        row["d_of_r_mi_db"] = g._db(g.distortion_rate(var, row["mutual_info"]))
        row["gap_db"] = row["flow_db"] - row["d_of_r_db"]
        rows.append(row)
    return {"rows": rows, "summary": summary(rows), "encode_s_per_step": encode_s / enc.steps,
            "settings": {"scheme": scheme, **settings.rcc_settings.to_dict(), "grid_steps": grid_steps,
                         "logsnr_min": logsnr_min, "logsnr_max": logsnr_max, "dtype": dtype, "dims": dims}}


def summary(rows: list[dict]) -> dict:
    out = {}
    hi = [r for r in rows if r["coded"] >= 4.0 - 0.05]
    if len(hi) >= 2:
        c = np.array([r["coded"] for r in hi])
        f = np.array([r["flow_db"] for r in hi])
        out["db_per_coded_bit"] = float(-np.polyfit(c, f, 1)[0])
        out["db_per_coded_bit_rates"] = [round(float(v), 3) for v in c]
    for target in (1.0, 2.0, 4.0):
        near = min(rows, key=lambda r: abs(r["coded"] - target))
        out[f"gap_db_at_{target:g}"] = {"coded": near["coded"], "gap_db": near["gap_db"]}
    return out


def format_table(result: dict) -> str:
    lines = [f"settings: {result['settings']}  encode {result['encode_s_per_step']:.3f} s/step",
             f"{'steps':>5} {'logSNR':>7} {'coded':>6} {'KLcod':>6} {'KLexa':>6} {'I(X;Z)':>6} | "
             f"{'flow':>7} {'D(Rc)':>7} {'gap':>6} | {'flowX':>7} {'D(I)':>7} | coded/KLc KLc/KLx KLx/I"]
    for r in result["rows"]:
        lines.append(f"{r['steps']:>5} {r['logsnr']:>7.2f} {r['coded']:>6.3f} {r['kl_coded']:>6.3f} "
                     f"{r['kl_exact']:>6.3f} {r['mutual_info']:>6.3f} | {r['flow_db']:>7.2f} {r['d_of_r_db']:>7.2f} "
                     f"{r['gap_db']:>6.2f} | {r['flow_exact_sample_db']:>7.2f} {r['d_of_r_mi_db']:>7.2f} | "
                     f"{r['coded'] / r['kl_coded']:.3f} {r['kl_coded'] / r['kl_exact']:.3f} "
                     f"{r['kl_exact'] / r['mutual_info']:.3f}")
    lines.append(f"summary: {result['summary']}")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser()
    p.add_argument("--photo", action="store_true")
    p.add_argument("--json", action="store_true")
    for k, v in DEFAULTS.items():
        if k in ("coded_targets",):
            continue
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=None)
    a = p.parse_args()
    kw = dict(PHOTO if a.photo else DEFAULTS)
    kw.update({k: v for k, v in vars(a).items() if k in kw and v is not None})
    res = run(**kw)
    print(json.dumps(res) if a.json else format_table(res))
