"""DiffC with the tree codebook (RCC scheme `tree`, parameter block version 4; issue 15): bit-exact
round trips, progressive prefixes, the golden v4 bitstream, the new fields' validation, and the
older versions (a v3 file written before version 4 existed) still decoding to their pixels.

Models and images as in test_diffc.py: PixelGaussian (exact, so the golden file pins the pipeline,
RCC and container) and the analytic Gaussian photo model on a 32x48 crop of the sample photo.
"""

import hashlib
import json

import numpy as np
import pytest
import torch
from fastdiffc import container, entropy
from fastdiffc.errors import FormatError, InvalidFieldError, TruncatedError
from fastdiffc.image_io import psnr
from fastdiffc.pipelines import diffc
from fastdiffc.pipelines.diffc import DiffCCodec, DiffCSettings
from fastdiffc.pipelines.diffc_format import FILTER_PARAMS_VERSION, SCHEME_DEFAULTS, TREE_PARAMS_VERSION
from test_diffc import (
    GOLDEN,
    SETTINGS,
    PixelGaussian,
    _diffc_header,
    _pixels_md5,
    check_golden,
    gaussian_model,
    photo_crop,
)

# SETTINGS with a small tree: 4 levels of 3 bits (12 path bits per chunk), beam 4, margin 3 bits.
TREE = {**SETTINGS, "scheme": "tree", "bits_per_chunk": 3, "levels": 4, "beam": 4, "margin": 3.0}


@pytest.fixture(scope="module")
def tree_encoding():
    codec = DiffCCodec(gaussian_model(), recon_steps=6, **TREE)
    data, enc = codec.encode_image(photo_crop(), steps=12)
    return codec, data, enc


def test_round_trip_every_latent_bit_exact(tree_encoding):
    codec, data, enc = tree_encoding
    h = container.read(data).header
    # version 5 (the output filter) holds version 4's tree fields
    assert h.params_version == FILTER_PARAMS_VERSION == TREE_PARAMS_VERSION + 1 == 5
    settings = DiffCSettings.from_bytes(h.params, h.params_version, h.precision)
    assert (settings.scheme, settings.bits_per_chunk, settings.levels, settings.beam, settings.margin) == \
        ("tree", 3, 4, 4, 3.0)
    z, lam, f, _, _ = codec.decode_latent(data)
    assert torch.equal(z, enc.z) and lam == settings.grid()[12] and len(f.segments) == 12
    # Every intermediate latent: the sender's z_k is the receiver's, bit for bit.
    model, x = codec.model_for_encoding(), torch.from_numpy(photo_crop()).permute(2, 0, 1)[None] / 127.5 - 1
    sent, got = {}, {}
    sender = diffc.encode(model, x, settings, steps=8, on_step=lambda k, z: sent.__setitem__(k, z))
    diffc.replay(model, sender.segments, (1, 3, 32, 48), settings, on_step=lambda k, z: got.__setitem__(k, z))
    assert sorted(sent) == sorted(got) == list(range(1, 9))
    assert all(torch.equal(sent[k], got[k]) for k in sent)
    # The file carries the photo: decoding beats decoding nothing.
    assert psnr(codec.decompress(data), photo_crop()) > psnr(codec.decompress(data, max_steps=0), photo_crop()) + 2


def test_tree_steps_are_tree_payloads(tree_encoding):
    """Each segment is a tree payload of the file's settings: n chunks, depth <= levels, digits < 2^b."""
    codec, data, enc = tree_encoding
    f = container.read(data)
    for k, seg in enumerate(f.segments):
        paths = entropy.decode_tree_paths(seg, level_bits=3, max_chunks=3 * 32 * 48, max_depth=4)
        assert paths.shape[0] == enc.chunks[k] and 1 <= paths.shape[1] <= 4 and paths.max() < 8


