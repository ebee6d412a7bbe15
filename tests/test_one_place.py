"""One place for each thing (issue 12): formulas and formats that several parts of the package
need are written once and imported, so they cannot drift apart.

- the VP maths (α, σ from sigmoid(λ); the posterior step with expm1): diffusion/vp.py;
- Gaussian rate–distortion theory (Wiener gain, reverse water-filling): diffusion/rd_theory.py;
- PSNR: image_io.psnr (eval.metrics.psnr applies it to RGB pairs);
- DiffC's parameter block: pipelines/diffc_format.py (pipelines/diffc.py keeps the protocol);
- the Gaussian model split by job: gaussian_spectrum (DCT, spectrum, fitting), gaussian (the denoiser).

The checks read the source (code lines, comments stripped), nothing is imported.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "python" / "fastdiffc"


def _code(path: Path) -> str:
    """The source without comments and docstring-like string statements."""
    out = []
    src = path.read_text(encoding="utf-8")
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            continue
        if tok.type == tokenize.STRING and (prev is None or prev.type in (tokenize.INDENT, tokenize.DEDENT,
                                                                          tokenize.NEWLINE, tokenize.NL)):
            continue  # a bare string statement (docstring)
        if tok.type not in (tokenize.NL,):
            out.append(tok.string)
        prev = tok
    return " ".join(out)


SOURCES = {p.relative_to(ROOT).as_posix(): _code(p) for p in sorted(ROOT.rglob("*.py"))}

RULES = [
    # (what, regex over code, the only files allowed to contain it)
    ("α/σ from sigmoid(λ)", r"sigmoid \( -? ?(lam|logsnr|lf|lt)\b", {"diffusion/vp.py"}),
    ("the posterior step's 1 − e^(λs−λt)", r"expm1 \( (lf|lam_from|logsnr_from|lam|lambda)\b", {"diffusion/vp.py"}),
    ("reverse water-filling", r"clamp \( max = theta \)", {"diffusion/rd_theory.py"}),
    ("PSNR", r"log10 \( 255", {"image_io.py"}),
    ("the Wiener gain", r"\( 1 \+ (snr_v|snr4 \* v)\b", set()),
    ("DiffC's parameter block", r"class DiffCSettings", {"pipelines/diffc_format.py"}),
    ("the DCT and the spectrum fit", r"def dct2|def _spectrum_table|class _PatchSource",
     {"models/gaussian_spectrum.py"}),
]


@pytest.mark.parametrize(("what", "pattern", "homes"), RULES, ids=[r[0] for r in RULES])
def test_written_once(what, pattern, homes):
    where = sorted(f for f, code in SOURCES.items() if re.search(pattern, code))
    stray = [f for f in where if f not in homes]
    assert not stray, f"{what} is written outside {sorted(homes) or 'its home'}: {stray}"


def test_diffc_protocol_keeps_no_serialisation():
    code = SOURCES["pipelines/diffc.py"]
    assert not re.search(r"def (to|from)_bytes|struct \. (un)?pack|put_varint", code)


def test_public_names_still_import():
    from fastdiffc.eval.metrics import psnr as eval_psnr
    from fastdiffc.image_io import psnr
    from fastdiffc.models.gaussian import GaussianDenoiser, dct2  # noqa: F401
    from fastdiffc.models.registry import content_hash
    from fastdiffc.models.unet import file_content_hash
    from fastdiffc.pipelines.diffc import PARAMS_VERSION, DiffCSettings  # noqa: F401
    from fastdiffc.pipelines.diffc_format import DiffCSettings as S

    assert DiffCSettings is S
    assert content_hash is file_content_hash.__globals__["content_hash"]
    import numpy as np

    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 10
    assert psnr(a, b) == eval_psnr(a, b)


def test_no_dead_native_helpers():
    """Every device/host helper of csrc/rng and csrc/rcc is used somewhere (the dead Philox SoA
    path is gone; the C++, CUDA and numpy paths share one Philox)."""
    csrc = ROOT.parents[1] / "csrc"
    texts = {p: p.read_text(encoding="utf-8") for p in csrc.rglob("*") if p.suffix in (".h", ".cpp", ".cu")}
    everything = "\n".join(texts.values())
    unused = []
    for p in (q for q in texts if q.parent.name in ("rng", "rcc") and q.suffix == ".h"):
        for name in re.findall(r"FASTDIFFC_HD\s+(?:inline\s+)?[\w:<>]+\s+(\w+)\s*\(", texts[p]):
            if len(re.findall(rf"\b{name}\b", everything)) < 2:
                unused.append(f"{p.relative_to(csrc)}: {name}")
    assert not unused, f"unused native helpers: {unused}"
