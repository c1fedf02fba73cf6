"""The demo page's one state and its update function (model/demo/page.py), without a browser:
every action from every kind of state leaves a page whose query, results and map belong to the
dataset on screen; a refused action keeps the last good query and its results and names the
problem; a click from a page already replaced, or overtaken by a later click, is dropped. The
state logic runs on small synthetic checkpoints, never the shipped ones; what only trained
models show through the page (a drawn 1 finds 1s, a car is unlike MNIST) is tested on the
shipped checkpoints in test_shipped_page.py."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import train
from model.demo import Action, Demo, apply, initial_state, render
from model.demo.page import MAX_K, PageState, clamp_k, drawable

pytestmark = pytest.mark.slow  # trains small checkpoints


@pytest.fixture(scope="module")
def demo(assets, data_dir, tmp_path_factory) -> Demo:
    """The page's state logic needs no shipped checkpoint: small ones (1 epoch on synthetic
    data, conftest's `assets`) for MNIST with both models (compare), FashionMNIST (drawings,
    another gallery) and CIFAR-10 (colour images, no drawings)."""
    folder = tmp_path_factory.mktemp("page-assets")
    shutil.copytree(assets, folder, dirs_exist_ok=True)
    data = tmp_path_factory.mktemp("page-data")
    shutil.copy(data_dir / "cifar10.npz", data / "cifar10.npz")
    shutil.copy(data_dir / "mnist.npz", data / "fashion_mnist.npz")  # synthetic gratings under FashionMNIST's name
    for name in ("fashion_mnist", "cifar10"):
        args = ["--dataset", name, "--model", "hybrid1", "--loss", "ce", "--epochs", "1", "--batch-size", "50",
                "--device", "cpu", "--data-dir", str(data), "--out", str(folder / f"{name}-hybrid1")]
        assert train.main(args) == 0
    return Demo(assets=folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    photo = Image.new("L", (300, 200), 235)
    ImageDraw.Draw(photo).line((150, 30, 160, 170), fill=10, width=14)  # a dark "1" on paper
    photo.convert("RGB").save(folder / "one.png")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    (folder / "text.png").write_bytes(b"not an image")
    own = []
    for i, colour in enumerate(("red", "green", "blue", "white", "black")):
        path = folder / f"own-{i}.png"
        Image.new("RGB", (40, 40), colour).save(path)
        own.append(str(path))
    return {"photo": folder / "one.png", "dot": folder / "dot.png", "text": folder / "text.png", "own": own}


def pad_png(canvas: Image.Image) -> str:
    """A canvas as the sketchpad sends it (static/sketch.js through app.py): a PNG data URL."""
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def sketch() -> str:
    """One vertical stroke, black on the pad's white."""
    canvas = Image.new("RGBA", (280, 280), "white")
    canvas.paste((0, 0, 0, 255), (130, 40, 150, 240))
    return pad_png(canvas)


def states(demo: Demo, files) -> dict[str, PageState]:
    """One state of every kind a visitor can reach."""
    first = initial_state(demo)
    out = {"example": first}
    out["upload"] = apply(first, Action("upload", str(files["photo"])), demo)
    out["draw"] = apply(first, Action("draw", sketch()), demo)
    out["refused"] = apply(out["upload"], Action("upload", str(files["dot"])), demo)
    with_own = apply(first, Action("own_files", files["own"]), demo)
    out["own"] = apply(with_own, Action("own", 2, f"own:{with_own.own.token}"), demo)
    out["cifar"] = apply(first, Action("dataset", "CIFAR-10"), demo)
    out["no-query"] = apply(out["draw"], Action("dataset", "CIFAR-10"), demo)
    out["compare"] = apply(first, Action("compare", True), demo)
    return out


def actions(state: PageState, files) -> dict[str, Action]:
    gallery = state.gallery_key
    own = f"own:{state.own.token}" if state.own is not None else None
    return {
        "example": Action("example", 5, f"gallery:{state.gallery_key.split(':')[1]}" if gallery.startswith("gallery")
                          else None),
        "result": Action("result", 3, gallery), "map": Action("map", 4, gallery), "own": Action("own", 1, own),
        "stale-click": Action("example", 5, "gallery:nowhere"),
        "upload": Action("upload", str(files["photo"])), "bad-upload": Action("upload", str(files["text"])),
        "tiny-upload": Action("upload", str(files["dot"])),
        "image": Action("image", np.full((50, 60, 3), 200, np.uint8)),
        "draw": Action("draw", sketch()),
        "empty-draw": Action("draw", pad_png(Image.new("RGBA", (280, 280), "white"))),
        "bad-draw": Action("draw", "data:text/plain;base64,aGk="),
        "mnist": Action("dataset", "MNIST"), "fashion": Action("dataset", "FashionMNIST"),
        "cifar": Action("dataset", "CIFAR-10"), "unknown-dataset": Action("dataset", "ImageNet"),
        "model": Action("model", "CNN-3a"), "unknown-model": Action("model", "ResNet"),
        "k": Action("k", 20), "k-too-big": Action("k", 100), "k-zero": Action("k", 0), "k-empty": Action("k", None),
        "k-fraction": Action("k", 7.5), "compare": Action("compare", not state.compare),
        "compare-with": Action("compare_with", "Hybrid-1"), "bad-compare-with": Action("compare_with", "ResNet"),
        "shuffle": Action("shuffle", 7), "own-files": Action("own_files", files["own"][:3]),
        "tab": Action("tab", True), "pixel": Action("pixel", (3, 4)), "clear": Action("clear"),
    }


