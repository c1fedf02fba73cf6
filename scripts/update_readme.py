"""Rewrite the README's table of shipped models from assets/*/metrics.json.

    python scripts/update_readme.py

The figures are read, never typed: the table always shows what the shipped weights measured.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- metrics:start -->", "<!-- metrics:end -->"
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


def table(assets: Path = ROOT / "assets") -> str:
    rows = ["| dataset | model | params (Keras count) | weights | epochs | recipe | test accuracy | test CE | "
            "test MS | P@1 | R-precision | MAP@R | s/epoch (device), per stage |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    paths = sorted(assets.glob("*/metrics.json"), key=lambda p: (ORDER.index(p.parent.name.split("-")[0])
                                                                 if p.parent.name.split("-")[0] in ORDER else 9,
                                                                 p.parent.name))
    for path in paths:
        m = json.loads(path.read_text())
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


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md lacks the {START} ... {END} markers", file=sys.stderr)
        return 2
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), f"{START}\n{table()}\n{END}", text, flags=re.S)
    readme.write_text(new)
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
