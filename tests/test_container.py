"""The .fdc container: round trip, progressive truncation, every FormatError case."""

import struct
import zlib

import pytest
from fastdiffc import container as fdc
from fastdiffc.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    TruncatedError,
    UnknownPipelineError,
    UnsupportedVersionError,
)


def _header(**kw):
    args = dict(pipeline="diffc", model_name="gaussian", model_hash=0x0123456789ABCDEF, height=512, width=768,
                channels=3, params=b"\x07params")
    args.update(kw)
    return fdc.Header(**args)


SEGMENTS = [b"a" * 300, b"", b"bc" * 70, bytes(range(256)) * 3]


def test_round_trip():
    data = fdc.write(_header(), SEGMENTS)
    f = fdc.read(data)
    assert f.header == _header()
    assert list(f.segments) == SEGMENTS
    assert f.complete and f.declared_segments == 4
    assert fdc.read_header(data) == (_header(), [len(s) for s in SEGMENTS])


def test_header_fields_exact_at_extremes():
    h = _header(model_hash=(1 << 64) - 1, height=1, width=(1 << 20), channels=1, model_name="ü" * 10, params=b"")
    assert fdc.read(fdc.write(h, [])).header == h


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
    # 768x512 at 0.25 bpp = 12288 payload bytes, e.g. 25 steps of ~490 bytes, DiffC-sized params.
    lengths = [491] * 25
    over = fdc.overhead_bytes(_header(model_name="unet-diffc-small", params=bytes(24)), lengths)
    assert over / sum(lengths) < 0.01


def test_bad_magic():
    data = fdc.write(_header(), SEGMENTS)
    with pytest.raises(BadMagicError):
        fdc.read(b"PNG" + data[3:])
    with pytest.raises(BadMagicError):
        fdc.read(b"\x89PNG\r\n\x1a\n" + bytes(100))


def test_unsupported_version():
    data = bytearray(fdc.write(_header(), SEGMENTS))
    data[3] = 2
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        fdc.read(bytes(data))


def _rewrite_header(mutate):
    """A file whose header body was changed by `mutate(bytearray)` with a *valid* header CRC."""
    data = fdc.write(_header(), [b"xyz"])
    r = fdc.Reader(data, 4)
    n = r.varint("len")
    body = bytearray(data[r.pos : r.pos + n])
    mutate(body)
    out = bytearray(b"FDC\x01")
    fdc.put_varint(out, len(body))
    out += body
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out) + b"xyz" + struct.pack("<I", zlib.crc32(b"xyz"))


def test_unknown_pipeline():
    def mutate(body):
        body[0] = 99

    with pytest.raises(UnknownPipelineError, match="99"):
        fdc.read(_rewrite_header(mutate))
    with pytest.raises(UnknownPipelineError):
        _header(pipeline="jpeg")


def test_malformed_header_fields():
    with pytest.raises(FormatError, match="channels"):
        bad_channels = (b"\x03\x07\x07params", b"\x05\x07\x07params")
        fdc.read(_rewrite_header(lambda b: b.__setitem__(slice(None), b.replace(*bad_channels))))
    with pytest.raises(TruncatedError):
        fdc.read(_rewrite_header(lambda b: b.__delitem__(slice(-3, None))))


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
        fdc.read(b"FDC\x01\xff\x7f" + bytes(20))


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


def test_random_bytes_never_crash(rng):
    data = fdc.write(_header(), SEGMENTS)
    for _ in range(300):
        junk = bytearray(data)
        for p in rng.integers(0, len(junk), size=rng.integers(1, 4)):
            junk[p] = rng.integers(0, 256)
        junk = bytes(junk[: rng.integers(0, len(junk) + 1)])
        try:
            fdc.read(junk, allow_truncated=bool(rng.integers(0, 2)))
        except FormatError:
            pass
