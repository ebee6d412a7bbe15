"""Triton kernels (fastdiffc.kernels). Triton is optional: every kernel has a torch
reference, and dispatchers use the torch path for CPU tensors or without Triton.

Tests run the kernels on the CPU with TRITON_INTERPRET=1, which must be set before
any kernel is defined (tests/conftest.py does it)."""

from __future__ import annotations

import functools
import os


@functools.cache
def _import_triton():
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken install: torch path only
        return False
    return True


def triton_available() -> bool:
    """True when triton imports (kernels may run: on CUDA tensors, or under the interpreter)."""
    return _import_triton()


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_triton(*tensors) -> bool:
    """Dispatch rule: Triton for CUDA tensors, or for CPU tensors under the interpreter
    when FASTDIFFC_TRITON_ON_CPU=1 (tests); torch otherwise."""
    if not triton_available():
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return interpreter_enabled() and os.environ.get("FASTDIFFC_TRITON_ON_CPU") == "1"
