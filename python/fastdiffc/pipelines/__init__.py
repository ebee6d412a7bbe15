"""Pipelines (DESIGN §1): DiffC, DIRAC and CDC, each behind the Codec interface.

`load_codec(pipeline, model, **settings)` is what `fastdiffc.load_codec` and the CLI use.
"""

from __future__ import annotations

import importlib

from .base import Codec

PIPELINES = ("diffc", "dirac", "cdc")


def load_codec(pipeline: str = "diffc", model=None, **settings) -> Codec:
    """A Codec for `pipeline` with the named (or given, or default) model."""
    if pipeline == "diffc":
        from .diffc import DiffCCodec

        return DiffCCodec(model, **settings)
    if pipeline in PIPELINES:
        # DIRAC and CDC modules provide `make_codec(model, **settings)` once they exist.
        try:
            mod = importlib.import_module(f"{__name__}.{pipeline}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{pipeline}":
                raise
            mod = None
        if mod is None or not hasattr(mod, "make_codec"):
            raise ValueError(f"pipeline {pipeline!r} is not implemented yet in this build (available: diffc)")
        return mod.make_codec(model, **settings)
    raise ValueError(f"unknown pipeline {pipeline!r}; choose from {', '.join(PIPELINES)}")


__all__ = ["Codec", "PIPELINES", "load_codec"]
