"""End-to-end training on synthetic data: the loss falls, checkpoints round-trip
bit-exactly, an interrupted run resumed equals an uninterrupted one, errors are clear."""

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import train
from model import CheckpointError, load_dataset, load_embedder
from model.data import normalize
from model.losses import similarity_distillation_loss
from model.search_views import search_views
from model.training import Trainer, one_stage_recipe

QUICK = ["--dataset", "mnist", "--model", "hybrid1", "--batch-size", "50", "--device", "cpu", "--no-index"]


def run(args, data_dir, out) -> int:
    return train.main([*args, "--data-dir", str(data_dir), "--out", str(out)])


def ctrl_c_at(stop_epoch: int):
    """Trainer.train_epoch as a user pressing Ctrl-C when epoch `stop_epoch` (0-based) starts."""
    original = Trainer.train_epoch

    def interrupted(self, epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        return original(self, epoch)

    return interrupted


def final_weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("loss", ["ce", "normsoftmax", "ms"])
def test_loss_falls_and_checkpoint_round_trips(loss, data_dir, tmp_path) -> None:
    out = tmp_path / loss
    assert run([*QUICK, "--loss", loss, "--epochs", "4", "--lr", "3e-3"], data_dir, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [row["train_loss"] for row in metrics["training"]["stages"][0]["epochs"]]
    assert losses[-1] < 0.8 * losses[0], losses
    for row in metrics["validation"]["stages"][0]["epochs"]:  # each epoch measured on the validation split
        assert ("val_ce_loss" in row) == ("accuracy" in row) == (loss != "ms") and "val_ms_loss" in row
    test = metrics["test"]
    for key in ("ms_loss", "precision_at_1", "r_precision", "mean_average_precision_at_r"):
        assert 0 <= test[key] < 10
    assert metrics["training"]["keras_param_count"] == 116_344
    assert metrics["training"]["weights_bytes"] == (out / "model.safetensors").stat().st_size < 1_000_000
    assert (out / "curves.png").stat().st_size > 1000
    assert metrics["recipe"]["stages"][0]["loss"] == loss and (out / "recipe.toml").is_file()

    # load_embedder reproduces the trained network's embeddings bit-exactly
    embedder = load_embedder(out)
    data = load_dataset("mnist", data_dir)
    x = data.test_x[:16]
    with torch.no_grad():
        ref = torch.nn.functional.normalize(embedder.model(normalize(x, embedder.mean, embedder.std)), dim=1)
    got = embedder.embed(x.permute(0, 2, 3, 1).numpy())
    assert got.dtype == np.float32 and got.shape == (16, 256)
    assert np.array_equal(got, ref.numpy())
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("loss,augment", [("ms", "shift"), ("normsoftmax", "shift-flip")])
def test_resumed_run_equals_uninterrupted(loss, augment, data_dir, tmp_path) -> None:
    args = [*QUICK, "--loss", loss, "--epochs", "3", "--schedule", "cosine", "--augment", augment]
    assert run(args, data_dir, tmp_path / "straight") == 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_epoch", ctrl_c_at(1))
        assert run(args, data_dir, tmp_path / "cut") == 130
    stage = json.loads((tmp_path / "cut" / "work" / "stage-1" / "metrics.json").read_text())
    assert stage["epochs_done"] == 1 and not (tmp_path / "cut" / "metrics.json").exists()
    assert run(args, data_dir, tmp_path / "cut") == 2  # no --resume: refuses to overwrite
    assert train.main(["--resume", "--out", str(tmp_path / "cut"), "--data-dir", str(data_dir), "--no-index"]) == 0

    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert ma["test"] == mb["test"] and ma["validation"] == mb["validation"]


def test_augmentation_candidates_are_each_trained_and_the_best_on_validation_kept(data_dir, tmp_path) -> None:
    args = [*QUICK, "--loss", "normsoftmax", "--epochs", "2", "--set", 'stages.1.augment=["shift", "none"]']
    assert run(args, data_dir, tmp_path / "straight") == 0
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    stage = metrics["validation"]["stages"][0]
    figures = stage["augment_candidates"]
    assert list(figures) == ["shift", "none"] and stage["augment"] == max(figures, key=figures.get)
    assert metrics["recipe"]["stages"][0]["augment"] == ["shift", "none"]  # replaying the recipe chooses again

    calls = []  # Ctrl-C in the second candidate's second epoch (the fourth epoch trained)
    original = Trainer.train_epoch

    def interrupted(self, epoch):
        calls.append(epoch)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, epoch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_epoch", interrupted)
        assert run(args, data_dir, tmp_path / "cut") == 130
    assert (tmp_path / "cut" / "work" / "stage-1" / "shift" / "chosen.safetensors").is_file()
    assert train.main(["--resume", "--out", str(tmp_path / "cut"), "--data-dir", str(data_dir), "--no-index"]) == 0
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["validation"] == metrics["validation"]


def test_time_budget_stops_at_an_epoch_end_and_resume_finishes(data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "budget"
    assert run([*QUICK, "--loss", "ce", "--epochs", "3", "--time-budget", "0"], data_dir, out) == 0
    assert "time budget spent; continue with `python train.py --resume --out" in capsys.readouterr().out
    assert json.loads((out / "work" / "stage-1" / "metrics.json").read_text())["epochs_done"] == 1
    assert train.main(["--resume", "--out", str(out), "--data-dir", str(data_dir), "--no-index"]) == 0
    assert json.loads((out / "metrics.json").read_text())["training"]["stages"][0]["epochs_done"] == 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "nan"
    assert run([*QUICK, "--loss", "ce", "--epochs", "1"], data_dir, out) == 0
    good = (out / "model.safetensors").read_bytes()
    monkeypatch.setattr(Trainer, "loss_on", lambda self, x, y, targets=None: self.model(x).sum() * float("nan"))
    assert train.main(["--resume", "--out", str(out), "--data-dir", str(data_dir), "--no-index"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err  # finished: nothing to resume, nothing changes
    assert run([*QUICK, "--loss", "ce", "--epochs", "2"], data_dir, tmp_path / "nan2") == 2
    err = capsys.readouterr().err
    assert "loss became nan" in err and "last good checkpoint" in err
    assert (out / "model.safetensors").read_bytes() == good


def test_fine_tuning_starts_from_the_checkpoint_and_records_it(checkpoint, data_dir, tmp_path, monkeypatch,
                                                               capsys) -> None:
    parent = load_file(str(checkpoint / "model.safetensors"))
    seen = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        if epoch == 0:
            seen.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    out = tmp_path / "tuned"
    assert run([*QUICK, "--loss", "ms", "--epochs", "1", "--init-from", str(checkpoint)], data_dir, out) == 0
    assert seen.keys() == parent.keys() and all(torch.equal(seen[k], parent[k]) for k in parent)
    tuned = final_weights(out)
    assert not all(torch.equal(tuned[k], parent[k]) for k in parent)  # it trained
    assert json.loads((out / "metrics.json").read_text())["recipe"]["init_from"] == str(checkpoint)

    # another architecture: one clear line that names the mismatch
    capsys.readouterr()
    assert run([*QUICK[:3], "cnn3a", *QUICK[4:], "--init-from", str(checkpoint)], data_dir, tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "init_from" in err and "model 'hybrid1' (this run: 'cnn3a')" in err and err.count("\n") == 1
    assert run([*QUICK, "--init-from", str(tmp_path / "nothing")], data_dir, tmp_path / "y") == 2
    assert "is not a checkpoint folder" in capsys.readouterr().err


def test_the_test_figures_are_those_of_the_search_views(data_dir, tmp_path) -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    out = tmp_path / "mirror"
    args = [*QUICK, "--loss", "normsoftmax", "--epochs", "1", "--augment", "shift-flip", "--flip-average"]
    assert run(args, data_dir, out) == 0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["views"] == "mirror-averaged"

    embedder = load_embedder(out)
    assert embedder.config["flip_average"] is True
    x = load_dataset("mnist", data_dir).test_x
    got = embedder.embed_uint8(x)
    np.testing.assert_allclose(got, embedder.embed_uint8(x.flip(-1)), atol=1e-6)  # a mirror image is the same query
    with torch.no_grad():
        xn = normalize(x, embedder.mean, embedder.std)
        single = torch.nn.functional.normalize(embedder.model(xn), dim=1).numpy()
    assert not np.allclose(got, single, atol=1e-3)
    # the reported figures are those of the embeddings the search uses
    labels = load_dataset("mnist", data_dir).test_y
    calc = AccuracyCalculator(include=("precision_at_1",), k="max_bin_count")
    assert calc.get_accuracy(torch.from_numpy(got), labels)["precision_at_1"] == pytest.approx(test["precision_at_1"])


def test_search_views_are_the_image_its_shifts_and_their_mirror_images() -> None:
    x = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).view(2, 3, 6, 7)
    assert [len(search_views(x, f, s)) for f, s in ((False, 0), (True, 0), (False, 1), (True, 2))] == [1, 2, 5, 10]
    views = search_views(x, flip_average=True, shift_average=2)
    assert views[0] is x and all(v.shape == x.shape for v in views)
    right, left, down, up = views[1:5]
    assert torch.equal(right[..., 2:], x[..., :-2]) and torch.equal(right[..., 0], x[..., 2])  # edge reflected
    assert torch.equal(left[..., :-2], x[..., 2:]) and torch.equal(left[..., -1], x[..., -3])
    assert torch.equal(down[..., 2:, :], x[..., :-2, :]) and torch.equal(up[..., :-2, :], x[..., 2:, :])
    assert all(torch.equal(m, v.flip(-1)) for v, m in zip(views[:5], views[5:], strict=True))


def test_shift_average_is_what_search_and_metrics_use(data_dir, tmp_path) -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    out = tmp_path / "views"
    args = [*QUICK, "--loss", "ms", "--epochs", "1", "--augment", "shift-flip", "--flip-average",
            "--shift-average", "1"]
    assert run(args, data_dir, out) == 0
    final = json.loads((out / "metrics.json").read_text())["test"]
    embedder = load_embedder(out)
    assert embedder.config["shift_average"] == 1 and embedder.views.startswith("10 views")
    data = load_dataset("mnist", data_dir)
    got = embedder.embed_uint8(data.test_x)
    # the mirror image of an image has the same ten views: the same query
    np.testing.assert_allclose(got, embedder.embed_uint8(data.test_x.flip(-1)), atol=1e-5)
    with torch.no_grad():  # the mean of the ten views' unit embeddings, worked out by hand
        xn = normalize(data.test_x, embedder.mean, embedder.std)
        padded = torch.nn.functional.pad(xn, (1, 1, 1, 1), mode="reflect")
        moves = ((0, 1), (0, -1), (1, 0), (-1, 0))
        shifted = [xn] + [padded[..., 1 + dy : 29 + dy, 1 + dx : 29 + dx] for dy, dx in moves]
        views = shifted + [v.flip(-1) for v in shifted]
        units = [torch.nn.functional.normalize(embedder.model(v), dim=1) for v in views]
        by_hand = torch.nn.functional.normalize(sum(units), dim=1).numpy()
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    calc = AccuracyCalculator(include=("precision_at_1",), k="max_bin_count")
    assert calc.get_accuracy(torch.from_numpy(got), data.test_y)["precision_at_1"] == pytest.approx(
        final["precision_at_1"])


def test_similarity_distillation_loss_matches_geometry_not_coordinates() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 512, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(512, 512, generator=g))
    # the same similarities in other coordinates (and another scale): nothing to learn
    assert float(similarity_distillation_loss(3 * teacher @ rotation, teacher)) == pytest.approx(0, abs=1e-4)
    student = torch.randn(64, 256, generator=g, requires_grad=True)
    loss = similarity_distillation_loss(student, teacher)
    loss.backward()
    assert loss.item() > 0.01 and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    # a student nearer the teacher's geometry scores lower
    nearer = teacher[:, :256] + 0.1 * torch.randn(64, 256, generator=g)
    assert float(similarity_distillation_loss(nearer, teacher)) < loss.item()


def test_distillation_uses_the_teachers_search_embeddings_and_records_them(checkpoint, data_dir, tmp_path,
                                                                          capsys) -> None:
    out = tmp_path / "student"
    student = [*QUICK[:3], "cnn3a", *QUICK[4:]]  # another architecture than the teacher's
    args = [*student, "--loss", "ms", "--epochs", "1", "--distill-from", str(checkpoint), str(checkpoint),
            "--distill-weight", "5"]
    assert run(args, data_dir, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sha = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    teachers = metrics["training"]["stages"][0]["teachers"]
    assert [t["weights_sha256"] for t in teachers] == [sha, sha]
    assert metrics["recipe"]["stages"][0]["distill_weight"] == 5
    assert "teacher" in capsys.readouterr().out

    data = load_dataset("mnist", data_dir)
    trainer = Trainer(one_stage_recipe("mnist", model="cnn3a", distill_from=[str(checkpoint)]), data,
                      tmp_path / "t", torch.device("cpu"))
    trainer.prepare_teachers(log=lambda _: None)
    expected = torch.from_numpy(load_embedder(checkpoint).embed_uint8(data.train_x))
    torch.testing.assert_close(trainer.teacher_targets, expected)

    # a resumed distillation run recomputes the same targets and ends where an uninterrupted one does
    args = [*student, "--loss", "ms", "--epochs", "2", "--distill-from", str(checkpoint)]
    assert run(args, data_dir, tmp_path / "straight") == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_epoch", ctrl_c_at(1))
        assert run(args, data_dir, tmp_path / "cut") == 130
    assert train.main(["--resume", "--out", str(tmp_path / "cut"), "--data-dir", str(data_dir), "--no-index"]) == 0
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["training"]["stages"][0]["teachers"] == teachers[:1]

    # a teacher for other images: one clear line
    capsys.readouterr()
    cifar = run([*QUICK[:1], "cifar10", *QUICK[2:], "--distill-from", str(checkpoint)], data_dir, tmp_path / "c")
    err = capsys.readouterr().err
    assert cifar == 2 and "distill_from" in err and "1-channel 28x28" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--dataset", "no/such/photos"], "no folder at "),
        (["--dataset", "~/no-such-photos"], f"no folder at {Path.home()}/no-such-photos: check the path"),
        (["--dataset", "mnist", "--epochs", "0"], "stages.1.epochs must be a whole number of at least 1"),
        (["--dataset", "mnist", "--lr", "-1"], "stages.1.lr must be a positive number"),
        (["--dataset", "mnist", "--loss", "normsoftmax", "--temperature", "0"], "stages.1.temperature must be a posi"),
        (["--dataset", "mnist", "--device", "cuda"], "no CUDA GPU"),
        ([], "give a recipe file (recipes/*.toml) or --dataset"),
        (["--dataset", "mnist", "--batch-size", "512"], "too few images per class"),
        (["--dataset", "mnist", "--model", "hybrid1", "--pretrained"], "pretrained weights exist only for"),
        (["--dataset", "mnist", "--model", "vgg16", "--pretrained", "--init-from", "x"], "init_from and pretrained"),
        (["--dataset", "mnist", "--shift-average", "14"], "a shift of 14 px is too large for 28x28"),
        (["--dataset", "mnist", "--shift-average", "-1"], "shift must be 0 or a number of pixels"),
        (["--dataset", "mnist", "--distill-from", "x", "--distill-weight", "0"], "stages.1.distill_weight must be"),
        (["--dataset", "mnist", "--set", "stages.1.epoch=2"], "unknown recipe field stages.1.epoch"),
    ],
)
def test_bad_arguments_give_one_clear_line(args, message, data_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.main([*args, "--data-dir", str(data_dir), "--out", str(tmp_path / "x"), "--no-index"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_resume_needs_out(capsys) -> None:
    assert train.main(["--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_resume_without_state(tmp_path, capsys) -> None:
    assert train.main(["--resume", "--out", str(tmp_path)]) == 2
    assert "holds no run to resume" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    assert run([*QUICK, "--loss", "ce", "--epochs", "1", "--max-train-samples", "100"], data_dir, out) == 0
    return out


def test_bad_checkpoints_give_clear_errors(checkpoint, tmp_path) -> None:
    import shutil

    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_embedder(tmp_path)

    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_embedder(bad)

    config = json.loads((checkpoint / "config.json").read_text())
    shutil.copy(checkpoint / "model.safetensors", bad / "model.safetensors")
    (bad / "config.json").write_text(json.dumps({**config, "model": "cnn3b"}))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_embedder(bad)
    (bad / "config.json").write_text(json.dumps({**config, "in_channels": 3}))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_embedder(bad)
    (bad / "config.json").write_text(json.dumps({**config, "model": "resnet9000"}))
    with pytest.raises(CheckpointError, match="no buildable model"):
        load_embedder(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_embedder(bad)
    (bad / "config.json").write_text(json.dumps({"model": "hybrid1"}))
    with pytest.raises(CheckpointError, match="lacks"):
        load_embedder(bad)
    (bad / "config.json").write_text(json.dumps(config))
    state = load_file(str(checkpoint / "model.safetensors"))
    state.pop("embed.bias")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="embed.bias"):
        load_embedder(bad)


def test_embed_accepts_any_size_and_mode(checkpoint) -> None:
    from PIL import Image

    embedder = load_embedder(checkpoint)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (9, 9, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)),
        Image.new("P", (20, 20)),
        Image.new("CMYK", (33, 31), (10, 20, 30, 40)),
    ]
    emb = embedder.embed(images)
    assert emb.shape == (6, 256) and np.isfinite(emb).all()
    assert embedder.embed(rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)).shape == (3, 256)
    assert embedder.embed(rng.integers(0, 255, (2, 28, 28), dtype=np.uint8)).shape == (2, 256)
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((1, 28, 28), dtype=np.float32))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_freed_activations_are_reused_without_page_faults() -> None:
    """training.keep_freed_memory: a step-like pattern (blocks of 1-4 Mi floats alive at once,
    freed out of order) faults pages in a few times at most once the heap has grown (0 to 4,096
    faults over these 20 steps alone, 12,288 once under the full suite's load on an Intel Xeon),
    not every step (286,720): glibc's defaults gave some processes 183,680 here (not asserted, it
    is glibc's behaviour). The count comes from a fresh process."""
    import subprocess

    script = """
import resource, torch
from model.training import keep_freed_memory
applied = keep_freed_memory()
def step():
    blocks = [torch.ones(n << 20) for n in (4, 1, 3, 2, 4)]  # written whole, as activations are
    del blocks[2], blocks[0]
for _ in range(3):
    step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.split()
    assert out[0] == "True", out  # glibc has mallopt: it must apply
    assert int(out[1]) <= 8 * 4096, out  # a 16 MiB block is 4,096 pages; every step's would be 286,720
