"""Datasets as uint8 tensors in memory, plus normalisation and batched augmentation.

Whole datasets fit in memory (MNIST 47 MB, CIFAR-10 180 MB as uint8), so the training
loop indexes tensors (on the GPU when training there) instead of running a DataLoader
with per-sample PIL transforms: that is what keeps a 116k-parameter model fast.

Sources, in order: `<data_dir>/<name>.npz` (keys x_train, y_train, x_test, y_test; the
offline copies in shared/datasets), then torchvision's download into `data_dir`.  Any
other `dataset` argument is an image folder: <class>/ subfolders, or train/ and test/ ones
(image_folder.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image


class DataError(Exception):
    """A dataset could not be loaded; the message names the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    npz: str  # file name in --data-dir
    torchvision_class: str
    class_names: tuple[str, ...]
    augment: str  # default augmentation (see AUGMENTATIONS); none for digits: a flipped 2 is no 2
    epochs: int  # the paper's epochs: train.py's default for a one-stage run
    title: str  # how the demo, the tables and the model cards name it
    hub_id: str  # the dataset's repository on the Hugging Face Hub, for model cards
    query_style: str = "photo"  # how a user's image is brought to the dataset's form (queries.STYLES)


# Every dataset the project knows by name, declared here once.
KNOWN: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist.npz", "MNIST", tuple(str(i) for i in range(10)), "none", 20, "MNIST", "ylecun/mnist",
                         "mnist"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist.npz",
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "none",
        20,
        "FashionMNIST",
        "zalando-datasets/fashion_mnist",
        "fashion_mnist",
    ),
    "cifar10": DatasetInfo(
        "cifar10.npz",
        "CIFAR10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "crop-flip",
        25,
        "CIFAR-10",
        "uoft-cs/cifar10",
    ),
}
ALIASES = {"fashionmnist": "fashion_mnist", "fashion-mnist": "fashion_mnist", "cifar-10": "cifar10", "cifar": "cifar10"}
DEFAULT_DATA_DIR = Path(os.environ.get("INVOLUTION_DATA_DIR", "data"))
SPLIT_SEED = 0  # a plain image folder's train/test split: fixed, so every run and seed is tested alike


