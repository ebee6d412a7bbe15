"""The .fdc container: v2 round trip, v1 reading, progressive truncation, every FormatError case."""

import struct
import zlib

import pytest
from fastdiffc import container as fdc
from fastdiffc.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    InvalidFieldError,
    TruncatedError,
    UnknownPipelineError,
    UnsupportedVersionError,
)

DENOISER = fdc.ModelRef("denoiser", "gaussian", 0x0123456789ABCDEF)


def _header(**kw):
    args = dict(pipeline="diffc", models=(DENOISER,), height=512, width=768, channels=3, precision="float32",
                params_version=2, params=b"\x07params")
    args.update(kw)
    return fdc.Header(**args)


SEGMENTS = [b"a" * 300, b"", b"bc" * 70, bytes(range(256)) * 3]


def test_round_trip():
    data = fdc.write(_header(), SEGMENTS)
    assert data[:4] == b"FDC\x02"
    f = fdc.read(data)
    assert f.header == _header() and f.version == 2
    assert list(f.segments) == SEGMENTS
    assert f.complete and f.declared_segments == 4
    assert fdc.read_header(data) == (_header(), [len(s) for s in SEGMENTS])
    assert (f.header.model_name, f.header.model_hash) == ("gaussian", 0x0123456789ABCDEF)


def test_round_trip_several_model_refs():
    refs = (fdc.ModelRef("base", "jpeg", 0, "libjpeg-turbo 3.0.2"),
            fdc.ModelRef("denoiser", "dirac-residual", (1 << 64) - 1),
            fdc.ModelRef("encoder", "cdc-ga", 1), fdc.ModelRef("decoder", "cdc-gs", 2),
            fdc.ModelRef("hyperprior", "cdc-h", 3), fdc.ModelRef("entropy_model", "ü" * 100, 4, "v" * 64))
    for precision in ("float32", "bfloat16", "float64"):
        h = _header(pipeline="dirac", models=refs, precision=precision, params_version=7, params=bytes(range(200)))
        f = fdc.read(fdc.write(h, [b"jpegbytes"]))
        assert f.header == h and f.header.models == refs
        assert f.header.model("base").version == "libjpeg-turbo 3.0.2" and f.header.model("decoder").hash == 2
        assert f.header.model_name == "dirac-residual"  # the denoiser's
    no_denoiser = _header(pipeline="cdc", models=refs[2:4])
    assert fdc.read(fdc.write(no_denoiser, [])).header.model("denoiser") is None
    with pytest.raises(AttributeError, match="no denoiser"):
        _ = no_denoiser.model_name
    assert fdc.read(fdc.write(_header(models=()), [])).header.models == ()


def test_header_fields_exact_at_extremes():
    h = _header(models=(fdc.ModelRef("denoiser", "ü" * 127, (1 << 64) - 1),), height=1, width=(1 << 20),
                channels=1, params=b"", params_version=(1 << 16) - 1)
    assert fdc.read(fdc.write(h, [])).header == h


@pytest.mark.parametrize("kw,match", [
    (dict(precision="float16"), "precision"), (dict(height=0), "height"), (dict(width=(1 << 20) + 1), "width"),
    (dict(channels=2), "channels"), (dict(params_version=0), "params version"),
    (dict(params=bytes(fdc.MAX_PARAMS + 1)), "params"), (dict(models=(DENOISER,) * 17), "model references"),
    (dict(height=True), "height"),
])
def test_header_constructor_checks(kw, match):
    with pytest.raises(ValueError, match=match):
        _header(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(role="vae"), "role"), (dict(name=""), "name"), (dict(name="x" * 256), "name"),
    (dict(hash=-1), "hash"), (dict(hash=1 << 64), "hash"), (dict(version="v" * 65), "version"),
])
def test_model_ref_checks(kw, match):
    args = dict(role="denoiser", name="m", hash=1, version="")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        fdc.ModelRef(**args)


def test_truncate_to_steps_and_sizes():
    data = fdc.write(_header(), SEGMENTS)
    sizes = fdc.step_file_sizes(data)
    assert len(sizes) == len(SEGMENTS) + 1 and sizes[-1] == len(data)
    for k in range(len(SEGMENTS) + 1):
        t = fdc.truncate_to_steps(data, k)
        assert len(t) == sizes[k]
        f = fdc.read(t)
        assert list(f.segments) == SEGMENTS[:k] and f.complete
    with pytest.raises(ValueError):
        fdc.truncate_to_steps(data, 5)


def test_truncated_file_decodes_its_complete_prefix():
    data = fdc.write(_header(), SEGMENTS)
    head = len(data) - sum(map(len, SEGMENTS)) - 4
    for cut, n_complete in [(head, 0), (head + 299, 0), (head + 300, 2), (head + 440, 3), (len(data) - 1, 4)]:
        # (segment 2 is empty, so it is complete as soon as segment 1 is)
        f = fdc.read(data[:cut], allow_truncated=True)
        assert len(f.segments) == n_complete and f.declared_segments == 4
        assert list(f.segments) == SEGMENTS[:n_complete]
        with pytest.raises(TruncatedError):
            fdc.read(data[:cut])
    assert fdc.read(data, allow_truncated=True).complete
    # A truncated file can itself be cut down to a valid complete file.
    assert fdc.read(fdc.truncate_to_steps(data[: head + 440], 3)).segments == tuple(SEGMENTS[:3])


