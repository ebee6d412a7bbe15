"""The .fdc file format (docs/design.md §6).

Layout, version 2 (all integers little-endian; "varint" = unsigned LEB128)::

    "FDC"                magic, 3 bytes
    version              u8 (= 2)
    header_len           varint: bytes of the header body that follows
    header body:
      pipeline id        u8 (1 = diffc, 2 = dirac, 3 = cdc)
      precision          u8 (1 = float32, 2 = bfloat16, 3 = float64): what the encoder computed in
      height, width      varint each (1 .. 2^20)
      channels           u8 (1 = greyscale, 3 = RGB)
      n_models           varint (<= 16), then per model reference:
        role             u8 (1 = denoiser, 2 = base, 3 = encoder, 4 = decoder, 5 = hyperprior, 6 = entropy_model)
        name             varint length (<= 255) + UTF-8
        hash             u64: 64-bit content hash of the weights (0 for a classical codec)
        version          varint length (<= 64) + UTF-8: library version of a classical codec ("" for weights)
      params version     varint (>= 1): the layout of the pipeline's parameter block
      params             varint length (<= 64 KiB) + bytes (opaque to the container)
      n_segments         varint
      segment lengths    n_segments varints
    header crc           u32, CRC32 of every byte before it (magic .. end of header body)
    segments             the payload: n_segments byte strings, back to back
    payload crc          u32, CRC32 of the segments

Version 1 files (one model, no role/precision/params version) are still read, into the
same `Header` (one "denoiser" reference, params version 1, precision taken from the DiffC
parameters' dtype byte — DiffC was the only pipeline that wrote version 1). Writing is
version 2 only.

The segment lengths sit in the header, so they are covered by the header CRC: a
truncated file is always recognised as *truncated* (never as a corrupt length),
and the number of complete segments it still holds is known exactly. Every field is
range-checked as it is read, and no size read from the file is used before it is checked
against the bytes actually present (a hostile length can cost neither memory nor time).

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

import operator
import struct
import zlib
from dataclasses import dataclass

from .errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    InvalidFieldError,
    TruncatedError,
    UnknownPipelineError,
    UnsupportedVersionError,
)

MAGIC = b"FDC"
VERSION = 2
READABLE_VERSIONS = (1, 2)
PIPELINE_IDS = {"diffc": 1, "dirac": 2, "cdc": 3}
PIPELINE_NAMES = {v: k for k, v in PIPELINE_IDS.items()}
ROLE_IDS = {"denoiser": 1, "base": 2, "encoder": 3, "decoder": 4, "hyperprior": 5, "entropy_model": 6}
ROLE_NAMES = {v: k for k, v in ROLE_IDS.items()}
PRECISION_IDS = {"float32": 1, "bfloat16": 2, "float64": 3}
PRECISION_NAMES = {v: k for k, v in PRECISION_IDS.items()}
MAX_NAME = 255  # bytes of a model name
MAX_VERSION = 64  # bytes of a library version string
MAX_MODELS = 16
MAX_DIM = 1 << 20  # 1 Mi pixels per side: far beyond anything this package can encode
MAX_PARAMS = 1 << 16  # bytes of a parameter block (DiffC's is ~15)
MAX_PARAMS_VERSION = 1 << 16
_MIN_MODEL_REF = 1 + 1 + 8 + 1  # role, empty name length, hash, empty version length

_V1_DIFFC_DTYPES = {0: "float32", 1: "float64"}  # last byte of a v1 DiffC parameter block


def _as_int(v) -> int | None:
    """v as a Python int if it is an integer (numpy integers too, bools not), else None."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


@dataclass(frozen=True)
class ModelRef:
    """A model the file depends on: its `role` in the pipeline, `name`, 64-bit content `hash`
    of its weights (0 for a classical codec), and `version` (the library version of a
    classical codec, e.g. libjpeg-turbo's; "" for learned weights, which the hash pins)."""

    role: str
    name: str
    hash: int = 0
    version: str = ""

    def __post_init__(self):
        if self.role not in ROLE_IDS:
            raise ValueError(f"unknown model role {self.role!r}; known: {', '.join(ROLE_IDS)}")
        if not isinstance(self.name, str) or not 1 <= len(self.name.encode("utf-8")) <= MAX_NAME:
            raise ValueError(f"model name must be 1..{MAX_NAME} UTF-8 bytes, got {self.name!r}")
        if isinstance(self.hash, bool) or not isinstance(self.hash, int) or not 0 <= self.hash < 1 << 64:
            raise ValueError(f"model hash must be an unsigned 64-bit integer, got {self.hash!r}")
        if not isinstance(self.version, str) or len(self.version.encode("utf-8")) > MAX_VERSION:
            raise ValueError(f"model version must be a string of at most {MAX_VERSION} UTF-8 bytes")


