"""Re-measure the paper: Table 1, the GELU/ReLU ablation and Table 2, with retrieval metrics.

    python scripts/reproduce.py --data-dir DIR            # the full protocol (a GPU: 3 seeds)
    python scripts/reproduce.py --data-dir DIR --quick    # smoke run on a CPU: 1 epoch, 2,000 images

The protocol is the paper's: Adam, lr 1e-3 constant, 20 epochs (MNIST, FashionMNIST) or 25
(CIFAR-10), no augmentation, the same batch size everywhere.  Each cell (model x dataset x
loss x activation x seed) trains into results/runs/<cell>/ and keeps its metrics.json; a
rerun skips finished cells and resumes a cell that was interrupted.  The tables in results/
are rewritten from whatever cells exist, each marked with the epochs and seeds it had.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import DataError, load_dataset  # noqa: E402
from model.training import TrainConfig, Trainer, TrainingError, pick_device  # noqa: E402

PAPER_MODELS = ("cnn3a", "cnn3b", "inn2", "inn3", "inn4", "hybrid1", "hybrid2", "hybrid3")
BASELINES = ("mobilenet_v2", "efficientnet_b0", "resnet50", "vgg16")
DATASETS = ("mnist", "fashion_mnist", "cifar10")
EPOCHS = {"mnist": 20, "fashion_mnist": 20, "cifar10": 25}
# The paper's Table 1 and 2 test losses (CE, MS), as printed (PAPER.md).
PAPER_T1 = {
    "cnn3a": {"mnist": (0.0757, 0.0679), "fashion_mnist": (0.441, 0.6214), "cifar10": (1.636, 1.116)},
    "cnn3b": {"mnist": (0.0756, 0.0839), "fashion_mnist": (0.436, 0.6078), "cifar10": (1.426, 1.189)},
    "inn2": {"mnist": (1.8941, 1.1249), "fashion_mnist": (2.134, 1.2155), "cifar10": (1.575, 1.233)},
    "inn3": {"mnist": (1.8747, 1.1349), "fashion_mnist": (1.925, 1.1641), "cifar10": (1.580, 1.233)},
    "inn4": {"mnist": (1.9023, 1.1338), "fashion_mnist": (1.713, 1.2024), "cifar10": (1.606, 1.334)},
    "hybrid2": {"mnist": (0.0801, 0.1191), "fashion_mnist": (0.445, 0.6401), "cifar10": (1.333, 1.007)},
    "hybrid3": {"mnist": (0.085, 0.1259), "fashion_mnist": (0.454, 0.6212), "cifar10": (1.401, 1.16)},
    "hybrid1": {"mnist": (0.749, 0.0707), "fashion_mnist": (0.433, 0.6110), "cifar10": (1.309, 0.932)},
}
PAPER_T2 = {"cnn3b": (1.426, 1.116), "efficientnet_b0": (1.703, 1.569), "mobilenet_v2": (1.623, 1.429),
            "resnet50": (1.286, 0.901), "vgg16": (1.729, 1.559), "hybrid1": (1.309, 0.932)}


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    loss: str
    activation: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.loss}-{self.activation}-s{self.seed}"


def plan(seeds: int) -> list[Cell]:
    cells = []
    for s in range(seeds):
        for d in DATASETS:
            for m in PAPER_MODELS:
                for loss in ("ce", "ms"):
                    cells.append(Cell(d, m, loss, "gelu", s))
            for m in ("hybrid1", "cnn3a"):  # the ablation
                for loss in ("ce", "ms"):
                    cells.append(Cell(d, m, loss, "relu", s))
        for m in BASELINES:
            for loss in ("ce", "ms"):
                cells.append(Cell("cifar10", m, loss, "gelu", s))
    return cells


def run_cell(cell: Cell, args: argparse.Namespace, device: torch.device, cache: dict) -> dict:
    out = Path(args.out) / cell.name
    epochs = 1 if args.quick else EPOCHS[cell.dataset]
    limit = args.max_train_samples or (2000 if args.quick else None)
    if cell.model in BASELINES and args.quick:
        limit = min(limit, 500)
    cfg = TrainConfig(dataset=cell.dataset, model=cell.model, loss=cell.loss, epochs=epochs,
                      batch_size=args.batch_size, activation=cell.activation, seed=cell.seed,
                      augment="none", max_train_samples=limit)
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        done = json.loads(metrics_path.read_text())
        if done["epochs_done"] >= epochs and done["train_config"]["max_train_samples"] == limit:
            return done
    key = (cell.dataset, limit)
    if key not in cache:
        cache[key] = load_dataset(cell.dataset, args.data_dir, limit)
    data = cache[key]
    cfg.data_source = data.source
    trainer = Trainer(cfg, data, out, device)
    if (out / "resume").exists():
        trainer.load()
    summary = trainer.fit(log=lambda line: print(f"  {cell.name}: {line}", flush=True))
    return summary


def fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def collect(out: Path) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for path in sorted(out.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        c = m["train_config"]
        groups.setdefault((c["dataset"], c["model"], c["loss"], c["activation"]), []).append(m)
    return groups


def cell_text(runs: list[dict], key: str, digits: int = 4) -> str:
    vals = [r["final"][key] for r in runs if r.get("final") and key in r["final"]]
    if not vals:
        return "–"
    full = all(r["epochs_done"] == EPOCHS[r["dataset"]] and not r["train_config"]["max_train_samples"] for r in runs)
    mark = "" if full else " †"
    return fmt(vals, digits) + mark


def write_tables(out: Path, results: Path, settings: dict) -> None:
    groups = collect(out)
    lines = ["# Table 1, re-measured", "",
             "Ours: mean ± std over seeds (n in the last column); † marks a reduced cell (fewer epochs or a "
             "training subset). Paper: test CE / MS loss as printed. Retrieval: test set, each image queried "
             "against the rest.", "", f"Settings: `{json.dumps(settings)}`", ""]
    for d in DATASETS:
        lines += [f"## {d}", "", "| model | act | params | weights KB | s/epoch (device) | CE: test CE | CE: P@1 | "
                  "CE: MAP@R | MS: test MS | MS: P@1 | MS: MAP@R | paper CE | paper MS | n |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in PAPER_MODELS:
            for act in ("gelu", "relu"):
                ce, ms = groups.get((d, m, "ce", act), []), groups.get((d, m, "ms", act), [])
                if not ce and not ms:
                    continue
                any_run = (ce or ms)[0]
                paper = PAPER_T1[m][d] if act == "gelu" else ("", "")
                lines.append(
                    f"| {m} | {act} | {any_run['keras_param_count']:,} | {any_run['weights_bytes'] / 1024:.1f} | "
                    f"{any_run['seconds_per_epoch']:.1f} ({any_run['device']}) | {cell_text(ce, 'test_ce_loss')} | "
                    f"{cell_text(ce, 'precision_at_1')} | {cell_text(ce, 'mean_average_precision_at_r')} | "
                    f"{cell_text(ms, 'test_ms_loss')} | {cell_text(ms, 'precision_at_1')} | "
                    f"{cell_text(ms, 'mean_average_precision_at_r')} | {paper[0]} | {paper[1]} | "
                    f"{len(ce)}/{len(ms)} |")
        lines.append("")
    (results / "table1.md").write_text("\n".join(lines))

    lines = ["# Table 2 (CIFAR-10), re-measured", "",
             "torchvision models as embedding networks, random init, stem fitted to 32 px. NASNetMobile is not "
             "in torchvision and is not measured. † marks a reduced cell.", "",
             "| model | params (M) | weights MB | s/epoch (device) | CE: test CE | CE: P@1 | MS: test MS | MS: P@1 | "
             "MS: MAP@R | paper CE | paper MS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in ("cnn3b", *BASELINES, "hybrid1"):
        ce, ms = groups.get(("cifar10", m, "ce", "gelu"), []), groups.get(("cifar10", m, "ms", "gelu"), [])
        if not ce and not ms:
            continue
        r = (ce or ms)[0]
        p = PAPER_T2.get(m, ("", ""))
        lines.append(f"| {m} | {r['keras_param_count'] / 1e6:.3f} | {r['weights_bytes'] / 2**20:.2f} | "
                     f"{r['seconds_per_epoch']:.1f} ({r['device']}) | {cell_text(ce, 'test_ce_loss')} | "
                     f"{cell_text(ce, 'precision_at_1')} | {cell_text(ms, 'test_ms_loss')} | "
                     f"{cell_text(ms, 'precision_at_1')} | {cell_text(ms, 'mean_average_precision_at_r')} | "
                     f"{p[0]} | {p[1]} |")
    (results / "table2.md").write_text("\n".join(lines) + "\n")
    plot_map_vs_params(groups, results / "map_at_r_vs_params.png")


def plot_map_vs_params(groups: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=False)
    for ax, d in zip(axes, DATASETS, strict=True):
        for (ds, m, loss, act), runs in groups.items():
            if ds != d or act != "gelu":
                continue
            x = runs[0]["keras_param_count"]
            y = np.mean([r["final"]["mean_average_precision_at_r"] for r in runs])
            ax.scatter(x, y, marker="o" if loss == "ms" else "s", color="C1" if "hybrid" in m else "C0")
            ax.annotate(f"{m}/{loss}", (x, y), fontsize=6)
        ax.set_xscale("log")
        ax.set_title(d)
        ax.set_xlabel("parameters (Keras count, log)")
        ax.set_ylabel("MAP@R")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--out", default=str(ROOT / "results" / "runs"))
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--quick", action="store_true", help="1 epoch on 2,000 training images (500 for baselines)")
    p.add_argument("--seeds", type=int, help="default: 3 on a GPU, 1 on a CPU")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--only", help="run only cells whose name starts with this, e.g. cifar10-hybrid1")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        device = pick_device(args.device)
        seeds = args.seeds or (3 if device.type == "cuda" else 1)
        cells = [c for c in plan(seeds) if not args.only or c.name.startswith(args.only)]
        settings = {"optimizer": "Adam", "lr": 1e-3, "schedule": "constant", "batch_size": args.batch_size,
                    "augment": "none", "epochs": "1 (quick)" if args.quick else EPOCHS, "seeds": seeds,
                    "ms_loss": {k: v for k, v in asdict(TrainConfig(dataset="-")).items()
                                if k.startswith(("ms_", "miner_"))},
                    "pooling": "max-pool 2x2 after conv1 and conv2, global average pooling"}
        cache: dict = {}
        for i, cell in enumerate(cells):
            print(f"[{i + 1}/{len(cells)}] {cell.name}", flush=True)
            run_cell(cell, args, device, cache)
            write_tables(Path(args.out), Path(args.results), settings)  # progress saved after every cell
        write_tables(Path(args.out), Path(args.results), settings)
    except (DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue (finished cells are skipped)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
