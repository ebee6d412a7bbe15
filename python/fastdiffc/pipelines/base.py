"""What every pipeline's codec offers (DESIGN §7), and how a model identifies itself in a file."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from contextlib import contextmanager

import torch


class Codec(ABC):
    """`compress(image, *, bpp=None, steps=None) -> bytes` and
    `decompress(data, *, method="flow", max_steps=None) -> PIL.Image`."""

    pipeline: str = ""

    @abstractmethod
    def compress(self, image, *, bpp: float | None = None, steps: int | None = None) -> bytes: ...

    @abstractmethod
    def decompress(self, data: bytes, *, method: str = "flow", max_steps: int | None = None): ...


def model_identity(model) -> tuple[str, int]:
    """(name, 64-bit content hash) of a model, as written into and checked against .fdc headers.

    The registry sets `.name` and `.content_hash` (an int; a Gaussian model built in memory
    derives it from its parameters). A `content_hash` that is a hex string or a method
    returning one is reduced to its first 64 bits, so other in-memory models can be used too.
    """
    name = getattr(model, "name", None) or type(model).__name__
    h = getattr(model, "content_hash", None)
    if callable(h):
        h = h()
    if isinstance(h, str):
        h = int(h[:16], 16)
    if not isinstance(h, int):
        raise ValueError(f"model {name!r} has no content hash: load it with fastdiffc.load_model or set .content_hash")
    return str(name), h & ((1 << 64) - 1)


@contextmanager
def model_threads():
    """Run model calls with a fixed intra-op thread count when FASTDIFFC_MODEL_THREADS is set.

    The encoder's bytes depend on the model's output x̂0 (the decoder's entropy decoding
    never does: it needs integers only). The shipped models were measured to give
    bit-identical outputs at 1 and 2 torch threads (convolutions, GroupNorm, SiLU and
    multi-head attention partition work over outputs), so by default the thread count is
    left alone. A model whose ops reduce across threads (e.g. single-head attention, whose
    CPU kernel splits over keys) can be made reproducible by pinning the count here.
    """
    n = os.environ.get("FASTDIFFC_MODEL_THREADS")
    if not n:
        with torch.inference_mode():
            yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(old)