@dataclass(frozen=True)
class Header:
    """Everything before the payload: which pipeline wrote it, the models it needs, the
    precision the encoder computed in, the image shape, and the pipeline's own parameters
    (opaque bytes to the container, laid out as `params_version` says)."""

    pipeline: str
    models: tuple[ModelRef, ...]
    height: int
    width: int
    channels: int
    precision: str = "float32"
    params_version: int = 1
    params: bytes = b""

    def __post_init__(self):
        if self.pipeline not in PIPELINE_IDS:
            raise UnknownPipelineError(f"unknown pipeline {self.pipeline!r}; known: {', '.join(PIPELINE_IDS)}")
        models = tuple(self.models)
        if not all(isinstance(m, ModelRef) for m in models):
            raise ValueError("models must be ModelRef objects")
        if len(models) > MAX_MODELS:
            raise ValueError(f"at most {MAX_MODELS} model references, got {len(models)}")
        object.__setattr__(self, "models", models)
        for name in ("height", "width"):
            v = _as_int(getattr(self, name))
            if v is None or not 1 <= v <= MAX_DIM:
                raise ValueError(f"image {name} must be in 1..{MAX_DIM}, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.precision not in PRECISION_IDS:
            raise ValueError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISION_IDS)}")
        if isinstance(self.params_version, bool) or not isinstance(self.params_version, int) \
                or not 1 <= self.params_version < MAX_PARAMS_VERSION:
            raise ValueError(f"params version must be in 1..{MAX_PARAMS_VERSION - 1}, got {self.params_version!r}")
        if not isinstance(self.params, (bytes, bytearray)) or len(self.params) > MAX_PARAMS:
            raise ValueError(f"params must be at most {MAX_PARAMS} bytes")
        object.__setattr__(self, "params", bytes(self.params))

    def model(self, role: str) -> ModelRef | None:
        """The first model reference with this role, or None."""
        return next((m for m in self.models if m.role == role), None)

    @property
    def model_name(self) -> str:
        """The denoiser's name (compatibility with version-1 code)."""
        return self._denoiser().name

    @property
    def model_hash(self) -> int:
        """The denoiser's content hash (compatibility with version-1 code)."""
        return self._denoiser().hash

    def _denoiser(self) -> ModelRef:
        ref = self.model("denoiser")
        if ref is None:
            raise AttributeError(f"this {self.pipeline} header names no denoiser model")
        return ref


@dataclass(frozen=True)
class FdcFile:
    header: Header
    segments: tuple[bytes, ...]
    declared_segments: int
    version: int = VERSION  # the container version the file was written in

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


def _put_str(out: bytearray, s: str) -> None:
    b = s.encode("utf-8")
    put_varint(out, len(b))
    out += b


