"""The demo page as one state value and one update function, without Gradio.

Everything on the page (the controls' values, the examples, the query preview, the results,
the map, the feature maps, the error lines) is drawn by `render` from one `PageState`, and every
action a visitor takes (an example, result or map click, an upload, a paste or webcam shot, a
drawing, an own-gallery click, a dataset, model, k or compare change, opening the feature maps,
picking their pixel) is one `apply(state, action, demo)` that returns the next state. So the
results on screen always belong to the query and dataset on screen:

- a change of dataset, model, k or compare searches the state's query again, in the same call;
- an action that cannot be carried out (a refused upload, an empty drawing, a checkpoint that
  cannot serve) returns the state it got, with the last good query and its results, plus the
  error, which `render` shows next to the control that got it and in the status line;
- a click on a thumbnail, a result or a map point carries the gallery it was drawn from, and a
  click from a gallery no longer on screen is ignored rather than searched in another one;
- the page follows the disk: each action first looks at the assets folder again
  (Demo.refresh), so a checkpoint added is listed, one replaced searches the query again, and
  one removed takes the page to a dataset still served, saying so.

`apply` does the work (loads indexes, searches, writes thumbnails, fits maps, runs the network
for feature maps) and leaves what the page needs of it in the state (`PageState.shown`);
`render(state)` only formats the state, so drawing a page twice costs nothing and needs no
service. app.py runs every action through one queue in arrival order (one concurrency group),
each on the state the previous one left, and draws only what `render` returns.
"""

from __future__ import annotations

import dataclasses
import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..checkpoint import CheckpointError
from ..index import BundleError, Hit, SearchIndex
from ..queries import ink_to_image, prepare_query, sketch_ink, sketch_pixels
from .html import (
    empty_results,
    examples_html,
    feature_maps_html,
    file_url,
    map_highlight,
    map_value,
    png_data_url,
    results_html,
    results_row,
)
from .own_gallery import GalleryError, read_own_images
from .service import Demo, OwnGallery, QueryError, feature_maps, keep_small, open_upload
from .spec import MAX_K, MIN_GALLERY, N_EXAMPLES, SPEC, example_picks, text

DEFAULT_K: int = SPEC["default_k"]
PIXEL = (14, 14)
ERRORS = (QueryError, BundleError, CheckpointError, GalleryError)
# where an error is shown: each source's own line, and one under the settings
ERROR_LINES = {"examples": "examples", "result": "examples", "map": "examples", "upload": "upload", "image": "upload",
               "draw": "draw", "own": "own", "own_files": "own", "dataset": "settings", "model": "settings",
               "k": "settings", "compare": "settings", "tab": "maps", "pixel": "maps", "shuffle": "examples"}


@dataclass(frozen=True)
class Query:
    """What the visitor searched with, kept as it came so another dataset can prepare it its way."""

    kind: str  # example | own | upload | image | draw
    index: int | None = None  # example: gallery position; own: position in the visitor's gallery
    source: Any = None  # upload, image: a PIL image (at most KEEP_SIDE px); draw: the drawing's ink (H, W)
    name: str = ""  # upload: the file's name, shown in the results
    notes: tuple[str, ...] = ()  # what opening the file did (the first frame of an animation)


@dataclass(frozen=True)
class Row:
    """One model's answer to the query."""

    model: str
    hits: tuple[Hit, ...]
    precision: float | None
    others: int | None = None  # gallery images of the query's class besides the query (None: label unknown)


@dataclass(frozen=True)
class Shown:
    """What the page shows of the service's work for one state, filled in by apply (`_shown`)
    and only read by render: the grids' thumbnails and captions, the map, the feature maps."""

    drawable: bool = False
    partners: tuple[str, ...] = ()  # the models the chosen one can be compared with (Demo.partners)
    problem: str = ""  # the dataset's gallery could not be loaded: what the results say instead
    examples: tuple[tuple[int, str, str], ...] = ()  # the example grid: (gallery position, thumbnail, caption)
    thumbs: tuple[str, ...] = ()  # the dataset gallery's thumbnails, by position
    class_names: tuple[str, ...] = ()
    paths: tuple[str, ...] | None = None  # a collection's files, which caption its results
    map: dict | None = None  # {"src": url of the map's points}
    highlight: dict = field(default_factory=dict)
    feature_maps: str | None = None  # None: the tab is closed