def test_progressive_prefixes_decode(tree_encoding):
    codec, data, _ = tree_encoding
    wanted = [0, 3, 6, 9, 12]
    progressive = codec.decompress_progressive(data, wanted)
    quality = []
    for k in wanted:
        alone = codec.decompress(data, max_steps=k)
        assert np.array_equal(np.asarray(progressive[k]), np.asarray(alone)), k
        if k:  # a prefix of whole steps is itself a valid file with the same reconstruction
            prefix = container.truncate_to_steps(data, k)
            assert np.array_equal(np.asarray(codec.decompress(prefix)), np.asarray(alone)), k
        quality.append(psnr(alone, photo_crop()))
    assert quality == sorted(quality), quality
    sizes = container.step_file_sizes(data)
    assert sizes == sorted(sizes) and sizes[-1] == len(data)


def test_scheme_knob_and_setting_agree():
    """compress(scheme="tree") on a pfr codec writes the file a tree codec writes (the scheme's defaults);
    the tree is the codec's default, and b or a margin without a scheme still mean pfr."""
    img = photo_crop(16, 24)
    base = {k: v for k, v in SETTINGS.items() if k not in ("bits_per_chunk", "margin")}
    pfr_codec = DiffCCodec(PixelGaussian(), scheme="pfr", **base)
    by_knob = pfr_codec.compress(img, steps=5, scheme="tree")
    by_setting = DiffCCodec(PixelGaussian(), scheme="tree", **base).compress(img, steps=5)
    assert by_knob == by_setting == DiffCCodec(PixelGaussian(), **base).compress(img, steps=5)
    assert DiffCCodec(PixelGaussian(), bits_per_chunk=12, **base).settings.scheme == "pfr"
    assert DiffCCodec(PixelGaussian(), margin=4.0, **base).settings.bits_per_chunk == 10
    assert DiffCCodec(PixelGaussian(), levels=16, **base).settings.rcc_settings.chunk_bits == 64
    h = container.read(by_knob).header
    s = DiffCSettings.from_bytes(h.params, h.params_version)
    tree = SCHEME_DEFAULTS["tree"]
    assert (h.params_version, s.scheme, s.bits_per_chunk, s.margin, s.levels, s.beam) == \
        (5, "tree", tree["bits_per_chunk"], tree["margin"], tree["levels"], tree["beam"])
    unfiltered = pfr_codec.compress(img, steps=5, scheme="tree", no_filter=True)
    assert container.read(unfiltered).header.params_version == 4
    # Without the filter a pfr codec writes version 2, exactly as before the tree existed.
    plain = pfr_codec.compress(img, steps=5, no_filter=True)
    assert container.read(plain).header.params_version == 2
    assert plain == pfr_codec.compress(img, steps=5, scheme="pfr", no_filter=True)
    assert container.read(pfr_codec.compress(img, steps=5)).header.params_version == 5
    # The knob combines with bpp (it chooses how, not how big), and bad values are refused.
    assert 8 * len(pfr_codec.compress(img, bpp=4.0, scheme="tree")) <= 4.0 * 16 * 24
    with pytest.raises(ValueError, match="diffc knob scheme must be one of pfr, importance, tree"):
        pfr_codec.compress(img, steps=2, scheme="best")
    # A tiled tree file is version 4 (5 with the filter) with the tiling recorded, and decodes to the
    # encoder's latent.
    tiled = DiffCCodec(PixelGaussian(), tile=16, tile_overlap=4, **TREE)
    data, enc = tiled.encode_image(img.repeat(2, axis=0), steps=4)
    s = DiffCSettings.from_bytes(container.read(data).header.params, 5)
    assert (s.tile, s.tile_overlap, s.scheme) == (16, 4, "tree")
    assert torch.equal(tiled.decode_latent(data)[0], enc.z)


# ---------------------------------------------------------------------------- golden bitstreams


def _golden_tree_bytes() -> bytes:
    # Written before the output filter (parameter version 5): without it.
    return DiffCCodec(PixelGaussian(), precision="float32", **TREE).compress(photo_crop(), steps=10, no_filter=True)