class Reader:
    """Bounds-checked cursor over bytes; running off the end raises TruncatedError(what)."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, what: str = "header"):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    @property
    def remaining(self) -> int:
        return self.end - self.pos

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

    def bounded_varint(self, field: str, lo: int, hi: int) -> int:
        """A varint that must lie in lo..hi (InvalidFieldError otherwise)."""
        v = self.varint(field)
        if not lo <= v <= hi:
            raise InvalidFieldError(f"invalid {self.what}: {field} {v} is outside {lo}..{hi}")
        return v

    def text(self, field: str, max_bytes: int) -> str:
        n = self.bounded_varint(f"{field} length", 0, max_bytes)
        try:
            return self.take(n, field).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFieldError(f"invalid {self.what}: {field} is not valid UTF-8") from None

    def table(self, field: str, names: dict[int, str]) -> str:
        v = self.u8(field)
        if v not in names:
            raise InvalidFieldError(f"invalid {self.what}: unknown {field} id {v} (known: "
                                    + ", ".join(f"{k}={n}" for k, n in names.items()) + ")")
        return names[v]

    def done(self) -> bool:
        return self.pos == self.end


# --------------------------------------------------------------------------- writing


def _header_bytes(header: Header, lengths: list[int]) -> bytes:
    body = bytearray()
    body.append(PIPELINE_IDS[header.pipeline])
    body.append(PRECISION_IDS[header.precision])
    put_varint(body, header.height)
    put_varint(body, header.width)
    body.append(header.channels)
    put_varint(body, len(header.models))
    for m in header.models:
        body.append(ROLE_IDS[m.role])
        _put_str(body, m.name)
        body += struct.pack("<Q", m.hash)
        _put_str(body, m.version)
    put_varint(body, header.params_version)
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
    """Serialise a header and its payload segments into one .fdc file (always version 2)."""
    segments = [bytes(s) for s in segments]
    payload = b"".join(segments)
    return _header_bytes(header, [len(s) for s in segments]) + payload + struct.pack("<I", zlib.crc32(payload))


def overhead_bytes(header: Header, segment_lengths) -> int:
    """Bytes a file spends beyond its payload (header, length table, both CRCs)."""
    return len(_header_bytes(header, list(segment_lengths))) + 4


# --------------------------------------------------------------------------- reading


def _segment_table(b: Reader) -> list[int]:
    n_segments = b.varint("segment count")
    if n_segments > b.remaining:  # each length takes at least one byte
        raise TruncatedError(f"truncated header body: {n_segments} segments declared, "
                             f"{b.remaining} bytes of header left")
    return [b.varint("segment length") for _ in range(n_segments)]


def _body_v2(b: Reader) -> tuple[Header, list[int]]:
    pid = b.u8("pipeline id")
    if pid not in PIPELINE_NAMES:
        raise UnknownPipelineError(f"unknown pipeline id {pid} in .fdc header (known: "
                                   + ", ".join(f"{k}={n}" for k, n in PIPELINE_NAMES.items()) + ")")
    precision = b.table("precision", PRECISION_NAMES)
    height = b.bounded_varint("height", 1, MAX_DIM)
    width = b.bounded_varint("width", 1, MAX_DIM)
    channels = b.u8("channels")
    n_models = b.bounded_varint("model count", 0, MAX_MODELS)
    if n_models * _MIN_MODEL_REF > b.remaining:
        raise TruncatedError(f"truncated header body: {n_models} model references need at least "
                             f"{n_models * _MIN_MODEL_REF} bytes, {b.remaining} left")
    models = []
    for i in range(n_models):
        role = b.table(f"model {i + 1} role", ROLE_NAMES)
        name = b.text(f"model {i + 1} name", MAX_NAME)
        h = b.u64(f"model {i + 1} hash")
        version = b.text(f"model {i + 1} version", MAX_VERSION)
        models.append((role, name, h, version))
    params_version = b.bounded_varint("params version", 1, MAX_PARAMS_VERSION - 1)
    params = b.take(b.bounded_varint("params length", 0, MAX_PARAMS), "params")
    lengths = _segment_table(b)
    try:
        refs = tuple(ModelRef(*m) for m in models)
        header = Header(PIPELINE_NAMES[pid], refs, height, width, channels, precision, params_version, params)
    except ValueError as e:
        raise InvalidFieldError(f"invalid .fdc header: {e}") from None
    return header, lengths


def _body_v1(b: Reader) -> tuple[Header, list[int]]:
    pid = b.u8("pipeline id")
    if pid not in PIPELINE_NAMES:
        raise UnknownPipelineError(f"unknown pipeline id {pid} in .fdc header")
    name = b.text("model name", MAX_NAME)
    model_hash = b.u64("model hash")
    height = b.bounded_varint("height", 1, MAX_DIM)
    width = b.bounded_varint("width", 1, MAX_DIM)
    channels = b.u8("channels")
    params = b.take(b.bounded_varint("params length", 0, MAX_PARAMS), "params")
    lengths = _segment_table(b)
    precision = "float32"
    if PIPELINE_NAMES[pid] == "diffc":  # version 1 kept the compute dtype in DiffC's own parameters
        if not params or params[-1] not in _V1_DIFFC_DTYPES:
            raise InvalidFieldError("invalid version-1 .fdc header: the DiffC parameters end in no known dtype")
        precision = _V1_DIFFC_DTYPES[params[-1]]
    try:
        header = Header(PIPELINE_NAMES[pid], (ModelRef("denoiser", name, model_hash),), height, width, channels,
                        precision, 1, params)
    except ValueError as e:
        raise InvalidFieldError(f"invalid .fdc header: {e}") from None
    return header, lengths


def _parse_header(data: bytes) -> tuple[Header, list[int], int, int]:
    """Parse and verify the header: (header, segment lengths, offset of the payload, version)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC):
        raise TruncatedError(f"truncated header: {len(data)} bytes is shorter than the magic")
    if data[: len(MAGIC)] != MAGIC:
        raise BadMagicError("not an .fdc file (bad magic bytes)")
    r = Reader(data, len(MAGIC))
    version = r.u8("version")
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f".fdc version {version} is not supported by this build (it reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); a newer fastdiffc may read it"
        )
    body_len = r.varint("header length")
    body_start = r.pos
    r.take(body_len, "header body")
    crc = r.u32("header checksum")
    if zlib.crc32(data[: body_start + body_len]) != crc:
        raise ChecksumError("header checksum mismatch: the file is corrupt")
    payload_start = r.pos

    b = Reader(data, body_start, body_start + body_len, what="header body")
    header, lengths = (_body_v2 if version == 2 else _body_v1)(b)
    if not b.done():
        raise FormatError("malformed header body: trailing bytes after the segment table")
    return header, lengths, payload_start, version


