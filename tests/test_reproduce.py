"""The reproduction sweep on synthetic data: cells run, tables are written, reruns skip."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_sweep_writes_tables_and_skips_finished_cells(data_dir, tmp_path, capsys) -> None:
    reproduce = load_script()
    assert len(reproduce.plan(1)) == 3 * (8 * 2 + 2 * 2) + 4 * 2
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--quick", "--only", "mnist-hybrid1-ce", "--batch-size", "50", "--device", "cpu",
            "--max-train-samples", "200"]
    assert reproduce.main(args) == 0
    cells = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert cells == ["mnist-hybrid1-ce-gelu-s0", "mnist-hybrid1-ce-relu-s0"]
    table = (tmp_path / "table1.md").read_text()
    assert "| hybrid1 | gelu | 116,344 |" in table and "†" in table and "| 0.749 | 0.0707 |" in table
    assert (tmp_path / "map_at_r_vs_params.png").stat().st_size > 1000
    before = json.loads((tmp_path / "runs" / cells[0] / "metrics.json").read_text())
    capsys.readouterr()
    assert reproduce.main(args) == 0
    assert "epoch" not in capsys.readouterr().out  # finished cells are not trained again
    assert json.loads((tmp_path / "runs" / cells[0] / "metrics.json").read_text()) == before


def test_parallel_cells_run_in_child_processes(data_dir, tmp_path) -> None:
    reproduce = load_script()
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--quick", "--only", "mnist-cnn3a-ce,mnist-cnn3a-ms", "--batch-size", "50", "--device", "cpu",
            "--max-train-samples", "200", "--jobs", "2"]
    assert reproduce.main(args) == 0
    names = [f"mnist-cnn3a-{loss}-{act}-s0" for act in ("gelu", "relu") for loss in ("ce", "ms")]
    for name in names:
        assert json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["epochs_done"] == 1
        assert "epoch   1/1" in (tmp_path / "runs" / f"{name}.log").read_text()
    assert "| cnn3a | relu | 116,320 |" in (tmp_path / "table1.md").read_text()


def test_a_spent_time_budget_starts_nothing(data_dir, tmp_path, capsys) -> None:
    reproduce = load_script()
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "runs"), "--results", str(tmp_path),
            "--quick", "--only", "mnist-cnn3a-ce", "--device", "cpu", "--time-budget", "0"]
    assert reproduce.main(args) == 0
    assert "time budget spent" in capsys.readouterr().out
    assert not list((tmp_path / "runs").glob("*/metrics.json"))


def test_an_only_that_matches_no_cell_is_one_clear_error(tmp_path, capsys) -> None:
    reproduce = load_script()
    args = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path), "--only", "cifar-hybrid1", "--device", "cpu"]
    assert reproduce.main(args) == 2
    err = capsys.readouterr().err
    assert "no planned cell matches --only 'cifar-hybrid1'" in err and "mnist-cnn3a-ce-gelu-s0" in err
