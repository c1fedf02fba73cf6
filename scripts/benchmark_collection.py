"""How fast collections are built and searched, against floors measured in the same run.

    python scripts/benchmark_collection.py [--photos 120] [--small 3000] [--sizes 10000 100000 1000000]
                                           [--checkpoint assets/cifar10-hybrid1] [--views fast|checkpoint|one]
                                           [--skip SECTION ...] [--out results/bench_collection.json]

The builds use the collection's default search views (`--views fast`: for the CIFAR-10
checkpoints, mirror-averaged); a skipped section keeps its figures from the existing --out.

- photos: multi-megapixel JPEGs (generated, 4000x3000): `embed_img_s` is the whole build
  (decode, embed, write) in images/s; `decode_floor_img_s` the same files decoded and resized
  the fastest way Pillow allows (draft mode, on the same threads) without the model; their ratio
  `embed_over_decode_floor` says whether the model is the bottleneck (target >= 0.8). A build
  of the first half of the files separates the build's fixed cost (`fixed_s`: loading the
  checkpoint and Pillow's plugins, the index, the record) from each further image's
  (`marginal_img_s`, and its ratio to the floor: what a large collection approaches).
- small_images: the same three for small PNGs, with what the checkpoint's search views cost
  (`views_img_s`: the model alone on prepared images, with its views and with one view).
- sizes: synthetic unit embeddings (256-d, clustered as class embeddings are) at each size:
  the index the collection would choose, its build time, recall@10 against exact search on
  1,000 queries, single-query search p50/p95 (k=10) and its size; `flat_p50_ms` is exact search
  at that size, for the choice of EXACT_UP_TO.
- duplicates: 2,000 generated pictures and 100 planted copies (resized to 70% and re-encoded
  at JPEG quality 60, or brightened by 10%): the pairs reported at the default threshold, and
  those the embedding alone would report at 0.98.
- peak_rss_mb: the peak memory of the photo build's process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import faiss  # noqa: E402
from sample_folders import DRAW, KINDS  # noqa: E402

from model import collection as col  # noqa: E402
from model.search_views import describe_views  # noqa: E402
from model.training import cpu_model  # noqa: E402


def make_photos(folder: Path, n: int) -> None:
    def one(i: int) -> None:
        r = np.random.default_rng(i)
        kind = list(KINDS)[i % 3]
        small = DRAW[kind](r, KINDS[kind][i % 4], 400, 300).resize((4000, 3000), Image.BICUBIC)
        noisy = np.asarray(small, np.int16) + r.integers(-6, 7, (3000, 4000, 3), dtype=np.int16)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"photo-{i:04d}.jpg", quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(n)))


def make_small(folder: Path, n: int) -> None:
    for i in range(n):
        r = np.random.default_rng(10_000 + i)
        kind = list(KINDS)[i % 3]
        cls = KINDS[kind][(i // 3) % 4]
        (folder / kind / cls).mkdir(parents=True, exist_ok=True)
        side = int(r.integers(32, 65))
        DRAW[kind](r, cls, side, side).save(folder / kind / cls / f"{i:05d}.png")


def decode_floor(folder: Path, side: int) -> float:
    """Images/s of decoding every image and resizing it to `side`, draft mode, on the build's threads."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def one(p: Path) -> None:
        with Image.open(p) as im:
            im.draft("RGB", (side, side))
            im.convert("RGB").resize((side, side), Image.BILINEAR, reducing_gap=3.0)

    start = time.perf_counter()
    with ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:
        list(pool.map(one, files))
    return len(files) / (time.perf_counter() - start)


