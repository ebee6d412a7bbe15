"""A model's identity in bitstreams (docs/design.md §3): blake2b-64 of its file's bytes.

Kept apart from the registry so that model modules (unet, residual, cdc) can compute their
own file's hash without importing the registry, which imports them to load models.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path


def content_hash(path) -> int:
    """The 64-bit content hash of a model file: blake2b with an 8-byte digest, little-endian.

    Memoised by (path, size, modification time): finding a file's model by hash, loading it and
    checking composites all ask for the same few files' hashes, and each would otherwise read
    several megabytes again. A rewritten file has a new mtime or size, so it is hashed afresh."""
    path = Path(path).resolve()
    st = path.stat()
    if time.time_ns() - st.st_mtime_ns < _RACY_NS:
        # Modified just now: a rewrite within the file system's timestamp granularity could keep
        # size and mtime, so a file this fresh is never served from the memo (git's "racy" rule).
        return _hash_of.__wrapped__(str(path), st.st_size, st.st_mtime_ns)
    return _hash_of(str(path), st.st_size, st.st_mtime_ns)


_RACY_NS = 2_000_000_000


@functools.lru_cache(maxsize=256)
def _hash_of(path: str, size: int, mtime_ns: int) -> int:
    return int.from_bytes(hashlib.blake2b(Path(path).read_bytes(), digest_size=8).digest(), "little")


__all__ = ["content_hash"]
