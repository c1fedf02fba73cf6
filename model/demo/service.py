"""The checkpoints the demo serves and what it does with them, without the UI: find them,
load their search indexes, read uploads, search, render thumbnails and the feature maps.

Every complete checkpoint folder in the assets folder (`INVOLUTION_ASSETS`, default assets/) is
served, named by its config.json: the dataset list, the model list and the compare choices come
from there and from data.KNOWN (a dataset's title, class names and query style), never from
literals, so a checkpoint trained on an image folder (`train.py --dataset PATH/shapes --out
assets/shapes-hybrid1`) is listed as "shapes" and searched in the gallery train.py sampled for it.

A dataset is known by what its gallery holds (index.gallery_name: an image folder's gallery file
is named by its folder's path and content), never by a folder's name alone: two folders both
called "images" are two datasets, listed as "images (projectA)" and "images (projectB)", and a
folder called "mnist" is never served MNIST's gallery. The demo follows the disk: `refresh()`
(each page action calls it) serves a checkpoint folder added, reloads one replaced and drops one
removed; a folder still being written (no config.json or weights yet, or a run's work/ in it) is
never served, and while `train.py --overwrite` retrains a folder, the old one it set aside
(NAME.replaced) serves in its place."""

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
from ..collection import RECORD_FILE, CollectionError
from ..data import KNOWN, canonical_name, normalize, query_style
from ..hub import CHECKPOINT_FILES, download_checkpoint
from ..index import (
    INDEX_JSON,
    INDEX_NPZ,
    BundleError,
    Hit,
    SearchIndex,
    build_bundle,
    fit_umap,
    gallery_name,
    load_index,
)
from ..networks import TITLES, model_title
from ..queries import prepare_query
from .collection_view import CollectionIndex, CollectionThumbs
from .own_gallery import OwnImages
from .spec import text

