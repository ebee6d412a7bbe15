"""What an RD sweep compares: classical codecs and fastdiffc pipelines, behind one interface.

A contender turns one image into RD points: for every (curve, setting) not yet finished it
yields a `Trial` (the curve's label, the exact stored bytes' length and the decoded
reconstruction). A contender draws one or more curves (`names`): one per value of a decode
knob given several values, e.g. `dirac:decode_steps=0+8+20` → dirac-avif-s0, -s8, -s20,
all decoded from the same files.

- `ClassicalContender`: one Pillow codec over its settings (quality or target bpp).
- `ProgressivePipeline` (DiffC): one encode at the top rate; every lower rate is a
  prefix of whole steps. When the codec offers `prefix_files(image, data, steps, **knobs)`
  (DiffC: the files `compress(steps=k)` would write — the same segments, each with the output
  filter the encoder fits for k steps), the points are those files and their decodes, from one
  replay; else the prefix is `fastdiffc.container.truncate_to_steps` (whose length is the
  rate), decoded by one replay when the codec offers `decompress_progressive(data, steps,
  **decode_knobs)`, else prefix by prefix.
  The top-rate bitstream is cached in the report folder so a resumed sweep never
  re-encodes. encode_s of every point is the time of that one top-rate encode.
- `RatePipeline` (DIRAC, CDC): one encode per setting (a base quality, a fixed knob value
  or a target bpp), cached like DiffC's; every decode variant decodes that one file, and the
  decode_steps values of a codec with `decompress_steps` come from one sampling run.

Contender specs (`--pipelines`), validated against the pipeline's declared knobs
(`fastdiffc.pipelines.codec_class(name).knobs(stage)`) before anything is loaded:

    NAME[@MODEL][:KNOB=VALUE[+VALUE...]]...      e.g. diffc@hybrid:method=denoise
                                                      dirac:base=avif:decode_steps=0+8+20
                                                      cdc:level=1+2+3:decode_steps=4
    NAME[@MODEL][:METHOD]                        legacy: diffc:flow = diffc:method=flow

MODEL is a registry name or a .safetensors file (a training checkpoint; labelled by its stem).

What the rate axis is (the `setting` column):
- DiffC (progressive): step prefixes `steps=K` of one encode (`steps=` values or --steps;
  the encode's rate `bpp=` or --pipeline-bpp).
- a knob that sets the size given values (`quality=20+50+80`, `level=1+2`): those values;
  `bpp=...`: those ceilings;
- else a pipeline with a `quality` knob (DIRAC) sweeps its base codec's qualities (--qualities
  or the classical default), setting `q=Q` — the same base files, byte for byte, as the base
  codec's own curve at `q=Q` (DIRAC adds only its header);
- else the bpp ceilings of --rates.
A rate knob that does not set the size (DIRAC's `base`) given several values makes one
contender per value.

Curve labels (the `codec` column): NAME[@MODEL], then `-VALUE` for `base` and `method`
(always shown, default included), `-sN` for decode_steps (always shown), and `-KNOBVALUE`
for any other knob given in the spec (e.g. `-recon_steps8`), in declaration order:
diffc-flow, diffc@hybrid-denoise, dirac-avif-s0, dirac@x-jpeg-s20, cdc-s4.

Pipelines are loaded through the public `fastdiffc.load_codec` API; a pipeline that fails
to load (or one this build does not implement) raises `PipelineUnavailableError` with the
reason, which the sweep reports and skips. An unknown pipeline or knob, or a bad value, is a
ValueError (a usage error).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..codecs.classical import DEFAULT_QUALITIES, DEFAULT_RATES, ClassicalCodec, format_setting

# Step counts decoded from a progressive stream when none are given: every step up to 32
# (a default DiffC stream has at most 32, and a coarse grid turns the concave RD curve
# into chords that understate it), then geometric for long custom grids.
DEFAULT_STEP_GRID: tuple[int, ...] = (*range(1, 33), 40, 48, 64, 96, 128, 192, 256, 384, 512)
# Rate of the single encode of a progressive pipeline when no step list is given.
DEFAULT_PROGRESSIVE_BPP = 1.0
# Pipelines whose bitstream decodes from any prefix of whole steps (docs/design.md §4).
PROGRESSIVE_PIPELINES = ("diffc",)
# A stream with more steps than this is not a DiffC stream we know how to sweep.
_MAX_STEPS = 100_000
# Knobs always shown in a curve label (with their default when not given), and their prefix.
LABEL_ALWAYS = ("base", "method", "decode_steps")
LABEL_PREFIX = {"base": "", "method": "", "decode_steps": "s"}
# Setting-column names of rate knobs ("q=50" like the classical codecs' quality settings).
SETTING_NAME = {"quality": "q"}
SPEC_SYNTAX = "NAME[@MODEL][:KNOB=VALUE[+VALUE...]]..."


class PipelineUnavailableError(RuntimeError):
    """A fastdiffc pipeline could not be loaded (missing module, weights, bad name…)."""


@dataclass
class Trial:
    """One RD point before metrics: setting label, stored bytes, reconstruction, timings.

    `codec`: the curve the point belongs to (None = the contender's only curve, its name)."""

    setting: str
    nbytes: int
    reconstruction: Image.Image
    encode_s: float
    decode_s: float
    codec: str | None = None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _done(done, label: str) -> set[str] | frozenset:
    """The finished settings of curve `label`: `done` maps labels to sets; a plain set is the
    finished settings of a single-curve contender."""
    if isinstance(done, (set, frozenset)):
        return done
    return done.get(label, frozenset())


class ClassicalContender:
    """A classical codec over a list of settings."""

    def __init__(self, codec: ClassicalCodec, settings: Sequence[float] | None = None):
        self.codec = codec
        self.name = codec.name
        self.names = (codec.name,)
        self.description = codec.description
        self.descriptions = {codec.name: codec.description}
        self.settings = tuple(codec.default_settings if settings is None else settings)
        if not self.settings:
            raise ValueError(f"{codec.name}: empty settings list")

    def pending(self, image_key: str, done, cache_dir: Path | None) -> bool:
        return any(self.codec.setting_label(s) not in _done(done, self.name) for s in self.settings)

    def run(self, image: Image.Image, image_key: str, done, cache_dir: Path | None) -> Iterator[Trial]:
        for setting in self.settings:
            label = self.codec.setting_label(setting)
            if label in _done(done, self.name):
                continue
            t0 = time.perf_counter()
            data = self.codec.encode(image, setting)
            t1 = time.perf_counter()
            recon = self.codec.decode(data)
            t2 = time.perf_counter()
            yield Trial(label, len(data), recon, t1 - t0, t2 - t1)


@dataclass(frozen=True)
class Variant:
    """One curve of a pipeline contender: its label and the decode knobs that make it."""

    label: str
    knobs: Mapping[str, object] = field(default_factory=dict)


def _rgb(image, name: str) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name}: decompress returned {type(image).__name__}, expected a PIL image")
    return image.convert("RGB")


