"""Images in, pixels out: finding images in a folder, decoding them safely, and DiT's preprocessing.

Dimension letters: C channels (3, RGB), H height, W width, in pixels.

Everything here follows the DiT training script, so that latents made from a folder are latents of
the inputs the model was trained on:
- labels come from class subfolders in sorted order of their names and the files are walked in the
  order torchvision's ``ImageFolder`` walks them (ImageNet's synset folders give DiT's class indices);
- pixels go through ``convert("RGB")`` as ImageFolder's loader does, then ADM's center crop, then
  ``x / 127.5 - 1`` (``ToTensor`` then ``Normalize(0.5, 0.5)``).
A file that cannot be read, or is too small to mean anything, is reported as a ``BadImage`` with a
short reason: the caller skips and counts it, nothing here crashes on a bad file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dardiag.errors import DardiagError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MIN_SIDE = 8  # an image whose shorter side is below this is upscaled from almost nothing: skipped


class BadImage(Exception):
    """One file that is skipped; the message is a short reason ("truncated file", "too small: 4x4")."""


#################################################################################
#                              Finding the images                               #
#################################################################################


@dataclass(frozen=True)
class ImageList:
    """The images of a folder in encoding order, with labels when the folder has classes."""

    folder: Path  # absolute
    paths: list[Path]
    labels: list[int] | None  # one per path; None for an unlabelled flat folder
    class_names: list[str] | None  # index -> folder name, when the folder has class subfolders


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _visible(name: str) -> bool:
    # hidden entries are not data: macOS "._x.jpg" forks, .ipynb_checkpoints, .git
    return not name.startswith(".")


def _walk_images(root: Path) -> list[Path]:
    """Images under ``root`` in torchvision ``make_dataset`` order: sorted directories, sorted names.

    Symlinked files are read; symlinked subdirectories are not followed (a link cycle would never end).
    """
    walked = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if _visible(d)]  # pruned in place: hidden folders are not walked
        walked.append((dirpath, filenames))
    return [Path(dirpath) / f for dirpath, filenames in sorted(walked)
            for f in sorted(filenames) if _visible(f) and is_image(f)]


def find_images(folder: str | os.PathLike, *, class_index: int | None = None) -> ImageList:
    """List a folder's images: class subfolders (labels in sorted name order) or a flat folder.

    A flat folder gets no labels unless ``class_index`` gives them all one; a folder with images
    beside subfolders is ambiguous and an error, as is a folder without images.
    """
    folder = Path(folder).expanduser().absolute()
    if not folder.exists():
        raise DardiagError(f"{folder}: no such folder; pass a folder of images (or of class subfolders of images)")
    if not folder.is_dir():
        raise DardiagError(f"{folder} is a file, not a folder; pass a folder of images (or of class subfolders)")
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if _visible(e.name)), key=lambda e: e.name)
    if not entries:
        raise DardiagError(f"{folder} is empty; pass a folder of images (or of class subfolders of images)")
    subdirs = [e.name for e in entries if e.is_dir()]
    top_images = [e.name for e in entries if e.is_file() and is_image(e.name)]
    if subdirs and top_images:
        raise DardiagError(
            f"{folder} holds both images ({top_images[0]}, ...) and subfolders ({subdirs[0]}, ...); put every "
            "image in a class subfolder, or pass a folder that holds images only"
        )
    if subdirs:
        if class_index is not None:
            raise DardiagError(f"--class {class_index} is for a flat folder, but {folder} has class subfolders, "
                               "which give the labels; drop --class")
        paths, labels = [], []
        for index, name in enumerate(subdirs):  # sorted names -> 0..K-1, as ImageFolder
            found = _walk_images(folder / name)
            paths += found
            labels += [index] * len(found)
        names = subdirs
    else:
        paths = [folder / name for name in top_images]
        labels = None if class_index is None else [class_index] * len(paths)
        names = None
    if not paths:
        raise DardiagError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                           "pass a folder of images or of class subfolders of images")
    return ImageList(folder, paths, labels, names)


#################################################################################
#                         Decoding and converting modes                         #
#################################################################################


def _reason(e: Exception) -> str:
    """A short reason without the file's path (the caller names the file)."""
    if isinstance(e, UnidentifiedImageError):
        return "not a readable image"
    if isinstance(e, Image.DecompressionBombError):
        return "too many pixels (PIL's decompression-bomb limit)"
    text = " ".join(str(e).split())
    if "truncated" in text.lower():
        return "truncated file"
    return f"{type(e).__name__}: {text[:80]}" if text else type(e).__name__


def _sixteen_bit_to_8(img: Image.Image) -> Image.Image:
    """Integer modes (I;16*, I) as 8-bit L, keeping the tones: PIL's own conversion saturates at 255."""
    a = np.asarray(img).astype(np.int64)  # (H, W)
    if img.mode.startswith("I;16") or a.max(initial=0) > 255:
        a = (a + 128) // 257  # 0..65535 -> 0..255, rounded
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB.

    Alpha (RGBA, LA, PA, P with transparency) is dropped, not composited: ImageFolder's loader does
    ``convert("RGB")``, so this is what the model saw in training. CMYK, L, 1, P and YCbCr use PIL's
    conversions; 16- and 32-bit integer images are scaled to 8 bits first, float images clipped.
    """
    if img.mode.startswith("I"):
        img = _sixteen_bit_to_8(img)
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float64)  # (H, W)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a  # [0, 1] floats are fractions of white
        img = Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    """Decode one file fully as RGB, or raise ``BadImage``.

    ``.load()`` inside the guard makes truncated and corrupt files fail here, not later; PIL's global
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left as it is (False by default: truncated files are skipped).
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
            rgb.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise BadImage(_reason(e)) from None
    w, h = rgb.size
    if min(w, h) < MIN_SIDE:
        raise BadImage(f"too small: {w}x{h} (needs at least {MIN_SIDE} px on the shorter side)")
    return rgb


#################################################################################
#                        ADM center crop (DiT's preprocessing)                  #
#################################################################################


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """ADM's center crop, used by the DiT training script: a ``size`` x ``size`` RGB image.

    Halving with a BOX filter while the shorter side is at least ``2 * size`` keeps the final bicubic
    resize from aliasing on large images; then the shorter side is resized to ``size`` and the central
    square is cut out.
    """
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB pixels as float in [-1, 1], channels first: ``ToTensor`` then ``Normalize(0.5, 0.5)``."""
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W, C)
    return a.permute(2, 0, 1).float() / 127.5 - 1.0  # (C, H, W)


def load_pixels(path: Path, size: int) -> torch.Tensor:
    """One file as the model's input image: decode, RGB, center crop, [-1, 1]. Raises ``BadImage``."""
    return to_tensor(center_crop(open_rgb(path), size))  # (C, size, size)
