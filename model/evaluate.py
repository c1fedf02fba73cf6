"""Measure a checkpoint: `python -m model.evaluate CHECKPOINT --split val|test [--data-dir DIR]`.

Prints one JSON object: the split's P@1, R-precision, MAP@R and MS loss, measured by
model/evaluation.py as the checkpoint is served (its search views averaged). CHECKPOINT is
a folder written by train.py or "hf://USER/NAME"; the validation split is the one its
recipe.toml held out of the training set.
"""

from __future__ import annotations

import argparse
import json
import sys

from .data import DataError
from .embedder import CheckpointError
from .evaluation import evaluate_checkpoint
from .recipe import RecipeError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__,
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