def test_overhead_is_small():
    # 768x512 at 0.25 bpp = 12288 bytes. A realistic DiffC file at that size (README: 16 steps of the
    # default grid, b = 10) whose step sizes grow with λ, DiffC's parameter block with a 5-byte seed, and
    # a model name longer than the shipped "hybrid". Every length above 127 costs a 2-byte varint.
    from fastdiffc.pipelines.diffc import DiffCSettings

    lengths = [2, 9, 30, 80, 160, 290, 430, 600, 780, 950, 1100, 1250, 1400, 1550, 1700, 1850]
    params = DiffCSettings(seed=(1 << 32) + 12345).to_bytes()
    header = _header(models=(fdc.ModelRef("denoiser", "hybrid-unet-gaussian", (1 << 64) - 1),), params=params)
    over = fdc.overhead_bytes(header, lengths)
    assert sum(lengths) + over <= 12288
    assert over / sum(lengths) < 0.01, over
    assert over == len(fdc.write(header, [bytes(n) for n in lengths])) - sum(lengths)


def test_bad_magic():
    data = fdc.write(_header(), SEGMENTS)
    with pytest.raises(BadMagicError):
        fdc.read(b"PNG" + data[3:])
    with pytest.raises(BadMagicError):
        fdc.read(b"\x89PNG\r\n\x1a\n" + bytes(100))


@pytest.mark.parametrize("version", [0, 3, 255])
def test_unsupported_version(version):
    data = bytearray(fdc.write(_header(), SEGMENTS))
    data[3] = version
    with pytest.raises(UnsupportedVersionError, match=f"version {version} is not supported"):
        fdc.read(bytes(data))


def _file(body: bytes, version: int = 2, payload: bytes = b"xyz") -> bytes:
    """A file with this header body, a *valid* header CRC and a valid one-segment payload."""
    out = bytearray(b"FDC" + bytes([version]))
    fdc.put_varint(out, len(body))
    out += body
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out) + payload + struct.pack("<I", zlib.crc32(payload))


def _body(pipeline=1, precision=1, height=(32,), width=(48,), channels=3, n_models=(1,), models=None,
          params_version=(2,), params=b"\x07params", table=(1, 3)) -> bytes:
    """A v2 header body from its fields (varints given as tuples of already-encoded bytes)."""
    if models is None:
        models = bytes([1, 8]) + b"gaussian" + struct.pack("<Q", 5) + bytes([0])
    return (bytes([pipeline, precision, *height, *width, channels, *n_models]) + models
            + bytes([*params_version, len(params)]) + params + bytes(table))


def test_hand_built_body_parses():
    h = fdc.read(_file(_body())).header
    assert h == fdc.Header("diffc", (fdc.ModelRef("denoiser", "gaussian", 5),), 32, 48, 3, "float32", 2, b"\x07params")


@pytest.mark.parametrize("body,error,match", [
    (_body(pipeline=99), UnknownPipelineError, "pipeline id 99"),
    (_body(pipeline=0), UnknownPipelineError, "pipeline id 0"),
    (_body(precision=0), InvalidFieldError, "precision id 0"),
    (_body(precision=9), InvalidFieldError, "precision id 9"),
    (_body(models=bytes([42, 1]) + b"m" + bytes(8) + b"\x00"), InvalidFieldError, "role id 42"),
    (_body(height=(0,)), InvalidFieldError, "height 0"),
    (_body(width=(0x81, 0x80, 0x80, 0x01)), InvalidFieldError, r"width 2097153 is outside 1..1048576"),
    (_body(channels=2), InvalidFieldError, "channels"),
    (_body(n_models=(17,)), InvalidFieldError, "model count 17"),
    (_body(n_models=(3,)), TruncatedError, "3 model references"),
    (_body(models=bytes([1, 0x80, 0x02]) + b"m" * 256 + bytes(9)), InvalidFieldError, "name length 256"),
    (_body(models=bytes([1, 0]) + bytes(9)), InvalidFieldError, "name"),  # empty name
    (_body(models=bytes([1, 2]) + b"\xff\xfe" + bytes(9)), InvalidFieldError, "UTF-8"),
    (_body(models=bytes([1, 1]) + b"m" + bytes(8) + bytes([65]) + b"v" * 65), InvalidFieldError, "version length"),
    (_body(params_version=(0,)), InvalidFieldError, "params version 0"),
    (_body(params_version=(0x80, 0x80, 0x04)), InvalidFieldError, "params version 65536"),
    (_body(params=b"\x07params", table=(200, 1)), TruncatedError, "200 segments"),
    (_body(table=(1, 3, 0)), FormatError, "trailing bytes"),
    (_body(table=(1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F)), FormatError, "varint"),
    (_body()[:-4], TruncatedError, "truncated header body"),
])
def test_reader_rejects_bad_fields(body, error, match):
    with pytest.raises(error, match=match):
        fdc.read(_file(body))