def test_golden_v4_tree_bitstream():
    check_golden("diffc_v4_tree_pixel_gaussian_32x48", _golden_tree_bytes(), 4,
                 DiffCCodec(PixelGaussian(), recon_steps=4, precision="float32", **TREE))


def test_v3_golden_file_still_decodes():
    """A tiled (version-3) file written by the code before version 4 existed (commit ae5f09b) decodes to
    the pixels that code decoded, and re-encoding it today gives the same bytes."""
    expected = json.loads((GOLDEN / "diffc_v3_pixel_gaussian_32x48.json").read_text())
    stored = (GOLDEN / "diffc_v3_pixel_gaussian_32x48.fdc").read_bytes()
    assert hashlib.md5(stored).hexdigest() == expected["fdc_md5"]
    f = container.read(stored)
    assert (f.version, f.header.params_version) == (2, 3)
    codec = DiffCCodec(PixelGaussian(), recon_steps=4, tile=32, tile_overlap=8, precision="float32", **SETTINGS)
    for method in ("denoise", "flow", "ancestral"):
        assert _pixels_md5(codec.decompress(stored, method=method)) == expected[f"{method}_pixels_md5"], method
    assert codec.compress(photo_crop(), steps=10, no_filter=True) == stored


# ---------------------------------------------------------------------------- bad fields


def _v4(**changes) -> bytes:
    return DiffCSettings(**{**TREE, **changes}).to_bytes()


def test_v4_layout():
    """Version 4 = version 3 (tile 0 = untiled) + levels and beam; the flat fields as in version 2."""
    v4 = _v4()
    v2_fields = DiffCSettings(**SETTINGS).to_bytes()
    assert v4[:len(v2_fields) - 3] == v2_fields[:-3]  # seed .. grid steps
    assert v4[len(v2_fields) - 3:] == bytes([3, 48, 2, 0, 0, 4, 4])  # b, margin/16, scheme, tile, overlap, L, B
    assert DiffCSettings.from_bytes(v4, 4) == DiffCSettings(**TREE)
    # A flat scheme may be written as version 4 too (levels = beam = 0); the codec writes 2 or 3 for it.
    flat = DiffCSettings(**SETTINGS, params_version=4)
    assert flat.to_bytes() == v2_fields + bytes([0, 0, 0, 0]) and DiffCSettings.from_bytes(flat.to_bytes(), 4) == flat


def test_bad_v4_fields_rejected():
    good = _v4()
    head = good[:-7]  # up to the grid steps
    v2 = DiffCSettings(**SETTINGS).to_bytes()

    def block(b=3, margin16=48, scheme=2, tile=0, overlap=0, levels=4, beam=4):
        out = bytearray(head + bytes([b]))
        for v in (margin16,):
            container.put_varint(out, v)
        out.append(scheme)
        for v in (tile, overlap, levels, beam):
            container.put_varint(out, v)
        return bytes(out)

    assert block() == good
    cases = [
        (block(levels=0), InvalidFieldError, r"tree levels must be in \[1, 64\], got 0"),
        (block(levels=65), InvalidFieldError, r"tree levels must be in \[1, 64\], got 65"),
        (block(levels=2**40), InvalidFieldError, "tree levels"),
        (block(beam=0), InvalidFieldError, r"tree beam must be in \[1, 4096\], got 0"),
        (block(beam=4097), InvalidFieldError, r"tree beam must be in \[1, 4096\], got 4097"),
        (block(b=0), InvalidFieldError, r"bits per tree level must be in \[1, 8\], got 0"),
        (block(b=9), InvalidFieldError, r"bits per tree level must be in \[1, 8\], got 9"),
        (block(margin16=16 * 12), InvalidFieldError, r"margin must be in \[0, levels · bits_per_chunk - 1\]"),
        (block(scheme=0, levels=4, beam=4), InvalidFieldError, "levels and beam belong to the tree scheme"),
        (block(scheme=7), InvalidFieldError, "RCC scheme id 7"),
        (block(tile=0, overlap=2), InvalidFieldError, "tile must be a multiple of 16"),
        (block(tile=24, overlap=0), InvalidFieldError, "tile must be a multiple of 16"),
        (block(tile=64, overlap=32), InvalidFieldError, "tile_overlap must be an even number"),
        (good[:-1], TruncatedError, "tree beam"),
        (good[:-2], TruncatedError, "tree levels"),
        (good + b"\x00", FormatError, "trailing"),
    ]
    for params, error, match in cases:
        with pytest.raises(error, match=match):
            DiffCSettings.from_bytes(params, 4)
        data = container.write(_diffc_header(params, params_version=4), [])
        with pytest.raises(error, match=match):
            DiffCCodec(PixelGaussian()).decompress(data)
    # The tree only in version 4: a version-2 or -3 block naming it is refused, not upgraded.
    tree_v2 = v2[:-1] + b"\x02"
    for params, version in ((tree_v2, 2), (tree_v2 + b"\x10\x00", 3)):
        with pytest.raises(InvalidFieldError, match=f"RCC scheme tree in a version-{version} DiffC parameter block"):
            DiffCSettings.from_bytes(params, version)


