"""The reproduction sweep on synthetic data: cells run, tables are written, reruns skip."""

import json
import shutil

import pytest
import torch
from conftest import load_script as _load_script

from model.data import load_dataset
from model.training import Trainer, one_stage_recipe


def load_script(name: str):
    """The sweep lives with its records in results/, apart from the product's scripts."""
    return _load_script(name, folder="results")


def test_quick_sweep_writes_tables_and_skips_finished_cells(data_dir, tmp_path, capsys) -> None:
    reproduce = load_script("reproduce")
    assert len(reproduce.plan(1)) == 3 * (8 * 2 + 2 * 2) + 4 * 2
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--quick", "--only", "mnist-hybrid1-ce", "--batch-size", "50", "--device", "cpu",
            "--max-train-samples", "200", "--precision", "fp32"]
    assert reproduce.main(args) == 0
    cells = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert cells == ["mnist-hybrid1-ce-gelu-s0", "mnist-hybrid1-ce-relu-s0"]
    table = (tmp_path / "table1.md").read_text()
    assert "| hybrid1 | gelu | 116,344 |" in table and "†" in table and "| 0.749 | 0.0707 |" in table
    assert (tmp_path / "map_at_r_vs_params.png").stat().st_size > 1000
    before = json.loads((tmp_path / "runs" / cells[0] / "metrics.json").read_text())
    assert before["precision"] == "fp32" and before["device"].startswith("cpu")
    capsys.readouterr()
    assert reproduce.main(args) == 0
    assert "epoch" not in capsys.readouterr().out  # finished cells are not trained again
    assert json.loads((tmp_path / "runs" / cells[0] / "metrics.json").read_text()) == before


@pytest.mark.slow
def test_parallel_cells_run_in_child_processes(data_dir, tmp_path) -> None:
    reproduce = load_script("reproduce")
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--quick", "--only", "mnist-cnn3a-ce,mnist-cnn3a-ms", "--batch-size", "50", "--device", "cpu",
            "--max-train-samples", "200", "--jobs", "2"]
    assert reproduce.main(args) == 0
    names = [f"mnist-cnn3a-{loss}-{act}-s0" for act in ("gelu", "relu") for loss in ("ce", "ms")]
    for name in names:
        assert json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["epochs_done"] == 1
        assert "epoch   1/1" in (tmp_path / "runs" / f"{name}.log").read_text()
    assert "| cnn3a | relu | 116,320 |" in (tmp_path / "table1.md").read_text()
    # the records travel back from a lent GPU as one file
    assert reproduce.main([*args, "--pack", str(tmp_path / "runs.tar.gz")]) == 0
    import tarfile

    with tarfile.open(tmp_path / "runs.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"{name}/metrics.json" for name in names)


def test_a_spent_time_budget_starts_nothing(data_dir, tmp_path, capsys) -> None:
    reproduce = load_script("reproduce")
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--quick", "--only", "mnist-cnn3a-ce", "--device", "cpu", "--time-budget", "0"]
    assert reproduce.main(args) == 0
    assert "time budget spent" in capsys.readouterr().out
    assert not list((tmp_path / "runs").glob("*/metrics.json"))


def test_an_only_that_matches_no_cell_is_one_clear_error(tmp_path, capsys) -> None:
    reproduce = load_script("reproduce")
    args = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path), "--only", "cifar-hybrid1", "--device", "cpu"]
    assert reproduce.main(args) == 2
    err = capsys.readouterr().err
    assert "no planned cell matches --only 'cifar-hybrid1'" in err and "mnist-cnn3a-ce-gelu-s0" in err


def test_a_restarted_cell_keeps_its_longer_earlier_measurement(data_dir, tmp_path) -> None:
    """A stopped cell whose resume state is gone restarts from epoch 0; until the new run has
    more epochs, the tables report the earlier one, and neither is lost."""
    reproduce = load_script("reproduce")
    out = tmp_path / "runs" / "mnist-inn2-ce-gelu-s0"
    data = load_dataset("mnist", str(data_dir), 100)
    recipe = one_stage_recipe("mnist", model="inn2", loss="ce", epochs=3, batch_size=50, max_train_samples=100,
                              choose_epoch=False, validation={"size": 0})
    Trainer(recipe, data, out, torch.device("cpu"), eval_split="test").fit(log=lambda line: None)
    shutil.rmtree(out / "resume")  # as when a lent GPU's resume state stays behind
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--only", "mnist-inn2-ce-gelu", "--batch-size", "50", "--device", "cpu", "--max-train-samples", "100"]

    assert reproduce.main([*args, "--cell", out.name, "--stop-at", "1"]) == 0  # a budget spent after 1 epoch
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 1
    assert json.loads((out / reproduce.PREVIOUS).read_text())["epochs_done"] == 3
    reproduce.write_tables(tmp_path / "runs", tmp_path, {})
    row = next(r for r in (tmp_path / "table1.md").read_text().splitlines() if r.startswith("| inn2 | gelu | 560 |"))
    assert "†(3 ep, 100 imgs)" in row

    assert reproduce.main(args) == 0  # resumes the new run to the full 20 epochs
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 20
    assert not (out / reproduce.PREVIOUS).exists()
    row = next(r for r in (tmp_path / "table1.md").read_text().splitlines() if r.startswith("| inn2 | gelu | 560 |"))
    assert "†(100 imgs)" in row and "3 ep" not in row


