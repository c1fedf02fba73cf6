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
