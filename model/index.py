"""The search index behind the demo: a gallery, its embeddings and a 2-D UMAP map.

    python -m model.index --checkpoint assets/cifar10-hybrid1 [--data-dir DIR]

writes two files (both safe to load: npz without pickle, JSON):

    <gallery-dir>/<dataset>.npz        the gallery: a class-stratified sample of the test
                                       set (images uint8, labels, test-set indices),
                                       shared by every model of that dataset
    <checkpoint>/index.npz + index.json  embeddings and UMAP coordinates of that gallery,
                                       keyed by the sha256 of the weights and the gallery

The app loads the bundle as it is when the keys match the files and index.npz matches the
sha256 that index.json records for it; otherwise it rebuilds it once (embed ~2,000 images, fit
UMAP), in the checkpoint folder or, where that is read-only, in a cache folder of its own
(bundle_cache_dir). A damaged or foreign index.npz is never searched.  UMAP is fitted offline only: a query
is not projected onto the map (no refit, no umap transform),
since the fitted UMAP object could only be stored as a pickle: the demo draws a query on its
nearest gallery image.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from .checkpoint import WEIGHTS_NAME, CheckpointError, read_config
from .data import DataError, load_dataset
from .embedder import Embedder, load_embedder
from .files import atomic_write_bytes, atomic_write_json, sha256_file

GALLERY_SIZE = 2000
INDEX_NPZ, INDEX_JSON = "index.npz", "index.json"


class BundleError(Exception):
    """A gallery or index bundle is missing or does not belong to the weights."""


def default_gallery_dir(checkpoint: Path) -> Path:
    return Path(checkpoint).parent / "gallery"


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n indices with every class represented in proportion (as near as integers allow)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    picks = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        take = min(len(idx), int(round(n * len(idx) / len(labels))))
        picks.append(rng.choice(idx, take, replace=False))
    return np.sort(np.concatenate(picks))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} is not a readable .npz ({e}); rebuild it with `python -m model.index`") from None


def gallery_name(config: dict[str, Any]) -> str:
    """The gallery file a checkpoint searches, in the gallery folder: the one its config.json names
    (an image folder's, keyed by what the folder holds: image_folder.gallery_file), else
    `<dataset>.npz` (the named datasets', shared by every model of one)."""
    named = config.get("gallery")
    if isinstance(named, str) and named and Path(named).name == named:
        return named
    return f"{Path(str(config.get('dataset', ''))).name}.npz"


def write_gallery(path: Path, test_x: torch.Tensor, test_y: torch.Tensor, class_names: list[str],
                  size: int = GALLERY_SIZE, display: np.ndarray | None = None) -> Path:
    """A class-stratified sample of at most `size` test images, written as the gallery (NHWC uint8);
    with `display` (the same test images, NHWC uint8, larger), their sample too, which the demo
    shows in place of the model-size images (an image folder's photos, not 32 px blurs)."""
    labels = test_y.cpu().numpy()
    keep = stratified_indices(labels, min(size, len(labels)))
    images = test_x[keep].permute(0, 2, 3, 1).cpu().numpy()
    extra = {"display": display[keep]} if display is not None else {}
    write_npz(path, images=images, labels=labels[keep].astype(np.int64), test_index=keep.astype(np.int64),
              class_names=np.array(class_names), **extra)
    return path


def build_gallery(dataset: str, data_dir: str | Path | None, path: Path, size: int = GALLERY_SIZE,
                  image_size: int = 32) -> Path:
    """Sample the gallery from the test set and write it (NHWC uint8)."""
    data = load_dataset(dataset, data_dir, image_size=image_size)
    return write_gallery(path, data.test_x, data.test_y, data.class_names, size)


def fit_umap(embeddings: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-d map of the embeddings, each placed by its `n_neighbors` nearest (fewer in a gallery that
    small). UMAP's numba sets the process's OpenMP thread count, which torch shares: it is put
    back, so a demo pinned to one thread or a one-thread training run stays so."""
    import umap  # slow import (numba): only when a map is (re)fitted

    n_neighbors = max(2, min(n_neighbors, len(embeddings) - 1))
    threads = torch.get_num_threads()
    try:
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine", random_state=seed)
        with warnings.catch_warnings():  # seeded, UMAP runs on one thread and says so each time: it is meant
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            return reducer.fit_transform(embeddings).astype(np.float32)
    finally:
        torch.set_num_threads(threads)


BUNDLE_KEY_FIELDS = ("weights_sha256", "gallery_sha256", "flip_average", "shift_average")


def bundle_key(checkpoint: Path, gallery_path: Path) -> dict[str, Any]:
    """What a bundle's embeddings depend on: the weights, the gallery, and the search views
    (each recorded only when on, so bundles written before it existed stay fresh)."""
    key: dict[str, Any] = {"weights_sha256": sha256_file(checkpoint / WEIGHTS_NAME),
                           "gallery_sha256": sha256_file(gallery_path)}
    config = read_config(checkpoint)
    if config.get("flip_average"):
        key["flip_average"] = True
    if config.get("shift_average"):
        key["shift_average"] = int(config["shift_average"])
    return key


def bundle_cache_dir(checkpoint: Path) -> Path:
    """Where a bundle is rebuilt when the checkpoint's folder is read-only (a Space, an installed
    copy): $INVOLUTION_CACHE, else ~/.cache/involution, one folder per checkpoint folder."""
    root = Path(os.environ.get("INVOLUTION_CACHE") or Path.home() / ".cache" / "involution")
    return root / "bundles" / Path(checkpoint).resolve().name


def build_bundle(checkpoint: str | Path, data_dir: str | Path | None = None, dataset: str | None = None,
                 gallery_dir: str | Path | None = None, image_size: int = 32, log=print, device: str = "cpu",
                 bundle_dir: str | Path | None = None) -> Path:
    """Write index.npz and index.json into `bundle_dir` (default: the checkpoint folder); sample the
    gallery first if it is missing. index.json records the sha256 of the index.npz it describes."""
    checkpoint = Path(checkpoint)
    bundle_dir = Path(bundle_dir or checkpoint)
    embedder = load_embedder(checkpoint, device)
    dataset = dataset or embedder.config.get("dataset_path") or embedder.config.get("dataset")
    if not dataset:
        raise BundleError(f"{checkpoint}/config.json names no dataset: pass --dataset")
    name = gallery_name(embedder.config) if embedder.config.get("dataset") else f"{Path(dataset).name}.npz"
    gallery_path = Path(gallery_dir or default_gallery_dir(checkpoint)) / name
    if not gallery_path.is_file():
        log(f"sampling a {GALLERY_SIZE}-image gallery from the {dataset} test set -> {gallery_path}")
        build_gallery(dataset, data_dir, gallery_path, image_size=image_size)
    gallery = read_npz(gallery_path)
    log(f"embedding {len(gallery['labels'])} gallery images and fitting UMAP ...")
    embeddings = embedder.embed(gallery["images"])
    xy = fit_umap(embeddings)
    write_npz(bundle_dir / INDEX_NPZ, embeddings=embeddings, umap=xy)
    atomic_write_json(bundle_dir / INDEX_JSON, {**bundle_key(checkpoint, gallery_path), "gallery": gallery_path.name,
                                                "n": int(len(xy)), "umap": "umap-learn, cosine, 15 neighbours",
                                                "index_sha256": sha256_file(bundle_dir / INDEX_NPZ)})
    return bundle_dir / INDEX_NPZ


@dataclass
class Hit:
    index: int  # position in the gallery
    label: int
    similarity: float


class SearchIndex:
    """Exact cosine search over a gallery (faiss inner product on unit vectors)."""

    def __init__(self, embedder: Embedder, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                 embeddings: np.ndarray, xy: np.ndarray, display: np.ndarray | None = None) -> None:
        self.embedder, self.images, self.labels, self.class_names = embedder, images, labels, class_names
        self.display = images if display is None else display  # what the page shows of each image
        self.embeddings, self.xy = np.ascontiguousarray(embeddings, dtype=np.float32), xy
        self.faiss = faiss.IndexFlatIP(self.embeddings.shape[1])
        self.faiss.add(self.embeddings)

    def __len__(self) -> int:
        return len(self.labels)

    def search_embedding(self, query: np.ndarray, k: int) -> list[Hit]:
        k = max(1, min(int(k), len(self)))
        sims, idx = self.faiss.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        return [Hit(int(i), int(self.labels[i]), float(s)) for s, i in zip(sims[0], idx[0], strict=True)]

    def search(self, image, k: int = 8, exclude: int | None = None) -> tuple[np.ndarray, list[Hit]]:
        """Embed one image (PIL or uint8 array) and return (its embedding, the k nearest gallery
        images); `exclude` drops the query's own gallery entry."""
        query = self.embedder.embed([image])[0]
        hits = self.search_embedding(query, k + (exclude is not None))
        return query, [h for h in hits if h.index != exclude][:k]

    @functools.cached_property
    def familiarity(self):
        """How like this gallery a query is (model.familiarity), fitted on the gallery once."""
        from .familiarity import Familiarity

        return Familiarity.fit(self.embedder.to_uint8(self.images), self.embeddings, np.asarray(self.labels))

    @staticmethod
    def precision_at_k(query_label: int | None, hits: list[Hit]) -> float | None:
        if query_label is None:
            return None
        return sum(h.label == query_label for h in hits) / len(hits)


def bundle_problem(folder: Path, key: dict[str, Any]) -> str | None:
    """Why the bundle in `folder` cannot be searched for `key` (bundle_key), or None when it can."""
    meta_path, npz = folder / INDEX_JSON, folder / INDEX_NPZ
    if not meta_path.is_file() or not npz.is_file():
        return "is missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return f"is damaged ({INDEX_JSON} is not valid JSON)"
    if not isinstance(meta, dict) or {k: v for k, v in meta.items() if k in BUNDLE_KEY_FIELDS} != key:
        return "does not match its weights, gallery or search views"
    if meta.get("index_sha256") != sha256_file(npz):
        return (f"is damaged or foreign ({INDEX_NPZ} does not match the checksum in {INDEX_JSON})"
                if "index_sha256" in meta else f"predates checksums ({INDEX_JSON} records none for {INDEX_NPZ})")
    return None


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def load_index(checkpoint: str | Path, gallery_dir: str | Path | None = None, rebuild: bool = True,
               log=print, build: Callable[..., Path] = build_bundle) -> SearchIndex:
    """Load a checkpoint and its bundle; when the bundle is missing, stale or damaged, rebuild it
    once with `build` (build_bundle's signature: the demo on a ZeroGPU Space passes one that holds
    a GPU) in the checkpoint folder, or in bundle_cache_dir when that folder is read-only."""
    checkpoint = Path(checkpoint)
    embedder = load_embedder(checkpoint)
    dataset = embedder.config.get("dataset", "")
    gallery_path = Path(gallery_dir or default_gallery_dir(checkpoint)) / gallery_name(embedder.config)
    if not gallery_path.is_file():
        raise BundleError(f"no gallery for {dataset} at {gallery_path}: build it with "
                          f"`python -m model.index --checkpoint {checkpoint} --data-dir DIR`")
    gallery = read_npz(gallery_path)
    key = bundle_key(checkpoint, gallery_path)
    cache = bundle_cache_dir(checkpoint)
    folder = next((f for f in (checkpoint, cache) if bundle_problem(f, key) is None), None)
    if folder is None:
        problem = bundle_problem(checkpoint, key)
        if not rebuild:
            raise BundleError(f"the search bundle in {checkpoint} {problem}: "
                              f"rebuild it with `python -m model.index --checkpoint {checkpoint}`")
        folder = checkpoint if _writable(checkpoint) else cache
        folder.mkdir(parents=True, exist_ok=True)
        log(f"{checkpoint}: the search bundle {problem}; rebuilding it once in {folder} (embedding + UMAP, ~30 s) ...")
        build(checkpoint, dataset=dataset, gallery_dir=gallery_path.parent, log=log, bundle_dir=folder)
        if problem := bundle_problem(folder, key):
            raise BundleError(f"the search bundle rebuilt in {folder} {problem}; rebuild it with "
                              f"`python -m model.index --checkpoint {checkpoint}`")
    bundle = read_npz(folder / INDEX_NPZ)
    return SearchIndex(embedder, gallery["images"], gallery["labels"], [str(c) for c in gallery["class_names"]],
                       bundle["embeddings"], bundle["umap"], gallery.get("display"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the demo's search bundle for a checkpoint.")
    p.add_argument("--checkpoint", required=True, help="folder with model.safetensors and config.json")
    p.add_argument("--data-dir", help="where the dataset's .npz lives (only needed to sample a new gallery)")
    p.add_argument("--dataset", help="default: the dataset named in config.json")
    p.add_argument("--gallery-dir", help="default: <checkpoint>/../gallery")
    args = p.parse_args(argv)
    try:
        path = build_bundle(args.checkpoint, args.data_dir, args.dataset, args.gallery_dir)
    except (BundleError, CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
