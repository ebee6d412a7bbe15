"""Registry of shipped models: python/fastdiffc/weights/*.safetensors, then the retired defaults.

Today's defaults (and the models they depend on) ship in the package's `weights/` folder; a
default replaced by a retrained model moves to the separate `fastdiffc-retired` package
(`retired/` in the repository, import name `fastdiffc_retired`), which `weight_folders` adds to
the search when it is installed, so files written by old defaults keep decoding while the main
wheel stays small (docs/design.md §8). A name in the package's own folder wins over the same
name in the retired one.

A weight file is a model when its safetensors metadata key "fastdiffc_config" holds
JSON with a "class" field; the class picks the loader. The model's name is the file
stem. Loaded models carry `.name` and `.content_hash` — a 64-bit integer, blake2b-64 of
the file's bytes, which bitstreams record so a decoder can refuse a different model.

A "composite" model file (models/composite.py) holds no weights, only its config:

    {"class": "composite", "version": 1, "parts": ["gaussian", "unet"],
     "part_hashes": ["<16 hex>", "<16 hex>"], "switch_logsnr": [0.5]}

Its parts are loaded by name from the composite's own folder (from every default weight folder
when the composite is in one of them: a retired hybrid's gaussian part is today's) and must
still have the
recorded content hashes; otherwise loading refuses (ModelNotFoundError for a missing part,
ModelMismatchError for a changed one), so a bitstream recording the composite's hash — which
covers the part hashes — is never decoded with different parts. `save_composite` writes one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelMismatchError, ModelNotFoundError
from .hashing import content_hash  # noqa: F401  (re-exported: registry.content_hash is public)

CONFIG_KEY = "fastdiffc_config"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
RETIRED_PACKAGE = "fastdiffc-retired"
RETIRED_HINT = (f"retired defaults ship in the separate {RETIRED_PACKAGE} package: `pip install {RETIRED_PACKAGE}`, "
                "or `pip install ./retired` from a source checkout")


def retired_weights_dir() -> Path | None:
    """The weights folder of the installed fastdiffc-retired package, or None when it is not installed."""
    try:
        import fastdiffc_retired
    except ImportError:
        return None
    return Path(fastdiffc_retired.WEIGHTS_DIR)


def weight_folders() -> list[Path]:
    """Where models are looked up by default: the package's weights, then the retired defaults' (if installed)."""
    retired = retired_weights_dir()
    return [WEIGHTS_DIR] if retired is None else [WEIGHTS_DIR, retired]


def _retired_hint(weights_dir) -> str:
    """Appended to a not-found error when the default folders were searched without the retired
    package: the model may be an old default's."""
    return f"; {RETIRED_HINT}" if weights_dir is None and retired_weights_dir() is None else ""


def _load_unet(path):
    from .unet import UNetDenoiser

    return UNetDenoiser.load(path)


def _load_gaussian(path):
    from .gaussian import GaussianDenoiser

    return GaussianDenoiser.load(path)


def _load_composite(path):
    return load_composite(path)


def _load_dirac(path):
    from .residual import ResidualDenoiser

    return ResidualDenoiser.load(path)


def _load_cdc(path):
    from .cdc import CDCModel

    return CDCModel.load(path)


LOADERS = {"unet": _load_unet, "gaussian": _load_gaussian, "composite": _load_composite, "dirac": _load_dirac,
           "cdc": _load_cdc}
COMPOSITE_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    name: str
    cls: str
    path: Path
    size_bytes: int
    config: dict


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
    """Every model file in `weights_dir`, or by default in `weight_folders()` (a name found in an
    earlier folder hides the same name in a later one), sorted by name."""
    folders = [Path(weights_dir)] if weights_dir is not None else weight_folders()
    found: dict[str, ModelInfo] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.safetensors")):
            cfg = _read_metadata(path)
            if cfg is not None and path.stem not in found:
                found[path.stem] = ModelInfo(path.stem, str(cfg["class"]), path, path.stat().st_size, cfg)
    return [found[name] for name in sorted(found)]


