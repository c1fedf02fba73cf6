"""What a run's output folder holds, so that no run writes where it was not asked to.

train.py refuses an --out that holds a finished checkpoint, a run in progress or a torn save
unless --resume or --overwrite is given; a killed save's temporary files are removed when
the run resumes. The layout of a recipe run:

    OUT/work/               while it runs: recipe.toml, one folder per stage (training.py)
    OUT/model.safetensors, config.json, recipe.toml, curves.png, index.npz, index.json
    OUT/metrics.json        written last: its presence marks a finished checkpoint
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

WORK = "work"


class FolderError(Exception):
    """The output folder cannot be used as asked; the message says what to do."""


def find_resume_state(out: Path) -> Path | None:
    """The complete resume state of a stage folder: resume/, or resume.old/ if a save was torn
    between its two renames; None if there is neither."""
    for name in ("resume", "resume.old"):
        folder = out / name
        if (folder / "state.json").is_file() and (folder / "state.safetensors").is_file():
            return folder
    return None


def resume_state_dir(out: Path) -> Path:
    """find_resume_state, or one clear error when there is nothing to resume."""
    if folder := find_resume_state(out):
        return folder
    raise FolderError(f"{out} holds no resume state (resume/state.json); start a new run without --resume")


def leftover_files(out: Path) -> list[Path]:
    """What a save killed half-way leaves in `out` and its stage folders: atomic writes'
    temporary files (".NAME.XXXX") and resume folders being built (resume.tmp)."""
    if not out.is_dir():
        return []
    work = out / WORK
    folders = [out, *([work, *(p for p in work.iterdir() if p.is_dir())] if work.is_dir() else [])]
    return sorted(p for folder in folders for p in folder.iterdir()
                  if (p.name.startswith(".") and p.is_file()) or p.name == "resume.tmp")


def remove_leftovers(out: Path) -> list[str]:
    """Delete leftover_files; returns their names."""
    names = []
    for p in leftover_files(out):
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        names.append(str(p.relative_to(out)))
    return names


def describe_output_folder(out: Path) -> str | None:
    """None when `out` is free for a new run (missing or empty); else what it holds, in words."""
    if not out.is_dir() or not any(out.iterdir()):
        return None
    metrics = out / "metrics.json"
    if metrics.is_file():
        try:
            m = json.loads(metrics.read_text())
            test = m.get("test") or m.get("final") or {}
            p1 = f", test P@1 {test['precision_at_1']:.4f}" if "precision_at_1" in test else ""
            what = m.get("recipe", m)
            return f"a finished checkpoint ({what.get('model')} on {what.get('dataset')}{p1})"
        except (ValueError, KeyError, TypeError, AttributeError):
            return "a checkpoint whose metrics.json cannot be read"
    if (out / WORK).is_dir():
        return "a run in progress"
    if find_resume_state(out):
        return "a run in progress"
    if leftover_files(out) or (out / "resume.old").exists():
        return f"a torn save ({', '.join(p.name for p in leftover_files(out)) or 'resume.old'})"
    if (out / "config.json").exists() or (out / "model.safetensors").exists():
        return "a checkpoint"
    return f"other files ({', '.join(sorted(p.name for p in out.iterdir())[:3])} ...)"


def check_output_folder(out: Path, overwrite: bool) -> str | None:
    """Refuse, in one line, an `out` that holds anything unless `overwrite` (train.py asks this
    before it decodes anything, and again when it claims the folder); returns what it holds."""
    held = describe_output_folder(out)
    if held is not None and not overwrite:
        resume = "" if (out / "metrics.json").is_file() else "pass --resume to continue the run, "  # finished
        raise FolderError(f"{out} already holds {held}: {resume}pass --overwrite to replace it (the old folder is "
                          "kept until the new run completes), or choose another --out")
    return held


def claim_output_folder(out: Path, overwrite: bool) -> Path | None:
    """Make sure a new run writes nowhere it was not asked to: refuse an `out` that holds
    anything unless `overwrite`, which moves it to OUT.replaced, kept until the new run
    completes (release_replaced). Returns that folder, if any."""
    held = check_output_folder(out, overwrite)
    if held is None:
        return None
    replaced = out.with_name(out.name + ".replaced")
    if replaced.exists():
        raise FolderError(f"{replaced} is left from an earlier --overwrite that did not complete: "
                          "restore it or delete it first")
    out.rename(replaced)
    print(f"--overwrite: {out} ({held}) moved to {replaced}, deleted when this run completes")
    return replaced


def release_replaced(out: Path) -> Path | None:
    """Once the run that replaced it is complete, delete OUT.replaced; returns it if it was there."""
    replaced = out.with_name(out.name + ".replaced")
    if replaced.is_dir():
        shutil.rmtree(replaced)
        return replaced
    return None
