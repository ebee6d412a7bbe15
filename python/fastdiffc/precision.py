"""Compute precision of model inference: float32 everywhere, bfloat16 where the CPU has it.

This CPU family has AVX512-BF16 (and AMX on newer parts); oneDNN then runs convolutions in
bfloat16 about twice as fast as float32 (measured on the DIRAC residual UNet at 768×512:
0.40 s vs 0.84 s per forward, output RMSE 1.5e-4 in [-1, 1] image units, i.e. 0.02 of a grey
level). `torch.autocast` keeps the weights in float32 and the sampler arithmetic outside the
model in float32; only the network's activations are bfloat16.

"auto" resolves to "bfloat16" when the CPU supports it natively, else "float32" (emulated
bfloat16 is slower than float32). A file records the precision its encoder used
(container Header.precision); decoders use it by default.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

PRECISIONS = ("float32", "bfloat16", "float64")


def hardware_bfloat16() -> bool:
    """True when the CPU runs bfloat16 matrix maths natively (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False


def resolve(precision: str) -> str:
    """'auto' → the fastest supported precision; otherwise the name, checked."""
    if precision == "auto":
        return "bfloat16" if hardware_bfloat16() else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(precision: str):
    """The context that runs model calls in `precision` (float32/float64: none)."""
    if precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


class AutocastDenoiser:
    """A denoiser whose calls run under `autocast(precision)` and return float32.

    The cast back is why this exists: whatever a model returns under autocast (bfloat16 from a
    final convolution, float32 from a wrapper that mixes in z), the sampler arithmetic that
    consumes it (DiffC's μ and z_k, DIRAC's steps, the flow ODE) stays float32 on both sides of
    a file. Other attributes (name, content_hash, spec, conditioning, ...) are the model's.
    """

    def __init__(self, denoiser, precision: str):
        self.denoiser = denoiser
        self.precision = precision

    def __getattr__(self, item):
        if item == "denoiser":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(item)
        return getattr(self.denoiser, item)

    def __call__(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        with autocast(self.precision):
            out = self.denoiser(z, logsnr, cond)
        return out.float()


def for_model(denoiser, precision: str):
    """`denoiser` computing in `precision`: the model itself for float32 and float64 (so those
    paths, and every file written with them, are untouched), an AutocastDenoiser for bfloat16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return AutocastDenoiser(denoiser, precision) if precision == "bfloat16" else denoiser


__all__ = ["PRECISIONS", "AutocastDenoiser", "autocast", "for_model", "hardware_bfloat16", "resolve"]