def timed_build(folder: Path, out: Path, checkpoint: str, views: str = "fast") -> tuple[float, int, float]:
    """(seconds of a whole build in a fresh process, images, its peak RSS in MB)."""
    script = ("import resource, sys, time; from model import collection as c; t = time.perf_counter(); "
              f"r = c.build({str(folder)!r}, {checkpoint!r}, {str(out)!r}, log=lambda m: None, progress=False, "
              f"views={views!r}); "
              "print(r['images'], time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    line = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    n, seconds, rss_kb = line.stdout.split()
    return float(seconds), int(n), int(rss_kb) / 1024


def half_of(folder: Path) -> Path:
    """The first half of `folder`'s files, hard-linked into a sibling folder (no copies)."""
    half = folder.with_name(folder.name + "-half")
    half.mkdir(exist_ok=True)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for p in files[: len(files) // 2]:
        if not (half / p.name).exists():
            os.link(p, half / p.name)
    return half


def views_speed(checkpoint: str, n: int = 2048) -> dict:
    from model.embedder import load_embedder

    embedder = load_embedder(checkpoint)
    h, w = embedder.image_size
    x = np.random.default_rng(0).integers(0, 256, (n, h, w, embedder.channels), dtype=np.uint8)
    out = {}
    fast = col.resolve_views(Path(checkpoint), "fast")
    for name, flip, shift in (("with_views", embedder.flip_average, embedder.shift_average),
                              ("fast_views", fast["flip"], fast["shift"]), ("one_view", False, 0)):
        embedder.flip_average, embedder.shift_average = flip, shift
        embedder.embed(x[:256])
        start = time.perf_counter()
        embedder.embed(x)
        out[name] = round(n / (time.perf_counter() - start), 1)
    out["views"] = load_embedder(checkpoint).views
    out["fast"] = describe_views(fast["flip"], fast["shift"])
    return out


def clustered(n: int, dim: int = 256, clusters: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        out[i:i + m] = centres[rng.integers(0, clusters, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def size_figures(n: int) -> dict:
    both = clustered(n + 1000)  # queries from the same clusters as the collection, not in it
    x, queries = both[:n], both[n:]
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    truth = flat.search(queries, 10)[1]
    index, about = col.choose_index(n, x.shape[1])
    start = time.perf_counter()
    if not about["exact"]:
        sample = x[np.random.default_rng(0).choice(n, min(n, 40 * about["nlist"]), replace=False)]
        index.train(sample)
    index.add(x)
    build_s = time.perf_counter() - start
    if not about["exact"]:
        nprobe = 4
        while True:  # as the build tunes it: on the collection's own images (here, 1,000 of them)
            index.nprobe = nprobe
            own = x[:1000]
            if col.recall_at_10(index.search(own, 10)[1], flat.search(own, 10)[1]) >= col.TARGET_RECALL \
                    or nprobe >= about["nlist"]:
                break
            nprobe *= 2
        about["nprobe"] = nprobe
    recall = col.recall_at_10(index.search(queries, 10)[1], truth)

    def latencies(ix) -> list[float]:
        times = []
        for q in queries[:300]:
            t = time.perf_counter()
            col.search_one(ix, q, 10)  # as Collection.search_vector runs it
            times.append((time.perf_counter() - t) * 1000)
        return times

    lat, flat_lat = latencies(index), latencies(flat)
    with tempfile.NamedTemporaryFile() as f:
        faiss.write_index(index, f.name)
        mb = os.path.getsize(f.name) / 2**20
    return {"index": about, "build_s": round(build_s, 2), "recall_at_10": round(recall, 4),
            "search_p50_ms": round(float(np.percentile(lat, 50)), 3),
            "search_p95_ms": round(float(np.percentile(lat, 95)), 3), "index_mb": round(mb, 1),
            "flat_p50_ms": round(float(np.percentile(flat_lat, 50)), 3)}


def duplicate_figures(tmp: Path, checkpoint: str) -> dict:
    folder = tmp / "dups"
    rng = np.random.default_rng(3)
    for i in range(2000):
        kind = list(KINDS)[i % 3]
        cls = KINDS[kind][(i // 3) % 4]
        w = int(rng.integers(80, 240))
        (folder / kind).mkdir(parents=True, exist_ok=True)
        DRAW[kind](np.random.default_rng(50_000 + i), cls, w, int(w * 0.75)).save(folder / kind / f"{i:05d}.png")
    planted = set()
    (folder / "copies").mkdir()
    for j, i in enumerate(rng.choice(2000, 100, replace=False)):
        kind = list(KINDS)[i % 3]
        src = folder / kind / f"{i:05d}.png"
        with Image.open(src) as im:
            copy = (im.resize((int(im.width * 0.7), int(im.height * 0.7)), Image.BILINEAR) if j % 2 == 0
                    else ImageEnhance.Brightness(im.convert("RGB")).enhance(1.1))
            copy.convert("RGB").save(folder / "copies" / f"copy-{j}.jpg", quality=60)
        planted.add(tuple(sorted((f"{kind}/{i:05d}.png", f"copies/copy-{j}.jpg"))))
    out = tmp / "dups-index"
    col.build(folder, checkpoint, out, log=lambda m: None, progress=False)
    c = col.open_collection(out)

    def score(pairs: list) -> dict:
        got = {tuple(sorted(p[:2])) for p in pairs}
        return {"reported": len(got), "planted_found": len(got & planted), "other_pairs": len(got - planted)}

    return {"images": 2000, "planted": 100,
            "default": {"threshold": col.DUPLICATE_SIMILARITY, "hamming": col.DUPLICATE_HAMMING,
                        **score(list(c.duplicates()))},
            "grid": {f"threshold {t}, hamming {h}": score(list(c.duplicates(t, h)))
                     for t in (0.85, 0.9, 0.95) for h in (6, 8, 12, 16)},
            "embedding_alone_0.98": score(list(c.duplicates(0.98, hamming=64))),
            "embedding_alone_0.95": score(list(c.duplicates(0.95, hamming=64)))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=120)
    p.add_argument("--small", type=int, default=3000)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--checkpoint", default=str(ROOT / "assets" / "cifar10-hybrid1"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench_collection.json"))
    p.add_argument("--skip", nargs="*", default=[], choices=["photos", "small", "sizes", "duplicates"],
                   help="sections not measured; their figures are kept from the existing --out")
    p.add_argument("--views", default="fast", choices=col.VIEWS, help="the builds' --views (default fast)")
    p.add_argument("--repeats", type=int, default=1, help="floor and build measured this many times in turn: "
                   "the figures are medians, each run listed")
    args = p.parse_args(argv)
    # sections skipped keep their figures from the last record (each section says what measured it)
    record: dict = json.loads(Path(args.out).read_text()) if args.skip and Path(args.out).is_file() else {}
    command = "python scripts/benchmark_collection.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record.update({"command": command, "cpu": cpu_model(), "cores": os.cpu_count(), "checkpoint": args.checkpoint,
                   "exact_up_to": col.EXACT_UP_TO, "views": args.views})
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp:
        tmp = Path(tmp)
        for name, make, count, side in (("photos", make_photos, args.photos, col.THUMB),
                                        ("small_images", make_small, args.small, col.THUMB)):
            if name.split("_")[0] in args.skip:
                continue
            folder = tmp / name
            folder.mkdir()
            make(folder, count)
            half = half_of(folder)
            runs = []  # (floor, build, images, rss, marginal), each build afresh, in turn
            for r in range(args.repeats):
                floor = decode_floor(folder, side)
                seconds, n, rss = timed_build(folder, tmp / f"{name}-index-{r}", args.checkpoint, args.views)
                half_seconds, half_n, _ = timed_build(half, tmp / f"{name}-half-index-{r}", args.checkpoint, args.views)
                marginal = (n - half_n) / max(seconds - half_seconds, 1e-9)
                runs.append((floor, n / seconds, n, rss, marginal, seconds - n / marginal))
            floors, embeds, marginals = ([r[i] for r in runs] for i in (0, 1, 4))
            floor, embed, marginal = (float(np.median(v)) for v in (floors, embeds, marginals))
            n, rss = runs[0][2], max(r[3] for r in runs)
            record[name] = {"images": n, "embed_img_s": round(embed, 1), "decode_floor_img_s": round(floor, 1),
                            "embed_over_decode_floor": round(embed / floor, 3), "peak_rss_mb": round(rss, 1),
                            # the cost of each further image, from a build of the first half of the files
                            # and of all of them: what a large collection's build approaches
                            "marginal_img_s": round(marginal, 1),
                            "marginal_over_decode_floor": round(marginal / floor, 3),
                            "fixed_s": round(float(np.median([r[5] for r in runs])), 2),
                            "views": args.views, "repeats": args.repeats,
                            "embed_img_s_runs": [round(e, 1) for e in embeds],
                            "decode_floor_img_s_runs": [round(f, 1) for f in floors],
                            "ratio_runs": [round(r[1] / r[0], 3) for r in runs],
                            "marginal_ratio_runs": [round(r[4] / r[0], 3) for r in runs], "measured_by": command}
            print(name, record[name], flush=True)
        if "small" not in args.skip:
            record["small_images"]["views_img_s"] = views_speed(args.checkpoint)
            print(record["small_images"]["views_img_s"], flush=True)
        if "sizes" not in args.skip:
            record["sizes"] = {}
            for n in args.sizes:
                record["sizes"][str(n)] = size_figures(n)
                print(n, record["sizes"][str(n)], flush=True)
        if "duplicates" not in args.skip:
            record["duplicates"] = duplicate_figures(tmp, args.checkpoint)
            print(record["duplicates"], flush=True)
    record["peak_rss_mb_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
