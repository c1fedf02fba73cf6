"""A user's labelled image folder: its layout, its files, its split, its pixels and its identity.

Two layouts are read, as they come:

    FOLDER/<class>/**/<image>                           plain: split here, by class, into train,
                                                        validation and test with a fixed seed
    FOLDER/train/<class>/**  and  FOLDER/test/<class>/**   the test split as given; validation is
                                                        held out of train/ (data.hold_out_validation)

Files may sit at any depth under their class folder, in any format Pillow opens, of any size
and mode. A file whose name says image but that Pillow cannot decode is named and skipped;
files that are not images by their extension (notes, JSON) are counted and left alone. A class
too small to be split is refused in one line naming the fix, before anything is decoded.

Each image is decoded once (JPEG at a reduced scale where the target size allows: Pillow's
draft mode), centre-cropped to a square as a query photo is (queries' "photo" style) and
resized to the recipe's image size. The file lists of the three splits are what train.py records
beside the checkpoint (split.json), so `python -m model.evaluation` measures the same images.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SPLIT_JSON = "split.json"  # written beside a checkpoint trained on a folder
TEST_FRACTION = 0.2  # of each class, in the plain layout
MIN_TEST = 2  # per class: a test image needs another of its class to be found
MIN_CLASS = 6  # per class, plain layout: 2 test, then at least 2 training and 2 validation images
MIN_TRAIN_CLASS = 4  # per class of train/, train-test layout: at least 2 training and 2 validation images
DISPLAY_SIDE = 96  # px: the demo's thumbnails of a folder's gallery (the model sees 32)
MAX_PIXELS = 100_000_000  # larger files are skipped as possible decompression bombs


class FolderError(Exception):
    """The folder cannot be trained on; the message names the problem and the fix."""


def image_extensions() -> set[str]:
    """Every file extension Pillow can open, lower case with the dot. Registering Pillow's
    plugins imports some fifty modules; with torch loaded, the garbage collector's passes during
    those imports walk torch's objects too (0.2 s instead of 0.03 s), so it is paused meanwhile."""
    paused = gc.isenabled()
    gc.disable()
    try:
        Image.init()
    finally:
        if paused:
            gc.enable()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


@dataclass
class FolderScan:
    """What a folder holds: its classes and, per split as laid out, (relative path, label) pairs."""

    root: Path  # resolved
    layout: str  # "classes" (plain) or "train-test"
    classes: list[str]
    files: dict[str, list[tuple[str, int]]]  # "all" (plain) or "train" and "test"
    not_images: list[str] = field(default_factory=list)  # relative paths skipped by extension

    def count(self) -> int:
        return sum(len(v) for v in self.files.values())