@dataclass(frozen=True)
class PageState:
    dataset: str  # title, as the dataset control shows it
    model: str  # title
    k: int = DEFAULT_K
    compare: bool = False
    compare_with: str = ""  # the model picked to compare with ("": the first other, Demo.compared)
    examples: tuple[int, ...] = ()  # the example grid's gallery positions
    query: Query | None = None
    seen: np.ndarray | None = field(default=None, compare=False)  # the query as the model sees it (H, W[, 3]) uint8
    label: int | None = None  # the query's class when known (a gallery example)
    rows: tuple[Row, ...] = ()
    notes: tuple[str, ...] = ()  # what the search says besides its results (preprocessing, unlike the dataset)
    target: str = "gallery"  # where the query was searched: the dataset's gallery or the visitor's own
    own: OwnGallery | None = field(default=None, compare=False)
    own_note: str = ""  # the visitor's gallery: what was read and skipped
    maps_open: bool = False
    pixel: tuple[int, int] = PIXEL
    error: tuple[str, str] | None = None  # (action kind, message) of the last action, when it was refused
    message: str = ""  # a line about the last action that is not an error (k clamped)
    clicks: int = 0  # the sequence number of the latest click applied (see Action.seq)
    served: tuple[tuple[str, str], ...] = ()  # (dataset, model) titles the page lists, as the demo served them
    revision: str = ""  # the dataset's checkpoints as last searched (Demo.revision): a change searches again
    shown: Shown | None = field(default=None, compare=False)  # the service's part of the page (apply fills it)

    @property
    def gallery_key(self) -> str:
        """Names the gallery the examples, results and map show: a click carries it back."""
        if self.target == "own" and self.own is not None:
            return f"own:{self.own.token}"
        return f"gallery:{self.dataset}"


@dataclass(frozen=True)
class Action:
    kind: str  # see apply
    value: Any = None
    gallery: str | None = None  # for clicks: the gallery_key of the grid or map clicked
    seq: int | None = None  # for clicks: the page numbers them, since clicks fired together can arrive out of order


@dataclass
class Page:
    """What the page shows, one field per component: app.py hands each to its component."""

    datasets: list[str]
    dataset: str
    models: list[str]
    model: str
    k: int
    compare: bool
    compare_choices: list[str]  # the models the chosen one can be compared with
    compare_with: str | None  # the one a compare search shows beside it (None: there is none)
    drawable: bool
    examples: str
    results: str
    status: str
    map: dict | None  # {"src": url of the map's points}; None: no map (nothing to show)
    highlight: dict
    feature_maps: str | None  # None: the tab is closed, nothing rendered
    errors: dict[str, str]  # error line -> text ("" when fine): examples, upload, draw, own, settings, maps
    own_grid: str
    own_note: str


# ------------------------------------------------------------------------- state changes

def initial_state(demo: Demo, dataset: str | None = None, model: str | None = None) -> PageState:
    """The page as it opens: the first served dataset and model, its first example searched."""
    return _with_shown(_opening(demo, dataset, model), demo)


def _opening(demo: Demo, dataset: str | None = None, model: str | None = None) -> PageState:
    demo.refresh()
    datasets = demo.datasets()
    if not datasets:
        return PageState(dataset="", model="", error=("dataset", "no checkpoints to serve: train one with train.py "
                                                                  "(python train.py recipes/mnist-hybrid1.toml)"))
    dataset = dataset if dataset in datasets else datasets[0]
    models = demo.models(dataset)
    model = model if model in models else models[0]
    state = PageState(dataset=dataset, model=model, served=tuple(demo.available()), revision=demo.revision(dataset))
    try:
        picks = default_examples(demo, dataset, model)
        return _search(dataclasses.replace(state, examples=picks), Query("example", picks[0]), demo)
    except ERRORS as e:
        return dataclasses.replace(state, error=("dataset", f"{model} on {dataset}: {e}"))


def apply(state: PageState, action: Action, demo: Demo, progress=None) -> PageState:
    """The state after `action`. Kinds and values: example, result, map, own (a gallery position,
    with `gallery` naming the grid clicked); upload (a file path); image (an RGB(A) array: a
    paste or webcam shot); draw (the sketchpad as a PNG data URL, or its pixels); clear (an input
    emptied: nothing changes); dataset, model (titles); k (a number, clamped to 1..MAX_K);
    compare (bool); compare_with (a model title: compares with it); shuffle (a seed); own_files
    (file paths: the visitor's gallery); tab (the feature maps opened: bool); pixel ((row,
    column) of the feature maps). A refused action returns `state` with its error; a click
    numbered before the latest click applied is dropped (the later one already answered)."""
    new = _step(state, action, demo, progress)
    return new if new is state else _with_shown(new, demo)