def check_consistent(state: PageState, demo: Demo) -> None:
    """What the page shows belongs to the query and dataset on screen."""
    page = render(state)
    index = demo.index(state.dataset, state.model)
    assert page.dataset == state.dataset and state.model in page.models
    map_file = page.map["src"].removeprefix("gradio_api/file=")  # a map is always drawn, of this page's gallery
    title = json.loads(Path(map_file).read_text())["title"]
    if state.target == "own":
        assert title.startswith(f"your {len(state.own)} images")
    else:
        assert title.startswith(f"{state.dataset} gallery"), (title, state.dataset)
    assert all(0 <= i < len(index) for i in state.examples)
    if state.query is None or (state.query.kind == "draw" and not drawable(demo, state.dataset)):
        assert not state.rows and "Query:" not in page.results  # nothing searched (a drawing is kept, not searched)
        return
    assert state.rows and all(len(r.hits) == min(state.k, len(index) - 1) or state.target == "own" for r in state.rows)
    size = len(state.own) if state.target == "own" else len(index)
    assert all(0 <= h.index < size for r in state.rows for h in r.hits)
    assert state.seen.shape[:2] == tuple(index.embedder.image_size)
    assert f"· {state.dataset}</span>" in page.results  # the query line names the dataset it was searched in
    if state.query.kind == "example":
        assert f"#{state.query.index} " in page.results
    if state.label is not None and state.target == "gallery":
        assert state.label == int(index.labels[state.query.index])


def test_every_action_from_every_state_leaves_a_consistent_page(demo, files) -> None:
    for name, state in states(demo, files).items():
        check_consistent(state, demo)
        for what, action in actions(state, files).items():
            after = apply(state, action, demo)
            check_consistent(after, demo)
            if after.error is not None:  # refused: the last good query and its results are kept
                assert (after.query, after.rows, after.dataset, after.model) == (state.query, state.rows, state.dataset,
                                                                                state.model), (name, what)
                page = render(after)
                assert after.error[1] in page.status and any(after.error[1] in v for v in page.errors.values())
                if after.rows:  # results on screen: said to be the last good query's
                    assert "still those of" in page.results


def test_refusals_name_the_problem_and_later_changes_search_the_last_good_query(demo, files) -> None:
    first = initial_state(demo)
    good = apply(first, Action("upload", str(files["photo"])), demo)
    refused = apply(good, Action("upload", str(files["dot"])), demo)
    assert refused.error[0] == "upload" and "1x1 pixels" in refused.error[1]
    assert render(refused).errors["upload"].startswith("⚠") and refused.query == good.query
    wider = apply(refused, Action("k", 20), demo)
    assert wider.error is None and wider.query == good.query and len(wider.rows[0].hits) == 20
    moved = apply(wider, Action("dataset", "CIFAR-10"), demo)
    assert moved.dataset == "CIFAR-10" and moved.query == good.query and moved.seen.shape == (32, 32, 3)
    assert moved.rows[0].hits[0].index < len(demo.index("CIFAR-10", "Hybrid-1"))


def test_a_drawing_follows_the_dataset_and_leaves_no_results_where_drawings_are_not_searched(demo) -> None:
    drawn = apply(initial_state(demo), Action("draw", sketch()), demo)
    fashion = apply(drawn, Action("dataset", "FashionMNIST"), demo)
    assert fashion.query.kind == "draw" and fashion.dataset == "FashionMNIST"
    cifar = apply(fashion, Action("dataset", "CIFAR-10"), demo)
    assert cifar.query.kind == "draw" and not cifar.rows and "drawings are searched on" in cifar.notes[0]
    assert "your drawing" not in render(cifar).results  # kept, not searched here
    assert apply(cifar, Action("dataset", "CIFAR-10"), demo).query.kind == "draw"  # the same value sent twice
    assert not apply(cifar, Action("k", 12), demo).rows  # nor when a setting changes
    back = apply(cifar, Action("dataset", "MNIST"), demo)
    assert back.query.kind == "draw" and back.rows  # searched again where drawings are
    # a map click there searches a CIFAR-10 image: the map is CIFAR-10's
    clicked = apply(cifar, Action("map", 12, cifar.gallery_key), demo)
    assert clicked.query.index == 12 and clicked.dataset == "CIFAR-10" and clicked.label is not None


