"""What every pipeline's codec offers (docs/design.md §7): declared knobs, the Codec interface,
and how a model identifies itself in a file.

A pipeline declares its settings once, as `Knob`s; the Python API checks them, and the CLI
flags, `fastdiffc info` and the docs are generated from the same declarations, so they
cannot drift apart.
"""

from __future__ import annotations

import math
import numbers
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch

STAGES = ("rate", "decode")
_TYPE_WORDS = {int: "an integer", float: "a number", str: "one of", bool: "true or false"}


@dataclass(frozen=True)
class Knob:
    """One user-facing setting of a pipeline.

    `stage` "rate" knobs go to `compress` (they choose the file size), "decode" knobs to
    `decompress` (they change the reconstruction of the same file). `default` None means
    "not set" (the pipeline decides). `aliases` are older names that keep working.
    """

    name: str
    type: type
    stage: str
    help: str
    default: object = None
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    aliases: tuple[str, ...] = ()
    # A rate knob that sets the file size (DiffC steps, DIRAC quality) cannot be combined with
    # bpp; one that only picks how (DIRAC's base codec) can: `--base avif --bpp 0.15`.
    sets_size: bool = True

    def __post_init__(self):
        if self.type not in _TYPE_WORDS:
            raise TypeError(f"knob {self.name}: type must be int, float, str or bool, not {self.type!r}")
        if self.stage not in STAGES:
            raise ValueError(f"knob {self.name}: stage must be 'rate' or 'decode', not {self.stage!r}")
        if self.choices and self.type is not str:
            raise ValueError(f"knob {self.name}: choices are for str knobs")

    @property
    def flag(self) -> str:
        """The CLI flag: --decode-steps for decode_steps."""
        return "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        if self.type is str:
            return ", ".join(self.choices)
        if self.type is bool:
            return "true/false"
        lo = "" if self.minimum is None else f"{self.minimum:g}"
        hi = "" if self.maximum is None else f"{self.maximum:g}"
        if self.type is int and lo and hi:
            return f"{lo}..{hi}"
        if lo and hi:
            return f"[{lo}, {hi}]"
        return f">= {lo}" if lo else f"<= {hi}" if hi else "any"

    def check(self, value, pipeline: str = ""):
        """`value` coerced to the knob's type and range-checked; None stays None (not set).

        ValueError("dirac knob decode_steps must be an integer in 0..20, got -5") otherwise.
        """
        if value is None:
            return None
        out = self._coerce(value)
        ok = out is not None
        if ok and self.type in (int, float):
            ok = (math.isfinite(out) and (self.minimum is None or out >= self.minimum)
                  and (self.maximum is None or out <= self.maximum))
        elif ok and self.choices:
            ok = out in self.choices
        if not ok:
            rng = self.describe_range()
            what = _TYPE_WORDS[self.type]
            if self.type is str and self.choices:
                what += f" {rng}"
            elif self.type in (int, float) and rng != "any":
                what += f" {rng}" if rng[0] in "<>" else f" in {rng}"
            prefix = f"{pipeline} knob" if pipeline else "knob"
            raise ValueError(f"{prefix} {self.name} must be {what}, got {value!r}")
        return out

    def parse(self, text: str, pipeline: str = ""):
        """A value from command-line text ("5", "0.25", "flow"), checked like `check`."""
        value = text
        if self.type in (int, float):
            try:
                value = self.type(text)
            except (TypeError, ValueError):
                value = text  # check() reports it with the knob's range
        return self.check(value, pipeline)

    def _coerce(self, value):
        """The value as the knob's type, or None if it is not one (bools are not numbers here;
        an integral float such as 5.0 is accepted for an int knob, 2.5 is not)."""
        if self.type in (bool, str):
            return value if isinstance(value, self.type) else None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        if self.type is float:
            return float(value)
        if isinstance(value, numbers.Integral):
            return int(value)
        return int(value) if float(value).is_integer() else None


BPP = Knob(
    "bpp", float, "rate", minimum=0.0,
    help="size ceiling in bits per pixel: the file is the largest one of at most bpp*H*W/8 bytes "
         "(an error names the smallest achievable bpp if none fits)",
)