@dataclass
class ImageData:
    """Train, validation and test uint8 image tensors (N, C, H, W) with int64 labels. The
    validation split is empty until `hold_out_validation` takes it from the training set."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    augment: str  # the dataset's default augmentation
    source: str  # where the pixels came from, recorded in metrics.json
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # an image folder's files, per split ("train", "val", "test"), in the order of the tensors'
    # images, as (path relative to the folder, label); None for the named datasets
    files: dict[str, list[tuple[str, int]]] | None = None
    folder: dict | None = None  # an image folder: its resolved path, layout, split seed, skipped files

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[2:])  # type: ignore[return-value]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training pixels in [0, 1]."""
        x = self.train_x.float().div_(255).transpose(0, 1).reshape(self.channels, -1)
        return x.mean(1).tolist(), x.std(1).tolist()

    def train_subset(self, n: int | None) -> ImageData:
        """A copy with a random n of the training images (fixed seed, kept in order) and every test
        image; itself when n is None or covers them all."""
        if n is None or n >= len(self.train_y):
            return self
        g = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(self.train_y), generator=g)[:n].sort().values
        return dataclasses.replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep],
                                   files=self._files_with("train", keep))

    def _files_with(self, split: str, keep: torch.Tensor, **more: torch.Tensor) -> dict | None:
        """self.files with `split` cut to the positions `keep` (and each of `more` made from its positions)."""
        if self.files is None:
            return None
        source = self.files[split]
        out = {**self.files, split: [source[i] for i in keep.tolist()]}
        for name, idx in more.items():
            out[name] = [source[i] for i in idx.tolist()]
        return out

    def hold_out_validation(self, size: float, seed: int) -> ImageData:
        """A copy whose training set gives up a class-stratified validation split of `size` images
        (a fraction of the training set when below 1), drawn with `seed`: every class keeps its
        share, so a choice made on it weighs the classes as the test set does. 0 holds none out."""
        n = len(self.train_y)
        count = round(size * n) if size < 1 else int(size)
        if count == 0:
            return self
        n_classes = len(self.class_names)
        if not n_classes <= count <= n // 2:
            raise DataError(f"a validation split of {count} images cannot be held out of {n} training images: "
                            f"use between {n_classes} and {n // 2} (--set validation.size=N, or a fraction such "
                            "as 0.1)")
        g = torch.Generator().manual_seed(seed)
        counts = torch.bincount(self.train_y.cpu(), minlength=n_classes).double()
        share = counts * count / n  # each class's share, rounded so that the shares add up to count
        take = share.floor().long()
        take[torch.argsort(share - take, descending=True)[: count - int(take.sum())]] += 1
        val = []
        for c in range(n_classes):
            idx = (self.train_y.cpu() == c).nonzero().flatten()
            val.append(idx[torch.randperm(len(idx), generator=g)[: int(take[c])]])
        val_idx = torch.cat(val).sort().values
        keep = torch.ones(n, dtype=torch.bool)
        keep[val_idx] = False
        return dataclasses.replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep],
                                   val_x=self.train_x[val_idx], val_y=self.train_y[val_idx],
                                   files=self._files_with("train", keep.nonzero().flatten(), val=val_idx))

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of "train", "val" or "test"."""
        if name == "val" and self.val_y is None:
            raise DataError("this run holds no validation split out (validation.size = 0): choices need one")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def test_subset(self, n: int) -> ImageData:
        """A copy with a class-stratified random n of the test images (--quick); itself for 0."""
        if not n or n >= len(self.test_y):
            return self
        keep = torch.randperm(len(self.test_y), generator=torch.Generator().manual_seed(0))[:n].sort().values
        return dataclasses.replace(self, test_x=self.test_x[keep], test_y=self.test_y[keep],
                                   files=self._files_with("test", keep))

    def split_record(self) -> dict | None:
        """An image folder's split as train.py records it beside the checkpoint (split.json): the
        folder, its layout and classes, and each split's (relative path, label) pairs; None for the
        named datasets, whose splits are fixed."""
        if self.files is None or self.folder is None:
            return None
        return {**self.folder, "classes": self.class_names,
                **{split: [list(f) for f in self.files.get(split, [])] for split in ("train", "val", "test")}}

    def to(self, device: torch.device | str) -> ImageData:
        for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            if getattr(self, field) is not None:
                setattr(self, field, getattr(self, field).to(device))
        return self


def dataset_title(name: str) -> str:
    """How the demo names a dataset: a known one by its title, an image folder by its name."""
    return KNOWN[name].title if name in KNOWN else name


def query_style(name: str) -> str:
    """How a user's query is brought to a dataset's form: digits and garments are centred as
    their datasets were made, photos (CIFAR-10, any image folder) are centre-cropped."""
    return KNOWN[name].query_style if name in KNOWN else "photo"


def canonical_name(dataset: str) -> str:
    key = dataset.lower()
    return ALIASES.get(key, key)


def _nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    x = np.asarray(x, dtype=np.uint8)
    if x.ndim == 3:  # (N, H, W) greyscale
        x = x[:, :, :, None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _load_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (KeyError, ValueError) as e:  # a missing key; pickled objects, which are never loaded
        raise DataError(f"{path} is not a dataset .npz with x_train, y_train, x_test, y_test ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); copy or convert it again") from None


def check_arrays(source: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 n_classes: int) -> None:
    """Refuse, in one line naming the problem, arrays that would train wrongly or fail after an epoch:
    images that are not (N, H, W) or (N, H, W, 1|3) pixels 0-255, splits of other image shapes,
    x and y of different lengths, labels that are not whole numbers in 0..n_classes-1."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)) or len(x) == 0:
            raise DataError(f"{source}: x_{split} has shape {x.shape}; it must hold images (N, H, W) or (N, H, W, C) "
                            "with C 1 or 3")
        if x.dtype != np.uint8 and not (np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255):
            raise DataError(f"{source}: x_{split} is {x.dtype} with values {x.min()}..{x.max()}; store uint8 pixels "
                            "0-255")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{source}: x_{split} has {len(x)} images but y_{split} has shape {y.shape}; give one "
                            "label per image")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: y_{split} is {y.dtype}; labels must be whole numbers 0..{n_classes - 1}")
        bad = y[(y < 0) | (y >= n_classes)]
        if len(bad):
            raise DataError(f"{source}: y_{split} holds label {int(bad[0])} ({len(bad)} such); labels must be "
                            f"0..{n_classes - 1} for its {n_classes} classes")
    if np.asarray(x_train).shape[1:] != np.asarray(x_test).shape[1:]:
        raise DataError(f"{source}: train images are {np.asarray(x_train).shape[1:]} and test images "
                        f"{np.asarray(x_test).shape[1:]}; both splits need the same size and channels")


