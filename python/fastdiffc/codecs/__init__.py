"""Classical image codecs as a layer below the pipelines (docs/design.md §2, §4b).

`classical` holds the encoders/decoders (Pillow, pillow-heif, pillow-jxl-plugin) that DIRAC
uses as base codecs and `fastdiffc eval` uses as anchors; `plain` recognises a plain
JPEG/WebP/AVIF/HEIC/JXL file, decodes it within a pixel budget and derives the conditioning
(codec, rate, JPEG quality) DIRAC needs from the file itself.
"""

from .classical import CODECS, ClassicalCodec, CodecUnavailableError, get_codec, library_version, load_codecs
from .plain import BASE_CODECS, PlainImage, identify, jpeg_quality, open_plain

__all__ = ["CODECS", "BASE_CODECS", "ClassicalCodec", "CodecUnavailableError", "PlainImage", "get_codec",
           "identify", "jpeg_quality", "library_version", "load_codecs", "open_plain"]