def _class_files(folder: Path, root: Path, extensions: set[str], not_images: list[str]) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            (out if Path(name).suffix.lower() in extensions else not_images).append(rel)
    return out


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: str | Path) -> FolderScan:
    """The folder's layout, classes and image files (sorted, so a scan is reproducible)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder: give a folder of <class>/ subfolders, or one with train/ and test/")
    root = root.resolve()
    extensions, not_images = image_extensions(), []
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _classes(root / "train")
        if not classes:
            raise FolderError(f"{root / 'train'} has no class folders: put each class's images in train/<class>/")
        if (test_classes := _classes(root / "test")) != classes:
            missing = sorted(set(classes) ^ set(test_classes))
            raise FolderError(f"{root}: train/ and test/ must hold the same class folders ({', '.join(missing[:5])} "
                              "in only one of them): add or rename them")
        files = {split: [(f, label) for label, c in enumerate(classes)
                         for f in _class_files(root / split / c, root, extensions, not_images)]
                 for split in ("train", "test")}
        scanned = FolderScan(root, "train-test", classes, files, not_images)
    else:
        classes = [c for c in _classes(root) if c not in ("train", "test", "val")]
        if not classes:
            raise FolderError(f"{root} has no class folders: put each class's images in {root.name}/<class>/ "
                              "(any depth below it), or give train/<class>/ and test/<class>/")
        files = {"all": [(f, label) for label, c in enumerate(classes)
                         for f in _class_files(root / c, root, extensions, not_images)]}
        scanned = FolderScan(root, "classes", classes, files, not_images)
    if len(classes) < 2:
        raise FolderError(f"{root} has one class folder ({classes[0]}): similarity search learns from at least 2 "
                          "classes; add another class folder")
    check_sizes(scanned)
    return scanned


def _per_class(files: list[tuple[str, int]], n_classes: int) -> np.ndarray:
    return np.bincount(np.array([label for _, label in files], dtype=np.int64), minlength=n_classes)


def check_sizes(scanned: FolderScan, unreadable: int = 0) -> None:
    """Refuse, in one line naming the class and the fix, a class too small to be split."""
    if scanned.layout == "classes":
        checks = [("all", MIN_CLASS, "to be split into train, validation and test (2 of each at least)")]
    else:
        checks = [("train", MIN_TRAIN_CLASS, "in train/ (2 to train on and 2 held out for validation)"),
                  ("test", MIN_TEST, "in test/ (a test image needs another of its class)")]
    for split, minimum, why in checks:
        counts = _per_class(scanned.files[split], len(scanned.classes))
        small = [(scanned.classes[i], int(n)) for i, n in enumerate(counts) if n < minimum]
        if small:
            name, n = small[0]
            where = scanned.root / (name if scanned.layout == "classes" else f"{split}/{name}")
            more = f" (and {len(small) - 1} more such classes)" if len(small) > 1 else ""
            raise FolderError(f"class {name!r} has {n} image(s){more}; each class needs at least {minimum} "
                              f"{why}: add images to {where} or remove that folder")


def split_plain(files: list[tuple[str, int]], n_classes: int, seed: int = 0,
                fraction: float = TEST_FRACTION) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, test) of a plain folder: per class a seeded share of `fraction` (at least MIN_TEST)
    for test, in file order within each split."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(n_classes):
        mine = [f for f in files if f[1] == c]
        take = max(MIN_TEST, round(fraction * len(mine)))
        chosen = set(rng.permutation(len(mine))[:take].tolist())
        for i, f in enumerate(mine):
            (test if i in chosen else train).append(f)
    return train, test


# what Pillow raises for a file it cannot decode (or that is too large to decode safely)
UNREADABLE = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError,
              Image.DecompressionBombWarning)


def open_rgb(path: Path, side: int) -> Image.Image:
    """A file's first frame as an RGB image (EXIF-rotated, transparency on white, 16-bit
    rescaled: data.pil_to_mode), decoded at the smallest scale Pillow's draft mode allows that
    keeps its shorter side at least `side` px (JPEG: 1/2, 1/4 or 1/8; other formats decode
    whole). Raises one of UNREADABLE for a file it cannot use."""
    from .data import pil_to_mode

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{im.size[0]}x{im.size[1]} pixels")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            w, h = im.size
            m = max(min(w, h), 1)
            im.draft(im.mode, (-(-side * w // m), -(-side * h // m)))
            return pil_to_mode(im, "RGB")


def centre_box(w: int, h: int) -> tuple[int, int, int, int]:
    """The centred square of a w x h image, as queries.centre_square crops it."""
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s


def _open(path: Path, size: int) -> np.ndarray:
    """One file -> (size, size, 3) uint8: a centre crop to a square, then resized as the Embedder
    resizes a query (bilinear): the pixels a search for this file gets."""
    im = open_rgb(path, size)
    return np.asarray(im.crop(centre_box(*im.size)).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def decode(root: Path, files: list[tuple[str, int]], size: int, workers: int | None = None
           ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(images (N, size, size, 3) uint8, labels, the relative paths kept, "path: why" of each skipped
    file), decoding on `workers` threads (Pillow releases the GIL while it decodes)."""

    def one(item: tuple[str, int]) -> np.ndarray | str:
        try:
            return _open(root / item[0], size)
        except UNREADABLE as e:
            return f"{item[0]}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, files, chunksize=16))
    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    skipped = [r for r in results if isinstance(r, str)]
    images = np.stack([results[i] for i in keep]) if keep else np.zeros((0, size, size, 3), np.uint8)
    labels = np.array([files[i][1] for i in keep], dtype=np.int64)
    return images, labels, [files[i][0] for i in keep], skipped


def typical_side(root: Path, files: list[tuple[str, int]], sample: int = 200) -> int:
    """The median shorter side of up to `sample` of the files (read from their headers only)."""
    sides = []
    step = max(1, len(files) // sample)
    for rel, _ in files[::step][:sample]:
        try:
            with Image.open(root / rel) as im:
                sides.append(min(im.size))
        except (OSError, SyntaxError, ValueError):
            continue
    return int(np.median(sides)) if sides else 32


def dataset_key(root: Path, classes: list[str], test_files: list[str], test_x: np.ndarray, test_y: np.ndarray
                ) -> str:
    """What names a folder dataset's gallery: its resolved path and what its test split holds
    (class names, file names, pixels, labels). Two folders with one basename never share it."""
    h = hashlib.sha256()
    h.update(json.dumps({"root": str(root), "classes": classes, "files": test_files}).encode())
    h.update(np.ascontiguousarray(test_x).tobytes())
    h.update(np.ascontiguousarray(test_y, dtype=np.int64).tobytes())
    return h.hexdigest()


def safe_name(name: str) -> str:
    """A folder's name as a file-name part: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "images"


def gallery_file(name: str, key: str) -> str:
    """The gallery file of a folder dataset: its name and the start of its dataset_key."""
    return f"{safe_name(name)}-{key[:12]}.npz"
