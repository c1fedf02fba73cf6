"""Gradio demo: image similarity search with a 116k-parameter involution + CNN model.

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
from model.demo.page import ERRORS, MAX_K, PageState  # noqa: E402
from model.index import build_bundle  # noqa: E402
from model.record import summarize  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _T0
WEB = Path(__file__).resolve().parent / "model" / "demo" / "web"
OWN_NOTE = "Kept in this browser session only; nothing is saved."


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
    the dataset's Hybrid-1 (or first served) model; any served dataset, by title or name; the
    file is prepared as an upload on the page is."""
    try:
        from model.demo.page import clamp_k
        from model.demo.service import dataset_name, dataset_title

        title = dataset_title(dataset_name(dataset))
        models = demo_state.models(title)
        if not models:
            raise gr.Error(f"no checkpoint serves {dataset!r}: use one of {', '.join(demo_state.datasets())}",
                           print_exception=False)
        img, _ = prepare_upload(image, title)
        result = demo_state.search_api(title, models[0], img, clamp_k(k, 8)[0])
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


# -------------------------------------------------------------------------- the page

def _web(name: str) -> str:
    return (WEB / name).read_text()


PICK_JS, RESULTS_JS, PIXEL_JS, MAP_JS = (_web(n) for n in ("pick.js", "results.js", "pixel.js", "map.js"))
RESULTS_JS = PICK_JS + RESULTS_JS
MAP_TEMPLATE = _web("map.html")
CSS = _web("page.css")
CHOOSE_BRUSH = _web("brush.js")
LAUNCH = {"css": CSS, "max_file_size": MAX_FILE_BYTES}  # what every launch of the page passes
# Every page action: one queue, one at a time, in the order they were taken. A control's pending
# repeats (typing, dragging, strokes) collapse to its latest value ("always_last" re-reads the
# control when it runs). A click is different: Gradio defers a repeat without its event data, so
# "always_last" would run the last click with no position; each click is sent ("multiple") and
# the one queue runs them in order, the last one drawn last.
ONE_QUEUE = {"api_visibility": "private", "trigger_mode": "always_last", "show_progress": "hidden",
             "concurrency_id": "page", "concurrency_limit": 1}
CLICKS = {**ONE_QUEUE, "trigger_mode": "multiple"}