def test_the_product_never_imports_the_research() -> None:
    """app.py, train.py and the library stand without results/: none of them imports the sweep."""
    import ast

    from conftest import ROOT

    for file in [ROOT / "app.py", ROOT / "train.py", *sorted((ROOT / "model").glob("*.py"))]:
        for node in ast.walk(ast.parse(file.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("results", "reproduce") for n in names), file
    assert not list((ROOT / "scripts").glob("device_*.sh"))  # earlier runs' records live in git history


def test_claims_sweep_trains_class_split_cells_and_writes_verdicts(data_dir, tmp_path) -> None:
    """--claims: the unseen-class cells train on classes 0-4 only and are measured on the test
    images of 5-9 (and, once, on 0-4); claims.json holds the rule from the start and a verdict
    only when every cell has its 3 seeds; the paired interval and the rule's three outcomes."""
    reproduce = load_script("reproduce")
    plan = reproduce.claims_plan()
    assert len(plan) == 36 + 18 + 12 and plan[0].name == "mnist-hybrid1-ms-gelu-s0-classes0-4"
    mixer = [c for c in plan if c.model in reproduce.MIXER_MODELS]  # the third claim: its own protocol
    assert {(c.dataset, c.loss) for c in mixer} == {("fashion_mnist", "ce"), ("cifar10", "ce")}
    data = load_dataset("mnist", data_dir)
    split, (seen_x, seen_y) = reproduce.class_split(data, [0, 1, 2, 3, 4])
    assert set(split.train_y.tolist()) == {0, 1, 2, 3, 4} and set(split.test_y.tolist()) == {5, 6, 7, 8, 9}
    assert set(seen_y.tolist()) == {0, 1, 2, 3, 4} and len(seen_x) == len(seen_y)
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path), "--claims",
            "--quick", "--only", "mnist-hybrid1-ms-gelu-s0-classes0-4", "--batch-size", "50", "--device", "cpu",
            "--max-train-samples", "400", "--precision", "fp32"]
    assert reproduce.main(args) == 0
    cell = tmp_path / "runs" / "mnist-hybrid1-ms-gelu-s0-classes0-4"
    seen = json.loads((cell / "seen_classes.json").read_text())
    assert seen["classes"] == [0, 1, 2, 3, 4] and 0 <= seen["mean_average_precision_at_r"] <= 1
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert [c["id"] for c in claims["claims"]] == ["one-involution-layer-helps", "unseen-classes",
                                                   "involution-as-spatial-mixer"]
    assert all(c["verdict"] == "not measured yet" and "paired by seed" in c["rule"] for c in claims["claims"])
    third = claims["claims"][2]
    assert third["models"] == ["compact-inv", "compact-conv"] and third["protocol"]["epochs"]["cifar10"] == 15
    assert [c["dataset"] for c in third["cells"]] == ["fashion_mnist", "cifar10"]
    run = claims["claims"][1]["cells"][0]["a"]["runs"][0]
    assert run["seed"] == 0 and run["precision"] == "fp32" and run["seen"]["map_at_r"] == pytest.approx(
        seen["mean_average_precision_at_r"])
    assert "## unseen-classes: not measured yet" in (tmp_path / "claims.md").read_text()
    mean, ci = reproduce.paired_interval([0.5, 0.6, 0.7], [0.4, 0.5, 0.7])
    assert mean == pytest.approx(0.0667, abs=1e-4) and ci[0] < 0 < ci[1]  # t(0.975, 2) = 4.30
    cells = lambda *cis: [{"mean_diff": (lo + hi) / 2, "ci95": [lo, hi]} for lo, hi in cis]
    assert reproduce.claim_verdict(cells((0.01, 0.02), (0.001, 0.03))) == "holds"
    assert reproduce.claim_verdict(cells((-0.03, -0.01), (-0.02, 0.01))) == "does not hold"
    assert reproduce.claim_verdict(cells((0.01, 0.02), (-0.03, -0.01))) == "mixed"
