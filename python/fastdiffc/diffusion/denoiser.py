"""The Denoiser protocol (k-diffusion style, docs/design.md §3) and adapters.

Every model is used only as `denoiser(z, logsnr, cond=None) -> x0_hat`, where z is an
NCHW tensor, logsnr a scalar or [N] tensor, and the result the estimate of the clean
image in [-1, 1] units. Networks that predict ε or v are wrapped by the adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .vp import _as_tensor, _per_sample, alpha_sigma


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        ...


@dataclass(frozen=True)
class Conditioning:
    """What a conditional denoiser sees besides z and λ (DIRAC, CDC).

    `image`: [N, C, H, W] at z's resolution (DIRAC: the base reconstruction; CDC: the decoded
    latent's features); `label`: [N] long (DIRAC: which base codec); `scalars`: [N, S]
    (DIRAC: the base rate and JPEG quality). A plain tensor passed as `cond` means `image`."""

    image: torch.Tensor | None = None
    label: torch.Tensor | None = None
    scalars: torch.Tensor | None = None


def call_net(net, z: torch.Tensor, lam: torch.Tensor, cond) -> torch.Tensor:
    """net(z, λ, ...) with `cond` given as None, an image tensor or a Conditioning."""
    if isinstance(cond, Conditioning):
        if cond.label is None and cond.scalars is None:
            return net(z, lam, cond.image)
        return net(z, lam, cond.image, cond.label, cond.scalars)
    return net(z, lam, cond)


def _batch_logsnr(z: torch.Tensor, logsnr) -> torch.Tensor:
    lam = _as_tensor(logsnr, z).to(z.dtype)
    if lam.ndim == 0:
        lam = lam.expand(z.shape[0])
    return lam


class EpsDenoiser:
    """Wraps `net(z, logsnr, cond) -> ε̂`: x̂0 = (z − σ ε̂) / α."""

    def __init__(self, net):
        self.net = net

    def __call__(self, z, logsnr, cond=None):
        lam = _batch_logsnr(z, logsnr)
        a, s = (_per_sample(v, z.ndim) for v in alpha_sigma(lam))
        eps = call_net(self.net, z, lam, cond)
        return (z - s * eps) / a


class VDenoiser:
    """Wraps `net(z, logsnr, cond) -> v̂` (v = α ε − σ x): x̂0 = α z − σ v̂."""

    def __init__(self, net):
        self.net = net

    def __call__(self, z, logsnr, cond=None):
        lam = _batch_logsnr(z, logsnr)
        a, s = (_per_sample(v, z.ndim) for v in alpha_sigma(lam))
        v = call_net(self.net, z, lam, cond)
        return a * z - s * v


class XDenoiser:
    """Wraps an x-parameterised `net(z, logsnr, cond) -> x̂0` (CDC, DIRAC's residual model)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, z, logsnr, cond=None):
        return call_net(self.net, z, _batch_logsnr(z, logsnr), cond)
