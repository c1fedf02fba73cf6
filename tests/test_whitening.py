"""model/whitening.py and scripts/whiten.py: whitening fitted on training embeddings, folded into
the embedding layer, chosen on held-out training images and measured as train.py measures."""

import functools
import json
import shutil

import pytest
import torch
from conftest import load_script
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from model import build_model, load_dataset, load_embedder
from model.index import BundleError, load_index
from model.whitening import (
    CANDIDATES,
    Whitening,
    apply_whitening,
    best_row,
    choose_whitening,
    fit_whitening,
    fold_whitening,
)


def anisotropic(n: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=g) * torch.logspace(0, -2, dim)  # eigenvalues over 4 decades
    return torch.randn(n, dim, generator=g) @ mixing.T + 3.0


def test_full_whitening_makes_the_covariance_spherical_and_power_0_only_centres() -> None:
    a, b = anisotropic(3000), anisotropic(3000, seed=1)  # two "views"
    mean, matrix = fit_whitening([a, b], Whitening(power=1.0, shrinkage=0.0))
    pooled = torch.cat([a, b]).double()
    assert torch.allclose(mean, pooled.mean(0))
    white = apply_whitening(torch.cat([a, b]), mean, matrix).double()
    cov = torch.cov(white.T)
    top = torch.linalg.eigvalsh(torch.cov(pooled.T)).max()
    assert torch.allclose(cov, top * torch.eye(8, dtype=torch.float64), atol=1e-4 * top)  # the largest keeps its length
    assert white.mean(0).abs().max() < 1e-5

    mean0, matrix0 = fit_whitening([a, b], Whitening(power=0.0))
    assert torch.equal(matrix0, torch.eye(8, dtype=torch.float64))
    assert torch.allclose(apply_whitening(a, mean0, matrix0), (a.double() - mean0).float())
    # shrinkage softens: the spread of the whitened eigenvalues grows with it, stays below the original's
    spreads = []
    for s in (0.0, 0.01, 1.0):
        w = torch.linalg.eigvalsh(torch.cov(apply_whitening(a, *fit_whitening([a], Whitening(1.0, s))).double().T))
        spreads.append(float(w.max() / w.min()))
    original = torch.linalg.eigvalsh(torch.cov(a.double().T))
    assert spreads[0] < 1 + 1e-6 < spreads[1] < spreads[2] < float(original.max() / original.min())


def test_folding_into_the_embedding_layer_gives_the_whitened_embedding() -> None:
    torch.manual_seed(0)
    model = build_model("hybrid1", 3).eval()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        raw = model(x)
        mean, matrix = fit_whitening([raw, model(x.flip(-1))], Whitening(0.5, 0.01))
        fold_whitening(model.embed, mean, matrix)
        folded = model(x)
    expected = apply_whitening(raw, mean, matrix)
    # float32 rounding of a centred, rescaled output: what the search compares is the direction
    assert (folded - expected).abs().max() < 1e-4 * expected.abs().max()
    assert torch.nn.functional.cosine_similarity(folded, expected).min() > 1 - 1e-6
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build_model("hybrid1", 3).parameters())


