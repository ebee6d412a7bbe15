#!/usr/bin/env python
"""Fuzz the .fdc decoders of every pipeline this build implements (issue 12; docs/design.md §6, §7).

The error contract: a decoder given any bytes either returns an image of the size its header
declares, or raises a `fastdiffc.FormatError` subclass or a `ValueError`. Anything else — another
exception type, a crash of the process, a hang, a memory blow-up, an image of the wrong size —
is a bug. This module generates cases and classifies what the decoders do with them; it is
both a library (tests/test_fuzz.py runs a few thousand cases in-process) and a campaign runner:

    nice python scripts/fuzz.py --cases 100000 --workers 1 --json fuzz.json
    python scripts/fuzz.py --replay 7:12345          # one case again, with its traceback

Cases are a pure function of (seed, index): `make_case(seed, i, targets)` is what a reproducer
needs. The mutations:

- raw: bit flips, byte overwrites, insertions, deletions, truncations, appended bytes, range
  duplication — anywhere, checksums left as they are (most stop at a CRC, as they should);
- field edge values with the header length and both CRC32s recomputed, so the parsers behind
  the checksums are reached: version, header length, pipeline id, precision, height, width,
  channels, model count, each model's role / name length / name / hash / version length /
  version, params version, params length, the pipeline's own parameter fields (DiffC: seed,
  schedule, λ range, grid steps, bits per chunk, margin, scheme, tile and overlap (v3, v4), tree levels and
  beam (v4); DIRAC: seed; CDC: level, seed), segment count
  and segment lengths (edge values include malformed, over-long and non-minimal varints);
- checksum-fixed byte mutations inside the header body or the payload;
- segment swaps, duplications, drops, reversals, replacements, splices from other files, with
  the length table kept consistent or not;
- model-list edits (duplicate, drop, reorder, other roles);
- truncations decoded with allow_truncated;
- wholly random bytes (bare, or behind the magic and a version byte), and for DIRAC mutated
  plain image files (its decoder also takes bare JPEG/WebP/AVIF/... files);
- a version-1 header rebuilt from the same fields (the legacy parser).

The targets are tiny: 32x48 and smaller images, an exact per-pixel Gaussian denoiser and a
small random UNet for DiffC (coarse grid, small b; pfr, importance, tiled (parameter version 3)
and tree (version 4) files), a small random residual UNet for DIRAC (like
tests/test_dirac.py::tiny_model), a small random CDC model (like tests/test_cdc.py),
decode budgets of a few thousand pixels (a fuzzed header may declare a large but legal image:
the budget turns it into DecodeBudgetError instead of minutes of legitimate work). A pipeline
without a target here is reported (tests/test_fuzz.py fails), not skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import struct
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Runnable from a source tree without PYTHONPATH. Only then: tests/test_fuzz.py imports this module,
# and spawned workers (the campaign's, fastdiffc.batch's) inherit sys.path, so a python/ put first
# here would make them import the source tree (no native modules in a fresh clone) instead of the
# fastdiffc the tests run, e.g. the installed wheel.
if importlib.util.find_spec("fastdiffc") is None and str(ROOT / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "python"))

SAMPLE = ROOT / "python" / "fastdiffc" / "samples" / "sample.png"
HANG_SECONDS = 5.0  # a case running longer than this is a hang (a full tiny decode takes < 0.2 s)
DECODE_BUDGET = 64 * 64  # pixels: what the fuzzed decoders accept (bigger headers -> DecodeBudgetError)


# ============================================================================ byte layout


@dataclass
class Raw:
    """Bytes written verbatim in place of a field's normal encoding (malformed varints etc.)."""

    data: bytes


def varint(v: int) -> bytes:
    """The container's LEB128 varint as bytes (container.put_varint writes it)."""
    from fastdiffc.container import put_varint

    out = bytearray()
    put_varint(out, v)
    return bytes(out)


def _enc(v, kind: str) -> bytes:
    if isinstance(v, Raw):
        return v.data
    if kind == "varint":
        return varint(v)
    if kind == "u8":
        return bytes([v & 0xFF])
    if kind == "u64":
        return struct.pack("<Q", v & (2**64 - 1))
    if kind == "f32":
        return struct.pack("<f", v)
    raise ValueError(kind)


@dataclass
class Model:
    role: object  # int or Raw
    name: bytes
    hash: object
    version: bytes
    name_len: object = None  # None: len(name)
    version_len: object = None


