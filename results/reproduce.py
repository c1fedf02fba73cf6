"""Re-measure the paper: Table 1, the GELU/ReLU ablation and Table 2, with retrieval metrics.

    python results/reproduce.py --data-dir DIR            # the full protocol (a GPU: 3 seeds)
    python results/reproduce.py --data-dir DIR --quick    # smoke run on a CPU: 1 epoch, 2,000 images
    python results/reproduce.py --data-dir DIR --jobs 12 --time-budget 9   # a GPU lent for minutes
    python results/reproduce.py --data-dir DIR --claims --jobs 2 --time-budget 150   # results/claims.json
    bash results/gpu_sweep.sh                              # the whole sweep in one lent-GPU call

Research, apart from the product: it uses the library (model/) and nothing imports it.

The protocol is the paper's: Adam, lr 1e-3 constant, 20 epochs (MNIST, FashionMNIST) or 25
(CIFAR-10), no augmentation, the same batch size everywhere.  Each cell (model x dataset x
loss x activation x seed) trains into results/runs/<cell>/ and keeps its metrics.json; a
rerun skips finished cells and resumes a cell that was interrupted.  The tables in results/
are rewritten from whatever cells exist, each marked with the epochs and seeds it had.

Small models leave a GPU mostly idle (each step is a few dozen tiny kernels), so --jobs N
trains N cells at once, each in its own process. Every cell runs on one device at one precision
(--precision, recorded in each cell's metrics.json: auto is bf16 autocast on CUDA and on a CPU
with AVX512-BF16 or AMX, fp32 elsewhere), with the trainer's fast path: the sync-free MS loss
and, on CUDA, the compiled step (--compile). --pack FILE gathers every cell's metrics.json into
one .tar.gz, the few files a lent GPU's call can return.

--claims runs the cells behind results/claims.json instead, into results/claims/runs/: Hybrid-1
against CNN-3a at the same protocol with seeds 0, 1 and 2 on every dataset and loss (the paper's
claim that one involution layer helps), and the same pair trained with MS on classes 0-4 only
and queried on the test images of classes 5-9 (retrieval of classes never seen in training; a
class split, `Cell.classes`, is a sweep option). The verdict rule is fixed in CLAIMS below and
written into claims.json before any of its runs finish.  --time-budget stops starting cells once
it is spent and stops running ones at their next epoch end: such a cell keeps the epochs it
finished, is marked as reduced, and a rerun resumes it.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import DataError, load_dataset  # noqa: E402
from model.files import atomic_write_bytes  # noqa: E402
from model.networks import build_model, keras_param_count, model_title  # noqa: E402
from model.recipe import Stage  # noqa: E402
from model.run_folder import find_resume_state  # noqa: E402
from model.training import Trainer, TrainingError, one_stage_recipe, pick_device  # noqa: E402

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
    classes: str = ""  # "0-4": train on these classes only, measure on the test images of the others

    @property
    def name(self) -> str:
        split = f"-classes{self.classes}" if self.classes else ""
        return f"{self.dataset}-{self.model}-{self.loss}-{self.activation}-s{self.seed}{split}"

    @property
    def seen_classes(self) -> list[int]:
        lo, hi = (int(v) for v in self.classes.split("-"))
        return list(range(lo, hi + 1))


def plan(seeds: int) -> list[Cell]:
    """Every cell, in the order they are run: seed by seed, Table 1, the ablation, Table 2,
    so that a time budget that runs out leaves whole tables at fewer seeds."""
    cells = []
    for s in range(seeds):
        cells += [Cell(d, m, loss, "gelu", s) for d in DATASETS for m in PAPER_MODELS for loss in ("ce", "ms")]
        cells += [Cell(d, m, loss, "relu", s) for d in DATASETS for m in ("hybrid1", "cnn3a") for loss in ("ce", "ms")]
        cells += [Cell("cifar10", m, loss, "gelu", s) for m in BASELINES for loss in ("ce", "ms")]
    return cells


CLAIM_SEEDS = (0, 1, 2)
UNSEEN_SPLIT = "0-4"
CLAIM_RULE = ("d = MAP@R(a) - MAP@R(b) for each seed, paired by seed; a cell's 95% interval is the mean of d "
              "± t(0.975, n-1) · sd(d) / sqrt(n) over its n = 3 seeds. Verdict: 'holds' where every cell's "
              "interval lies above 0; 'does not hold' where every cell's interval lies below 0, or contains 0 "
              "with its mean below 0; 'mixed' otherwise. Only cells with 3 full-length seeds of both models "
              "count; until every cell has them the verdict is 'not measured yet'.")
CLAIMS = (
    {"id": "one-involution-layer-helps",
     "statement": "One involution layer in front of the small CNN improves similarity search: Hybrid-1 (a) "
                  "retrieves better than CNN-3a (b) at the paper's protocol, on MNIST, FashionMNIST and "
                  "CIFAR-10, trained with CE and with MS.",
     "metric": "map_at_r", "rule": CLAIM_RULE},
    {"id": "unseen-classes",
     "statement": "The advantage carries to classes never seen in training: trained with MS on the training "
                  "images of classes 0-4 only, Hybrid-1 (a) retrieves the test images of classes 5-9 among "
                  "themselves better than CNN-3a (b).",
     "metric": "map_at_r", "rule": CLAIM_RULE},
    {"id": "involution-as-spatial-mixer",
     "statement": "Involution earns its place as the spatial mixer inside residual blocks with channel groups: "
                  "this project's compact network with involution (a, compact-inv) retrieves better than the "
                  "same network with a grouped 3x3 convolution in its place (b, compact-conv; parameter counts "
                  "within 2%), on CIFAR-10 and FashionMNIST, at the protocol below.",
     "metric": "map_at_r", "rule": CLAIM_RULE, "models": ("compact-inv", "compact-conv")},
)
PAPER_PAIR = ("hybrid1", "cnn3a")
MIXER_MODELS = ("compact-inv", "compact-conv")
# The mixer claim's protocol, fixed (and written into claims.json) before its first run: the
# paper's protocol is too short and unaugmented to separate two networks that fit the training
# set; this one is the shipped recipes' first stage, shortened to fit a CPU (each run about
# 15 epochs of the whole training set).
MIXER_EPOCHS = {"fashion_mnist": 15, "cifar10": 15}
MIXER_AUGMENT = {"fashion_mnist": "shift-flip", "cifar10": "crop-flip"}
MIXER_PROTOCOL = {"loss": "ce", "label_smoothing": 0.1, "optimizer": "Adam", "lr": 1e-3, "schedule": "cosine",
                  "batch_size": 256, "augment": MIXER_AUGMENT, "activation": "gelu", "epochs": MIXER_EPOCHS,
                  "seeds": [0, 1, 2], "validation": "none: no choices are made, the last epoch is measured",
                  "measured_on": "the test set after the last epoch; each test image queried against the other "
                                 "test images, one view, no whitening"}


def claim_models(claim: dict) -> tuple[str, str]:
    return tuple(claim.get("models", PAPER_PAIR))


def claims_plan() -> list[Cell]:
    """The cells behind results/claims.json, in the order they run: the unseen-class cells
    first (half the data each, one whole claim soonest), then claim 1 dataset by dataset,
    cheapest first; each cell's seeds and both models together, so that what finishes is
    whole cells and the two models of a seed train side by side under the same load."""
    cells = [Cell(d, m, "ms", "gelu", s, UNSEEN_SPLIT) for d in DATASETS for s in CLAIM_SEEDS
             for m in ("hybrid1", "cnn3a")]
    cells += [Cell(d, m, loss, "gelu", s) for d in DATASETS for loss in ("ms", "ce") for s in CLAIM_SEEDS
              for m in ("hybrid1", "cnn3a")]
    cells += [Cell(d, m, "ce", "gelu", s) for d in MIXER_EPOCHS for s in CLAIM_SEEDS for m in MIXER_MODELS]
    return cells


def class_split(data, seen: list[int]):
    """Training images of the `seen` classes only (relabelled 0..k-1, so the class-balanced
    sampler sees k classes) and test images of the other classes: what an epoch measures is
    retrieval of classes the model never saw. Returns (that data, the seen classes' test images
    and labels)."""
    import dataclasses

    seen_t = torch.tensor(seen)
    keep_train = torch.isin(data.train_y, seen_t)
    remap = torch.full((len(data.class_names),), -1, dtype=torch.long)
    remap[seen_t] = torch.arange(len(seen))
    seen_test = torch.isin(data.test_y, seen_t)
    split = dataclasses.replace(data, train_x=data.train_x[keep_train], train_y=remap[data.train_y[keep_train]],
                                test_x=data.test_x[~seen_test], test_y=data.test_y[~seen_test],
                                class_names=[data.class_names[c] for c in seen])
    return split, (data.test_x[seen_test], data.test_y[seen_test])


SEEN = "seen_classes.json"


def cell_epochs(cell: Cell, args: argparse.Namespace) -> int:
    if args.quick:
        return 1
    if cell.model in BASELINES and args.baseline_epochs:
        return args.baseline_epochs
    return planned_epochs(cell)


def planned_epochs(cell: Cell) -> int:
    return (MIXER_EPOCHS if cell.model in MIXER_MODELS else EPOCHS)[cell.dataset]


def cell_limit(cell: Cell, args: argparse.Namespace) -> int | None:
    limit = args.max_train_samples or (2000 if args.quick else None)
    if cell.model in BASELINES and args.quick:
        limit = min(limit, 500)
    return limit


def is_finished(cell: Cell, args: argparse.Namespace) -> bool:
    path = Path(args.out) / cell.name / "metrics.json"
    if not path.is_file() or (cell.classes and not (path.parent / SEEN).is_file()):
        return False
    done = json.loads(path.read_text())
    return (done["epochs_done"] >= cell_epochs(cell, args)
            and (done["train_config"]["max_train_samples"] or None) == cell_limit(cell, args))


def run_cell(cell: Cell, args: argparse.Namespace, device: torch.device, cache: dict,
             stop_at: float | None = None) -> None:
    out = Path(args.out) / cell.name
    epochs, limit = cell_epochs(cell, args), cell_limit(cell, args)
    # the paper's protocol: the whole training set, no choices, the test set measured every epoch
    protocol = {"augment": "none"}
    if cell.model in MIXER_MODELS:  # the mixer claim's own protocol
        protocol = {"augment": MIXER_AUGMENT[cell.dataset], "lr": MIXER_PROTOCOL["lr"],
                    "schedule": MIXER_PROTOCOL["schedule"], "label_smoothing": MIXER_PROTOCOL["label_smoothing"]}
    recipe = one_stage_recipe(cell.dataset, model=cell.model, loss=cell.loss, epochs=epochs,
                              batch_size=args.batch_size, activation=cell.activation, seed=cell.seed,
                              max_train_samples=limit or 0, choose_epoch=False,
                              validation={"size": 0}, precision=args.precision, **protocol)
    if is_finished(cell, args):
        return
    key = (cell.dataset, limit)
    if key not in cache:
        cache[key] = load_dataset(cell.dataset, args.data_dir, limit)
    data, seen_test = cache[key], None
    if cell.classes:
        data, seen_test = class_split(data, cell.seen_classes)
    compile_step = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    # claim cells report their last epoch only: measuring the test set after every epoch would
    # add a fifth to their time on the CPU
    trainer = Trainer(recipe, data, out, device, compile_step=compile_step, eval_split="test",
                      evaluate_every_epoch=not args.claims)
    if find_resume_state(out):
        trainer.load()
    elif (out / "metrics.json").exists():
        keep_earlier_measurement(out)
    trainer.fit(log=lambda line: print(f"  {cell.name}: {line}", flush=True), stop_at=stop_at)
    if seen_test is not None and trainer.epoch >= epochs:
        measure_seen(cell, out, *seen_test)
    if is_finished(cell, args):
        (out / PREVIOUS).unlink(missing_ok=True)


def measure_seen(cell: Cell, out: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    """A finished class-split cell's figures on the test images of the classes it trained on,
    measured as its per-epoch figures are (the network's own embedding, one view), written
    once beside metrics.json: the gap between seen and unseen classes."""
    from model.embedder import load_embedder
    from model.evaluation import evaluate
    from model.files import atomic_write_json

    figures = evaluate(load_embedder(out), x, y)
    atomic_write_json(out / SEEN, {"classes": cell.seen_classes, **figures})


PREVIOUS = "metrics.previous.json"


def keep_earlier_measurement(out: Path) -> None:
    """A stopped cell whose resume state is gone (a lent GPU's, say) restarts from epoch 0 and
    rewrites metrics.json every epoch.  Its earlier, longer measurement is kept beside it, and
    the tables report whichever of the two has more epochs, so that a restart cut short loses
    nothing."""
    current = json.loads((out / "metrics.json").read_text())
    earlier = out / PREVIOUS
    if not earlier.exists() or json.loads(earlier.read_text())["epochs_done"] < current["epochs_done"]:
        (out / "metrics.json").replace(earlier)
    else:
        (out / "metrics.json").unlink()


def run_parallel(cells: list[Cell], args: argparse.Namespace, argv: list[str], stop_at: float | None,
                 on_done) -> None:
    """Run each cell in a child process (`--cell NAME`), args.jobs at a time; a child's
    output goes to <out>/<cell>.log.  A failed cell is reported and the sweep goes on."""
    pending, running = list(cells), {}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and len(running) < args.jobs and (stop_at is None or time.time() < stop_at):
                cell = pending.pop(0)
                cmd = [sys.executable, __file__, *argv, "--cell", cell.name, "--jobs", "1"]
                if stop_at is not None:
                    cmd += ["--stop-at", str(stop_at)]
                log = open(Path(args.out) / f"{cell.name}.log", "w")  # closed when the child ends
                running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)] = (cell, log,
                                                                                                time.time())
            if pending and stop_at is not None and time.time() >= stop_at:
                print(f"time budget spent with {len(pending)} cells not started: rerun the same command to "
                      "continue", flush=True)
                pending.clear()
            for proc in [p for p in running if p.poll() is not None]:
                cell, log, started = running.pop(proc)
                log.close()
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see its .log)"
                print(f"{cell.name}: {status} in {time.time() - started:.0f} s; "
                      f"{len(pending)} waiting, {len(running)} running", flush=True)
                on_done()
            time.sleep(0.2)
    finally:
        for proc in running:
            proc.terminate()


def pack(out: Path, file: Path) -> int:
    """Every cell's records under `out` into one .tar.gz (paths relative to `out`); returns the cells."""
    import tarfile

    records = sorted(p for name in ("metrics.json", PREVIOUS) for p in out.glob(f"*/{name}"))
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in records:
            tar.add(p, arcname=p.relative_to(out).as_posix())
    os.replace(tmp, file)
    return len({p.parent for p in records})


def claim_run(cell: Cell, folder: Path) -> dict | None:
    """One run's line in claims.json, or None if it has not finished an epoch."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    f = m["final"]
    if "precision_at_1" not in f:  # still training: its last epoch is measured when it ends
        return {"seed": cell.seed, "epochs": planned_epochs(cell), "epochs_done": m["epochs_done"],
                "device": m["device"], "precision": m.get("precision", "fp32")}
    run = {"seed": cell.seed, "epochs": planned_epochs(cell), "epochs_done": m["epochs_done"],
           "p_at_1": f["precision_at_1"], "r_precision": f["r_precision"], "map_at_r": f["mean_average_precision_at_r"],
           "test_loss": f.get("test_ce_loss", f.get("test_ms_loss")), "device": m["device"],
           "precision": m.get("precision", "fp32"), "seconds_per_epoch": m["seconds_per_epoch"]}
    if cell.classes:
        seen = json.loads((folder / SEEN).read_text()) if (folder / SEEN).is_file() else None
        run["seen"] = seen and {"p_at_1": seen["precision_at_1"], "r_precision": seen["r_precision"],
                                "map_at_r": seen["mean_average_precision_at_r"], "test_loss": seen["ms_loss"]}
    return run


def paired_interval(a: list[float], b: list[float]) -> tuple[float, list[float]]:
    """Mean of a - b (paired) and its 95% t interval."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)]


def cell_verdict(mean: float, ci: list[float]) -> str:
    if ci[0] > 0:
        return "a better"
    if ci[1] < 0:
        return "b better"
    return "no difference shown (interval contains 0), mean " + ("above" if mean > 0 else "below") + " 0"


def claim_verdict(cells: list[dict]) -> str:
    """CLAIM_RULE applied to a claim's cells."""
    if not cells or any(c["mean_diff"] is None for c in cells):
        return "not measured yet"
    if all(c["ci95"][0] > 0 for c in cells):
        return "holds"
    if all(c["ci95"][1] < 0 or (c["ci95"][0] <= 0 <= c["ci95"][1] and c["mean_diff"] < 0) for c in cells):
        return "does not hold"
    return "mixed"


def write_claims(out: Path, path: Path) -> dict:
    """results/claims.json from the claim cells' records under `out`, rewritten whole each time:
    the rule first (it is fixed before the runs), then every cell with whatever seeds exist."""
    plan_cells = claims_plan()
    claims = []
    for claim in CLAIMS:
        unseen = claim["id"] == "unseen-classes"
        models = claim_models(claim)
        keys = dict.fromkeys((c.dataset, c.loss) for c in plan_cells
                             if bool(c.classes) == unseen and c.model in models)
        cells = []
        for dataset, loss in keys:
            entry: dict = {"dataset": dataset} if unseen else {"dataset": dataset, "loss": loss}
            if unseen:
                trained = Cell(dataset, "", loss, "", 0, UNSEEN_SPLIT).seen_classes
                entry.update(loss_used=loss, classes_trained=trained,
                             classes_queried=[c for c in range(10) if c not in trained])
            for side, model in zip("ab", models, strict=True):
                runs = [claim_run(c, out / c.name) for c in plan_cells
                        if (c.dataset, c.loss, c.model, bool(c.classes)) == (dataset, loss, model, unseen)]
                entry[side] = {"model": model, "runs": [r for r in runs if r is not None]}
            a, b = ({r["seed"]: r["map_at_r"] for r in entry[side]["runs"]
                     if r["epochs_done"] >= r["epochs"] and (not unseen or r["seen"])} for side in "ab")
            seeds = sorted(set(a) & set(b))
            if seeds == list(CLAIM_SEEDS):
                entry["mean_diff"], entry["ci95"] = paired_interval([a[s] for s in seeds], [b[s] for s in seeds])
                entry["cell_verdict"] = cell_verdict(entry["mean_diff"], entry["ci95"])
            else:
                entry.update(mean_diff=None, ci95=None,
                             cell_verdict=f"{len(seeds)} of {len(CLAIM_SEEDS)} seeds finished")
            cells.append(entry)
        extra = {"protocol": MIXER_PROTOCOL} if models == MIXER_MODELS else {}
        claims.append({**claim, "models": list(models), **extra, "verdict": claim_verdict(cells), "cells": cells})
    doc = {"generated_by": "python results/reproduce.py --claims (rewritten after every finished run)",
           "protocol": {"optimizer": "Adam", "lr": 1e-3, "schedule": "constant", "batch_size": 256,
                        "augment": "none", "activation": "gelu", "epochs": EPOCHS, "seeds": list(CLAIM_SEEDS),
                        "measured_on": "the test set after the last epoch; each test image queried against the "
                                       "other test images (of the queried classes), one view, no whitening",
                        "applies_to": "the paper's claims; a claim with its own protocol carries it"},
           "claims": claims}
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
    atomic_write_bytes(path.with_suffix(".md"), claims_markdown(doc).encode())
    return doc


def _seeds(runs: list[dict], key: str = "map_at_r", seen: bool = False) -> str:
    values = [(r["seen"] if seen else r)[key] for r in runs if r["epochs_done"] >= r["epochs"] and key in r
              and (not seen or r.get("seen"))]
    return f"{fmt(values)} (n={len(values)})" if values else "–"


def claims_markdown(doc: dict) -> str:
    """claims.json as tables for a reader (results/claims.md), rewritten with it."""
    lines = ["# The paper's claims with 3 seeds", "",
             "Written by `python results/reproduce.py --claims` from `claims.json`, after every finished run. "
             "MAP@R and P@1 on the test set after the last epoch: mean ± sd over the seeds finished (n). "
             "a and b are the claim's two models; the difference is paired by seed, with its 95% t interval "
             "once all 3 seeds of both have finished.", ""]
    for claim in doc["claims"]:
        unseen = claim["id"] == "unseen-classes"
        ta, tb = (model_title(m) for m in claim_models(claim))
        lines += [f"## {claim['id']}: {claim['verdict']}", "", claim["statement"], "", f"Rule: {claim['rule']}", ""]
        if "protocol" in claim:
            lines += ["Protocol: " + json.dumps(claim["protocol"]), ""]
        if unseen:
            lines += [f"| dataset | {ta} MAP@R, classes 5-9 (unseen) | {tb} | a - b [95% CI] | cell | "
                      f"{ta} MAP@R, classes 0-4 (seen) | {tb}, seen | P@1 unseen a / b |",
                      "|---|---|---|---|---|---|---|---|"]
        else:
            lines += [f"| dataset | loss | {ta} MAP@R | {tb} MAP@R | a - b [95% CI] | cell | P@1 a / b |",
                      "|---|---|---|---|---|---|---|"]
        for c in claim["cells"]:
            a, b = c["a"]["runs"], c["b"]["runs"]
            diff = "–" if c["mean_diff"] is None else (f"{c['mean_diff']:+.4f} [{c['ci95'][0]:+.4f}, "
                                                       f"{c['ci95'][1]:+.4f}]")
            p1 = f"{_seeds(a, 'p_at_1')} / {_seeds(b, 'p_at_1')}"
            if unseen:
                lines.append(f"| {c['dataset']} | {_seeds(a)} | {_seeds(b)} | {diff} | {c['cell_verdict']} | "
                             f"{_seeds(a, seen=True)} | {_seeds(b, seen=True)} | {p1} |")
            else:
                lines.append(f"| {c['dataset']} | {c['loss']} | {_seeds(a)} | {_seeds(b)} | {diff} | "
                             f"{c['cell_verdict']} | {p1} |")
        lines.append("")
    devices = sorted({f"{r['device']}, {r['precision']}" for claim in doc["claims"] for c in claim["cells"]
                      for side in "ab" for r in c[side]["runs"]})
    lines += [f"Trained on: {'; '.join(devices) or 'nothing yet'}.", ""]
    return "\n".join(lines)


def fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def collect(out: Path) -> dict[tuple, list[dict]]:
    """Each cell folder's run, grouped by (dataset, model, loss, activation): one entry per seed.
    Of metrics.json and a kept earlier measurement, the one with more epochs counts."""
    groups: dict[tuple, list[dict]] = {}
    for folder in sorted(p for p in out.glob("*") if p.is_dir()):
        runs = [json.loads(f.read_text()) for f in (folder / "metrics.json", folder / PREVIOUS) if f.is_file()]
        if not runs:
            continue
        m = max(runs, key=lambda r: r["epochs_done"])  # ties: the current run
        c = m["train_config"]
        groups.setdefault((c["dataset"], c["model"], c["loss"], c["activation"]), []).append(m)
    return groups


def is_full(run: dict) -> bool:
    return run["epochs_done"] == EPOCHS[run["dataset"]] and not run["train_config"]["max_train_samples"]


def usable(runs: list[dict]) -> list[dict]:
    """The runs a cell reports: the full-protocol ones if any, else those with the most epochs
    (a mean over seeds stopped at different epochs would mean nothing)."""
    full = [r for r in runs if is_full(r)]
    if full:
        return full
    most = max((r["epochs_done"] for r in runs), default=0)
    return [r for r in runs if r["epochs_done"] == most]


def cell_text(runs: list[dict], key: str, digits: int = 4) -> str:
    runs = [r for r in usable(runs) if r.get("final") and key in r["final"]]
    if not runs:
        return "–"
    text = fmt([r["final"][key] for r in runs], digits)
    if is_full(runs[0]):
        return text
    r = runs[0]
    notes = [f"{r['epochs_done']} ep"] if r["epochs_done"] != EPOCHS[r["dataset"]] else []
    if r["train_config"]["max_train_samples"]:
        notes.append(f"{r['train_config']['max_train_samples']} imgs")
    return f"{text} †({', '.join(notes)})"


def short_device(device: str) -> str:
    """'cuda (NVIDIA H100 80GB HBM3)' -> 'H100 80GB HBM3'; 'cpu (1 threads)' -> 'CPU, 1 threads'."""
    kind, _, detail = device.partition(" (")
    detail = detail.rstrip(")").removeprefix("NVIDIA ")
    if kind == "cuda":
        return detail or "CUDA"
    return f"{kind.upper()}, {detail}" if detail else kind.upper()


def timing(ce: list[dict], ms: list[dict]) -> str:
    """Seconds per epoch and device of a row's CE and MS runs, each named: the two losses of
    one model may have run on different devices."""
    parts = [f"{loss}: {runs[0]['seconds_per_epoch']:.1f} ({short_device(runs[0]['device'])})"
             for loss, runs in (("CE", usable(ce)), ("MS", usable(ms))) if runs]
    return "; ".join(parts)


@functools.cache
def planned_params(model: str, in_channels: int, activation: str) -> int:
    """Keras parameter count of a planned cell's network, measured or not (built once: the
    tables are rewritten after every cell, and ResNet50 or VGG16 take a while to build)."""
    return keras_param_count(build_model(model, in_channels, activation=activation))


SEEDS_NOTE = ("seeds CE/MS: how many seeds each loss's figures average. The protocol asks for 3 on a "
              "GPU and at least 1 on a CPU; a cell with fewer than 3 has no ± and cannot separate "
              "differences of a few thousandths from seed noise.")


def write_tables(out: Path, results: Path, settings: dict) -> None:
    groups = collect(out)
    lines = ["# Table 1, re-measured", "",
             "Ours: mean ± std over seeds; † marks a reduced cell (fewer epochs or a training subset; the "
             f"epochs or images it had). {SEEDS_NOTE} s/epoch is as measured, with other runs sharing the "
             "device where results/README.md says so. Paper: test CE / MS loss as printed. Retrieval: test "
             "set, each image queried against the rest.", "", f"Settings: `{json.dumps(settings)}`", ""]
    for d in DATASETS:
        lines += [f"## {d}", "", "| model | act | params | weights KB | s/epoch (device) | CE: test CE | CE: P@1 | "
                  "CE: MAP@R | MS: test MS | MS: P@1 | MS: MAP@R | paper CE | paper MS | seeds CE/MS |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rows = [(m, "gelu") for m in PAPER_MODELS] + [(m, "relu") for m in ("hybrid1", "cnn3a")]
        for m, act in rows:  # every planned cell, measured or not: gaps stay visible
            ce, ms = groups.get((d, m, "ce", act), []), groups.get((d, m, "ms", act), [])
            paper = PAPER_T1[m][d] if act == "gelu" else ("", "")
            params = planned_params(m, 3 if d == "cifar10" else 1, act)
            any_run = (ce or ms or [None])[0]
            measured = (f"{any_run['weights_bytes'] / 1024:.1f} | {timing(ce, ms)}" if any_run
                        else "– | not run yet")
            lines.append(
                f"| {m} | {act} | {params:,} | {measured} | {cell_text(ce, 'test_ce_loss')} | "
                f"{cell_text(ce, 'precision_at_1')} | {cell_text(ce, 'mean_average_precision_at_r')} | "
                f"{cell_text(ms, 'test_ms_loss')} | {cell_text(ms, 'precision_at_1')} | "
                f"{cell_text(ms, 'mean_average_precision_at_r')} | {paper[0]} | {paper[1]} | "
                f"{len(usable(ce))}/{len(usable(ms))} |")
        lines.append("")
    atomic_write_bytes(results / "table1.md", "\n".join(lines).encode())

    lines = ["# Table 2 (CIFAR-10), re-measured", "",
             "torchvision models as embedding networks, random init, stem fitted to 32 px. NASNetMobile is not "
             f"in torchvision and is not measured. † marks a reduced cell. {SEEDS_NOTE}", "",
             "| model | params (M) | weights MB | s/epoch (device) | CE: test CE | CE: P@1 | CE: MAP@R | MS: test MS | "
             "MS: P@1 | MS: MAP@R | paper CE | paper MS | seeds CE/MS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in ("cnn3b", *BASELINES, "hybrid1"):
        ce, ms = groups.get(("cifar10", m, "ce", "gelu"), []), groups.get(("cifar10", m, "ms", "gelu"), [])
        r = (ce or ms or [None])[0]
        params = planned_params(m, 3, "gelu")
        measured = f"{r['weights_bytes'] / 2**20:.2f} | {timing(ce, ms)}" if r else "– | not run yet"
        p = PAPER_T2.get(m, ("", ""))
        lines.append(f"| {m} | {params / 1e6:.3f} | {measured} | {cell_text(ce, 'test_ce_loss')} | "
                     f"{cell_text(ce, 'precision_at_1')} | {cell_text(ce, 'mean_average_precision_at_r')} | "
                     f"{cell_text(ms, 'test_ms_loss')} | {cell_text(ms, 'precision_at_1')} | "
                     f"{cell_text(ms, 'mean_average_precision_at_r')} | {p[0]} | {p[1]} | "
                     f"{len(usable(ce))}/{len(usable(ms))} |")
    atomic_write_bytes(results / "table2.md", ("\n".join(lines) + "\n").encode())
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
            runs = usable(runs)
            x = runs[0]["keras_param_count"]
            y = np.mean([r["final"]["mean_average_precision_at_r"] for r in runs])
            color = "C1" if "hybrid" in m else "C0"
            ax.scatter(x, y, marker="o" if loss == "ms" else "s", edgecolors=color,
                       facecolors=color if is_full(runs[0]) else "none")  # hollow: a reduced cell
            ax.annotate(f"{m}/{loss}", (x, y), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlim(300, 5e7)  # the INN models up to ResNet50, the same on every panel
        ax.set_ylim(0, 1.02)
        ax.set_title(d)
        ax.set_xlabel("parameters (Keras count, log)")
        ax.set_ylabel("MAP@R (squares CE, circles MS; hollow: reduced)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--out", help="default: results/runs, or results/claims/runs with --claims")
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--claims", action="store_true", help="the cells behind results/claims.json (3 seeds of "
                   "Hybrid-1 and CNN-3a, and their unseen-class cells) instead of the tables")
    p.add_argument("--quick", action="store_true", help="1 epoch on 2,000 training images (500 for baselines)")
    p.add_argument("--seeds", type=int, help="default: 3 on a GPU, 1 on a CPU")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--baseline-epochs", type=int, help="fewer epochs for the Table 2 baselines (marked reduced)")
    p.add_argument("--only", help="run only cells whose name starts with one of these comma-separated "
                   "prefixes, e.g. cifar10-hybrid1 or cifar10-resnet50,cifar10-vgg16")
    p.add_argument("--jobs", type=int, default=1, help="cells trained at once, each in its own process")
    p.add_argument("--time-budget", type=float, help="minutes; then no new cells, and running ones stop "
                   "at their next epoch end (resumable)")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # one cell, run by --jobs children
    p.add_argument("--stop-at", type=float, help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile each cell's training step; auto: on for CUDA")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="each cell's training step (training.pick_precision); one sweep, one precision")
    p.add_argument("--pack", metavar="FILE", help="at the end, gather every cell's metrics.json (and kept earlier "
                   "measurement) into FILE, a .tar.gz; unpack with `tar xzf FILE -C results/runs`")
    args = p.parse_args(argv)
    args.out = args.out or str(ROOT / "results" / ("claims/runs" if args.claims else "runs"))
    try:
        device = pick_device(args.device)
        seeds = args.seeds or (3 if device.type == "cuda" else 1)
        prefixes = tuple(args.only.split(",")) if args.only else ("",)
        cells = [c for c in (claims_plan() if args.claims else plan(seeds)) if c.name.startswith(prefixes)]
        if not cells and not args.cell:
            raise TrainingError(f"no planned cell matches --only {args.only!r}; cell names look like "
                                f"{plan(1)[0].name}")
        stop_at = args.stop_at or (None if args.time_budget is None else time.time() + 60 * args.time_budget)
        if args.cell:
            chosen = [c for c in plan(max(seeds, 10)) + claims_plan() if c.name == args.cell]
            if not chosen:
                raise TrainingError(f"no cell named {args.cell!r}")
            run_cell(chosen[0], args, device, {}, stop_at)
            return 0
        settings = {"optimizer": "Adam", "lr": 1e-3, "schedule": "constant", "batch_size": args.batch_size,
                    "augment": "none", "epochs": "1 (quick)" if args.quick else EPOCHS,
                    "ms_loss": {k: v for k, v in asdict(Stage()).items()
                                if k.startswith(("ms_", "miner_"))},
                    "pooling": "max-pool 2x2 after conv1 and conv2, global average pooling"}
        todo = [c for c in cells if not is_finished(c, args)]
        print(f"{len(cells)} cells, {len(cells) - len(todo)} already finished", flush=True)

        def tables() -> None:  # progress saved after every cell
            if args.claims:
                write_claims(Path(args.out), Path(args.results) / "claims.json")
            else:
                write_tables(Path(args.out), Path(args.results), settings)

        tables()  # claims.json holds its rule before the first run finishes

        if args.jobs > 1:
            run_parallel(todo, args, argv, stop_at, tables)
        else:
            cache: dict = {}
            for i, cell in enumerate(todo):
                if stop_at is not None and time.time() >= stop_at:
                    print("time budget spent: rerun the same command to continue", flush=True)
                    break
                print(f"[{i + 1}/{len(todo)}] {cell.name}", flush=True)
                run_cell(cell, args, device, cache, stop_at)
                tables()
        tables()
        if args.pack:
            print(f"packed {pack(Path(args.out), Path(args.pack))} cells' records into {args.pack}")
    except (DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue (finished cells are skipped)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