def encoding_model_hash(codec) -> int | None:
    """Content hash of the model a fastdiffc pipeline codec encodes with now (None: no model,
    e.g. a classical codec, whose name says it all)."""
    current = getattr(codec, "model_for_encoding", None)
    if current is None:
        return None
    from ..pipelines.base import model_identity

    return model_identity(current())[1]


def _cached_stream(codec, path: Path | None) -> bytes | None:
    """The stream cached at `path`, if it was written with the model the codec encodes with now.

    After a retrained default takes a model's name, a stream cached by an earlier run names the
    retired model's hash and would decode through it (found by hash), so its points would be the
    old model's under today's label; such a stream is encoded anew."""
    if path is None or not path.exists():
        return None
    data = path.read_bytes()
    h = encoding_model_hash(codec)
    if h is None:
        return data
    from .. import container
    from ..errors import FormatError

    try:
        refs = container.read(data).header.models
    except FormatError:
        return None  # unreadable: encode again rather than fail the sweep
    return data if any(ref.hash == h for ref in refs) else None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # an interrupted run never leaves half a stream


class _PipelineBase:
    def __init__(self, name: str, codec, *, method: str | None = None, variants: Sequence[Variant] | None = None,
                 description: str | None = None, cache_name: str | None = None):
        self.codec = codec
        if variants is None:
            variants = [Variant(name, {} if method is None else {"method": method})]
        if not variants:
            raise ValueError(f"{name}: no curve to draw")
        labels = [v.label for v in variants]
        if len(set(labels)) != len(labels):
            raise ValueError(f"{name}: two curves share a label: {labels}")
        self.variants = tuple(variants)
        self.name = name  # the contender (progress messages, failures)
        self.names = tuple(labels)
        self.cache_name = cache_name or name
        self.description = description or name
        self.descriptions = {v.label: self.description + _describe_knobs(v.knobs) for v in self.variants}

    def _decode(self, data: bytes, knobs: Mapping[str, object]) -> Image.Image:
        return _rgb(self.codec.decompress(data, **dict(knobs)), self.name)