def _download(info: DatasetInfo, root: Path) -> tuple[np.ndarray, ...]:
    cls = getattr(torchvision.datasets, info.torchvision_class)
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as e:  # network errors come as URLError, RuntimeError, OSError...
        raise DataError(
            f"could not download {info.torchvision_class} with torchvision ({type(e).__name__}: {e}). "
            f"Offline? Put {info.npz} in a folder and pass --data-dir FOLDER "
            "(format: x_train, y_train, x_test, y_test uint8 arrays)."
        ) from None
    as_np = lambda a: a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return as_np(train.data), as_np(train.targets), as_np(test.data), as_np(test.targets)


def pil_to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Any PIL image -> mode "L" or "RGB", the one way both training (image folders) and queries
    (Embedder) see pixels: EXIF-rotated, transparency composited on white, 16-bit and float
    images rescaled to 0-255."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    elif image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float: rescale to 0-255
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        image = Image.fromarray(((arr - lo) / (hi - lo or 1.0) * 255).round().astype(np.uint8))
    return image.convert(mode)


def _load_image_folder(root: Path, image_size: int, log=print) -> ImageData:
    """An image folder (image_folder.py: plain <class>/ or train/ + test/), decoded once into RGB
    uint8 tensors of image_size x image_size; a plain folder is split into train and test here
    (validation is held out of train later, as for every dataset). Unreadable files are named
    and skipped."""
    from . import image_folder as fo

    try:
        scanned = fo.scan(root)
    except fo.FolderError as e:
        raise DataError(str(e)) from None
    root = scanned.root
    if scanned.layout == "classes":
        train, test = fo.split_plain(scanned.files["all"], len(scanned.classes), seed=SPLIT_SEED)
        splits = {"train": train, "test": test}
    else:
        splits = dict(scanned.files)
    log(f"{root}: {scanned.count():,} images in {len(scanned.classes)} classes "
        f"({'split here into train and test' if scanned.layout == 'classes' else 'train/ and test/'}), "
        f"decoding at {image_size} px ...")
    decoded, skipped = {}, []
    for split, files in splits.items():
        x, y, kept, bad = fo.decode(root, files, image_size)
        decoded[split] = (x, y, [(f, int(label)) for f, label in zip(kept, y.tolist(), strict=True)])
        skipped += bad
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        log(f"skipped {len(skipped)} unreadable file(s): {shown}")
    if scanned.not_images:
        log(f"ignored {len(scanned.not_images)} file(s) that are not images by their extension, e.g. "
            f"{scanned.not_images[0]}")
    kept_scan = fo.FolderScan(root, scanned.layout, scanned.classes,
                              {"all": decoded["train"][2] + decoded["test"][2]} if scanned.layout == "classes"
                              else {s: decoded[s][2] for s in ("train", "test")})
    if skipped:  # what is left must still split
        try:
            fo.check_sizes(kept_scan)
        except fo.FolderError as e:
            raise DataError(f"after skipping unreadable files, {e}") from None
    (xtr, ytr, ftr), (xte, yte, fte) = decoded["train"], decoded["test"]
    folder = {"root": str(root), "layout": scanned.layout, "split_seed": SPLIT_SEED,
              "test_fraction": fo.TEST_FRACTION if scanned.layout == "classes" else None,
              "image_size": image_size, "skipped": skipped, "not_images": len(scanned.not_images)}
    return ImageData(root.name, _nhwc_to_nchw(xtr), torch.from_numpy(ytr).long(), _nhwc_to_nchw(xte),
                     torch.from_numpy(yte).long(), list(scanned.classes), "crop-flip", f"image folder {root}",
                     files={"train": ftr, "test": fte}, folder=folder)


