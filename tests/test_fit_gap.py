"""scripts/fit_gap.py: retrieval on training images against test images, with the metrics.json protocol."""

import json

import pytest
from conftest import load_script


def test_fit_gap_rows_match_the_checkpoint_metrics(assets, data_dir, capsys) -> None:
    fit_gap = load_script("fit_gap")
    ckpt = assets / "mnist-hybrid1"
    rows = fit_gap.fit_gap(ckpt, data_dir)
    assert [(r["split"], r["view"]) for r in rows] == [("train (100 of 300)", "one view"), ("test", "one view")]
    test_figures = json.loads((ckpt / "metrics.json").read_text())["test"]
    test = rows[1]
    for key in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        assert test[key] == pytest.approx(test_figures[key], abs=1e-6)  # the same protocol as training's evaluation
        assert 0.0 <= rows[0][key] <= 1.0
    assert fit_gap.main([str(ckpt), "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.count("| mnist-hybrid1 |") == 2


def test_fit_gap_reports_one_view_and_the_search_views(assets, data_dir, tmp_path) -> None:
    import shutil

    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from model import load_dataset, load_embedder

    fit_gap = load_script("fit_gap")
    ckpt = tmp_path / "views"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "flip_average": True, "shift_average": 1}))
    rows = fit_gap.fit_gap(ckpt, data_dir)
    views = "10 views averaged (1 + 4 shifts of 1 px, each mirrored)"
    assert [r["view"] for r in rows] == ["one view", views, "one view", views]
    test = load_dataset("mnist", data_dir)
    emb = torch.from_numpy(load_embedder(ckpt).embed_uint8(test.test_x))  # what the search uses
    calc = AccuracyCalculator(include=("precision_at_1",), k="max_bin_count")
    assert rows[3]["precision_at_1"] == pytest.approx(calc.get_accuracy(emb, test.test_y)["precision_at_1"])
    assert rows[2]["precision_at_1"] == pytest.approx(
        json.loads((ckpt / "metrics.json").read_text())["test"]["precision_at_1"], abs=1e-6)


def test_fit_gap_names_a_missing_checkpoint(tmp_path, capsys) -> None:
    fit_gap = load_script("fit_gap")
    assert fit_gap.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and err.count("\n") == 1
