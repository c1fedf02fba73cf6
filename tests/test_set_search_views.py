"""scripts/set_search_views.py: other search views for a trained checkpoint, measured as train.py measures."""

import json
import shutil

import pytest
import torch
from conftest import load_script
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from model import load_dataset, load_embedder
from model.index import BundleError, load_index


def test_views_are_written_and_measured(assets, data_dir, tmp_path, capsys) -> None:
    script = load_script("set_search_views")
    ckpt = tmp_path / "mnist-hybrid1"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    shutil.copytree(assets / "gallery", tmp_path / "gallery")
    before = json.loads((ckpt / "metrics.json").read_text())
    assert script.main([str(ckpt), "--shift-average", "1", "--data-dir", str(data_dir)]) == 0
    assert "python -m model.index --checkpoint" in capsys.readouterr().out

    embedder = load_embedder(ckpt)
    assert embedder.shift_average == 1 and not embedder.flip_average
    metrics = json.loads((ckpt / "metrics.json").read_text())
    final = metrics["final"]
    data = load_dataset("mnist", data_dir)
    emb = torch.from_numpy(embedder.embed_uint8(data.test_x))  # what the search now uses
    calc = AccuracyCalculator(include=("precision_at_1",), k="max_bin_count")
    assert final["precision_at_1"] == pytest.approx(calc.get_accuracy(emb, data.test_y)["precision_at_1"])
    assert final["precision_at_1_single_view"] == pytest.approx(before["final"]["precision_at_1"], abs=1e-6)
    assert final["train_loss"] == before["final"]["train_loss"] and metrics["epochs"] == before["epochs"]
    # a CE run's class head is not published: its accuracy is kept as trained, not re-measured
    assert final["accuracy"] == before["final"]["accuracy"]
    record = metrics["search_views"]
    assert record["shift_average"] == 1 and record["before"]["precision_at_1"] == before["final"]["precision_at_1"]
    with pytest.raises(BundleError, match="search views"):  # the demo's embeddings must be rebuilt
        load_index(ckpt, rebuild=False)

    row = load_script("update_readme").table(tmp_path).splitlines()[-1]
    assert "search: 5 views averaged (1 + 4 shifts of 1 px), set after training" in row
    assert f"| {final['precision_at_1']:.4f} |" in row


def test_bad_requests_give_one_clear_line(assets, data_dir, tmp_path, capsys) -> None:
    script = load_script("set_search_views")
    ckpt = tmp_path / "c"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    config = (ckpt / "config.json").read_bytes()
    # digits trained without flips: a mirror image is another query, and the script says so
    assert script.main([str(ckpt), "--flip-average", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "--flip-average needs a model trained with flips" in err and err.count("\n") == 1
    assert (ckpt / "config.json").read_bytes() == config  # nothing written
    assert script.main([str(ckpt), "--shift-average", "20", "--data-dir", str(data_dir)]) == 2
    assert "too large" in capsys.readouterr().err
    assert script.main([str(tmp_path / "nowhere")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
