"""Image inputs and outputs for the codecs.

Accepted inputs (docs/design.md §7): PIL images, HxWxC (or HxW) uint8 numpy arrays, and CHW
(or 1xCxHxW) float tensors in [-1, 1], plus file paths for convenience. Everything
becomes a 1x3xHxW float tensor in [-1, 1] and the number of channels to give back.

Greyscale is handled: it is coded as RGB with equal channels and decoded back to
greyscale (channels = 1 in the file). An alpha channel is dropped when it is fully
opaque and refused otherwise — these codecs do not code transparency. Palette images are
expanded. 16-bit greyscale (Pillow mode I;16, or uint16 arrays) is rounded to 8 bits
(v / 257). Other modes (32-bit integer, float, CMYK without a colour profile, ...) are
refused with a message saying what to do.

Photos are taken as they are meant to be seen: the EXIF orientation tag is applied
(`ImageOps.exif_transpose`), and an embedded ICC colour profile other than sRGB (Adobe RGB,
Display P3, a CMYK profile, ...) is converted to sRGB with LittleCMS (`PIL.ImageCms`, relative
colorimetric) — the codecs and their metrics assume sRGB. An unreadable profile is refused.
Greyscale images keep their values (a grey profile is ignored). A file whose declared size is
above Pillow's decompression-bomb limit (2 × `PIL.Image.MAX_IMAGE_PIXELS`) is refused before
it is decoded.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes Pillow converts losslessly to 8-bit greyscale / RGB(A) for us.
_GREY_MODES = {"1", "L", "LA", "La"}
_COLOUR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"}
_GREY16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    tensor: torch.Tensor  # 1x3xHxW float32 in [-1, 1]
    channels: int  # 1 (greyscale) or 3 (RGB): what the decoder gives back

    @property
    def height(self) -> int:
        return int(self.tensor.shape[-2])

    @property
    def width(self) -> int:
        return int(self.tensor.shape[-1])


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file; a file Pillow cannot read gives a one-line ValueError."""
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except UnidentifiedImageError:
        raise ValueError(f"{os.fspath(path)}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ValueError(bomb_message(os.fspath(path))) from None


def bomb_message(what: str) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    return (f"{what}: the image declares more than {2 * limit:,} pixels, Pillow's decompression-bomb limit "
            f"(2 x PIL.Image.MAX_IMAGE_PIXELS = {limit:,}); refused before decoding. If the file is trusted, "
            "raise PIL.Image.MAX_IMAGE_PIXELS")


def _orient(im: Image.Image) -> Image.Image:
    """The image turned upright as its EXIF orientation tag says (unchanged without one)."""
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block: treat as no orientation
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(im)
    return im


def _to_srgb(im: Image.Image) -> Image.Image:
    """Colour images with a non-sRGB ICC profile converted to sRGB (see the module docstring)."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode in _GREY_MODES or im.mode in _GREY16_MODES:
        return im
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without LittleCMS
        raise ValueError("the image carries an ICC colour profile, but this Pillow has no ImageCms (LittleCMS) "
                         "to convert it to sRGB; convert the image to sRGB first") from None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").strip()
    except (OSError, ImageCms.PyCMSError) as e:
        raise ValueError(f"the image's ICC colour profile is unreadable ({e}); strip it or convert the image to "
                         "sRGB first") from None
    if "srgb" in desc.lower():
        return im
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    out_mode = {"RGB": "RGB", "RGBX": "RGB", "RGBA": "RGBA", "CMYK": "RGB"}.get(im.mode)
    if out_mode is None:
        raise ValueError(f"cannot convert a {im.mode} image with ICC profile {desc!r} to sRGB; convert it first")
    try:
        out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"),
                                        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode=out_mode)
    except ImageCms.PyCMSError as e:
        raise ValueError(f"cannot convert the image from ICC profile {desc!r} to sRGB ({e}); "
                         "convert it first") from None
    out.info.pop("icc_profile", None)
    return out


def _grey16_to_8(im: Image.Image) -> Image.Image:
    arr = np.asarray(im).astype(np.uint32)
    return Image.fromarray(((arr * 2 + 257) // 514).astype(np.uint8), "L")  # round(v / 257)


def _check_size(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"empty image ({h}x{w})")


def _from_pil(im: Image.Image) -> PreparedImage:
    im = _orient(im)
    if im.mode in _GREY16_MODES:
        im = _grey16_to_8(im)
    im = _to_srgb(im)
    mode = im.mode
    if mode not in _GREY_MODES | _COLOUR_MODES:
        raise ValueError(
            f"unsupported image mode {mode!r}"
            + (" without a colour profile" if mode == "CMYK" else "")
            + ": convert to RGB or L (8-bit) first, e.g. image.convert('RGB')"
        )
    _check_size(im.height, im.width)
    grey = mode in _GREY_MODES
    if mode in ("LA", "La", "RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise ValueError("image has transparency (alpha < 255); flatten it onto a background first")
    arr = np.asarray(im.convert("RGB"))
    return PreparedImage(_uint8_to_tensor(arr), 1 if grey else 3)


def _uint8_to_tensor(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).to(torch.float32)
    return (t / 127.5 - 1.0).unsqueeze(0).contiguous()


def _from_array(arr: np.ndarray) -> PreparedImage:
    if arr.dtype == np.uint16:  # 16-bit: round to 8 bits, v / 257
        arr = ((arr.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 (or uint16) HxWxC, got dtype {arr.dtype} "
                         "(scale to 0..255 first)")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"numpy images must be HxW or HxWxC, got shape {arr.shape}")
    h, w, c = arr.shape
    _check_size(h, w)
    if c == 1:
        return PreparedImage(_uint8_to_tensor(np.repeat(arr, 3, axis=2)), 1)
    if c == 4:
        if (arr[..., 3] != 255).any():
            raise ValueError("image has transparency (alpha < 255); flatten it onto a background first")
        arr = arr[..., :3]
    elif c != 3:
        raise ValueError(f"numpy images need 1, 3 or 4 channels, got {c}")
    return PreparedImage(_uint8_to_tensor(arr), 3)


def _from_tensor(t: torch.Tensor) -> PreparedImage:
    if not t.is_floating_point():
        raise ValueError(f"tensor images must be float CHW in [-1, 1], got dtype {t.dtype}")
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"one image at a time: got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"tensor images must be CHW, got shape {tuple(t.shape)}")
    c, h, w = t.shape
    _check_size(h, w)
    if c not in (1, 3):
        raise ValueError(f"tensor images need 1 or 3 channels, got {c}")
    t = t.detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError("tensor image contains NaN or inf")
    if t.min() < -1.0 - 1e-6 or t.max() > 1.0 + 1e-6:
        raise ValueError("tensor images must lie in [-1, 1] (docs/design.md §3 convention)")
    t = t.clamp(-1.0, 1.0)
    return PreparedImage(t.expand(3, h, w).unsqueeze(0).contiguous(), c)


def image_size(image) -> tuple[int, int]:
    """(height, width) of any accepted input without converting it — a file is only opened, not
    decoded — so budgets can be checked before the pixels are allocated."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                return int(im.height), int(im.width)
        except Image.DecompressionBombError:
            raise ValueError(bomb_message(os.fspath(image))) from None
        except (UnidentifiedImageError, OSError):
            return (0, 0)  # prepare_image reports the problem
    if isinstance(image, Image.Image):
        return int(image.height), int(image.width)
    if isinstance(image, np.ndarray) and image.ndim >= 2:
        return int(image.shape[0]), int(image.shape[1])
    if isinstance(image, torch.Tensor) and image.ndim >= 2:
        return int(image.shape[-2]), int(image.shape[-1])
    return (0, 0)


def prepare_image(image) -> PreparedImage:
    """Any accepted input → PreparedImage (1x3xHxW float32 in [-1, 1] + channels to return)."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, torch.Tensor):
        return _from_tensor(image)
    raise TypeError(f"unsupported image type {type(image).__name__}: use a PIL image, uint8 array or float tensor")


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """1x3xHxW (or 3xHxW) in [-1, 1] → HxWx3 uint8, rounding to nearest."""
    if x.ndim == 4:
        x = x[0]
    q = ((x.detach().to("cpu", torch.float64).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return q.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def tensor_to_pil(x: torch.Tensor, channels: int = 3) -> Image.Image:
    arr = tensor_to_uint8(x)
    if channels == 1:
        # Greyscale was coded as three equal channels; average what came back.
        grey = np.round(arr.astype(np.float64).mean(axis=2)).astype(np.uint8)
        return Image.fromarray(grey)
    return Image.fromarray(arr)


def psnr(a, b) -> float:
    """PSNR in dB between two 8-bit images (PIL or uint8 arrays) of the same shape; inf for identical
    images. The package's one PSNR: `eval.metrics.psnr` (RGB pairs) and training use it."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