def build() -> gr.Blocks:
    # thumbnails are write-once files: served in place, not hashed and copied on every search
    gr.set_static_paths([demo_state.thumbnail_folder])
    first = initial_state(demo_state)
    if first.error:
        print(f"[startup] {first.error[1]}", flush=True)
    page = render(first, demo_state)
    with gr.Blocks(title="Involution similarity search") as app:
        gr.Markdown("# Similarity search with a 116k-parameter involution + CNN model\n"
                    "One involution layer in front of a small CNN (the paper's Hybrid-1), under 0.5 MB of weights. "
                    "Pick a query: the most similar gallery images appear at once.")
        state = gr.State(first)
        with gr.Row(elem_id="controls"):
            dataset = gr.Dropdown(page.datasets, value=page.dataset or None, label="dataset", min_width=130)
            model = gr.Dropdown(page.models, value=page.model or None, label="model", min_width=130)
            k = top_k_slider(page.k)
            compare = gr.Checkbox(page.compare, label="compare Hybrid-1 and CNN-3a", min_width=160)
        settings_error = gr.Markdown(page.errors["settings"], elem_id="settings-error", elem_classes="error-line")
        status = gr.Markdown(page.status, elem_id="status")
        with gr.Tabs():
            with gr.Tab("Search", id="search") as search_tab:
                with gr.Row(elem_id="main-row"):
                    with gr.Column(scale=2, min_width=300):
                        with gr.Tabs(overflow_behavior="wrap"):  # all four sources in sight on a phone
                            with gr.Tab("Examples", id="examples-tab"):
                                shuffle = gr.Button("Shuffle examples", size="sm")
                                examples_error = gr.Markdown(page.errors["examples"], elem_id="examples-error",
                                                             elem_classes="error-line")
                                examples = gr.HTML(page.examples, elem_id="examples", js_on_load=PICK_JS)
                            with gr.Tab("Upload", id="upload-tab"):
                                # gr.File, not gr.Image: our code opens the file and can name what is wrong with it
                                upload = gr.File(label="upload an image (PNG, JPEG, WebP, BMP, GIF)", type="filepath",
                                                 file_types=["image"], elem_id="upload")
                                upload_error = gr.Markdown(page.errors["upload"], elem_id="upload-error",
                                                           elem_classes="error-line")
                                snap = gr.Image(label="or paste (Ctrl+V) / take a webcam shot", type="numpy",
                                                sources=["clipboard", "webcam"], height=220, elem_id="snap")
                                gr.Markdown("MNIST and FashionMNIST: a dark object on a light background is "
                                            "inverted, then cropped and centred as the dataset was made, whatever "
                                            "its size. CIFAR-10 and image folders: a centre crop to a square.")
                            with gr.Tab("Draw", id="draw-tab") as draw_tab:
                                draw_note = gr.Markdown("Drawings are searched on MNIST and FashionMNIST: pick one "
                                                        "of them above.", visible=not page.drawable)
                                sketch = gr.Sketchpad(label="draw a digit or a garment", type="numpy",
                                                      image_mode="RGBA", canvas_size=(280, 280), elem_id="sketch",
                                                      layers=False, transforms=(), visible=page.drawable,
                                                      brush=gr.Brush(default_size=18, colors=["#000000"],
                                                                     color_mode="fixed"))
                                draw_error = gr.Markdown(page.errors["draw"], elem_id="draw-error",
                                                         elem_classes="error-line")
                                draw_go = gr.Button("Search this drawing", variant="primary", visible=page.drawable)
                            with gr.Tab("Your gallery", id="own-tab"):
                                own_files = gr.File(label=f"your images (up to {MAX_IMAGES}) or a .zip of them",
                                                    file_count="multiple", file_types=["image", ".zip"],
                                                    type="filepath", elem_id="own-files")
                                own_error = gr.Markdown(page.errors["own"], elem_id="own-error",
                                                        elem_classes="error-line")
                                own_status = gr.Markdown(page.own_note or OWN_NOTE)
                                own_grid = gr.HTML(page.own_grid, elem_id="own-examples", js_on_load=PICK_JS)
                    with gr.Column(scale=3, min_width=300):
                        results = gr.HTML(page.results, elem_id="results", js_on_load=RESULTS_JS)
                emap = gr.HTML(page.map, html_template=MAP_TEMPLATE, js_on_load=MAP_JS, highlight=page.highlight,
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

        outputs = [state, dataset, model, k, compare, settings_error, status, examples, examples_error, upload,
                   upload_error, draw_note, sketch, draw_go, draw_error, own_status, own_grid, own_error, results,
                   emap, fmaps]

        def values(p) -> list:
            """Every component's value on a page drawn from one state, in `outputs`' order (state first)."""
            return [(p.datasets, p.dataset), (p.models, p.model), p.k, p.compare, p.errors["settings"], p.status,
                    p.examples, p.errors["examples"], None, p.errors["upload"], not p.drawable, p.drawable,
                    p.drawable, p.errors["draw"], p.own_note or OWN_NOTE, p.own_grid, p.errors["own"], p.results,
                    (p.map, p.highlight), p.feature_maps]

        def draw(old: PageState, new: PageState) -> tuple:
            """The page drawn from the new state, sent as what differs from the old state's page: the
            browser shows the old one (every answer lands in order), and a search then sends its
            results, preview and map highlight, not twenty components. The controls a visitor
            edits are always sent, so a clamped or refused value never stays in its box."""
            before, after = values(render(old, demo_state)), values(render(new, demo_state))
            out = [new]
            for (choices, value), (old_choices, _) in zip(after[:2], before[:2], strict=True):  # dataset, model
                same = choices == old_choices
                out.append(gr.update(value=value) if same else gr.update(choices=choices, value=value))
            out += after[2:4]  # k, compare
            for i in range(4, len(after)):
                same = after[i] == before[i]
                if i == 8:  # the upload box: a refused file does not stay beside older results
                    out.append(None if new.error is not None and new.error[0] == "upload" else gr.update())
                elif i in (10, 11, 12):
                    out.append(gr.update() if same else gr.update(visible=after[i]))
                elif i == 18:
                    map_value_, highlight = after[i]
                    out.append(gr.update() if same or map_value_ is None else gr.update(value=map_value_,
                                                                                         highlight=highlight))
                elif i == 19:
                    out.append(gr.update() if same or after[i] is None else after[i])
                else:
                    out.append(gr.update() if same else after[i])
            return tuple(out)

        # Gradio passes event data by the type hint of a named parameter: no *args here
        def on_pick(kind: str):
            def handler(current: PageState, evt: gr.EventData):
                data = evt._data or {}
                seq = None if data.get("seq") is None else int(data["seq"])
                action = Action(kind, int(data.get("index", -1)), data.get("gallery"), seq)
                return draw(current, apply(current, action, demo_state))
            return handler

        def on_value(kind: str):
            def handler(current: PageState, value):
                return draw(current, apply(current, Action(kind, value), demo_state))
            return handler

        examples.pick(on_pick("example"), state, outputs, **CLICKS)
        results.pick(on_pick("result"), state, outputs, **CLICKS)
        emap.pick(on_pick("map"), state, outputs, **CLICKS)
        own_grid.pick(on_pick("own"), state, outputs, **CLICKS)
        upload.upload(on_value("upload"), [state, upload], outputs, **ONE_QUEUE)
        snap.input(on_value("image"), [state, snap], outputs, **ONE_QUEUE)
        draw_go.click(on_value("draw"), [state, sketch], outputs, **ONE_QUEUE)
        sketch.change(on_value("draw"), [state, sketch], outputs, **ONE_QUEUE)
        dataset.input(on_value("dataset"), [state, dataset], outputs, **ONE_QUEUE).then(None, js=CHOOSE_BRUSH)
        draw_tab.select(None, js=CHOOSE_BRUSH)
        model.input(on_value("model"), [state, model], outputs, **ONE_QUEUE)
        k.input(on_value("k"), [state, k], outputs, **ONE_QUEUE)
        compare.input(on_value("compare"), [state, compare], outputs, **ONE_QUEUE)

        def on_shuffle(current: PageState):
            return draw(current, apply(current, Action("shuffle", time.time_ns() % 2**32), demo_state))

        shuffle.click(on_shuffle, state, outputs, **ONE_QUEUE)

        def on_own_files(current: PageState, paths, progress=gr.Progress()):  # noqa: B008 (how Gradio asks for it)
            """Read, embed and map a visitor's images, behind a progress bar."""
            return draw(current, apply(current, Action("own_files", paths), demo_state, progress=progress))

        own_files.upload(on_own_files, [state, own_files], outputs, **{**ONE_QUEUE, "show_progress": "minimal"})

        def on_tab(opened: bool):
            def handler(current: PageState):
                return draw(current, apply(current, Action("tab", opened), demo_state))
            return handler

        maps_tab.select(on_tab(True), state, outputs, **ONE_QUEUE)
        for tab in (search_tab, about_tab):
            tab.select(on_tab(False), state, outputs, **ONE_QUEUE)

        def on_pixel(current: PageState, evt: gr.EventData):
            return draw(current, apply(current, Action("pixel", (int(evt.row), int(evt.col))), demo_state))

        fmaps.pixel(on_pixel, state, outputs, **CLICKS)

        api_button.click(search_api, [dataset, api_image, k], [api_gallery, api_table], api_name="search")
    return app


def warm_up() -> None:
    """Load the first page's index and thumbnails before the first visitor comes."""
    for d, m in demo_state.available()[:1]:
        try:
            demo_state.gallery_thumbs(d, m)
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
