"""Registry of shipped models: python/fastdiffc/weights/*.safetensors.

A weight file is a model when its safetensors metadata key "fastdiffc_config" holds
JSON with a "class" field; the class picks the loader. The model's name is the file
stem. Loaded models carry `.name` and `.content_hash` — a 64-bit integer, blake2b-64 of
the file's bytes, which bitstreams record so a decoder can refuse a different model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError

CONFIG_KEY = "fastdiffc_config"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _load_unet(path):
    from .unet import UNetDenoiser

    return UNetDenoiser.load(path)


def _load_gaussian(path):
    from .gaussian import GaussianDenoiser

    return GaussianDenoiser.load(path)


LOADERS = {"unet": _load_unet, "gaussian": _load_gaussian}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    cls: str
    path: Path
    size_bytes: int
    config: dict


def content_hash(path) -> int:
    return int.from_bytes(hashlib.blake2b(Path(path).read_bytes(), digest_size=8).digest(), "little")


def _read_metadata(path: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        cfg = json.loads(meta[CONFIG_KEY])
    except Exception:  # noqa: BLE001 - unreadable or foreign file: not a model
        return None
    return cfg if isinstance(cfg, dict) and "class" in cfg else None


def list_models(weights_dir=None) -> list[ModelInfo]:
    """Every model file in the weights folder, sorted by name."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    out = []
    for path in sorted(folder.glob("*.safetensors")):
        cfg = _read_metadata(path)
        if cfg is not None:
            out.append(ModelInfo(path.stem, str(cfg["class"]), path, path.stat().st_size, cfg))
    return out


def load_model(name: str, weights_dir=None):
    """Load a shipped model by name (see `fastdiffc models`); raises ModelNotFoundError."""
    models = {m.name: m for m in list_models(weights_dir)}
    info = models.get(name)
    if info is None:
        available = ", ".join(sorted(models)) or "none"
        raise ModelNotFoundError(f"no model named {name!r}; available: {available}")
    loader = LOADERS.get(info.cls)
    if loader is None:
        raise ModelNotFoundError(f"model {name!r} has class {info.cls!r}, which this build cannot load "
                                 f"(known: {', '.join(sorted(LOADERS))})")
    model = loader(info.path)
    model.name = info.name
    model.content_hash = content_hash(info.path)
    return model


DEFAULTS_FILE = WEIGHTS_DIR / "defaults.json"


def default_model_name(pipeline: str = "diffc") -> str:
    """The shipped default model of `pipeline`, from weights/defaults.json (a data file, so that
    promoting a better model is a one-line change measured by `fastdiffc eval`)."""
    try:
        defaults = json.loads(DEFAULTS_FILE.read_text())
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"cannot read the default-model table {DEFAULTS_FILE}: {e}") from None
    name = defaults.get(pipeline)
    if not isinstance(name, str):
        raise ModelNotFoundError(f"no default model for pipeline {pipeline!r} in {DEFAULTS_FILE.name}")
    return name