def test_settings_validation():
    s = DiffCSettings(**TREE)
    assert s.params_version == 4 and s.rcc_settings.chunk_bits == 12
    for bad, match in [(dict(levels=0), "tree levels"), (dict(beam=5000), "tree beam"),
                       (dict(bits_per_chunk=10), "bits per tree level"), (dict(params_version=1), "version 4"),
                       (dict(scheme="pfr", bits_per_chunk=8, params_version=4),
                        "levels and beam belong to the tree scheme")]:
        with pytest.raises(ValueError, match=match):
            DiffCSettings(**{**TREE, **bad})
    with pytest.raises(ValueError, match="levels and beam need parameter version 4"):
        DiffCSettings(**SETTINGS, levels=4)
    with pytest.raises(ValueError, match="unknown RCC scheme"):
        DiffCSettings(**SETTINGS).with_scheme("best")
    # Switching schemes brings the scheme's defaults and the least version that holds them.
    back = DiffCSettings(**TREE).with_scheme("pfr")
    assert (back.params_version, back.levels, back.beam, back.bits_per_chunk) == (2, 0, 0, 10)
    # `fastdiffc info` shows the tree's fields.
    h = container.read(_golden_tree_bytes()).header
    info = DiffCCodec.describe_params(h)
    assert (info["scheme"], info["levels"], info["beam"], info["params_version"]) == ("tree", 4, 4, 4)


def test_corrupt_tree_segment_is_an_error(tree_encoding):
    codec, data, enc = tree_encoding
    f = container.read(data)
    assert min(len(s) for s in f.segments[8:]) >= 8
    for i, mutate, match in [(9, lambda s: b"\xff\xff\xff" + s[3:], "chunks|corrupt|holds only|canonical"),
                             (10, lambda s: s[:-1], "corrupt|canonical|guard|holds only|zero byte"),
                             (11, lambda s: s + b"\x01", "depth|chunks|trailing|canonical|guard|holds only")]:
        segs = list(f.segments)
        segs[i] = mutate(segs[i])
        with pytest.raises(FormatError, match=match):
            codec.decode_latent(container.write(f.header, segs))
    # Uniform digits carry no redundancy: a flipped digit bit is another valid path (a different
    # latent), which is why the container checksums the segments.
    segs = list(f.segments)
    segs[11] = segs[11][:4] + bytes([segs[11][4] ^ 0x10]) + segs[11][5:]
    z = codec.decode_latent(container.write(f.header, segs))[0]
    assert z.shape == enc.z.shape and not torch.equal(z, enc.z)
    flipped = bytearray(data)
    flipped[-10] ^= 0x10
    with pytest.raises(FormatError, match="checksum"):
        codec.decode_latent(bytes(flipped))
