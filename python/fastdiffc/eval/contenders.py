"""What an RD sweep compares: classical codecs and fastdiffc pipelines, behind one interface.

A contender turns one image into RD points: for every setting not yet finished it
yields a `Trial` (the exact stored bytes' length and the decoded reconstruction).

- `ClassicalContender`: one Pillow codec over its settings (quality or target bpp).
- `ProgressivePipeline` (DiffC): one encode at the top rate; every lower rate is a
  prefix of whole steps (`fastdiffc.container.truncate_to_steps`, whose length is the
  rate). The reconstructions come from one replay of the steps when the codec offers
  `decompress_progressive(data, steps, method=...)`, else from decoding each prefix.
  The top-rate bitstream is cached in the report folder so a resumed sweep never
  re-encodes. encode_s of every point is the time of that one top-rate encode.
- `RatePipeline` (DIRAC, CDC): one encode per target bpp.

Pipelines are loaded by `load_pipeline("name[@model][:method]")` through the public
`fastdiffc.load_codec` API; a pipeline that fails to load raises `PipelineUnavailableError`
with the reason, which the sweep reports and skips.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .codecs import DEFAULT_RATES, ClassicalCodec, format_setting

# Step counts decoded from a progressive stream when none are given: every step up to 32
# (a default DiffC stream has at most 32, and a coarse grid turns the concave RD curve
# into chords that understate it), then geometric for long custom grids.
DEFAULT_STEP_GRID: tuple[int, ...] = (*range(1, 33), 40, 48, 64, 96, 128, 192, 256, 384, 512)
# Rate of the single encode of a progressive pipeline when no step list is given.
DEFAULT_PROGRESSIVE_BPP = 1.0
# Pipelines whose bitstream decodes from any prefix of whole steps (DESIGN §4).
PROGRESSIVE_PIPELINES = ("diffc",)
# A stream with more steps than this is not a DiffC stream we know how to sweep.
_MAX_STEPS = 100_000


class PipelineUnavailableError(RuntimeError):
    """A fastdiffc pipeline could not be loaded (missing module, weights, bad name…)."""


@dataclass
class Trial:
    """One RD point before metrics: setting label, stored bytes, reconstruction, timings."""

    setting: str
    nbytes: int
    reconstruction: Image.Image
    encode_s: float
    decode_s: float


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class ClassicalContender:
    """A classical codec over a list of settings."""

    def __init__(self, codec: ClassicalCodec, settings: Sequence[float] | None = None):
        self.codec = codec
        self.name = codec.name
        self.description = codec.description
        self.settings = tuple(codec.default_settings if settings is None else settings)
        if not self.settings:
            raise ValueError(f"{codec.name}: empty settings list")

    def pending(self, image_key: str, done: set[str], cache_dir: Path | None) -> bool:
        return any(self.codec.setting_label(s) not in done for s in self.settings)

    def run(self, image: Image.Image, image_key: str, done: set[str], cache_dir: Path | None) -> Iterator[Trial]:
        for setting in self.settings:
            label = self.codec.setting_label(setting)
            if label in done:
                continue
            t0 = time.perf_counter()
            data = self.codec.encode(image, setting)
            t1 = time.perf_counter()
            recon = self.codec.decode(data)
            t2 = time.perf_counter()
            yield Trial(label, len(data), recon, t1 - t0, t2 - t1)


class _PipelineBase:
    def __init__(self, name: str, codec, *, method: str | None = None, description: str | None = None):
        self.name = name
        self.codec = codec
        self.method = method
        self.description = description or name

    def _decode(self, data: bytes) -> Image.Image:
        if self.method is None:
            image = self.codec.decompress(data)
        else:
            image = self.codec.decompress(data, method=self.method)
        if not isinstance(image, Image.Image):
            raise TypeError(f"{self.name}: decompress returned {type(image).__name__}, expected a PIL image")
        return image.convert("RGB")


class ProgressivePipeline(_PipelineBase):
    """A progressive pipeline (DiffC): one top-rate encode, RD points from its step prefixes.

    steps: the prefix lengths to decode (those beyond the stream's step count are
    ignored); default `DEFAULT_STEP_GRID` plus the full stream. The encode targets
    `max_bpp`, or `max(steps)` steps when a step list is given.
    """

    def __init__(self, name: str, codec, truncate: Callable[[bytes, int], bytes], *, method: str | None = None,
                 steps: Sequence[int] | None = None, max_bpp: float = DEFAULT_PROGRESSIVE_BPP,
                 description: str | None = None):
        super().__init__(name, codec, method=method, description=description)
        self.truncate = truncate
        if steps is not None:
            steps = sorted({int(k) for k in steps})
            if not steps or steps[0] < 1:
                raise ValueError(f"{name}: step counts must be positive integers, got {steps}")
        self.steps = steps
        if not max_bpp > 0:
            raise ValueError(f"{name}: the top rate must be positive, got {max_bpp}")
        self.max_bpp = max_bpp

    def _cache_path(self, image_key: str, cache_dir: Path | None) -> Path | None:
        # Named after the encode target: a later run with another --steps/--pipeline-bpp encodes
        # anew. Its prefixes equal the old ones (rate control only decides where to stop).
        target = f"steps{self.steps[-1]}" if self.steps is not None else f"bpp{format_setting(self.max_bpp)}"
        if cache_dir is None:
            return None
        return cache_dir / f"{_safe(Path(image_key).stem)}.{_safe(self.name)}.{target}.fdc"

    def _encode(self, image: Image.Image) -> bytes:
        if self.steps is not None:
            return self.codec.compress(image, steps=self.steps[-1])
        return self.codec.compress(image, bpp=self.max_bpp)

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

    def pending(self, image_key: str, done: set[str], cache_dir: Path | None) -> bool:
        path = self._cache_path(image_key, cache_dir)
        if path is None or not path.exists():
            return True
        planned = self._planned(self._total_steps(path.read_bytes()))
        return any(self._label(k) not in done for k in planned)

    def run(self, image: Image.Image, image_key: str, done: set[str], cache_dir: Path | None) -> Iterator[Trial]:
        path = self._cache_path(image_key, cache_dir)
        encode_s = math.nan  # a cached stream was timed in an earlier run
        if path is not None and path.exists():
            data = path.read_bytes()
        else:
            t0 = time.perf_counter()
            data = self._encode(image)
            encode_s = time.perf_counter() - t0
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)  # atomic: an interrupted run never leaves half a stream
        total = self._total_steps(data)
        if total < 1:
            raise ValueError(f"{self.name}: the encoded stream holds no complete step")
        missing = [k for k in self._planned(total) if self._label(k) not in done]
        if not missing:
            return
        replay_all = getattr(self.codec, "decompress_progressive", None)
        if callable(replay_all):
            # One replay of the steps serves every prefix (decoding each prefix separately
            # would replay steps 1..k again for every k); the time is shared out evenly.
            kwargs = {} if self.method is None else {"method": self.method}
            t0 = time.perf_counter()
            recons = replay_all(data, missing, **kwargs)
            decode_s = (time.perf_counter() - t0) / len(missing)
            for k in missing:
                yield Trial(self._label(k), len(self.truncate(data, k)), recons[k].convert("RGB"), encode_s, decode_s)
            return
        for k in missing:
            prefix = self.truncate(data, k)
            t0 = time.perf_counter()
            recon = self._decode(prefix)
            # The encode time is that of the whole top-rate stream (all prefixes share it).
            yield Trial(self._label(k), len(prefix), recon, encode_s, time.perf_counter() - t0)


class RatePipeline(_PipelineBase):
    """A non-progressive pipeline: one encode per target rate (bpp)."""

    def __init__(self, name: str, codec, *, method: str | None = None, rates: Sequence[float] | None = None,
                 description: str | None = None):
        super().__init__(name, codec, method=method, description=description)
        self.rates = tuple(DEFAULT_RATES if rates is None else rates)
        if not self.rates or min(self.rates) <= 0:
            raise ValueError(f"{name}: target rates must be positive, got {self.rates}")

    @staticmethod
    def _label(bpp: float) -> str:
        return f"bpp={format_setting(bpp)}"

    def pending(self, image_key: str, done: set[str], cache_dir: Path | None) -> bool:
        return any(self._label(b) not in done for b in self.rates)

    def run(self, image: Image.Image, image_key: str, done: set[str], cache_dir: Path | None) -> Iterator[Trial]:
        for bpp in self.rates:
            label = self._label(bpp)
            if label in done:
                continue
            t0 = time.perf_counter()
            data = self.codec.compress(image, bpp=bpp)
            t1 = time.perf_counter()
            recon = self._decode(data)
            yield Trial(label, len(data), recon, t1 - t0, time.perf_counter() - t1)


def parse_pipeline_spec(spec: str) -> tuple[str, str | None, str | None]:
    """"diffc", "diffc:ancestral", "diffc@gaussian:flow" → (pipeline, model, method)."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_]+)(?:@([^:]+))?(?::([A-Za-z0-9_]+))?\s*", spec)
    if not m:
        raise ValueError(f"bad pipeline spec {spec!r}; expected NAME[@MODEL][:METHOD], e.g. diffc:flow")
    return m.group(1).lower(), m.group(2), m.group(3)


