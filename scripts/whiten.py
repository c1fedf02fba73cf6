"""Whiten a trained checkpoint's embedding (model/whitening.py) and measure what it then retrieves.

    python scripts/whiten.py assets/cifar10-hybrid1 --data-dir DIR [--train-samples N] [--held-out N]

1. Embeds the checkpoint's training images with its own search views (its config.json).
2. Fits each candidate whitening (centring only, then PCA whitening at powers 0.25 to 1 with
   shrinkage 0.001 to 1) on all but --held-out of them and ranks the held-out images among
   themselves: the candidate with the best MAP@R there wins, "unchanged" included. The
   test set is not looked at to choose.
3. Fits the winner on all of them, folds it into the embedding layer (model.safetensors is
   rewritten; the architecture and size are unchanged) and evaluates the test set again with
   train.py's code and protocol (Trainer.evaluate). metrics.json gets the new figures under
   "final" (training figures kept) and a "whitening" record: the winner, every candidate's
   held-out scores and the test figures it replaced.

When nothing beats "unchanged", nothing is written. A whitened checkpoint is not whitened
again. Then rebuild the demo's bundle: `python -m model.index --checkpoint FOLDER`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import DataError  # noqa: E402
from model.embedder import (  # noqa: E402
    CheckpointError,
    Embedder,
    atomic_write_json,
    save_checkpoint,
)
from model.training import (  # noqa: E402
    RETRIEVAL_METRICS,
    TrainingError,
    load_trained_run,
    remeasure,
    remeasured_final,
)
from model.whitening import Whitening, best_row, choose_whitening, fit_whitening, fold_whitening  # noqa: E402

# Figures of the class head, which was trained on the embedding before whitening.
HEAD_FIGURES = ("test_ce_loss", "accuracy")


def whiten(checkpoint: str | Path, data_dir: str | Path | None = None, dataset: str | None = None,
           train_samples: int | None = None, held_out: int = 10_000, seed: int = 0,
           log=print) -> dict[str, Any] | None:
    """Choose, fold and measure a whitening; returns the "whitening" record, None when unchanged wins."""
    checkpoint = Path(checkpoint)
    model, config, metrics, data = load_trained_run(checkpoint, data_dir, dataset)
    if "whitening" in metrics:
        raise CheckpointError(f"{checkpoint} is already whitened; whitening it again would fit on whitened "
                              "embeddings: whiten the checkpoint it was made from")
    if not hasattr(model, "embed") or not isinstance(model.embed, torch.nn.Linear):
        raise CheckpointError(f"{checkpoint}: {config['model']} has no final linear embedding layer to fold into")
    n = len(data.train_y) if train_samples is None else min(train_samples, len(data.train_y))
    if not 1 < held_out < n - 1:
        raise CheckpointError(f"--held-out {held_out} must be smaller than the {n:,} training images used, "
                              "and at least 2")
    keep = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))[:n]
    embedder = Embedder(model, config)
    log(f"embedding {n:,} training images, {embedder.views}...")
    views = embedder.view_embeddings(data.train_x[keep])
    rows = choose_whitening(views, data.train_y[keep], held_out, seed)
    for row in rows:
        log(f"  {_name(row['whitening'])}: held-out P@1 {row['precision_at_1']:.4f} | "
            f"R-precision {row['r_precision']:.4f} | MAP@R {row['mean_average_precision_at_r']:.4f}")
    best = best_row(rows)
    if best["whitening"] is None:
        log(f"{checkpoint}: no whitening beats the unchanged embedding on held-out training images; nothing written")
        return None
    chosen = Whitening(**best["whitening"])
    fold_whitening(model.embed, *fit_whitening(views, chosen))
    measured = remeasure(model, config, metrics, data)
    record = {**asdict(chosen), "measured_by": "scripts/whiten.py",
              "fitted_on": f"{n:,} training images x {len(views)} views",
              "chosen_on": f"MAP@R of {held_out:,} of them held out from the fit, queried among themselves",
              "candidates": rows,
              "before": {k: metrics["final"][k] for k in ("test_ms_loss", *RETRIEVAL_METRICS)}}
    metrics["final"] = remeasured_final(metrics, measured, drop=HEAD_FIGURES)
    metrics["whitening"] = record
    save_checkpoint(checkpoint, model, config)
    atomic_write_json(checkpoint / "metrics.json", metrics)
    return record


def _name(whitening: dict | None) -> str:
    if whitening is None:
        return "unchanged"
    if whitening["power"] == 0:
        return "centred"
    return f"power {whitening['power']}, shrinkage {whitening['shrinkage']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint folder written by train.py (rewritten in place)")
    p.add_argument("--data-dir", help="folder with the offline .npz files")
    p.add_argument("--dataset", help="dataset name or image folder (default: the checkpoint's own)")
    p.add_argument("--train-samples", type=int, help="fit on this many random training images (default: all)")
    p.add_argument("--held-out", type=int, default=10_000, help="training images held out to choose on")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of the held-out split")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        record = whiten(args.checkpoint, args.data_dir, args.dataset, args.train_samples, args.held_out, args.seed)
    except (CheckpointError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if record is not None:
        final = json.loads((Path(args.checkpoint) / "metrics.json").read_text())["final"]
        before = record["before"]
        print(f"{args.checkpoint}: whitened ({_name(record)}). Test P@1 {before['precision_at_1']:.4f} -> "
              f"{final['precision_at_1']:.4f} | R-precision {before['r_precision']:.4f} -> {final['r_precision']:.4f}"
              f" | MAP@R {before['mean_average_precision_at_r']:.4f} -> {final['mean_average_precision_at_r']:.4f};"
              f" now rebuild its bundle: python -m model.index --checkpoint {args.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
