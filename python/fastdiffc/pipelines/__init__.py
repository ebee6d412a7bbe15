"""Pipelines (docs/design.md §1): DiffC, DIRAC and CDC, each behind the Codec interface.

`PIPELINES` maps a pipeline name to "module:CodecClass"; modules are imported only when
asked for, so a build without one pipeline (or without its heavy dependencies) still serves
the others. `load_codec(pipeline, model, **settings)` is what `fastdiffc.load_codec` and the
CLI use.
"""

from __future__ import annotations

import importlib

from .base import Codec, Knob

PIPELINES = {
    "diffc": "fastdiffc.pipelines.diffc:DiffCCodec",
    "dirac": "fastdiffc.pipelines.dirac:DiracCodec",
    "cdc": "fastdiffc.pipelines.cdc:CDCCodec",
}


def codec_class(name: str) -> type[Codec]:
    """The Codec subclass of a pipeline, imported on first use.

    ValueError for an unknown name, or for a known pipeline whose module this build lacks.
    """
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    module_name, _, class_name = PIPELINES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # the module exists but one of its imports is missing: a real bug
            raise
        raise ValueError(f"pipeline {name!r} is not implemented in this build") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"pipeline {name!r} is not implemented in this build ({module_name} has no {class_name})")
    return cls


def available_pipelines() -> dict[str, type[Codec]]:
    """{name: Codec class} of the pipelines this build implements, in registry order."""
    out = {}
    for name in PIPELINES:
        try:
            out[name] = codec_class(name)
        except ValueError:
            continue
    return out


def load_codec(pipeline: str = "diffc", model=None, **settings) -> Codec:
    """A Codec for `pipeline` with the named (or given, or default) model."""
    return codec_class(pipeline)(model, **settings)


__all__ = ["Codec", "Knob", "PIPELINES", "available_pipelines", "codec_class", "load_codec"]
