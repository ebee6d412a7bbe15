"""Entropy coding of integer symbols with constriction (ANS), byte-exact and canonical.

Generic layer: `SymbolWriter` / `SymbolReader` put groups of symbols, each group under its own
constriction model, into one stack-ANS stream, read back in the order written. The byte form
drops the zero high bytes of the final word, so a payload is as short as the ANS state allows
and an all-empty stream is b"". `decode_canonical` re-encodes what it read and rejects any input
that is not exactly what the encoder would have produced: corrupt, truncated or padded data
raises `FormatError` instead of silently decoding garbage.

RCC index coding (docs/design.md §5) sits on top: a step's payload is the chunk count followed by one
index per chunk; `importance` indices are uniform over the 2^b candidates, `pfr` indices use a
Zipf model P(k) ∝ 1/(k+1) truncated at 2^b. Every model is built from integers alone (b and the
scheme), with IEEE divisions only, so encoder and decoder agree on every platform.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import constriction
import numpy as np

from .errors import FormatError

_model = constriction.stream.model
_stack = constriction.stream.stack

# The largest alphabet a constriction Uniform model takes is 2^24 - 1 symbols.
_UNIFORM_BITS_MAX = 23


class SymbolWriter:
    """Collects (symbols, model) groups; `to_bytes` encodes them so a reader gets them back in order."""

    def __init__(self) -> None:
        self._groups: list[tuple[np.ndarray, object]] = []

    def write(self, symbols, model) -> None:
        arr = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        if arr.size:
            self._groups.append((arr, model))

    def write_uint(self, value: int, bits: int) -> None:
        """An unsigned integer of `bits` bits (0..62) coded uniformly, in pieces of at most 23 bits."""
        value = int(value)
        if bits < 0 or not 0 <= value < 1 << bits:
            raise ValueError(f"{value} does not fit in {bits} bits")
        while bits > 0:
            piece = min(bits, _UNIFORM_BITS_MAX)
            self.write([value & ((1 << piece) - 1)], uniform_model(piece))
            value >>= piece
            bits -= piece

    def to_bytes(self) -> bytes:
        coder = _stack.AnsCoder()
        # A stack: encode the last group first so decoding starts with the first group.
        for symbols, model in reversed(self._groups):
            coder.encode_reverse(symbols, model)
        return _words_to_bytes(coder.get_compressed())


class SymbolReader:
    """Reads groups back from bytes produced by SymbolWriter.to_bytes."""

    def __init__(self, payload: bytes) -> None:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        self._coder = _stack.AnsCoder(_bytes_to_words(bytes(payload)), seal=False)

    def read(self, count: int, model) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            out = self._coder.decode(model, int(count))
        except BaseException as e:  # constriction raises (or panics) on impossible streams
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise FormatError(f"corrupt entropy-coded payload ({e})") from None
        return np.asarray(out, dtype=np.int64)

    def read_uint(self, bits: int) -> int:
        value = 0
        shift = 0
        while bits > 0:
            piece = min(bits, _UNIFORM_BITS_MAX)
            value |= int(self.read(1, uniform_model(piece))[0]) << shift
            shift += piece
            bits -= piece
        return value

    def finish(self) -> None:
        """Raise FormatError unless every bit of the payload was consumed."""
        if not self._coder.is_empty():
            raise FormatError("entropy-coded payload has trailing data (corrupt or wrong settings)")


def decode_canonical(payload: bytes, read: Callable[[SymbolReader], object],
                     write: Callable[[SymbolWriter, object], None]):
    """Decode with `read`, then re-encode with `write` and require the same bytes (rejects corrupt input)."""
    reader = SymbolReader(payload)
    value = read(reader)
    reader.finish()
    writer = SymbolWriter()
    write(writer, value)
    if writer.to_bytes() != bytes(payload):
        raise FormatError("entropy-coded payload is not in canonical form (corrupt or wrong settings)")
    return value


def _words_to_bytes(words: np.ndarray) -> bytes:
    data = np.asarray(words, dtype="<u4").tobytes()
    # The last word is the most significant part of the ANS state: its high zero bytes carry nothing.
    return data.rstrip(b"\0") if data else data


def _bytes_to_words(data: bytes) -> np.ndarray:
    if data and data[-1] == 0:
        raise FormatError("entropy-coded payload ends in a zero byte (not produced by this encoder)")
    padded = data + b"\0" * (-len(data) % 4)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)


# ------------------------------------------------------------------ models built from integers
@functools.lru_cache(maxsize=64)
def uniform_model(bits: int):
    """Uniform over 2^bits symbols (1 <= bits <= 23)."""
    if not 1 <= bits <= _UNIFORM_BITS_MAX:
        raise ValueError(f"uniform model needs 1..{_UNIFORM_BITS_MAX} bits, got {bits}")
    return _model.Uniform(1 << bits)


@functools.lru_cache(maxsize=32)
def zipf_model(bits: int):
    """P(k) ∝ 1/(k+1) on k < 2^bits: the index law of PFR truncated at 2^bits candidates."""
    if not 1 <= bits <= 24:
        raise ValueError(f"zipf model needs 1..24 bits, got {bits}")
    weights = 1.0 / np.arange(1, (1 << bits) + 1, dtype=np.float64)
    return _model.Categorical(weights, perfect=False)


# ------------------------------------------------------------------ RCC step payloads
SCHEMES = ("pfr", "importance")
_COUNT_WIDTH_BITS = 5  # bit length of the chunk count (0..31) is coded uniformly in 5 bits


def index_model(scheme: str, bits: int):
    if scheme == "pfr":
        return zipf_model(bits)
    if scheme == "importance":
        return uniform_model(bits)
    raise ValueError(f"unknown RCC scheme {scheme!r}; expected one of {SCHEMES}")


def _write_indices(writer: SymbolWriter, indices: np.ndarray, bits: int, scheme: str) -> None:
    n = int(indices.size)
    width = n.bit_length()
    writer.write_uint(width, _COUNT_WIDTH_BITS)
    if width > 1:
        writer.write_uint(n - (1 << (width - 1)), width - 1)  # the leading one bit is implicit
    writer.write(indices, index_model(scheme, bits))


def encode_rcc_indices(indices: Sequence[int] | np.ndarray, *, bits: int, scheme: str) -> bytes:
    """Payload of one RCC step: the chunk count, then each chunk's candidate index (< 2^bits)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size >= 1 << 31:
        raise ValueError("too many chunks")
    if idx.size and (idx.min() < 0 or idx.max() >= 1 << bits):
        raise ValueError(f"candidate indices must lie in [0, 2^{bits})")
    writer = SymbolWriter()
    _write_indices(writer, idx, bits, scheme)
    return writer.to_bytes()


