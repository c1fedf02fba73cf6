"""A built collection (model.collection) as the demo serves it: the same interface as a
checkpoint's SearchIndex, so the page searches, shows and maps it as it does a test gallery.

What differs is size. A collection may hold a million images, so nothing here holds all of them:
- search goes to the collection's own faiss index (exact, or IVF past collection.EXACT_UP_TO);
- `images[i]` decodes image i when a click asks for it: the original file as the collection
  embedded it where the file is still there, else its stored thumbnail brought to the model's size;
- `thumbs[i]` writes image i's stored JPEG thumbnail to a file on first use;
- the map is a class-stratified sample of at most MAP_SAMPLE images (UMAP fitted when the
  collection is first searched; `map_ids` are their positions), and "unlike the dataset" is fitted
  on the same sample's thumbnails;
- results are captioned with their paths, relative to the folder the collection indexes.
An unlabelled collection (no class folders) has every label -1: no precision@k, no same/other.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..collection import Collection, decode_file, model_input
from ..data import query_style
from ..image_folder import UNREADABLE
from ..index import Hit, SearchIndex, fit_umap, stratified_indices

MAP_SAMPLE = 2000  # points on a collection's map: as many as a shipped gallery's map


class CollectionImages(Sequence):
    """Image i as the model sees it, (H, W, C) uint8, decoded on request: from its file, or from
    its stored thumbnail where the file has gone (`from_thumbnail` always, for cheap statistics)."""

    def __init__(self, collection: Collection, size: tuple[int, int], channels: int, style: str) -> None:
        self.collection, self.size, self.channels, self.style = collection, size, channels, style

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        path = self.collection.folder / self.collection.paths[int(i)]
        try:
            return decode_file(path, self.size, self.channels, self.style).model_input
        except (FileNotFoundError, *UNREADABLE):  # moved or deleted since the build
            return self.from_thumbnail(i)

    def from_thumbnail(self, i: int) -> np.ndarray:
        image = self.collection.thumbnail(int(i)).convert("RGB")
        return model_input(image, self.size, self.channels, self.style)


class CollectionThumbs(Sequence):
    """Image i's stored thumbnail as a file under `folder`, written on first use (the page's
    results, examples and map hover point at these files)."""

    def __init__(self, collection: Collection, folder: Path) -> None:
        self.collection, self.folder = collection, folder
        folder.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        path = self.folder / f"{int(i)}.jpg"
        if not path.exists():
            tmp = path.with_name(f"{path.stem}.{threading.get_ident()}.tmp")
            tmp.write_bytes(self.collection.thumbnail_bytes(int(i)))
            os.replace(tmp, path)
        return str(path)


class CollectionIndex(SearchIndex):
    """A collection searched through SearchIndex's interface (see the module's docstring)."""

    def __init__(self, collection: Collection, map_sample: int | None = None) -> None:
        map_sample = MAP_SAMPLE if map_sample is None else map_sample
        self.collection = collection
        self.embedder = collection.embedder
        style = query_style(str(self.embedder.config.get("dataset", "")))
        self.images = CollectionImages(collection, self.embedder.image_size, self.embedder.channels, style)
        self.display = self.images  # unused: a collection's page shows its stored thumbnails
        labelled = bool(collection.record.get("labelled"))
        self.class_names = sorted(set(collection.labels)) if labelled else []
        codes = {name: c for c, name in enumerate(self.class_names)}
        self.labels = np.array([codes.get(label, -1) for label in collection.labels], dtype=np.int64)
        self.paths = collection.paths
        n = len(collection)
        self.map_ids = (np.sort(stratified_indices(self.labels, map_sample)) if n > map_sample
                        else np.arange(n))
        self.faiss = collection.index

    @classmethod
    def open(cls, folder: str | Path) -> CollectionIndex:
        return cls(Collection.open(folder))

    def __len__(self) -> int:
        return len(self.collection)

    @property
    def summary(self) -> str:
        n = len(self)
        sample = f"; {len(self.map_ids):,} of them on the map" if len(self.map_ids) < n else ""
        return f"collection of {n:,} images{sample}"

    @functools.cached_property
    def embeddings(self) -> np.ndarray:  # the map sample's
        return np.ascontiguousarray(self.collection.vectors(self.map_ids), dtype=np.float32)

    @functools.cached_property
    def xy(self) -> np.ndarray:  # the map sample's
        n = len(self.map_ids)
        if n >= 10:
            return fit_umap(self.embeddings)
        return np.zeros((n, 2), np.float32)

    def search_embedding(self, query: np.ndarray, k: int) -> list[Hit]:
        hits = self.collection.search_vector(np.asarray(query, dtype=np.float32), k)
        return [Hit(h.id, int(self.labels[h.id]), h.similarity) for h in hits]

    @functools.cached_property
    def familiarity(self):
        from ..familiarity import Familiarity

        images = np.stack([self.images.from_thumbnail(int(i)) for i in self.map_ids])  # not 2,000 files
        return Familiarity.fit(self.embedder.to_uint8(images), self.embeddings, self.labels[self.map_ids])