class Codec(ABC):
    """A pipeline behind one interface: `compress(image, *, bpp=None, **rate_knobs) -> bytes`,
    `decompress(data, **decode_knobs) -> PIL.Image`.

    Subclasses set `pipeline` and declare `rate_knobs` (besides `bpp`, which every pipeline
    has) and `decode_knobs`; they run `check_knobs` on what they are given. `bpp` is a
    ceiling for every pipeline: the file is the largest the pipeline can make whose size is
    <= bpp·H·W/8 bytes; if even the smallest does not fit, compress raises ValueError naming
    the smallest achievable bpp. A rate knob given together with bpp is an error.

    Constructors take `(model=None, **settings)`; every codec accepts `progress: bool` (a
    progress bar) and, for encoding, `seed: int` (the shared seed written into the file), as
    the CLI passes both.
    """

    pipeline: ClassVar[str] = ""
    rate_knobs: ClassVar[tuple[Knob, ...]] = ()
    decode_knobs: ClassVar[tuple[Knob, ...]] = ()

    @abstractmethod
    def compress(self, image, *, bpp: float | None = None, **rate_knobs) -> bytes: ...

    @abstractmethod
    def decompress(self, data: bytes, **decode_knobs): ...

    @classmethod
    def knobs(cls, stage: str) -> tuple[Knob, ...]:
        """The declared knobs of a stage; "rate" includes `bpp` first."""
        if stage == "rate":
            return (BPP, *cls.rate_knobs)
        if stage == "decode":
            return tuple(cls.decode_knobs)
        raise ValueError(f"stage must be 'rate' or 'decode', got {stage!r}")

    @classmethod
    def check_knobs(cls, stage: str, kwargs: dict) -> dict:
        """{knob name: checked value or its default} for every knob of `stage`.

        Aliases map to their knob; an unknown name, a name given twice (as itself and an
        alias) or a rate knob set together with bpp raises ValueError naming the pipeline.
        """
        knobs = cls.knobs(stage)
        by_name = {k.name: k for k in knobs}
        by_name.update({a: k for k in knobs for a in k.aliases})
        out = {k.name: k.default for k in knobs}
        given = {}  # knob name -> checked value, for the knobs the caller set (not None)
        seen = set()
        for name, value in kwargs.items():
            knob = by_name.get(name)
            if knob is None:
                raise ValueError(cls._unknown_knob(stage, name))
            if knob.name in seen:
                raise ValueError(f"{cls.pipeline} knob {knob.name} given twice (as {knob.name} and an alias)")
            seen.add(knob.name)
            checked = knob.check(value, cls.pipeline)
            if checked is not None:
                given[knob.name] = out[knob.name] = checked
        if stage == "rate" and "bpp" in given:
            clash = [name for name in given if name != "bpp" and by_name[name].sets_size]
            if clash:
                raise ValueError(f"give either bpp or {', '.join(clash)}, not both (each sets the size of "
                                 f"a {cls.pipeline} file)")
        return out

    @classmethod
    def _unknown_knob(cls, stage: str, name: str) -> str:
        own = ", ".join(k.name for k in cls.knobs(stage)) or "none"
        other = "decode" if stage == "rate" else "rate"
        if any(name == k.name or name in k.aliases for k in cls.knobs(other)):
            where = "decompress" if other == "decode" else "compress"
            return f"{name} is a {other} knob of the {cls.pipeline} pipeline: give it to {where}, not here"
        return f"{name} is not a knob of the {cls.pipeline} pipeline (its {stage} knobs: {own})"

    @classmethod
    def describe_params(cls, header) -> dict:
        """The pipeline's parameter block as plain JSON-able values, for `fastdiffc info`.

        The default shows the raw bytes; pipelines override it with their own decoding.
        """
        return {"params_version": header.params_version, "params_hex": header.params.hex()}


# ------------------------------------------------------------------------------ resource budgets

GIB = 1 << 30
BUDGET_ENV = {"max_pixels": "FASTDIFFC_MAX_PIXELS", "max_model_calls": "FASTDIFFC_MAX_MODEL_CALLS",
              "max_memory_gb": "FASTDIFFC_MAX_MEMORY_GB"}


