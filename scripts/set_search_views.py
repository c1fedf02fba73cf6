"""Change the search views of a trained checkpoint and measure what it then retrieves.

    python scripts/set_search_views.py assets/cifar10-cnn3a --flip-average --shift-average 1 --data-dir DIR

The views (mirror image, shifts: see embedder.search_views) are test-time augmentation:
they change how images are embedded, not the weights, so trying other views needs no
training. This writes them into config.json, evaluates the test set again with the same
code and protocol as train.py's evaluation (Trainer.evaluate), and updates metrics.json:
"final" gets the new retrieval metrics (training figures are kept), and "search_views"
records the views with the figures they replaced. The per-epoch rows stay as measured
during training, with the views the run had. Then rebuild the demo's bundle with
`python -m model.index --checkpoint FOLDER`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import DataError  # noqa: E402
from model.embedder import CONFIG_NAME, CheckpointError, atomic_write_json  # noqa: E402
from model.training import (  # noqa: E402
    RETRIEVAL_METRICS,
    TrainingError,
    load_trained_run,
    remeasure,
    remeasured_final,
)

VIEW_KEYS = ("flip_average", "shift_average")


def set_search_views(checkpoint: str | Path, flip_average: bool, shift_average: int,
                     data_dir: str | Path | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Re-evaluate `checkpoint` with these views, write config.json and metrics.json; returns the new final."""
    checkpoint = Path(checkpoint)
    model, config, metrics, data = load_trained_run(checkpoint, data_dir, dataset)
    measured = remeasure(model, config, metrics, data, flip_average=flip_average, shift_average=shift_average)
    before = {k: config.get(k, 0 if k == "shift_average" else False) for k in VIEW_KEYS}
    record = {"flip_average": flip_average, "shift_average": shift_average,
              "measured_by": "scripts/set_search_views.py",
              "before": {**before, **{k: metrics["final"][k] for k in RETRIEVAL_METRICS}}}
    metrics["final"] = remeasured_final(metrics, measured)
    metrics["search_views"] = record
    atomic_write_json(checkpoint / CONFIG_NAME, {**config, "flip_average": flip_average,
                                                 "shift_average": shift_average})
    atomic_write_json(checkpoint / "metrics.json", metrics)
    return metrics["final"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint folder written by train.py")
    p.add_argument("--flip-average", action="store_true", help="average each image with its mirror image")
    p.add_argument("--shift-average", type=int, default=0, metavar="PX",
                   help="and with the image moved by PX px left, right, up and down (0: off)")
    p.add_argument("--data-dir", help="folder with the offline .npz files")
    p.add_argument("--dataset", help="dataset name or image folder (default: the checkpoint's own)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        final = set_search_views(args.checkpoint, args.flip_average, args.shift_average, args.data_dir, args.dataset)
    except (CheckpointError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint}: P@1 {final['precision_at_1']:.4f} | R-precision {final['r_precision']:.4f} | "
          f"MAP@R {final['mean_average_precision_at_r']:.4f}; now rebuild its bundle: "
          f"python -m model.index --checkpoint {args.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
