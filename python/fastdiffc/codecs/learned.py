"""Learned base codecs: CDC's mean decoder as a DIRAC base codec (docs/design.md §4b).

A classical base codec is Pillow plus a library version; a learned one is a model plus its
content hash. DIRAC treats both alike — an encoder making a bitstream at a rate setting and a
decoder making the base reconstruction DIRAC conditions on — so the residual model can enhance
CDC's deterministic (0-step) reconstruction as it enhances a JPEG.

The CDC base bitstream is CDC's two entropy-coded streams behind a two-field frame:

    varint level | varint len(ẑ stream) | ẑ stream | ŷ stream (the rest)

The image size comes from the enclosing .fdc header and the model from the header's base
reference (its registry name and content hash), so nothing here is guessed from the bytes.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..container import Reader, put_varint
from ..models.cdc_coding import decode_latents, encode_latents
from .classical import get_codec
from .plain import BASE_CODECS, DEFAULT_MAX_PIXELS, PlainImage, open_plain

LEARNED_BASES = ("cdc",)
# Every base codec a DIRAC file can name, in the label order of DIRAC models trained with
# learned bases (older models know the classical ones only and say so).
DIRAC_BASES = BASE_CODECS + LEARNED_BASES


def _check_cdc(model):
    if getattr(model, "kind", None) != "cdc" or not getattr(model, "frozen", False):
        raise ValueError(f"the cdc base codec needs a frozen CDC model, got {getattr(model, 'name', model)!r}")
    return model


def cdc_levels(model) -> int:
    return _check_cdc(model).config.levels


def encode_cdc(model, image: Image.Image, level: int) -> bytes:
    """The CDC base bitstream of an RGB image at `level` (0 = smallest)."""
    _check_cdc(model)
    if image.mode != "RGB":
        raise ValueError(f"cdc: expected an RGB image, got mode {image.mode!r}")
    if not 0 <= int(level) < model.config.levels:
        raise ValueError(f"cdc level must be in 0..{model.config.levels - 1} for model {model.name!r}, got {level}")
    arr = np.asarray(image, dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        y = model.analysis(model.pad(x), int(level))
        z_stream, y_stream, _ = encode_latents(model, y)
    out = bytearray()
    put_varint(out, int(level))
    put_varint(out, len(z_stream))
    return bytes(out) + z_stream + y_stream


def open_cdc(model, data: bytes, width: int, height: int) -> PlainImage:
    """CDC's mean decode of a base bitstream for a width × height image, as a PlainImage
    (codec "cdc", quality None). FormatError (InvalidFieldError, TruncatedError) for a malformed stream."""
    _check_cdc(model)
    r = Reader(bytes(data), what="CDC base bitstream")
    level = r.bounded_varint("level", 0, model.config.levels - 1)
    n_z = r.bounded_varint("ẑ stream length", 0, r.remaining)
    z_stream = r.take(n_z, "ẑ stream")
    y_stream = r.take(r.remaining, "ŷ stream")
    y_hat = decode_latents(model, z_stream, y_stream, height, width)  # FormatError if corrupt
    with torch.no_grad():
        x_bar = model.mean_decode(y_hat, level).float()[:, :, :height, :width].clamp(-1, 1)
    pixels = ((x_bar[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return PlainImage("cdc", Image.fromarray(np.ascontiguousarray(pixels)), len(data), None)


def encode_base(codec: str, image: Image.Image, setting: int, cdc=None) -> bytes:
    """Any DIRAC base codec's bitstream of an RGB image: a classical codec at quality `setting`,
    or the cdc base at level `setting` with the CDC model `cdc`."""
    if codec in LEARNED_BASES:
        return encode_cdc(cdc, image, setting)
    return get_codec(codec).encode(image, setting)


def open_base(codec: str, data: bytes, width: int, height: int, *, cdc=None,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> PlainImage:
    """Any DIRAC base codec's decode of `data`, which must be a `codec` bitstream of a width ×
    height image (the cdc base: with the CDC model `cdc`). FormatError otherwise."""
    if codec in LEARNED_BASES:
        return open_cdc(cdc, data, width, height)
    return open_plain(data, expect=codec, max_pixels=max_pixels, expect_size=(width, height))


__all__ = ["DIRAC_BASES", "LEARNED_BASES", "cdc_levels", "encode_base", "encode_cdc", "open_base", "open_cdc"]