def _describe_knobs(knobs: Mapping[str, object]) -> str:
    return "".join(f", {k}={v}" for k, v in knobs.items())


class ProgressivePipeline(_PipelineBase):
    """A progressive pipeline (DiffC): one top-rate encode, RD points from its step prefixes.

    steps: the prefix lengths to decode (those beyond the stream's step count are
    ignored); default `DEFAULT_STEP_GRID` plus the full stream. The encode targets
    `max_bpp`, or `max(steps)` steps when a step list is given. Every variant (decode
    knobs, e.g. method=flow / denoise) decodes the same stream. `rate_knobs`: compress knobs that
    choose how, not how big (DiffC's `scheme`). `legacy_cache_names`: older cache names of that
    stream (a report made before variants shared it).
    """

    def __init__(self, name: str, codec, truncate: Callable[[bytes, int], bytes], *, method: str | None = None,
                 steps: Sequence[int] | None = None, max_bpp: float = DEFAULT_PROGRESSIVE_BPP,
                 description: str | None = None, variants: Sequence[Variant] | None = None,
                 cache_name: str | None = None, legacy_cache_names: Sequence[str] = (),
                 rate_knobs: Mapping[str, object] | None = None):
        super().__init__(name, codec, method=method, variants=variants, description=description,
                         cache_name=cache_name)
        self.truncate = truncate
        if steps is not None:
            steps = sorted({int(k) for k in steps})
            if not steps or steps[0] < 1:
                raise ValueError(f"{name}: step counts must be positive integers, got {steps}")
        self.steps = steps
        if not max_bpp > 0:
            raise ValueError(f"{name}: the top rate must be positive, got {max_bpp}")
        self.max_bpp = max_bpp
        self.legacy_cache_names = tuple(legacy_cache_names)
        self.rate_knobs = dict(rate_knobs or {})

    def _cache_path(self, image_key: str, cache_dir: Path | None) -> Path | None:
        # Named after the encode target: a later run with another --steps/--pipeline-bpp encodes
        # anew. Its prefixes equal the old ones (rate control only decides where to stop).
        if cache_dir is None:
            return None
        target = f"steps{self.steps[-1]}" if self.steps is not None else f"bpp{format_setting(self.max_bpp)}"
        stem = _safe(Path(image_key).stem)
        path = cache_dir / f"{stem}.{_safe(self.cache_name)}.{target}.fdc"
        if not path.exists():
            for old in self.legacy_cache_names:
                legacy = cache_dir / f"{stem}.{_safe(old)}.{target}.fdc"
                if legacy.exists():
                    return legacy
        return path

    def _encode(self, image: Image.Image) -> bytes:
        if self.steps is not None:
            return self.codec.compress(image, steps=self.steps[-1], **self.rate_knobs)
        return self.codec.compress(image, bpp=self.max_bpp, **self.rate_knobs)

    def _total_steps(self, data: bytes) -> int:
        """Number of whole steps in the stream: the first prefix length that is the whole stream."""
        for k in range(1, _MAX_STEPS + 1):
            try:
                prefix = self.truncate(data, k)
            except ValueError:  # asked for more steps than the stream holds
                return k - 1
            if len(prefix) >= len(data):
                return k
        raise ValueError(f"{self.name}: stream has more than {_MAX_STEPS} steps")

    def _planned(self, total: int) -> list[int]:
        grid = self.steps if self.steps is not None else [*DEFAULT_STEP_GRID, total]
        return sorted({k for k in grid if 1 <= k <= total})

    @staticmethod
    def _label(k: int) -> str:
        return f"steps={k}"

    def pending(self, image_key: str, done, cache_dir: Path | None) -> bool:
        data = _cached_stream(self.codec, self._cache_path(image_key, cache_dir))
        if data is None:
            return True
        planned = self._planned(self._total_steps(data))
        return any(self._label(k) not in _done(done, v.label) for v in self.variants for k in planned)

    def run(self, image: Image.Image, image_key: str, done, cache_dir: Path | None) -> Iterator[Trial]:
        path = self._cache_path(image_key, cache_dir)
        encode_s = math.nan  # a cached stream was timed in an earlier run
        data = _cached_stream(self.codec, path)
        if data is None:
            t0 = time.perf_counter()
            data = self._encode(image)
            encode_s = time.perf_counter() - t0
            if path is not None:
                _atomic_write(path, data)
        total = self._total_steps(data)
        if total < 1:
            raise ValueError(f"{self.name}: the encoded stream holds no complete step")
        for variant in self.variants:
            missing = [k for k in self._planned(total) if self._label(k) not in _done(done, variant.label)]
            if missing:
                yield from self._run_variant(image, data, variant, missing, encode_s)

    def _run_variant(self, image: Image.Image, data: bytes, variant: Variant, missing: list[int],
                     encode_s: float) -> Iterator[Trial]:
        make_files = getattr(self.codec, "prefix_files", None)
        if callable(make_files):
            # The per-rate files themselves (exact: the sender is prefix-consistent), from one replay.
            how = {k: v for k, v in self.rate_knobs.items() if k != "scheme"}  # the stream holds its scheme
            t0 = time.perf_counter()
            files = make_files(image, data, missing, **how, **dict(variant.knobs))
            decode_s = (time.perf_counter() - t0) / len(missing)
            for k in missing:
                file, recon = files[k]
                yield Trial(self._label(k), len(file), _rgb(recon, self.name), encode_s, decode_s, variant.label)
            return
        replay_all = getattr(self.codec, "decompress_progressive", None)
        if callable(replay_all):
            # One replay of the steps serves every prefix (decoding each prefix separately
            # would replay steps 1..k again for every k); the time is shared out evenly.
            t0 = time.perf_counter()
            recons = replay_all(data, missing, **dict(variant.knobs))
            decode_s = (time.perf_counter() - t0) / len(missing)
            for k in missing:
                yield Trial(self._label(k), len(self.truncate(data, k)), _rgb(recons[k], self.name), encode_s,
                            decode_s, variant.label)
            return
        for k in missing:
            prefix = self.truncate(data, k)
            t0 = time.perf_counter()
            recon = self._decode(prefix, variant.knobs)
            # The encode time is that of the whole top-rate stream (all prefixes share it).
            yield Trial(self._label(k), len(prefix), recon, encode_s, time.perf_counter() - t0, variant.label)