def load_recorded_split(record: dict, image_size: int) -> ImageData:
    """The images a checkpoint's split.json names, decoded as training decoded them: the same
    train, validation and test images, whatever the folder holds now (a file gone is refused)."""
    from . import image_folder as fo

    root = Path(record["root"])
    if not root.is_dir():
        raise DataError(f"the folder this checkpoint was trained on, {root}, is not there: its split.json names "
                        "files in it")
    arrays = {}
    for split in ("train", "val", "test"):
        files = [(str(f), int(label)) for f, label in record.get(split, [])]
        x, y, kept, bad = fo.decode(root, files, image_size)
        if bad:
            raise DataError(f"{len(bad)} file(s) of the recorded {split} split cannot be read any more, e.g. "
                            f"{bad[0]}: restore them, or retrain")
        arrays[split] = (_nhwc_to_nchw(x) if len(x) else torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8),
                         torch.from_numpy(y).long(), files)
    (xtr, ytr, ftr), (xv, yv, fv), (xte, yte, fte) = arrays["train"], arrays["val"], arrays["test"]
    return ImageData(root.name, xtr, ytr, xte, yte, list(record["classes"]), "crop-flip", f"image folder {root}",
                     val_x=xv if len(yv) else None, val_y=yv if len(yv) else None,
                     files={"train": ftr, "val": fv, "test": fte},
                     folder={k: v for k, v in record.items() if k not in ("train", "val", "test", "classes")})


def unknown_dataset(dataset: str) -> DataError:
    """The one line for a --dataset that is neither a known name nor a folder: a path that does not
    exist or is a file is named as such, anything else is an unknown name."""
    path = Path(dataset).expanduser()
    choices = "mnist, fashion_mnist, cifar10, or an image folder (<class>/ subfolders, or train/ and test/ ones)"
    if path.is_file():
        return DataError(f"--dataset {dataset} is a file, not a folder: give the folder that holds the class folders")
    if "/" in dataset or os.sep in dataset or dataset.startswith((".", "~")):
        return DataError(f"no folder at {path.absolute()}: check the path; --dataset takes {choices}")
    return DataError(f"unknown dataset {dataset!r}: use {choices}")


