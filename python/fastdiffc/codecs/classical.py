"""Classical image codecs: DIRAC's base codecs and the evaluation's anchors (docs/design.md §4b, §9),
all through Pillow and its plugins.

Each codec encodes a PIL RGB image at one *setting* of its sweep and returns the exact
bytes a user would store, so `len(data)` is the rate. Settings are quality values
(0–100, higher is better) except for JPEG 2000, whose OpenJPEG encoder is driven by a
target rate in bits per pixel.

A codec whose Pillow plugin is missing (no AVIF in this Pillow build, pillow-heif or
pillow-jxl-plugin not installed, no HEVC encoder in libheif) is reported by
`unavailable_reason()` and skipped by `load_codecs()` with a warning, never a crash.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image, features

# Quality sweep shared by the quality-driven codecs: from "barely recognisable" to
# "visually lossless", which covers roughly 0.05–2 bpp on photographs.
DEFAULT_QUALITIES: tuple[int, ...] = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
# Target rates (bpp) for rate-driven encoders (JPEG 2000, non-progressive pipelines).
DEFAULT_RATES: tuple[float, ...] = (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)

# Raw RGB 8-bit is 24 bits per pixel; OpenJPEG's "rates" are compression ratios against it.
_RAW_BITS_PER_PIXEL = 24


class CodecUnavailableError(RuntimeError):
    """The codec's encoder or decoder is not available in this environment."""


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical codec: a name, how it is configured, and its default sweep."""

    name: str
    description: str
    setting_name: str  # "q" (quality) or "bpp" (target rate)
    default_settings: tuple
    _encode: Callable[[Image.Image, float], bytes] = field(repr=False)
    _check: Callable[[], str | None] = field(repr=False)

    def unavailable_reason(self) -> str | None:
        """None if the codec works here, else why not (e.g. which package to install)."""
        return self._check()

    def encode(self, image: Image.Image, setting: float) -> bytes:
        """Encode an RGB image at one setting; the result is the complete file."""
        if image.mode != "RGB":
            raise ValueError(f"{self.name}: expected an RGB image, got mode {image.mode!r}")
        reason = self.unavailable_reason()
        if reason:
            raise CodecUnavailableError(f"{self.name}: {reason}")
        return self._encode(image, setting)

    def decode(self, data: bytes) -> Image.Image:
        """Decode bytes produced by `encode` back to an RGB image."""
        reason = self.unavailable_reason()
        if reason:
            raise CodecUnavailableError(f"{self.name}: {reason}")
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")

    def setting_label(self, setting: float) -> str:
        """The text stored in points.csv's `setting` column, e.g. "q=50" or "bpp=0.25"."""
        return f"{self.setting_name}={format_setting(setting)}"


