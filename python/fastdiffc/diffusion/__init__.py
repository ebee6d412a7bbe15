"""Diffusion shared by every pipeline: log-SNR schedules, VP maths, Denoiser protocol, samplers."""

from .denoiser import Denoiser, EpsDenoiser, VDenoiser
from .samplers import sample, sample_ancestral, sample_ddim, sample_flow
from .schedules import CosineSchedule, LinearSchedule, Schedule, get_schedule
from .vp import alpha_sigma, posterior, step_kl

__all__ = [
    "Denoiser",
    "EpsDenoiser",
    "VDenoiser",
    "Schedule",
    "CosineSchedule",
    "LinearSchedule",
    "get_schedule",
    "alpha_sigma",
    "posterior",
    "step_kl",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_flow",
]