def load_dataset(
    dataset: str,
    data_dir: str | Path | None = None,
    max_train_samples: int | None = None,
    image_size: int = 32,
    log=print,
) -> ImageData:
    """Load MNIST, FashionMNIST, CIFAR-10 (by name) or an image folder (by path: image_folder.py).

    `image_size` applies to image folders only; the named datasets keep their native size.
    `max_train_samples` keeps a random subset (fixed seed) of the training set.
    """
    name = canonical_name(dataset)
    if name in KNOWN:
        info = KNOWN[name]
        root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
        npz = root / info.npz
        if npz.is_file():
            arrays, source = _load_npz(npz), str(npz)
        elif name == "cifar10" and (root / "cifar10-jpeg.tar.gz").is_file():
            raise DataError(
                f"{root} has cifar10-jpeg.tar.gz but no cifar10.npz: convert it once with "
                f"`python {root / 'cifar10_jpeg_to_npz.py'} {root / 'cifar10-jpeg.tar.gz'} {npz}`"
            )
        else:
            arrays, source = _download(info, root), f"torchvision download in {root}"
        xtr, ytr, xte, yte = arrays
        check_arrays(source, xtr, ytr, xte, yte, len(info.class_names))
        data = ImageData(name, _nhwc_to_nchw(xtr), torch.from_numpy(np.asarray(ytr)).long(),
                         _nhwc_to_nchw(xte), torch.from_numpy(np.asarray(yte)).long(),
                         list(info.class_names), info.augment, source)
    elif Path(dataset).expanduser().is_dir():
        data = _load_image_folder(Path(dataset).expanduser(), image_size, log)
    else:
        raise unknown_dataset(dataset)
    if max_train_samples is not None and max_train_samples < 1:
        raise DataError(f"--max-train-samples must be at least 1 (got {max_train_samples}); drop it to train on all")
    return data.train_subset(max_train_samples)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardised; mean and std are (C,) tensors for [0, 1] pixels."""
    return (x.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


# augmentation mode -> (padding of its random crop in px, whether it also flips horizontally)
CROP_FLIP: dict[str, tuple[int, bool]] = {
    "flip": (0, True), "shift": (2, False), "shift-flip": (2, True), "crop-flip": (4, True),
}
# augmentation mode -> (the smallest crop side, as a share of the image's; the largest rotation in
# degrees; how colours are changed: "" not, "recolour" channels shuffled and half the images
# inverted, "mix" a random 3x3 colour matrix per image; whether half the images are mirrored): a
# random crop of that size or larger, anywhere, rotated a little, resized back to the image size
# (image folders: objects of any size and place; digits: a little larger, moved and turned, never
# mirrored); colours changed for classes that do not depend on them (textures, shapes of any colour)
ZOOM: dict[str, tuple[float, float, str, bool]] = {"zoom-flip": (0.6, 10.0, "", True),
                                                   "zoom-flip-recolour": (0.6, 10.0, "recolour", True),
                                                   "zoom-flip-mix": (0.6, 10.0, "mix", True),
                                                   "zoom-turn": (0.85, 12.0, "", False)}
AUGMENTATIONS = ("none", *CROP_FLIP, *ZOOM)


def augment(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """none; flip: horizontal flip only (the test images' own framing, for a last stage);
    shift: random translation by up to 2 px (digits, where flips change the class);
    shift-flip: the same and a horizontal flip (clothes, where a mirror image keeps its class);
    crop-flip: random 4-px-padded crop and horizontal flip (the CIFAR-10 standard);
    zoom-flip: a random square crop of 60-100% of the side, anywhere, turned by up to 10 degrees,
    mirrored half the time and resized back (image folders: objects of any size and place);
    zoom-flip-recolour: the same, the colour channels shuffled and half the images inverted (image
    folders whose classes do not depend on colour); zoom-flip-mix: the same, each image's colours
    mapped by a random 3x3 matrix (mix_colours); zoom-turn: a square of 85-100% of the side,
    anywhere, turned by up to 12 degrees, never mirrored (digits, where a mirror image is another
    class or none)."""
    offsets = draw_offsets(mode, len(x), generator)
    return x if offsets is None else apply_draws(x, mode, tuple(t.to(x.device) for t in offsets))


def apply_draws(x: torch.Tensor, mode: str, draws: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A (B, C, H, W) uint8 batch augmented with draw_offsets' draws for it (on x's device)."""
    if mode in ZOOM:
        out = zoom_flip(x, *draws[:5])
        colours = ZOOM[mode][2]
        return recolour(out, *draws[5:]) if colours == "recolour" else mix_colours(out, *draws[5:]) if colours else out
    return crop_flip(x, *draws, pad=CROP_FLIP[mode][0])


def draw_offsets(mode: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...] | None:
    """The random draws of `augment` for n images: (dy, dx, flip), or None for mode none.

    Drawn on the CPU from `generator`, so that a resumed run draws exactly what an
    uninterrupted one would; the trainer draws a whole epoch at once and moves it to the
    GPU in one copy, keeping per-step host-device synchronisations out of the loop.
    """
    if mode in ZOOM:
        smallest, degrees, colours, mirrors = ZOOM[mode]
        side = smallest + (1 - smallest) * torch.rand(n, generator=generator)
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
        tx, ty = ((torch.rand(n, generator=generator) * 2 - 1) * (1 - side) for _ in range(2))
        draws = (side, angle, tx, ty, torch.rand(n, generator=generator) < (0.5 if mirrors else 0.0))
        if colours == "recolour":  # a channel order per image (for any channel count) and whether it is inverted
            draws += (torch.rand(n, 3, generator=generator).argsort(1), torch.rand(n, generator=generator) < 0.5)
        elif colours:  # a colour matrix per image
            draws += (torch.rand(n, 3, 3, generator=generator) * 2 - 1,)
        return draws
    if mode not in CROP_FLIP:
        return None
    pad, flip = CROP_FLIP[mode]
    return _draw_crop_flip(n, pad, flip, generator)


def zoom_flip(x: torch.Tensor, side: torch.Tensor, angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
              flip: torch.Tensor) -> torch.Tensor:
    """Each image of a (B, C, H, W) uint8 batch: the square of `side` (a share of the image's side)
    centred at (tx, ty) (in [-1, 1] image coordinates), turned by `angle` radians and mirrored where
    `flip`, resampled bilinearly to the full size (edges mirrored), in one grid_sample."""
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    mirror = 1.0 - 2.0 * flip.to(cos.dtype)
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, torch.float32), list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def recolour(x: torch.Tensor, order: torch.Tensor, invert: torch.Tensor) -> torch.Tensor:
    """Each image of a (B, C, H, W) uint8 batch with its channels in `order` (B, 3) (a 1-channel
    batch keeps its one) and inverted where `invert` (B,)."""
    if x.shape[1] == 3:
        x = torch.gather(x, 1, order[:, :, None, None].expand(-1, -1, *x.shape[2:]))
    return torch.where(invert[:, None, None, None], 255 - x, x)


