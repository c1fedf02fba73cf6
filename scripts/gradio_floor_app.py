"""A Gradio app that does no work, to measure what Gradio itself costs per request.

    python scripts/gradio_floor_app.py     # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected

`/search` has app.py's signature (dataset, image file, k) -> (8-image PNG gallery, table)
and the same queue settings, but returns fixed thumbnails and a fixed table without
opening the upload or touching a model. `/echo` returns its text. benchmark_demo.py runs
the same load test against both, so the demo's latency can be read against the floor that
Gradio and gradio_client set on the same machine, in the same run. Like app.py it serves
its gallery files as static paths; FLOOR_STATIC=0 turns that off, to measure what it saves.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

K = 8


def fixed_gallery() -> list[tuple[str, str]]:
    """K gallery-sized PNGs (28x28 upscaled 4x, as the demo's thumbnails are), written once."""
    folder = Path(tempfile.mkdtemp(prefix="gradio-floor-"))
    rng = np.random.default_rng(0)
    items = []
    for i in range(K):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).resize((112, 112), Image.NEAREST).save(path)
        items.append((str(path), f"class {i}  0.9{i}"))
    return items


GALLERY = fixed_gallery()
if os.environ.get("FLOOR_STATIC", "1") == "1":  # as app.py serves its thumbnails
    gr.set_static_paths([str(Path(GALLERY[0][0]).parent)])
TABLE = pd.DataFrame({"gallery index": range(K), "label": [f"class {i}" for i in range(K)],
                      "similarity": [0.9] * K})


def search(dataset: str, image: str, k: float):
    return GALLERY, TABLE


def echo(text: str) -> str:
    return text


def build() -> gr.Blocks:
    with gr.Blocks() as app:
        dataset = gr.Dropdown(["MNIST", "FashionMNIST", "CIFAR-10"], value="MNIST")
        image = gr.File(type="filepath")
        k = gr.Slider(1, 24, value=K, step=1)
        gallery = gr.Gallery(format="png")
        table = gr.Dataframe()
        text_in, text_out = gr.Textbox(), gr.Textbox()
        gr.Button().click(search, [dataset, image, k], [gallery, table], api_name="search")
        gr.Button().click(echo, text_in, text_out, api_name="echo")
    return app


if __name__ == "__main__":
    build().queue(max_size=64, default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
