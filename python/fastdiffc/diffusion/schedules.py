"""Noise schedules as functions of diffusion time t ∈ [0, 1] → log-SNR λ(t).

t = 0 is the clean end (λ_max), t = 1 the noisy end (λ_min); λ decreases with t.
DiffC and the samplers work on a discrete grid of λ values from `Schedule.grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0

    name = "base"

    def __post_init__(self):
        if not (math.isfinite(self.logsnr_min) and math.isfinite(self.logsnr_max)):
            raise ValueError("schedule end points must be finite")
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"need logsnr_min < logsnr_max, got {self.logsnr_min} >= {self.logsnr_max}")

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def t_of_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grid(self, steps: int, dtype=torch.float64) -> torch.Tensor:
        """steps+1 log-SNR values from λ_min (noise) up to λ_max (clean), increasing."""
        if steps < 1:
            raise ValueError("steps must be >= 1")
        t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return self.logsnr(t).to(dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "logsnr_min": self.logsnr_min, "logsnr_max": self.logsnr_max}


class LinearSchedule(Schedule):
    """λ linear in t."""

    name = "linear"

    def logsnr(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * t

    def t_of_logsnr(self, logsnr):
        lam = torch.as_tensor(logsnr, dtype=torch.float64)
        return (lam - self.logsnr_max) / (self.logsnr_min - self.logsnr_max)


class CosineSchedule(Schedule):
    """The cosine schedule (Nichol & Dhariwal) in log-SNR form, λ = −2 log tan(a t + b),
    with a, b chosen so that λ(0) = λ_max and λ(1) = λ_min."""

    name = "cosine"

    def _ab(self):
        b = math.atan(math.exp(-0.5 * self.logsnr_max))
        a = math.atan(math.exp(-0.5 * self.logsnr_min)) - b
        return a, b

    def logsnr(self, t):
        a, b = self._ab()
        t = torch.as_tensor(t, dtype=torch.float64)
        return -2.0 * torch.log(torch.tan(a * t + b))

    def t_of_logsnr(self, logsnr):
        a, b = self._ab()
        lam = torch.as_tensor(logsnr, dtype=torch.float64)
        return (torch.atan(torch.exp(-0.5 * lam)) - b) / a


_SCHEDULES = {cls.name: cls for cls in (LinearSchedule, CosineSchedule)}


def get_schedule(name: str = "cosine", logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> Schedule:
    try:
        cls = _SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(_SCHEDULES)}") from None
    return cls(logsnr_min, logsnr_max)


def schedule_from_dict(d: dict) -> Schedule:
    return get_schedule(d["name"], float(d["logsnr_min"]), float(d["logsnr_max"]))
