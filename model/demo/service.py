"""The checkpoints the demo serves and what it does with them, without the UI: find them,
load their search indexes, read uploads, search, render thumbnails and the feature maps.

Every checkpoint folder in the assets folder (`INVOLUTION_ASSETS`, default assets/) is served,
named by its config.json: the dataset list, the model list and the compare choices come from
there and from data.KNOWN (a dataset's title, class names and query style), never from literals,
so a checkpoint trained on an ImageFolder (`train.py --dataset PATH/shapes --out assets/shapes-hybrid1`)
is listed as "shapes" and searched in the gallery train.py sampled for it."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from ..checkpoint import CheckpointError, load_model, read_config
from ..data import KNOWN, dataset_title, normalize, query_style
from ..hub import CHECKPOINT_FILES, download_checkpoint
from ..index import INDEX_JSON, INDEX_NPZ, BundleError, Hit, SearchIndex, build_bundle, fit_umap, load_index
from ..networks import TITLES, model_title
from .own_gallery import OwnImages
from .queries import prepare_query

ASSETS = Path(os.environ.get("INVOLUTION_ASSETS", Path(__file__).resolve().parents[2] / "assets"))
# Model repositories to serve instead of the shipped checkpoints of the same dataset and model,
# e.g. INVOLUTION_MODELS="hf://USER/involution-cifar10-hybrid1 hf://USER/involution-mnist-hybrid1"
# (a Space variable); separated by spaces or commas.
HUB_MODELS_ENV = "INVOLUTION_MODELS"
COMPARED = ("hybrid1", "cnn3a")  # the paper's pair: "compare" shows the other of them beside the chosen one
MIN_SIDE = 8
MAX_PIXELS = 25_000_000  # larger uploads are refused as possible decompression bombs
MAX_FILE_BYTES = 20 * 1024 * 1024
KEEP_SIDE = 1024  # a decoded upload is kept at most this large: the models see 28 or 32 px
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
    return keep_small(image), note  # the page keeps the query for later searches; /search reads it the same way


def keep_small(image: Image.Image) -> Image.Image:
    """`image`, or a copy at most KEEP_SIDE pixels on its longer side: the models see 28 or 32 px."""
    if max(image.size) > KEEP_SIDE:
        image = image.copy()
        image.thumbnail((KEEP_SIDE, KEEP_SIDE), Image.LANCZOS)
    return image


def thumbnail(image: np.ndarray | Image.Image, side: int = THUMB) -> Image.Image:
    """Upscale small images with nearest neighbour so pixels stay crisp."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.squeeze(image))
    scale = max(1, side // max(im.size))
    return im.resize((im.size[0] * scale, im.size[1] * scale), Image.NEAREST)


@dataclass
class SearchResult:
    query_embedding: np.ndarray
    hits: list[Hit]
    gallery: list[tuple[str, str]]  # (thumbnail file, "class · similarity"): search_api only
    table: pd.DataFrame | None  # gallery index, label, similarity: search_api only
    precision: float | None


def dataset_name(dataset: str) -> str:
    """A dataset's title ("CIFAR-10") or name ("cifar10", "shapes") -> its name."""
    return next((name for name, info in KNOWN.items() if info.title == dataset), dataset)


def model_name(model: str) -> str:
    """A model's title ("Hybrid-1") or registry name -> its registry name."""
    return next((name for name, title in TITLES.items() if title == model), model)


def prepare_upload(path: str | Path, dataset: str) -> tuple[Image.Image, list[str]]:
    """An uploaded file -> (the image in the dataset's form, what was done), as the page and the
    /search API both search it; raises QueryError for a file that cannot be used."""
    image, note = open_upload(path)
    seen, notes = prepare_query(image, query_style(dataset_name(dataset)))
    return seen, [note, *notes] if note else notes


@dataclass
class OwnGallery:
    """A user's images for one browser session, embedded lazily per model."""

    own: OwnImages
    thumbs: list[str]  # PNG files named by position, never by an uploaded name
    indexes: dict[tuple[str, str], SearchIndex] = field(default_factory=dict)
    map_method: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """Names this gallery for as long as it lives (its thumbnail folder is its own)."""
        return Path(self.thumbs[0]).parent.name if self.thumbs else ""

    def __len__(self) -> int:
        return len(self.own.images)


@dataclass
class FeatureMaps:
    """What the feature-map view shows for one query and one kernel pixel."""

    model: str
    image: np.ndarray  # (H, W) or (H, W, 3) uint8, as the model sees it
    pixel: tuple[int, int]  # (row, column), clipped to the image
    involution_outputs: list[np.ndarray]  # per involution layer, (H, W): the channel mean
    kernel_taps: np.ndarray  # (9, H, W): the first layer's generated kernel, one map per tap
    kernel_at_pixel: np.ndarray  # (3, 3)
    conv: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (C, H, W) first-conv maps


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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _served: dict[tuple[str, str], Path] | None = None  # found once: see served()
    _gallery_thumbs: dict[str, list[str]] = field(default_factory=dict)  # dataset -> its thumbnail files
    _json_files: dict[str, str] = field(default_factory=dict)  # static_json: key -> file
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

    def served(self) -> dict[tuple[str, str], Path]:
        """(dataset title, model title) -> checkpoint folder, for every checkpoint folder in the
        assets folder (named by its config.json, or by its folder name `<dataset>-<model>` when that
        cannot be read, so a damaged one is listed and named as unavailable) and every model
        repository of INVOLUTION_MODELS in place of the folder of the same name. Known datasets
        come first in data.KNOWN's order, then the others by name; Hybrid-1 and CNN-3a first."""
        if self._served is not None:
            return self._served
        found: dict[tuple[str, str], Path] = {}
        # a folder with a dot in its name is a leftover (name.replaced, .tmp), never served
        folders = sorted(p for p in self.assets.iterdir() if "." not in p.name and (p / "config.json").is_file()
                         ) if self.assets.is_dir() else []
        for folder in folders:
            try:
                config = read_config(folder)
                key = (str(config["dataset"]), str(config["model"]))
            except (CheckpointError, KeyError, TypeError):
                dataset, _, model = folder.name.rpartition("-")
                key = (dataset or folder.name, model)
            if key not in found or folder.name == f"{key[0]}-{key[1]}":
                found[key] = folder
        for folder in self._from_hub.values():
            config = read_config(folder)
            found[(str(config["dataset"]), str(config["model"]))] = folder
        known, models = list(KNOWN), [*COMPARED, *TITLES]
        order = lambda key: (known.index(key[0]) if key[0] in known else len(known), key[0],
                             models.index(key[1]) if key[1] in models else len(models), key[1])
        self._served = {(dataset_title(d), model_title(m)): found[(d, m)] for d, m in sorted(found, key=order)}
        return self._served

    def checkpoint(self, dataset: str, model: str) -> Path:
        """The folder serving a dataset and model (titles or names); where none does, the folder
        it would be in."""
        d, m = dataset_name(dataset), model_name(model)
        return self.served().get((dataset_title(d), model_title(m)), self.assets / f"{d}-{m}")

    def available(self) -> list[tuple[str, str]]:
        return list(self.served())

    def datasets(self) -> list[str]:
        """The served datasets' titles, in the order the page lists them."""
        return list(dict.fromkeys(d for d, _ in self.served()))

    def models(self, dataset: str) -> list[str]:
        return [m for d, m in self.served() if d == dataset]

    def compared(self, dataset: str, model: str) -> list[str]:
        """The models a "compare" search shows: the chosen one, then the other of the paper's
        pair where it serves this dataset."""
        pair = [model_title(m) for m in COMPARED]
        if model not in pair:
            return [model]
        return [model, *(m for m in pair if m != model and m in self.models(dataset) and not self.problem(dataset, m))]

    @staticmethod
    def query_style(dataset: str) -> str:
        return query_style(dataset_name(dataset))

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
        query, hits = self.index(dataset, model).search(image, k, exclude)
        return SearchResult(query, hits, [], None, SearchIndex.precision_at_k(query_label, hits))

    def search_api(self, dataset: str, model: str, image: Image.Image, k: int) -> SearchResult:
        """As search, with the gallery as upscaled PNG files and a table, as /search returns them."""
        index = self.index(dataset, model)
        query, hits = index.search(image, k)
        names = index.class_names
        gallery = [(self.thumbnail_file(dataset, model, h.index), f"{names[h.label]} · {h.similarity:.3f}")
                   for h in hits]
        table = pd.DataFrame({"gallery index": [h.index for h in hits], "label": [names[h.label] for h in hits],
                              "similarity": [round(h.similarity, 4) for h in hits]})
        return SearchResult(query, hits, gallery, table, None)

    def gallery_thumbs(self, dataset: str, model: str) -> list[str]:
        """Every gallery image of a dataset as a native-size PNG file (the page upscales them with
        `image-rendering: pixelated`), rendered once per dataset: the examples, the results and the
        map's hover all point at these files, so a search sends names, not pixels."""
        name = dataset_name(dataset)
        if name not in self._gallery_thumbs:
            index = self.index(dataset, model)
            folder = self._thumbs / "gallery" / name
            paths = [str(folder / f"{i}.png") for i in range(len(index))]
            with self._lock:
                if name not in self._gallery_thumbs:
                    folder.mkdir(parents=True, exist_ok=True)
                    for path, image in zip(paths, index.images, strict=True):
                        Image.fromarray(np.squeeze(image)).save(path, format="PNG", compress_level=1)
                    self._gallery_thumbs[name] = paths
        return self._gallery_thumbs[name]

    def static_json(self, key: str, make: Callable[[], dict]) -> str:
        """`make()` as a JSON file under the thumbnail folder, written once per key (the page's map:
        the browser fetches its 2,000 points once, and a search then sends only the highlight;
        points in the component's props cost about 200 ms per search to re-render). Named by the
        key's hash, so concurrent first requests write the same file."""
        if key not in self._json_files:
            path = self._thumbs / "json" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(make(), separators=(",", ":")))
            os.replace(tmp, path)
            self._json_files[key] = str(path)
        return self._json_files[key]

    def own_gallery(self, own: OwnImages) -> OwnGallery:
        """Thumbnails of a user's images in a folder of the demo's own, named by position."""
        folder = Path(tempfile.mkdtemp(prefix="own-", dir=self._thumbs))
        thumbs = []
        for i, image in enumerate(own.images):
            path = folder / f"{i}.png"
            image.save(path, format="PNG", compress_level=1)
            thumbs.append(str(path))
        return OwnGallery(own, thumbs)

    def own_index(self, gallery: OwnGallery, dataset: str, model: str, log=None) -> SearchIndex:
        """The user's images embedded with a shipped model, each prepared as an upload is, and laid
        out on a map (UMAP from 10 images, else the embeddings' first two principal components)."""
        key = (dataset, model)
        if key not in gallery.indexes:
            embedder = self.index(dataset, model).embedder
            prepared = [prepare_query(im, self.query_style(dataset))[0] for im in gallery.own.images]
            embeddings = embedder.embed(prepared)
            n = len(embeddings)
            if n >= 10:
                (log or self.log)(f"fitting a UMAP map of your {n} images ...")
                xy, method = fit_umap(embeddings, n_neighbors=min(15, n - 1)), "UMAP"
            else:
                centred = embeddings - embeddings.mean(0)
                _, _, vt = np.linalg.svd(centred, full_matrices=False)
                xy = (centred @ vt[:2].T).astype(np.float32) if n > 1 else np.zeros((n, 2), np.float32)
                method = "PCA (UMAP needs 10 images)"
            gallery.indexes[key] = SearchIndex(embedder, np.zeros((n, 1), np.uint8), np.full(n, -1),
                                               [], embeddings, xy)
            gallery.map_method[key] = method
        return gallery.indexes[key]

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
        path = self._thumbs / f"{dataset_name(dataset)}-{model_name(model)}-{i}.png"
        if not path.exists():
            tmp = path.with_name(f"{path.stem}.{threading.get_ident()}.tmp")
            thumbnail(self.index(dataset, model).images[i]).save(tmp, format="PNG")
            os.replace(tmp, path)  # concurrent searches may render the same image: last one wins, whole
        return str(path)


