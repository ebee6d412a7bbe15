"""Fuzzing every pipeline's decoder (issue 12; docs/design.md §6, §7): a few thousand seeded cases.

The engine is scripts/fuzz.py (long campaigns run it with worker processes). Here the cases run
in-process on tiny models and images: raw bit flips and truncations, header fields set to edge
values with the header length and both CRC32s recomputed (so the parsers behind the checksums
run), checksum-fixed flips, segment swaps / duplications / drops, model-list edits, truncations
decoded with allow_truncated, version-1 headers, mutated plain base-codec files and wholly random
bytes. Every case must decode to an image of the declared size or raise a documented error (a
`fastdiffc.FormatError` subclass or a ValueError) within HANG_SECONDS; a failure prints the
reproducer (seed, case index, mutation; `python scripts/fuzz.py --replay SEED:INDEX`).
"""

import importlib.util
import io
import json
import os
import signal
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest
from fastdiffc import container
from fastdiffc.codecs import classical
from fastdiffc.codecs.plain import open_plain
from fastdiffc.errors import FormatError
from fastdiffc.pipelines import available_pipelines

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("FASTDIFFC_FUZZ_SEED", "0"))
CASES = int(os.environ.get("FASTDIFFC_FUZZ_CASES", "4000"))


def _load_engine():
    # Imported as a top-level module from scripts/ (on sys.path, which spawned campaign workers inherit),
    # so the workers can import it by name too.
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("fuzz")


fuzz = _load_engine()


@pytest.fixture(scope="module")
def targets():
    return fuzz.build_targets()


def test_every_pipeline_has_a_fuzz_target(targets):
    built, missing = targets
    assert not missing, f"pipelines without a fuzz target (add one to scripts/fuzz.py TARGET_FACTORIES): {missing}"
    assert {t.pipeline for t in built} == set(available_pipelines())


def test_layout_locates_every_field(targets):
    """The field-level mutations rely on Layout: it must re-serialise the valid files byte for byte,
    and a field it writes must be the field the container reads."""
    for t in targets[0]:
        for data in t.files:
            lay = fuzz.Layout.parse(data)
            assert lay.to_bytes() == data, t.name
            lay.height, lay.width, lay.channels = 5, 7, 1
            lay.models[0].hash = 2**64 - 1
            lay.params = lay.params + b"\x01"
            lay.segments = lay.segments[::-1]
            lay.lengths = [None] * len(lay.segments)
            f = container.read(lay.to_bytes())
            h = f.header
            assert (h.height, h.width, h.channels, h.models[0].hash) == (5, 7, 1, 2**64 - 1)
            assert h.params.endswith(b"\x01") and f.segments == tuple(lay.segments)
            start, end, pend = lay.regions()
            raw = lay.to_bytes()
            assert struct.unpack("<I", raw[end:end + 4])[0] == zlib.crc32(raw[:end])
            assert pend + 4 == len(raw)


class Hang(BaseException):
    pass


WALL_LIMIT = fuzz.HANG_SECONDS * 12


