"""The static site: the demo as files a static host serves, the search run in the visitor's
browser (static/search.js). This module writes it; `scripts/publish_space.py --hardware static`
is a command line over it, and both pages' tests read what it writes.

The site's root holds the page (every file of static/: index.html, search.js, actions.js, prepare.js,
familiarity.js, sketch.js, spec.js, spec.json, style.css), onnxruntime-web under ort/, data/<dataset>/,
README.md and site.json, whose schema (version SCHEMA_VERSION; search.js refuses another) is:

    schema            int, SCHEMA_VERSION
    onnxruntime_web   str, the vendored onnxruntime-web version
    datasets          list of datasets, in the Gradio page's order:
      name            str, data/<name>/ (a known dataset's name, an image folder's gallery key,
                      or collection-<folder> for a published collection)
      title           str, as the dataset menu shows it
      style           str, how a query is prepared (queries.STYLES): mnist, fashion_mnist or photo
      size, channels  int, the models' input (size x size x channels, uint8)
      n               int, gallery images
      columns         int, sprite columns
      gallery         str, the sprite: a PNG of n images of size x size, `columns` a row
      class_names     list of str ([] when unlabelled)
      labels          list of n int (-1: unlabelled)
      paths           list of n str, a collection's files (relative to its folder); absent otherwise
      models          list of:
        key, title    str, the registry name and the shown title
        dim           int, embedding size
        onnx          str, the graph: uint8 (B, size, size, channels) in, unit (B, dim) out
        embeddings    str, n x dim little-endian float32, the gallery's embeddings
        umap          str, n x 2 little-endian float32, the map
        familiarity   {file (float64: pixel mean, pixel precision, class means, embedding precision),
                       features, classes, pixel_threshold, embedding_threshold, min_gallery}
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from ..checkpoint import read_config
from ..collection import RECORD_FILE
from .spec import MIN_GALLERY, SPEC

MODEL_FILES = ("onnx", "embeddings.f32", "umap.f32", "familiarity.f64")  # data/<dataset>/<model>.<each>
SCHEMA_VERSION: int = SPEC["site_schema"]  # declared in spec.json, which the page reads too
PAGE = Path(__file__).with_name("static")  # the page's files, copied as they are
ORT_WEB = ("onnxruntime-web", "1.31.1")  # vendored into the static Space from npm
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
DATASET_KEYS = {"name": str, "title": str, "style": str, "size": int, "channels": int, "n": int, "columns": int,
                "gallery": str, "class_names": list, "labels": list, "models": list}
MODEL_KEYS = {"key": str, "title": str, "dim": int, "onnx": str, "embeddings": str, "umap": str, "familiarity": dict}


class SiteError(Exception):
    """The site cannot be written; the message says why and what to do."""


def schema_problems(site: dict) -> list[str]:
    """What in `site` breaks the schema above ([] when nothing): the tests of both pages read it."""
    out = []
    if site.get("schema") != SCHEMA_VERSION:
        out.append(f"schema is {site.get('schema')!r}, not {SCHEMA_VERSION}")
    for d in site.get("datasets", []):
        where = f"dataset {d.get('name')!r}"
        out += [f"{where}: {k} is not a {t.__name__}" for k, t in DATASET_KEYS.items() if not isinstance(d.get(k), t)]
        if isinstance(d.get("labels"), list) and len(d["labels"]) != d.get("n"):
            out.append(f"{where}: {len(d['labels'])} labels for {d.get('n')} images")
        if "paths" in d and len(d["paths"]) != d.get("n"):
            out.append(f"{where}: {len(d['paths'])} paths for {d.get('n')} images")
        for m in d.get("models", []):
            out += [f"{where}, model {m.get('key')!r}: {k} is not a {t.__name__}" for k, t in MODEL_KEYS.items()
                    if not isinstance(m.get(k), t)]
    return out


def static_checkpoints(assets: Path) -> list[tuple[str, str, str, str]]:
    """(dataset name, dataset title, model key, model title) of every served checkpoint, in the
    demo's order (known datasets first; Hybrid-1, then CNN-3a)."""
    from .service import Demo

    demo = Demo(assets=assets)
    out = []
    for (title, model), folder in demo.served().items():
        if not (folder / "config.json").is_file():  # a collection in the assets: published only when asked
            continue
        config = json.loads((folder / "config.json").read_text())
        # a known dataset's name, or an image folder's gallery key: two folders of one name stay apart
        out.append((demo.dataset_key(title), title, config["model"], model))
    if not out:
        raise SiteError(f"no checkpoints in {assets}: train one with train.py")
    return out



