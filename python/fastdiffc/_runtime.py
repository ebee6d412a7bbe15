"""Process-wide runtime tuning applied at import.

glibc malloc returns large freed blocks to the OS (mmap threshold / trim), so every
UNet forward pays page faults for its activation buffers again; measured on the
2-core dev machine this made forwards ~2-3x slower than with tcmalloc (docs/design.md §10).
Raising the thresholds keeps those buffers in the heap. Opt out with
FASTDIFFC_NO_MALLOPT=1, or preload tcmalloc, which makes this moot.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

MALLOPT_APPLIED = False


def _tune_glibc_malloc() -> bool:
    if os.environ.get("FASTDIFFC_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or other libc: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # M_MMAP_MAX=0: serve large blocks from the heap (the mmap threshold is capped at
    # 32 MiB, smaller than one activation map at 768x512); a 1 GiB trim threshold keeps
    # freed memory for the next forward instead of handing it back to the kernel.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


MALLOPT_APPLIED = _tune_glibc_malloc()