def _alarm(signum, frame):
    raise Hang(f"no result after {WALL_LIMIT:g} s of wall time")


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine OpenMP teams spin against other processes, and a
    tiny model call does not need two threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_fuzz_decoders(targets, one_thread):
    """Every case ends OK or in a documented error; none runs longer than HANG_SECONDS of CPU time
    (a loop that never ends burns CPU whatever the machine's load; one that blocks is caught by the
    alarm after HANG_SECONDS x 12 of wall time)."""
    built, _ = targets
    by_name = {t.name: t for t in built}
    summary = fuzz.Summary()
    failures, slow = [], []
    target_kinds = {name: set() for name in by_name}
    old = signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    try:
        for i in range(CASES):
            case = fuzz.make_case(SEED, i, built)
            signal.setitimer(signal.ITIMER_REAL, WALL_LIMIT)  # interrupts Python code only
            try:
                r = fuzz.run_case(case, by_name)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            summary.add(case.describe(), r.outcome, r.kind, r.seconds, r.message)
            target_kinds[case.target].add(r.kind)
            if r.kind not in ("ok", fuzz.DOCUMENTED):
                failures.append((case.describe(), r.outcome, r.message, r.traceback))
            if r.cpu_seconds > fuzz.HANG_SECONDS:
                slow.append((case.describe(), round(r.cpu_seconds, 2)))
    finally:
        signal.signal(signal.SIGALRM, old)
    out = summary.to_json()
    print(f"\nfuzz seed {SEED}: {CASES} cases in {time.perf_counter() - t0:.1f} s")
    print(json.dumps({k: out[k] for k in ("kinds", "counts", "slowest_seconds")}, indent=1))
    report = "\n\n".join(f"{d}\n{o}: {m}\n{tb}" for d, o, m, tb in failures[:5])
    assert not failures, f"{len(failures)} cases broke the error contract; first ones:\n{report}"
    assert not slow, f"cases using more than {fuzz.HANG_SECONDS} s of CPU (hangs): {slow[:5]}"
    # The cases reach every layer: the container's checks behind the CRCs, the pipelines' parameter
    # and model checks, the budgets, the segment decoders, and full decodes.
    counts = out["counts"]
    for outcome in ("ok", "ChecksumError", "TruncatedError", "InvalidFieldError", "UnknownPipelineError",
                    "UnsupportedVersionError", "ModelMismatchError", "DecodeBudgetError", "BadMagicError",
                    "FormatError"):
        assert counts.get(outcome, 0) > 0, f"no case ended in {outcome}: the fuzzer no longer reaches it"
    assert set(out["by_mutation"]) == {m[0] for m in fuzz.MUTATIONS}
    for name, kinds in target_kinds.items():  # every target decodes some mutated files and refuses others
        assert kinds == {"ok", fuzz.DOCUMENTED}, (name, kinds)


@pytest.mark.slow
def test_campaign_workers_survive_crashes_hangs_and_memory_blowups():
    """scripts/fuzz.py's campaign: persistent workers, a crashed or hung one is killed and restarted and
    its case recorded; the memory limit (RLIMIT_AS) turns an oversized allocation into MemoryError."""
    out = fuzz.campaign(12, seed=3, pipelines=["dirac"], mem_mb=256, timeout=5.0,
                        inject={3: "crash", 6: "hang", 9: "memory"}, log=lambda s: None)
    assert out["cases"] == 12 and not out["stopped_early"]
    kinds = out["kinds"]
    assert (kinds.get("crash"), kinds.get("hang"), kinds.get("memory")) == (1, 1, 1), kinds
    assert kinds.get("ok", 0) + kinds.get(fuzz.DOCUMENTED, 0) == 9, kinds
    assert out["worker_restarts"] == 2
    assert {out["first_reproducer"][k]["case"] for k in ("crash", "hang", "memory")} == {3, 6, 9}
    assert "--replay 3:3" in out["first_reproducer"]["crash"]["replay"]


@pytest.mark.skipif(classical.get_codec("heic").unavailable_reason() is not None, reason="no HEIC plugin")
def test_heic_whose_size_changes_on_decode_is_refused():
    """Found by the fuzzer: a corrupt clean-aperture box makes pillow-heif declare 48x32 on open and
    decode 64x32, past the size (and budget) check; DIRAC then returned an image of the wrong size."""
    data = bytearray(classical.get_codec("heic").encode(fuzz.photo(32, 48), 40))
    i = data.find(b"clap")
    assert i > 0
    struct.pack_into(">i", data, i + 20, -144)  # horizontal offset numerator
    from PIL import Image

    assert Image.open(io.BytesIO(bytes(data))).size == (48, 32)
    with pytest.raises(FormatError, match="declares 48x32 pixels but decodes to"):
        open_plain(bytes(data), expect_size=(48, 32))
