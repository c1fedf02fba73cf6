"""The shipped checkpoints in assets/: each loads, its search bundle matches its weights,
gallery and embedding settings, and the README's table is the one their metrics.json give."""

import json

import pytest
from conftest import ROOT, load_script

from model.index import load_index

SHIPPED = sorted(p.parent.name for p in (ROOT / "assets").glob("*/config.json"))


def test_all_six_are_shipped() -> None:
    assert SHIPPED == [f"{d}-{m}" for d in ("cifar10", "fashion_mnist", "mnist") for m in ("cnn3a", "hybrid1")]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_and_its_bundle_agree(name) -> None:
    folder = ROOT / "assets" / name
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    index = load_index(folder, rebuild=False)  # raises when the bundle is stale
    _, hits = index.search(index.images[5], k=3)
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["epochs_done"] == metrics["train_config"]["epochs"]  # finished runs only


def test_readme_table_is_current() -> None:
    table = load_script("update_readme").table()
    assert table in (ROOT / "README.md").read_text(), "run python scripts/update_readme.py"
