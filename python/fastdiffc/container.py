"""The .fdc file format (DESIGN §6).

Layout, version 1 (all integers little-endian; "varint" = unsigned LEB128)::

    "FDC"                magic, 3 bytes
    version              u8 (= 1)
    header_len           varint: bytes of the header body that follows
    header body:
      pipeline id        u8 (1 = diffc, 2 = dirac, 3 = cdc)
      model name         varint length + UTF-8
      model hash         u64, the 64-bit content hash of the model weights
      height, width      varint each
      channels           u8 (1 = greyscale, 3 = RGB)
      params             varint length + bytes (pipeline-defined, e.g. seed, schedule, RCC settings)
      n_segments         varint
      segment lengths    n_segments varints
    header crc           u32, CRC32 of every byte before it (magic .. end of header body)
    segments             the payload: n_segments byte strings, back to back
    payload crc          u32, CRC32 of the segments

The segment lengths sit in the header, so they are covered by the header CRC: a
truncated file is always recognised as *truncated* (never as a corrupt length),
and the number of complete segments it still holds is known exactly.

Reading policy:
- `read(data)` (strict, the default) requires the whole file: every declared segment,
  the payload CRC, no trailing bytes. Truncation → TruncatedError, a wrong CRC →
  ChecksumError.
- `read(data, allow_truncated=True)` is the progressive reader: the header (and its
  CRC) must be complete and correct, then it returns the complete segments present.
  When the file is complete the payload CRC is still checked; when it is truncated
  the payload CRC is missing, so the segments are returned unverified (the segment
  decoders validate their own structure). `FdcFile.complete` says which case held.

For DiffC a segment is one diffusion step, so `truncate_to_steps(data, k)` makes a
valid, complete file of the first k steps and `step_file_sizes(data)` gives the size
of that file for every k — an RD curve from one encode.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    TruncatedError,
    UnknownPipelineError,
    UnsupportedVersionError,
)

MAGIC = b"FDC"
VERSION = 1
PIPELINE_IDS = {"diffc": 1, "dirac": 2, "cdc": 3}
PIPELINE_NAMES = {v: k for k, v in PIPELINE_IDS.items()}
_MAX_NAME = 255
_MAX_DIM = 1 << 20  # 1 Mi pixels per side: far beyond anything this package can encode


@dataclass(frozen=True)
class Header:
    """Everything before the payload: which pipeline and model wrote it, the image shape,
    and the pipeline's own parameters (opaque bytes to the container)."""

    pipeline: str
    model_name: str
    model_hash: int
    height: int
    width: int
    channels: int
    params: bytes = b""

    def __post_init__(self):
        if self.pipeline not in PIPELINE_IDS:
            raise UnknownPipelineError(f"unknown pipeline {self.pipeline!r}; known: {sorted(PIPELINE_IDS)}")
        if not 0 <= self.model_hash < 1 << 64:
            raise ValueError(f"model hash must be an unsigned 64-bit integer, got {self.model_hash}")
        if len(self.model_name.encode("utf-8")) > _MAX_NAME:
            raise ValueError(f"model name longer than {_MAX_NAME} bytes")
        if not (1 <= self.height <= _MAX_DIM and 1 <= self.width <= _MAX_DIM):
            raise ValueError(f"image size {self.height}x{self.width} out of range 1..{_MAX_DIM}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")


@dataclass(frozen=True)
class FdcFile:
    header: Header
    segments: tuple[bytes, ...]
    declared_segments: int

    @property
    def complete(self) -> bool:
        return len(self.segments) == self.declared_segments


# --------------------------------------------------------------------------- varints


def put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


