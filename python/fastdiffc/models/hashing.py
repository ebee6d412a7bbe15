"""A model's identity in bitstreams (docs/design.md §3): blake2b-64 of its file's bytes.

Kept apart from the registry so that model modules (unet, residual, cdc) can compute their
own file's hash without importing the registry, which imports them to load models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def content_hash(path) -> int:
    """The 64-bit content hash of a model file: blake2b with an 8-byte digest, little-endian."""
    return int.from_bytes(hashlib.blake2b(Path(path).read_bytes(), digest_size=8).digest(), "little")


__all__ = ["content_hash"]