def _models_near(folder: Path) -> dict[str, ModelInfo]:
    """The models a composite in `folder` may use as parts, by name: every default folder's when
    `folder` is one of them (a retired hybrid's gaussian part is today's), else `folder`'s."""
    is_default = any(folder.resolve() == d.resolve() for d in weight_folders())
    return {m.name: m for m in (list_models() if is_default else list_models(folder))}


def load_model(name: str, weights_dir=None):
    """Load a shipped model by name (see `fastdiffc models`); raises ModelNotFoundError."""
    models = {m.name: m for m in list_models(weights_dir)}
    info = models.get(name)
    if info is None:
        available = ", ".join(sorted(models)) or "none"
        raise ModelNotFoundError(f"no model named {name!r}; available: {available}{_retired_hint(weights_dir)}")
    loader = LOADERS.get(info.cls)
    if loader is None:
        raise ModelNotFoundError(f"model {name!r} has class {info.cls!r}, which this build cannot load "
                                 f"(known: {', '.join(sorted(LOADERS))})")
    model = loader(info.path)
    model.name = info.name
    model.content_hash = content_hash(info.path)
    return model


def load_model_for_file(name: str, want_hash: int, weights_dir=None):
    """The model a bitstream names: by name if that file still has the recorded hash, else any
    shipped model file (including retired defaults kept under weights/, docs/design.md §8) with
    that content hash. A file written with a model that was replaced keeps decoding as long as
    the old weights ship. Raises ModelNotFoundError (no such name or hash) or ModelMismatchError
    (the name exists with other weights and no file has the recorded hash)."""
    models = {m.name: m for m in list_models(weights_dir)}
    info = models.get(name)
    if info is not None and content_hash(info.path) == want_hash:
        return load_model(name, weights_dir)
    for other in models.values():
        if other.name != name and content_hash(other.path) == want_hash:
            return load_model(other.name, weights_dir)
    hint = _retired_hint(weights_dir)
    if info is None:
        raise ModelNotFoundError(f"no model named {name!r} with hash {_hash_hex(want_hash)} in this install "
                                 f"(available: {', '.join(sorted(models)) or 'none'}){hint}")
    raise ModelMismatchError(f"this install's model {name!r} has hash {_hash_hex(content_hash(info.path))}, "
                             f"the file needs {_hash_hex(want_hash)} (weights that are not shipped here){hint}")


# ----------------------------------------------------------------------------- composite models

def _hash_hex(h: int) -> str:
    return f"{h:016x}"


def composite_config(config: dict) -> tuple[list[str], list[int], tuple[float, ...]]:
    """(parts, part hashes, switch log-SNRs) of a composite model config; ValueError if malformed."""
    from .composite import check_switches

    if config.get("class") != "composite":
        raise ValueError(f"not a composite model config: class={config.get('class')!r}")
    if config.get("version") != COMPOSITE_VERSION:
        raise ValueError(f"unsupported composite model version {config.get('version')!r}")
    parts, hashes = config.get("parts"), config.get("part_hashes")
    if not isinstance(parts, list) or not all(isinstance(p, str) and p for p in parts):
        raise ValueError(f"composite 'parts' must be a list of model names, got {parts!r}")
    if (not isinstance(hashes, list) or len(hashes) != len(parts)
            or not all(isinstance(h, str) and len(h) == 16 and all(c in "0123456789abcdef" for c in h)
                       for h in hashes)):
        raise ValueError(f"composite 'part_hashes' must be one 16-hex-digit hash per part, got {hashes!r}")
    switches = config.get("switch_logsnr")
    if not isinstance(switches, list):
        raise ValueError(f"composite 'switch_logsnr' must be a list, got {switches!r}")
    return parts, [int(h, 16) for h in hashes], check_switches(switches, len(parts))


def _part_info(name: str, folder: Path, models: dict, composite: str) -> ModelInfo:
    info = models.get(name)
    if info is None:
        raise ModelNotFoundError(f"composite model {composite!r} needs part {name!r}, which is not in {folder} "
                                 f"(available: {', '.join(sorted(models)) or 'none'})")
    if info.cls == "composite":
        raise ValueError(f"composite model {composite!r}: part {name!r} is itself a composite (not supported)")
    return info


