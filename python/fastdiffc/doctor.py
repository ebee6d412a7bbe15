"""Environment report for bug reports: versions, native modules, threads, devices."""

from __future__ import annotations

import importlib
import os
import platform
from importlib import metadata


def _try_version(module: str) -> str | None:
    """Version of an importable module, None when it does not import."""
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    version = getattr(mod, "__version__", None)
    if version is None:  # e.g. constriction has no __version__; ask the installed distribution
        try:
            version = metadata.version(module)
        except metadata.PackageNotFoundError:
            version = "unknown"
    return str(version)


def collect() -> dict:
    from . import __version__, _runtime

    info: dict = {
        "fastdiffc": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": _try_version("numpy"),
        "torch": _try_version("torch"),
        "constriction": _try_version("constriction"),
        "triton": _try_version("triton"),
        "malloc_tuned": _runtime.MALLOPT_APPLIED,
    }
    try:
        from . import _core

        info["core"] = {"loaded": True, "openmp_threads": _core.openmp_max_threads(), "compiler": _core.compiler()}
    except ImportError as e:
        info["core"] = {"loaded": False, "error": str(e)}
    try:
        from . import _cuda

        info["cuda"] = {
            "loaded": True,
            "devices": _cuda.device_count(),
            "runtime_version": _cuda.runtime_version(),
        }
    except ImportError as e:
        info["cuda"] = {"loaded": False, "devices": 0, "error": str(e)}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        pass
    from .kernels import triton_available

    info["triton_usable"] = triton_available()
    info["triton_interpret"] = os.environ.get("TRITON_INTERPRET") == "1"
    return info


def format_report(info: dict) -> str:
    core, cuda = info["core"], info["cuda"]
    lines = [
        f"fastdiffc      {info['fastdiffc']}",
        f"python         {info['python']} ({info['platform']}, {info['cpu_count']} CPUs)",
        f"numpy          {info['numpy']}",
        f"torch          {info['torch']} (threads {info.get('torch_threads')}, cuda {info.get('torch_cuda')})",
        f"constriction   {info['constriction']}",
        f"_core          {'loaded' if core['loaded'] else 'MISSING: ' + core['error']}"
        + (f" (OpenMP threads {core['openmp_threads']}, {core['compiler']})" if core["loaded"] else ""),
        f"_cuda          {'loaded' if cuda['loaded'] else 'not built: ' + cuda.get('error', '')}"
        + (f" (CUDA devices {cuda['devices']}, runtime {cuda['runtime_version']})" if cuda["loaded"] else ""),
        f"triton         {info['triton'] or 'not installed'}"
        + (" (interpreter)" if info["triton_interpret"] else "")
        + ("" if info["triton_usable"] else ", kernels use the torch path"),
        f"malloc tuned   {info['malloc_tuned']}",
    ]
    return "\n".join(lines)
