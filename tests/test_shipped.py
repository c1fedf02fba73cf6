"""The shipped checkpoints in assets/: each loads, its search bundle matches its weights,
gallery and embedding settings, and the tables of the README and docs/shipped-models.md are the ones their
metrics.json give."""

import json

import pytest
from conftest import ROOT, load_script

from model.index import load_index
from model.recipe import load_recipe

SHIPPED = sorted(p.parent.name for p in (ROOT / "assets").glob("*/config.json"))


def test_the_papers_pair_and_this_projects_compact_model_are_shipped() -> None:
    paper = {f"{d}-{m}" for d in ("cifar10", "fashion_mnist", "mnist") for m in ("cnn3a", "hybrid1")}
    assert paper <= set(SHIPPED)
    compact = set(SHIPPED) - paper  # shipped where its recipe finished: see the README's Shipped models
    assert compact and all(name.endswith("-compact-conv") for name in compact), compact


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_and_its_bundle_agree(name) -> None:
    folder = ROOT / "assets" / name
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    index = load_index(folder, rebuild=False)  # raises when the bundle is stale
    _, hits = index.search(index.images[5], k=3)
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    metrics = json.loads((folder / "metrics.json").read_text())
    # a recipe run: every stage finished, the recipe it ran beside the weights, and that recipe is the shipped one
    assert [s["epochs_done"] for s in metrics["training"]["stages"]] == [
        s["epochs"] for s in metrics["recipe"]["stages"]]
    recorded = metrics["recipe"]
    if "precision" in recorded:
        assert recorded["precision"] == "auto" and metrics["training"]["precision"] in ("fp32", "bf16")
    else:  # trained before recipes had the field (fp32 on a CPU): compared without it
        assert metrics["training"].get("precision") is None
    assert set(load_recipe(folder / "recipe.toml").to_dict()) - set(recorded) <= {"precision"}
    same = lambda recipe: {k: v for k, v in recipe.to_dict().items() if k in recorded}
    assert same(load_recipe(folder / "recipe.toml")) == recorded
    assert same(load_recipe(ROOT / "recipes" / f"{name}.toml")) == recorded


def test_recipe_runs_make_every_choice_on_validation() -> None:
    for name in SHIPPED:
        metrics = json.loads((ROOT / "assets" / name / "metrics.json").read_text())
        assert metrics["validation"]["split"]["images"] == 5000
        assert set(metrics["test"]) >= {"precision_at_1", "r_precision", "mean_average_precision_at_r", "ms_loss"}


def test_readme_table_is_current() -> None:
    """The README's short table and docs/shipped-models.md's full one, each between its markers."""
    update_readme = load_script("update_readme")
    for path, start, body, end in (
        (ROOT / "README.md", update_readme.START, update_readme.summary_table(), update_readme.END),
        (ROOT / "docs" / "shipped-models.md", update_readme.FULL_START, update_readme.table(), update_readme.FULL_END),
    ):
        assert f"{start}\n{body}\n{end}" in path.read_text(), f"{path.name}: run python scripts/update_readme.py"