def decode_rcc_indices(payload: bytes, *, bits: int, scheme: str, max_chunks: int) -> np.ndarray:
    """Inverse of encode_rcc_indices; FormatError for corrupt payloads or more than `max_chunks` chunks."""
    model = index_model(scheme, bits)

    def read(reader: SymbolReader) -> np.ndarray:
        width = reader.read_uint(_COUNT_WIDTH_BITS)
        n = 0 if width == 0 else (1 << (width - 1)) | reader.read_uint(width - 1)
        if n > max_chunks:
            raise FormatError(f"payload declares {n} chunks but the dimension allows at most {max_chunks}")
        return reader.read(n, model)

    return decode_canonical(payload, read, lambda w, idx: _write_indices(w, idx, bits, scheme))


# ------------------------------------------------------------------ tree-codebook RCC payloads (rcc_tree.py)
_TREE_DEPTH_BITS = 6  # depth - 1 in 0..63
# A step with chunks ends with one guard bit 1, coded last. Why: uniform digits are pushed onto the
# ANS state as plain bits, so digits that are zero where the state starts cost no bytes — a 5-byte
# payload could declare dim chunks x 64 levels of zeros and make the decoder allocate and re-encode
# 64 digits per dimension. Under the guard every digit costs its bits, so the declared digits are
# checked against the payload's size before any is read (n * depth * level_bits <= 8 * len).


def _write_tree(writer: SymbolWriter, paths: np.ndarray, level_bits: int) -> None:
    n, depth = paths.shape
    width = int(n).bit_length()
    writer.write_uint(width, _COUNT_WIDTH_BITS)
    if width > 1:
        writer.write_uint(n - (1 << (width - 1)), width - 1)
    if n:
        writer.write_uint(depth - 1, _TREE_DEPTH_BITS)
        writer.write(paths.reshape(-1), uniform_model(level_bits))
        writer.write_uint(1, 1)  # the guard


def encode_tree_paths(paths, *, level_bits: int) -> bytes:
    """Payload of one tree-RCC step: the chunk count n, the depth L' (when n > 0), then the n · L'
    path digits (each uniform over 2^level_bits), chunk by chunk in level order, then a guard bit."""
    p = np.asarray(paths, dtype=np.int64)
    if p.ndim != 2 or (p.shape[0] and not 1 <= p.shape[1] <= 1 << _TREE_DEPTH_BITS):
        raise ValueError("paths must be (chunks, depth) with 1 <= depth <= 64")
    if p.shape[0] >= 1 << 31:
        raise ValueError("too many chunks")
    if p.size and (p.min() < 0 or p.max() >= 1 << level_bits):
        raise ValueError(f"tree digits must lie in [0, 2^{level_bits})")
    writer = SymbolWriter()
    _write_tree(writer, p, level_bits)
    return writer.to_bytes()


def decode_tree_paths(payload: bytes, *, level_bits: int, max_chunks: int, max_depth: int) -> np.ndarray:
    """Inverse of encode_tree_paths: (chunks, depth) int64; FormatError for corrupt payloads, more
    than `max_chunks` chunks, a depth beyond `max_depth` (the settings' levels), or more digits
    than the payload's bytes can hold (checked before they are read)."""

    def read(reader: SymbolReader) -> np.ndarray:
        width = reader.read_uint(_COUNT_WIDTH_BITS)
        n = 0 if width == 0 else (1 << (width - 1)) | reader.read_uint(width - 1)
        if n > max_chunks:
            raise FormatError(f"payload declares {n} chunks but the dimension allows at most {max_chunks}")
        if n == 0:
            return np.zeros((0, 1), dtype=np.int64)
        depth = reader.read_uint(_TREE_DEPTH_BITS) + 1
        if depth > max_depth:
            raise FormatError(f"payload declares tree depth {depth} but the settings allow at most {max_depth}")
        if n * depth * level_bits > 8 * len(payload):
            raise FormatError(f"payload declares {n} chunks x {depth} levels x {level_bits} bits of tree digits "
                              f"but holds only {8 * len(payload)} bits")
        paths = reader.read(n * depth, uniform_model(level_bits)).reshape(n, depth)
        if reader.read_uint(1) != 1:
            raise FormatError("tree payload lacks its guard bit (corrupt or wrong settings)")
        return paths

    return decode_canonical(payload, read, lambda w, p: _write_tree(w, p, level_bits))
