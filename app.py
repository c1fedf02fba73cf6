"""Gradio demo: image similarity search with compact embedding models (about 115k parameters each).

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected)

UI wiring only. The page is drawn from one state value (model.demo.page.PageState): every
action is one request that hands the state and the action to model.demo.page.apply and draws
what model.demo.page.render returns, and all of them go through one queue (the "page"
concurrency group, one at a time, each listener's pending repeats collapsed to the latest),
so answers land in the order the actions were taken and each starts from the state the last
one left. The page's JavaScript and CSS are in model/demo/web/.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

_T0 = time.perf_counter()

# A ZeroGPU Space (SPACES_ZERO_GPU set by Hugging Face) needs `spaces` imported before torch
# touches CUDA, and starts only if the app declares at least one @spaces.GPU function.
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
if ZERO_GPU:
    import spaces

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from model.demo import MAX_FILE_BYTES, Action, Demo, apply, initial_state, prepare_upload, render  # noqa: E402
from model.demo.own_gallery import MAX_IMAGES  # noqa: E402
from model.demo.page import ERRORS, MAX_K, Page, PageState, clamp_k  # noqa: E402
from model.demo.spec import SKETCH, text  # noqa: E402
from model.index import build_bundle  # noqa: E402
from model.networks import model_label  # noqa: E402
from model.record import summarize  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _T0
ROOT = Path(__file__).resolve().parent  # the repository: recipe paths (a fine-tune's init_from) are relative to it
WEB = ROOT / "model" / "demo" / "web"
OWN_NOTE = text("own_note")


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


def top_k_slider(value: int) -> gr.Slider:
    """The top-k slider, whose number box a visitor can type anything into. Its value reaches
    page.clamp_k as typed (an empty box as None), which clamps it and says so in the status line,
    instead of Gradio's bounds check answering with an error toast or a traceback. (The check is
    lifted on this one component; a subclass would make Gradio write a .pyi file beside app.py.)"""
    slider = gr.Slider(1, MAX_K, value=value, step=1, label="top-k", min_width=160)
    slider.preprocess = lambda payload: payload
    return slider


# ------------------------------------------------------------------ API (gradio_client)

def search_api(dataset: str, image: str, k: float):
    """/search: (dataset, image file, k) -> (gallery, table: gallery index, label, similarity) with
    the dataset's Hybrid-1 (or first served) model; any served dataset, by its title ("CIFAR-10"),
    its name ("cifar10", "shapes") or the name of a checkpoint folder serving it
    ("cifar10-hybrid1"); anything else is refused in one line. The file is prepared as an upload
    on the page is."""
    try:
        demo_state.refresh()
        served = demo_state.dataset(str(dataset or ""))
        models = demo_state.models(served.title) if served else []
        if not models:
            raise gr.Error(f"no checkpoint serves {dataset!r}: use one of {', '.join(demo_state.datasets())} "
                           "(a title, a name or a checkpoint folder's name)", print_exception=False)
        title = served.title
        img, _ = prepare_upload(image, title)
        result = demo_state.search_api(title, models[0], img, clamp_k(k, 8)[0])
        return result.gallery, result.table
    except ERRORS as e:
        raise gr.Error(str(e), print_exception=False) from None


# ------------------------------------------------------------------------------ About

def training_summary(metrics: dict) -> str:
    """E.g. "NORMSOFTMAX 30 + MS 14 epochs, mirror-averaged search, whitened (power 1, shrinkage 1)"."""
    m = summarize(metrics, ROOT)
    text = m.training
    if m.views != "one view":
        text += f", {m.views} search"
    if m.whitening:
        text += f", whitened ({m.whitening_text})"
    return text


def about_markdown() -> str:
    rows = []
    for d, m in demo_state.available():
        if problem := demo_state.problem(d, m):
            rows.append(f"| {d} | {model_label(m)} | unavailable: {problem} | | | | | | |")
            continue
        path = demo_state.checkpoint(d, m) / "metrics.json"
        try:
            mt = json.loads(path.read_text())
            s = summarize(mt)
            rows.append(f"| {d} | {model_label(m)} | {s.params:,} | {s.weights_bytes / 1024:.1f} KB | "
                        f"{s.test['precision_at_1']:.4f} | {s.test['mean_average_precision_at_r']:.4f} | "
                        f"{s.test['ms_loss']:.4f} | {'test set (trained before recipes)' if s.legacy else 'validation'}"
                        f" | {training_summary(mt)} |")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # the search works without its figures
            rows.append(f"| {d} | {model_label(m)} | figures unavailable: {path.name} cannot be read "
                        f"({type(e).__name__}) | | | | | | |")
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


# -------------------------------------------------------------------------- the page

def _web(name: str) -> str:
    return (WEB / name).read_text()


PICK_JS, RESULTS_JS, PIXEL_JS, MAP_JS = (_web(n) for n in ("pick.js", "results.js", "pixel.js", "map.js"))
RESULTS_JS = PICK_JS + RESULTS_JS
MAP_TEMPLATE = _web("map.html")
CSS = _web("page.css")
# The sketchpad both pages draw on (static/sketch.js, its size and stroke from spec.json): each
# stroke's end sends the canvas as a PNG in one event, as a click sends its position. (Gradio's
# Sketchpad took about 1 s from a stroke's end to results: it rasterised its layers and uploaded
# them in several rounds before its change event was sent.)
SKETCH_JS = ((WEB.parent / "static" / "sketch.js").read_text().replace("export function", "function")
             + f"mountSketch(element, {json.dumps(SKETCH)}, "
             "(pad) => trigger('edit', {png: pad.toDataURL('image/png')}));\n")
LAUNCH = {"css": CSS, "max_file_size": MAX_FILE_BYTES}  # what every launch of the page passes
# Every page action: one queue, one at a time, in the order they were taken. A control's pending
# repeats (typing, dragging, strokes) collapse to its latest value ("always_last" re-reads the
# control when it runs). A click is different: Gradio defers a repeat without its event data, so
# "always_last" would run the last click with no position; each click is sent ("multiple") and
# the one queue runs them in order, the last one drawn last.
ONE_QUEUE = {"api_visibility": "private", "trigger_mode": "always_last", "show_progress": "hidden",
             "concurrency_id": "page", "concurrency_limit": 1}
CLICKS = {**ONE_QUEUE, "trigger_mode": "multiple"}
# Strokes are sent each as it ends, like clicks: each carries its drawing, and a deferred
# ("always_last") repeat would be sent without it.
STROKES = CLICKS


def error_line(name: str, text: str) -> gr.Markdown:
    """The line that names a refused input next to the control that got it (empty: no room taken)."""
    return gr.Markdown(text, elem_id=f"{name}-error", elem_classes="error-line")


def controls(page: Page) -> dict:
    with gr.Row(elem_id="controls"):
        ui = {"dataset": gr.Dropdown(page.datasets, value=page.dataset or None, label="dataset", min_width=130),
              "model": gr.Dropdown(page.models, value=page.model or None, label="model", min_width=130),
              "k": top_k_slider(page.k),
              "compare": gr.Checkbox(page.compare, label="compare two models", min_width=160),
              "compare_with": gr.Dropdown(page.compare_choices, value=page.compare_with, label="compare with",
                                          elem_id="compare-with", min_width=130,
                                          visible=bool(page.compare_choices))}  # one model: nothing to list
    ui["settings_error"] = error_line("settings", page.errors["settings"])
    ui["status"] = gr.Markdown(page.status, elem_id="status")
    return ui


def search_tab(page: Page) -> dict:
    """The query sources (examples, upload, draw, your gallery) beside the results, then the map."""
    ui: dict = {}
    with gr.Tab("Search", id="search") as ui["search_tab"]:
        with gr.Row(elem_id="main-row"):
            with gr.Column(scale=2, min_width=300):
                with gr.Tabs(overflow_behavior="wrap"):  # all four sources in sight on a phone
                    with gr.Tab("Examples", id="examples-tab"):
                        ui["shuffle"] = gr.Button("Shuffle examples", size="sm")
                        ui["examples_error"] = error_line("examples", page.errors["examples"])
                        ui["examples"] = gr.HTML(page.examples, elem_id="examples", js_on_load=PICK_JS)
                    with gr.Tab("Upload", id="upload-tab"):
                        # gr.File, not gr.Image: our code opens the file and can name what is wrong with it
                        ui["upload"] = gr.File(label="upload an image (PNG, JPEG, WebP, BMP, GIF)", type="filepath",
                                               file_types=["image"], elem_id="upload")
                        ui["upload_error"] = error_line("upload", page.errors["upload"])
                        ui["snap"] = gr.Image(label="or paste (Ctrl+V) / take a webcam shot", type="numpy",
                                              sources=["clipboard", "webcam"], height=220, elem_id="snap")
                        gr.Markdown("MNIST and FashionMNIST: a dark object on a light background is inverted, then "
                                    "cropped and centred as the dataset was made, whatever its size. CIFAR-10 and "
                                    "image folders: a centre crop to a square.")
                    with gr.Tab("Draw", id="draw-tab") as ui["draw_tab"]:
                        ui["draw_note"] = gr.Markdown("Drawings are searched on MNIST and FashionMNIST: pick one of "
                                                      "them above.", visible=not page.drawable)
                        # The pad is never an output (an answer would wipe the drawing): its box is
                        # shown or hidden.
                        with gr.Column(visible=page.drawable, elem_id="draw-box") as ui["draw_box"]:
                            ui["sketch"] = gr.HTML(elem_id="sketch", js_on_load=SKETCH_JS)
                        ui["draw_error"] = error_line("draw", page.errors["draw"])
                    with gr.Tab("Your gallery", id="own-tab"):
                        ui["own_files"] = gr.File(label=f"your images (up to {MAX_IMAGES}) or a .zip of them",
                                                  file_count="multiple", file_types=["image", ".zip"],
                                                  type="filepath", elem_id="own-files")
                        ui["own_error"] = error_line("own", page.errors["own"])
                        ui["own_status"] = gr.Markdown(page.own_note or OWN_NOTE)
                        ui["own_grid"] = gr.HTML(page.own_grid, elem_id="own-examples", js_on_load=PICK_JS)
            with gr.Column(scale=3, min_width=300):
                ui["results"] = gr.HTML(page.results, elem_id="results", js_on_load=RESULTS_JS)
        ui["emap"] = gr.HTML(page.map, html_template=MAP_TEMPLATE, js_on_load=MAP_JS, highlight=page.highlight,
                             elem_id="embedding-map")
    return ui


def maps_tab() -> dict:
    ui: dict = {}
    with gr.Tab("Involution feature maps", id="maps") as ui["maps_tab"]:
        gr.Markdown("The current query through the involution layer: click the input to pick the pixel whose "
                    "generated kernel is shown.")
        ui["fmaps"] = gr.HTML(elem_id="feature-maps", js_on_load=PIXEL_JS)
    return ui


def about_tab() -> dict:
    ui: dict = {}
    with gr.Tab("About", id="about-tab") as ui["about_tab"]:
        gr.Markdown(about_markdown(), elem_id="about")
    return ui


# What every page action returns, in this order: the state, then one value per component.
OUTPUTS = ("state", "dataset", "model", "k", "compare", "compare_with", "settings_error", "status", "examples",
           "examples_error", "upload", "upload_error", "draw_note", "draw_box", "draw_error", "own_status", "own_grid",
           "own_error", "results", "emap", "fmaps")


def shown(p: Page) -> dict:
    """What each component shows on a page drawn from one state."""
    return {"dataset": (p.datasets, p.dataset), "model": (p.models, p.model), "k": p.k, "compare": p.compare,
            "compare_with": (p.compare_choices, p.compare_with),
            "settings_error": p.errors["settings"], "status": p.status, "examples": p.examples,
            "examples_error": p.errors["examples"], "upload_error": p.errors["upload"], "draw_note": not p.drawable,
            "draw_box": p.drawable, "draw_error": p.errors["draw"],
            "own_status": p.own_note or OWN_NOTE, "own_grid": p.own_grid, "own_error": p.errors["own"],
            "results": p.results, "emap": (p.map, p.highlight), "fmaps": p.feature_maps}


def draw(old: PageState, new: PageState) -> tuple:
    """The page drawn from the new state, sent as what differs from the old state's page: the
    browser shows the old one (every answer lands in order), so a search sends its results,
    preview and map highlight, not twenty components. The controls a visitor edits are always
    sent, so a clamped or refused value never stays in its box."""
    before, after = shown(render(old)), shown(render(new))  # render only formats: no work done twice
    keep = gr.update()
    out = {"state": new}
    for name in ("dataset", "model", "compare_with"):
        (choices, value), (old_choices, _) = after[name], before[name]
        # the compare-with list is shown only where there is a model to pick
        shown_if = {"visible": bool(choices)} if name == "compare_with" else {}
        out[name] = (gr.update(value=value) if choices == old_choices
                     else gr.update(choices=choices, value=value, **shown_if))
    out["k"], out["compare"] = after["k"], after["compare"]
    # the upload box: a refused file does not stay beside the older results
    out["upload"] = None if new.error is not None and new.error[0] == "upload" else keep
    for name, value in after.items():
        if name in out:
            continue
        if value == before[name]:
            out[name] = keep
        elif name in ("draw_note", "draw_box"):
            out[name] = gr.update(visible=value)
        elif name == "emap":
            out[name] = keep if value[0] is None else gr.update(value=value[0], highlight=value[1])
        elif name == "fmaps":
            out[name] = keep if value is None else value
        else:
            out[name] = value
    return tuple(out[name] for name in OUTPUTS)


def wire(ui: dict) -> None:
    """Every page action: the state and the action to page.apply, the page drawn from its answer."""
    state, outputs = ui["state"], [ui[name] for name in OUTPUTS]

    # Gradio passes event data by the type hint of a named parameter: no *args here
    def on_pick(kind: str):
        def handler(current: PageState, evt: gr.EventData):
            data = evt._data or {}
            seq = None if data.get("seq") is None else int(data["seq"])
            return draw(current, apply(current, Action(kind, int(data.get("index", -1)), data.get("gallery"), seq),
                                       demo_state))
        return handler

    def on_value(kind: str):
        def handler(current: PageState, value):
            return draw(current, apply(current, Action(kind, value), demo_state))
        return handler

    def on_shuffle(current: PageState):
        return draw(current, apply(current, Action("shuffle", time.time_ns() % 2**32), demo_state))

    def on_own_files(current: PageState, paths, progress=gr.Progress()):  # noqa: B008 (how Gradio asks for it)
        """Read, embed and map a visitor's images, behind a progress bar."""
        return draw(current, apply(current, Action("own_files", paths), demo_state, progress=progress))

    def on_tab(opened: bool):
        def handler(current: PageState):
            return draw(current, apply(current, Action("tab", opened), demo_state))
        return handler

    def on_stroke(current: PageState, evt: gr.EventData):
        """A stroke's end: the whole drawing so far, as the pad's PNG."""
        return draw(current, apply(current, Action("draw", str((evt._data or {}).get("png", ""))), demo_state))

    def on_pixel(current: PageState, evt: gr.EventData):
        return draw(current, apply(current, Action("pixel", (int(evt.row), int(evt.col))), demo_state))

    for name, kind in (("examples", "example"), ("results", "result"), ("emap", "map"), ("own_grid", "own")):
        ui[name].pick(on_pick(kind), state, outputs, **CLICKS)
    ui["fmaps"].pixel(on_pixel, state, outputs, **CLICKS)
    ui["upload"].upload(on_value("upload"), [state, ui["upload"]], outputs, **ONE_QUEUE)
    ui["snap"].input(on_value("image"), [state, ui["snap"]], outputs, **ONE_QUEUE)
    ui["sketch"].edit(on_stroke, state, outputs, **STROKES)
    ui["dataset"].input(on_value("dataset"), [state, ui["dataset"]], outputs, **ONE_QUEUE)
    for name in ("model", "k", "compare", "compare_with"):
        ui[name].input(on_value(name), [state, ui[name]], outputs, **ONE_QUEUE)
    ui["shuffle"].click(on_shuffle, state, outputs, **ONE_QUEUE)
    ui["own_files"].upload(on_own_files, [state, ui["own_files"]], outputs, **{**ONE_QUEUE, "show_progress": "minimal"})
    ui["maps_tab"].select(on_tab(True), state, outputs, **ONE_QUEUE)
    for tab in ("search_tab", "about_tab"):
        ui[tab].select(on_tab(False), state, outputs, **ONE_QUEUE)


