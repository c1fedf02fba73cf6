"""Own images end to end: `train.py --dataset FOLDER --out assets/NAME` alone trains a folder as
it comes, records its split, names its gallery by what it holds and flags a useless model; the
demo serves two folders of one name apart, never serves a folder's model MNIST's gallery, and
follows the assets folder while it runs (added, replaced, removed, half-written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import load_script

import train
from model.demo import Action, Demo, apply, initial_state, render
from model.demo.service import BundleError, feature_maps
from model.evaluation import evaluate_checkpoint

pytestmark = pytest.mark.slow  # trains several small checkpoints

sample = load_script("sample_folders")


def quick_train(folder: Path, out: Path, *extra: str) -> int:
    return train.main(["--dataset", str(folder), "--out", str(out), "--quick", *extra])


@pytest.fixture(scope="module")
def two_images_folders(tmp_path_factory):
    """Two folders both named "images" (shapes in one, colours in the other) and one named
    "mnist", each trained with the default command (--quick) into one assets folder."""
    tmp = tmp_path_factory.mktemp("own")
    a = sample.make_folder(tmp / "projectA" / "images", "shapes", per_class=12, seed=1)
    b = sample.make_folder(tmp / "projectB" / "images", "colours", per_class=12, seed=2, layout="train-test",
                           test_per_class=4)
    m = sample.make_folder(tmp / "elsewhere" / "mnist", "textures", per_class=10, seed=3)
    assets = tmp / "assets"
    shutil.copytree(Path(train.__file__).parent / "assets" / "gallery", assets / "gallery")
    shutil.copytree(Path(train.__file__).parent / "assets" / "mnist-hybrid1", assets / "mnist-hybrid1")
    assert quick_train(a, assets / "a-compact-conv") == 0
    assert quick_train(b, assets / "b-compact-conv") == 0
    assert quick_train(m, assets / "mine-compact-conv") == 0
    return tmp, assets


def test_a_folder_trains_with_its_split_gallery_and_check_recorded(two_images_folders) -> None:
    tmp, assets = two_images_folders
    out = assets / "a-compact-conv"
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    split = json.loads((out / "split.json").read_text())
    root = tmp / "projectA" / "images"
    assert config["dataset"] == "images" and config["dataset_path"] == str(root.resolve())
    assert config["gallery"].startswith("images-") and (assets / "gallery" / config["gallery"]).is_file()
    assert split["layout"] == "classes" and split["classes"] == sorted(sample.KINDS["shapes"])
    assert split["skipped"][0].startswith("circle/broken.jpg")  # the truncated JPEG, named and skipped
    files = [f for s in ("train", "val", "test") for f, _ in split[s]]
    assert len(files) == len(set(files)) == 4 * 12  # every readable image once, nested ones included
    assert metrics["recipe"]["stages"][0]["loss"] == "normsoftmax" and metrics["recipe"]["image_size"] == 48
    assert config["model"] == "compact-conv"  # the default network for a folder
    assert metrics["recipe"]["init_from"].endswith("cifar10-compact-conv")  # started from its CIFAR-10 checkpoint
    chosen = metrics["validation"]["stages"][0]  # trained with colours kept and changed, the better kept
    assert list(chosen["augment_candidates"]) == ["zoom-flip", "zoom-flip-mix"]
    assert chosen["augment"] in chosen["augment_candidates"]
    assert metrics["check"]["split"] == "validation" and metrics["check"]["verdict"] in ("ok", "near chance",
                                                                                        "collapsed")
    # the recorded split measures the same test images again
    again = evaluate_checkpoint(out, "test")
    assert again["images"] == metrics["test"]["images"]
    assert again["precision_at_1"] == pytest.approx(metrics["test"]["precision_at_1"])


def test_two_folders_of_one_name_are_two_datasets_and_mnist_stays_mnist(two_images_folders) -> None:
    tmp, assets = two_images_folders
    galleries = {json.loads((assets / f / "config.json").read_text())["gallery"]
                 for f in ("a-compact-conv", "b-compact-conv", "mine-compact-conv")}
    assert len(galleries) == 3 and "mnist.npz" not in galleries
    demo = Demo(assets=assets)
    assert demo.datasets() == ["MNIST", "images (projectA)", "images (projectB)", "mnist (elsewhere)"]
    for title, kind in (("images (projectA)", "shapes"), ("images (projectB)", "colours"),
                        ("mnist (elsewhere)", "textures")):
        classes = sample.KINDS[kind]
        index = demo.index(title, "Compact-Conv")
        assert sorted(index.class_names) == sorted(classes) and index.images.shape[-1] == 3
    assert len(demo.index("MNIST", "Hybrid-1")) == 2000  # the shipped gallery, untouched
    # a folder's model (Compact-Conv) has no involution layer: the feature maps say so in one line
    image = demo.index("images (projectA)", "Compact-Conv").images[0]
    with pytest.raises(BundleError, match=r"served by Compact-Conv only: train a Hybrid-1 beside it"):
        feature_maps(demo, "images (projectA)", image, (4, 4), "Compact-Conv")
    # names resolve to one dataset each; an ambiguous or unknown one to none
    assert demo.dataset("b-compact-conv").title == "images (projectB)" and demo.dataset("mnist").title == "MNIST"
    assert demo.dataset("images") is None and demo.dataset("nothing") is None
    assert demo.dataset(demo.dataset("images (projectA)").key).title == "images (projectA)"


def test_the_demo_follows_the_assets_folder(two_images_folders, tmp_path) -> None:
    tmp, shared = two_images_folders
    assets = tmp_path / "assets"
    shutil.copytree(shared / "gallery", assets / "gallery")
    shutil.copytree(shared / "a-compact-conv", assets / "a-compact-conv")
    demo = Demo(assets=assets)
    state = initial_state(demo)
    assert state.dataset == "images" and render(state).datasets == ["images"]

    # added while the page is open: listed on the next action
    shutil.copytree(shared / "b-compact-conv", assets / "b-compact-conv")
    state = apply(state, Action("k", 5), demo)
    assert render(state).datasets == ["images (projectA)", "images (projectB)"]
    assert state.dataset == "images (projectA)" and state.error is None and len(state.rows[0].hits) == 5

    # a half-written folder (weights and config, its run's work/ still there) is never served
    partial = assets / "c-compact-conv"
    shutil.copytree(shared / "mine-compact-conv", partial)
    (partial / "work").mkdir()
    state = apply(state, Action("k", 6), demo)
    assert "mnist (elsewhere)" not in render(state).datasets and "mnist" not in render(state).datasets

    # replaced (as --overwrite leaves it): the query is searched again with the new weights
    before = demo.index(state.dataset, state.model)
    shutil.rmtree(partial)
    shutil.move(assets / "a-compact-conv", assets / "a-compact-conv.replaced")
    shutil.copytree(assets / "a-compact-conv.replaced", assets / "a-compact-conv")
    (assets / "a-compact-conv" / "work").mkdir()  # still being written: the set-aside folder serves
    state = apply(state, Action("k", 7), demo)
    assert state.dataset == "images (projectA)" and state.error is None
    assert demo.checkpoint(state.dataset, state.model).name == "a-compact-conv.replaced"
    shutil.rmtree(assets / "a-compact-conv" / "work")
    shutil.rmtree(assets / "a-compact-conv.replaced")
    state = apply(state, Action("k", 8), demo)
    assert demo.checkpoint(state.dataset, state.model).name == "a-compact-conv"
    assert demo.index(state.dataset, state.model) is not before and len(state.rows[0].hits) == 8

    # removed: the page moves to a dataset still served and says why
    shutil.rmtree(assets / "a-compact-conv")
    state = apply(state, Action("k", 4), demo)
    assert state.dataset == "images" and "images (projectA) is no longer served" in state.message
    assert render(state).datasets == ["images"] and len(state.rows[0].hits) == 4  # k applied there


def test_a_hybrid1_trained_beside_a_folders_model_joins_its_dataset(two_images_folders, tmp_path) -> None:
    """What the feature-maps line advises: `--model hybrid1` on the same folder gives the same
    dataset a second model, so compare and the feature maps work on it."""
    tmp, shared = two_images_folders
    assets = tmp_path / "assets"
    for name in ("gallery", "a-compact-conv"):
        shutil.copytree(shared / name, assets / name)
    assert quick_train(tmp / "projectA" / "images", assets / "a-hybrid1", "--model", "hybrid1") == 0
    config = json.loads((assets / "a-hybrid1" / "config.json").read_text())
    assert config["gallery"] == json.loads((assets / "a-compact-conv" / "config.json").read_text())["gallery"]
    demo = Demo(assets=assets)
    assert demo.datasets() == ["images"] and demo.models("images") == ["Hybrid-1", "Compact-Conv"]
    assert demo.compared("images", "Compact-Conv") == ["Compact-Conv", "Hybrid-1"]
    image = demo.index("images", "Compact-Conv").images[0]
    maps = feature_maps(demo, "images", image, (4, 4), "Hybrid-1")
    assert maps is not None


def test_a_collapsed_model_is_flagged(tmp_path, capsys) -> None:
    folder = sample.make_folder(tmp_path / "shapes", "shapes", per_class=10, seed=4)
    # one epoch from scratch at a learning rate that wrecks it (at lr 3 and 48 px a model came out spread
    # enough to pass, mean cosine 0.87): the check must say so
    code = train.main(["--dataset", str(folder), "--out", str(tmp_path / "out"), "--epochs", "1", "--init", "none",
                       "--lr", "10", "--no-index"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert code == 0 and metrics["check"]["verdict"] in ("near chance", "collapsed")
    err = capsys.readouterr().err
    assert f"warning: {metrics['check']['advice']}" in err


def test_a_checkpoint_added_while_the_page_is_open_is_listed_and_searched(two_images_folders, tmp_path) -> None:
    """In Chromium: the page opens on MNIST; a folder's checkpoint copied into the assets folder is
    in the dataset list after the next click, and picking it searches its own gallery."""
    from conftest import ROOT, free_port
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM, RESULT, choose, open_page, shot, wait_query

    import app

    tmp, shared = two_images_folders
    assets = tmp_path / "assets"
    shutil.copytree(shared / "gallery", assets / "gallery")
    shutil.copytree(shared / "mnist-hybrid1", assets / "mnist-hybrid1")
    saved, app.demo_state = app.demo_state, Demo(assets=assets)
    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                     quiet=True, **app.LAUNCH)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = open_page((blocks.local_url, browser))
            shutil.copytree(shared / "a-compact-conv", assets / "a-compact-conv")
            example = page.locator("#examples [data-pick]").nth(3)
            picked = example.get_attribute("data-pick")
            example.click()
            wait_query(page, f"gallery example #{picked}")
            choose(page, "dataset", "images")
            wait_query(page, "· images")
            captions = page.locator(f"{RESULT} .caption").all_inner_texts()
            assert captions and all(c.split(" · ")[0] in sample.KINDS["shapes"] for c in captions), captions
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            shot(page, "own-images-added-while-open")
            browser.close()
    finally:
        blocks.close()
        app.demo_state = saved


def test_a_small_gallery_is_mapped_without_a_library_warning() -> None:
    """A 9-image gallery (3 a class) is mapped with fewer neighbours, not with UMAP's warning in the log."""
    import warnings

    import numpy as np

    from model.index import fit_umap

    embeddings = np.random.default_rng(0).normal(size=(9, 16)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xy = fit_umap(embeddings)
    assert xy.shape == (9, 2) and np.isfinite(xy).all()
    assert not [w for w in caught if "n_neighbors" in str(w.message)]
