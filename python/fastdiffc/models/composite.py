"""A composite denoiser: one of several models chosen by log-SNR ("switch by λ").

DiffC's rate at each step is the model's denoising error at the step's starting λ, and
different models are best at different λ (measured with `fastdiffc experiments model-kl`:
the analytic Gaussian model beats the small UNet at low λ, where an image's global
structure is coded, and the UNet wins at high λ). `CompositeDenoiser(parts, switch_logsnr)`
uses parts[i] for switch[i-1] <= λ < switch[i] (switch[-1] = −∞, switch[len] = +∞).

Each batch element is routed by its own λ: elements of one part are passed to that part as
one sub-batch (in their original order) and the results put back in place, so the output
is bit for bit what the part gives on that sub-batch, and a batch whose elements all fall
in one part is passed through unchanged. The comparison with the switch points is done in
the dtype of the λ tensor given (a float32 λ against the float32-rounded switch), so a
switch placed exactly on a grid λ routes that grid point to the upper part whatever the
dtype. Routing is integer logic on λ only, so the composite is as deterministic and
thread-count invariant as its parts.

Registry files (class "composite") and their loading live in models/registry.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_switches(switch_logsnr: Sequence[float], n_parts: int) -> tuple[float, ...]:
    """The switch points as floats; ValueError unless n_parts − 1 finite, strictly increasing values."""
    try:
        switches = tuple(float(s) for s in switch_logsnr)
    except (TypeError, ValueError):
        raise ValueError(f"switch log-SNRs must be numbers, got {switch_logsnr!r}") from None
    if n_parts < 2:
        raise ValueError(f"a composite needs at least 2 parts, got {n_parts}")
    if len(switches) != n_parts - 1:
        raise ValueError(f"{n_parts} parts need {n_parts - 1} switch log-SNRs, got {len(switches)}")
    if not all(math.isfinite(s) for s in switches):
        raise ValueError(f"switch log-SNRs must be finite, got {list(switches)}")
    if any(b <= a for a, b in zip(switches, switches[1:])):
        raise ValueError(f"switch log-SNRs must be strictly increasing, got {list(switches)}")
    return switches


class CompositeDenoiser(torch.nn.Module):
    """`denoiser(z, logsnr, cond=None)`: parts[i] for switch_logsnr[i-1] <= λ < switch_logsnr[i].

    `.name` / `.content_hash` identify the composite in bitstreams; the registry sets them
    from the composite's file (whose bytes record the parts' hashes).
    """

    kind = "composite"

    def __init__(self, parts: Sequence, switch_logsnr: Sequence[float], *, name: str = "composite",
                 content_hash: int | None = None):
        super().__init__()
        parts = list(parts)
        self.switch_logsnr = check_switches(switch_logsnr, len(parts))
        if not all(callable(p) for p in parts):
            raise ValueError("every part must be a denoiser (callable as part(z, logsnr, cond))")
        # A ModuleList when possible, so .eval() / .to() reach the parts.
        self.parts = torch.nn.ModuleList(parts) if all(isinstance(p, torch.nn.Module) for p in parts) else parts
        self.name = name
        self.content_hash = content_hash

    def part_index(self, logsnr, batch: int) -> torch.Tensor:
        """Index of the part each of `batch` elements uses ([batch] int64)."""
        return self._route(logsnr, batch)[0]

    def _route(self, logsnr, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(part index per element, λ per element as compared) — one λ tensor for both jobs."""
        lam = logsnr if isinstance(logsnr, torch.Tensor) else torch.tensor(logsnr, dtype=torch.float64)
        if not lam.is_floating_point():
            lam = lam.to(torch.float64)
        lam = lam.detach().reshape(-1)
        if lam.numel() == 1:
            lam = lam.expand(batch).contiguous()
        elif lam.numel() != batch:
            raise ValueError(f"logsnr has {lam.numel()} values for a batch of {batch}")
        if torch.isnan(lam).any():
            raise ValueError("logsnr contains NaN")
        bounds = torch.tensor(self.switch_logsnr, dtype=lam.dtype, device=lam.device)
        # right=True: index i with bounds[i-1] <= λ < bounds[i].
        return torch.bucketize(lam, bounds, right=True), lam

    def forward(self, z: torch.Tensor, logsnr, cond=None) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim < 1:
            raise ValueError("expected a batched tensor z")
        n = z.shape[0]
        which, lam = self._route(logsnr, n)
        used = torch.unique(which).tolist()
        if len(used) <= 1:  # the common case (DiffC steps use one λ; or an empty batch): no copies at all
            return self.parts[used[0] if used else 0](z, logsnr, cond)
        # Each part gets the very λ values it was routed by, one per element of its sub-batch.
        lam = lam.to(z.device)
        results = []
        for i in used:
            idx = torch.nonzero(which == i).reshape(-1).to(z.device)
            sub_cond = None if cond is None else cond.index_select(0, idx.to(cond.device))
            results.append((idx, self.parts[i](z.index_select(0, idx), lam.index_select(0, idx), sub_cond)))
        dtype = results[0][1].dtype
        for _, r in results[1:]:
            dtype = torch.promote_types(dtype, r.dtype)
        out = torch.empty((n, *results[0][1].shape[1:]), dtype=dtype, device=results[0][1].device)
        for idx, r in results:
            out.index_copy_(0, idx.to(out.device), r.to(dtype))
        return out

    def extra_repr(self) -> str:
        names = [getattr(p, "name", type(p).__name__) for p in self.parts]
        route = str(names[0])
        for s, nm in zip(self.switch_logsnr, names[1:]):
            route += f" | λ>={s:g}: {nm}"
        return f"name={self.name!r}, route={route}"
