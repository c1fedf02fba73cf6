"""What a checkpoint's metrics.json says, read once for the README tables, the demo's About tab
and the model card.

train.py writes four blocks: `recipe` (the resolved recipe), `training` (per-stage epochs,
timings, device, size), `validation` (every choice: the epoch each stage kept, the search
views, the whitening, with each candidate's figures) and `test` (measured once, at the end).
Checkpoints trained before recipes existed carry one flat record whose stages nest under
`init_from` and whose search views and whitening were set after training, partly chosen on
the test set: they read as `legacy`, and every table says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .search_views import describe_views

RETRIEVAL = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


@dataclass
class StageSummary:
    loss: str
    epochs_done: int
    chosen_epoch: int | None  # kept on validation; None when the last epoch was kept
    seconds_per_epoch: float | None
    device: str  # and the precision, where the run recorded it: "cpu (1 threads), bf16"
    settings: dict[str, Any]  # the stage's recipe fields (lr, schedule, batch_size, augment...)
    augment_candidates: dict[str, float] | None = None  # mode -> validation figure, where augment was chosen


@dataclass
class CheckpointSummary:
    dataset: str
    model: str
    params: int
    weights_bytes: int
    test: dict[str, float]  # precision_at_1, r_precision, mean_average_precision_at_r, ms_loss
    stages: list[StageSummary]
    views: str  # "one view", "mirror-averaged", ...
    whitening: dict[str, float] | None  # {"power", "shrinkage"} or None
    legacy: bool  # trained before recipes: some choices were made on the test set
    validation_images: int
    # the checkpoint the first stage started from (recipe init_from) where its stages are not in
    # `stages` (its record not at hand, or of another dataset or model); "" otherwise
    started_from: str = ""

    @property
    def epochs(self) -> str:
        """E.g. "60 + 20"; "20, from <checkpoint>" where the stages it started from are not known here."""
        return " + ".join(str(s.epochs_done) for s in self.stages) + self._from

    @property
    def training(self) -> str:
        """E.g. "NORMSOFTMAX 60 + MS 20 epochs", with ", from <checkpoint>" as in `epochs`."""
        return " + ".join(f"{s.loss.upper()} {s.epochs_done}" for s in self.stages) + " epochs" + self._from

    @property
    def _from(self) -> str:
        return f", from {Path(self.started_from).name}" if self.started_from else ""

    @property
    def whitening_text(self) -> str:
        if not self.whitening:
            return "no"
        if self.whitening["power"] == 0:
            return "centred"
        return f"power {self.whitening['power']:g}, shrinkage {self.whitening['shrinkage']:g}"

    @property
    def chosen_on(self) -> str:
        return ("some on the test set (trained before recipes)" if self.legacy
                else f"validation split ({self.validation_images:,} training images held out)")


def summarize(metrics: dict[str, Any], root: Path | None = None) -> CheckpointSummary:
    """Either format of metrics.json -> CheckpointSummary; KeyError/TypeError on a file that is neither.

    A run that fine-tuned another checkpoint of the same dataset and model (recipe init_from, a
    folder relative to `root`, the repository) is summarized as the whole chain: that
    checkpoint's stages, then its own. Without `root`, or where that record is not there (a
    Space holds no results/), it names the checkpoint it started from instead."""
    if "test" in metrics and "recipe" in metrics:
        summary = _summarize_recipe_run(metrics)
        summary.started_from = str(metrics["recipe"].get("init_from") or "")
        record = root / summary.started_from / "metrics.json" if root is not None and summary.started_from else None
        if record is not None and record.is_file():
            parent = summarize(json.loads(record.read_text()), root)
            if (parent.dataset, parent.model) == (summary.dataset, summary.model) and not parent.legacy:
                summary.stages, summary.started_from = parent.stages + summary.stages, ""
        return summary
    return _summarize_legacy(metrics)


def _summarize_recipe_run(metrics: dict[str, Any]) -> CheckpointSummary:
    r, t, v = metrics["recipe"], metrics["training"], metrics["validation"]
    val = {s["stage"]: s for s in v["stages"]}
    stages = [StageSummary(s["loss"], s["epochs_done"],
                           val[s["stage"]]["chosen_epoch"] if r["stages"][s["stage"] - 1]["choose_epoch"] else None,
                           s["seconds_per_epoch"],
                           f"{t['device']}, {s['precision']}" if s.get("precision") else t["device"],
                           {**r["stages"][s["stage"] - 1],
                            **({"augment": val[s["stage"]]["augment"]} if "augment" in val[s["stage"]] else {})},
                           val[s["stage"]].get("augment_candidates"))
              for s in t["stages"]]
    view = v["search_views"]["chosen"]
    w = (v.get("whitening") or {}).get("chosen", {}).get("whitening")
    test = {k: float(metrics["test"][k]) for k in (*RETRIEVAL, "ms_loss")}
    return CheckpointSummary(r["dataset"], r["model"], t["keras_param_count"], t["weights_bytes"], test, stages,
                             describe_views(view["flip"], view["shift"]), w, False, v["split"]["images"])


def _summarize_legacy(metrics: dict[str, Any]) -> CheckpointSummary:
    runs, run = [], metrics
    while run:
        runs.append(run)
        run = run.get("init_from")
    stages = [StageSummary(x["loss"], x["epochs_done"], None, x.get("seconds_per_epoch"), x.get("device") or "?",
                           x["train_config"]) for x in reversed(runs)]
    views = metrics.get("search_views") or metrics["train_config"]
    f = metrics["final"]
    test = {**{k: float(f[k]) for k in RETRIEVAL}, "ms_loss": float(f["test_ms_loss"])}
    w = metrics.get("whitening")
    return CheckpointSummary(metrics["dataset"], metrics["model"], metrics["keras_param_count"],
                             metrics["weights_bytes"], test, stages,
                             describe_views(bool(views.get("flip_average")), int(views.get("shift_average") or 0)),
                             {"power": w["power"], "shrinkage": w["shrinkage"]} if w else None, True, 0)


def stage_text(s: StageSummary) -> str:
    """E.g. "normalized softmax (temperature 0.05), Adam 0.001 cosine, batch 128, label smoothing 0.1, shift-flip"."""
    c = s.settings
    loss = {"ce": "CE", "ms": "MS"}.get(s.loss, s.loss)
    if s.loss == "normsoftmax":
        loss = f"normalized softmax (temperature {c.get('temperature', 0.05):g})"
    aug = c.get("augment")
    aug = aug if isinstance(aug, str) else "dataset default"
    if s.augment_candidates:
        aug += f" (chosen on validation over {', '.join(m for m in s.augment_candidates if m != aug)})"
    text = (f"{loss}, Adam {c['lr']:g} {c['schedule']}, batch {c['batch_size']}"
            f"{', label smoothing ' + format(c['label_smoothing'], 'g') if c.get('label_smoothing') else ''}"
            f"{', ' + aug if aug != 'none' else ''}")
    if c.get("distill_from"):
        text += f", distilled from {' + '.join(str(t).rstrip('/').split('/')[-1] for t in c['distill_from'])}"
    if s.chosen_epoch is not None:
        text += f", epoch {s.chosen_epoch} of {s.epochs_done} kept"
    return text
