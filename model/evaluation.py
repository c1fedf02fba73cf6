"""The one evaluation path: embed a split as the served embedder does, then score the retrieval.

    python -m model.evaluation assets/mnist-hybrid1 --split val|test [--data-dir DIR]   (prints JSON)

Every figure of the project comes from here: the validation figures a training run chooses
its epochs, search views and whitening on, the test figures of metrics.json, the README
table, scripts/fit_gap.py and the CLI (main, below: one JSON object with the split's P@1,
R-precision, MAP@R and MS loss, as the checkpoint is served; CHECKPOINT is a folder written by
train.py or "hf://USER/NAME", and the validation split is the one its recipe.toml held out).
Images are embedded by `Embedder.view_embeddings`, the code that serves queries (float32, the
checkpoint's search views averaged), so a checkpoint reports what its users get. Retrieval
metrics are pytorch-metric-learning's AccuracyCalculator with every image queried against the
rest of its split: P@1, R-precision and MAP@R (Musgrave et al., "A Metric Learning Reality
Check", 2020).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from .embedder import Embedder
from .search_views import view_averaged

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
# images per embedding batch: a GPU embeds a whole split in a few large batches
EVAL_BATCH = {"cuda": 8192}


def retrieval_calculator(device: torch.device, knn: str = "auto") -> tuple[AccuracyCalculator, torch.device]:
    """AccuracyCalculator for P@1, R-precision and MAP@R (k = the largest class), and the device
    it runs on: faiss on a CPU; on a GPU, or where faiss is missing, pytorch-metric-learning's
    exact torch k-NN on that device (a 10,000 x 10,000 similarity matrix is nothing to a GPU), so
    the embeddings never leave it. `knn` "faiss" or "torch" forces one (the tests compare them)."""
    try:
        import faiss  # noqa: F401

        has_faiss = True
    except ImportError:
        has_faiss = False
    if knn == "faiss" or (knn == "auto" and device.type == "cpu" and has_faiss):
        return AccuracyCalculator(include=RETRIEVAL_METRICS, k="max_bin_count", device=device), device
    knn_device = device if device.type == "cuda" else torch.device("cpu")
    return AccuracyCalculator(include=RETRIEVAL_METRICS, k="max_bin_count", device=knn_device,
                              knn_func=CustomKNN(CosineSimilarity())), knn_device


def retrieval_metrics(emb: torch.Tensor, labels: torch.Tensor, device: torch.device | None = None
                      ) -> dict[str, float]:
    """(N, D) embeddings and (N,) labels -> P@1, R-precision, MAP@R, each image queried against the others."""
    calc, knn_device = retrieval_calculator(device or emb.device)
    acc = calc.get_accuracy(F.normalize(emb.float(), dim=1).to(knn_device), labels.to(knn_device))
    return {k: float(acc[k]) for k in RETRIEVAL_METRICS}


def ms_loss(emb: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """The paper's test loss: pytorch-metric-learning's MultiSimilarityLoss over all pairs of
    batches of `batch_size` in a fixed shuffled order (split files are sorted by class:
    unshuffled batches would hold one class)."""
    loss = losses.MultiSimilarityLoss()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).to(emb.device)
    values = [float(loss(emb[idx], labels[idx])) for idx in order.split(batch_size) if len(idx) > 1]
    return float(np.mean(values)) if values else float("nan")


def embedder_for(model: torch.nn.Module, config: dict[str, Any], views: tuple[bool, int] | None = None,
                 device: torch.device | str = "cpu") -> Embedder:
    """The Embedder a checkpoint of `model` and `config` would load as, with other search `views`
    (flip, shift) if given: how training measures a model it has not written yet."""
    if views is not None:
        config = {**config, "flip_average": bool(views[0]), "shift_average": int(views[1])}
    return Embedder(model, config, device)


def view_embeddings(embedder: Embedder, x: torch.Tensor) -> list[torch.Tensor]:
    """Every search view's raw (N, D) embeddings of uint8 images, the image itself first."""
    return embedder.view_embeddings(x, batch_size=EVAL_BATCH.get(embedder.device.type, 1024))


def evaluate(embedder: Embedder, x: torch.Tensor, y: torch.Tensor, with_loss: bool = True) -> dict[str, Any]:
    """Retrieval metrics of a split as `embedder` searches it (its views averaged), and the MS loss
    of those embeddings."""
    emb = view_averaged(view_embeddings(embedder, x))
    out: dict[str, Any] = {"images": int(len(y)), "views": embedder.views}
    if with_loss:
        out["ms_loss"] = ms_loss(emb, y.cpu())
    return {**out, **retrieval_metrics(emb, y.cpu(), embedder.device)}


# the health check of a trained embedding (train.py runs it on the validation split)
NEAR_CHANCE_LIFT = 0.2  # P@1 less than this share of the way from chance to 1 is "near chance"
COLLAPSED_COSINE = 0.9  # images this similar on average (a mean pairwise cosine) leave no order to search


def chance_precision_at_1(labels: torch.Tensor) -> float:
    """P@1 of a random ranking: the chance that another image of the split has the query's class."""
    counts = torch.bincount(labels.cpu().long()).double()
    n = float(counts.sum())
    return float((counts * (counts - 1)).sum() / (n * (n - 1))) if n > 1 else 0.0