def mix_colours(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Each image of a (B, 3, H, W) uint8 batch with its colours mapped by its own 3x3 `matrix`
    (entries in [-1, 1]: channel shuffles and inversions are special cases) about mid-grey, then
    stretched back to 0-255: new colours, the same pattern. A 1-channel batch is returned as is."""
    if x.shape[1] != 3:
        return x
    y = torch.einsum("bij,bjhw->bihw", matrix.to(x.device, torch.float32), x.float() / 255 - 0.5)
    lo, hi = y.amin((1, 2, 3), keepdim=True), y.amax((1, 2, 3), keepdim=True)
    return ((y - lo) / (hi - lo).clamp_min(1e-6) * 255).round_().to(torch.uint8)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (zero padding `pad`) and, if `flip`, horizontal flip of a (B, C, H, W) batch."""
    dy, dx, flips = _draw_crop_flip(len(x), pad, flip, generator)
    return crop_flip(x, dy.to(x.device), dx.to(x.device), flips.to(x.device), pad)


def _draw_crop_flip(n: int, pad: int, flip: bool, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < (0.5 if flip else 0.0)
    return dy, dx, flips


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each image of a (B, C, H, W) batch at offset (dy, dx) of its `pad`-padded copy and
    mirror those with flip set, in one gather on x's device.

    torchvision's RandomCrop applies one crop to a whole batch tensor; this gives each image its own.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