def site_files(assets: Path, collection: Path | None = None) -> list[str]:
    """Every file write_site writes, relative to the site's root, sorted (README.md included)."""
    files = {"README.md", "site.json", *(f"ort/{f}" for f in ORT_WEB_FILES)}
    files |= {p.name for p in PAGE.iterdir() if p.is_file()}
    for dataset, _, model, _ in static_checkpoints(assets):
        files |= {f"data/{dataset}/gallery.png", *(f"data/{dataset}/{model}.{ext}" for ext in MODEL_FILES)}
    if collection is not None:
        name = collection_key(collection)
        model = read_config(Path(json.loads((collection / RECORD_FILE).read_text())["checkpoint"]))["model"]
        files |= {f"data/{name}/gallery.png", *(f"data/{name}/{model}.{ext}" for ext in MODEL_FILES)}
    return sorted(files)



def collection_key(path: Path) -> str:
    """A collection's folder under the static site's data/."""
    return f"collection-{re.sub(r'[^A-Za-z0-9_-]+', '-', path.resolve().name)}"



def ort_web_dir() -> Path:
    """onnxruntime-web's dist/ folder: ORT_WEB_DIR if set, else a cached `npm pack` of the pinned
    version (~/.cache/involution/), fetched once from the npm registry."""
    import os
    import subprocess
    import tarfile

    name, version = ORT_WEB
    if given := os.environ.get("ORT_WEB_DIR"):
        folder = Path(given)
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "involution" / f"{name}-{version}"
        if not all((folder / f).is_file() for f in ORT_WEB_FILES):
            npm = shutil.which("npm")
            if not npm:
                raise SiteError(f"the static Space vendors {name} {version} from npm, and npm is missing: install "
                                   "Node.js (e.g. `apt-get install npm`), or set ORT_WEB_DIR to an unpacked "
                                   f"{name}/dist folder")
            with tempfile.TemporaryDirectory(prefix="ort-web-") as tmp:
                done = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--silent"],
                                      capture_output=True, text=True, timeout=600)
                tarballs = list(Path(tmp).glob("*.tgz"))
                if done.returncode or not tarballs:
                    raise SiteError(f"`npm pack {name}@{version}` failed: "
                                       f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
                staging = Path(tempfile.mkdtemp(prefix=".ort-", dir=_parent(folder)))
                with tarfile.open(tarballs[0]) as tar:
                    for f in ORT_WEB_FILES:
                        (staging / f).write_bytes(tar.extractfile(f"package/dist/{f}").read())
                shutil.rmtree(folder, ignore_errors=True)  # a partial copy of an earlier try
                os.replace(staging, folder)
    missing = [f for f in ORT_WEB_FILES if not (folder / f).is_file()]
    if missing:
        raise SiteError(f"{folder} lacks {', '.join(missing)}: point ORT_WEB_DIR at {name} {version}'s dist/")
    return folder


def _parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent



STATIC_COLLECTION_MAX = 5_000  # a static page downloads every embedding and thumbnail of its gallery on load


def _sprite(images, out: Path) -> tuple[int, int, int, int]:
    """The gallery images (N, H, W[, C]) as one sheet of 50 a row, gallery.png; returns (n, h, w, c)."""
    import numpy as np
    from PIL import Image

    images = images if images.ndim == 4 else images[..., None]
    n, h, w, c = images.shape
    columns = 50
    sheet = np.zeros((-(-n // columns) * h, columns * w, c), np.uint8)
    for i, image in enumerate(images):
        sheet[(i // columns) * h:(i // columns + 1) * h, (i % columns) * w:(i % columns + 1) * w] = image
    Image.fromarray(sheet.squeeze(-1) if c == 1 else sheet).save(out / "gallery.png", optimize=True)
    return n, h, w, c


def _static_model(index, checkpoint: Path, out: Path, dataset: str, model: str, title: str) -> dict:
    """One model's files for the static page (ONNX graph, embeddings, UMAP, familiarity) and its site.json entry."""
    import numpy as np

    from ..export import export_onnx

    export_onnx(checkpoint, out / f"{model}.onnx")
    np.ascontiguousarray(index.embeddings, dtype="<f4").tofile(out / f"{model}.embeddings.f32")
    np.ascontiguousarray(index.xy, dtype="<f4").tofile(out / f"{model}.umap.f32")
    # the demo's "unlike the dataset" check (model/familiarity.py), fitted on the gallery as the app fits it
    familiar = index.familiarity
    np.concatenate([familiar.pixel_mean.ravel(), familiar.pixel_precision.ravel(), familiar.class_means.ravel(),
                    familiar.embedding_precision.ravel()]).astype("<f8").tofile(out / f"{model}.familiarity.f64")
    return {"key": model, "title": title, "dim": int(index.embeddings.shape[1]),
            "onnx": f"data/{dataset}/{model}.onnx", "embeddings": f"data/{dataset}/{model}.embeddings.f32",
            "umap": f"data/{dataset}/{model}.umap.f32",
            "familiarity": {"file": f"data/{dataset}/{model}.familiarity.f64", "features": len(familiar.pixel_mean),
                            "classes": len(familiar.class_means), "pixel_threshold": familiar.pixel_threshold,
                            "embedding_threshold": familiar.embedding_threshold, "min_gallery": MIN_GALLERY}}


def static_collection(path: Path, folder: Path) -> dict:
    """A built collection (model.collection) as one dataset of the static page: its images (from
    the stored thumbnails, at the model's size), paths, labels, embeddings and a UMAP of all of
    them. Refused past STATIC_COLLECTION_MAX images, before any work."""
    import numpy as np

    from ..collection import Collection, CollectionError
    from ..networks import model_title
    from .collection_view import CollectionIndex

    try:
        collection = Collection.open(path)
    except CollectionError as e:
        raise SiteError(str(e)) from None
    if len(collection) > STATIC_COLLECTION_MAX:
        raise SiteError(f"{path} holds {len(collection):,} images and a static Space at most "
                           f"{STATIC_COLLECTION_MAX:,} (the visitor's browser downloads every embedding and "
                           "thumbnail): publish it with a Gradio Space, or build a smaller collection")
    index = CollectionIndex(collection, map_sample=len(collection))  # every image on the map
    name = collection_key(path)
    out = folder / "data" / name
    out.mkdir(parents=True, exist_ok=True)
    n, h, _, c = _sprite(np.stack([index.images.from_thumbnail(i) for i in range(len(index))]), out)
    checkpoint = Path(collection.record["checkpoint"])
    model = json.loads((checkpoint / "config.json").read_text())["model"]
    entry = {"name": name, "title": path.resolve().name, "style": index.images.style, "size": int(h),
             "channels": int(c), "n": int(n), "columns": 50, "class_names": list(index.class_names),
             "labels": [int(x) for x in index.labels], "paths": list(index.paths),
             "gallery": f"data/{name}/gallery.png"}
    entry["models"] = [_static_model(index, checkpoint, out, name, model, model_title(model))]
    return entry



def write_site(folder: Path, assets: Path, readme: str, collection: Path | None = None) -> list[str]:
    """Write the static site into `folder` (the page, onnxruntime-web, site.json and each
    dataset's gallery sprite, each checkpoint's ONNX graph, embeddings and UMAP coordinates; and
    the collection at `collection`, if given, as one more dataset; README.md from `readme`);
    returns the files written, relative to `folder`."""
    from .service import Demo

    ort_dir = ort_web_dir()
    demo = Demo(assets=assets)
    extra = static_collection(collection, folder) if collection is not None else None  # refused before the rest
    folder.mkdir(parents=True, exist_ok=True)
    for p in PAGE.iterdir():
        if p.is_file():
            shutil.copy2(p, folder / p.name)
    (folder / "ort").mkdir(exist_ok=True)
    for f in ORT_WEB_FILES:
        shutil.copy2(ort_dir / f, folder / "ort" / f)
    site: dict = {"schema": SCHEMA_VERSION, "onnxruntime_web": ORT_WEB[1], "datasets": []}
    by_dataset: dict[str, dict] = {}
    for dataset, title, model, model_title in static_checkpoints(assets):
        index = demo.index(title, model_title)
        out = folder / "data" / dataset
        out.mkdir(parents=True, exist_ok=True)
        if dataset not in by_dataset:
            n, h, _, c = _sprite(index.images, out)
            by_dataset[dataset] = {
                "name": dataset, "title": title, "style": demo.query_style(title), "size": int(h), "channels": int(c),
                "n": int(n), "columns": 50, "class_names": list(index.class_names),
                "labels": [int(x) for x in index.labels], "gallery": f"data/{dataset}/gallery.png", "models": []}
            site["datasets"].append(by_dataset[dataset])
        by_dataset[dataset]["models"].append(
            _static_model(index, demo.checkpoint(title, model_title), out, dataset, model, model_title))
    if extra is not None:
        site["datasets"].append(extra)
    problems = schema_problems(site)
    if problems:  # a writer that drifted from the schema the page reads
        raise SiteError(f"site.json breaks its schema: {problems[0]}")
    (folder / "site.json").write_text(json.dumps(site, separators=(",", ":")))
    (folder / "README.md").write_text(readme)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
