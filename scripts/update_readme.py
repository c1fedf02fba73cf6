"""Rewrite the tables of shipped models from assets/*/metrics.json: the README's short one
(summary_table) and the full one in docs/shipped-models.md (table: recipes, losses, timings).

    python scripts/update_readme.py

The figures are read, never typed: the tables always show what the shipped weights measured.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- metrics:start -->", "<!-- metrics:end -->"  # README.md: summary_table()
FULL_START, FULL_END = "<!-- metrics-full:start -->", "<!-- metrics-full:end -->"  # docs/shipped-models.md: table()
README, FULL = ROOT / "README.md", ROOT / "docs" / "shipped-models.md"
sys.path.insert(0, str(ROOT))

from model.embedder import searched_views, training_lineage  # noqa: E402

ORDER = ("mnist", "fashion_mnist", "cifar10")


def num(row: dict, key: str) -> str:
    """A metric to 4 places, or – where the run has none (accuracy and CE loss exist only for CE runs)."""
    return f"{row[key]:.4f}" if key in row else "–"


def recipe_of(c: dict, dataset: str) -> str:
    aug = c["augment"]
    if aug is None or isinstance(aug, bool):
        aug = "crop-flip" if aug or (aug is None and dataset not in ("mnist", "fashion_mnist")) else "none"
    loss = {"ce": "CE", "ms": "MS"}.get(c["loss"], c["loss"])
    if c["loss"] == "normsoftmax":
        loss = f"normalized softmax (temperature {c.get('temperature', 0.05):g})"
    return (f"{loss}, Adam {c['lr']:g} {c['schedule']}, batch {c['batch_size']}"
            f"{', label smoothing ' + format(c['label_smoothing'], 'g') if c['label_smoothing'] else ''}"
            f"{', ' + aug if aug != 'none' else ''}"
            f"{distillation_of(c)}")


def distillation_of(c: dict) -> str:
    if not c.get("distill_from"):
        return ""
    teachers = " + ".join(Path(t).name for t in c["distill_from"])
    return (f", distilled from {teachers} (relational, weight {c['distill_weight']:g}, "
            f"temperature {c['distill_temperature']:g})")


def shipped(assets: Path) -> list[dict]:
    """The metrics.json of every checkpoint folder in `assets`, MNIST first, then FashionMNIST, CIFAR-10, others."""
    paths = sorted(assets.glob("*/metrics.json"), key=lambda p: (ORDER.index(p.parent.name.split("-")[0])
                                                                 if p.parent.name.split("-")[0] in ORDER else 9,
                                                                 p.parent.name))
    return [json.loads(path.read_text()) for path in paths]


def summary_table(assets: Path = ROOT / "assets") -> str:
    """The README's table: what each checkpoint is, how well it searches, and how it searches."""
    rows = ["| dataset | model | params (Keras count) | weights | P@1 | R-precision | MAP@R | search views | "
            "whitened | epochs per stage |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m in shipped(assets):
        f = m["final"]
        epochs = " + ".join(str(run["epochs_done"]) for run in training_lineage(m))
        rows.append(
            f"| {m['dataset']} | {m['model']} | {m['keras_param_count']:,} | {m['weights_bytes'] / 1024:.1f} KiB | "
            f"{f['precision_at_1']:.4f} | {f['r_precision']:.4f} | {f['mean_average_precision_at_r']:.4f} | "
            f"{searched_views(m) or 'one view'} | {'yes' if m.get('whitening') else 'no'} | {epochs} |")
    return "\n".join(rows)


def table(assets: Path = ROOT / "assets") -> str:
    """The full table of docs/shipped-models.md: recipes, test losses and seconds per epoch of every stage."""
    rows = ["| dataset | model | params (Keras count) | weights | epochs | recipe | test accuracy | test CE | "
            "test MS | P@1 | R-precision | MAP@R | s/epoch (device), per stage |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in shipped(assets):
        f = m["final"]
        chain = training_lineage(m)
        epochs = " + ".join(str(run["epochs_done"]) for run in chain)
        recipe = "; then ".join(recipe_of(run["train_config"], run["dataset"]) for run in chain)
        if views := searched_views(m):
            one_view = (f"P@1 {num(f, 'precision_at_1_single_view')}, "
                        f"MAP@R {num(f, 'mean_average_precision_at_r_single_view')}")
            when = ", set after training" if "search_views" in m else ""
            recipe += f"; search: {views}{when} (one view: {one_view})"
        if w := m.get("whitening"):
            b = w["before"]
            recipe += (f"; whitened after training (power {w['power']:g}, shrinkage {w['shrinkage']:g}, chosen by "
                       f"MAP@R on held-out training images; before: P@1 {b['precision_at_1']:.4f}, "
                       f"MAP@R {b['mean_average_precision_at_r']:.4f})")
        timing = " + ".join(f"{run['seconds_per_epoch']:.1f} ({run['device']})" if run.get("device") else "?"
                            for run in chain)  # per stage: a chain may mix a GPU and a CPU
        rows.append(
            f"| {m['dataset']} | {m['model']} | {m['keras_param_count']:,} | {m['weights_bytes'] / 1024:.1f} KiB | "
            f"{epochs} | {recipe} | {num(f, 'accuracy')} | {num(f, 'test_ce_loss')} | "
            f"{f['test_ms_loss']:.4f} | {f['precision_at_1']:.4f} | "
            f"{f['r_precision']:.4f} | {f['mean_average_precision_at_r']:.4f} | "
            f"{timing} |")
    return "\n".join(rows)


def replaced(text: str, start: str, end: str, body: str) -> str:
    """`text` with `body` between its markers."""
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{body}\n{end}", text, flags=re.S)


def main() -> int:
    targets = ((README, START, END, summary_table()), (FULL, FULL_START, FULL_END, table()))
    texts = []
    for path, start, end, _ in targets:  # check both files before writing either
        text = path.read_text() if path.is_file() else ""
        if start not in text or end not in text:
            print(f"{path.relative_to(ROOT)} lacks the {start} ... {end} markers", file=sys.stderr)
            return 2
        texts.append(text)
    for (path, start, end, body), text in zip(targets, texts, strict=True):
        path.write_text(replaced(text, start, end, body))
        print(f"{path.relative_to(ROOT)}:\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