@dataclass
class Layout:
    """A .fdc file as fields, re-serialisable with any field replaced (container.py's layout)."""

    magic: bytes = b"FDC"
    version: object = 2
    header_len: object = None  # None: the body's length
    pipeline: object = 1
    precision: object = 1
    height: object = 1
    width: object = 1
    channels: object = 3
    n_models: object = None  # None: len(models)
    models: list = field(default_factory=list)
    params_version: object = 1
    params_len: object = None
    params: bytes = b""
    n_segments: object = None
    lengths: list = field(default_factory=list)  # None entries: the segment's real length
    segments: list = field(default_factory=list)
    header_crc: object = None  # None: computed
    payload_crc: object = None
    trailer: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Layout:
        """The fields of a valid version-2 file (container.read does the checking)."""
        from fastdiffc import container as C

        f = C.read(data)
        h = f.header
        models = [Model(C.ROLE_IDS[m.role], m.name.encode(), m.hash, m.version.encode()) for m in h.models]
        return cls(version=f.version, pipeline=C.PIPELINE_IDS[h.pipeline], precision=C.PRECISION_IDS[h.precision],
                   height=h.height, width=h.width, channels=h.channels, models=models,
                   params_version=h.params_version, params=h.params, lengths=[None] * len(f.segments),
                   segments=list(f.segments))

    def body(self) -> bytes:
        out = bytearray()
        v1 = self.version == 1
        out += _enc(self.pipeline, "u8")
        if v1:  # version 1: one model (name, hash), no role/precision/params version
            m = self.models[0] if self.models else Model(1, b"", 0, b"")
            out += _enc(len(m.name) if m.name_len is None else m.name_len, "varint") + m.name
            out += _enc(m.hash, "u64")
        else:
            out += _enc(self.precision, "u8")
        out += _enc(self.height, "varint") + _enc(self.width, "varint") + _enc(self.channels, "u8")
        if not v1:
            out += _enc(len(self.models) if self.n_models is None else self.n_models, "varint")
            for m in self.models:
                out += _enc(m.role, "u8")
                out += _enc(len(m.name) if m.name_len is None else m.name_len, "varint") + m.name
                out += _enc(m.hash, "u64")
                out += _enc(len(m.version) if m.version_len is None else m.version_len, "varint") + m.version
            out += _enc(self.params_version, "varint")
        out += _enc(len(self.params) if self.params_len is None else self.params_len, "varint") + self.params
        out += _enc(len(self.lengths) if self.n_segments is None else self.n_segments, "varint")
        for i, n in enumerate(self.lengths):
            real = len(self.segments[i]) if i < len(self.segments) else 0
            out += _enc(real if n is None else n, "varint")
        return bytes(out)

    def to_bytes(self) -> bytes:
        body = self.body()
        head = bytearray(self.magic) + _enc(self.version, "u8")
        head += _enc(len(body) if self.header_len is None else self.header_len, "varint") + body
        head += struct.pack("<I", zlib.crc32(head) if self.header_crc is None else self.header_crc)
        payload = b"".join(self.segments)
        crc = zlib.crc32(payload) if self.payload_crc is None else self.payload_crc
        return bytes(head) + payload + struct.pack("<I", crc) + self.trailer

    def regions(self) -> tuple[int, int, int]:
        """(body start, body end = header CRC offset, payload end = payload CRC offset)."""
        body = self.body()
        start = len(self.magic) + 1 + len(_enc(len(body) if self.header_len is None else self.header_len, "varint"))
        end = start + len(body)
        return start, end, end + 4 + sum(map(len, self.segments))


def fix_crcs(data: bytearray, body_start: int, body_end: int, payload_end: int) -> bytes:
    """Recompute both CRC32s at the given offsets (after a mutation that kept the sizes)."""
    struct.pack_into("<I", data, body_end, zlib.crc32(bytes(data[:body_end])))
    struct.pack_into("<I", data, payload_end, zlib.crc32(bytes(data[body_end + 4:payload_end])))
    return bytes(data)


# Parameter block layouts: (pipeline id, params version) -> [(field, kind)].
PARAM_LAYOUTS = {
    (1, 2): [("seed", "varint"), ("schedule", "u8"), ("logsnr_min", "f32"), ("logsnr_max", "f32"),
             ("grid_steps", "varint"), ("bits_per_chunk", "u8"), ("margin", "varint"), ("scheme", "u8")],
    (2, 1): [("seed", "varint")],
    (3, 1): [("level", "varint"), ("seed", "varint")],
}
PARAM_LAYOUTS[(1, 1)] = PARAM_LAYOUTS[(1, 2)] + [("dtype", "u8")]
PARAM_LAYOUTS[(1, 3)] = PARAM_LAYOUTS[(1, 2)] + [("tile", "varint"), ("tile_overlap", "varint")]
PARAM_LAYOUTS[(1, 4)] = PARAM_LAYOUTS[(1, 3)] + [("levels", "varint"), ("beam", "varint")]


def parse_params(layout: list, data: bytes) -> list | None:
    from fastdiffc.container import Reader

    r = Reader(data, what="params")
    out = []
    try:
        for _, kind in layout:
            out.append({"varint": r.varint, "u8": r.u8}[kind]("x") if kind != "f32"
                       else struct.unpack("<f", r.take(4, "x"))[0])
    except Exception:
        return None
    return out if r.done() else None


def build_params(layout: list, values: list) -> bytes:
    return b"".join(_enc(v, kind) for (_, kind), v in zip(layout, values))


# ============================================================================ edge values

U64 = 2**64
VARINT_RAW = [Raw(b""), Raw(b"\x80"), Raw(b"\xff" * 10), Raw(b"\x80" * 10 + b"\x01"), Raw(b"\xff" * 9 + b"\x01"),
              Raw(b"\xff" * 9 + b"\x02"), Raw(b"\x81\x00"), Raw(b"\x80\x80\x80\x00")]


def varint_edges(orig: int, hi: int | None) -> list:
    vals = [0, 1, 2, 127, 128, 255, 256, 2**16 - 1, 2**16, 2**20, 2**20 + 1, 2**31 - 1, 2**31, 2**32,
            2**63, U64 - 1, U64, 2**70]
    vals += [max(0, orig - 1), orig + 1, 2 * orig, orig * 1000]
    if hi is not None:
        vals += [hi - 1, hi, hi + 1]
    return vals + VARINT_RAW


def u8_edges(orig: int) -> list:
    return [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 20, 21, 127, 128, 254, 255, (orig + 1) & 255, (orig - 1) & 255]


F32_EDGES = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45, 30.0, -30.0, 30.000002,
             -30.000002, 3.4e38, -3.4e38, 1.0, -1.0, 29.999998]


def name_edges(rng, orig: bytes) -> list:
    return [b"", b"\xff\xfe", b"\xc3", b"a" * 255, b"a" * 256, orig + b"x", orig[:-1], b"\x00",
            "é".encode() * 100, rng.bytes(int(rng.integers(1, 40)))]


# ============================================================================ targets


def _torch():
    import torch

    return torch