def _step(state: PageState, action: Action, demo: Demo, progress=None) -> PageState:
    followed = follow_disk(state, demo)
    note = followed.message if followed is not state else ""  # what changed on disk, said after the action
    state = followed
    if action.seq is not None:
        if action.seq <= state.clicks:
            return state
        new = dataclasses.replace(_apply(state, action, demo, progress), clicks=action.seq)
    else:
        new = _apply(state, action, demo, progress)
    return dataclasses.replace(new, message=note) if note and not new.message else new


def follow_disk(state: PageState, demo: Demo) -> PageState:
    """The state under what the assets folder serves now (Demo.refresh): the lists updated; the
    query searched again where the dataset's checkpoints changed; another dataset, with a line
    saying why, where the page's dataset is served no more."""
    demo.refresh()
    served = tuple(demo.available())
    if not state.dataset or (served == state.served and demo.revision(state.dataset) == state.revision):
        return state if served == state.served else dataclasses.replace(state, served=served)
    datasets = demo.datasets()
    if state.dataset not in datasets:
        gone = f"{state.dataset} is no longer served (its checkpoint was removed)"
        if not datasets:
            return PageState(dataset="", model="", served=served, error=("dataset", f"{gone}; no checkpoints to "
                                                                                   "serve: train one with train.py"))
        new = _opening(demo)
        return dataclasses.replace(new, message=f"{gone}: showing {new.dataset}")
    models = demo.models(state.dataset)
    model = state.model if state.model in models else models[0]
    moved = dataclasses.replace(state, model=model, served=served, revision=demo.revision(state.dataset))
    try:
        picks = default_examples(demo, state.dataset, model)
        moved = dataclasses.replace(moved, examples=picks)
        query = state.query
        if query is None:
            return moved
        if query.kind == "example":  # the gallery may differ: its first example, as after a dataset switch
            query = Query("example", picks[0])
        elif query.kind == "own":
            moved, query = dataclasses.replace(moved, target="gallery"), Query("example", picks[0])
        return dataclasses.replace(_search(moved, query, demo),
                                   message=f"the {state.dataset} checkpoints changed on disk: searched again")
    except ERRORS as e:
        return dataclasses.replace(moved, rows=(), error=("dataset", f"{model} on {state.dataset}: {e}"))


def _apply(state: PageState, action: Action, demo: Demo, progress=None) -> PageState:
    kind = action.kind
    try:
        if kind == "clear":
            return dataclasses.replace(state, error=None, message="")
        if kind in ("example", "result", "map", "own"):
            return _click(state, action, demo)
        if kind == "upload":
            image, note = open_upload(action.value)
            name = str(action.value).replace("\\", "/").rsplit("/", 1)[-1]
            return _search(state, Query("upload", source=image, name=name, notes=(note,) if note else ()), demo)
        if kind == "image":
            if action.value is None:
                return dataclasses.replace(state, error=None, message="")
            image = Image.fromarray(np.asarray(action.value).astype(np.uint8))
            return _search(state, Query("image", source=keep_small(image)), demo)
        if kind == "draw":
            value = action.value
            if isinstance(value, str):  # the pad's PNG (app.py); tests and the API may pass pixels
                try:
                    value = sketch_pixels(value)
                except ValueError as e:
                    raise QueryError(str(e)) from None
            ink = sketch_ink(value)
            if ink is None:
                raise QueryError("the sketchpad is empty: draw a digit or a garment, light strokes are enough")
            return _search(state, Query("draw", source=ink), demo)
        if kind == "dataset":
            return _switch_dataset(state, str(action.value), demo)
        if kind == "model":
            if action.value not in demo.models(state.dataset):
                raise QueryError(f"no {action.value} checkpoint serves {state.dataset}: pick one of "
                                 f"{', '.join(demo.models(state.dataset))}")
            return _research(dataclasses.replace(state, model=str(action.value)), demo)
        if kind == "k":
            k, message = clamp_k(action.value, state.k)
            return dataclasses.replace(_research(dataclasses.replace(state, k=k), demo), message=message)
        if kind == "compare":
            return _research(dataclasses.replace(state, compare=bool(action.value)), demo)
        if kind == "compare_with":  # picking a model to compare with compares
            if action.value not in demo.partners(state.dataset, state.model):
                raise QueryError(f"{action.value} cannot be compared with {state.model} on {state.dataset}: pick one "
                                 f"of {', '.join(demo.partners(state.dataset, state.model)) or 'none (one model)'}")
            return _research(dataclasses.replace(state, compare=True, compare_with=str(action.value)), demo)
        if kind == "shuffle":
            picks = default_examples(demo, state.dataset, state.model, seed=int(action.value))
            return dataclasses.replace(state, examples=picks, error=None, message="")
        if kind == "own_files":
            return _own_files(state, action.value, demo, progress)
        if kind == "tab":
            return dataclasses.replace(state, maps_open=bool(action.value), error=None, message="")
        if kind == "pixel":
            r, c = action.value
            return dataclasses.replace(state, pixel=(int(r), int(c)), error=None, message="")
        raise QueryError(f"unknown action {kind!r}")
    except ERRORS as e:
        return dataclasses.replace(state, error=(kind, str(e)), message="")


