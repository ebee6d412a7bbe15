"""How much memory a model's forward pass takes (docs/design.md §10), for the resource budgets.

`activation_bytes_per_pixel(model)` is the peak memory one forward call adds per input pixel,
beyond the model's weights: measured once for the shipped architectures (peak RSS of a forward in
`torch.inference_mode`, float32, 2 threads; see `measure`) and scaled for other UNet configs by
their first level's width. Budgets multiply it by the pixels one call sees (a tile, or the whole
image).
"""

from __future__ import annotations

# Measured: the shipped UNet (base_channels 32, mults 1,2,2,2, unshuffle 2) takes 360–455 B per
# pixel at 512²–1024² (peak RSS minus the loaded model); the figure is the largest, rounded up.
UNET_BYTES_PER_PIXEL = 480
# The analytic Gaussian model: float64 DCT coefficients, variances and temporaries, ≈ 12 copies
# of a C·8-byte pixel (measured 305–307 B/px at 512²–1024²).
GAUSSIAN_BYTES_PER_PIXEL = 320
# A model this module does not know: assume twice the UNet's figure.
UNKNOWN_BYTES_PER_PIXEL = 2 * UNET_BYTES_PER_PIXEL


def _unet(config) -> int:
    width = config.base_channels * max(config.channel_mults[:1] or (1,))
    # Activations at the first level hold `width` channels on H·W / unshuffle² positions; the
    # deeper levels add a geometric tail, so the figure scales with width / unshuffle².
    scale = (width / max(1, config.unshuffle) ** 2) / (32 / 4)
    extra = 4 * config.cond_channels  # the concatenated conditioning image
    return int(UNET_BYTES_PER_PIXEL * max(scale, 0.25)) + extra


def activation_bytes_per_pixel(model) -> int:
    """Peak bytes per input pixel of one forward call of `model` (see the module docstring)."""
    declared = getattr(model, "activation_bytes_per_pixel", None)
    if declared is not None:
        return int(declared() if callable(declared) else declared)
    inner = getattr(model, "denoiser", None)  # a wrapper (tiling, ...)
    if inner is not None and inner is not model:
        return activation_bytes_per_pixel(inner)
    parts = getattr(model, "parts", None)
    if parts is not None:
        return max((activation_bytes_per_pixel(p) for p in parts), default=UNKNOWN_BYTES_PER_PIXEL)
    net = getattr(model, "net", None)
    config = getattr(net, "config", None)
    if config is not None and hasattr(config, "base_channels"):
        return _unet(config)
    if type(model).__name__ == "GaussianDenoiser":
        return GAUSSIAN_BYTES_PER_PIXEL
    return UNKNOWN_BYTES_PER_PIXEL


def measure(model, height: int, width: int, logsnr: float = 0.0) -> float:
    """Peak-RSS growth per pixel of one forward at height × width — run in a fresh process for a
    clean figure (the peak of earlier work hides smaller ones)."""
    import resource

    import torch

    z = torch.zeros(1, 3, height, width)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        model(z, torch.tensor([logsnr]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) * 1024 / (height * width)


__all__ = ["activation_bytes_per_pixel", "measure"]
