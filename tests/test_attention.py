import pytest
import torch
from fastdiffc.kernels import attention as attn_mod
from fastdiffc.kernels import triton_available

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")


@needs_triton
@pytest.mark.parametrize(
    "shape_q,lk,dv",
    [((1, 1, 5, 8), 5, 8), ((2, 3, 17, 16), 17, 16), ((1, 2, 40, 24), 33, 24), ((3, 7, 12), 50, 20)],
)
def test_triton_matches_sdpa(shape_q, lk, dv):
    g = torch.Generator().manual_seed(sum(shape_q) + lk)
    q = torch.randn(*shape_q, generator=g)
    k = torch.randn(*shape_q[:-2], lk, shape_q[-1], generator=g)
    v = torch.randn(*shape_q[:-2], lk, dv, generator=g)
    got = attn_mod.attention_triton(q, k, v, block_m=16, block_n=16)
    torch.testing.assert_close(got, attn_mod.attention_reference(q, k, v), rtol=1e-4, atol=1e-5)


@needs_triton
def test_triton_online_softmax_is_stable_for_large_scores():
    """Scores of ±1000 overflow a naive exp; the running maximum keeps them finite."""
    g = torch.Generator().manual_seed(0)
    q = 40 * torch.randn(1, 1, 9, 16, generator=g)
    k = 40 * torch.randn(1, 1, 37, 16, generator=g)
    v = torch.randn(1, 1, 37, 16, generator=g)
    got = attn_mod.attention_triton(q, k, v, block_m=16, block_n=16)
    assert torch.isfinite(got).all()
    # fp32 scores of ~1e3 carry ~1e-4 absolute rounding into exp: compare with a float64 reference
    want = attn_mod.attention_reference(q.double(), k.double(), v.double()).float()
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


@needs_triton
def test_triton_bf16_inputs_accumulate_in_fp32():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 20, 16, generator=g).bfloat16() for _ in range(3))
    got = attn_mod.attention_triton(q, k, v, block_m=16, block_n=16)
    assert got.dtype == torch.bfloat16
    want = attn_mod.attention_reference(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@needs_triton
def test_dispatcher_uses_triton_under_interpreter(monkeypatch):
    calls = []
    real = attn_mod.attention_triton
    monkeypatch.setattr(attn_mod, "attention_triton", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q = torch.randn(1, 1, 6, 16)
    monkeypatch.setenv("FASTDIFFC_TRITON_ON_CPU", "1")
    out = attn_mod.attention(q, q, q)
    assert calls == [1]
    torch.testing.assert_close(out, attn_mod.attention_reference(q, q, q), rtol=1e-4, atol=1e-5)
    monkeypatch.delenv("FASTDIFFC_TRITON_ON_CPU")
    attn_mod.attention(q, q, q)
    assert calls == [1]  # CPU tensors without the opt-in: SDPA


def test_shape_errors():
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="incompatible"):
        attn_mod.attention(q, torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="head dimension"):
        attn_mod.attention(q, torch.randn(1, 4, 6), torch.randn(1, 4, 6))
