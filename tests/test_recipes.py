"""Recipes (model/recipe.py) and the train.py chain they drive: parse, override, round trip,
replay; stages chained; every choice made on the validation split and never on the test set;
and a --quick run of every shipped recipe on the real datasets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, synthetic_arrays
from safetensors.torch import load_file

import train
from model.data import load_dataset
from model.recipe import RecipeError, apply_override, from_dict, load_recipe, quick
from model.training import Trainer

SHIPPED = sorted((ROOT / "recipes").glob("*.toml"))
SHARED = ROOT.parent / "shared" / "datasets"


def test_the_recipes_ship_one_per_checkpoint() -> None:
    assert [p.stem for p in SHIPPED] == sorted(f"{d}-{m}" for d in ("mnist", "fashion_mnist", "cifar10")
                                               for m in ("hybrid1", "cnn3a", "compact-conv"))
    for path in SHIPPED:
        recipe = load_recipe(path)
        assert recipe.name == path.stem and recipe.validation.size > 0 and recipe.stages


def test_parse_override_and_round_trip(tmp_path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "fashion_mnist-hybrid1.toml",
                         ["stages.2.lr=1e-4", "stages.*.epochs=3", "validation.size=0.2",
                          "search.views=[{flip=true, shift=2}]", "seed=7"])
    assert [s.epochs for s in recipe.stages] == [3, 3] and recipe.stages[1].lr == 1e-4
    assert recipe.stages[0].lr == 1e-3 and recipe.validation.size == 0.2 and recipe.seed == 7
    assert [(v.flip, v.shift) for v in recipe.search.views] == [(True, 2)]
    path = tmp_path / "recipe.toml"
    path.write_text(recipe.dumps())
    assert load_recipe(path) == recipe  # the resolved file replays to the same recipe
    assert from_dict(recipe.to_dict()) == recipe
    # a value that is not TOML is a string; a stage field set for every stage
    data = {"stages": [{}, {}]}
    apply_override(data, "stages.*.augment=flip")
    assert data == {"stages": [{"augment": "flip"}, {"augment": "flip"}]}


@pytest.mark.parametrize(("overrides", "message"), [
    (["stages.1.epoch=3"], "unknown recipe field stages.1.epoch: Stage has loss, epochs"),
    (["stages.3.epochs=3"], "stages has 2 entries, numbered from 1"),
    (["stages.1.epochs=0"], "stages.1.epochs must be a whole number of at least 1"),
    (["stages.1.epochs=2.5"], "stages.1.epochs must be int"),
    (["stages.2.loss=triplet"], "stages.2.loss = 'triplet' is not one of ce, normsoftmax, ms"),
    (["stages.1.lr=-1"], "stages.1.lr must be a positive number"),
    (["model=resnet9000"], "model = 'resnet9000' is not one of"),
    (["validation.size=1.5"], "validation.size must be a number of images or a fraction below 1"),
    (["validation.size=0"], "validation.size is 0 but the recipe makes choices"),
    (["stages.1.choose_epoch=yes"], "stages.1.choose_epoch must be true or false"),
    (["search.views=[]"], "search.views is empty"),
    (["epochs"], "write it as key=value"),
    (["precision=fp16"], "precision = 'fp16' is not one of auto, fp32, bf16"),
    (['stages.1.augment=["flip", "spin"]'], "stages.1.augment = 'spin' is not one of"),
    (['stages.1.augment=["flip", "flip"]'], "a list of candidates must name each mode once"),
    (["stages.1.augment=[1, 2]"], "stages.1.augment must be a mode such as"),
    (["validation.size=0", "stages.*.choose_epoch=false", 'stages.1.augment=["flip", "none"]'],
     "augmentation candidates"),
])
def test_bad_fields_are_named(overrides, message) -> None:
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes" / "fashion_mnist-hybrid1.toml", overrides)
    assert message in str(e.value)


def test_bad_recipe_files_give_one_line(tmp_path, capsys) -> None:
    (tmp_path / "bad.toml").write_text("dataset = mnist\n")
    assert train.main([str(tmp_path / "bad.toml")]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert train.main([str(tmp_path / "nothing.toml")]) == 2
    assert "no such recipe file" in capsys.readouterr().err
    assert train.main([str(ROOT / "recipes" / "mnist-hybrid1.toml"), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "--epochs with a recipe file: change its fields with --set" in err and err.count("\n") == 1


def test_quick_shrinks_every_stage_to_one_epoch() -> None:
    recipe = quick(load_recipe(ROOT / "recipes" / "cifar10-hybrid1.toml"))
    assert all(s.epochs == 1 for s in recipe.stages) and recipe.max_train_samples == 2000
    assert recipe.validation.size == 500 and recipe.max_test_samples == 1000


def test_the_validation_split_is_stratified_seeded_and_disjoint(data_dir) -> None:
    data = load_dataset("mnist", data_dir)
    split = data.hold_out_validation(50, seed=3)
    assert len(split.val_y) == 50 and len(split.train_y) == 250
    assert torch.bincount(split.val_y).tolist() == [5] * 10  # every class its share
    again = data.hold_out_validation(50, seed=3)
    assert torch.equal(split.val_x, again.val_x)
    other = data.hold_out_validation(50, seed=4)
    assert not torch.equal(split.val_x, other.val_x)
    rows = {bytes(x.numpy()) for x in split.train_x}
    assert not any(bytes(x.numpy()) in rows for x in split.val_x)  # no image on both sides
    assert torch.equal(split.test_x, data.test_x)  # the test set is untouched


def write_data(folder: Path, seed: int = 0, noise_test: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = synthetic_arrays(600, 200, seed=seed)
    if noise_test:  # the test images replaced by noise: nothing a choice may see
        xte = np.random.default_rng(9).integers(0, 256, xte.shape, dtype=np.uint8)
    np.savez(folder / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return folder


TWO_STAGES = """
dataset = "mnist"
model = "hybrid1"
[validation]
size = 100
[[stages]]
loss = "normsoftmax"
epochs = 3
lr = 0.003
batch_size = 50
[[stages]]
loss = "ms"
epochs = 2
lr = 0.001
batch_size = 50
augment = "shift"
[search]
views = [{flip = false, shift = 0}, {flip = true, shift = 0}, {flip = false, shift = 1}]
[whitening]
powers = [0.5, 1.0]
shrinkages = [0.01, 1.0]
fit_images = 300
"""


def run_recipe(recipe: Path, data: Path, out: Path, *extra: str) -> int:
    return train.main([str(recipe), "--data-dir", str(data), "--out", str(out), "--device", "cpu", "--no-index",
                       *extra])


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    (tmp / "recipe.toml").write_text(TWO_STAGES)
    assert run_recipe(tmp / "recipe.toml", write_data(tmp / "data"), tmp / "out") == 0
    return tmp


def test_choices_are_made_on_validation_and_recorded(two_stage_run) -> None:
    out = two_stage_run / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["recipe", "training", "validation", "test", "check"]
    check = metrics["check"]  # the served embedding's health on the validation split
    assert check["split"] == "validation" and check["images"] == 100 and check["verdict"] in ("ok", "near chance")
    assert 0.09 < check["chance_precision_at_1"] < 0.11 and check["mean_pairwise_cosine"] < check["collapsed_above"]
    v = metrics["validation"]
    assert v["split"]["images"] == 100 and metrics["training"]["train_images"] == 500
    for stage in v["stages"]:
        best = max(stage["epochs"], key=lambda r: r["mean_average_precision_at_r"])
        assert stage["chosen_epoch"] == best["epoch"]
        assert all("train_loss" not in r and "test_ms_loss" not in r for r in stage["epochs"])
    views = v["search_views"]
    assert len(views["candidates"]) == 3
    assert views["chosen"] == max(views["candidates"], key=lambda r: r["mean_average_precision_at_r"])
    w = v["whitening"]
    assert len(w["candidates"]) == 1 + 1 + 4 and w["candidates"][0]["whitening"] is None
    assert w["chosen"] == max(w["candidates"], key=lambda r: r["mean_average_precision_at_r"])
    config = json.loads((out / "config.json").read_text())
    assert (config["flip_average"], config["shift_average"]) == (views["chosen"]["flip"], views["chosen"]["shift"])
    assert set(metrics["test"]) >= {"precision_at_1", "r_precision", "mean_average_precision_at_r", "ms_loss"}
    assert metrics["test"]["images"] == 200
    assert not (out / "work").exists() and (out / "recipe.toml").is_file() and (out / "curves.png").is_file()


def test_the_test_figures_are_what_the_served_embedder_gives(two_stage_run) -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from model import load_embedder
    from model.evaluation import evaluate_checkpoint

    out = two_stage_run / "out"
    test = json.loads((out / "metrics.json").read_text())["test"]
    data = load_dataset("mnist", two_stage_run / "data")
    emb = torch.from_numpy(load_embedder(out).embed_uint8(data.test_x))
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")
    acc = calc.get_accuracy(emb, data.test_y)
    assert acc["precision_at_1"] == pytest.approx(test["precision_at_1"], abs=1e-6)
    assert acc["mean_average_precision_at_r"] == pytest.approx(test["mean_average_precision_at_r"], abs=1e-6)
    again = evaluate_checkpoint(out, "test", two_stage_run / "data")
    assert again["precision_at_1"] == test["precision_at_1"]
    val = evaluate_checkpoint(out, "val", two_stage_run / "data")
    assert val["images"] == 100
    cli = subprocess.run([sys.executable, "-m", "model.evaluation", str(out), "--split", "val", "--data-dir",
                          str(two_stage_run / "data")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0 and json.loads(cli.stdout)["precision_at_1"] == val["precision_at_1"]


def test_choices_do_not_depend_on_the_test_images(two_stage_run, tmp_path) -> None:
    noisy = write_data(tmp_path / "noisy", noise_test=True)
    assert run_recipe(two_stage_run / "recipe.toml", noisy, tmp_path / "out") == 0
    a = json.loads((two_stage_run / "out" / "metrics.json").read_text())
    b = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert a["validation"] == b["validation"]  # every figure a choice saw, and every choice, the same
    assert load_file(str(two_stage_run / "out" / "model.safetensors")).keys() == \
        load_file(str(tmp_path / "out" / "model.safetensors")).keys()
    assert all(torch.equal(x, y) for x, y in zip(load_file(str(two_stage_run / "out" / "model.safetensors")).values(),
                                                  load_file(str(tmp_path / "out" / "model.safetensors")).values(),
                                                  strict=True))
    assert a["test"]["precision_at_1"] != b["test"]["precision_at_1"]  # the test set did change


def test_a_later_stage_starts_from_the_epoch_the_one_before_chose(two_stage_run, tmp_path, monkeypatch) -> None:
    seen, chosen = [], []
    original_epoch, original_chosen = Trainer.train_epoch, Trainer.chosen_state

    def spy_epoch(self, epoch):
        if epoch == 0:
            seen.append({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        return original_epoch(self, epoch)

    def spy_chosen(self):
        chosen.append(original_chosen(self))
        return chosen[-1]

    monkeypatch.setattr(Trainer, "train_epoch", spy_epoch)
    monkeypatch.setattr(Trainer, "chosen_state", spy_chosen)
    assert run_recipe(two_stage_run / "recipe.toml", two_stage_run / "data", tmp_path / "out") == 0
    assert len(seen) == len(chosen) == 2
    assert all(torch.equal(seen[1][k], v) for k, v in chosen[0].items())
    assert not all(torch.equal(seen[0][k], v) for k, v in chosen[0].items())  # stage 1 trained


def test_replaying_recipe_toml_gives_the_same_checkpoint(two_stage_run, tmp_path) -> None:
    out = two_stage_run / "out"
    assert train.main([str(out / "recipe.toml"), "--data-dir", str(two_stage_run / "data"),
                       "--out", str(tmp_path / "replay"), "--device", "cpu", "--no-index"]) == 0
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "replay" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "replay" / "recipe.toml").read_text() == (out / "recipe.toml").read_text()


def test_an_interrupted_chain_resumes_to_the_same_checkpoint(two_stage_run, tmp_path, monkeypatch, capsys) -> None:
    original = Trainer.train_epoch

    def ctrl_c(self, epoch):
        if self.stage_number == 2 and epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", ctrl_c)
    out = tmp_path / "cut"
    assert run_recipe(two_stage_run / "recipe.toml", two_stage_run / "data", out) == 130
    assert not (out / "metrics.json").exists() and (out / "work" / "stage-1" / "chosen.safetensors").is_file()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    capsys.readouterr()
    assert run_recipe(two_stage_run / "recipe.toml", two_stage_run / "data", out) == 2
    assert "already holds a run in progress" in capsys.readouterr().err
    assert run_recipe(two_stage_run / "recipe.toml", two_stage_run / "data", out, "--resume",
                      "--set", "stages.2.lr=0.01") == 2
    assert "stages.2.lr = 0.01 (the run has 0.001)" in capsys.readouterr().err
    assert train.main(["--resume", "--out", str(out), "--data-dir", str(two_stage_run / "data"), "--no-index"]) == 0
    a = load_file(str(two_stage_run / "out" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """The real datasets: MNIST and FashionMNIST from shared/datasets, CIFAR-10 decoded from its archive."""
    if not (SHARED / "mnist.npz").is_file():  # CI has it; a missing copy must not pass unnoticed
        pytest.fail(f"{SHARED} is not beside the checkout: the shipped recipes' --quick runs need its datasets")
    folder = tmp_path_factory.mktemp("real")
    for name in ("mnist", "fashion_mnist"):
        (folder / f"{name}.npz").symlink_to(SHARED / f"{name}.npz")
    local = ROOT / "data" / "cifar10.npz"
    if local.is_file():
        (folder / "cifar10.npz").symlink_to(local)
    else:
        subprocess.run([sys.executable, str(SHARED / "cifar10_jpeg_to_npz.py"), str(SHARED / "cifar10-jpeg.tar.gz"),
                        str(folder / "cifar10.npz")], check=True, capture_output=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("recipe", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_quick_runs_every_shipped_recipe(recipe, real_data, tmp_path) -> None:
    assert run_recipe(recipe, real_data, tmp_path / "out", "--quick") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [s["epochs_done"] for s in metrics["training"]["stages"]] == [1] * len(load_recipe(recipe).stages)
    assert metrics["validation"]["split"]["images"] == 500 and metrics["test"]["images"] == 1000


@pytest.mark.slow
def test_evaluate_cli_refuses_in_one_line(tmp_path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "model.evaluation", *args], capture_output=True, text=True,
                              cwd=ROOT)

    missing = cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "config.json is missing" in missing.stderr
    legacy_folder = tmp_path / "legacy"  # a checkpoint trained before recipes: weights, no recipe.toml
    legacy_folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ROOT / "assets" / "mnist-hybrid1" / name, legacy_folder / name)
    legacy = cli(str(legacy_folder), "--split", "val")
    assert legacy.returncode == 2 and "has no recipe.toml" in legacy.stderr and legacy.stderr.count("\n") == 1
