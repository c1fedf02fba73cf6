"""Underfitting or overfitting? Retrieval on training images against retrieval on test images.

    python scripts/fit_gap.py assets/cifar10-hybrid1 assets/cifar10-cnn3a [--data-dir data] [--dataset D]

For each checkpoint, P@1, R-precision and MAP@R on (a) a random subset of its training set
as large as its test set, every image queried against the rest of the subset, and (b) its
test set, the same way: the protocol of metrics.json on both, so the two rows are comparable
(equal size means equal gallery density). Both are measured with one view and, for a
checkpoint that searches with several views (mirror images, shifts), with those too, by
model/evaluation.py, the path every figure of the project takes. No training augmentation
is applied.

If the model retrieves hardly better on images it was trained on than on new ones, more
regularisation cannot help: it needs more capacity or more training (underfitting). A large
gap says the opposite (overfitting).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.checkpoint import CheckpointError  # noqa: E402
from model.data import DataError, load_dataset  # noqa: E402
from model.embedder import load_embedder  # noqa: E402
from model.evaluation import retrieval_metrics, view_embeddings  # noqa: E402
from model.search_views import view_averaged  # noqa: E402


def fit_gap(checkpoint: str | Path, data_dir: str | Path | None = None, dataset: str | None = None,
            seed: int = 0) -> list[dict]:
    """Rows {checkpoint, split, view, precision_at_1, r_precision, mean_average_precision_at_r}.

    `dataset` defaults to the one named in the checkpoint's config.json (an image folder
    checkpoint records only the folder's name: pass its path).
    """
    embedder = load_embedder(checkpoint)
    dataset = dataset or embedder.config.get("dataset")
    if not dataset:
        raise CheckpointError(f"{checkpoint}: config.json names no dataset; pass --dataset")
    data = load_dataset(dataset, data_dir, image_size=embedder.image_size[0])
    n = min(len(data.test_y), len(data.train_y))
    keep = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))[:n]
    rows = []
    for split, x, y in ((f"train ({n:,} of {len(data.train_y):,})", data.train_x[keep], data.train_y[keep]),
                        ("test", data.test_x, data.test_y)):
        per_view = view_embeddings(embedder, x)  # every view embedded once, the image itself first
        views = {"one view": view_averaged(per_view[:1])}
        if len(per_view) > 1:
            views[embedder.views] = view_averaged(per_view)
        for view, emb in views.items():
            rows.append({"checkpoint": str(checkpoint), "split": split, "view": view,
                         **retrieval_metrics(emb, y)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders written by train.py")
    p.add_argument("--data-dir", default=None, help="folder with the offline .npz files")
    p.add_argument("--dataset", help="dataset name or image folder (default: the checkpoint's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training subset")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print("| checkpoint | images | view | P@1 | R-precision | MAP@R |\n|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        try:
            rows = fit_gap(checkpoint, args.data_dir, args.dataset, args.seed)
        except (CheckpointError, DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for r in rows:
            print(f"| {Path(r['checkpoint']).name} | {r['split']} | {r['view']} | {r['precision_at_1']:.4f} | "
                  f"{r['r_precision']:.4f} | {r['mean_average_precision_at_r']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
