"""Fused sampler-update kernels (kernels/sampler_updates.py) against their torch references,
run on the CPU under the Triton interpreter (TRITON_INTERPRET=1, set in conftest.py)."""

import pytest
import torch
from fastdiffc import kernels
from fastdiffc.kernels import sampler_updates as su

pytestmark = pytest.mark.skipif(not kernels.triton_available(), reason="triton not installed")

# Shapes: smaller than one block, not a multiple of the block, several blocks.
SHAPES = [(1, 3, 5, 7), (2, 3, 17, 31), (1, 1, 2049)]
COEFS = (0.93, 0.31, 0.047)


def _inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


def _close(a, b, dtype):
    assert a.dtype == b.dtype == dtype and a.shape == b.shape
    if dtype in (torch.float32, torch.float16):
        # Same operations in the same precision, one rounding on store: identical or 1 ulp.
        tol = {torch.float32: 1e-6, torch.float16: 1e-3}[dtype]
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    else:  # bfloat16: the interpreter's fp32 → bf16 conversion may round differently by one ulp
        torch.testing.assert_close(a.float(), b.float(), rtol=2 ** -7, atol=2 ** -7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_ancestral_kernel_matches_reference(shape, dtype):
    z, x, n = _inputs(shape, dtype, 1)
    _close(su.ancestral_update_triton(z, x, n, *COEFS), su.ancestral_update_ref(z, x, n, *COEFS), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_flow_kernel_matches_reference(shape, dtype):
    z, d1, d2 = _inputs(shape, dtype, 2)
    _close(su.flow_update_triton(z, d1, 0.8, 0.4), su.flow_update_ref(z, d1, 0.8, 0.4), dtype)
    _close(su.flow_update_triton(z, d1, 0.8, 0.4, d2, -0.15), su.flow_update_ref(z, d1, 0.8, 0.4, d2, -0.15), dtype)


def test_reference_is_the_textbook_formula():
    z, x, n = _inputs((2, 3, 4, 4), torch.float64, 3)
    torch.testing.assert_close(su.ancestral_update_ref(z, x, n, *COEFS), COEFS[0] * z + COEFS[1] * x + COEFS[2] * n,
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(su.flow_update_ref(z, x, 0.5, 0.25, n, 2.0), 0.5 * z + 0.25 * x + 2.0 * n,
                               rtol=0, atol=1e-15)


def test_non_contiguous_and_empty_inputs():
    z, x, n = _inputs((2, 3, 8, 6), torch.float32, 4)
    zt, xt, nt = (t.transpose(-1, -2) for t in (z, x, n))
    torch.testing.assert_close(su.ancestral_update_triton(zt, xt, nt, *COEFS),
                               su.ancestral_update_ref(zt, xt, nt, *COEFS))
    torch.testing.assert_close(su.flow_update_triton(zt, xt, 0.7, 0.2), su.flow_update_ref(zt, xt, 0.7, 0.2))
    e = torch.empty(0, 3, 4, 4)
    assert su.ancestral_update_triton(e, e, e, *COEFS).shape == e.shape
    assert su.flow_update_triton(e, e, 1.0, 1.0).shape == e.shape


def test_mismatched_inputs_raise_clear_errors():
    z = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="shape mismatch"):
        su.ancestral_update(z, torch.zeros(1, 3, 4, 5), z, *COEFS)
    with pytest.raises(ValueError, match="dtype mismatch"):
        su.flow_update_triton(z, z.double(), 1.0, 1.0)
    with pytest.raises(ValueError, match="floating-point"):
        su.flow_update_ref(z.long(), z.long(), 1.0, 1.0)
    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        su.ancestral_update_triton(z.double(), z.double(), z.double(), *COEFS)


def test_dispatcher_follows_use_triton(monkeypatch):
    z, x, n = _inputs((1, 3, 9, 9), torch.float32, 5)
    calls = []
    real = su.ancestral_update_triton

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(su, "ancestral_update_triton", spy)
    monkeypatch.delenv("FASTDIFFC_TRITON_ON_CPU", raising=False)
    out_torch = su.ancestral_update(z, x, n, *COEFS)
    assert calls == []  # CPU tensors: torch path
    monkeypatch.setenv("FASTDIFFC_TRITON_ON_CPU", "1")
    out_triton = su.ancestral_update(z, x, n, *COEFS)
    assert calls == [1]  # interpreter explicitly enabled for CPU: Triton path
    torch.testing.assert_close(out_triton, out_torch, rtol=1e-6, atol=1e-6)
    su.ancestral_update(z.double(), x.double(), n.double(), *COEFS)
    assert calls == [1]  # float64 always takes the exact torch path


@pytest.mark.parametrize("method,kw", [("ancestral", {}), ("ddim", {"eta": 0.5}), ("flow", {"solver": "heun"}),
                                       ("flow", {"solver": "dpm++2m"})])
def test_samplers_give_the_same_result_through_the_triton_kernels(monkeypatch, method, kw):
    from fastdiffc.diffusion import samplers
    from fastdiffc.models.gaussian import GaussianDenoiser

    den = GaussianDenoiser.power_law()
    z = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    lam = torch.linspace(-4.0, 6.0, 6)
    monkeypatch.delenv("FASTDIFFC_TRITON_ON_CPU", raising=False)
    ref = samplers.sample(den, z, lam, method, generator=torch.Generator().manual_seed(1), **kw)
    monkeypatch.setenv("FASTDIFFC_TRITON_ON_CPU", "1")
    got = samplers.sample(den, z, lam, method, generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
