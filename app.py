"""Gradio demo: image similarity search with a 116k-parameter involution + CNN model.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected)

UI wiring only: the logic lives in model/demo.py and model/index.py.
"""

from __future__ import annotations

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
import torch  # noqa: E402

from model.demo import (  # noqa: E402
    DATASETS,
    MAP_COLORS,
    MAX_FILE_BYTES,
    MODELS,
    Demo,
    QueryError,
    involution_maps,
    open_upload,
    sketch_to_image,
    thumbnail,
)
from model.embedder import CheckpointError, searched_views, training_lineage  # noqa: E402
from model.index import BundleError, build_bundle  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _T0
# One small image per request: intra-op threads only wait on each other (100 ms vs 3 ms
# per query measured on 2 cores); concurrent requests run on Gradio's worker threads.
torch.set_num_threads(1)


def _progress(message: str) -> None:
    """Shown as a toast in the page when called inside an event; always printed."""
    print(message)
    try:
        gr.Info(message)
    except Exception:  # outside an event there is no page to tell
        pass


def rebuild_bundle(checkpoint, **options):
    """Re-embed the gallery and refit the map of a checkpoint whose search bundle is stale, on
    the GPU where there is one. On ZeroGPU this is the app's one GPU function: a search embeds
    one small image in milliseconds on the CPU and never waits for a GPU."""
    return build_bundle(checkpoint, device="cuda" if torch.cuda.is_available() else "cpu", **options)


if ZERO_GPU:
    rebuild_bundle = spaces.GPU(duration=120)(rebuild_bundle)

demo_state = Demo(log=_progress, build=rebuild_bundle)
MAP_NOTE = ("UMAP is fitted offline on the gallery; a query is placed at the similarity-weighted mean "
            "position of its top-k neighbours (no refit).")


def _fail(e: Exception):
    raise gr.Error(str(e), print_exception=False)


def _query_from(source: str, upload, sketch, example_index, dataset, model):
    """The query image and its label (known only for gallery examples)."""
    if source == "draw":
        image = sketch_to_image(sketch)
        if image is None:
            return None, None, "Draw a digit or a garment on the sketchpad first (white canvas, dark strokes)."
        return image, None, ""
    if source == "example":
        index = demo_state.index(dataset, model)
        i = int(example_index)
        if not 0 <= i < len(index):
            raise QueryError(f"gallery index must be between 0 and {len(index) - 1}")
        return index.images[i], int(index.labels[i]), ""
    if upload is None:
        return None, None, "Upload an image, pick an example, or draw one."
    image, note = open_upload(upload)
    return image, None, note


def run(source, upload, sketch, example_index, dataset, model, k, row, col):
    try:
        image, label, note = _query_from(source, upload, sketch, example_index, dataset, model)
        if image is None:
            return None, [], None, None, note, None
        exclude = int(example_index) if source == "example" else None
        result = demo_state.search(dataset, model, image, int(k), label, exclude)
        status = note
        if result.precision is not None:
            status += f"  precision@{int(k)} = {result.precision:.3f} (query label known)"
        maps = involution_maps(demo_state, dataset, image, (int(row), int(col)), model)
        index = demo_state.index(dataset, model)
        seen = thumbnail(index.embedder.to_uint8([image])[0].permute(1, 2, 0).numpy())
        return (seen, result.gallery, result.table, demo_state.map_frame(dataset, model, result), status.strip(), maps)
    except (QueryError, BundleError, CheckpointError) as e:
        _fail(e)


def search_api(dataset: str, image: str, k: float):
    """/search: (dataset, image file, k) -> (gallery, table) with the Hybrid-1 model."""
    try:
        img, _ = open_upload(image)
        result = demo_state.search(dataset, "Hybrid-1", img, int(k))
        return result.gallery, result.table
    except (QueryError, BundleError, CheckpointError) as e:
        _fail(e)


def show_map(dataset, model):
    try:
        return demo_state.map_frame(dataset, model)
    except (BundleError, CheckpointError) as e:
        _fail(e)


def result_as_query(table, evt: gr.SelectData):
    """Clicking a result makes it the query."""
    return "example", int(table.iloc[evt.index]["gallery index"])


def map_band_as_query(dataset, model, evt: gr.SelectData):
    """Brushing a narrow band across a point on the map makes that point the query."""
    x0, x1 = evt.index
    return "example", demo_state.point_in_band(dataset, model, float(x0), float(x1))


def sketch_visibility(dataset):
    return gr.update(visible=dataset != "CIFAR-10")


