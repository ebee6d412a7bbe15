"""Fused multi-head attention: a flash-style Triton kernel and its torch reference.

out = softmax(q kᵀ / √d) v for q [..., Lq, d], k and v [..., Lk, d]. The kernel never
materialises the Lq×Lk score matrix: each program owns BLOCK_M query rows and streams
over key/value blocks, keeping a running row maximum m, normaliser l and accumulator
(the online softmax of Milakov & Gimelshein 2018 / FlashAttention). Scores, the
softmax and both matmuls accumulate in fp32 whatever the input dtype.

The UNet uses attention only at its lowest resolution; on CPU the dispatcher calls
torch's scaled_dot_product_attention (also the reference for the kernel's tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import triton_available, use_triton


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) v over the last two dims; torch's SDPA."""
    return F.scaled_dot_product_attention(q, k, v)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dispatcher: the Triton kernel for CUDA tensors (or CPU under the interpreter in tests), SDPA otherwise."""
    _check(q, k, v)
    if use_triton(q, k, v):
        return attention_triton(q, k, v)
    return attention_reference(q, k, v)


def _check(q, k, v) -> None:
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError("q, k, v must have the same number of dims (>= 2): [..., L, d]")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"incompatible shapes q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError("q and k must have the same head dimension")


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _flash_attention_kernel(
        Q, K, V, O,
        stride_qb, stride_ql, stride_kb, stride_kl, stride_vb, stride_vl, stride_ob, stride_ol,
        Lq, Lk, D, Dv, qk_scale,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols_d = tl.arange(0, BLOCK_D)
        cols_dv = tl.arange(0, BLOCK_DV)
        q_ptrs = Q + bh * stride_qb + rows[:, None] * stride_ql + cols_d[None, :]
        q = tl.load(q_ptrs, mask=(rows[:, None] < Lq) & (cols_d[None, :] < D), other=0.0).to(tl.float32)
        m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
        for start in range(0, Lk, BLOCK_N):
            keys = start + tl.arange(0, BLOCK_N)
            kmask = keys < Lk
            k = tl.load(K + bh * stride_kb + keys[:, None] * stride_kl + cols_d[None, :],
                        mask=kmask[:, None] & (cols_d[None, :] < D), other=0.0).to(tl.float32)
            v = tl.load(V + bh * stride_vb + keys[:, None] * stride_vl + cols_dv[None, :],
                        mask=kmask[:, None] & (cols_dv[None, :] < Dv), other=0.0).to(tl.float32)
            # scores in log2 units: exp2(s · log2 e) = exp(s)
            s = tl.dot(q, tl.trans(k)) * qk_scale
            s = tl.where(kmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            rescale = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * rescale + tl.sum(p, axis=1)
            acc = acc * rescale[:, None] + tl.dot(p, v)
            m_i = m_new
        out = acc / l_i[:, None]
        o_ptrs = O + bh * stride_ob + rows[:, None] * stride_ol + cols_dv[None, :]
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=(rows[:, None] < Lq) & (cols_dv[None, :] < Dv))


def attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_m: int = 32,
                     block_n: int = 32) -> torch.Tensor:
    """The fused kernel; q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv] → [..., Lq, dv]."""
    if not triton_available():
        raise RuntimeError("triton is not installed")
    _check(q, k, v)
    lead = q.shape[:-2]
    lq, d = q.shape[-2:]
    lk, dv = v.shape[-2:]
    if lk == 0:
        raise ValueError("attention over zero keys is undefined")
    q3 = q.reshape(-1, lq, d).contiguous()
    k3 = k.reshape(-1, lk, d).contiguous()
    v3 = v.reshape(-1, lk, dv).contiguous()
    o3 = torch.empty(q3.shape[0], lq, dv, dtype=q.dtype, device=q.device)
    if q3.shape[0] and lq:
        grid = (triton.cdiv(lq, block_m), q3.shape[0])
        _flash_attention_kernel[grid](
            q3, k3, v3, o3,
            q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1), v3.stride(0), v3.stride(1),
            o3.stride(0), o3.stride(1),
            lq, lk, d, dv, (1.0 / math.sqrt(d)) * 1.4426950408889634,
            BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        )
    return o3.reshape(*lead, lq, dv)
