"""Rewrite the tables of shipped models from assets/*/metrics.json (read by model/record.py):
the README's short one (summary_table) and the full one in docs/shipped-models.md (table:
stages, choices, timings).

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

from model.data import KNOWN  # noqa: E402
from model.networks import PAPER_MODELS, model_label  # noqa: E402
from model.record import CheckpointSummary, stage_text, summarize  # noqa: E402

ORDER = tuple(KNOWN)


def shipped(assets: Path) -> list[CheckpointSummary]:
    """Every checkpoint folder in `assets`, MNIST first, then FashionMNIST, CIFAR-10, others; in
    each, the paper's models before this project's."""
    def key(path: Path) -> tuple:
        dataset, _, model = path.parent.name.partition("-")
        return (ORDER.index(dataset) if dataset in ORDER else 9, model not in PAPER_MODELS, path.parent.name)

    paths = sorted(assets.glob("*/metrics.json"), key=key)
    return [summarize(json.loads(path.read_text()), ROOT) for path in paths]


def summary_table(assets: Path = ROOT / "assets") -> str:
    """The README's table: each checkpoint's test figures (measured once, from its metrics.json
    `test` block) and where its choices were made."""
    rows = ["| dataset | model | params (Keras count) | weights | test P@1 | R-precision | MAP@R | search views | "
            "whitened | epochs per stage | choices made on |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in shipped(assets):
        t = m.test
        rows.append(
            f"| {m.dataset} | {model_label(m.model)} | {m.params:,} | {m.weights_bytes / 1024:.1f} KiB | "
            f"{t['precision_at_1']:.4f} | {t['r_precision']:.4f} | {t['mean_average_precision_at_r']:.4f} | "
            f"{m.views} | {m.whitening_text} | {m.epochs} | {m.chosen_on} |")
    return "\n".join(rows)


def table(assets: Path = ROOT / "assets") -> str:
    """The full table of docs/shipped-models.md: recipes, test MS loss and seconds per epoch of every stage."""
    rows = ["| dataset | model | params (Keras count) | weights | epochs | stages | search views | whitening | "
            "choices made on | test MS | test P@1 | R-precision | MAP@R | s/epoch (device), per stage |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in shipped(assets):
        t = m.test
        stages = "; then ".join(stage_text(s) for s in m.stages)
        timing = " + ".join(f"{s.seconds_per_epoch:.1f} ({s.device})" if s.seconds_per_epoch else "?"
                            for s in m.stages)  # per stage: a legacy chain may mix a GPU and a CPU
        rows.append(
            f"| {m.dataset} | {model_label(m.model)} | {m.params:,} | {m.weights_bytes / 1024:.1f} KiB | {m.epochs} | "
            f"{stages} | "
            f"{m.views} | {m.whitening_text} | {m.chosen_on} | {t['ms_loss']:.4f} | {t['precision_at_1']:.4f} | "
            f"{t['r_precision']:.4f} | {t['mean_average_precision_at_r']:.4f} | {timing} |")
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