@dataclass(frozen=True)
class RateSetting:
    """One point of a non-progressive pipeline's rate axis: its `setting` text and compress knobs."""

    label: str
    knobs: Mapping[str, object]


class RatePipeline(_PipelineBase):
    """A non-progressive pipeline: one encode per setting, decoded by every variant.

    settings: the rate axis (default: `rates` as bpp ceilings, `bpp=X`); rate_knobs: compress
    knobs common to every setting (DIRAC's base). The encoded file of each (image, setting) is
    cached in the report folder (a resumed sweep decodes the missing variants without
    re-encoding). The decode_steps values of the variants that differ only in decode_steps
    come from one `decompress_steps(data, steps)` run when the codec has it; each point's
    decode_s is then that run's time × (k+1)/(K+1) for k of K steps (the model calls of k steps).
    """

    def __init__(self, name: str, codec, *, method: str | None = None, rates: Sequence[float] | None = None,
                 settings: Sequence[RateSetting] | None = None, rate_knobs: Mapping[str, object] | None = None,
                 variants: Sequence[Variant] | None = None, description: str | None = None,
                 cache_name: str | None = None):
        super().__init__(name, codec, method=method, variants=variants, description=description,
                         cache_name=cache_name)
        if settings is None:
            rates = tuple(DEFAULT_RATES if rates is None else rates)
            if not rates or min(rates) <= 0:
                raise ValueError(f"{name}: target rates must be positive, got {rates}")
            settings = [RateSetting(f"bpp={format_setting(b)}", {"bpp": b}) for b in rates]
        if not settings:
            raise ValueError(f"{name}: empty settings list")
        self.settings = tuple(settings)
        self.rates = tuple(s.knobs["bpp"] for s in self.settings if "bpp" in s.knobs)
        self.rate_knobs = dict(rate_knobs or {})

    def _cache_path(self, image_key: str, setting: RateSetting, cache_dir: Path | None) -> Path | None:
        if cache_dir is None:
            return None
        return cache_dir / f"{_safe(Path(image_key).stem)}.{_safe(self.cache_name)}.{_safe(setting.label)}.fdc"

    def pending(self, image_key: str, done, cache_dir: Path | None) -> bool:
        return any(s.label not in _done(done, v.label) for s in self.settings for v in self.variants)

    def run(self, image: Image.Image, image_key: str, done, cache_dir: Path | None) -> Iterator[Trial]:
        for setting in self.settings:
            missing = [v for v in self.variants if setting.label not in _done(done, v.label)]
            if not missing:
                continue
            path = self._cache_path(image_key, setting, cache_dir)
            encode_s = math.nan  # a cached file was timed in an earlier run
            data = _cached_stream(self.codec, path)
            if data is None:
                t0 = time.perf_counter()
                data = self.codec.compress(image, **self.rate_knobs, **dict(setting.knobs))
                encode_s = time.perf_counter() - t0
                if path is not None:
                    _atomic_write(path, data)
            yield from self._decode_variants(data, setting.label, missing, encode_s)

    def _decode_variants(self, data: bytes, setting: str, variants: list[Variant], encode_s: float) -> Iterator[Trial]:
        one_run = getattr(self.codec, "decompress_steps", None)
        by_steps = [v for v in variants if set(v.knobs) == {"decode_steps"}]
        if callable(one_run) and len(by_steps) > 1:
            steps = [int(v.knobs["decode_steps"]) for v in by_steps]
            t0 = time.perf_counter()
            recons = one_run(data, steps)
            total_s = time.perf_counter() - t0
            top = max(steps)
            for v, k in zip(by_steps, steps):
                yield Trial(setting, len(data), _rgb(recons[k], self.name), encode_s, total_s * (k + 1) / (top + 1),
                            v.label)
            variants = [v for v in variants if v not in by_steps]
        for v in variants:
            t0 = time.perf_counter()
            recon = self._decode(data, v.knobs)
            yield Trial(setting, len(data), recon, encode_s, time.perf_counter() - t0, v.label)


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ContenderSpec:
    """A parsed (not yet validated) pipeline spec: knob values are the spec's text."""

    text: str
    name: str
    model: str | None
    knobs: tuple[tuple[str, tuple[str, ...]], ...]  # (knob name as written, values), in spec order

    @property
    def prefix(self) -> str:
        return self.name + (f"@{self.model}" if self.model else "")


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec checked against its pipeline's knobs: canonical knob names → checked values."""

    spec: ContenderSpec
    cls: type
    rate: dict  # knob name -> tuple of values (bpp included)
    decode: dict

    @property
    def name(self) -> str:
        return self.spec.name