def load_pipeline(spec: str, *, steps: Sequence[int] | None = None, rates: Sequence[float] | None = None,
                  max_bpp: float = DEFAULT_PROGRESSIVE_BPP, options: Mapping[str, object] | None = None,
                  load_codec: Callable | None = None, truncate: Callable[[bytes, int], bytes] | None = None):
    """A contender for a pipeline spec NAME[@MODEL][:METHOD] (PipelineUnavailableError if it cannot load).

    DiffC decodes with `flow` unless another method is named; its label (the `codec`
    column) is e.g. "diffc-flow" or "diffc@gaussian-flow". `options` are passed to
    `load_codec` as pipeline settings (e.g. bits_per_chunk). The model is loaded here
    when the codec can do so ahead of use (`model_for_encoding`), so missing weights
    are reported before the sweep starts.
    """
    name, model, method = parse_pipeline_spec(spec)
    progressive = name in PROGRESSIVE_PIPELINES
    if progressive and method is None:
        method = "flow"
    label = name + (f"@{model}" if model else "") + (f"-{method}" if method else "")
    try:
        if load_codec is None:
            from .. import load_codec
        codec = load_codec(name, model, **dict(options or {}))
        probe = getattr(codec, "model_for_encoding", None)
        if callable(probe):
            probe()
        if progressive and truncate is None:
            from ..container import truncate_to_steps as truncate
    except Exception as e:  # noqa: BLE001 — any failure to load means "skip this pipeline"
        raise PipelineUnavailableError(f"pipeline {spec!r} unavailable: {type(e).__name__}: {e}") from e
    description = f"fastdiffc {name}" + (f", model {model}" if model else "")
    description += f", {method} decoding" if method else ""
    if progressive:
        return ProgressivePipeline(label, codec, truncate, method=method, steps=steps, max_bpp=max_bpp,
                                   description=description)
    return RatePipeline(label, codec, method=method, rates=rates, description=description)
