"""Command-line flags generated from the pipelines' knob declarations (docs/design.md §7).

Every knob of every pipeline this build implements becomes one flag (`decode_steps` →
`--decode-steps`); a knob several pipelines declare is one flag whose help names them all.
Values are kept as text and parsed by the chosen pipeline's own Knob, so a bad value or a
flag the pipeline does not have is a one-line error naming the pipeline.
"""

from __future__ import annotations

import argparse


def _declarations(stage: str) -> dict[str, list[tuple[str, object]]]:
    """{knob name: [(pipeline, Knob), ...]} over the implemented pipelines, in declaration order."""
    from ..pipelines import available_pipelines

    out: dict[str, list] = {}
    for pipeline, cls in available_pipelines().items():
        for knob in cls.knobs(stage):
            out.setdefault(knob.name, []).append((pipeline, knob))
    return out


def _help(decls) -> str:
    """Each distinct help text once, followed by the pipelines it applies to and their ranges:
    "... (dirac, cdc: 0..20)" or "... (dirac: 0..20; cdc: 0..50)"."""
    parts: dict[str, dict[str, list[str]]] = {}
    for pipeline, knob in decls:
        rng = knob.describe_range()
        rng = "" if rng in ("any", "true/false") or knob.type is str else rng
        parts.setdefault(knob.help, {}).setdefault(rng, []).append(pipeline)
    out = []
    for text, by_range in parts.items():
        labels = "; ".join(", ".join(ps) + (f": {rng}" if rng else "") for rng, ps in by_range.items())
        out.append(f"{text} ({labels})")
    return "; ".join(out).replace("%", "%%")


def add_knob_flags(parser: argparse.ArgumentParser, stage: str) -> None:
    """Add one flag per declared knob of `stage` (values stay text until a pipeline is known)."""
    group = parser.add_argument_group(f"{stage} knobs (declared by each pipeline)")
    for name, decls in _declarations(stage).items():
        knob = decls[0][1]
        flags = [knob.flag, *("--" + a.replace("_", "-") for a in knob.aliases)]
        kwargs = dict(dest=f"knob_{name}", default=None, help=_help(decls))
        if all(k.type is bool for _, k in decls):
            group.add_argument(*flags, action="store_const", const="true", **kwargs)
        else:
            choices = list(dict.fromkeys(c for _, k in decls for c in k.choices))
            metavar = "{" + ",".join(choices) + "}" if choices else {int: "N", float: "X"}.get(knob.type, "VALUE")
            group.add_argument(*flags, metavar=metavar, **kwargs)


def knobs_for(args: argparse.Namespace, pipeline: str, stage: str) -> dict:
    """The knob values given on the command line, parsed by `pipeline`'s declarations.

    ValueError (one line) for a flag the pipeline does not declare or a value out of range.
    """
    from ..pipelines import codec_class

    cls = codec_class(pipeline)
    own = {k.name: k for k in cls.knobs(stage)}
    out = {}
    for dest, text in vars(args).items():
        if not dest.startswith("knob_") or text is None:
            continue
        name = dest[len("knob_"):]
        knob = own.get(name)
        if knob is None:
            flag = "--" + name.replace("_", "-")
            listed = ", ".join(k.flag for k in own.values()) or "none"
            raise ValueError(f"{flag} does not apply to the {pipeline} pipeline (its {stage} flags: {listed})")
        out[name] = knob.check(True, pipeline) if knob.type is bool else knob.parse(text, pipeline)
    return out