def clamp_k(value: Any, current: int) -> tuple[int, str]:
    """A top-k value as a visitor may type it -> (k in 1..MAX_K, a line when it was changed)."""
    kept = text("k_not_a_number", max=str(MAX_K), k=str(current))
    try:
        k = float(value)
    except (TypeError, ValueError):
        return current, kept
    if math.isnan(k):
        return current, kept
    clamped = int(min(MAX_K, max(1, round(k))))
    if clamped != k:
        return clamped, text("k_clamped", max=str(MAX_K), typed=f"{k:g}", k=str(clamped))
    return clamped, ""


def default_examples(demo: Demo, dataset: str, model: str, seed: int | None = None) -> tuple[int, ...]:
    """N_EXAMPLES gallery positions, every class in turn (spec.example_picks, seeded by the shuffle
    button): the static page draws the same for the same seed."""
    return tuple(example_picks(demo.index(dataset, model).labels, seed if seed is not None else 0, N_EXAMPLES))


def _click(state: PageState, action: Action, demo: Demo) -> PageState:
    """A thumbnail, result or map point: searched in the gallery it was drawn from, which must be
    the one on screen (a click that left an earlier page is dropped, not searched elsewhere)."""
    if action.kind == "example":
        expected = f"gallery:{state.dataset}"
    elif action.kind == "own":
        expected = f"own:{state.own.token}" if state.own is not None else None
    else:
        expected = state.gallery_key
    if action.gallery is not None and action.gallery != expected:
        return dataclasses.replace(state, error=None, message="that click was on a page already replaced: "
                                                              "click again")
    own = action.kind == "own" or (action.kind in ("result", "map") and expected.startswith("own:"))
    return _search(state, Query("own" if own else "example", int(action.value)), demo)


def _switch_dataset(state: PageState, dataset: str, demo: Demo) -> PageState:
    """Another dataset: its examples, a model that serves it (the same where it can), and the
    query searched there (a gallery example becomes the new gallery's first; a drawing, where
    drawings are not searched, stays the query unsearched: _drawing_elsewhere)."""
    if dataset not in demo.datasets():
        raise QueryError(f"{dataset!r} is not served here: pick one of {', '.join(demo.datasets())}")
    if dataset == state.dataset and state.error is None:  # the dataset on screen (a dropdown may send its value
        return dataclasses.replace(state, message="")  # twice): nothing changes; after a failure it is tried again
    models = demo.models(dataset)
    model = state.model if state.model in models else models[0]
    try:
        picks = default_examples(demo, dataset, model)
    except ERRORS as e:
        raise type(e)(f"{model} on {dataset}: {e}") from None
    moved = dataclasses.replace(state, dataset=dataset, model=model, examples=picks, revision=demo.revision(dataset))
    query = state.query
    if query is None or query.kind == "example":
        query = Query("example", picks[0])
    elif query.kind == "draw" and not drawable(demo, dataset):
        return _drawing_elsewhere(moved, demo)
    return _search(moved, query, demo)


