"""Fused sampler updates: each is one pass over memory instead of several torch ops.

Two element-wise updates cover every sampler in fastdiffc.diffusion.samplers:

- ``ancestral_update``: ``out = c_z·z + c_x·x̂ + std·noise`` — the ancestral (DDPM) step
  z_to ~ q(z_to | z_from, x̂0) and the stochastic DDIM step (η > 0).
- ``flow_update``: ``out = c_z·z + c_1·d1 [+ c_2·d2]`` — the deterministic DDIM / probability-flow
  step, with the optional second term used by the 2nd-order solvers (Heun, DPM-Solver++(2M)).

The coefficients are Python floats computed in float64 by the samplers (one value per launch).
Half-precision inputs are accumulated in float32 and rounded once on store; float32 is computed in
float32. The Triton kernels take float16 / bfloat16 / float32 (Triton passes float scalars as
float32, which would cost a float64 update its precision): float64 always takes the torch path.
Each update has a torch reference (``*_ref``), a Triton implementation (``*_triton``) and a
dispatcher that picks Triton via ``kernels.use_triton``.
"""

from __future__ import annotations

import torch

from . import triton_available, use_triton

_BLOCK = 1024

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _ancestral_kernel(z_ptr, x_ptr, n_ptr, out_ptr, c_z, c_x, std, numel, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        e = tl.load(n_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        out = c_z * z + c_x * x + std * e
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _flow_kernel(z_ptr, d1_ptr, d2_ptr, out_ptr, c_z, c_1, c_2, numel,
                     BLOCK: tl.constexpr, HAS_D2: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d1 = tl.load(d1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        out = c_z * z + c_1 * d1
        if HAS_D2:
            d2 = tl.load(d2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            out = out + c_2 * d2
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _check_same(ref: torch.Tensor, *others: torch.Tensor) -> None:
    for o in others:
        if o.shape != ref.shape:
            raise ValueError(f"shape mismatch: {tuple(o.shape)} vs {tuple(ref.shape)}")
        if o.dtype != ref.dtype:
            raise ValueError(f"dtype mismatch: {o.dtype} vs {ref.dtype}")
        if o.device != ref.device:
            raise ValueError(f"device mismatch: {o.device} vs {ref.device}")
    if not ref.is_floating_point():
        raise ValueError(f"sampler updates need floating-point tensors, got {ref.dtype}")


# ----------------------------------------------------------------------------- references

def ancestral_update_ref(z, x_hat, noise, c_z: float, c_x: float, std: float) -> torch.Tensor:
    """torch reference: c_z·z + c_x·x̂ + std·noise (half precision accumulated in float32)."""
    _check_same(z, x_hat, noise)
    acc = _acc_dtype(z)
    out = c_z * z.to(acc) + c_x * x_hat.to(acc) + std * noise.to(acc)
    return out.to(z.dtype)


def flow_update_ref(z, d1, c_z: float, c_1: float, d2=None, c_2: float = 0.0) -> torch.Tensor:
    """torch reference: c_z·z + c_1·d1 (+ c_2·d2)."""
    _check_same(z, d1, *(() if d2 is None else (d2,)))
    acc = _acc_dtype(z)
    out = c_z * z.to(acc) + c_1 * d1.to(acc)
    if d2 is not None:
        out = out + c_2 * d2.to(acc)
    return out.to(z.dtype)


# ----------------------------------------------------------------------------- Triton launchers

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_triton_dtype(t: torch.Tensor) -> None:
    if t.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton sampler kernels take float16/bfloat16/float32, got {t.dtype} "
                         "(use the torch path)")


def _grid(numel):
    return (triton.cdiv(numel, _BLOCK),)


def ancestral_update_triton(z, x_hat, noise, c_z: float, c_x: float, std: float) -> torch.Tensor:
    if not triton_available():
        raise RuntimeError("triton is not available")
    _check_same(z, x_hat, noise)
    _check_triton_dtype(z)
    z, x_hat, noise = (t.contiguous() for t in (z, x_hat, noise))
    out = torch.empty_like(z)
    numel = z.numel()
    if numel:
        _ancestral_kernel[_grid(numel)](z, x_hat, noise, out, float(c_z), float(c_x), float(std), numel,
                                        BLOCK=_BLOCK)
    return out


def flow_update_triton(z, d1, c_z: float, c_1: float, d2=None, c_2: float = 0.0) -> torch.Tensor:
    if not triton_available():
        raise RuntimeError("triton is not available")
    _check_same(z, d1, *(() if d2 is None else (d2,)))
    _check_triton_dtype(z)
    z, d1 = z.contiguous(), d1.contiguous()
    has_d2 = d2 is not None
    d2 = d2.contiguous() if has_d2 else d1  # unused pointer when HAS_D2 is False
    out = torch.empty_like(z)
    numel = z.numel()
    if numel:
        _flow_kernel[_grid(numel)](z, d1, d2, out, float(c_z), float(c_1), float(c_2), numel,
                                   BLOCK=_BLOCK, HAS_D2=has_d2)
    return out


# ----------------------------------------------------------------------------- dispatchers

def ancestral_update(z, x_hat, noise, c_z: float, c_x: float, std: float) -> torch.Tensor:
    """z_to = c_z·z + c_x·x̂ + std·noise; Triton on CUDA (or the interpreter when enabled), torch otherwise."""
    if z.dtype in _TRITON_DTYPES and use_triton(z, x_hat, noise):
        return ancestral_update_triton(z, x_hat, noise, c_z, c_x, std)
    return ancestral_update_ref(z, x_hat, noise, c_z, c_x, std)


def flow_update(z, d1, c_z: float, c_1: float, d2=None, c_2: float = 0.0) -> torch.Tensor:
    """z_to = c_z·z + c_1·d1 (+ c_2·d2); Triton on CUDA (or the interpreter when enabled), torch otherwise."""
    tensors = (z, d1) if d2 is None else (z, d1, d2)
    if z.dtype in _TRITON_DTYPES and use_triton(*tensors):
        return flow_update_triton(z, d1, c_z, c_1, d2, c_2)
    return flow_update_ref(z, d1, c_z, c_1, d2, c_2)
