"""A user's own gallery: images (or a .zip of them) read in memory, with limits, and searched
with a shipped model. It lives in the browser session only: nothing is written to assets/,
and nothing from a zip is written under a name it chose.

Limits (each refusal is one line naming the limit): at most MAX_IMAGES images, a zip of at
most MAX_ZIP_MEMBERS members and MAX_ZIP_BYTES uncompressed (a zip bomb is refused from its
directory, before anything is decompressed, and again while reading, since a directory can
lie), and MAX_IMAGE_PIXELS per image (a decompression bomb). Unreadable files are skipped
and listed.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..data import pil_to_mode
from .spec import SPEC, text

MAX_IMAGES: int = SPEC["own"]["max_images"]  # declared once, in static/spec.json (the static page reads it too)
MAX_ZIP_MEMBERS = 2000
MAX_ZIP_BYTES = 200 * 2**20
MAX_IMAGE_PIXELS = 25_000_000
MAX_FILE_BYTES = 20 * 2**20
KEEP_SIDE: int = SPEC["own"]["keep_side"]  # kept this small: the models see 28 or 32 px, the page thumbnails
MIN_SIDE: int = SPEC["min_side"]  # images with a shorter side are skipped (as an upload is refused)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class GalleryError(Exception):
    """The upload as a whole is refused; the message names the limit and the fix."""


@dataclass
class OwnImages:
    images: list[Image.Image] = field(default_factory=list)  # RGB, at most KEEP_SIDE px
    names: list[str] = field(default_factory=list)  # shown to the user only, never used as a path
    skipped: list[str] = field(default_factory=list)  # "name: why"


def _decode(data: bytes) -> Image.Image:
    """Bytes -> a small RGB image; raises ValueError with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(f"{w}x{h} is over {MAX_IMAGE_PIXELS // 10**6} megapixels")
            image.draft("RGB", (KEEP_SIDE * 2, KEEP_SIDE * 2))  # JPEG: decode at reduced size
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ValueError(f"over {MAX_IMAGE_PIXELS // 10**6} megapixels") from None
        except UnidentifiedImageError:
            raise ValueError("not an image") from None
        except (OSError, SyntaxError) as e:
            raise ValueError(f"truncated or corrupt ({e})") from None
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"{image.size[0]}x{image.size[1]} is smaller than {MIN_SIDE}x{MIN_SIDE}")
    image = pil_to_mode(image, "RGB")
    image.thumbnail((KEEP_SIDE, KEEP_SIDE), Image.LANCZOS)
    return image


def _add(out: OwnImages, name: str, data: bytes) -> None:
    if len(out.images) >= MAX_IMAGES:
        raise GalleryError(text("own_too_many", max=str(MAX_IMAGES)))
    try:
        out.images.append(_decode(data))
        out.names.append(name)
    except ValueError as e:
        out.skipped.append(f"{name}: {e}")


def _read_zip(path: Path, out: OwnImages) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        out.skipped.append(f"{path.name}: not a readable zip")
        return
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise GalleryError(f"{path.name} has {len(members)} members, over the limit of {MAX_ZIP_MEMBERS}: "
                               f"zip at most {MAX_IMAGES} images")
        declared = sum(m.file_size for m in members)
        if declared > MAX_ZIP_BYTES:
            raise GalleryError(f"{path.name} unpacks to {declared / 2**20:.0f} MB, over the limit of "
                               f"{MAX_ZIP_BYTES // 2**20} MB: zip fewer or smaller images")
        total = 0
        for member in members:
            name = Path(member.filename).name
            if name.startswith(".") or "__MACOSX" in member.filename:
                continue
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                out.skipped.append(f"{name}: not an image file name")
                continue
            try:
                with archive.open(member) as f:  # read in bounded chunks: the directory may lie
                    data = f.read(min(MAX_FILE_BYTES, MAX_ZIP_BYTES - total) + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as e:
                out.skipped.append(f"{name}: cannot be unpacked ({e})")
                continue
            total += len(data)
            if total > MAX_ZIP_BYTES:
                raise GalleryError(f"{path.name} unpacks to over {MAX_ZIP_BYTES // 2**20} MB: "
                                   "zip fewer or smaller images")
            if len(data) > MAX_FILE_BYTES:
                out.skipped.append(f"{name}: over {MAX_FILE_BYTES // 2**20} MB")
                continue
            _add(out, name, data)


def read_own_images(paths: list[str | Path]) -> OwnImages:
    """Image files and zips -> decoded small images; raises GalleryError for a refused upload."""
    out = OwnImages()
    for p in paths:
        path = Path(p)
        if path.suffix.lower() == ".zip":
            _read_zip(path, out)
            continue
        try:
            size = path.stat().st_size
        except OSError:
            out.skipped.append(f"{path.name}: not received")
            continue
        if size > MAX_FILE_BYTES:
            out.skipped.append(f"{path.name}: over {MAX_FILE_BYTES // 2**20} MB")
            continue
        _add(out, path.name, path.read_bytes())
    return out
