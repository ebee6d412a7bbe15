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


class InvalidFieldError(FormatError):
    """A header field holds a value outside its range or table (role, precision, size, count, version)."""


class ModelMismatchError(FormatError):
    """The file was written with a different model (name or content hash) than the one given."""


class TruncatedError(FormatError):
    """The data ends before a header field or a segment it declares."""


class ChecksumError(FormatError):
    """The stored checksum does not match the content."""


class ModelNotFoundError(FastDiffCError, LookupError, ValueError):
    """A named model is not shipped and not found on disk.

    Also a ValueError: a bad model name is bad input, inside the documented error contract
    ("a FormatError subclass or ValueError", docs/design.md §7)."""


class MissingModelError(FormatError, ModelNotFoundError):
    """A file needs a model (named, with its content hash, in the message) that this install lacks."""


class BudgetError(FastDiffCError, ValueError):
    """An image or a file needs more resources (pixels, model calls, memory) than the budget
    allows (pipelines.base.Budget); refused before any large allocation. The message names the
    limit and the setting that raises it."""


class DecodeBudgetError(FormatError, BudgetError):
    """A file declares more work (pixels, steps, memory) than the decoder accepts; refused before allocating."""