ASSETS = Path(os.environ.get("INVOLUTION_ASSETS", Path(__file__).resolve().parents[2] / "assets"))
# Model repositories to serve instead of the shipped checkpoints of the same dataset and model,
# e.g. INVOLUTION_MODELS="hf://USER/involution-cifar10-hybrid1 hf://USER/involution-mnist-hybrid1"
# (a Space variable); separated by spaces or commas.
HUB_MODELS_ENV = "INVOLUTION_MODELS"
COMPARED = ("hybrid1", "cnn3a")  # the paper's pair, listed first: "compare" pairs them unless told otherwise
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
        raise QueryError(text("not_an_image", name=path.name)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise QueryError(f"the image file is truncated or corrupt ({e}); upload it again or use another file") from None
    if min(image.size) < MIN_SIDE:
        raise QueryError(f"the image is {image.size[0]}x{image.size[1]} pixels; it needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE} to be searched")
    kept = keep_small(image)  # the page keeps the query for later searches; /search reads it the same way
    if kept.size != image.size:  # said before the crop the query's preparation notes
        shrunk = text("shrunk", **{"from": f"{image.size[0]}x{image.size[1]}", "to": f"{kept.size[0]}x{kept.size[1]}"})
        note = f"{note}; {shrunk}" if note else shrunk
    return kept, note


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


@dataclass(frozen=True)
class ServedDataset:
    """A dataset as the demo serves it."""

    title: str  # as the page lists it: unique among the served datasets
    name: str  # data.KNOWN's name, or an image folder's name
    key: str  # what the gallery holds: a known name, or an image folder's gallery file stem
    style: str  # how a query is brought to its form (queries.STYLES)




def is_collection(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


def _fingerprint(folder: Path) -> tuple | None:
    """What says a checkpoint folder changed (its config, weights and figures), or None when it is
    not a complete checkpoint: config.json or the weights missing, or a run's work/ in it. A
    collection folder changes with its collection.json, which its build replaces last."""
    if (folder / "work").exists():
        return None
    if is_collection(folder):
        st = (folder / RECORD_FILE).stat()
        return (("collection", st.st_mtime_ns, st.st_size, st.st_ino),)
    stats = []
    for name in ("config.json", "model.safetensors", "metrics.json"):
        try:
            st = (folder / name).stat()
            stats.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            if name != "metrics.json":
                return None
    return tuple(stats)


@dataclass
class Demo:
    """The checkpoints in the assets folder and their search bundles, loaded on first use and
    followed on disk (refresh)."""

    assets: Path = ASSETS
    log: object = print
    build: Callable[..., Path] = build_bundle  # how a stale search bundle is rebuilt (see load_index)
    hub_models: Sequence[str] = field(
        default_factory=lambda: os.environ.get(HUB_MODELS_ENV, "").replace(",", " ").split())
    _indexes: dict[Path, SearchIndex] = field(default_factory=dict)  # checkpoint folder -> its index
    _thumbs: Path = field(default_factory=lambda: _temporary_folder("involution-thumbs-"))
    _from_hub: dict[str, Path] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _served: dict[tuple[str, str], Path] | None = None  # found by refresh(): see served()
    _datasets: dict[str, ServedDataset] = field(default_factory=dict)  # title -> the dataset
    _seen: dict[Path, tuple] = field(default_factory=dict)  # checkpoint folder -> its _fingerprint when served
    _gallery_thumbs: dict[str, Sequence[str]] = field(default_factory=dict)  # dataset -> its thumbnail files
    _json_files: dict[str, str] = field(default_factory=dict)  # static_json: key -> file
    # checkpoint folder -> None when it loads, else (the error class to raise, the reason)
    _problems: dict[Path, tuple[type[Exception], str] | None] = field(default_factory=dict)
    _galleries_seen: int | None = None  # the gallery folder's mtime when last looked at: see refresh()

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
        if not (self.assets / "gallery" / gallery_name(config)).is_file():
            raise BundleError(f"it is a {dataset!r} checkpoint and the demo has no gallery for it")
        folder = _temporary_folder("involution-hub-") / name
        folder.mkdir()
        for file in cached.iterdir():
            shutil.copyfile(file, folder / file.name)  # the cache's links resolved to plain files
        return name, folder

    def refresh(self) -> bool:
        """Look at the assets folder again: serve the checkpoint folders added, reload those whose
        config, weights or figures changed, drop those removed or being rewritten, and try again
        those that had no search bundle once the gallery folder changes. Returns whether the
        served checkpoints changed. Cheap (a few stat calls per folder): every page action calls it."""
        candidates: dict[Path, tuple] = {}
        folders = sorted(p for p in self.assets.iterdir() if p.is_dir()) if self.assets.is_dir() else []
        names = {p.name for p in folders}
        for folder in folders:
            # a dot marks a leftover (.tmp) or the folder an --overwrite set aside (NAME.replaced), which
            # serves only while the run replacing it has not completed its new NAME
            base, dot, rest = folder.name.partition(".")
            if dot and not (rest == "replaced" and (base not in names or _fingerprint(folder.with_name(base)) is None)):
                continue
            if (fp := _fingerprint(folder)) is not None:
                candidates[folder] = fp
        for folder in self._from_hub.values():
            candidates[folder] = ("hub",)
        try:  # a gallery added or replaced: a checkpoint found without one is tried again when asked
            galleries = (self.assets / "gallery").stat().st_mtime_ns
        except OSError:
            galleries = None
        if galleries != self._galleries_seen:
            with self._lock:
                for folder, known in list(self._problems.items()):
                    if known and known[0] is BundleError:
                        self._problems.pop(folder, None)
                self._galleries_seen = galleries
        if self._served is not None and candidates == self._seen:
            return False
        with self._lock:  # page actions run in several threads: one of them renames
            for folder in set(self._seen) | set(candidates):
                if self._seen.get(folder) != candidates.get(folder):  # changed or gone: load anew when asked
                    self._indexes.pop(folder, None)
                    self._problems.pop(folder, None)
            self._served, self._datasets = self._name(candidates)
            self._seen = candidates
        return True

    def _name(self, folders: dict[Path, tuple]) -> tuple[dict[tuple[str, str], Path], dict[str, ServedDataset]]:
        """(dataset title, model title) -> folder, and title -> dataset, for the complete checkpoint
        folders (named by config.json, or by the folder name `<dataset>-<model>` when that cannot be
        read, so a damaged one is listed and named as unavailable) and the models of
        INVOLUTION_MODELS in place of a folder of the same dataset and model. Known datasets first in
        data.KNOWN's order, then the others by title; Hybrid-1 and CNN-3a first."""
        found: dict[tuple[str, str], Path] = {}
        info: dict[str, dict] = {}  # dataset key -> name, dataset path, checkpoint folder names
        hub = set(self._from_hub.values())
        for folder in sorted(folders, key=lambda f: (f in hub, f.name)):
            style = None
            try:
                if is_collection(folder):  # a collection: listed under its folder's name, its checkpoint's model
                    record = json.loads((folder / RECORD_FILE).read_text())
                    config = read_config(Path(record["checkpoint"]))
                    name, model, key = folder.name, str(config["model"]), f"collection-{folder.name}"
                    path, style = str(record.get("folder", "")), query_style(str(config["dataset"]))
                else:
                    config = read_config(folder)
                    name, model = str(config["dataset"]), str(config["model"])
                    # an image folder's gallery is its own, whatever the folder is called ("mnist" included)
                    key = Path(gallery_name(config)).stem if config.get("gallery") else name
                    path = str(config.get("dataset_path", ""))
            except (CheckpointError, KeyError, TypeError, OSError, ValueError):
                name, _, model = folder.name.removesuffix(".replaced").rpartition("-")
                name = name or folder.name
                key, path = name, ""
            here = info.setdefault(key, {"name": name, "path": path, "folders": [], "style": style})
            here["folders"].append(folder.name)
            own_name = folder.name.removesuffix(".replaced") == f"{name}-{model}"
            if (key, model) not in found or folder in hub or own_name:
                found[(key, model)] = folder
        titles = _titles(info)
        datasets = {titles[k]: ServedDataset(titles[k], v["name"], k, v["style"] or query_style(k))
                    for k, v in info.items()}
        known, models = list(KNOWN), [*COMPARED, *TITLES]
        order = lambda km: (known.index(km[0]) if km[0] in known else len(known), titles[km[0]],
                            models.index(km[1]) if km[1] in models else len(models), km[1])
        served = {(titles[k], model_title(m)): found[(k, m)] for k, m in sorted(found, key=order)}
        return served, datasets

    def served(self) -> dict[tuple[str, str], Path]:
        """(dataset title, model title) -> checkpoint folder, as the last refresh() found them."""
        if self._served is None:
            self.refresh()
        return self._served

    def dataset(self, dataset: str) -> ServedDataset | None:
        """A served dataset named by its title, its name (a known dataset's, or a folder's where
        only one folder has it), its gallery key, or the name of a checkpoint folder serving it;
        None for anything else."""
        self.served()
        if dataset in self._datasets:
            return self._datasets[dataset]
        text = str(dataset).strip()
        for d in self._datasets.values():
            if text in (d.key, d.title) or canonical_name(text) == d.key:
                return d
        named = [d for d in self._datasets.values() if d.name == text]
        if len(named) == 1:
            return named[0]
        folder = self.assets / text
        for (title, _), f in self._served.items():
            if f in (folder, folder.with_name(f"{text}.replaced")):
                return self._datasets[title]
        return None

    def title(self, dataset: str) -> str:
        """A served dataset's title from any name dataset() takes; else `dataset`, unchanged."""
        d = self.dataset(dataset)
        return d.title if d else dataset

    def dataset_key(self, dataset: str) -> str:
        """What names a dataset's gallery, safe in a file name: thumbnails are cached under it."""
        d = self.dataset(dataset)
        return d.key if d else dataset_name(dataset)

    def revision(self, dataset: str) -> str:
        """Changes whenever a checkpoint serving `dataset` is added, replaced or removed."""
        title = self.title(dataset)
        parts = sorted((str(f), self._seen.get(f)) for (d, _), f in self.served().items() if d == title)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]

    def checkpoint(self, dataset: str, model: str) -> Path:
        """The folder serving a dataset and model (titles or names); where none does, the folder
        it would be in."""
        title, m = self.title(dataset), model_name(model)
        return self.served().get((title, model_title(m)), self.assets / f"{dataset_name(dataset)}-{m}")

    @staticmethod
    def weights(folder: Path) -> Path:
        """The checkpoint folder whose weights serve `folder`: itself, or a collection's checkpoint."""
        if is_collection(folder):
            try:
                return Path(json.loads((folder / RECORD_FILE).read_text())["checkpoint"])
            except (OSError, ValueError, KeyError) as e:
                raise CheckpointError(f"{folder / RECORD_FILE} cannot be read ({e}): build it again") from None
        return folder

    def available(self) -> list[tuple[str, str]]:
        return list(self.served())

    def datasets(self) -> list[str]:
        """The served datasets' titles, in the order the page lists them."""
        return list(dict.fromkeys(d for d, _ in self.served()))

    def models(self, dataset: str) -> list[str]:
        return [m for d, m in self.served() if d == dataset]

    def compared(self, dataset: str, model: str, partner: str = "") -> list[str]:
        """The models a "compare" search shows: the chosen one, then `partner` where it is another
        model serving this dataset, else the first other one in the page's order (the paper's
        pair first: Hybrid-1 and CNN-3a are compared unless another model is picked)."""
        others = self.partners(dataset, model)
        return [model, partner if partner in others else others[0]] if others else [model]

    def partners(self, dataset: str, model: str) -> list[str]:
        """The models a search with `model` on `dataset` can be compared with: the others that serve."""
        return [m for m in self.models(dataset) if m != model and not self.problem(dataset, m)]

    def query_style(self, dataset: str) -> str:
        d = self.dataset(dataset)
        return d.style if d else query_style(dataset_name(dataset))

    def problem(self, dataset: str, model: str) -> str | None:
        """Why a listed checkpoint cannot serve, in one line (its weights or config do not load,
        or its bundle could not be rebuilt), or None; found once, so a broken one costs nothing
        on later requests."""
        key = self.checkpoint(dataset, model)
        if key not in self._problems:
            try:
                load_model(self.weights(key))
                self._problems[key] = None
            except CheckpointError as e:
                self._problems[key] = (CheckpointError, str(e))
        return self._problems[key] and self._problems[key][1]

    def index(self, dataset: str, model: str) -> SearchIndex:
        """The checkpoint's search index, loaded (and its bundle rebuilt, if need be) once; a checkpoint
        that cannot serve raises the same one-line error on every request without trying again."""
        folder = key = self.checkpoint(dataset, model)
        found = self._indexes.get(key)  # read once: a refresh() in another thread may drop it meanwhile
        if found is None and is_collection(folder):
            if known := self._problems.get(key):
                raise known[0](f"{model} on {dataset} is unavailable: {known[1]}")
            try:
                found = self._indexes[key] = CollectionIndex.open(folder)
            except (CollectionError, CheckpointError) as e:
                self._problems[key] = (BundleError, str(e))
                raise BundleError(f"{model} on {dataset} is unavailable: {e}") from None
        if found is None:
            if not (folder / "config.json").is_file():
                raise BundleError(f"no {model} weights for {dataset} in {folder}: train them with train.py")
            if known := self._problems.get(key):
                error, reason = known
                raise error(f"{model} on {dataset} is unavailable: {reason}")
            try:
                found = self._indexes[key] = load_index(folder, gallery_dir=self.assets / "gallery", log=self.log,
                                                        build=self.build)
            except CheckpointError as e:
                self._problems[key] = (CheckpointError, str(e))
                raise CheckpointError(f"{model} on {dataset} is unavailable: {e}") from None
            except (BundleError, OSError) as e:
                self._problems[key] = (BundleError, str(e) if isinstance(e, BundleError) else f"its search bundle: {e}")
                raise BundleError(f"{model} on {dataset} is unavailable: {self._problems[key][1]}") from None
        return found

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
        labels = [names[h.label] if 0 <= h.label < len(names) else "" for h in hits]
        columns: dict[str, list] = {"gallery index": [h.index for h in hits]}
        if isinstance(index, CollectionIndex):  # a collection's results are files: named by their paths
            thumbs = self.gallery_thumbs(dataset, model)
            files = [thumbs[h.index] for h in hits]
            captions = columns["path"] = [index.paths[h.index] for h in hits]
        else:
            files = [self.thumbnail_file(dataset, model, h.index) for h in hits]
            captions = labels
        gallery = [(f, f"{c} · {h.similarity:.3f}") for f, c, h in zip(files, captions, hits, strict=True)]
        table = pd.DataFrame({**columns, "label": labels, "similarity": [round(h.similarity, 4) for h in hits]})
        return SearchResult(query, hits, gallery, table, None)

    def gallery_thumbs(self, dataset: str, model: str) -> list[str]:
        """Every gallery image of a dataset as a native-size PNG file (the page upscales them with
        `image-rendering: pixelated`), rendered once per dataset: the examples, the results and the
        map's hover all point at these files, so a search sends names, not pixels."""
        name = self.dataset_key(dataset)
        index = self.index(dataset, model)
        if isinstance(index, CollectionIndex):  # a million files are not written up front: each on first use
            name = f"{name}-{self.revision(dataset)}"  # a rebuilt collection's images are others
            if name not in self._gallery_thumbs:
                self._gallery_thumbs[name] = CollectionThumbs(index.collection, self._thumbs / "gallery" / name)
            return self._gallery_thumbs[name]
        if name not in self._gallery_thumbs:

            folder = self._thumbs / "gallery" / name
            paths = [str(folder / f"{i}.png") for i in range(len(index))]
            with self._lock:
                if name not in self._gallery_thumbs:
                    folder.mkdir(parents=True, exist_ok=True)
                    for path, image in zip(paths, index.display, strict=True):  # an image folder's: 96 px
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
                xy, method = fit_umap(embeddings), "UMAP"
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
        path = self._thumbs / f"{self.dataset_key(dataset)}-{model_name(model)}-{self.revision(dataset)}-{i}.png"
        if not path.exists():
            tmp = path.with_name(f"{path.stem}.{threading.get_ident()}.tmp")
            thumbnail(self.index(dataset, model).display[i]).save(tmp, format="PNG")
            os.replace(tmp, path)  # concurrent searches may render the same image: last one wins, whole
        return str(path)


def _titles(info: dict[str, dict]) -> dict[str, str]:
    """dataset key -> the title the page lists it by: a known dataset's title; an image folder's
    name where it is unique and no known dataset's name or title, else the name with the folder
    it lies in ("images (projectA)"), else with the start of its key."""
    reserved = {n.lower() for n in KNOWN} | {i.title.lower() for i in KNOWN.values()}
    titles = {k: KNOWN[k].title for k in info if k in KNOWN}
    folders = [k for k in info if k not in KNOWN]
    counts: dict[str, int] = {}
    for k in folders:
        counts[info[k]["name"]] = counts.get(info[k]["name"], 0) + 1
    for k in folders:
        name = info[k]["name"]
        if counts[name] == 1 and name.lower() not in reserved:
            titles[k] = name
            continue
        parent = Path(info[k]["path"]).parent.name if info[k]["path"] else info[k]["folders"][0]
        titles[k] = f"{name} ({parent})"
    taken: dict[str, int] = {}
    for t in titles.values():
        taken[t] = taken.get(t, 0) + 1
    for k in folders:  # the same name in folders of the same name: told apart by their content
        if taken[titles[k]] > 1:
            titles[k] = f"{titles[k][:-1]}, {k.rsplit('-', 1)[-1][:6]})" if titles[k].endswith(")") else k
    return titles


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
    if model not in demo.models(dataset):
        served = ", ".join(demo.models(dataset)) or "no model"
        raise BundleError(f"feature maps show a Hybrid model's involution layer, and {dataset} is served by {served} "
                          "only: train a Hybrid-1 beside it (train.py --model hybrid1) to see them")
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