def _bad_spec(text: str, why: str = "") -> ValueError:
    return ValueError(f"bad pipeline spec {text!r}{': ' + why if why else ''}; expected {SPEC_SYNTAX}, "
                      "e.g. diffc@hybrid:method=denoise or dirac:base=avif:decode_steps=0+8+20")


def parse_contender_spec(text: str) -> ContenderSpec:
    """"dirac@m:base=avif:decode_steps=0+8" → ContenderSpec(name="dirac", model="m", knobs=(("base", ("avif",)),
    ("decode_steps", ("0", "8")))); a bare segment is the legacy METHOD ("diffc:flow" = method=flow)."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_]+)(?:@([^:]+))?((?::[^:]*)*)\s*", text)
    if not m:
        raise _bad_spec(text)
    knobs: dict[str, tuple[str, ...]] = {}
    for segment in m.group(3).split(":")[1:]:
        if not segment.strip():
            raise _bad_spec(text, "empty segment")
        key, sep, values = segment.partition("=")
        if not sep:  # legacy NAME:METHOD
            key, values = "method", segment
        key = key.strip().replace("-", "_")
        if not key.isidentifier():
            raise _bad_spec(text, f"{key!r} is not a knob name")
        parts = tuple(v.strip() for v in values.split("+"))
        if not all(parts):
            raise _bad_spec(text, f"empty value for {key}")
        if key in knobs:
            raise _bad_spec(text, f"{key} given twice")
        knobs[key] = parts
    return ContenderSpec(text.strip(), m.group(1).lower(), (m.group(2) or "").strip() or None, tuple(knobs.items()))


def parse_pipeline_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Legacy: "diffc@gaussian:flow" → (pipeline, model, method)."""
    parsed = parse_contender_spec(spec)
    knobs = dict(parsed.knobs)
    if set(knobs) - {"method"} or len(knobs.get("method", ("",))) != 1:
        raise _bad_spec(spec, "expected NAME[@MODEL][:METHOD]")
    return parsed.name, parsed.model, knobs.get("method", (None,))[0]


