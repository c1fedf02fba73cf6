"""The fast training path on the CPU: the compiled step trains as the eager one does, its warm-up
leaves no trace in the run, and scripts/bench_train.py --quick measures every figure it reports.
(The GPU figures and the sync-free check need a GPU: scripts/gpu_bench.sh.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_script, synthetic_arrays

from model.data import load_dataset
from model.training import Trainer, one_stage_recipe


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """A synthetic cifar10.npz with 64 images per class: enough for class-balanced MS batches."""
    folder = tmp_path_factory.mktemp("cifar")
    xtr, ytr, xte, yte = synthetic_arrays(640, 200, 32, 3)
    np.savez(folder / "cifar10.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return folder


def trainer(cifar_dir, out, compile_step: bool, model: str = "hybrid1", loss: str = "ms", batch_size: int = 64
            ) -> Trainer:
    recipe = one_stage_recipe("cifar10", model=model, loss=loss, epochs=1, batch_size=batch_size, augment="crop-flip",
                              choose_epoch=False, validation={"size": 0})
    return Trainer(recipe, load_dataset("cifar10", cifar_dir), out, torch.device("cpu"), compile_step=compile_step,
                   eval_split="test")


def test_warm_up_leaves_no_trace(cifar_dir, tmp_path) -> None:
    # BatchNorm and dropout; 640 images in batches of 100 leave a smaller last batch, also warmed up
    t = trainer(cifar_dir, tmp_path / "w", compile_step=False, model="mobilenet_v2", loss="ce", batch_size=100)
    state = {k: v.clone() for k, v in t.model.state_dict().items()}
    rng = torch.get_rng_state()
    assert t.warm_up() > 0
    assert all(torch.equal(state[k], v) for k, v in t.model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in t.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert not t.optimizer.state  # the optimizer never stepped


@pytest.mark.slow
def test_compiled_step_trains_as_the_eager_one(cifar_dir, tmp_path) -> None:
    runs = {}
    for compile_step in (False, True):
        t = trainer(cifar_dir, tmp_path / str(compile_step), compile_step)
        summary = t.fit(log=lambda _: None)
        runs[compile_step] = (summary, t.model.state_dict())
    (eager, eager_w), (compiled, compiled_w) = runs[False], runs[True]
    assert compiled["compile_seconds"] > 0 and eager["compile_seconds"] is None
    # compilation is not counted in the epoch's seconds: it took longer than the epoch itself
    assert compiled["compile_seconds"] > compiled["epochs"][0]["seconds"]
    assert compiled["final"]["train_loss"] == pytest.approx(eager["final"]["train_loss"], rel=1e-4)
    for k, v in eager_w.items():  # the same steps, up to the order of float additions
        torch.testing.assert_close(compiled_w[k].float(), v.float(), atol=5e-3, rtol=1e-2)


@pytest.mark.slow
def test_bench_train_quick_writes_every_figure(cifar_dir, tmp_path, capsys) -> None:
    bench = load_script("bench_train")
    out = tmp_path / "bench.json"
    assert bench.main(["--data-dir", str(cifar_dir), "--quick", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("ce_epoch_s", "ms_epoch_s", "ms_over_ce_epoch", "naive_ms_img_s", "ours_ms_img_s",
                "speedup_vs_naive", "parallel_runs_img_s", "naive_ce_img_s", "ours_ce_img_s", "today_ms_img_s",
                "paper_protocol_1_epochs_s", "bf16_over_fp32", "hybrid1_over_cnn3a_step", "cnn3a_ce_step_s",
                "hybrid1_ce_step_s", "hybrid1_over_cnn3a_step_1_thread"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["precision"] in ("fp32", "bf16")
    ab = result["precision_ab"]["val_p_at_1"]
    assert result["bf16_vs_fp32_p_at_1_delta"] == pytest.approx(ab["bf16"] - ab["fp32"])
    assert result["hybrid1_over_cnn3a_step"] == pytest.approx(result["hybrid1_ce_step_s"] / result["cnn3a_ce_step_s"])
    assert result["device"].startswith("cpu") and result["torch"] == torch.__version__ and result["date"]
    assert result["paper_protocol_25_epochs_s"] is None  # not measured in a quick run, and not estimated
    assert result["speedup_vs_naive"] == pytest.approx(result["ours_ms_img_s"] / result["naive_ms_img_s"])
    assert result["ms_over_ce_epoch"] == pytest.approx(result["ms_epoch_s"] / result["ce_epoch_s"])
    assert result["quick"] is True and result["epoch_images"] == 512 and result["parallel_runs"] == 2
    assert "naive ms:" in capsys.readouterr().out


def test_the_gpu_evaluation_path_agrees_with_faiss() -> None:
    """On CUDA the retrieval metrics come from pytorch-metric-learning's exact torch k-NN on the
    device; the same code on the CPU gives faiss's figures."""
    from model.evaluation import RETRIEVAL_METRICS, retrieval_calculator

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 10, (2000,), generator=g)
    centres = 0.4 * torch.randn(10, 32, generator=g)
    emb = torch.nn.functional.normalize(centres[labels] + torch.randn(2000, 32, generator=g), dim=1)
    figures = {}
    for knn in ("faiss", "torch"):
        calculator, device = retrieval_calculator(torch.device("cpu"), knn=knn)
        figures[knn] = calculator.get_accuracy(emb.to(device), labels.to(device))
    for key in RETRIEVAL_METRICS:
        # float32 sums in another order reorder a few near-tied neighbours deep in the ranking
        assert figures["torch"][key] == pytest.approx(figures["faiss"][key], abs=1e-4), key
    assert 0.2 < figures["faiss"]["precision_at_1"] < 0.95  # neither trivial nor random


def test_precision_auto_is_bf16_where_the_cpu_runs_it_natively(monkeypatch) -> None:
    from model.training import TrainingError, native_bf16, pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    for flags, expected in (({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"),
                            ({"avx512_bf16": False, "avx2": True}, "fp32")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flags=flags: flags)
        assert pick_precision("auto", cpu) == expected
    assert pick_precision("fp32", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    with pytest.raises(TrainingError, match="unknown precision 'fp16'"):
        pick_precision("fp16", cpu)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_training_step_runs_at_its_precision_and_evaluation_in_fp32(precision, cifar_dir, tmp_path) -> None:
    recipe = one_stage_recipe("cifar10", model="hybrid1", loss="ms", epochs=1, batch_size=64, augment="crop-flip",
                              choose_epoch=False, validation={"size": 0}, precision=precision)
    t = Trainer(recipe, load_dataset("cifar10", cifar_dir), tmp_path, torch.device("cpu"), eval_split="test")
    seen = []
    t.model.embed.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    order, offsets = t.device_plan(0)
    x, y, _, _ = t.batch(order, offsets, 0)
    t.step_loss(x, y).backward()
    assert seen == [torch.bfloat16 if precision == "bf16" else torch.float32]
    assert all(p.grad.dtype == torch.float32 for p in t.model.parameters())  # weights and Adam stay fp32
    seen.clear()
    summary = t.fit(log=lambda _: None)
    assert seen and set(seen[-1:]) == {torch.float32}  # the epoch's evaluation embeds in fp32
    assert summary["precision"] == precision