def pixel_gaussian():
    """Exact posterior mean for x ~ N(m, v I) per colour channel (tests/test_diffc.py::PixelGaussian)."""
    torch = _torch()

    class PixelGaussian(torch.nn.Module):
        name = "fuzz-pixel-gaussian"
        content_hash = 0x0DDBA11C0FFEE124

        def __init__(self):
            super().__init__()
            self.m = torch.tensor((0.1, 0.0, -0.2), dtype=torch.float64).view(1, 3, 1, 1)
            self.v = torch.tensor((0.2, 0.15, 0.25), dtype=torch.float64).view(1, 3, 1, 1)

        def forward(self, z, logsnr, cond=None):
            lam = torch.as_tensor(logsnr, dtype=torch.float64).reshape(-1, 1, 1, 1)
            a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
            a = a2.sqrt()
            return (self.m + a * self.v * (z.double() - a * self.m) / (a2 * self.v + s2)).to(z.dtype)

    return PixelGaussian()


def tiny_unet():
    torch = _torch()
    from fastdiffc.models.unet import UNet, UNetDenoiser

    torch.manual_seed(0)
    net = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_head_dim=8)
    return UNetDenoiser(net, name="fuzz-tiny-unet", content_hash=0x7E57).eval().requires_grad_(False)


def tiny_residual():
    torch = _torch()
    from fastdiffc.models.residual import ResidualDenoiser, ResidualSpec, default_unet_config
    from fastdiffc.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**default_unet_config().to_dict(), "base_channels": 8, "channel_mults": [1, 2],
                                "num_res_blocks": 1, "attn_head_dim": 8})
    torch.manual_seed(0)
    net = UNet(cfg)
    torch.nn.init.normal_(net.conv_out.weight, std=1e-2)
    return ResidualDenoiser(net, ResidualSpec(), name="fuzz-tiny-dirac", content_hash=0x1234ABCE).eval()


def photo(h: int, w: int, top: int = 60, left: int = 150, grey: bool = False):
    from PIL import Image

    im = Image.open(SAMPLE).convert("RGB").crop((left, top, left + w, top + h))
    return im.convert("L") if grey else im


DIFFC_SETTINGS = dict(seed=7, schedule="linear", logsnr_min=-10.0, logsnr_max=4.0, grid_steps=14,
                      bits_per_chunk=8, margin=3.0)


@dataclass
class Target:
    """One decoder under test: a codec with a tiny model, valid files to mutate, its decode knobs."""

    name: str
    pipeline: str
    codec: object
    files: list[bytes]
    knobs: object  # rng -> dict of decode knobs
    plain: list[bytes] = field(default_factory=list)  # bare base-codec files (DIRAC)

    def decode(self, data: bytes, knobs: dict):
        return self.codec.decompress(data, **knobs)


def _diffc_targets() -> list[Target]:
    from fastdiffc.pipelines import diffc

    budget = {}
    if "max_pixels" in inspect.signature(diffc.DiffCCodec.__init__).parameters:
        budget["max_pixels"] = DECODE_BUDGET
    elif hasattr(diffc, "MAX_DECODE_PIXELS"):  # older builds: a module constant read at decode time
        diffc.MAX_DECODE_PIXELS = DECODE_BUDGET

    def DiffCCodec(model, **kw):  # noqa: N802 - the codec with the fuzzing budget (see check_budgets)
        return diffc.DiffCCodec(model, **budget, **kw)

    def knobs(rng):
        k = {"method": ("flow", "ancestral", "denoise")[int(rng.integers(3))],
             "recon_steps": int(rng.integers(1, 4))}
        if rng.random() < 0.3:
            k["allow_truncated"] = True
        if rng.random() < 0.15:
            k["max_steps"] = int(rng.integers(0, 10))
        return k

    out = []
    gauss = DiffCCodec(pixel_gaussian(), recon_steps=2, **DIFFC_SETTINGS)
    files = [gauss.compress(photo(32, 48), steps=8),
             gauss.compress(photo(16, 24, grey=True), steps=5),
             DiffCCodec(pixel_gaussian(), dtype="float64", **DIFFC_SETTINGS).compress(photo(16, 16), steps=4),
             DiffCCodec(pixel_gaussian(), **{**DIFFC_SETTINGS, "schedule": "cosine", "scheme": "importance",
                                             "bits_per_chunk": 6, "seed": 2**64 - 1}).compress(photo(8, 12), steps=6)]
    files.append(to_v1(files[0]))
    tree = {**DIFFC_SETTINGS, "scheme": "tree", "bits_per_chunk": 3, "levels": 4, "beam": 4}
    files.append(DiffCCodec(pixel_gaussian(), **tree).compress(photo(32, 48), steps=8))  # parameter version 4
    files.append(DiffCCodec(pixel_gaussian(), tile=16, tile_overlap=4, **DIFFC_SETTINGS).compress(photo(16, 24),
                                                                                                  steps=5))  # v3
    out.append(Target("diffc", "diffc", gauss, files, knobs))
    unet = DiffCCodec(tiny_unet(), recon_steps=2, **DIFFC_SETTINGS)
    out.append(Target("diffc-unet", "diffc", unet, [unet.compress(photo(16, 24), steps=5)], knobs))
    return out


def _dirac_targets() -> list[Target]:
    from fastdiffc.codecs import classical
    from fastdiffc.pipelines.dirac import DiracCodec

    codec = DiracCodec(tiny_residual(), max_pixels=DECODE_BUDGET)
    bases = [n for n in ("jpeg", "webp", "avif", "heic", "jxl") if classical.get_codec(n).unavailable_reason() is None]
    files = [codec.compress(photo(32, 48), base=b, quality=40) for b in bases]
    files.append(codec.compress(photo(16, 24, grey=True), base="jpeg", quality=70))
    plain = [classical.get_codec(b).encode(photo(16, 24), 50) for b in bases]

    def knobs(rng):
        return {"decode_steps": int(rng.choice([0, 0, 0, 1, 2]))}

    return [Target("dirac", "dirac", codec, files, knobs, plain=plain)]