def _temporary_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@torch.inference_mode()
def feature_maps(demo: Demo, dataset: str, image: Image.Image | np.ndarray, pixel: tuple[int, int],
                 model: str = "Hybrid-1") -> FeatureMaps:
    """The involution layer(s) of a hybrid model on one image (the paper's Figure 3): each layer's
    output, the first layer's generated kernels across positions (one map per tap) and its 3x3
    kernel at `pixel`; and the first convolution's maps of the hybrid beside CNN-3a's on the same
    image, when CNN-3a is available (an unavailable one drops its row, not the view)."""
    if not model.startswith("Hybrid") or not (demo.checkpoint(dataset, model) / "config.json").is_file():
        model = "Hybrid-1"
    hyb = demo.index(dataset, model).embedder
    x_u8 = hyb.to_uint8([image])
    x = normalize(x_u8, hyb.mean, hyb.std)
    net = hyb.model
    outputs, kernels, h = [], [], x
    for block in net.involutions:
        kernels.append(block.inv.kernel(h)[0, 0])  # (K*K, H, W)
        h = block(h)
        outputs.append(h[0].mean(0).numpy())
    conv = {model: net.convs[0].act(net.convs[0].conv(h))[0].numpy()}
    if (demo.checkpoint(dataset, "CNN-3a") / "config.json").is_file() and not demo.problem(dataset, "CNN-3a"):
        try:
            cnn = demo.index(dataset, "CNN-3a").embedder
            xc = normalize(x_u8, cnn.mean, cnn.std)
            conv["CNN-3a"] = cnn.model.convs[0].act(cnn.model.convs[0].conv(xc))[0].numpy()
        except (BundleError, CheckpointError):
            pass
    img = x_u8[0].permute(1, 2, 0).numpy()
    img = img[..., 0] if img.shape[2] == 1 else img
    r, c = (int(np.clip(pixel[0], 0, img.shape[0] - 1)), int(np.clip(pixel[1], 0, img.shape[1] - 1)))
    taps = kernels[0].numpy()
    side = int(round(taps.shape[0] ** 0.5))
    return FeatureMaps(model, img, (r, c), outputs, taps, taps[:, r, c].reshape(side, side), conv)