@dataclass(frozen=True)
class Budget:
    """Resource bounds for one compress or decompress call, checked from the input image or the
    file's header *before* any large allocation (docs/design.md §6, §10).

    - `max_pixels`: image pixels (H·W). 2^26 = 64 Mpx by default.
    - `max_model_calls`: model forward calls (DiffC: transmitted steps + reconstruction solver
      calls; a tiled call counts once). 2000 by default (a default DiffC decode makes ≈ 50).
    - `max_memory_gb`: the estimated peak memory of the call in GiB (model activations from
      `models.resources`, plus the pipeline's full-size tensors). 6 GiB by default: a 12 Mpx
      photo with the default tiling needs ≈ 2.5.

    Codecs take them as settings (`load_codec("diffc", max_memory_gb=16)`); the CLI has global
    flags `--max-pixels`, `--max-model-calls`, `--max-memory-gb`, which set the environment
    variables FASTDIFFC_MAX_PIXELS / _MAX_MODEL_CALLS / _MAX_MEMORY_GB that `Budget.default()` reads.
    A refusal is a `BudgetError` (encoding, a ValueError) or `DecodeBudgetError` (decoding, a
    FormatError) naming the limit and the setting that raises it.
    """

    max_pixels: int = 1 << 26
    max_model_calls: int = 2000
    max_memory_gb: float = 6.0

    def __post_init__(self):
        for name in ("max_pixels", "max_model_calls"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.max_memory_gb
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"max_memory_gb must be a positive number, got {v!r}")

    @classmethod
    def default(cls, pipeline_defaults: dict | None = None, **overrides) -> Budget:
        """The defaults — the class's, then a pipeline's own (`pipeline_defaults`, e.g. a lower
        max_pixels for a model with larger activations) — with the FASTDIFFC_MAX_* environment
        variables applied, then `overrides` (None values ignored)."""
        values = dict(pipeline_defaults or {})
        for name, env in BUDGET_ENV.items():
            text = os.environ.get(env)
            if text:
                try:
                    values[name] = float(text) if name == "max_memory_gb" else int(text)
                except ValueError:
                    raise ValueError(f"{env} must be a number, got {text!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @staticmethod
    def _error(decoding: bool):
        from ..errors import BudgetError, DecodeBudgetError

        return DecodeBudgetError if decoding else BudgetError

    @staticmethod
    def _how(name: str) -> str:
        return f"raise it with {name}=... (CLI --{name.replace('_', '-')})"

    def check_pixels(self, height: int, width: int, *, decoding: bool) -> None:
        n = int(height) * int(width)
        if n > self.max_pixels:
            what = "the file declares" if decoding else "the image is"
            raise self._error(decoding)(f"{what} {width}x{height} = {n:,} pixels, more than the budget's "
                                        f"max_pixels={self.max_pixels:,}; {self._how('max_pixels')}")

    def check_model_calls(self, calls: int, what: str, *, decoding: bool) -> None:
        if calls > self.max_model_calls:
            raise self._error(decoding)(f"{what} needs {calls:,} model calls, more than the budget's "
                                        f"max_model_calls={self.max_model_calls:,}; {self._how('max_model_calls')}")

    def check_memory(self, nbytes: int, what: str, *, decoding: bool, hint: str = "") -> None:
        if nbytes > self.max_memory_gb * GIB:
            raise self._error(decoding)(f"{what} needs an estimated {nbytes / GIB:.2f} GiB of memory, more than the "
                                        f"budget's max_memory_gb={self.max_memory_gb:g}; {self._how('max_memory_gb')}"
                                        + (f" ({hint})" if hint else ""))


def read_own_file(data: bytes, pipeline: str, params_version: int | tuple[int, ...], budget: Budget):
    """Read an .fdc file that `pipeline` (one parameter-block version, or any of a tuple) must
    decode, checking the pipeline, the parameter-block version and the declared pixels against
    `budget` before anything is decoded. Returns container.FdcFile."""
    from ..container import read
    from ..errors import UnknownPipelineError, UnsupportedVersionError

    f = read(data)
    h = f.header
    if h.pipeline != pipeline:
        raise UnknownPipelineError(f"this file was written by the {h.pipeline!r} pipeline; "
                                   f"use load_codec({h.pipeline!r})")
    versions = params_version if isinstance(params_version, tuple) else (params_version,)
    if h.params_version not in versions:
        raise UnsupportedVersionError(f"{pipeline.upper()} parameter block version {h.params_version} is not "
                                      f"supported (this build reads version {', '.join(map(str, versions))})")
    budget.check_pixels(h.height, h.width, decoding=True)
    return f


def shared_normals(seed: int, domain: int, shape, stream: int = 0) -> torch.Tensor:
    """Standard normals of `shape` (float32) that sender and receiver draw alike: the Philox
    stream `rcc.normal_stream(seed, domain, ·, stream)` (docs/design.md §11 lists the domains)."""
    from .. import rcc

    n = math.prod(int(d) for d in shape)
    return torch.from_numpy(rcc.normal_stream(seed, domain, n, stream=stream)).reshape(tuple(shape))


def checked_seed(seed) -> int:
    """The shared seed a file records: an unsigned 64-bit integer (ValueError otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an unsigned 64-bit integer, got {seed!r}")
    return int(seed)


def resolve_model(ref, given=None, given_name: str | None = None, kind: str | None = None,
                  cache: dict | None = None):
    """The model for a file's model reference `ref` (container.ModelRef): the caller's model
    object `given` or registry name `given_name` if one was passed, else the shipped model with
    the recorded name and content hash (a retired default is found by its hash). A model whose
    hash differs is refused (ModelMismatchError); one this install lacks is a MissingModelError
    naming what the file needs. `cache` (a codec's dict) keeps shipped models found by
    (name, hash), so decoding many files loads each model once."""
    from ..errors import MissingModelError, ModelMismatchError, ModelNotFoundError
    from ..models.registry import load_model, load_model_for_file

    if given is None and given_name is None:
        key = (ref.name, ref.hash)
        if cache is not None and key in cache:
            return _check_kind(cache[key], ref, kind)
        try:
            model = load_model_for_file(ref.name, ref.hash)
        except ModelNotFoundError as e:
            raise MissingModelError(f"this file needs model {ref.name!r} (hash {ref.hash:016x}), which this "
                                    f"install lacks ({e})") from None
        if cache is not None:
            cache[key] = model
        return _check_kind(model, ref, kind)
    model = given if given is not None else load_model(given_name)
    name, h = model_identity(model)
    if h != ref.hash:
        raise ModelMismatchError(f"the file was written with model {ref.name!r} (hash {ref.hash:016x}); "
                                 f"the given model is {name!r} (hash {h:016x})")
    return _check_kind(model, ref, kind)


def _check_kind(model, ref, kind: str | None):
    from ..errors import InvalidFieldError

    if kind is not None and getattr(model, "kind", None) != kind:
        raise InvalidFieldError(f"model {ref.name!r} named by the file is not a {kind} model")
    return model


def model_identity(model) -> tuple[str, int]:
    """(name, 64-bit content hash) of a model, as written into and checked against .fdc headers.

    The registry sets `.name` and `.content_hash` (an int; a Gaussian model built in memory
    derives it from its parameters). A `content_hash` that is a hex string or a method
    returning one is reduced to its first 64 bits, so other in-memory models can be used too.
    """
    name = getattr(model, "name", None) or type(model).__name__
    h = getattr(model, "content_hash", None)
    if callable(h):
        h = h()
    if isinstance(h, str):
        h = int(h[:16], 16)
    if not isinstance(h, int):
        raise ValueError(f"model {name!r} has no content hash: load it with fastdiffc.load_model or set .content_hash")
    return str(name), h & ((1 << 64) - 1)


@contextmanager
def model_threads():
    """Run model calls with a fixed intra-op thread count when FASTDIFFC_MODEL_THREADS is set.

    The encoder's bytes depend on the model's output x̂0 (the decoder's entropy decoding
    never does: it needs integers only). Model outputs are *not* thread-count invariant: one
    call of the shipped DiffC model differs by up to ~4e-6 between 1 and 2 torch threads
    (convolutions and GroupNorm reduce in a thread-dependent order), which can flip an RCC
    candidate choice. So the same bytes are guaranteed for the same thread count, and for any
    thread count when FASTDIFFC_MODEL_THREADS pins the model calls (docs/design.md §11;
    tests/test_determinism.py). By default the thread count is left alone (speed).
    """
    n = os.environ.get("FASTDIFFC_MODEL_THREADS")
    if not n:
        with torch.inference_mode():
            yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(old)