def tiny_cdc():
    """A small random CDC model (like tests/test_cdc.py::tiny_model): gains raised so its latents are
    not all zero, frozen so it has its integer coding tables."""
    torch = _torch()
    from fastdiffc.models.cdc import CDCConfig, CDCModel

    unet = {**CDCConfig().unet, "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
            "attn_head_dim": 8}
    torch.manual_seed(0)
    m = CDCModel(CDCConfig(channels=8, latent_channels=16, hyper_channels=8, hyper_hidden=8,
                           lambdas=(0.002, 0.01, 0.05), unet=unet))
    with torch.no_grad():
        m.log_gain += 2.5
        m.h_a[-1].weight *= 20.0
    m.eval().freeze()
    m.requires_grad_(False)
    m.name = "fuzz-tiny-cdc"
    m.content_hash = m.compute_content_hash()
    return m


def _cdc_targets() -> list[Target]:
    from fastdiffc.pipelines.cdc import CDCCodec

    codec = CDCCodec(tiny_cdc(), seed=3, max_pixels=DECODE_BUDGET)
    files = [codec.compress(photo(32, 48), level=lv) for lv in (0, 2)]
    files.append(codec.compress(photo(16, 24, grey=True), level=1))

    def knobs(rng):
        k = {"decode_steps": int(rng.choice([0, 0, 1, 2]))}
        if rng.random() < 0.3:
            k["eta"] = float(rng.choice([0.0, 0.5, 1.0]))
        return k

    return [Target("cdc", "cdc", codec, files, knobs)]


TARGET_FACTORIES = {"diffc": _diffc_targets, "dirac": _dirac_targets, "cdc": _cdc_targets}


def build_targets(pipelines=None) -> tuple[list[Target], dict[str, str]]:
    """(targets, {pipeline: why it has none}) for every implemented pipeline (or those named)."""
    from fastdiffc.pipelines import available_pipelines

    names = list(available_pipelines()) if pipelines is None else list(pipelines)
    targets, missing = [], {}
    for name in names:
        factory = TARGET_FACTORIES.get(name)
        if factory is None:
            missing[name] = "no fuzz target defined in scripts/fuzz.py"
            continue
        targets += factory()
    check_budgets(targets)
    return targets, missing


def check_budgets(targets: list[Target]) -> None:
    """The decode budgets are in force: a valid file declaring 128x128 pixels is refused before
    decoding (otherwise a fuzzed size is legitimate minutes of work, not a hang)."""
    from fastdiffc.errors import DecodeBudgetError

    for t in targets:
        lay = Layout.parse(t.files[0])
        lay.height, lay.width = 128, 128
        try:
            t.decode(lay.to_bytes(), {})
        except DecodeBudgetError:
            continue
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"fuzz target {t.name}: a 128x128 header should hit the decode budget, "
                               f"got {type(e).__name__}: {e}") from e
        raise RuntimeError(f"fuzz target {t.name}: a 128x128 header decoded; the decode budget is not in force")


def to_v1(data: bytes) -> bytes:
    """A version-1 file with the same model, size, segments (DiffC parameters v1 = v2 + dtype byte)."""
    lay = Layout.parse(data)
    lay.version = 1
    lay.params = lay.params + b"\x00"
    return lay.to_bytes()


# ============================================================================ cases


@dataclass
class Case:
    seed: int
    index: int
    target: str
    kind: str
    detail: str
    data: bytes
    knobs: dict

    def describe(self) -> dict:
        return {"seed": self.seed, "case": self.index, "target": self.target, "mutation": self.kind,
                "detail": self.detail, "knobs": self.knobs, "bytes": len(self.data),
                "replay": f"python scripts/fuzz.py --replay {self.seed}:{self.index}"}


def _flip_bits(rng, data: bytearray, lo: int, hi: int, n: int) -> list[int]:
    where = []
    if hi <= lo:
        return where
    for _ in range(n):
        p = int(rng.integers(lo, hi))
        data[p] ^= 1 << int(rng.integers(8))
        where.append(p)
    return where


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def m_raw(rng, lay: Layout, data: bytes, t: Target):
    d = bytearray(data)
    op = _pick(rng, ["flip", "flip", "byte", "insert", "delete", "truncate", "append", "dup"])
    if op == "flip":
        where = _flip_bits(rng, d, 0, len(d), int(rng.integers(1, 9)))
        return bytes(d), f"flip bits at {where}"
    if op == "byte":
        p = int(rng.integers(len(d)))
        d[p] = int(rng.integers(256))
        return bytes(d), f"byte {p} = {d[p]}"
    if op == "insert":
        p, n = int(rng.integers(len(d) + 1)), int(rng.integers(1, 9))
        return bytes(d[:p]) + rng.bytes(n) + bytes(d[p:]), f"insert {n} bytes at {p}"
    if op == "delete":
        p, n = int(rng.integers(len(d))), int(rng.integers(1, 9))
        return bytes(d[:p] + d[p + n:]), f"delete {n} bytes at {p}"
    if op == "truncate":
        p = int(rng.integers(len(d)))
        return bytes(d[:p]), f"truncate to {p} bytes"
    if op == "append":
        n = int(rng.integers(1, 64))
        return bytes(d) + rng.bytes(n), f"append {n} bytes"
    p, n = int(rng.integers(len(d))), int(rng.integers(1, 32))
    return bytes(d[:p + n]) + bytes(d[p:]), f"duplicate bytes {p}..{p + n}"


