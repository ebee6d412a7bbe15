"""Held-out bits/dim of several denoisers on the same patches, λ and noise.

    python -m fastdiffc.train.compare --heldout data/photos/heldout \
        --model gaussian --model runs/unet_photos_v1/best_ema.safetensors [--json]

A model is a registry name or a .safetensors path. Because every model sees the same
patches, log-SNRs and noise (common random numbers), the per-patch differences are
paired; the report gives the mean difference to the first model and its standard error.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from .data import tile_patches
from .elbo import elbo_bits_per_dim


def load_any(spec: str):
    from ..models.registry import LOADERS, _read_metadata, content_hash, load_model

    path = Path(spec)
    if path.suffix == ".safetensors" and path.is_file():
        cfg = _read_metadata(path)
        if cfg is None or cfg["class"] not in LOADERS:
            raise ValueError(f"{path}: not a loadable fastdiffc model file")
        model = LOADERS[cfg["class"]](path)
        model.name, model.content_hash = str(path), content_hash(path)
        return model
    return load_model(spec)


def compare(models: dict, heldout, *, patch_size=64, patches=256, n_logsnr=16, logsnr_min=-15.0,
            logsnr_max=15.0, seed=1234) -> dict:
    x = tile_patches(heldout, patch_size, patches)
    out, base = {}, None
    for name, den in models.items():
        r = elbo_bits_per_dim(den, x, logsnr_min=logsnr_min, logsnr_max=logsnr_max, n_logsnr=n_logsnr, seed=seed)
        per = torch.tensor(r.pop("per_patch_bpd"), dtype=torch.float64)
        if base is None:
            base = per
        else:
            diff = per - base
            r["paired_diff_vs_first"] = float(diff.mean())
            r["paired_diff_stderr"] = float(diff.std() / math.sqrt(len(diff)))
        out[name] = r
    return {"heldout": str(heldout), "patch_size": patch_size, "n_patches": int(x.shape[0]), "models": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heldout", required=True)
    p.add_argument("--model", action="append", required=True, help="registry name or .safetensors path")
    p.add_argument("--patches", type=int, default=256)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--n-logsnr", type=int, default=16)
    p.add_argument("--logsnr-range", type=float, nargs=2, default=(-15.0, 15.0))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    models = {spec: load_any(spec) for spec in a.model}
    res = compare(models, a.heldout, patch_size=a.patch_size, patches=a.patches, n_logsnr=a.n_logsnr,
                  logsnr_min=a.logsnr_range[0], logsnr_max=a.logsnr_range[1])
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"held-out {res['heldout']}: {res['n_patches']} patches of {res['patch_size']}², "
              f"log-SNR [{a.logsnr_range[0]}, {a.logsnr_range[1]}], {a.n_logsnr} strata")
        for name, r in res["models"].items():
            extra = ""
            if "paired_diff_vs_first" in r:
                extra = f"  (vs first: {r['paired_diff_vs_first']:+.4f} ± {r['paired_diff_stderr']:.4f})"
            print(f"  {name:48s} {r['bpd']:.4f} bits/dim{extra}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