def mean_pairwise_cosine(emb: torch.Tensor) -> float:
    """The mean cosine similarity over all pairs of distinct images (from the sum of unit vectors)."""
    v = F.normalize(emb.double(), dim=1)
    n = len(v)
    return float((v.sum(0).pow(2).sum() - n) / (n * (n - 1))) if n > 1 else 0.0


def embedding_check(emb: torch.Tensor, labels: torch.Tensor, split: str = "validation") -> dict[str, Any]:
    """Is a trained embedding worth serving? Its P@1 on `split` against chance, and its spread (the
    mean pairwise cosine: near 1 when every image maps to about one direction, so every search
    returns near-equal similarities). Returns the figures, a verdict ("ok", "near chance",
    "collapsed") and, unless ok, one line that says what to change."""
    p1 = retrieval_metrics(emb, labels)["precision_at_1"]
    chance = chance_precision_at_1(labels)
    cosine = mean_pairwise_cosine(emb)
    out = {"split": split, "images": int(len(labels)), "precision_at_1": p1, "chance_precision_at_1": chance,
           "mean_pairwise_cosine": cosine, "near_chance_below": chance + NEAR_CHANCE_LIFT * (1 - chance),
           "collapsed_above": COLLAPSED_COSINE}
    if cosine >= COLLAPSED_COSINE:
        verdict, line = "collapsed", (
            f"the embedding collapsed: {split} images sit at a mean cosine similarity of {cosine:.3f} to each other, "
            "so every result looks alike. Train longer (--epochs), with --loss normsoftmax (the image folder "
            "default) or a lower --lr")
    elif p1 < out["near_chance_below"]:
        verdict, line = "near chance", (
            f"the model is near chance: {split} P@1 {p1:.3f} where a random ranking scores {chance:.3f}. Train "
            "longer (--epochs), drop --loss/--batch-size to use the image folder defaults, or add images per class")
    else:
        verdict, line = "ok", ""
    return {**out, "verdict": verdict, "advice": line}


def choose_views(model: torch.nn.Module, config: dict[str, Any], x: torch.Tensor, y: torch.Tensor,
                 candidates: Sequence[tuple[bool, int]], metric: str, device: torch.device | str = "cpu"
                 ) -> dict[str, Any]:
    """Score each candidate set of search views on a validation split; the best by `metric` wins,
    the first listed on ties (list the cheaper first). Returns {"candidates": rows, "chosen": row}."""
    rows = []
    for flip, shift in candidates:
        figures = evaluate(embedder_for(model, config, (flip, shift), device), x, y, with_loss=False)
        rows.append({"flip": bool(flip), "shift": int(shift), **figures})
    best = max(rows, key=lambda r: r[metric])  # max keeps the first of equal rows
    return {"candidates": rows, "chosen": best}


def evaluate_checkpoint(path: str | Path, split: str, data_dir: str | Path | None = None) -> dict[str, Any]:
    """A checkpoint folder's figures on its recipe's validation split or on the test set, as
    load_embedder serves it. Needs the recipe.toml train.py writes beside the weights (it says
    which images were held out); a checkpoint without one can only be measured on the test set."""
    from .checkpoint import CheckpointError
    from .data import load_dataset, load_recorded_split
    from .embedder import load_embedder
    from .hub import resolve_checkpoint
    from .image_folder import SPLIT_JSON
    from .recipe import Recipe, Validation, load_recipe

    path = Path(resolve_checkpoint(path))
    if split not in ("val", "test"):
        raise CheckpointError(f"--split {split}: use val or test")
    embedder = load_embedder(path)
    recipe_path = path / "recipe.toml"
    if recipe_path.is_file():
        recipe = load_recipe(recipe_path)
    elif split == "val":
        raise CheckpointError(f"{path} has no recipe.toml, so its validation split is unknown: measure --split test")
    else:
        recipe = Recipe(dataset=embedder.config.get("dataset", ""), validation=Validation(size=0))
    split_json = path / SPLIT_JSON
    if split_json.is_file():  # an image folder's checkpoint: the very files it was split into
        data = load_recorded_split(json.loads(split_json.read_text()), embedder.image_size[0])
        if split == "val" and data.val_y is None:
            raise CheckpointError(f"{split_json} records no validation images: measure --split test")
    else:
        data = load_dataset(recipe.dataset, data_dir, image_size=embedder.image_size[0])
        data = data.hold_out_validation(recipe.validation.size, recipe.validation.seed).test_subset(
            recipe.max_test_samples)
    x, y = data.split(split)
    return {"checkpoint": str(path), "split": split, **evaluate(embedder, x, y)}


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .recipe import RecipeError

    p = argparse.ArgumentParser(prog="python -m model.evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint folder (assets/mnist-hybrid1) or hf://USER/NAME")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--data-dir", help="folder with mnist.npz / fashion_mnist.npz / cifar10.npz")
    args = p.parse_args(argv)
    try:
        figures = evaluate_checkpoint(args.checkpoint, args.split, args.data_dir)
    except (CheckpointError, DataError, RecipeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