def m_checksummed_flip(rng, lay: Layout, data: bytes, t: Target):
    """Bit flips inside the header body or the payload, both CRCs recomputed."""
    start, end, pend = lay.regions()
    d = bytearray(data)
    region = "header" if rng.random() < 0.6 or pend == end + 4 else "payload"
    lo, hi = (start, end) if region == "header" else (end + 4, pend)
    where = _flip_bits(rng, d, lo, hi, int(rng.integers(1, 4)))
    return fix_crcs(d, start, end, pend), f"{region} bit flips at {where}, CRCs fixed"


def m_field(rng, lay: Layout, data: bytes, t: Target):
    """One header field set to an edge value; header length and CRCs recomputed."""
    lay = replace(lay, models=[replace(m) for m in lay.models], lengths=list(lay.lengths),
                  segments=list(lay.segments))
    names = ["version", "header_len", "pipeline", "precision", "height", "width", "channels", "n_models",
             "params_version", "params_len", "n_segments", "model", "model", "params", "params", "params",
             "seg_len", "seg_len"]
    name = _pick(rng, names)
    if name == "model" and lay.models:
        m = _pick(rng, lay.models)
        sub = _pick(rng, ["role", "name_len", "name", "hash", "version_len", "version"])
        if sub == "role":
            m.role = _pick(rng, u8_edges(m.role))
            v = m.role
        elif sub in ("name", "version"):
            v = _pick(rng, name_edges(rng, getattr(m, sub)))
            setattr(m, sub, v)
        elif sub == "hash":
            v = _pick(rng, [0, 1, U64 - 1, m.hash ^ 1, m.hash ^ (1 << 63), int(rng.integers(0, 2**63))])
            m.hash = v
        else:
            v = _pick(rng, varint_edges(len(getattr(m, sub[:-4])), 256))
            setattr(m, sub, v)
        what = f"model {lay.models.index(m)} {sub} = {v!r}"
    elif name == "params":
        layout = PARAM_LAYOUTS.get((lay.pipeline, lay.params_version))
        values = parse_params(layout, lay.params) if layout else None
        if values is None:  # unknown layout: byte-level edits of the block
            p = bytearray(lay.params) or bytearray(b"\0")
            p[int(rng.integers(len(p)))] = int(rng.integers(256))
            lay.params = bytes(p)
            what = "params byte edit"
        else:
            i = int(rng.integers(len(layout)))
            fname, kind = layout[i]
            if kind == "varint":
                v = _pick(rng, varint_edges(values[i], None))
            elif kind == "u8":
                v = _pick(rng, u8_edges(values[i]))
            else:
                v = _pick(rng, F32_EDGES + [values[1 - i] if i in (2, 3) and len(values) > 3 else 0.0])
                if i in (2, 3) and rng.random() < 0.2:  # swap the λ range
                    values[2], values[3] = values[3], values[2]
            values[i] = v
            lay.params = build_params(layout, values)
            what = f"params {fname} = {v!r}"
    elif name == "seg_len" and lay.lengths:
        i = int(rng.integers(len(lay.lengths)))
        real = len(lay.segments[i])
        v = _pick(rng, varint_edges(real, len(data)))
        lay.lengths[i] = v
        what = f"segment {i} length = {v!r}"
    else:
        if name in ("model", "seg_len"):
            name = "n_segments"
        cur = getattr(lay, name)
        if name in ("pipeline", "precision", "channels", "version"):
            v = _pick(rng, u8_edges(cur))
        else:
            base = {"header_len": len(lay.body()), "n_models": len(lay.models), "params_len": len(lay.params),
                    "n_segments": len(lay.segments)}.get(name, cur)
            hi = {"height": 2**20, "width": 2**20, "n_models": 16, "params_len": 2**16,
                  "params_version": 2**16}.get(name)
            v = _pick(rng, varint_edges(base, hi))
        setattr(lay, name, v)
        what = f"{name} = {v!r}"
    return lay.to_bytes(), what + ", CRCs fixed"


def m_segments(rng, lay: Layout, data: bytes, t: Target):
    """Segment swaps, duplications, drops, replacements, splices; lengths consistent or not."""
    segs = list(lay.segments)
    others = [s for f in t.files for s in Layout.parse(f).segments] + list(t.plain)
    op = _pick(rng, ["swap", "dup", "drop", "reverse", "random", "empty", "extend", "shorten", "splice", "extra"])
    if op == "swap" and len(segs) >= 2:
        i, j = (int(x) for x in rng.choice(len(segs), 2, replace=False))
        segs[i], segs[j] = segs[j], segs[i]
        what = f"swap segments {i}, {j}"
    elif op == "dup" and segs:
        i, j = int(rng.integers(len(segs))), int(rng.integers(len(segs) + 1))
        segs.insert(j, segs[i])
        what = f"duplicate segment {i} at {j}"
    elif op == "drop" and segs:
        i = int(rng.integers(len(segs)))
        del segs[i]
        what = f"drop segment {i}"
    elif op == "reverse":
        segs.reverse()
        what = "reverse segments"
    elif op == "random" and segs:
        i = int(rng.integers(len(segs)))
        segs[i] = rng.bytes(int(rng.choice([len(segs[i]), int(rng.integers(0, 300))])))
        what = f"segment {i} random bytes ({len(segs[i])})"
    elif op == "empty" and segs:
        i = int(rng.integers(len(segs)))
        segs[i] = b""
        what = f"segment {i} emptied"
    elif op == "extend" and segs:
        i = int(rng.integers(len(segs)))
        segs[i] = segs[i] + rng.bytes(int(rng.integers(1, 5)))
        what = f"segment {i} extended"
    elif op == "shorten" and segs:
        i = int(rng.integers(len(segs)))
        segs[i] = segs[i][: int(rng.integers(0, max(1, len(segs[i]))))]
        what = f"segment {i} shortened to {len(segs[i])}"
    elif op == "splice" and segs and others:
        i = int(rng.integers(len(segs)))
        segs[i] = _pick(rng, others)
        what = f"segment {i} from another file"
    else:
        n = int(rng.integers(1, 40))
        segs += [rng.bytes(int(rng.integers(0, 8))) for _ in range(n)]
        what = f"{n} extra segments"
    consistent = rng.random() < 0.75
    out = replace(lay, segments=segs, lengths=[None] * len(segs) if consistent else list(lay.lengths))
    return out.to_bytes(), what + ("" if consistent else ", length table unchanged") + ", CRCs fixed"