def test_whitening_wins_where_a_shared_direction_swamps_the_classes() -> None:
    """Ten classes apart in 7 dimensions, plus one large direction that varies per image and
    says nothing about its class: cosine similarity sees mostly that direction."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 10
    centres = torch.randn(10, 7, generator=g)
    emb = torch.cat([torch.randn(2000, 1, generator=g) * 20 + 5,
                     centres[labels] + 0.3 * torch.randn(2000, 7, generator=g)], dim=1)
    rows = choose_whitening([emb], labels, held_out=500)
    assert len(rows) == 1 + len(CANDIDATES) and rows[0]["whitening"] is None
    best = best_row(rows)
    assert best["whitening"] is not None and best["whitening"]["power"] > 0
    assert best["mean_average_precision_at_r"] > rows[0]["mean_average_precision_at_r"] + 0.2
    tie = [{"mean_average_precision_at_r": 0.5, "n": 1}, {"mean_average_precision_at_r": 0.5, "n": 2}]
    assert best_row(tie)["n"] == 1  # the milder candidate
    with pytest.raises(ValueError, match="held_out"):
        choose_whitening([emb], labels, held_out=2000)


def test_whiten_script_folds_measures_and_records(assets, data_dir, tmp_path, capsys) -> None:
    script = load_script("whiten")
    ckpt = tmp_path / "mnist-hybrid1"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    shutil.copytree(assets / "gallery", tmp_path / "gallery")
    # views set after training live in config.json, not in the run's train_config: whitening keeps them
    assert load_script("set_search_views").main([str(ckpt), "--shift-average", "1", "--data-dir", str(data_dir)]) == 0
    before = json.loads((ckpt / "metrics.json").read_text())
    config = (ckpt / "config.json").read_bytes()
    assert script.main([str(ckpt), "--data-dir", str(data_dir), "--held-out", "100"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((ckpt / "metrics.json").read_text())
    record = metrics["whitening"]  # the synthetic 1-epoch model has much to gain
    assert "whitened (" in out and "python -m model.index --checkpoint" in out
    assert record["candidates"][0]["whitening"] is None and len(record["candidates"]) == 1 + len(CANDIDATES)
    assert {k: record[k] for k in ("power", "shrinkage")} == best_row(record["candidates"])["whitening"]
    assert record["before"]["precision_at_1"] == before["final"]["precision_at_1"]
    assert (ckpt / "config.json").read_bytes() == config  # same architecture and preprocessing

    final = metrics["final"]  # measured on what the search now uses
    data = load_dataset("mnist", data_dir)
    embedder = load_embedder(ckpt)
    assert embedder.shift_average == 1
    emb = torch.from_numpy(embedder.embed_uint8(data.test_x))
    calc = AccuracyCalculator(include=("mean_average_precision_at_r",), k="max_bin_count")
    assert final["mean_average_precision_at_r"] == pytest.approx(
        calc.get_accuracy(emb, data.test_y)["mean_average_precision_at_r"])
    assert "accuracy" not in final and "test_ce_loss" not in final  # the CE head saw the old embedding
    assert final["train_loss"] == before["final"]["train_loss"] and metrics["epochs"] == before["epochs"]
    with pytest.raises(BundleError):  # new weights: the demo's embeddings must be rebuilt
        load_index(ckpt, rebuild=False)
    row = load_script("update_readme").table(tmp_path).splitlines()[-1]
    assert f"whitened after training (power {record['power']:g}" in row
    assert f"| {final['precision_at_1']:.4f} |" in row

    weights = (ckpt / "model.safetensors").read_bytes()
    assert script.main([str(ckpt), "--data-dir", str(data_dir), "--held-out", "100"]) == 2
    err = capsys.readouterr().err
    assert "already whitened" in err and err.count("\n") == 1
    assert (ckpt / "model.safetensors").read_bytes() == weights


def test_nothing_is_written_when_unchanged_wins(assets, data_dir, tmp_path, monkeypatch, capsys) -> None:
    script = load_script("whiten")
    ckpt = tmp_path / "c"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    monkeypatch.setattr(script, "choose_whitening", functools.partial(choose_whitening, candidates=()))
    assert script.main([str(ckpt), "--data-dir", str(data_dir), "--held-out", "100"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == files


def test_bad_requests_give_one_clear_line(assets, data_dir, tmp_path, capsys) -> None:
    script = load_script("whiten")
    ckpt = tmp_path / "c"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    assert script.main([str(ckpt), "--data-dir", str(data_dir), "--held-out", "300"]) == 2
    assert "--held-out 300 must be smaller than the 300 training images" in capsys.readouterr().err
    assert script.main([str(tmp_path / "nowhere")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    (ckpt / "metrics.json").unlink()
    assert script.main([str(ckpt), "--data-dir", str(data_dir)]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