def read_header(data: bytes) -> tuple[Header, list[int]]:
    """The verified header and the declared segment lengths (the payload is not read)."""
    header, lengths, _, _ = _parse_header(data)
    return header, lengths


def read(data: bytes, *, allow_truncated: bool = False) -> FdcFile:
    """Parse a .fdc file; see the module docstring for the strict / progressive policy."""
    header, lengths, pos, version = _parse_header(data)
    data = bytes(data)
    segments = []
    for i, n in enumerate(lengths):
        if pos + n > len(data):
            if allow_truncated:
                return FdcFile(header, tuple(segments), len(lengths), version)
            raise TruncatedError(
                f"truncated file: segment {i + 1} of {len(lengths)} needs {n} bytes, {len(data) - pos} left "
                "(a truncated file can be decoded progressively up to its last complete segment)"
            )
        segments.append(data[pos : pos + n])
        pos += n
    if len(data) < pos + 4:
        if allow_truncated:
            return FdcFile(header, tuple(segments), len(lengths), version)
        raise TruncatedError("truncated file: the payload checksum is missing")
    (crc,) = struct.unpack("<I", data[pos : pos + 4])
    if zlib.crc32(b"".join(segments)) != crc:
        raise ChecksumError("payload checksum mismatch: the file is corrupt")
    if len(data) != pos + 4:
        raise FormatError(f"{len(data) - pos - 4} unexpected bytes after the end of the .fdc file")
    return FdcFile(header, tuple(segments), len(lengths), version)


def is_fdc(data: bytes) -> bool:
    """Whether `data` starts with the .fdc magic (a cheap test before choosing a decoder)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


# --------------------------------------------------------------------------- progressive helpers


def truncate_to_steps(data: bytes, k: int) -> bytes:
    """A valid, complete .fdc file holding the first k segments (DiffC: steps) of `data`.

    `data` may itself be truncated, as long as it holds k complete segments. The result is
    written as version 2 (a version-1 input keeps its parameter block, so it decodes the same).
    """
    f = read(data, allow_truncated=True)
    if _as_int(k) is None or not 0 <= k <= len(f.segments):
        raise ValueError(f"cannot keep {k!r} steps: the file holds {len(f.segments)} complete steps")
    return write(f.header, f.segments[: int(k)])


def step_file_sizes(data: bytes) -> list[int]:
    """Size in bytes of `truncate_to_steps(data, k)` for k = 0 .. number of complete steps."""
    f = read(data, allow_truncated=True)
    lengths = [len(s) for s in f.segments]
    return [overhead_bytes(f.header, lengths[:k]) + sum(lengths[:k]) for k in range(len(lengths) + 1)]
