"""The own-images promise, measured: `train.py --dataset FOLDER --out DIR` with nothing else, on
small labelled folders made by scripts/sample_folders.py (shapes, textures, colours; plain
<class>/ and train/ + test/ layouts), over several seeds (each seed makes new folders and
trains with that --seed). Prints one line per run and writes results/own_images.json: per run
the validation and test P@1, the check's verdict and the wall time of the whole command.

    python scripts/bench_own_images.py [--seeds 1 2 3 4 5] [--kinds shapes textures colours]
        [--layouts classes train-test] [--per-class 60] [--jobs 2] [--out results/own_images.json]
        [-- EXTRA TRAIN.PY ARGS]

Targets (issue 35): held-out P@1 >= 0.90 within 5 minutes on a 2-core CPU, in at least 4 of 5
seeds per folder. With --jobs 2 two runs share the cores (one thread each), which is slower
per run than one run on both: the times recorded are therefore upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sample_folders import make_folder  # noqa: E402

sys.path.insert(0, str(ROOT))
from model.training import cpu_model  # noqa: E402


def run_one(kind: str, layout: str, seed: int, per_class: int, work: Path, extra: list[str], threads: int) -> dict:
    folder = make_folder(work / f"{kind}-{layout}-s{seed}" / kind, kind, per_class, seed, layout)
    out = work / "runs" / f"{kind}-{layout}-s{seed}"
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", str(folder), "--out", str(out), "--seed", str(seed),
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    row = {"kind": kind, "layout": layout, "seed": seed, "per_class": per_class, "seconds": round(seconds, 1),
           "returncode": proc.returncode}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    stage = metrics["recipe"]["stages"][0]
    row.update({"val_precision_at_1": round(metrics["check"]["precision_at_1"], 4),
                "test_precision_at_1": round(metrics["test"]["precision_at_1"], 4),
                "test_images": metrics["test"]["images"], "check": metrics["check"]["verdict"],
                "loss": stage["loss"], "epochs": stage["epochs"], "batch_size": stage["batch_size"],
                "image_size": metrics["recipe"]["image_size"], "init_from": metrics["recipe"]["init_from"],
                "skipped_files": len(json.loads((out / "split.json").read_text())["skipped"])})
    return row


def markdown(record: dict) -> str:
    """The record as a table, written beside the JSON (the JSON is the source)."""
    extra = " ".join(record["train_args"]) or "(none: the defaults)"
    lines = ["# Own images: `train.py --dataset FOLDER --out DIR` on sample folders", "",
             f"Written by `{record['command'].strip()}` (extra train.py arguments: {extra}); "
             f"{record['cpu']}, {record['cores']} cores, {record['jobs']} runs at once, {record['threads_per_run']} "
             "thread(s) each, so each time is an upper bound for a run alone. Folders: "
             "`scripts/sample_folders.py`, 4 classes x 60 images (mixed sizes 40-200 px, PNG/JPEG/WebP/BMP, some "
             "transparent, some greyscale except among the colour scenes, a broken JPEG and a text file), a fifth "
             "of each class tested. "
             f"Target: {record['target']}.", "",
             "| folder / layout | runs at target | test P@1 per seed | seconds per seed |", "|---|---|---|---|"]
    for name, s in record["summary"].items():
        p1 = ", ".join("failed" if v is None else f"{v:.3f}" for v in s["test_precision_at_1"])
        seconds = ", ".join(f"{v:.0f}" for v in s["seconds"])
        lines.append(f"| {name} | {s['met_target']}/{s['runs']} | {p1} | {seconds} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--kinds", nargs="+", default=["shapes", "textures", "colours"])
    p.add_argument("--layouts", nargs="+", default=["classes", "train-test"])
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "own_images.json"))
    args = p.parse_args(argv)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    runs = [(k, layout, s) for k in args.kinds for layout in args.layouts for s in args.seeds]
    with tempfile.TemporaryDirectory(prefix="own-images-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, k, layout, s, args.per_class, Path(tmp), extra, threads)
                   for k, layout, s in runs]
        rows = []
        for f in futures:
            rows.append(row := f.result())
            print(json.dumps(row), flush=True)
    summary = {}
    for k in args.kinds:
        for layout in args.layouts:
            mine = [r for r in rows if r["kind"] == k and r["layout"] == layout]
            good = [r for r in mine if r.get("test_precision_at_1", 0) >= 0.90 and r["seconds"] <= 300]
            summary[f"{k}/{layout}"] = {"runs": len(mine), "met_target": len(good),
                                        "test_precision_at_1": [r.get("test_precision_at_1") for r in mine],
                                        "seconds": [r["seconds"] for r in mine]}
    record = {"command": "python scripts/bench_own_images.py " + " ".join(sys.argv[1:]),
              "train_args": extra, "cpu": cpu_model(), "cores": os.cpu_count(), "jobs": args.jobs,
              "threads_per_run": threads, "target": "test P@1 >= 0.90 within 300 s, in at least 4 of 5 seeds",
              "summary": summary, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(record))
    for name, s in summary.items():
        print(f"{name}: {s['met_target']}/{s['runs']} met the target; test P@1 {s['test_precision_at_1']}; "
              f"seconds {s['seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