def training_summary(metrics: dict) -> str:
    """E.g. "NORMSOFTMAX 60 + MS 20 epochs, mirror-averaged search" for a fine-tuned checkpoint."""
    runs = training_lineage(metrics)
    text = " + ".join(f"{run['loss'].upper()} {run['epochs_done']}" for run in runs) + " epochs"
    if metrics.get("teachers"):
        text += f", distilled from {' + '.join(t['model'] for t in metrics['teachers'])}"
    if views := searched_views(metrics):
        text += f", {views} search"
    if w := metrics.get("whitening"):
        text += f", whitened after training (power {w['power']:g}, shrinkage {w['shrinkage']:g})"
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
            f = mt["final"]
            test_ce = f"{f['test_ce_loss']:.4f}" if "test_ce_loss" in f else "–"  # CE runs only
            rows.append(f"| {d} | {m} | {mt['keras_param_count']:,} | {mt['weights_bytes'] / 1024:.1f} KB | "
                        f"{f['precision_at_1']:.4f} | {f['mean_average_precision_at_r']:.4f} | {test_ce} | "
                        f"{f['test_ms_loss']:.4f} | {training_summary(mt)} |")
        except (OSError, ValueError, KeyError, TypeError) as e:  # the search works without its figures
            rows.append(f"| {d} | {m} | figures unavailable: {path.name} cannot be read ({type(e).__name__}) "
                        "| | | | | | |")
    return "\n".join([
        "### Shipped models (measured on the test set, queries against the rest of the test set)",
        "| dataset | model | params (Keras count) | weights | P@1 | MAP@R | test CE | test MS | training |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Paper, Table 1 (test loss only): Hybrid-1 116,344 params (MNIST/Fashion), 116,634 (CIFAR-10); "
        "CNN-3a 116,320 / 116,608. CIFAR-10 CE 1.309 vs 1.636, MS 0.932 vs 1.116 (Hybrid-1 vs CNN-3a).",
        "", "Our CIFAR-10 weights were trained and evaluated on a lossy JPEG copy of CIFAR-10.", "",
        "Refresh the weights with the recipe recorded in each model's metrics.json: the project's "
        "docs/training.md lists the train.py commands (a first run, then fine-tuning runs with `--init-from`). "
        "train.py rebuilds the search bundle at the end.",
    ])


def build() -> gr.Blocks:
    # thumbnails are write-once files: served in place, not hashed and copied on every search
    gr.set_static_paths([demo_state.thumbnail_folder])
    with gr.Blocks(title="Involution similarity search") as app:
        gr.Markdown("# Similarity search with a 116k-parameter involution + CNN model\n"
                    "One involution layer in front of a small CNN (the paper's Hybrid-1), under 0.5 MB of weights.")
        with gr.Row():
            dataset = gr.Dropdown(list(DATASETS), value="MNIST", label="dataset")
            shipped = {m for _, m in demo_state.available()}
            model = gr.Dropdown([m for m in MODELS if m in shipped] or ["Hybrid-1"], value="Hybrid-1", label="model")
            k = gr.Slider(1, 24, value=8, step=1, label="top-k")
        with gr.Tab("Search"):
            with gr.Row():
                with gr.Column(scale=1):
                    source = gr.Radio(["upload", "example", "draw"], value="example", label="query from")
                    # gr.File, not gr.Image: our code opens the file and can name what is wrong with it
                    upload = gr.File(label="upload an image", type="filepath")
                    example_index = gr.Number(value=0, precision=0, label="gallery example # (see map tooltips)")
                    sketch = gr.Sketchpad(label="draw (MNIST / FashionMNIST)", type="numpy", image_mode="RGBA",
                                          canvas_size=(280, 280))
                    go = gr.Button("Search", variant="primary")
                with gr.Column(scale=2):
                    with gr.Row():
                        preview = gr.Image(label="query (as the model sees it)", type="pil", format="png",
                                           height=140, interactive=False)
                        status = gr.Markdown()
                    results = gr.Gallery(label="most similar", columns=8, format="png", height="auto")
                    table = gr.Dataframe(label="results", interactive=False)
            plot = gr.ScatterPlot(x="x", y="y", color="group", color_map=MAP_COLORS, tooltip=["label", "index"],
                                  label="embedding map (UMAP of the gallery)", height=480, caption=MAP_NOTE)
            gr.Markdown("Colour = class (hover a point for its class name and gallery index); the query is red, "
                        "its top-k neighbours black. Drag a narrow band across a point to make it the query; "
                        "clicking a result does the same.")
        with gr.Tab("Involution feature maps"):
            with gr.Row():
                row = gr.Slider(0, 31, value=14, step=1, label="kernel pixel row")
                col = gr.Slider(0, 31, value=14, step=1, label="kernel pixel column")
            maps = gr.Image(label="input, involution outputs, kernels, first-conv maps", type="pil", format="png")
        with gr.Tab("About"):
            gr.Markdown(about_markdown())
        # hidden components for the /search API endpoint
        api_image = gr.File(type="filepath", visible=False)
        api_button = gr.Button(visible=False)

        inputs = [source, upload, sketch, example_index, dataset, model, k, row, col]
        outputs = [preview, results, table, plot, status, maps]
        go.click(run, inputs, outputs, api_visibility="private")
        # using a query widget selects it as the source
        upload.upload(lambda: "upload", None, source, queue=False, api_visibility="private").then(
            run, inputs, outputs, api_visibility="private")
        sketch.change(lambda: "draw", None, source, queue=False, show_progress="hidden", api_visibility="private")
        example_index.submit(lambda: "example", None, source, queue=False, api_visibility="private").then(
            run, inputs, outputs, api_visibility="private")
        for trigger in (dataset.change, model.change):
            trigger(show_map, [dataset, model], plot, api_visibility="private")
        dataset.change(sketch_visibility, dataset, sketch, api_visibility="private")
        results.select(result_as_query, table, [source, example_index], api_visibility="private").then(
            run, inputs, outputs, api_visibility="private")
        plot.select(map_band_as_query, [dataset, model], [source, example_index], api_visibility="private").then(
            run, inputs, outputs, api_visibility="private")
        app.load(run, inputs, outputs, api_visibility="private")
        api_button.click(search_api, [dataset, api_image, k], [results, table], api_name="search")
    return app


if __name__ == "__main__":
    print(f"[startup] imports took {IMPORT_SECONDS:.1f} s", flush=True)
    build().queue(max_size=64, default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_BYTES,
    )
