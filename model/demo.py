"""What the demo does, without the UI: read queries, search, lay out the map and the
feature maps.  app.py only wires these functions to Gradio components."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from .data import normalize
from .embedder import CheckpointError, load_model, read_config
from .hub import CHECKPOINT_FILES, download_checkpoint
from .index import INDEX_JSON, INDEX_NPZ, BundleError, Hit, SearchIndex, build_bundle, load_index

ASSETS = Path(os.environ.get("INVOLUTION_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
# Model repositories to serve instead of the shipped checkpoints of the same dataset and model,
# e.g. INVOLUTION_MODELS="hf://USER/involution-cifar10-hybrid1 hf://USER/involution-mnist-hybrid1"
# (a Space variable); separated by spaces or commas.
HUB_MODELS_ENV = "INVOLUTION_MODELS"
DATASETS = {"MNIST": "mnist", "FashionMNIST": "fashion_mnist", "CIFAR-10": "cifar10"}
MODELS = {"Hybrid-1": "hybrid1", "CNN-3a": "cnn3a", "Hybrid-2": "hybrid2", "Hybrid-3": "hybrid3"}
NEIGHBOUR, QUERY = "top-k neighbour", "query"
# One colour domain for every dataset: Gradio's scatter plot keeps the colour domain of
# its first value, so per-dataset class names would vanish after switching datasets.
MAP_GROUPS = [f"class {i}" for i in range(10)] + [NEIGHBOUR, QUERY]
MAP_COLORS = dict(zip(MAP_GROUPS, ["#4e79a7", "#f28e2b", "#59a14f", "#b6992d", "#499894", "#86bcb6", "#e15759",
                                   "#ff9d9a", "#b07aa1", "#9d7660", "#000000", "#ff0000"], strict=True))
MIN_SIDE = 8
MAX_PIXELS = 25_000_000  # larger uploads are refused as possible decompression bombs
MAX_FILE_BYTES = 20 * 1024 * 1024
THUMB = 112  # gallery thumbnails: small images upscaled with nearest neighbour


class QueryError(Exception):
    """The query image cannot be used; the message says why and what to do."""


def open_upload(path: str | Path) -> tuple[Image.Image, str]:
    """Open an uploaded file as a fully decoded image, or raise QueryError naming the problem.

    Returns (image, note): the note tells about repairs made, e.g. the first frame of an
    animation.  Mode, bit depth, EXIF rotation and transparency are handled by the embedder.
    """
    path = Path(path)
    if not path.is_file():
        raise QueryError("no file was received; upload an image (PNG, JPEG, WebP, BMP, GIF)")
    size = path.stat().st_size
    if size == 0:
        raise QueryError("the uploaded file is empty (0 bytes); upload an image file")
    if size > MAX_FILE_BYTES:
        raise QueryError(f"the file is {size / 2**20:.0f} MB; upload an image under {MAX_FILE_BYTES // 2**20} MB")
    note = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
            try:
                image = Image.open(path)
                w, h = image.size
                if w * h > MAX_PIXELS:
                    raise Image.DecompressionBombError
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                    note = f"animated image: searched with its first frame of {image.n_frames}"
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise QueryError(f"the image is too large to decode safely (over {MAX_PIXELS // 10**6} megapixels); "
                         "upload a smaller image") from None
    except UnidentifiedImageError:
        raise QueryError("the file is not an image PIL can read; upload PNG, JPEG, WebP, BMP or GIF") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise QueryError(f"the image file is truncated or corrupt ({e}); upload it again or use another file") from None
    if min(image.size) < MIN_SIDE:
        raise QueryError(f"the image is {image.size[0]}x{image.size[1]} pixels; it needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE} to be searched")
    return image, note


def sketch_to_image(value: dict | np.ndarray | None, size: int = 28) -> Image.Image | None:
    """A sketchpad drawing -> a white-on-black, MNIST-style centred digit; None when empty.

    Strokes are found from alpha (transparent canvas) or darkness (white canvas), cropped
    to their bounding box, scaled into 20x20 and centred in 28x28, as MNIST was made.
    """
    if isinstance(value, dict):
        value = value.get("composite")
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[2] == 4 and arr[..., 3].min() < 255:
        ink = arr[..., 3].astype(np.float32) * (1 - arr[..., :3].mean(-1) / 255 * 0.5)
    else:
        grey = arr if arr.ndim == 2 else arr[..., :3].mean(-1)
        ink = 255 - grey.astype(np.float32)
    mask = ink > 40
    if mask.sum() < 5:
        return None
    ys, xs = np.nonzero(mask)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    side = max(crop.shape)
    square = np.zeros((side, side), np.float32)
    oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    inner = round(size * 20 / 28)
    digit = Image.fromarray(square.clip(0, 255).astype(np.uint8)).resize((inner, inner), Image.LANCZOS)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(digit, ((size - inner) // 2, (size - inner) // 2))
    return canvas


def thumbnail(image: np.ndarray | Image.Image, side: int = THUMB) -> Image.Image:
    """Upscale small images with nearest neighbour so pixels stay crisp."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.squeeze(image))
    scale = max(1, side // max(im.size))
    return im.resize((im.size[0] * scale, im.size[1] * scale), Image.NEAREST)


@dataclass
class SearchResult:
    query_embedding: np.ndarray
    hits: list[Hit]
    gallery: list[tuple[Image.Image, str]]
    table: pd.DataFrame
    precision: float | None
    query_xy: tuple[float, float]


@dataclass
class Demo:
    """The shipped checkpoints and their search bundles, loaded on first use."""

    assets: Path = ASSETS
    log: object = print
    build: Callable[..., Path] = build_bundle  # how a stale search bundle is rebuilt (see load_index)
    hub_models: Sequence[str] = field(
        default_factory=lambda: os.environ.get(HUB_MODELS_ENV, "").replace(",", " ").split())
    _indexes: dict[tuple[str, str], SearchIndex] = field(default_factory=dict)
    _thumbs: Path = field(default_factory=lambda: _temporary_folder("involution-thumbs-"))
    _from_hub: dict[str, Path] = field(default_factory=dict)
    # (dataset, model) -> None when it loads, else (the error class to raise, the reason)
    _problems: dict[tuple[str, str], tuple[type[Exception], str] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for reference in self.hub_models:
            try:
                name, folder = self._download(reference)
            except (CheckpointError, BundleError) as e:  # the shipped weights stay in service
                self.log(f"{reference} not loaded, keeping the shipped weights: {e}")
                continue
            self._from_hub[name] = folder
            self.log(f"{name}: serving {reference}")

    def _download(self, reference: str) -> tuple[str, Path]:
        """A model repository's checkpoint and search bundle, copied from huggingface_hub's cache
        into a folder of the demo's own, where a stale bundle can be rebuilt without touching the cache."""
        cached = download_checkpoint(reference, files=(*CHECKPOINT_FILES, INDEX_JSON, INDEX_NPZ))
        config = read_config(cached)
        dataset = config.get("dataset", "")
        name = f"{dataset}-{config['model']}"
        if not (self.assets / "gallery" / f"{dataset}.npz").is_file():
            raise BundleError(f"it is a {dataset!r} checkpoint and the demo has no gallery for it")
        folder = _temporary_folder("involution-hub-") / name
        folder.mkdir()
        for file in cached.iterdir():
            shutil.copyfile(file, folder / file.name)  # the cache's links resolved to plain files
        return name, folder

    def checkpoint(self, dataset: str, model: str) -> Path:
        name = f"{DATASETS.get(dataset, dataset)}-{MODELS.get(model, model)}"
        return self._from_hub.get(name, self.assets / name)

    def available(self) -> list[tuple[str, str]]:
        return [(d, m) for d in DATASETS for m in MODELS if (self.checkpoint(d, m) / "config.json").is_file()]

    def problem(self, dataset: str, model: str) -> str | None:
        """Why a listed checkpoint cannot serve, in one line (its weights or config do not load,
        or its bundle could not be rebuilt), or None; found once, so a broken one costs nothing
        on later requests."""
        key = (dataset, model)
        if key not in self._problems:
            try:
                load_model(self.checkpoint(dataset, model))
                self._problems[key] = None
            except CheckpointError as e:
                self._problems[key] = (CheckpointError, str(e))
        return self._problems[key] and self._problems[key][1]

    def index(self, dataset: str, model: str) -> SearchIndex:
        """The checkpoint's search index, loaded (and its bundle rebuilt, if need be) once; a checkpoint
        that cannot serve raises the same one-line error on every request without trying again."""
        key = (dataset, model)
        if key not in self._indexes:
            folder = self.checkpoint(dataset, model)
            if not (folder / "config.json").is_file():
                raise BundleError(f"no {model} weights for {dataset} in {folder}: train them with train.py")
            if known := self._problems.get(key):
                error, reason = known
                raise error(f"{model} on {dataset} is unavailable: {reason}")
            try:
                self._indexes[key] = load_index(folder, gallery_dir=self.assets / "gallery", log=self.log,
                                                build=self.build)
            except CheckpointError as e:
                self._problems[key] = (CheckpointError, str(e))
                raise CheckpointError(f"{model} on {dataset} is unavailable: {e}") from None
            except (BundleError, OSError) as e:
                self._problems[key] = (BundleError, str(e) if isinstance(e, BundleError) else f"its search bundle: {e}")
                raise BundleError(f"{model} on {dataset} is unavailable: {self._problems[key][1]}") from None
        return self._indexes[key]

    def search(self, dataset: str, model: str, image: Image.Image | np.ndarray, k: int,
               query_label: int | None = None, exclude: int | None = None) -> SearchResult:
        """Top-k gallery images for a query; `exclude` drops the query's own gallery entry."""
        index = self.index(dataset, model)
        query = index.embedder.embed([image])[0]
        hits = index.search_embedding(query, k + (exclude is not None))
        hits = [h for h in hits if h.index != exclude][:k]
        names = index.class_names
        gallery = [(self.thumbnail_file(dataset, model, h.index), f"{names[h.label]} · {h.similarity:.3f}")
                   for h in hits]
        table = pd.DataFrame({"gallery index": [h.index for h in hits], "label": [names[h.label] for h in hits],
                              "similarity": [round(h.similarity, 4) for h in hits]})
        return SearchResult(query, hits, gallery, table, SearchIndex.precision_at_k(query_label, hits),
                            index.place_on_map(hits))

    @property
    def thumbnail_folder(self) -> Path:
        """Where thumbnail_file renders: write-once files, so the app can serve them as static
        files (gr.set_static_paths) instead of Gradio hashing and copying each into its cache
        on every search."""
        return self._thumbs

    def thumbnail_file(self, dataset: str, model: str, i: int) -> str:
        """Gallery image i as an upscaled PNG file, rendered on first use: Gradio serves a file
        as it is, so a search encodes no images (PNG encoding took a fifth of the server's
        time per search under load)."""
        path = self._thumbs / f"{DATASETS.get(dataset, dataset)}-{MODELS.get(model, model)}-{i}.png"
        if not path.exists():
            tmp = path.with_name(f"{path.stem}.{threading.get_ident()}.tmp")
            thumbnail(self.index(dataset, model).images[i]).save(tmp, format="PNG")
            os.replace(tmp, path)  # concurrent searches may render the same image: last one wins, whole
        return str(path)

    def point_in_band(self, dataset: str, model: str, x0: float, x1: float) -> int:
        """The gallery point nearest the centre of a brushed x-range on the map (Gradio's
        scatter plot reports a brushed x-interval, not a clicked point)."""
        xs = self.index(dataset, model).xy[:, 0]
        return int(np.abs(xs - (x0 + x1) / 2).argmin())

    def map_frame(self, dataset: str, model: str, result: SearchResult | None = None) -> pd.DataFrame:
        """The UMAP scatter as a table: one row per gallery image, then the query. `group`
        (the colour) is the class id, or top-k neighbour / query; `label` is the class name."""
        index = self.index(dataset, model)
        names = np.array(index.class_names)
        groups = np.array(MAP_GROUPS)[np.minimum(index.labels, 9)]  # datasets of > 10 classes share colours
        df = pd.DataFrame({"x": index.xy[:, 0], "y": index.xy[:, 1], "group": groups.astype(object),
                           "label": names[index.labels].astype(object), "index": np.arange(len(index))})
        if result is not None:
            df.loc[[h.index for h in result.hits], "group"] = NEIGHBOUR
            df = pd.concat([df, pd.DataFrame([{"x": result.query_xy[0], "y": result.query_xy[1],
                                               "group": QUERY, "label": "query", "index": -1}])])
        return df


def _temporary_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _fig_to_image(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _show(ax, arr: np.ndarray, title: str, cmap: str = "viridis") -> None:
    ax.imshow(arr, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


@torch.inference_mode()
def involution_maps(demo: Demo, dataset: str, image: Image.Image | np.ndarray, pixel: tuple[int, int],
                    model: str = "Hybrid-1") -> Image.Image:
    """One figure: the input; each involution layer's output (one for Hybrid-1, two or three
    for Hybrid-2/3 weights: the paper's Figure 3); the first layer's generated kernels across
    positions (one map per kernel tap); its 3x3 kernel at `pixel`; the first convolution's
    feature maps of the hybrid beside CNN-3a's on the same image."""
    if not model.startswith("Hybrid") or not (demo.checkpoint(dataset, model) / "config.json").is_file():
        model = "Hybrid-1"
    hyb = demo.index(dataset, model).embedder
    x_u8 = hyb.to_uint8([image])
    x = normalize(x_u8, hyb.mean, hyb.std)
    net = hyb.model
    inv_outs, kernels, h = [], [], x
    for block in net.involutions:
        kernels.append(block.inv.kernel(h)[0, 0])  # (K*K, H, W)
        h = block(h)
        inv_outs.append(h[0])
    hyb_conv = net.convs[0].act(net.convs[0].conv(h))[0]
    cnn_conv = None
    if (demo.checkpoint(dataset, "CNN-3a") / "config.json").is_file() and not demo.problem(dataset, "CNN-3a"):
        try:
            cnn = demo.index(dataset, "CNN-3a").embedder
            xc = normalize(x_u8, cnn.mean, cnn.std)
            cnn_conv = cnn.model.convs[0].act(cnn.model.convs[0].conv(xc))[0]
        except (BundleError, CheckpointError):  # an unavailable CNN-3a drops its row, not the figure
            pass

    rows = 3 + (cnn_conv is not None)
    fig, axes = plt.subplots(rows, 9, figsize=(13, 1.6 * rows + 0.4))
    for ax in axes.flat:
        ax.axis("off")
    img = x_u8[0].permute(1, 2, 0).numpy()
    _show(axes[0, 0], img.squeeze(), "input", "gray")
    for i, out in enumerate(inv_outs[:4]):
        _show(axes[0, 1 + i], out.mean(0).numpy(), f"involution {i + 1} output")
    r, c = pixel
    r, c = int(np.clip(r, 0, img.shape[0] - 1)), int(np.clip(c, 0, img.shape[1] - 1))
    axes[0, 0].plot([c], [r], "r+", ms=10)
    kern = kernels[0][:, r, c].view(3, 3).numpy()
    ax = axes[0, 6]
    ax.imshow(kern, cmap="coolwarm", vmin=-abs(kern).max(), vmax=abs(kern).max())
    for (i, j), v in np.ndenumerate(kern):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    ax.set_title(f"3x3 kernel at ({r},{c})", fontsize=8)
    for t in range(9):
        _show(axes[1, t], kernels[0][t].numpy(), f"kernel tap ({t // 3},{t % 3})", "coolwarm")
    for ch in range(min(9, hyb_conv.shape[0])):
        _show(axes[2, ch], hyb_conv[ch].numpy(), f"{model} conv1 #{ch}")
    if cnn_conv is not None:
        for ch in range(min(9, cnn_conv.shape[0])):
            _show(axes[3, ch], cnn_conv[ch].numpy(), f"CNN-3a conv1 #{ch}")
    fig.suptitle("row 2: how the generated kernel changes from pixel to pixel (one map per tap)", fontsize=9)
    return _fig_to_image(fig)