def format_setting(value: float) -> str:
    """Shortest exact text for a setting value (50 -> "50", 0.25 -> "0.25")."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _quality(setting: float) -> int:
    q = int(round(float(setting)))
    if not 0 <= q <= 100:
        raise ValueError(f"quality must be in 0..100, got {setting}")
    return q


# --- availability checks -------------------------------------------------------------


def _pillow_feature(feature: str, what: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if features.check(feature) else f"this Pillow build has no {what} support"

    return check


def _heif_check() -> str | None:
    try:
        import pillow_heif
    except ImportError:
        return "pillow-heif is not installed (pip install pillow-heif)"
    encoders = pillow_heif.libheif_info().get("encoders", {})
    if not any("265" in k or "hevc" in str(v).lower() for k, v in encoders.items()):
        return "libheif in pillow-heif has no HEVC encoder"
    pillow_heif.register_heif_opener()  # idempotent: lets Image.open/save handle HEIF
    return None


def _jxl_check() -> str | None:
    try:
        import pillow_jxl  # noqa: F401  (importing registers the JXL plugin with Pillow)
    except ImportError:
        return "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)"
    return None


# --- encoders ------------------------------------------------------------------------


def _jpeg(image: Image.Image, setting: float) -> bytes:
    # libjpeg with the usual 4:2:0 chroma subsampling and optimised Huffman tables.
    return _save(image, "JPEG", quality=_quality(setting), subsampling="4:2:0", optimize=True)


def _webp(image: Image.Image, setting: float) -> bytes:
    return _save(image, "WEBP", quality=_quality(setting), method=6)


def _avif(image: Image.Image, setting: float) -> bytes:
    # speed 6 is Pillow's default; speed 0 is ~40x slower for ~5% fewer bytes.
    return _save(image, "AVIF", quality=_quality(setting), subsampling="4:4:4", speed=6)


def _heic(image: Image.Image, setting: float) -> bytes:
    # x265 intra via libheif: the HEVC core of BPG; 4:4:4 like the AVIF anchor.
    return _save(image, "HEIF", quality=_quality(setting), chroma=444)


def _jxl(image: Image.Image, setting: float) -> bytes:
    return _save(image, "JXL", quality=_quality(setting), effort=7)


def _jp2(image: Image.Image, setting: float) -> bytes:
    bpp = float(setting)
    if not 0 < bpp <= _RAW_BITS_PER_PIXEL:
        raise ValueError(f"JPEG 2000 target rate must be in (0, {_RAW_BITS_PER_PIXEL}] bpp, got {setting}")
    return _save(
        image,
        "JPEG2000",
        quality_mode="rates",
        quality_layers=[_RAW_BITS_PER_PIXEL / bpp],
        irreversible=True,  # the lossy 9/7 wavelet
        mct=1,  # RGB -> YCbCr before the wavelet (Pillow's default is none: ~2 dB worse on photos)
        no_jp2=False,
    )


CODECS: dict[str, ClassicalCodec] = {
    c.name: c
    for c in (
        ClassicalCodec("jpeg", "JPEG (libjpeg, 4:2:0, optimised Huffman)", "q", DEFAULT_QUALITIES,
                       _jpeg, _pillow_feature("jpg", "JPEG")),
        ClassicalCodec("webp", "WebP (libwebp, method 6)", "q", DEFAULT_QUALITIES,
                       _webp, _pillow_feature("webp", "WebP")),
        ClassicalCodec("avif", "AVIF (libavif/aom, 4:4:4, speed 6)", "q", DEFAULT_QUALITIES,
                       _avif, _pillow_feature("avif", "AVIF")),
        ClassicalCodec("heic", "HEIC (libheif/x265 intra, 4:4:4)", "q", DEFAULT_QUALITIES,
                       _heic, _heif_check),
        ClassicalCodec("jxl", "JPEG XL (libjxl, effort 7)", "q", DEFAULT_QUALITIES,
                       _jxl, _jxl_check),
        ClassicalCodec("jp2", "JPEG 2000 (OpenJPEG, 9/7 wavelet, YCbCr, rate target)", "bpp", DEFAULT_RATES,
                       _jp2, _pillow_feature("jpg_2000", "JPEG 2000")),
    )
}


def library_version(name: str) -> str:
    """The version of the library that encodes/decodes codec `name`, as recorded in a DIRAC file's
    header (short: every byte of it is container overhead). Another version still decodes the file;
    its pixels may differ slightly."""
    codec = get_codec(name).name
    if codec == "heic":
        import pillow_heif

        return f"libheif {pillow_heif.libheif_version()}"
    if codec == "jxl":
        from importlib.metadata import version

        return f"pillow-jxl {version('pillow-jxl-plugin')}"
    if codec == "jpeg" and features.check_feature("libjpeg_turbo"):
        return f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
    feature, lib = {"jpeg": ("jpg", "libjpeg"), "webp": ("webp", "libwebp"), "avif": ("avif", "libavif"),
                    "jp2": ("jpg_2000", "openjpeg")}[codec]
    return f"{lib} {features.version(feature)}"


def get_codec(name: str) -> ClassicalCodec:
    """The classical codec called `name` (ValueError listing the known names otherwise)."""
    try:
        return CODECS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def load_codecs(names: Sequence[str], *, warn: Callable[[str], None] | None = None) -> list[ClassicalCodec]:
    """The named codecs that work here; each unavailable one is skipped with a warning."""
    out = []
    for name in names:
        codec = get_codec(name)
        reason = codec.unavailable_reason()
        if reason:
            message = f"skipping codec {codec.name}: {reason}"
            if warn is None:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            else:
                warn(message)
            continue
        out.append(codec)
    return out
