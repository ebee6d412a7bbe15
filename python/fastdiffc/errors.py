"""Exception types shared by every layer of fastdiffc."""


class FastDiffCError(Exception):
    """Base class for fastdiffc errors that the CLI reports as one line."""


class FormatError(FastDiffCError, ValueError):
    """A bitstream or .fdc file is malformed, truncated, foreign or inconsistent."""


class BadMagicError(FormatError):
    """The data does not start with the .fdc magic bytes."""


class UnsupportedVersionError(FormatError):
    """The .fdc version byte is one this build cannot read."""


class UnknownPipelineError(FormatError):
    """The .fdc header names a pipeline this build does not know."""


class ModelMismatchError(FormatError):
    """The file was written with a different model (name or content hash) than the one given."""


class TruncatedError(FormatError):
    """The data ends before a header field or a segment it declares."""


class ChecksumError(FormatError):
    """The stored checksum does not match the content."""


class ModelNotFoundError(FastDiffCError, LookupError):
    """A named model is not shipped and not found on disk."""
