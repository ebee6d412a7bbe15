"""Plain image files from other encoders: recognise the codec, decode safely, derive the conditioning.

DIRAC enhances files users already have (docs/design.md §4b): a JPEG, WebP, AVIF, HEIC or JPEG XL
file written by any encoder. Nothing but the file is known, so the conditioning comes from it:
the codec from its signature, the rate from its size, and for JPEG the IJG quality that best
explains its luminance quantisation table.

Third-party decoders run on untrusted bytes, so the signature and the declared dimensions are
checked (against `max_pixels`) before any pixel is decoded: Pillow reads only the header on
`Image.open`, and the full decode happens after the check.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import FormatError
from .classical import get_codec

BASE_CODECS = ("jpeg", "webp", "avif", "heic", "jxl")
DEFAULT_MAX_PIXELS = 40_000_000

# The IJG (libjpeg) reference luminance table, in natural (row-major) order; Pillow reports
# quantisation tables in that order too.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)


def ijg_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg writes for `quality` (1..100), baseline-clamped to 1..255."""
    q = min(100, max(1, int(quality)))
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255)


def jpeg_quality(table) -> int:
    """The IJG quality 1..100 whose luminance table is closest (log-ratio L2) to `table`.

    Encoders with their own tables (cameras, mozjpeg) map to the IJG quality of similar
    coarseness, which is what the conditioning needs: how strongly the file was quantised."""
    t = np.asarray(table, dtype=np.float64).reshape(-1)
    if t.size != 64 or not np.all(t >= 1):
        raise FormatError("JPEG luminance quantisation table must hold 64 entries >= 1")
    logs = np.log(t)
    errs = [float(np.sum((logs - np.log(ijg_table(q))) ** 2)) for q in range(1, 101)]
    return 1 + int(np.argmin(errs))


def identify(data: bytes) -> str | None:
    """The codec of a plain image file from its signature: jpeg, webp, avif, heic, jxl; else None."""
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jxl"
    if head[4:8] == b"ftyp":
        # ISO-BMFF: the major brand and the compatible brands of the ftyp box.
        size = int.from_bytes(head[:4], "big")
        brands = {head[i : i + 4] for i in range(8, min(size, len(head)) - 3, 4) if i != 12}
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}:
            return "heic"
    return None


@dataclass(frozen=True)
class PlainImage:
    """A decoded plain file and the conditioning derived from it."""

    codec: str
    image: Image.Image  # RGB
    bytes: int
    quality: int | None  # JPEG: estimated IJG quality; other codecs: None

    @property
    def bpp(self) -> float:
        return 8.0 * self.bytes / (self.image.width * self.image.height)


def open_plain(data: bytes, *, expect: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               expect_size: tuple[int, int] | None = None) -> PlainImage:
    """Decode a plain JPEG/WebP/AVIF/HEIC/JXL file after checking its signature and size.

    `expect`: the codec the caller was told (e.g. by an .fdc header) — a different signature is
    refused. `expect_size`: (width, height) the image must have. Raises FormatError for a foreign,
    corrupt or oversized file, never a decoder's own exception type."""
    codec = identify(data)
    if codec is None:
        raise FormatError("not a JPEG, WebP, AVIF, HEIC or JPEG XL file (unrecognised signature)")
    if expect is not None and codec != expect:
        raise FormatError(f"the base payload is a {codec} file, but the header says {expect}")
    entry = get_codec(codec)
    reason = entry.unavailable_reason()  # registers the HEIF/JXL plugins with Pillow
    if reason:
        raise FormatError(f"cannot decode {codec}: {reason}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w < 1 or h < 1 or w * h > max_pixels:
                raise FormatError(f"{codec} file declares {w}x{h} pixels, over the decode budget of "
                                  f"{max_pixels} pixels (raise max_pixels to allow it)")
            if expect_size is not None and (w, h) != tuple(expect_size):
                raise FormatError(f"{codec} payload is {w}x{h}, the header says {expect_size[0]}x{expect_size[1]}")
            quality = None
            if codec == "jpeg":
                tables = getattr(im, "quantization", None) or {}
                if 0 not in tables:
                    raise FormatError("JPEG file has no luminance quantisation table")
                quality = jpeg_quality(tables[0])
            im.load()
            if im.size != (w, h):  # pillow-heif: a corrupt clean-aperture box changes the size on load
                raise FormatError(f"corrupt {codec} data: it declares {w}x{h} pixels but decodes to "
                                  f"{im.size[0]}x{im.size[1]}")
            rgb = im.convert("RGB")
    except FormatError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, RuntimeError) as e:
        raise FormatError(f"corrupt {codec} data: {e}") from None
    return PlainImage(codec, rgb, len(data), quality)


def rate_features(codec: str, bpp: float, quality: int | None) -> tuple[float, float]:
    """The two scalars a DIRAC model is conditioned on besides the codec: log2 of the base
    file's bits per pixel (clamped to [-8, 4]) and the JPEG quality / 100 (−1 when unknown)."""
    lb = math.log2(max(bpp, 2.0**-8))
    q = -1.0 if quality is None else quality / 100.0
    return float(min(4.0, lb)), float(q)


__all__ = ["BASE_CODECS", "PlainImage", "identify", "ijg_table", "jpeg_quality", "open_plain", "rate_features"]