def _drawing_elsewhere(state: PageState, demo: Demo) -> PageState:
    """A drawing on a dataset that does not search drawings: kept as the query (searched again on
    one that does, as the sketchpad still shows it) but not searched here: no results, and a line
    naming the datasets that take drawings."""
    return dataclasses.replace(state, seen=None, label=None, rows=(), target="gallery", error=None, message="",
                               notes=(text("drawings_elsewhere", datasets=" and ".join(drawable_datasets(demo))),))


def _research(state: PageState, demo: Demo) -> PageState:
    """The state's query searched again under its (new) settings."""
    if state.query is None:
        return dataclasses.replace(state, error=None, message="")
    if state.query.kind == "draw" and not drawable(demo, state.dataset):
        return _drawing_elsewhere(state, demo)
    return _search(state, state.query, demo)


def drawable(demo: Demo, dataset: str) -> bool:
    return demo.query_style(dataset) in ("mnist", "fashion_mnist")


def drawable_datasets(demo: Demo) -> list[str]:
    return [d for d in demo.datasets() if drawable(demo, d)]


def query_image(state: PageState, query: Query, demo: Demo) -> tuple[Image.Image | np.ndarray, int | None, list[str]]:
    """The image `query` stands for on the state's dataset, its label when known, and notes."""
    style = demo.query_style(state.dataset)
    if query.kind == "example":
        index = demo.index(state.dataset, state.model)
        if not 0 <= query.index < len(index):
            raise QueryError(f"gallery index must be between 0 and {len(index) - 1}")
        label = int(index.labels[query.index])  # -1: an unlabelled collection's image
        return index.images[query.index], (label if label >= 0 else None), []
    if query.kind in ("upload", "image"):
        image, notes = prepare_query(query.source, style)
        return image, None, [*query.notes, *notes]
    if query.kind == "draw":
        if not drawable(demo, state.dataset):
            raise QueryError(text("drawings_elsewhere", datasets=" and ".join(drawable_datasets(demo))))
        return ink_to_image(query.source, style), None, []
    if query.kind == "own":
        if state.own is None or not 0 <= query.index < len(state.own):
            raise QueryError("your gallery is empty: upload images in the Your gallery tab first")
        return prepare_query(state.own.own.images[query.index], style)[0], None, []
    raise QueryError("pick an example, upload an image, draw, or use your gallery")


def unlike_dataset(index: SearchIndex, x: torch.Tensor, embedding: np.ndarray, dataset: str) -> str | None:
    """A line when an outside query (x: (1, C, H, W) uint8, as the model sees it) is unlike the
    gallery (model.familiarity: its pixels or its embedding further from the gallery's than
    99.5% of the gallery's own)."""
    if len(index) < MIN_GALLERY:  # too few images to know what is usual
        return None
    if index.familiarity.unlike(x, embedding[None])[0]:
        head, _, rest = text("unlike", dataset=dataset).partition(":")
        return f"**{head}**:{rest}"  # Markdown on this page; the static page bolds the same head
    return None


def _search(state: PageState, query: Query, demo: Demo) -> PageState:
    """`query` searched under the state's settings: the new state, or an error raised (and the
    state left as it was by apply)."""
    image, label, notes = query_image(state, query, demo)
    target = "own" if query.kind == "own" else "gallery"
    exclude = query.index if query.kind in ("example", "own") else None
    rows, seen = [], None
    models = demo.compared(state.dataset, state.model, state.compare_with) if state.compare else [state.model]
    if state.compare and len(models) == 1:  # ticked, with nothing to compare against: said, not silent
        notes.append(text("compare_single", model=state.model, dataset=state.dataset))
    for m in models:
        index = demo.own_index(state.own, state.dataset, m) if target == "own" else demo.index(state.dataset, m)
        embedding, hits = index.search(image, state.k, exclude)
        rows.append(Row(m, tuple(hits), SearchIndex.precision_at_k(label, hits),
                        same_class_others(index, label, exclude)))
        if seen is None:  # the first model's: what the preview shows and the unlike line judges
            x = index.embedder.to_uint8([image])
            seen = x[0].permute(1, 2, 0).numpy().squeeze()
            # a gallery image is a dataset image by definition: only outside images are flagged
            if query.kind not in ("example", "own") and (line := unlike_dataset(index, x, embedding, state.dataset)):
                notes.append(line)
    return dataclasses.replace(state, query=query, seen=seen, label=label, rows=tuple(rows), notes=tuple(notes),
                               target=target, error=None, message="")


