"""Image folders for evaluation, and the development evaluation photos (docs/design.md §8).

The development photos are the photographs shipped inside pip packages — scikit-image
(astronaut, chelsea, coffee, rocket, motorcycle_left), scikit-learn (china, flower) and
matplotlib (grace_hopper) — so the evaluation needs no download. Never train on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".webp")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        if name == "motorcycle_left":
            return skimage.data.stereo_motorcycle()[0]
        return getattr(skimage.data, name)()

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as im:
        return np.asarray(im.convert("RGB"))


DEV_IMAGES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("scikit-image", _skimage("astronaut")),
    "chelsea": ("scikit-image", _skimage("chelsea")),
    "coffee": ("scikit-image", _skimage("coffee")),
    "rocket": ("scikit-image", _skimage("rocket")),
    "motorcycle_left": ("scikit-image", _skimage("motorcycle_left")),
    "china": ("scikit-learn", _sklearn("china.jpg")),
    "flower": ("scikit-learn", _sklearn("flower.jpg")),
    "grace_hopper": ("matplotlib", _grace_hopper),
}


# Photos the packages ship as JPEG: their 8x8 block artefacts would be coded as if they were
# content, so the evaluation set holds them downscaled 2x (Lanczos), as the training photos are.
JPEG_SOURCED = ("rocket", "china", "flower", "grace_hopper")


def load_dev_image(name: str, *, as_evaluated: bool = True) -> Image.Image:
    """One development photo as an RGB PIL image (ImportError names the package to install).

    `as_evaluated` (default): the evaluation's version — JPEG-sourced photos (JPEG_SOURCED)
    downscaled 2x to remove their block artefacts, the others at their native size."""
    if name not in DEV_IMAGES:
        raise ValueError(f"unknown development image {name!r}; known: {', '.join(DEV_IMAGES)}")
    package, load = DEV_IMAGES[name]
    try:
        arr = load()
    except ImportError as e:
        raise ImportError(f"development image {name!r} comes from the {package} package: "
                          f"pip install {package} (or fastdiffc[eval])") from e
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"development image {name!r} is not 8-bit RGB (shape {arr.shape}, {arr.dtype})")
    image = Image.fromarray(arr, "RGB")
    if as_evaluated and name in JPEG_SOURCED:
        w, h = image.size
        image = image.resize((max(1, round(w / 2)), max(1, round(h / 2))), Image.Resampling.LANCZOS)
    return image


def export_dev_images(folder: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the development photos as PNGs into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DEV_IMAGES:
        path = folder / f"{name}.png"
        if overwrite or not path.exists():
            load_dev_image(name).save(path, "PNG", compress_level=1)  # fast; still lossless
        paths.append(path)
    return paths


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (ValueError if there are none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return paths


def load_image(path: str | Path, *, max_size: int | None = None) -> Image.Image:
    """An RGB image from disk, downscaled (Lanczos) so its longer side is at most `max_size`."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            # Flatten transparency on white, as a viewer would show it.
            rgba = im.convert("RGBA")
            flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(flat, rgba).convert("RGB")
        else:
            image = im.convert("RGB")
    return image if max_size is None else downscale(image, max_size)


def downscale(image: Image.Image, max_size: int) -> Image.Image:
    """`image` downscaled (Lanczos) so its longer side is at most `max_size`; smaller ones as they are."""
    if max_size < 8:
        raise ValueError(f"--max-size must be at least 8 pixels, got {max_size}")
    w, h = image.size
    scale = max_size / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def centre_crop(image: Image.Image, width: int = 768, height: int = 512) -> Image.Image:
    """The centred width × height window of `image` (the full-size photo the targets are stated
    at); ValueError when the image is smaller."""
    if image.width < width or image.height < height:
        raise ValueError(f"image is {image.width}×{image.height}, smaller than {width}×{height}")
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))