def _find_knob(cls, name: str):
    for stage in ("rate", "decode"):
        for knob in cls.knobs(stage):
            if name == knob.name or name in knob.aliases:
                return knob
    return None


def _parse_value(knob, text: str, pipeline: str):
    if knob.type is bool:
        word = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower(), text)
        return knob.check(word, pipeline)
    return knob.parse(text, pipeline)


def resolve_spec(spec: ContenderSpec | str, cls: type | None = None) -> ResolvedSpec:
    """Check every knob of a spec against the pipeline's declarations (no model is loaded).

    ValueError: unknown pipeline, unknown knob (naming the pipeline's knobs), bad value, a size
    knob with bpp, two size knobs. `PipelineUnavailableError`: a known pipeline this build lacks.
    """
    if isinstance(spec, str):
        spec = parse_contender_spec(spec)
    if cls is None:
        from ..pipelines import PIPELINES, codec_class

        if spec.name not in PIPELINES:
            raise ValueError(f"pipeline spec {spec.text!r}: unknown pipeline {spec.name!r}; "
                             f"known: {', '.join(PIPELINES)}")
        try:
            cls = codec_class(spec.name)
        except ValueError as e:
            raise PipelineUnavailableError(f"pipeline {spec.text!r} unavailable: {e}") from None
    stages: dict[str, dict] = {"rate": {}, "decode": {}}
    for key, texts in spec.knobs:
        knob = _find_knob(cls, key)
        if knob is None:
            rate = ", ".join(k.name for k in cls.knobs("rate")) or "none"
            decode = ", ".join(k.name for k in cls.knobs("decode")) or "none"
            bare = key == "method" and f":{texts[0]}" in spec.text and f"method={texts[0]}" not in spec.text
            what = f"{texts[0]!r} (a bare METHOD, i.e. method={texts[0]}): method" if bare else key
            raise ValueError(f"pipeline spec {spec.text!r}: {what} is not a knob of the {spec.name} pipeline "
                             f"(rate knobs: {rate}; decode knobs: {decode})")
        if knob.name in stages[knob.stage]:
            raise ValueError(f"pipeline spec {spec.text!r}: {knob.name} given twice (as itself and an alias)")
        try:
            values = tuple(dict.fromkeys(_parse_value(knob, t, spec.name) for t in texts))
        except ValueError as e:
            raise ValueError(f"pipeline spec {spec.text!r}: {e}") from None
        stages[knob.stage][knob.name] = values
    rate_decl = {k.name: k for k in cls.knobs("rate")}
    sizing = [n for n, k in rate_decl.items() if n in stages["rate"] and k.sets_size]
    if len(sizing) > 1:
        raise ValueError(f"pipeline spec {spec.text!r}: give one of {', '.join(sizing)}, not several (each sets "
                         f"the size of a {spec.name} file)")
    return ResolvedSpec(spec, cls, stages["rate"], stages["decode"])