def m_models(rng, lay: Layout, data: bytes, t: Target):
    models = [replace(m) for m in lay.models]
    op = _pick(rng, ["dup", "drop", "reorder", "role", "many"])
    if op == "dup" and models:
        models.append(replace(_pick(rng, models)))
    elif op == "drop" and models:
        del models[int(rng.integers(len(models)))]
    elif op == "reorder":
        models.reverse()
    elif op == "role" and models:
        m = _pick(rng, models)
        m.role = int(rng.integers(1, 7))
    else:
        models += [Model(int(rng.integers(1, 7)), b"m%d" % i, i, b"") for i in range(int(rng.integers(1, 20)))]
    return replace(lay, models=models).to_bytes(), f"models {op} -> {len(models)}, CRCs fixed"


def m_truncated(rng, lay: Layout, data: bytes, t: Target):
    """A truncation (at a segment boundary or anywhere in the payload), decoded with allow_truncated."""
    start, end, pend = lay.regions()
    bounds = np.cumsum([end + 4] + [len(s) for s in lay.segments]).tolist()
    cut = _pick(rng, bounds) if rng.random() < 0.5 else int(rng.integers(end + 4, len(data) + 1))
    return data[:cut], f"truncate to {cut} bytes (payload starts at {end + 4})"


def m_random(rng, lay: Layout, data: bytes, t: Target):
    n = int(rng.integers(0, 300))
    prefix = _pick(rng, [b"", b"FDC", b"FDC\x02", b"FDC\x01", b"FDC\x02" + varint(n), b"\xff\xd8\xff", b"RIFF",
                         b"\x00\x00\x00\x1cftypavif", b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"])
    return prefix + rng.bytes(n), f"random bytes behind {prefix!r} ({n})"


def m_header_swap(rng, lay: Layout, data: bytes, t: Target):
    """The header of one file with the payload of another (of this target), CRCs fixed."""
    other = Layout.parse(_pick(rng, t.files))
    return replace(lay, segments=other.segments, lengths=[None] * len(other.segments)).to_bytes(), \
        "payload of another file, CRCs fixed"


def m_v1(rng, lay: Layout, data: bytes, t: Target):
    """The fields written as a version-1 header, then a field edit or a flip with CRCs fixed."""
    v1 = replace(lay, version=1, models=list(lay.models))
    if rng.random() < 0.5:
        v1.params = lay.params + bytes([int(rng.choice([0, 1, 2, 255]))])
    d = bytearray(v1.to_bytes())
    start, end, pend = v1.regions()
    where = _flip_bits(rng, d, start, end, int(rng.integers(0, 3)))
    return fix_crcs(d, start, end, pend), f"as version 1, header flips at {where}, CRCs fixed"


def m_plain(rng, lay: Layout, data: bytes, t: Target):
    """A bare base-codec file (DIRAC decodes plain JPEG/WebP/AVIF/... files), raw-mutated."""
    d = bytearray(_pick(rng, t.plain))
    op = _pick(rng, ["flip", "truncate", "bytes", "none"])
    if op == "flip":
        where = _flip_bits(rng, d, 0, len(d), int(rng.integers(1, 9)))
        return bytes(d), f"plain file, flips at {where}"
    if op == "truncate":
        p = int(rng.integers(len(d)))
        return bytes(d[:p]), f"plain file truncated to {p}"
    if op == "bytes":
        p, n = int(rng.integers(len(d))), int(rng.integers(1, 9))
        d[p:p + n] = rng.bytes(n)
        return bytes(d), f"plain file, random bytes at {p}"
    return bytes(d), "plain file, unmodified"


MUTATIONS = [  # (name, function, weight)
    ("raw", m_raw, 20), ("crc-flip", m_checksummed_flip, 15), ("field", m_field, 30), ("segments", m_segments, 12),
    ("models", m_models, 4), ("truncated", m_truncated, 6), ("random", m_random, 5), ("header-swap", m_header_swap, 2),
    ("v1", m_v1, 3), ("plain", m_plain, 6), ("valid", None, 1),
]


def make_case(seed: int, index: int, targets: list[Target]) -> Case:
    """Case `index` of campaign `seed`: the same bytes on every run, whatever ran before it."""
    rng = np.random.default_rng([seed, index])
    t = targets[int(rng.integers(len(targets)))]
    data = t.files[int(rng.integers(len(t.files)))]
    lay = Layout.parse(data)
    muts = [m for m in MUTATIONS if m[0] != "plain" or t.plain]
    w = np.array([m[2] for m in muts], dtype=float)
    name, fn, _ = muts[int(rng.choice(len(muts), p=w / w.sum()))]
    if fn is None:
        out, detail = data, "unmodified valid file"
    else:
        out, detail = fn(rng, lay, data, t)
    knobs = t.knobs(rng)
    if name == "truncated" and t.pipeline == "diffc":
        knobs["allow_truncated"] = True
    return Case(seed, index, t.name, name, detail, out, knobs)


# ============================================================================ running a case

DOCUMENTED = "documented"


def classify(exc: BaseException | None) -> tuple[str, str]:
    """(outcome class, kind): kind is "ok", "documented", "memory" or "unexpected"."""
    from fastdiffc.errors import FormatError

    if exc is None:
        return "ok", "ok"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "alloc" in str(exc).lower()):
        return "memory", "memory"
    if isinstance(exc, (FormatError, ValueError)):
        name = type(exc).__name__
        if not isinstance(exc, FormatError):  # a bare ValueError: say where it came from
            name += "@" + _origin(exc)
        return name, DOCUMENTED
    return "unexpected:" + type(exc).__name__, "unexpected"


def _origin(exc: BaseException) -> str:
    """The package of the innermost frame that raised `exc` (fastdiffc, numpy, PIL, ...)."""
    tb = exc.__traceback__
    mod = "?"
    while tb is not None:
        mod = tb.tb_frame.f_globals.get("__name__", "?")
        tb = tb.tb_next
    return mod if mod.startswith("fastdiffc") else mod.split(".")[0]


@dataclass
class Result:
    outcome: str
    kind: str
    seconds: float  # wall clock
    message: str = ""
    traceback: str = ""
    cpu_seconds: float = 0.0  # CPU time of the process (a hang that computes shows here whatever the load)


def run_case(case: Case, targets_by_name: dict[str, Target]) -> Result:
    """Decode the case (and describe its header, as `fastdiffc info` does); classify the result.
    An "ok" decode must give an image of the declared size."""
    from fastdiffc import container
    from fastdiffc.pipelines import codec_class

    t = targets_by_name[case.target]
    t0, c0 = time.perf_counter(), time.process_time()
    exc = None
    try:
        try:  # `fastdiffc info`: parse the header, describe the pipeline's parameters
            header, _ = container.read_header(case.data)
            codec_class(header.pipeline).describe_params(header)
        except ValueError:  # documented; anything else is classified below
            pass
        img = t.decode(case.data, case.knobs)
        if container.is_fdc(case.data):
            h, _ = container.read_header(case.data)
            want = (h.width, h.height)
        else:
            want = img.size
        if img.size != want or img.mode not in ("RGB", "L"):
            return Result("wrong-image", "unexpected", time.perf_counter() - t0,
                          f"decoded {img.mode} {img.size}, header says {want}", "", time.process_time() - c0)
    except BaseException as e:  # noqa: BLE001 - classifying is the point
        if isinstance(e, KeyboardInterrupt):
            raise
        exc = e
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    outcome, kind = classify(exc)
    if exc is None:
        return Result(outcome, kind, secs, cpu_seconds=cpu)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if kind != DOCUMENTED else ""
    return Result(outcome, kind, secs, f"{type(exc).__name__}: {exc}"[:500], tb[-4000:], cpu)


class Summary:
    """Counts per outcome class, with the first reproducer of each."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.first: dict[str, dict] = {}
        self.by_mutation: dict[str, dict[str, int]] = {}
        self.slowest = (0.0, None)

    def add(self, case_info: dict, outcome: str, kind: str, seconds: float, message: str = "", tb: str = ""):
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        m = self.by_mutation.setdefault(case_info["mutation"], {})
        m[kind] = m.get(kind, 0) + 1
        if outcome not in self.first:
            self.first[outcome] = {**case_info, "message": message, **({"traceback": tb} if tb else {})}
        if seconds > self.slowest[0]:
            self.slowest = (seconds, case_info)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.by_mutation.values():
            for k, n in m.items():
                out[k] = out.get(k, 0) + n
        return out

    def to_json(self) -> dict:
        return {"cases": sum(self.counts.values()), "kinds": self.kinds(),
                "counts": dict(sorted(self.counts.items(), key=lambda kv: -kv[1])),
                "by_mutation": self.by_mutation, "slowest_seconds": round(self.slowest[0], 3),
                "slowest_case": self.slowest[1], "first_reproducer": self.first}


# ============================================================================ the campaign


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _inject(what: str, mem_mb: int) -> None:
    """Self-test of the campaign's watchdog (--inject): misbehave like a decoder bug would. The
    memory case asks for 256 MB more than the worker's limit, so it fails only if the limit holds."""
    import signal

    if what == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif what == "hang":
        while True:
            pass
    elif what == "memory":
        bytearray(((mem_mb or 1 << 20) + 256) << 20)


def worker_main(conn, seed: int, pipelines, mem_mb: int, inject: dict | None = None) -> None:
    """A persistent worker: build the targets once, then decode the cases the parent sends."""
    import resource

    import torch

    torch.set_num_threads(1)
    try:
        targets, missing = build_targets(pipelines)
    except BaseException as e:  # noqa: BLE001
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        return
    by_name = {t.name: t for t in targets}
    if mem_mb:
        limit = _vm_bytes() + mem_mb * 2**20  # the address space torch already maps, plus the budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send(("ready", [t.name for t in targets], missing))
    while True:
        index = conn.recv()
        if index is None:
            return
        case = make_case(seed, index, targets)
        conn.send(("begin", index, case.describe()))
        if inject and index in inject:
            try:
                _inject(inject[index], mem_mb)
            except MemoryError as e:
                conn.send(("end", index, "memory", "memory", 0.0, f"MemoryError: {e}", ""))
                continue
        r = run_case(case, by_name)
        conn.send(("end", index, r.outcome, r.kind, r.seconds, r.message, r.traceback))


class Worker:
    def __init__(self, ctx, seed, pipelines, mem_mb, inject=None):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, seed, pipelines, mem_mb, inject), daemon=True)
        self.proc.start()
        child.close()
        if not self.parent.poll(300):
            self.kill()
            raise RuntimeError("fuzz worker did not start within 300 s")
        msg = self.parent.recv()
        if msg[0] == "error":
            raise RuntimeError(f"fuzz worker failed to build its targets: {msg[1]}\n{msg[2]}")
        _, self.targets, self.missing = msg

    def kill(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)

    def close(self):
        try:
            self.parent.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        self.kill()