def same_class_others(index: SearchIndex, label: int | None, exclude: int | None) -> int | None:
    """How many gallery images share the query's class, the query itself not counted (None when
    its label is unknown): with fewer than k, precision@k cannot reach 1 (results_row says so)."""
    if label is None:
        return None
    labels = np.asarray(index.labels)
    return int((labels == label).sum()) - int(exclude is not None and labels[exclude] == label)


def _own_files(state: PageState, paths: list[str] | None, demo: Demo, progress=None) -> PageState:
    """The visitor's own images read, embedded and mapped with the state's model."""
    if not paths:
        return dataclasses.replace(state, error=None, message="")
    if progress:
        progress(0.05, desc="reading your images")
    images = read_own_images(paths)
    if len(images.images) < 2:
        skipped = "; ".join(images.skipped[:5])
        raise GalleryError(text("own_too_few", n=str(len(images.images)))
                           + (f" (skipped: {skipped})" if skipped else ""))
    gallery = demo.own_gallery(images)
    if progress:
        progress(0.3, desc=f"embedding {len(gallery)} images and fitting their map")
    demo.own_index(gallery, state.dataset, state.model)
    note = f"**{text('own_ready', n=str(len(gallery)))}**"
    if images.skipped:
        shown = "; ".join(html.escape(s) for s in images.skipped[:10])
        more = f" and {len(images.skipped) - 10} more" if len(images.skipped) > 10 else ""
        note += f" Skipped {len(images.skipped)}: {shown}{more}."
    # the page's query stays what it was; a query in the previous own gallery now points nowhere
    moved = dataclasses.replace(state, own=gallery, own_note=note, error=None, message="")
    if state.target == "own":
        return _search(moved, Query("own", 0), demo)
    return moved


# ------------------------------------------------------------------------------ drawing

def render(state: PageState) -> Page:
    """Everything the page shows, formatted from the state alone (no service, no files written)."""
    shown = state.shown or Shown()
    errors = dict.fromkeys(("examples", "upload", "draw", "own", "settings", "maps"), "")
    status = [*state.notes]
    if state.message:
        status.append(state.message)
    if state.error:
        kind, message = state.error
        errors[ERROR_LINES.get(kind, "settings")] = f"⚠ {message}"
        status.insert(0, f"⚠ {message}")
    datasets = list(dict.fromkeys(d for d, _ in state.served))
    models = [m for d, m in state.served if d == state.dataset]
    partners = list(shown.partners)
    partner = state.compare_with if state.compare_with in partners else partners[0] if partners else None
    page = Page(datasets=datasets, dataset=state.dataset, models=models, model=state.model, k=state.k,
                compare=state.compare, compare_choices=partners, compare_with=partner, drawable=shown.drawable,
                examples="", results="", status=" · ".join(status),
                map=None, highlight={}, feature_maps=None, errors=errors, own_grid="", own_note=state.own_note)
    if state.own is not None:
        page.own_grid = examples_html([(i, t, state.own.own.names[i]) for i, t in enumerate(state.own.thumbs)],
                                      gallery=f"own:{state.own.token}")
    if not state.dataset:
        page.results = empty_results(state.error[1] if state.error else "nothing to serve")
        return page
    if shown.problem:
        page.results = empty_results(shown.problem)
        return page
    page.examples = examples_html(list(shown.examples), gallery=f"gallery:{state.dataset}")
    page.results = _results(state, shown)
    page.map, page.highlight = shown.map, shown.highlight
    page.feature_maps = shown.feature_maps if state.maps_open else None
    return page


def _with_shown(state: PageState, demo: Demo) -> PageState:
    return dataclasses.replace(state, shown=_shown(state, demo))