class Reader:
    """Bounds-checked cursor over bytes; running off the end raises TruncatedError(what)."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, what: str = "header"):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise TruncatedError(f"truncated {self.what}: {field} needs {n} bytes, {self.end - self.pos} left")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u32(self, field: str) -> int:
        return struct.unpack("<I", self.take(4, field))[0]

    def u64(self, field: str) -> int:
        return struct.unpack("<Q", self.take(8, field))[0]

    def f64(self, field: str) -> float:
        return struct.unpack("<d", self.take(8, field))[0]

    def varint(self, field: str) -> int:
        value = shift = 0
        for _ in range(10):  # a u64 needs at most 10 bytes
            byte = self.u8(field)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value >= 1 << 64:
                    break
                return value
            shift += 7
        raise FormatError(f"malformed {self.what}: {field} is not a valid 64-bit varint")

    def done(self) -> bool:
        return self.pos == self.end


# --------------------------------------------------------------------------- writing


def _header_bytes(header: Header, lengths: list[int]) -> bytes:
    body = bytearray()
    body.append(PIPELINE_IDS[header.pipeline])
    name = header.model_name.encode("utf-8")
    put_varint(body, len(name))
    body += name
    body += struct.pack("<Q", header.model_hash)
    put_varint(body, header.height)
    put_varint(body, header.width)
    body.append(header.channels)
    put_varint(body, len(header.params))
    body += header.params
    put_varint(body, len(lengths))
    for n in lengths:
        put_varint(body, n)
    out = bytearray(MAGIC)
    out.append(VERSION)
    put_varint(out, len(body))
    out += body
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def write(header: Header, segments) -> bytes:
    """Serialise a header and its payload segments into one .fdc file."""
    segments = [bytes(s) for s in segments]
    payload = b"".join(segments)
    return _header_bytes(header, [len(s) for s in segments]) + payload + struct.pack("<I", zlib.crc32(payload))


def overhead_bytes(header: Header, segment_lengths) -> int:
    """Bytes a file spends beyond its payload (header, length table, both CRCs)."""
    return len(_header_bytes(header, list(segment_lengths))) + 4


# --------------------------------------------------------------------------- reading


def _parse_header(data: bytes) -> tuple[Header, list[int], int]:
    """Parse and verify the header; returns (header, segment lengths, offset of the payload)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC):
        raise TruncatedError(f"truncated header: {len(data)} bytes is shorter than the magic")
    if data[: len(MAGIC)] != MAGIC:
        raise BadMagicError("not an .fdc file (bad magic bytes)")
    r = Reader(data, len(MAGIC))
    version = r.u8("version")
    if version != VERSION:
        raise UnsupportedVersionError(
            f".fdc version {version} is not supported by this build (it reads version {VERSION})"
        )
    body_len = r.varint("header length")
    body_start = r.pos
    r.take(body_len, "header body")
    crc = r.u32("header checksum")
    if zlib.crc32(data[: body_start + body_len]) != crc:
        raise ChecksumError("header checksum mismatch: the file is corrupt")
    payload_start = r.pos

    b = Reader(data, body_start, body_start + body_len, what="header body")
    pid = b.u8("pipeline id")
    if pid not in PIPELINE_NAMES:
        raise UnknownPipelineError(f"unknown pipeline id {pid} in .fdc header")
    name_len = b.varint("model name length")
    try:
        name = b.take(name_len, "model name").decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("model name in .fdc header is not valid UTF-8") from None
    model_hash = b.u64("model hash")
    height, width = b.varint("height"), b.varint("width")
    channels = b.u8("channels")
    params = b.take(b.varint("params length"), "params")
    n_segments = b.varint("segment count")
    if n_segments > body_len:  # each length takes at least one byte
        raise TruncatedError(f"truncated header body: {n_segments} segments declared, {body_len} bytes of header")
    lengths = [b.varint("segment length") for _ in range(n_segments)]
    if not b.done():
        raise FormatError("malformed header body: trailing bytes after the segment table")
    try:
        header = Header(PIPELINE_NAMES[pid], name, model_hash, height, width, channels, params)
    except ValueError as e:
        raise FormatError(f"invalid .fdc header: {e}") from None
    return header, lengths, payload_start


def read_header(data: bytes) -> tuple[Header, list[int]]:
    """The verified header and the declared segment lengths (the payload is not read)."""
    header, lengths, _ = _parse_header(data)
    return header, lengths


def read(data: bytes, *, allow_truncated: bool = False) -> FdcFile:
    """Parse a .fdc file; see the module docstring for the strict / progressive policy."""
    header, lengths, pos = _parse_header(data)
    data = bytes(data)
    segments = []
    for i, n in enumerate(lengths):
        if pos + n > len(data):
            if allow_truncated:
                return FdcFile(header, tuple(segments), len(lengths))
            raise TruncatedError(
                f"truncated file: segment {i + 1} of {len(lengths)} needs {n} bytes, {len(data) - pos} left "
                "(a truncated file can be decoded progressively up to its last complete segment)"
            )
        segments.append(data[pos : pos + n])
        pos += n
    if len(data) < pos + 4:
        if allow_truncated:
            return FdcFile(header, tuple(segments), len(lengths))
        raise TruncatedError("truncated file: the payload checksum is missing")
    (crc,) = struct.unpack("<I", data[pos : pos + 4])
    if zlib.crc32(b"".join(segments)) != crc:
        raise ChecksumError("payload checksum mismatch: the file is corrupt")
    if len(data) != pos + 4:
        raise FormatError(f"{len(data) - pos - 4} unexpected bytes after the end of the .fdc file")
    return FdcFile(header, tuple(segments), len(lengths))


# --------------------------------------------------------------------------- progressive helpers


def truncate_to_steps(data: bytes, k: int) -> bytes:
    """A valid, complete .fdc file holding the first k segments (DiffC: steps) of `data`.

    `data` may itself be truncated, as long as it holds k complete segments.
    """
    f = read(data, allow_truncated=True)
    if not 0 <= k <= len(f.segments):
        raise ValueError(f"cannot keep {k} steps: the file holds {len(f.segments)} complete steps")
    return write(f.header, f.segments[:k])


def step_file_sizes(data: bytes) -> list[int]:
    """Size in bytes of `truncate_to_steps(data, k)` for k = 0 .. number of complete steps."""
    f = read(data, allow_truncated=True)
    lengths = [len(s) for s in f.segments]
    return [overhead_bytes(f.header, lengths[:k]) + sum(lengths[:k]) for k in range(len(lengths) + 1)]
