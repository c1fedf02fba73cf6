"""A collection in the demo's assets folder is served (issue 36, point 4): listed under its
folder's name with its checkpoint's model, searched by example clicks, uploads and /search,
every result captioned with its path; its map draws a sample with the sample's gallery ids; a
rebuilt collection is followed without a restart; an unlabelled one shows no precision."""

from __future__ import annotations

import shutil

import numpy as np
from conftest import ROOT, load_script

from model import collection as col

sample = load_script("sample_folders")
CKPT = str(ROOT / "assets" / "cifar10-hybrid1")


def test_a_collection_is_served_with_paths_and_a_sampled_map(tmp_path, monkeypatch) -> None:
    import app
    from model.demo import Action, Demo, apply, collection_view, initial_state, render
    from model.demo.html import map_value

    folder = sample.make_folder(tmp_path / "photos", "shapes", per_class=12, seed=3)
    assets = tmp_path / "assets"
    assert col.main(["build", str(folder), "--checkpoint", CKPT, "--out", str(assets / "my-photos")]) == 0
    monkeypatch.setattr(collection_view, "MAP_SAMPLE", 20)

    demo = Demo(assets=assets)
    assert demo.datasets() == ["my-photos"] and demo.models("my-photos") == ["Hybrid-1"]
    assert demo.problem("my-photos", "Hybrid-1") is None
    state = initial_state(demo)
    assert state.dataset == "my-photos" and state.error is None and len(state.rows[0].hits) == 8
    index = demo.index("my-photos", "Hybrid-1")
    paths = col.open_collection(assets / "my-photos").paths
    assert len(index) == len(paths) == 48 and index.class_names == sorted({p.split("/")[0] for p in paths})
    page = render(state)
    hits = state.rows[0].hits
    assert all(paths[h.index] in page.results for h in hits)  # each result names its file
    assert "precision@8" in page.results  # labelled by class folder: the query's label is known
    assert "cosine similarity to the query" in page.results  # the scores explained (spec.json's scores_help)
    clicked = apply(state, Action("result", str(hits[0].index), gallery=state.gallery_key), demo)
    assert clicked.error is None and clicked.query.index == hits[0].index
    assert all(h.index != hits[0].index for h in clicked.rows[0].hits)  # the query itself left out

    value = map_value(index, demo.gallery_thumbs("my-photos", "Hybrid-1"), "t")
    assert len(value["points"]) == len(value["ids"]) <= 21 and len(set(value["ids"])) == len(value["ids"])
    assert all(0 <= i < 48 for i in value["ids"]) and "of them on the map" in index.summary

    compared = apply(state, Action("compare", True), demo)  # one model: said, not a silent single row
    assert len(compared.rows) == 1 and any("compare needs a second model: only Hybrid-1 serves my-photos" in n
                                           for n in compared.notes)
    assert "compare needs a second model" in render(compared).status

    upload = next(p for p in folder.rglob("*.png"))
    uploaded = apply(state, Action("upload", str(upload)), demo)
    assert uploaded.error is None and uploaded.rows[0].hits[0].similarity > 0.99  # its own file first

    monkeypatch.setattr(app, "demo_state", demo)
    gallery, table = app.search_api("my-photos", str(upload), 5)
    assert list(table.columns) == ["gallery index", "path", "label", "similarity"] and len(table) == 5
    assert table["path"][0] == upload.relative_to(folder).as_posix() and gallery[0][1].startswith(table["path"][0])

    # rebuilt with more images while the demo runs: served on the next action, thumbnails anew
    extra = sample.make_folder(tmp_path / "more", "shapes", per_class=3, seed=4)
    shutil.copytree(extra / "circle", folder / "circle" / "new")
    assert col.main(["build", str(folder), "--checkpoint", CKPT, "--out", str(assets / "my-photos")]) == 0
    assert demo.refresh() and len(demo.index("my-photos", "Hybrid-1")) == 51


def test_an_unlabelled_collection_shows_no_precision(tmp_path) -> None:
    from model.demo import Demo, initial_state, render

    source = sample.make_folder(tmp_path / "src", "colours", per_class=6, seed=2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted(q for q in source.rglob("*") if q.is_file())):
        shutil.copy(p, flat / f"{i}{p.suffix}")
    assets = tmp_path / "assets"
    assert col.main(["build", str(flat), "--checkpoint", CKPT, "--out", str(assets / "pile")]) == 0
    demo = Demo(assets=assets)
    state = initial_state(demo)
    index = demo.index("pile", "Hybrid-1")
    assert state.error is None and index.class_names == [] and set(np.unique(index.labels)) == {-1}
    assert state.label is None and state.rows[0].precision is None and len(index) >= 20
    page = render(state)
    assert 'class="precision"' not in page.results and 'class="mark same"' not in page.results


def test_the_compare_with_list_shows_only_where_there_is_a_model_to_pick(tmp_path) -> None:
    """The Gradio page: a one-model dataset (a collection) hides the "compare with" list; a
    dataset of several models shows it again, listing them."""
    import app
    from model.demo import Action, Demo, apply, initial_state

    folder = sample.make_folder(tmp_path / "photos", "shapes", per_class=6, seed=3)
    assets = tmp_path / "assets"
    assert col.main(["build", str(folder), "--checkpoint", CKPT, "--out", str(assets / "my-photos")]) == 0
    for name in ("mnist-hybrid1", "mnist-cnn3a"):
        shutil.copytree(ROOT / "assets" / name, assets / name)
    shutil.copytree(ROOT / "assets" / "gallery", assets / "gallery")
    demo = Demo(assets=assets)
    mnist = initial_state(demo)
    assert mnist.dataset == "MNIST"
    photos = apply(mnist, Action("dataset", "my-photos"), demo)
    assert photos.error is None
    outputs = dict(zip(app.OUTPUTS, app.draw(mnist, photos), strict=True))
    assert outputs["compare_with"]["visible"] is False and outputs["compare_with"]["choices"] == []
    outputs = dict(zip(app.OUTPUTS, app.draw(photos, mnist), strict=True))
    assert outputs["compare_with"]["visible"] is True and outputs["compare_with"]["value"] == "CNN-3a"