def _format_value(value) -> str:
    if isinstance(value, float):
        return format_setting(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _label_part(knob, value, given: bool) -> str:
    if knob.name in LABEL_ALWAYS:
        if value is None:
            return ""
        return "-" + LABEL_PREFIX[knob.name] + _format_value(value)
    if not given:
        return ""
    if knob.type is bool:
        return f"-{knob.name}" if value else f"-no_{knob.name}"
    return f"-{knob.name}{_format_value(value)}"


def decode_variants(resolved: ResolvedSpec, prefix: str) -> list[Variant]:
    """One Variant per combination of the decode knob values (labels as in the module doc)."""
    combos: list[tuple[str, dict]] = [(prefix, {})]
    for knob in resolved.cls.knobs("decode"):
        given = knob.name in resolved.decode
        values = resolved.decode.get(knob.name, (knob.default,))
        if not given and knob.name not in LABEL_ALWAYS:
            continue
        out = []
        for label, knobs in combos:
            for value in values:
                extra = {knob.name: value} if value is not None else {}
                out.append((label + _label_part(knob, value, given), {**knobs, **extra}))
        combos = out
    return [Variant(label, knobs) for label, knobs in combos]


def rate_settings(resolved: ResolvedSpec, *, rates: Sequence[float] | None, qualities: Sequence[int] | None,
                  base: str | None) -> list[RateSetting]:
    """The rate axis of a non-progressive pipeline (see the module doc)."""
    decl = {k.name: k for k in resolved.cls.knobs("rate")}
    sized = [n for n in resolved.rate if decl[n].sets_size]
    if sized:
        name = sized[0]
        short = "bpp" if name == "bpp" else SETTING_NAME.get(name, name)
        return [RateSetting(f"{short}={_format_value(v)}", {name: v}) for v in resolved.rate[name]]
    if "quality" in decl:
        if qualities is None:
            qualities = DEFAULT_QUALITIES
            if base is not None:
                from ..codecs.classical import CODECS

                codec = CODECS.get(base)
                if codec is not None and codec.setting_name == "q":
                    qualities = codec.default_settings
                elif base == "cdc":  # the learned base: every level of the shipped CDC model
                    from ..codecs.learned import cdc_levels
                    from ..models.registry import default_model_name, load_model

                    qualities = tuple(range(cdc_levels(load_model(default_model_name("cdc")))))
        knob = decl["quality"]
        return [RateSetting(f"q={_format_value(q)}", {"quality": knob.check(q, resolved.name)}) for q in qualities]
    rates = tuple(DEFAULT_RATES if rates is None else rates)
    return [RateSetting(f"bpp={format_setting(b)}", {"bpp": b}) for b in rates]


def _model_label(model: str) -> str:
    """How a model appears in a curve label: its name, or a model file's stem."""
    return Path(model).stem if model.endswith(".safetensors") else model


def resolve_model_ref(model: str | None):
    """What `load_codec` gets for NAME@MODEL: the registry name, or the model loaded from a
    .safetensors file path (e.g. a training run's checkpoint, dirac@runs/dirac/ema.safetensors)."""
    if model is None or not model.endswith(".safetensors"):
        return model
    from ..models.registry import load_model

    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"no model file {model}")
    return load_model(path.stem, weights_dir=path.parent)