def build() -> gr.Blocks:
    # thumbnails are write-once files: served in place, not hashed and copied on every search
    gr.set_static_paths([demo_state.thumbnail_folder])
    first = initial_state(demo_state)
    if first.error:
        print(f"[startup] {first.error[1]}", flush=True)
    page = render(first)
    with gr.Blocks(title="Involution similarity search") as app:
        gr.Markdown(f"# {text('heading')}\n{text('intro')}")
        ui = {"state": gr.State(first), **controls(page)}
        with gr.Tabs():
            ui |= search_tab(page) | maps_tab() | about_tab()
        wire(ui)
        # hidden components for the /search API endpoint
        # the dataset as text: a title, a name or a checkpoint folder's name (search_api resolves it)
        api_dataset = gr.Textbox(visible=False)
        api_image, api_button = gr.File(type="filepath", visible=False), gr.Button(visible=False)
        api_gallery, api_table = gr.Gallery(format="png", visible=False), gr.Dataframe(visible=False)
        api_button.click(search_api, [api_dataset, api_image, ui["k"]], [api_gallery, api_table],
                         api_name="search")
    return app


def warm_up() -> None:
    """Load the first page's index and thumbnails before the first visitor comes."""
    for d, m in demo_state.available()[:1]:
        try:
            demo_state.gallery_thumbs(d, m)
            demo_state.index(d, m).familiarity  # fitted here, not on the first upload  # noqa: B018
        except ERRORS as e:
            print(f"[startup] {d} {m} not ready: {e}", flush=True)


if __name__ == "__main__":
    print(f"[startup] imports took {IMPORT_SECONDS:.1f} s", flush=True)
    # One small image per request: intra-op threads only wait on each other (100 ms vs 3 ms
    # per query measured on 2 cores). Set here, not at import, so importing the app (tests,
    # scripts) leaves torch's thread count alone.
    torch.set_num_threads(1)
    warm_up()
    build().queue(max_size=64, default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **LAUNCH,
    )
