"""Input images (issue 12, docs/design.md §7): EXIF orientation, ICC profiles, decompression bombs,
16-bit, palette and other modes — each with a small synthetic file."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastdiffc.image_io import image_size, load_image, prepare_image, tensor_to_uint8
from PIL import Image, ImageCms


def _pixels(image) -> np.ndarray:
    return tensor_to_uint8(prepare_image(image).tensor)


def _halves(w=40, h=20) -> np.ndarray:
    """Left half red, right half blue: where the halves end up shows the orientation."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2, 0] = 255
    arr[:, w // 2 :, 2] = 255
    return arr


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(_halves()).save(path, quality=95, exif=exif.tobytes())
    px = _pixels(path)
    assert px.shape == (40, 20, 3)  # portrait now
    assert px[2, 10, 0] > 200 and px[2, 10, 2] < 60  # red on top (the former left half)
    assert px[37, 10, 2] > 200 and px[37, 10, 0] < 60
    assert _pixels(Image.open(path)).shape == (40, 20, 3)  # a PIL image from the caller too
    assert prepare_image(load_image(path)).height == 40


def _icc_rgb_profile(primaries, gamma: float, desc: str) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile (D50 PCS)."""
    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    curv = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"
    text = desc.encode() + b"\0"
    desc_tag = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    tags = [(b"desc", desc_tag), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*primaries[0])),
            (b"gXYZ", xyz(*primaries[1])), (b"bXYZ", xyz(*primaries[2])), (b"rTRC", curv), (b"gTRC", curv),
            (b"bTRC", curv), (b"cprt", b"text" + b"\0" * 4 + b"none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"none" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


# Adobe RGB (1998), D50-adapted colorants, gamma 563/256.
ADOBE_RGB = _icc_rgb_profile([(0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087),
                              (0.14919, 0.06322, 0.74457)], 563 / 256, "Adobe RGB (1998) test")


def test_adobe_rgb_png_is_converted_to_srgb(tmp_path):
    path = tmp_path / "adobe.png"
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[..., 1] = 200  # a saturated Adobe RGB green lies outside sRGB: R and B go to 0, G grows
    arr[:4, :, 0] = 128
    Image.fromarray(arr).save(path, icc_profile=ADOBE_RGB)
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB))).startswith("Adobe")
    px = _pixels(path)
    assert not np.array_equal(px, arr)
    assert px[6, 6, 1] > 200 and px[6, 6, 0] < 10  # pure green: more green in sRGB numbers
    # sRGB-tagged and untagged files keep their values.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(arr).save(tmp_path / "srgb.png", icc_profile=srgb)
    assert np.array_equal(_pixels(tmp_path / "srgb.png"), arr)
    assert np.array_equal(_pixels(arr), arr)


def test_unreadable_icc_profile_is_refused(tmp_path):
    path = tmp_path / "bad_icc.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, icc_profile=b"not a profile at all" * 8)
    with pytest.raises(ValueError, match="ICC colour profile is unreadable"):
        prepare_image(path)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (its data is one empty row)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100_000, 100_000))
    assert path.stat().st_size < 100
    for call in (load_image, prepare_image, image_size):
        with pytest.raises(ValueError, match=r"decompression-bomb limit .*MAX_IMAGE_PIXELS"):
            call(path)


def test_bomb_is_a_clear_cli_error(tmp_path, capsys):
    from fastdiffc.cli import main

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100_000, 100_000))
    assert main(["compress", str(path), "-o", str(tmp_path / "x.fdc")]) == 1
    assert "decompression-bomb limit" in capsys.readouterr().err


def test_16_bit_greyscale_palette_and_refused_modes(tmp_path):
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    assert Image.open(path).mode.startswith("I;16")
    prep = prepare_image(path)
    want = np.round(grey16 / 257).astype(np.uint8)
    assert prep.channels == 1 and np.array_equal(_pixels(path)[..., 0], want)
    assert np.array_equal(_pixels(np.stack([grey16] * 3, -1))[..., 1], want)  # uint16 arrays too
    pal = Image.fromarray(_halves(8, 4)).convert("P")
    assert np.array_equal(_pixels(pal), _halves(8, 4))
    with pytest.raises(ValueError, match="unsupported image mode 'F'"):
        prepare_image(Image.fromarray(np.zeros((4, 4), np.float32)))
    with pytest.raises(ValueError, match="'CMYK' without a colour profile"):
        prepare_image(Image.new("CMYK", (4, 4)))
    with pytest.raises(ValueError, match="transparency"):
        prepare_image(Image.new("RGBA", (4, 4), (1, 2, 3, 100)))