def campaign(cases: int, *, seed: int = 0, start: int = 0, workers: int = 1, pipelines=None, mem_mb: int = 2048,
             timeout: float = HANG_SECONDS * 4, time_limit: float | None = None, inject: dict | None = None,
             log=print) -> dict:
    """Run cases start .. start+cases-1 over persistent workers; a crashed, killed or hung worker is
    restarted and its case recorded as crash / hang. Stops early at `time_limit` seconds."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    summary = Summary()
    t_start = time.time()
    pool = [Worker(ctx, seed, pipelines, mem_mb, inject) for _ in range(workers)]
    info = {"targets": pool[0].targets, "missing": pool[0].missing}
    restarts = 0
    next_index, end_index, done = start, start + cases, 0
    pending: dict[int, tuple[int, float, dict | None]] = {}  # worker slot -> (index, sent at, description)

    def send(slot):
        nonlocal next_index
        pool[slot].parent.send(next_index)
        pending[slot] = (next_index, time.time(), None)
        next_index += 1

    def stopped():
        return time_limit is not None and time.time() - t_start > time_limit

    for slot in range(workers):
        if next_index < end_index:
            send(slot)
    last_log = time.time()
    while pending:
        for slot in list(pending):
            w = pool[slot]
            index, sent, desc = pending[slot]
            failure = None
            try:
                if w.parent.poll(0.05):
                    msg = w.parent.recv()
                    if msg[0] == "begin":
                        pending[slot] = (index, time.time(), msg[2])
                        continue
                    _, _, outcome, kind, secs, message, tb = msg
                    summary.add(desc, outcome, kind, secs, message, tb)
                    del pending[slot]
                    done += 1
                elif not w.proc.is_alive():
                    failure = ("crash", f"worker died (exit code {w.proc.exitcode})")
                elif time.time() - sent > timeout:
                    failure = ("hang", f"no result after {timeout:g} s")
            except (EOFError, ConnectionResetError, BrokenPipeError):
                w.proc.join(5)
                failure = ("crash", f"worker died (exit code {w.proc.exitcode})")
            if failure is not None:
                kind, message = failure
                desc = desc or {"seed": seed, "case": index, "target": "?", "mutation": "?",
                                "replay": f"python scripts/fuzz.py --replay {seed}:{index}"}
                summary.add(desc, kind, kind, time.time() - sent, message)
                log(f"case {index}: {kind}: {message}; restarting the worker")
                w.kill()
                pool[slot] = Worker(ctx, seed, pipelines, mem_mb, inject)
                restarts += 1
                del pending[slot]
                done += 1
            if slot not in pending and next_index < end_index and not stopped():
                send(slot)
        if time.time() - last_log > 60:
            last_log = time.time()
            rate = done / max(1e-9, time.time() - t_start)
            log(f"{done} cases, {rate:.1f}/s, {json.dumps(summary.kinds())}")
    for w in pool:
        w.close()
    out = summary.to_json()
    out.update(seed=seed, first_case=start, requested=cases, workers=workers, memory_limit_mb=mem_mb,
               case_timeout_seconds=timeout, worker_restarts=restarts, seconds=round(time.time() - t_start, 1),
               stopped_early=done < cases, **info)
    return out


def replay(seed: int, index: int, pipelines=None) -> int:
    targets, _ = build_targets(pipelines)
    case = make_case(seed, index, targets)
    print(json.dumps(case.describe(), indent=1))
    r = run_case(case, {t.name: t for t in targets})
    print(f"outcome {r.outcome} ({r.kind}) in {r.seconds:.3f} s: {r.message}")
    if r.traceback:
        print(r.traceback)
    return 0 if r.kind in ("ok", DOCUMENTED) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--start", type=int, default=0, help="first case index (resume a campaign)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pipelines", default=None, help="comma-separated (default: every implemented pipeline)")
    p.add_argument("--memory-mb", type=int, default=2048, help="address space per worker beyond its start (0: none)")
    p.add_argument("--timeout", type=float, default=HANG_SECONDS * 4, help="seconds before a case is a hang")
    p.add_argument("--time-limit", type=float, default=None, help="stop sending cases after this many seconds")
    p.add_argument("--json", type=Path, default=None, help="write the summary here")
    p.add_argument("--replay", default=None, metavar="SEED:INDEX", help="run one case in-process and show it")
    p.add_argument("--inject", default="", metavar="KIND:INDEX,...",
                   help="self-test of the watchdog: case INDEX crashes / hangs / exhausts memory (crash, hang, memory)")
    a = p.parse_args(argv)
    pipelines = a.pipelines.split(",") if a.pipelines else None
    if a.replay:
        s, i = (int(x) for x in a.replay.split(":"))
        return replay(s, i, pipelines)
    inject = {int(i): k for k, i in (x.split(":") for x in a.inject.split(",") if x)}
    out = campaign(a.cases, seed=a.seed, start=a.start, workers=a.workers, pipelines=pipelines, mem_mb=a.memory_mb,
                   timeout=a.timeout, time_limit=a.time_limit, inject=inject,
                   log=lambda s: print(s, file=sys.stderr, flush=True))
    text = json.dumps(out, indent=1, default=str)
    if a.json:
        a.json.write_text(text + "\n")
    print(json.dumps({k: out[k] for k in ("cases", "kinds", "counts", "seconds", "worker_restarts", "missing")}))
    bad = sum(n for k, n in out["kinds"].items() if k not in ("ok", DOCUMENTED))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Case", "Layout", "Summary", "Target", "build_targets", "campaign", "classify", "make_case", "run_case"]
