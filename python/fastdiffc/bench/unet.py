"""UNet denoiser: parameters, FLOPs per pixel and seconds per 768×512 evaluation."""

from __future__ import annotations

import statistics
import time

import torch


def add_arguments(p):
    p.add_argument("--model", default=None, help="registry model name (default: the shipped 'unet' if present, "
                                                  "else a freshly initialised default UNet)")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards (after one warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--compare", action="store_true",
                   help="also time NCHW vs channels_last, no_grad vs inference_mode, torch.compile")


def _model(name):
    from ..errors import ModelNotFoundError
    from ..models.registry import load_model
    from ..models.unet import UNet, UNetDenoiser

    try:
        return load_model(name or "unet")
    except ModelNotFoundError:
        if name:
            raise
        return UNetDenoiser(UNet(), name="unet (untrained default)").eval()


def count_flops(den, h: int, w: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    z = torch.zeros(1, 3, h, w)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        den(z, torch.zeros(1))
    return int(fc.get_total_flops())


def time_forward(den, h: int, w: int, repeats: int, *, channels_last: bool = True, mode: str = "inference",
                 fn=None, cpu_times: list | None = None) -> list[float]:
    """Wall seconds of `repeats` denoiser calls on a 1×3×h×w input, after one warm-up.
    Process CPU seconds per call go to `cpu_times` (a steadier figure on a shared machine)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 3, h, w, generator=g)
    if channels_last:
        den.net.to(memory_format=torch.channels_last)
        z = z.contiguous(memory_format=torch.channels_last)
    else:
        den.net.to(memory_format=torch.contiguous_format)
    call = den if fn is None else fn
    ctx = torch.inference_mode if mode == "inference" else torch.no_grad
    lam = torch.tensor([2.0])
    times = []
    with ctx():
        for i in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            call(z, lam)
            if i:
                times.append(time.perf_counter() - t0)
                if cpu_times is not None:
                    cpu_times.append(time.process_time() - c0)
    return times


def run(args) -> dict:
    from .. import _runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    den = _model(args.model)
    h, w = args.height, args.width
    params = sum(p.numel() for p in den.parameters())
    flops = count_flops(den, h, w)
    cpu = []
    times = time_forward(den, h, w, args.repeats, cpu_times=cpu)
    result = {
        "model": getattr(den, "name", "unet (untrained)"),
        "params": params,
        "flops_per_pixel": flops / (h * w),
        "seconds_768x512": statistics.median(times) if (h, w) == (512, 768) else None,
        "seconds": statistics.median(times),
        "seconds_min": min(times),
        "cpu_seconds": statistics.median(cpu),
        "height": h,
        "width": w,
        "threads": torch.get_num_threads(),
        "mallopt_tuned": _runtime.MALLOPT_APPLIED,
    }
    if args.compare:
        variants = {
            "nchw_no_grad": dict(channels_last=False, mode="no_grad"),
            "nchw_inference_mode": dict(channels_last=False, mode="inference"),
            "channels_last_inference_mode": dict(channels_last=True, mode="inference"),
        }
        result["compare"] = {}
        for k, kw in variants.items():
            c = []
            result["compare"][k] = {"seconds": min(time_forward(den, h, w, args.repeats, cpu_times=c, **kw)),
                                    "cpu_seconds": min(c)}
        compiled = torch.compile(den)
        try:
            c = []
            result["compare"]["compiled_channels_last"] = {
                "seconds": min(time_forward(den, h, w, args.repeats, fn=compiled, cpu_times=c)), "cpu_seconds": min(c)}
        except Exception as e:  # noqa: BLE001 - inductor needs a C compiler; report, don't fail the bench
            result["compare"]["compiled_channels_last"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    return result


def format_report(r: dict) -> str:
    lines = [
        f"UNet denoiser {r['model']}: {r['params'] / 1e6:.2f} M parameters, "
        f"{r['flops_per_pixel'] / 1e3:.1f} kFLOP/pixel ({r['flops_per_pixel'] * r['height'] * r['width'] / 1e9:.1f} "
        f"GFLOP per {r['width']}x{r['height']})",
        f"forward {r['width']}x{r['height']}: {r['seconds']:.3f} s median, {r['seconds_min']:.3f} s best, "
        f"{r['cpu_seconds']:.3f} CPU-s "
        f"({r['threads']} threads, glibc mallopt tuning {'on' if r['mallopt_tuned'] else 'off'})",
    ]
    for k, v in r.get("compare", {}).items():
        shown = v if isinstance(v, str) else f"{v['seconds']:.3f} s, {v['cpu_seconds']:.3f} CPU-s"
        lines.append(f"  {k:32s} {shown}")
    return "\n".join(lines)
