"""Gradio demo: image similarity search with a 116k-parameter involution + CNN model.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected)

UI wiring only: the logic lives in model/demo.py (search, own gallery, feature maps),
model/queries.py (uploads and drawings brought to the dataset's form) and model/views.py
(the HTML the page shows). One query at a time is "the query": every source (an example, an
upload, a paste or webcam shot, a drawing, your own gallery, a result or a map point) sets it
and searches it in the same request, and a dataset, model, k or compare change searches it
again, so what is on screen always belongs to the query shown.
"""

from __future__ import annotations

import html
import json
import os
import time

_T0 = time.perf_counter()

# A ZeroGPU Space (SPACES_ZERO_GPU set by Hugging Face) needs `spaces` imported before torch
# touches CUDA, and starts only if the app declares at least one @spaces.GPU function.
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
if ZERO_GPU:
    import spaces

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from model.demo import (  # noqa: E402
    DATASETS,
    MAX_FILE_BYTES,
    MODELS,
    Demo,
    QueryError,
    feature_maps,
    prepare_upload,
)
from model.embedder import CheckpointError  # noqa: E402
from model.index import BundleError, SearchIndex, build_bundle  # noqa: E402
from model.own_gallery import MAX_IMAGES, GalleryError, read_own_images  # noqa: E402
from model.queries import prepare_query, sketch_to_image  # noqa: E402
from model.record import summarize  # noqa: E402
from model.views import (  # noqa: E402
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

IMPORT_SECONDS = time.perf_counter() - _T0
# One small image per request: intra-op threads only wait on each other (100 ms vs 3 ms
# per query measured on 2 cores); concurrent requests run on Gradio's worker threads.
torch.set_num_threads(1)
N_EXAMPLES = 24
MAX_K = 48
DRAWABLE = ("MNIST", "FashionMNIST")
PIXEL = (14, 14)
ERRORS = (QueryError, BundleError, CheckpointError, GalleryError)


def _progress(message: str) -> None:
    print(message, flush=True)


def rebuild_bundle(checkpoint, **options):
    """Re-embed the gallery and refit the map of a checkpoint whose search bundle is stale, on
    the GPU where there is one. On ZeroGPU this is the app's one GPU function: a search embeds
    one small image in milliseconds on the CPU and never waits for a GPU."""
    return build_bundle(checkpoint, device="cuda" if torch.cuda.is_available() else "cpu", **options)


if ZERO_GPU:
    rebuild_bundle = spaces.GPU(duration=120)(rebuild_bundle)

demo_state = Demo(log=_progress, build=rebuild_bundle)


# ---------------------------------------------------------------- the query and its search

def default_examples(dataset: str, model: str, seed: int | None = None) -> list[int]:
    """N_EXAMPLES gallery indices: every class in turn (seeded by the shuffle button)."""
    index = demo_state.index(dataset, model)
    rng = np.random.default_rng(seed if seed is not None else 0)
    by_class = [rng.permutation(np.flatnonzero(index.labels == c)) for c in np.unique(index.labels)]
    picks = [int(ids[r]) for r in range(N_EXAMPLES) for ids in by_class if r < len(ids)]
    return picks[:N_EXAMPLES]


def examples_view(dataset: str, model: str, picks: list[int]) -> str:
    index = demo_state.index(dataset, model)
    thumbs = demo_state.gallery_thumbs(dataset, model)
    return examples_html([(i, thumbs[i], index.class_names[index.labels[i]]) for i in picks])


def _models_to_show(dataset: str, model: str, compare: bool) -> list[str]:
    if not compare:
        return [model]
    pair = ["Hybrid-1", "CNN-3a"]
    others = [m for m in pair if m != model and (dataset, m) in demo_state.available()
              and not demo_state.problem(dataset, m)]
    return [model, *others]


def _query_image(query: dict, dataset: str, model: str, own) -> tuple[Image.Image | np.ndarray, int | None, list[str]]:
    """The image a query stands for on this dataset, its label when known, and notes."""
    kind = query.get("kind")
    if kind == "example":
        index = demo_state.index(dataset, model)
        i = int(query["index"])
        if not 0 <= i < len(index):
            raise QueryError(f"gallery index must be between 0 and {len(index) - 1}")
        return index.images[i], int(index.labels[i]), []
    if kind == "upload":
        image, notes = prepare_upload(query["path"], dataset)
        return image, None, notes
    if kind == "image":
        image, notes = prepare_query(Image.fromarray(query["image"]), DATASETS[dataset])
        return image, None, notes
    if kind == "draw":
        if dataset not in DRAWABLE:
            raise QueryError("drawings are searched on MNIST and FashionMNIST only: pick an example or upload a photo")
        image = sketch_to_image(query["sketch"], DATASETS[dataset])
        if image is None:
            raise QueryError("the sketchpad is empty: draw a digit or a garment, light strokes are enough")
        return image, None, []
    if kind == "own":
        if own is None or not 0 <= int(query["index"]) < len(own):
            raise QueryError("your gallery is empty: upload images in the Your gallery tab first")
        image = own.own.images[int(query["index"])]
        return prepare_query(image, DATASETS[dataset])[0], None, []
    raise QueryError("pick an example, upload an image, draw, or use your gallery")


def _describe(query: dict, seen: np.ndarray, label: int | None, names: list[str], own) -> str:
    what = {"example": f"gallery example #{query.get('index')}", "upload": "your upload",
            "image": "your pasted or webcam image", "draw": "your drawing"}.get(query["kind"], "")
    if query["kind"] == "own":
        what = f"your image {html.escape(own.own.names[int(query['index'])])}"
    known = f"label <b>{html.escape(names[label])}</b>" if label is not None else "label unknown"
    return (f'<img class="query-img" src="{png_data_url(seen)}" alt="query">'
            f"<span>Query: {what} ({known}), as the model sees it</span>")


def run_query(query: dict | None, dataset: str, model: str, k: float, compare: bool, own, map_shown: str,
              maps_open: bool, pixel):
    """Search `query` and return every output that depends on it:
    (query, results, status, map, map_shown, feature maps). A query that cannot be searched
    leaves the results as they were and says why in the status line."""
    keep = gr.update()
    if not query:
        return query, keep, "Pick an example, upload an image, or draw one.", keep, map_shown, keep
    k = int(max(1, min(MAX_K, k)))
    try:
        image, label, notes = _query_image(query, dataset, model, own)
        target = "own" if query["kind"] == "own" else "gallery"
        rows, status, first = [], list(notes), None
        for m in _models_to_show(dataset, model, compare):
            if target == "own":
                index = demo_state.own_index(own, dataset, m)
                thumbs, names = own.thumbs, []
            else:
                index = demo_state.index(dataset, m)
                thumbs, names = demo_state.gallery_thumbs(dataset, m), index.class_names
            exclude = int(query["index"]) if query["kind"] in ("example", "own") else None
            _, hits = index.search(image, k, exclude)
            precision = SearchIndex.precision_at_k(label, hits)
            rows.append(results_row(m, hits, thumbs, names, label, precision))
            if first is None:
                first = (index, thumbs, hits, exclude)
                # a gallery example is a dataset image by definition: only outside images are flagged
                outside = query["kind"] not in ("example", "own")
                if outside and hits and hits[0].similarity < index.usual_best_similarity:
                    status.append(f"**unlike {dataset}**: best similarity {hits[0].similarity:.2f}, while 99% of the "
                                  f"gallery has a neighbour above {index.usual_best_similarity:.2f}; the results may "
                                  "mean little")
        index, thumbs, hits, exclude = first
        seen = index.embedder.to_uint8([image])[0].permute(1, 2, 0).numpy().squeeze()
        names = index.class_names if target == "gallery" else []
        panel = results_html(rows, _describe(query, seen, label, names, own))
        key = f"{target}:{dataset}:{model}:{own.token if target == 'own' else ''}"
        highlight = map_highlight(hits, exclude)
        if key != map_shown:
            if target == "own":
                title, method = f"your {len(own)} images, embedded by {model}", own.map_method[(dataset, model)]
            else:
                title, method = f"{dataset} gallery ({len(index)} test images), embedded by {model}", "UMAP"
            src = file_url(demo_state.static_json(key, lambda: map_value(index, thumbs, title, method)))
            map_update = gr.update(value={"src": src}, highlight=highlight)
        else:
            map_update = gr.update(highlight=highlight)
        maps = render_maps(dataset, model, image, pixel) if maps_open else keep
        return query, panel, " · ".join(status), map_update, key, maps
    except ERRORS as e:
        return query, keep, f"⚠ {e}", keep, map_shown, keep


def query_maps(query: dict | None, dataset: str, model: str, own, pixel) -> str:
    """The feature maps of the current query (the tab opened, a pixel clicked)."""
    try:
        image, _, _ = _query_image(query or {}, dataset, model, own)
    except ERRORS as e:
        return f"<p>⚠ {html.escape(str(e))}</p>"
    return render_maps(dataset, model, image, pixel)


def render_maps(dataset: str, model: str, image, pixel) -> str:
    try:
        return feature_maps_html(feature_maps(demo_state, dataset, image, tuple(pixel or PIXEL), model))
    except ERRORS as e:
        return f"<p>⚠ {html.escape(str(e))}</p>"


# ------------------------------------------------------------------ API (gradio_client)

def search_api(dataset: str, image: str, k: float):
    """/search: (dataset, image file, k) -> (gallery, table: gallery index, label, similarity) with the
    Hybrid-1 model; the file is prepared as an upload on the page is."""
    try:
        img, _ = prepare_upload(image, dataset)
        result = demo_state.search_api(dataset, "Hybrid-1", img, int(max(1, min(MAX_K, k))))
        return result.gallery, result.table
    except ERRORS as e:
        raise gr.Error(str(e), print_exception=False) from None


# ------------------------------------------------------------------------------ About

def training_summary(metrics: dict) -> str:
    """E.g. "NORMSOFTMAX 30 + MS 14 epochs, mirror-averaged search, whitened (power 1, shrinkage 1)"."""
    m = summarize(metrics)
    text = " + ".join(f"{s.loss.upper()} {s.epochs_done}" for s in m.stages) + " epochs"
    if m.views != "one view":
        text += f", {m.views} search"
    if m.whitening:
        text += f", whitened ({m.whitening_text})"
    return text


def about_markdown() -> str:
    rows = []
    for d, m in demo_state.available():
        if problem := demo_state.problem(d, m):
            rows.append(f"| {d} | {m} | unavailable: {problem} | | | | | | |")
            continue
        path = demo_state.checkpoint(d, m) / "metrics.json"
        try:
            mt = json.loads(path.read_text())
            s = summarize(mt)
            rows.append(f"| {d} | {m} | {s.params:,} | {s.weights_bytes / 1024:.1f} KB | "
                        f"{s.test['precision_at_1']:.4f} | {s.test['mean_average_precision_at_r']:.4f} | "
                        f"{s.test['ms_loss']:.4f} | {'test set (trained before recipes)' if s.legacy else 'validation'}"
                        f" | {training_summary(mt)} |")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # the search works without its figures
            rows.append(f"| {d} | {m} | figures unavailable: {path.name} cannot be read ({type(e).__name__}) "
                        "| | | | | | |")
    return "\n".join([
        "### Shipped models (measured on the test set, queries against the rest of the test set)",
        "| dataset | model | params (Keras count) | weights | P@1 | MAP@R | test MS | choices made on | training |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Paper, Table 1 (test loss only): Hybrid-1 116,344 params (MNIST/Fashion), 116,634 (CIFAR-10); "
        "CNN-3a 116,320 / 116,608. CIFAR-10 CE 1.309 vs 1.636, MS 0.932 vs 1.116 (Hybrid-1 vs CNN-3a).",
        "", "Our CIFAR-10 weights were trained and evaluated on a lossy JPEG copy of CIFAR-10.", "",
        "Refresh the weights with one command per checkpoint, `python train.py recipes/<dataset>-<model>.toml`: "
        "every stage, every choice on a validation split held out of the training set, the test set measured "
        "once at the end, the search bundle rebuilt. Each checkpoint carries its resolved recipe.toml.",
        "", "**The map**: UMAP is fitted offline on the gallery; a query is not projected onto it, it is drawn "
        "on its nearest gallery image (on itself for a gallery example).",
    ])


# --------------------------------------------------------------------- page behaviour

PICK_JS = """
element.addEventListener('click', (e) => {
  const cell = e.target.closest('[data-pick]');
  if (cell) trigger('pick', {index: Number(cell.dataset.pick)});
});
"""

RESULTS_JS = PICK_JS + """
// On a phone the results sit above the query sources: after a search started further down
// the page, bring them back on screen.
watch('value', () => {
  const top = element.getBoundingClientRect().top;
  if (window.innerWidth < 700 && (top < 0 || top > window.innerHeight * 0.4)) {
    element.scrollIntoView({block: 'start'});
  }
});
"""

PIXEL_JS = """
element.addEventListener('click', (e) => {
  const box = e.target.closest('.pick');
  if (!box) return;
  const r = box.getBoundingClientRect();
  const h = Number(box.dataset.h), w = Number(box.dataset.w);
  const row = Math.min(h - 1, Math.max(0, Math.floor((e.clientY - r.top) / r.height * h)));
  const col = Math.min(w - 1, Math.max(0, Math.floor((e.clientX - r.left) / r.width * w)));
  trigger('pixel', {row: row, col: col});
});
"""

MAP_TEMPLATE = """
<div class="map-wrap">
  <p class="map-title"></p>
  <div class="map-box"><canvas></canvas><div class="tip" hidden></div></div>
  <div class="legend"></div>
  <p class="map-note">Click a point to search with it; hover to see it. The query (red ring) is drawn on its
  nearest gallery image, since UMAP is fitted offline and a query is not projected; its top-k neighbours have
  black rings.</p>
</div>
"""

MAP_JS = """
// The gallery layer (2,000 points) is drawn once per map into an offscreen canvas, from a plain
// copy of the value; a search only moves the highlight, which is drawn over a copy of that layer.
let base = null, layer = null, screen = [], size = [0, 0];
const dpr = window.devicePixelRatio || 1;
const colour = c => c >= 0 && base ? base.colours[c % base.colours.length] : '#6b7280';
function decorate() {
  if (!base) return;
  const title = element.querySelector('.map-title');
  if (title.dataset.key === base.title + base.method) return;
  title.dataset.key = base.title + base.method;
  title.textContent = base.title + ' · ' + base.method;
  const legend = element.querySelector('.legend');
  legend.innerHTML = '';
  for (const [name, c] of base.legend) {
    const item = document.createElement('span'); item.className = 'key';
    const dot = document.createElement('i'); dot.style.background = c;
    item.append(dot, document.createTextNode(name)); legend.append(item);
  }
  legend.insertAdjacentHTML('beforeend', '<span class="key"><i class="ring"></i>top-k neighbour</span>' +
    '<span class="key"><i class="ring red"></i>query (on its nearest image)</span>');
}
function drawLayer() {
  const canvas = element.querySelector('canvas');
  if (!base || !canvas) return;
  const W = canvas.parentElement.clientWidth || 600, H = Math.round(Math.min(W * 0.75, 520));
  size = [W, H];
  layer = document.createElement('canvas');
  layer.width = W * dpr; layer.height = H * dpr;
  const ctx = layer.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const pad = 14;
  screen = base.points.map(p => [pad + p[0] * (W - 2 * pad), pad + (1 - p[1]) * (H - 2 * pad), p[2]]);
  ctx.globalAlpha = 0.75;
  for (const [x, y, c] of screen) {
    ctx.fillStyle = colour(c); ctx.beginPath(); ctx.arc(x, y, 3, 0, 6.283); ctx.fill(); }
}
function overlay() {
  const canvas = element.querySelector('canvas');
  if (!base || !canvas) return;
  if (!layer) drawLayer();
  const [W, H] = size;
  if (canvas.width !== W * dpr || canvas.height !== H * dpr) {
    canvas.width = W * dpr; canvas.height = H * dpr; canvas.style.width = W + 'px'; canvas.style.height = H + 'px';
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(layer, 0, 0);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const hl = props.highlight ? JSON.parse(JSON.stringify(props.highlight)) : {};
  for (const i of (hl.neighbours || [])) {
    const p = screen[i]; if (!p) continue;
    ctx.fillStyle = colour(p[2]); ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(p[0], p[1], 6, 0, 6.283); ctx.fill(); ctx.stroke();
  }
  const q = screen[hl.query];
  if (q) {
    ctx.strokeStyle = '#ff0000'; ctx.lineWidth = 3;
    ctx.beginPath(); ctx.arc(q[0], q[1], 11, 0, 6.283); ctx.stroke();
    ctx.beginPath();
    for (const [dx, dy] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
      ctx.moveTo(q[0] + dx * 8, q[1] + dy * 8); ctx.lineTo(q[0] + dx * 16, q[1] + dy * 16);
    }
    ctx.stroke();
  }
  decorate();
}
const cache = new Map();
function load() {
  const v = props.value;
  if (!v || !v.src) return;
  const src = v.src;
  const ready = cache.get(src) || fetch(src).then(r => r.json());
  cache.set(src, ready);
  ready.then(data => { if ((props.value || {}).src === src) { base = data; layer = null; overlay(); } });
}
function nearest(e) {
  const r = element.querySelector('canvas').getBoundingClientRect();
  const x = e.clientX - r.left, y = e.clientY - r.top;
  let best = -1, bestD = 144;
  screen.forEach((p, i) => { const d = (p[0] - x) ** 2 + (p[1] - y) ** 2; if (d < bestD) { bestD = d; best = i; } });
  return [best, x, y];
}
element.addEventListener('mousemove', (e) => {
  const tip = element.querySelector('.tip');
  if (!tip) return;
  if (!e.target.closest('canvas') || !base) { tip.hidden = true; return; }
  const [i, x, y] = nearest(e);
  if (i < 0) { tip.hidden = true; return; }
  const c = screen[i][2];
  tip.innerHTML = '<img src="' + base.thumbs[i] + '"><span>'
    + (c >= 0 ? base.names[c] + ' · ' : '') + '#' + i + '</span>';
  tip.style.left = Math.min(x + 12, size[0] - 110) + 'px';
  tip.style.top = (y + 12) + 'px';
  tip.hidden = false;
});
element.addEventListener('mouseleave', () => {
    const tip = element.querySelector('.tip'); if (tip) tip.hidden = true; });
element.addEventListener('click', (e) => {
  if (!e.target.closest('canvas')) return;
  const [i] = nearest(e);
  if (i >= 0) trigger('pick', {index: i});
});
load();
watch('value', load);
watch('highlight', overlay);
let lastWidth = 0;
new ResizeObserver(() => {
  const w = element.clientWidth;
  if (Math.abs(w - lastWidth) > 4) { lastWidth = w; layer = null; overlay(); }
}).observe(element);
"""

CSS = """
.grid { display: grid; gap: 6px; }
.examples-grid { grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)); }
.results-grid { grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)); }
.cell { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 3px;
  background: var(--background-fill-secondary);
        cursor: pointer; display: flex; flex-direction: column; align-items: stretch; gap: 2px; min-width: 0; }
.cell:hover { border-color: var(--color-accent); }
.cell img, .fmaps img, .query-img, .tip img { image-rendering: pixelated; width: 100%; aspect-ratio: 1;
  display: block; }
.cell .caption { font-size: 13px; line-height: 1.2; white-space: normal; overflow-wrap: anywhere; text-align: center; }
.cell .mark { font-size: 12px; text-align: center; font-weight: 600; }
.cell.same { border-color: #2e7d32; border-width: 2px; } .mark.same { color: #2e7d32; }
.cell.diff { border-color: #c62828; border-width: 2px; } .mark.diff { color: #c62828; }
.results h4 { margin: 8px 0 4px; font-size: 15px; } .results .precision { font-weight: 400; margin-left: 8px; }
.query-line { display: flex; align-items: center; gap: 10px; margin: 0 0 4px; }
.query-img { width: 72px; height: 72px; border: 2px solid #ff0000; border-radius: 4px; }
.map-wrap { max-width: 980px; margin: 0 auto; } .map-box { position: relative; width: 100%; }
.map-box canvas { display: block; cursor: crosshair; border: 1px solid var(--border-color-primary);
  border-radius: 6px; }
.tip { position: absolute; pointer-events: none; background: var(--background-fill-primary); border: 1px solid #888;
       border-radius: 6px; padding: 4px; width: 96px; font-size: 12px; text-align: center; z-index: 5; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin: 6px 0; font-size: 13px; }
.legend .key { display: inline-flex; align-items: center; gap: 5px; }
.legend i { width: 11px; height: 11px; border-radius: 50%; display: inline-block; }
.legend i.ring { border: 2px solid #000; background: transparent; } .legend i.ring.red { border-color: #ff0000; }
.map-title { font-weight: 600; margin: 4px 0; } .map-note { font-size: 12px; opacity: 0.8; margin: 2px 0; }
.fmaps section { margin-bottom: 10px; } .fmaps h4 { margin: 6px 0 2px; font-size: 14px; }
.fmaps .panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)); gap: 6px; }
.fmaps figure { margin: 0; } .fmaps figcaption { font-size: 12px; text-align: center; }
.fmaps .top { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.fmaps .input { width: 196px; } .fmaps .pick { position: relative; cursor: crosshair; }
.fmaps .cross { position: absolute; width: 14px; height: 14px; margin: -7px 0 0 -7px;
  border: 2px solid #ff0000; border-radius: 50%; }
.fmaps .kernel table { border-collapse: collapse; } .fmaps .kernel td { width: 52px; height: 40px;
  text-align: center; font-size: 13px; border: 1px solid #fff; color: #000; }
.fmaps .scale { display: flex; align-items: center; gap: 6px; font-size: 12px; max-width: 320px; }
.fmaps .scale .bar { flex: 1; height: 10px; border-radius: 3px; }
#status { min-height: 1.5em; }
#about table { display: block; overflow-x: auto; } #about td, #about th { white-space: nowrap; word-break: normal; }
#about td:last-child { white-space: normal; min-width: 22em; }  /* the long training text wraps, the figures do not */
@media (max-width: 700px) {
  #main-row { flex-direction: column-reverse !important; }
  .results-grid { grid-template-columns: repeat(auto-fill, minmax(72px, 1fr)); }
  .examples-grid { grid-template-columns: repeat(auto-fill, minmax(52px, 1fr)); }
  h1 { font-size: 1.3em !important; }
}
"""
LAUNCH = {"css": CSS, "max_file_size": MAX_FILE_BYTES}  # what every launch of the page passes


# -------------------------------------------------------------------------- the page

def build() -> gr.Blocks:
    # thumbnails are write-once files: served in place, not hashed and copied on every search
    gr.set_static_paths([demo_state.thumbnail_folder])
    shipped = {m for _, m in demo_state.available()}
    first = first_page()
    with gr.Blocks(title="Involution similarity search") as app:
        gr.Markdown("# Similarity search with a 116k-parameter involution + CNN model\n"
                    "One involution layer in front of a small CNN (the paper's Hybrid-1), under 0.5 MB of weights. "
                    "Pick a query: the most similar gallery images appear at once.")
        with gr.Row(elem_id="controls"):
            dataset = gr.Dropdown(list(DATASETS), value="MNIST", label="dataset", min_width=130)
            model = gr.Dropdown([m for m in MODELS if m in shipped] or ["Hybrid-1"], value="Hybrid-1", label="model",
                                min_width=130)
            k = gr.Slider(1, MAX_K, value=8, step=1, label="top-k", min_width=160)
            compare = gr.Checkbox(False, label="compare Hybrid-1 and CNN-3a", min_width=160)
        status = gr.Markdown(first.get("status", ""), elem_id="status")
        query = gr.State(first.get("query"))
        own = gr.State(None)
        map_shown = gr.State(first.get("map_shown", ""))
        maps_open = gr.State(False)
        pixel = gr.State(list(PIXEL))
        with gr.Tabs():
            with gr.Tab("Search", id="search") as search_tab:
                with gr.Row(elem_id="main-row"):
                    with gr.Column(scale=2, min_width=300):
                        with gr.Tabs(overflow_behavior="wrap"):  # all four sources in sight on a phone
                            with gr.Tab("Examples", id="examples-tab"):
                                shuffle = gr.Button("Shuffle examples", size="sm")
                                examples = gr.HTML(first.get("examples"), elem_id="examples", js_on_load=PICK_JS)
                            with gr.Tab("Upload", id="upload-tab"):
                                # gr.File, not gr.Image: our code opens the file and can name what is wrong with it
                                upload = gr.File(label="upload an image (PNG, JPEG, WebP, BMP, GIF)", type="filepath",
                                                 file_types=["image"], elem_id="upload")
                                snap = gr.Image(label="or paste (Ctrl+V) / take a webcam shot", type="numpy",
                                                sources=["clipboard", "webcam"], height=220, elem_id="snap")
                                gr.Markdown("MNIST and FashionMNIST: a dark object on a light background is "
                                            "inverted, then cropped and centred as the dataset was made. CIFAR-10: "
                                            "a centre crop to a square.")
                            with gr.Tab("Draw", id="draw-tab"):
                                draw_note = gr.Markdown("Drawings are searched on MNIST and FashionMNIST: pick one "
                                                        "of them above.", visible=False)
                                sketch = gr.Sketchpad(label="draw a digit or a garment", type="numpy",
                                                      image_mode="RGBA", canvas_size=(280, 280), elem_id="sketch")
                                draw_go = gr.Button("Search this drawing", variant="primary")
                            with gr.Tab("Your gallery", id="own-tab"):
                                own_files = gr.File(label=f"your images (up to {MAX_IMAGES}) or a .zip of them",
                                                    file_count="multiple", file_types=["image", ".zip"],
                                                    type="filepath", elem_id="own-files")
                                own_status = gr.Markdown("Kept in this browser session only; nothing is saved.")
                                own_grid = gr.HTML(elem_id="own-examples", js_on_load=PICK_JS)
                    with gr.Column(scale=3, min_width=300):
                        results = gr.HTML(first.get("results", empty_results("Loading ...")), elem_id="results",
                                          js_on_load=RESULTS_JS)
                emap = gr.HTML(first.get("map"), html_template=MAP_TEMPLATE, js_on_load=MAP_JS,
                               highlight=first.get("highlight"),
                               elem_id="embedding-map")
            with gr.Tab("Involution feature maps", id="maps") as maps_tab:
                gr.Markdown("The current query through the involution layer: click the input to pick the pixel whose "
                            "generated kernel is shown.")
                fmaps = gr.HTML(elem_id="feature-maps", js_on_load=PIXEL_JS)
            with gr.Tab("About", id="about-tab") as about_tab:
                gr.Markdown(about_markdown(), elem_id="about")
        # hidden components for the /search API endpoint
        api_image = gr.File(type="filepath", visible=False)
        api_button = gr.Button(visible=False)
        api_gallery = gr.Gallery(format="png", visible=False)
        api_table = gr.Dataframe(visible=False)

        context = [dataset, model, k, compare, own, map_shown, maps_open, pixel]
        outputs = [query, results, status, emap, map_shown, fmaps]
        private = {"api_visibility": "private", "trigger_mode": "always_last", "show_progress": "hidden"}

        # Gradio passes event data by the type hint of a named parameter: no *args here
        def on_example(ds, mdl, kk, cmp, own_v, shown, open_, px, evt: gr.EventData):
            return run_query({"kind": "example", "index": int(evt.index)}, ds, mdl, kk, cmp, own_v, shown, open_, px)

        def on_result(current, ds, mdl, kk, cmp, own_v, shown, open_, px, evt: gr.EventData):
            """A result or a map point becomes the query, in the gallery it was found in."""
            kind = "own" if (current or {}).get("kind") == "own" else "example"
            return run_query({"kind": kind, "index": int(evt.index)}, ds, mdl, kk, cmp, own_v, shown, open_, px)

        def on_own(ds, mdl, kk, cmp, own_v, shown, open_, px, evt: gr.EventData):
            return run_query({"kind": "own", "index": int(evt.index)}, ds, mdl, kk, cmp, own_v, shown, open_, px)

        def on_upload(path, ds, mdl, kk, cmp, own_v, shown, open_, px):
            if not path:
                return (gr.update(),) * 6
            return run_query({"kind": "upload", "path": path}, ds, mdl, kk, cmp, own_v, shown, open_, px)

        def on_snap(image, ds, mdl, kk, cmp, own_v, shown, open_, px):
            if image is None:  # cleared
                return (gr.update(),) * 6
            return run_query({"kind": "image", "image": np.asarray(image)}, ds, mdl, kk, cmp, own_v, shown, open_, px)

        def on_draw(value, ds, mdl, kk, cmp, own_v, shown, open_, px):
            return run_query({"kind": "draw", "sketch": value}, ds, mdl, kk, cmp, own_v, shown, open_, px)

        def on_rerun(current, ds, mdl, kk, cmp, own_v, shown, open_, px):
            return run_query(current, ds, mdl, kk, cmp, own_v, shown, open_, px)

        examples.pick(on_example, context, outputs, **private)
        results.pick(on_result, [query, *context], outputs, **private)
        emap.pick(on_result, [query, *context], outputs, **private)
        own_grid.pick(on_own, context, outputs, **private)
        upload.upload(on_upload, [upload, *context], outputs, **private)
        snap.change(on_snap, [snap, *context], outputs, **private)
        draw_go.click(on_draw, [sketch, *context], outputs, **private)
        sketch.change(on_draw, [sketch, *context], outputs, **private)
        for control in (model.change, k.change, compare.change):
            control(on_rerun, [query, *context], outputs, **private)

        def on_dataset(current, ds, mdl, kk, cmp, own_v, shown, open_, px):
            """A dataset change: its own examples, its models, the draw tab only where drawings are
            searched, and the query searched again (an example: the new dataset's first one)."""
            available = [m for d, m in demo_state.available() if d == ds]
            mdl = mdl if mdl in available else (available[0] if available else mdl)
            try:
                new_picks = default_examples(ds, mdl)
                grid = examples_view(ds, mdl, new_picks)
            except ERRORS as e:
                return (gr.update(), gr.update(choices=available or [mdl], value=mdl),
                        *_drawable(ds), current, gr.update(), f"⚠ {e}", gr.update(), shown, gr.update())
            if not current or current.get("kind") == "example":
                current = {"kind": "example", "index": new_picks[0]}
            if current.get("kind") == "draw" and ds not in DRAWABLE:
                current = None
                out = (None, empty_results("Drawings are searched on MNIST and FashionMNIST: pick an example or "
                                           "upload a photo."), "", gr.update(), shown, gr.update())
            else:
                out = run_query(current, ds, mdl, kk, cmp, own_v, shown, open_, px)
            return (grid, gr.update(choices=available or [mdl], value=mdl), *_drawable(ds), *out)

        def _drawable(ds: str) -> tuple:
            """Where drawings are not searched, the sketchpad is not there to draw on."""
            on = ds in DRAWABLE
            return gr.update(visible=not on), gr.update(visible=on), gr.update(visible=on)

        dataset.change(on_dataset, [query, *context], [examples, model, draw_note, sketch, draw_go, *outputs],
                       **private)

        def on_shuffle(ds, mdl):
            return examples_view(ds, mdl, default_examples(ds, mdl, seed=int(time.time_ns() % 2**32)))

        shuffle.click(on_shuffle, [dataset, model], examples, **private)

        def on_own_files(paths, ds, mdl, progress=gr.Progress()):  # noqa: B008 (how Gradio asks for it)
            """Read, embed and map a user's images, behind a progress bar; a refused upload is one line."""
            if not paths:
                return None, "Kept in this browser session only; nothing is saved.", ""
            try:
                progress(0.05, desc="reading your images")
                images = read_own_images(paths)
                if len(images.images) < 2:
                    skipped = "; ".join(images.skipped[:5])
                    return None, f"⚠ need at least 2 readable images, got {len(images.images)}" + (
                        f" (skipped: {skipped})" if skipped else ""), ""
                gallery = demo_state.own_gallery(images)
                progress(0.3, desc=f"embedding {len(gallery)} images and fitting their map")
                demo_state.own_index(gallery, ds, mdl)
                progress(1.0)
            except ERRORS as e:
                return None, f"⚠ {e}", ""
            note = f"**{len(gallery)} images** ready: click one to search among them."
            if images.skipped:
                shown = "; ".join(html.escape(s) for s in images.skipped[:10])
                more = f" and {len(images.skipped) - 10} more" if len(images.skipped) > 10 else ""
                note += f" Skipped {len(images.skipped)}: {shown}{more}."
            grid = examples_html([(i, t, images.names[i]) for i, t in enumerate(gallery.thumbs)])
            return gallery, note, grid

        own_files.upload(on_own_files, [own_files, dataset, model], [own, own_status, own_grid],
                         api_visibility="private")

        def on_tab(opened: bool):
            def handler(current, ds, mdl, open_, px, own_v):
                if not opened or not current:
                    return opened, gr.update()
                return opened, query_maps(current, ds, mdl, own_v, px)
            return handler

        tab_inputs = [query, dataset, model, maps_open, pixel, own]
        maps_tab.select(on_tab(True), tab_inputs, [maps_open, fmaps], api_visibility="private")
        for tab in (search_tab, about_tab):
            tab.select(on_tab(False), tab_inputs, [maps_open, fmaps], api_visibility="private")

        def on_pixel(current, ds, mdl, own_v, evt: gr.EventData):
            px = [int(evt.row), int(evt.col)]
            return px, query_maps(current, ds, mdl, own_v, px)

        fmaps.pixel(on_pixel, [query, dataset, model, own], [pixel, fmaps], **private)

        api_button.click(search_api, [dataset, api_image, k], [api_gallery, api_table], api_name="search")
    return app


def first_page(dataset: str = "MNIST", model: str = "Hybrid-1") -> dict:
    """The page as it opens (examples, the first example's results and the map), made once when
    the app is built, so a visitor sees results without waiting for a first request; when the
    default checkpoint cannot serve, a page that says why (the other datasets still serve)."""
    try:
        picks = default_examples(dataset, model)
        query = {"kind": "example", "index": picks[0]}
        _, panel, status, map_update, shown, _ = run_query(query, dataset, model, 8, False, None, "", False, PIXEL)
    except ERRORS as e:
        status = f"⚠ {e}"
        shown = ""
    if not shown:  # run_query names its problem in the status line
        print(f"[startup] {status}", flush=True)
        return {"status": status, "results": empty_results(f"{dataset} {model}: {status.lstrip('⚠ ')}")}
    return {"examples": examples_view(dataset, model, picks), "query": query, "results": panel,
            "status": status, "map": map_update["value"], "highlight": map_update["highlight"], "map_shown": shown}


def warm_up() -> None:
    """Load the first page's index and thumbnails before the first visitor comes."""
    try:
        demo_state.gallery_thumbs("MNIST", "Hybrid-1")
    except ERRORS as e:
        print(f"[startup] MNIST Hybrid-1 not ready: {e}", flush=True)


if __name__ == "__main__":
    print(f"[startup] imports took {IMPORT_SECONDS:.1f} s", flush=True)
    warm_up()
    build().queue(max_size=64, default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **LAUNCH,
    )