def test_clicks_from_a_replaced_page_or_overtaken_by_a_later_one_are_dropped(demo) -> None:
    first = initial_state(demo)
    cifar = apply(first, Action("dataset", "CIFAR-10"), demo)
    stale = apply(cifar, Action("example", 3, "gallery:mnist"), demo)  # clicked on the MNIST grid before it went
    assert stale.query == cifar.query and stale.rows == cifar.rows
    last = apply(cifar, Action("example", 9, cifar.gallery_key, seq=5), demo)
    overtaken = apply(last, Action("example", 4, cifar.gallery_key, seq=4), demo)  # sent earlier, arrived later
    assert overtaken == last and overtaken.query.index == 9


def test_compare_takes_any_two_models_of_a_dataset(demo, data_dir, tmp_path) -> None:
    """With a third MNIST model beside the paper's pair, "compare" pairs Hybrid-1 and CNN-3a until
    another model is picked to compare with; a model never compares with itself."""
    folder = tmp_path / "assets"
    shutil.copytree(demo.assets, folder)
    args = ["--dataset", "mnist", "--model", "compact-conv", "--loss", "ce", "--epochs", "1", "--batch-size", "50",
            "--device", "cpu", "--data-dir", str(data_dir), "--out", str(folder / "mnist-compact-conv")]
    assert train.main(args) == 0
    three = Demo(assets=folder)
    first = initial_state(three)
    assert (first.dataset, first.model) == ("MNIST", "Hybrid-1")
    page = render(first)
    assert page.compare_choices == ["CNN-3a", "Compact-Conv"] and page.compare_with == "CNN-3a"
    on = apply(first, Action("compare", True), three)
    assert [r.model for r in on.rows] == ["Hybrid-1", "CNN-3a"]
    picked = apply(first, Action("compare_with", "Compact-Conv"), three)  # picking one compares
    assert picked.compare and [r.model for r in picked.rows] == ["Hybrid-1", "Compact-Conv"]
    assert render(picked).compare_with == "Compact-Conv"
    swapped = apply(picked, Action("model", "Compact-Conv"), three)
    assert [r.model for r in swapped.rows] == ["Compact-Conv", "Hybrid-1"]
    assert render(swapped).compare_choices == ["Hybrid-1", "CNN-3a"]
    refused = apply(picked, Action("compare_with", "ResNet"), three)
    assert "ResNet cannot be compared" in refused.error[1] and refused.rows == picked.rows


def test_top_k_is_clamped_with_a_line() -> None:
    assert clamp_k(20, 8) == (20, "")
    assert clamp_k(100, 8)[0] == MAX_K and "became 48" in clamp_k(100, 8)[1]
    assert clamp_k(0, 8)[0] == 1 and clamp_k(7.5, 8)[0] == 8 and "7.5 became 8" in clamp_k(7.5, 8)[1]
    assert clamp_k(None, 12) == (12, "top-k must be a number from 1 to 48: kept 12")
    assert clamp_k(float("nan"), 12)[0] == 12


def test_own_gallery_results_name_their_files(demo, files) -> None:
    with_own = apply(initial_state(demo), Action("own_files", files["own"]), demo)
    searched = apply(with_own, Action("own", 0, f"own:{with_own.own.token}"), demo)
    page = render(searched)
    names = [Path(p).name for p in files["own"]]
    captions = [c.split(" · ")[0] for c in page.results.split('class="caption">')[1:]]
    assert captions and all(c in names for c in captions), captions
    assert dataclasses.replace(searched).target == "own"


def test_render_only_formats_the_state(demo, files, monkeypatch) -> None:
    """apply does the work and render only formats: with every service call made to fail, each
    state is drawn as before (and the feature maps tab open shows the maps apply computed)."""
    reached = states(demo, files)
    reached["maps"] = apply(reached["draw"], Action("tab", True), demo)
    pages = {name: render(state) for name, state in reached.items()}
    assert "<img" in pages["maps"].feature_maps and pages["draw"].feature_maps is None

    def refuse(*args, **kwargs):
        raise AssertionError("render reached the service")

    for name in ("index", "gallery_thumbs", "static_json", "own_index", "available", "refresh", "compared"):
        monkeypatch.setattr(Demo, name, refuse)
    monkeypatch.setattr("model.demo.page.feature_maps", refuse)
    for name, state in reached.items():
        assert render(state) == pages[name], name