def _shown(state: PageState, demo: Demo) -> Shown:
    """The service's part of the page for `state`: thumbnails (written once per gallery), captions,
    the map's points (fitted once per gallery) and the feature maps (while their tab is open)."""
    can_draw = bool(state.dataset) and drawable(demo, state.dataset)
    if not state.dataset:
        return Shown(drawable=can_draw)
    partners = tuple(demo.partners(state.dataset, state.model))
    try:
        index = demo.index(state.dataset, state.model)
        thumbs = demo.gallery_thumbs(state.dataset, state.model)
    except ERRORS as e:
        return Shown(drawable=can_draw, partners=partners, problem=f"{state.model} on {state.dataset}: {e}")
    paths = tuple(index.paths) if hasattr(index, "paths") else None  # a collection's: its files caption it
    names = tuple(index.class_names)
    caption = (lambda i: paths[i]) if paths is not None else (lambda i: names[index.labels[i]])
    map_, highlight = _map(state, demo, index, thumbs)
    return Shown(drawable=can_draw, partners=partners,
                 examples=tuple((i, thumbs[i], caption(i)) for i in state.examples),
                 thumbs=tuple(thumbs), class_names=names, paths=paths, map=map_, highlight=highlight,
                 feature_maps=_feature_maps(state, demo) if state.maps_open else None)


def describe(state: PageState) -> str:
    q = state.query
    if q.kind == "example":
        what = f"gallery example #{q.index}"
    elif q.kind == "own":
        what = f"your image {html.escape(state.own.own.names[q.index])}"
    elif q.kind == "upload":
        what = f"your upload {html.escape(q.name)}"
    else:
        what = {"image": "your pasted or webcam image", "draw": "your drawing"}[q.kind]
    return what


def _results(state: PageState, shown: Shown) -> str:
    if state.query is None or state.seen is None:  # nothing searched (a drawing where drawings are not searched)
        return empty_results(" · ".join(state.notes) or "Pick an example, upload an image, or draw one.")
    thumbs, names, captions = shown.thumbs, list(shown.class_names), shown.paths
    if state.target == "own":
        thumbs, names, captions = state.own.thumbs, [], state.own.own.names
    known = "label unknown"
    if state.label is not None:
        known = f"label <b>{html.escape(shown.class_names[state.label])}</b>"
    line = (f'<img class="query-img" src="{png_data_url(state.seen)}" alt="query">'
            f"<span>Query: {describe(state)} ({known}), as the model sees it · {html.escape(state.dataset)}</span>")
    if state.error:
        line += (f'<span class="refused">⚠ {html.escape(state.error[1])}. The results below are still those of '
                 f"{describe(state)}.</span>")
    rows = [results_row(r.model, r.hits, thumbs, names, state.label, r.precision, captions=captions, others=r.others)
            for r in state.rows]
    # "unlike the dataset" next to the results it qualifies, as on the static page (on a phone the
    # status line is off screen when the results are in view)
    warnings = "".join(f'<span class="unlike">⚠ {_markdown_bold(n)}</span>' for n in state.notes
                       if n.startswith("**unlike"))
    return results_html(rows, line + warnings, gallery=state.gallery_key)


def _markdown_bold(note: str) -> str:
    head, _, rest = note.removeprefix("**").partition("**")
    return f"<b>{html.escape(head)}</b>{html.escape(rest)}"


def _map(state: PageState, demo: Demo, index: SearchIndex, thumbs: list[str]) -> tuple[dict, dict]:
    """The map of the gallery the results come from (the state's dataset, or the visitor's own),
    its points fetched once per map, and the query's place on it."""
    hits = list(state.rows[0].hits) if state.rows else []
    exclude = state.query.index if state.query is not None and state.query.kind in ("example", "own") else None
    if state.target == "own":
        own_index = demo.own_index(state.own, state.dataset, state.model)
        key = f"own:{state.dataset}:{state.model}:{state.own.token}"
        title = f"your {len(state.own)} images, embedded by {state.model}"
        method = state.own.map_method[(state.dataset, state.model)]
        make = lambda: map_value(own_index, state.own.thumbs, title, method, gallery=state.gallery_key)
    else:
        key = f"gallery:{state.dataset}:{state.model}:{state.revision}"
        title = f"{state.dataset} {getattr(index, 'summary', f'gallery ({len(index)} test images)')}, " \
                f"embedded by {state.model}"
        make = lambda: map_value(index, thumbs, title, "UMAP", gallery=state.gallery_key)
    src = file_url(demo.static_json(key, make))
    return {"src": src}, map_highlight(hits, exclude) if state.query is not None else {}


def _feature_maps(state: PageState, demo: Demo) -> str:
    if state.seen is None:
        return "<p>Pick a query first: its feature maps appear here.</p>"
    try:
        return feature_maps_html(feature_maps(demo, state.dataset, state.seen, state.pixel, state.model))
    except ERRORS as e:
        return f"<p>⚠ {html.escape(str(e))}</p>"