def load_contenders(spec: str, *, steps: Sequence[int] | None = None, rates: Sequence[float] | None = None,
                    qualities: Sequence[int] | None = None, max_bpp: float = DEFAULT_PROGRESSIVE_BPP,
                    options: Mapping[str, object] | None = None, load_codec: Callable | None = None,
                    truncate: Callable[[bytes, int], bytes] | None = None, cls: type | None = None) -> list:
    """The contenders of a pipeline spec (one, or one per value of a non-size rate knob such as
    DIRAC's base), each drawing one curve per decode variant.

    The spec is checked first (`resolve_spec`: ValueError for a usage error); then the codec is
    loaded through `load_codec(name, model, **options)` and, when it can load its model ahead of
    use (`model_for_encoding`), the model too, so missing weights are reported before the sweep
    starts (PipelineUnavailableError). `cls`: the codec class whose knobs validate the spec
    (default: the registered pipeline's).
    """
    resolved = resolve_spec(spec, cls)
    name, model = resolved.spec.name, resolved.spec.model
    progressive = name in PROGRESSIVE_PIPELINES
    if progressive and "max_steps" in resolved.decode:
        raise ValueError(f"pipeline spec {resolved.spec.text!r}: the sweep decodes step prefixes itself; "
                         "give steps=K+K+... (rate) instead of max_steps")
    if progressive and len(resolved.rate.get("bpp", (0,))) != 1:
        raise ValueError(f"pipeline spec {resolved.spec.text!r}: {name} is progressive: give one bpp "
                         "(the rate of the encode whose prefixes make the curve) or steps=K+K+...")
    decl = {k.name: k for k in resolved.cls.knobs("rate")}
    # Rate knobs that only choose how (not how big): one contender per value.
    how = [k for k in decl.values() if not k.sets_size]
    combos: list[dict] = [{}]
    for knob in how:
        values = resolved.rate.get(knob.name)
        if values is None:
            if knob.name not in LABEL_ALWAYS or knob.default is None:
                continue
            values = (knob.default,)
        combos = [{**c, knob.name: v} for c in combos for v in values]
    try:
        if load_codec is None:
            from .. import load_codec
        codec = load_codec(name, resolve_model_ref(model), **dict(options or {}))
        probe = getattr(codec, "model_for_encoding", None)
        if callable(probe):
            probe()
        if progressive and truncate is None:
            from ..container import truncate_to_steps as truncate
    except Exception as e:  # noqa: BLE001 — any failure to load means "skip this pipeline"
        raise PipelineUnavailableError(f"pipeline {resolved.spec.text!r} unavailable: {type(e).__name__}: {e}") from e
    out = []
    for fixed in combos:
        prefix = name + (f"@{_model_label(model)}" if model else "")
        for knob in how:
            if knob.name in fixed:
                prefix += _label_part(knob, fixed[knob.name], knob.name in resolved.rate)
        variants = decode_variants(resolved, prefix)
        description = f"fastdiffc {name}" + (f", model {model}" if model else "") + _describe_knobs(fixed)
        if progressive:
            step_list = resolved.rate.get("steps", steps)
            bpp = resolved.rate.get("bpp")
            legacy = [v.label for v in variants]  # before variants shared a stream, each cached its own
            out.append(ProgressivePipeline(prefix, codec, truncate, steps=step_list,
                                           max_bpp=bpp[0] if bpp else max_bpp, description=description,
                                           variants=variants, cache_name=prefix, legacy_cache_names=legacy,
                                           rate_knobs=fixed))
        else:
            settings = rate_settings(resolved, rates=rates, qualities=qualities, base=fixed.get("base"))
            out.append(RatePipeline(prefix, codec, settings=settings, rate_knobs=fixed, variants=variants,
                                    description=description, cache_name=prefix))
    return out


def load_pipeline(spec: str, **kwargs):
    """The one contender of a spec (`load_contenders`); ValueError if the spec makes several."""
    found = load_contenders(spec, **kwargs)
    if len(found) != 1:
        raise ValueError(f"pipeline spec {spec!r} makes {len(found)} contenders; use load_contenders")
    return found[0]
