"""fastdiffc: lossy image compression with diffusion models.

Pipelines: DiffC (Theis et al.), DIRAC (Ghouse et al.), CDC (Yang & Mandt), behind one
API (`load_codec`) and one CLI (`fastdiffc`). Native code lives in `fastdiffc._core`
(C++/OpenMP) and `fastdiffc._cuda` (CUDA, optional); Triton kernels in `fastdiffc.kernels`.
"""

from importlib import metadata as _metadata

from . import _runtime  # noqa: F401  (allocator tuning must happen before torch allocates)
from .errors import (
    BadMagicError,
    ChecksumError,
    DecodeBudgetError,
    FastDiffCError,
    FormatError,
    InvalidFieldError,
    MissingModelError,
    ModelMismatchError,
    ModelNotFoundError,
    TruncatedError,
    UnknownPipelineError,
    UnsupportedVersionError,
)

try:
    __version__ = _metadata.version("fastdiffc")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0+src"

__all__ = [
    "__version__",
    "FastDiffCError",
    "FormatError",
    "BadMagicError",
    "UnsupportedVersionError",
    "UnknownPipelineError",
    "ModelMismatchError",
    "TruncatedError",
    "ChecksumError",
    "ModelNotFoundError",
    "MissingModelError",
    "InvalidFieldError",
    "DecodeBudgetError",
    "load_codec",
    "load_model",
]


def load_codec(pipeline: str = "diffc", model: str | None = None, **settings):
    """Return a Codec for `pipeline` ("diffc", "dirac", "cdc") with the named or default model."""
    from .pipelines import load_codec as _load_codec

    return _load_codec(pipeline, model, **settings)


def load_model(name: str):
    """Load a shipped (or registered) model by name; see `fastdiffc models`."""
    from .models.registry import load_model as _load_model

    return _load_model(name)