def _find_part(name: str, want: int, folder: Path, models: dict, composite: str) -> ModelInfo:
    """The part file of a composite: `name` if it still has the recorded hash, else a retired
    copy shipped under another name (e.g. unet-20261122) with that hash; ModelMismatchError otherwise."""
    info = _part_info(name, folder, models, composite)
    got = content_hash(info.path)
    if got == want:
        return info
    retired = next((m for m in models.values() if m.cls != "composite" and content_hash(m.path) == want), None)
    if retired is not None:
        return retired
    raise ModelMismatchError(
        f"composite model {composite!r} was built with part {name!r} of hash {_hash_hex(want)}, but "
        f"{info.path.name} now has hash {_hash_hex(got)}; re-save the composite "
        f"(fastdiffc.models.registry.save_composite, or scripts/make_hybrid.py for 'hybrid')")


def composite_status(info: ModelInfo) -> str:
    """'ok', or why loading the composite `info` would refuse (for listings; never raises)."""
    try:
        parts, hashes, _ = composite_config(info.config)
        models = _models_near(info.path.parent)
        for name, want in zip(parts, hashes):
            try:
                _find_part(name, want, info.path.parent, models, info.name)
            except ModelMismatchError:
                got = content_hash(models[name].path)
                return f"part {name!r} changed ({_hash_hex(got)} != recorded {_hash_hex(want)})"
    except (ValueError, OSError, ModelNotFoundError) as e:
        return str(e)
    return "ok"


def load_composite(path):
    """Load a composite model file: its parts from the same folder, each checked against its recorded hash."""
    from .composite import CompositeDenoiser

    path = Path(path)
    cfg = _read_metadata(path)
    if cfg is None:
        raise ValueError(f"{path}: not a fastdiffc model file")
    parts, hashes, switches = composite_config(cfg)
    folder = path.parent
    models = _models_near(folder)
    loaded = []
    for name, want in zip(parts, hashes):
        part = _find_part(name, want, folder, models, path.stem)
        loaded.append(load_model(part.name, part.path.parent))
    return CompositeDenoiser(loaded, switches, name=path.stem, content_hash=content_hash(path)).eval()


def save_composite(path, parts, switch_logsnr, weights_dir=None, expect_hashes=None) -> int:
    """Write a composite model file: parts[i] (model names) for switch[i-1] <= λ < switch[i].

    The parts are looked up (and their content hashes recorded) in `weights_dir`, by default the
    folder `path` is written to — loading looks for them next to the composite file.
    `expect_hashes` (one int per part, e.g. of the models a switch was measured with) refuses to
    record parts that differ from them (ModelMismatchError). Returns the composite's own content hash.
    """
    from safetensors.torch import save_file

    from .composite import check_switches

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a model file must end in .safetensors, got {path.name}")
    parts = [str(p) for p in parts]
    switches = check_switches(switch_logsnr, len(parts))
    folder = Path(weights_dir) if weights_dir is not None else path.parent
    models = {m.name: m for m in list_models(folder)}
    if path.stem in parts:
        raise ValueError(f"composite {path.stem!r} cannot be one of its own parts")
    found = [content_hash(_part_info(p, folder, models, path.stem).path) for p in parts]
    if expect_hashes is not None:
        for name, got, want in zip(parts, found, expect_hashes, strict=True):
            if got != int(want):
                raise ModelMismatchError(f"part {name!r} in {folder} has hash {_hash_hex(got)}, "
                                         f"not the expected {_hash_hex(int(want))}")
    hashes = [_hash_hex(h) for h in found]
    config = {"class": "composite", "version": COMPOSITE_VERSION, "parts": parts, "part_hashes": hashes,
              "switch_logsnr": list(switches)}
    save_file({}, str(path), metadata={CONFIG_KEY: json.dumps(config, sort_keys=True)})
    return content_hash(path)


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