def test_declared_params_length_past_the_end():
    # params length 60000 (<= MAX_PARAMS) with 10 bytes present: a TruncatedError, nothing allocated.
    body = _body()[:-(len(b"\x07params") + 3)] + bytes([0xE0, 0xD4, 0x03]) + bytes(10)
    with pytest.raises(TruncatedError, match="params needs 60000 bytes"):
        fdc.read(_file(body))
    huge = _body()[:-(len(b"\x07params") + 3)] + bytes([0x80, 0x80, 0x80, 0x80, 0x10])
    with pytest.raises(InvalidFieldError, match="params length"):
        fdc.read(_file(huge))


def test_unknown_pipeline_in_constructor():
    with pytest.raises(UnknownPipelineError):
        _header(pipeline="jpeg")


# ---------------------------------------------------------------------------- version 1


def _v1_file(params=b"\x07params\x00", pipeline=1, name=b"gaussian", channels=3, segments=(b"xyz",)):
    body = bytes([pipeline, len(name)]) + name + struct.pack("<Q", 0x0123456789ABCDEF) + bytes([32, 48, channels])
    body += bytes([len(params)]) + params + bytes([len(segments), *map(len, segments)])
    out = bytearray(b"FDC\x01")
    fdc.put_varint(out, len(body))
    out += body
    out += struct.pack("<I", zlib.crc32(out))
    payload = b"".join(segments)
    return bytes(out) + payload + struct.pack("<I", zlib.crc32(payload))


def test_v1_file_reads_into_the_same_header():
    f = fdc.read(_v1_file())
    assert f.version == 1 and f.segments == (b"xyz",)
    assert f.header == fdc.Header("diffc", (DENOISER,), 32, 48, 3, "float32", 1, b"\x07params\x00")
    assert fdc.read(_v1_file(params=b"\x07\x01")).header.precision == "float64"  # DiffC's dtype byte
    # Re-written files are version 2 and keep the version-1 parameter block (so they decode the same).
    again = fdc.truncate_to_steps(_v1_file(), 1)
    assert again[3] == 2 and fdc.read(again).header == f.header


@pytest.mark.parametrize("kw,error,match", [
    (dict(params=b"\x07\x05"), InvalidFieldError, "dtype"),
    (dict(params=b""), InvalidFieldError, "dtype"),
    (dict(pipeline=7), UnknownPipelineError, "7"),
    (dict(channels=4), InvalidFieldError, "channels"),
    (dict(name=b""), InvalidFieldError, "name"),
])
def test_v1_reader_rejects_bad_fields(kw, error, match):
    with pytest.raises(error, match=match):
        fdc.read(_v1_file(**kw))


@pytest.mark.parametrize("cut", [0, 2, 3, 4, 5, 10, 30])
def test_truncated_header(cut):
    data = fdc.write(_header(), SEGMENTS)
    with pytest.raises(TruncatedError):
        fdc.read(data[:cut])
    with pytest.raises(TruncatedError):
        fdc.read(data[:cut], allow_truncated=True)


def test_lengths_past_the_end():
    data = fdc.write(_header(), SEGMENTS)
    with pytest.raises(TruncatedError, match="segment 4 of 4"):
        fdc.read(data[:-10])
    # Declared header length past the end of the data.
    with pytest.raises(TruncatedError):
        fdc.read(b"FDC\x02\xff\x7f" + bytes(20))


def test_checksum_mismatch_header_and_payload():
    data = fdc.write(_header(), SEGMENTS)
    for pos in (8, 20):  # inside the header body
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(ChecksumError, match="header"):
            fdc.read(bytes(bad))
    bad = bytearray(data)
    bad[-50] ^= 0x01  # inside the last segment
    with pytest.raises(ChecksumError, match="payload"):
        fdc.read(bytes(bad))
    with pytest.raises(ChecksumError):
        fdc.read(bytes(bad), allow_truncated=True)  # complete file: CRC still checked


def test_trailing_bytes_rejected():
    data = fdc.write(_header(), SEGMENTS)
    with pytest.raises(FormatError, match="unexpected bytes"):
        fdc.read(data + b"\x00")


@pytest.mark.parametrize("make", [lambda: fdc.write(_header(), SEGMENTS), lambda: _v1_file()])
def test_random_bytes_never_crash(rng, make):
    data = make()
    refused = parsed = 0
    for _ in range(300):
        junk = bytearray(data)
        for p in rng.integers(0, len(junk), size=rng.integers(1, 4)):
            junk[p] = rng.integers(0, 256)
        junk = bytes(junk[: rng.integers(0, len(junk) + 1)])
        try:
            f = fdc.read(junk, allow_truncated=bool(rng.integers(0, 2)))
        except FormatError:  # the documented refusal; anything else fails the test
            refused += 1
            continue
        parsed += 1
        # What parses is self-consistent: never more segments than declared, all inside the data.
        assert len(f.segments) <= f.declared_segments
        assert sum(map(len, f.segments)) <= len(junk)
    assert refused > 0  # the mutations do reach the readers' checks
