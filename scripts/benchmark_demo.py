"""Speed of the demo, measured (not asserted): start-up, in-process and HTTP search latency.

    python scripts/benchmark_demo.py [--assets assets] [--dataset MNIST]

1. start-up: `python app.py` in a subprocess; seconds from process start to the first
   answered /search, and that minus the time app.py spent importing (it prints it).
2. in-process: Demo.search on gallery images, p50 / p95 in ms.
3. HTTP: /search through gradio_client, sequential, p50 / p95.
4. HTTP under load: 16 concurrent clients, p50 / p95 and the error count.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms (n={len(ms)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=str(ROOT / "assets"))
    p.add_argument("--dataset", default="MNIST")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args()

    import torch
    from gradio_client import Client, handle_file

    from model.demo import Demo

    torch.set_num_threads(1)
    demo = Demo(assets=Path(args.assets))
    index = demo.index(args.dataset, "Hybrid-1")
    queries = [index.images[i] for i in range(0, len(index), max(1, len(index) // args.requests))][: args.requests]
    tmp = Path(tempfile.mkdtemp())
    files = []
    for i, q in enumerate(queries[:32]):
        files.append(tmp / f"q{i}.png")
        Image.fromarray(np.squeeze(q)).save(files[-1])

    # 1. start-up, in a fresh process
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    if Path(args.assets).resolve() != (ROOT / "assets").resolve():
        env["INVOLUTION_ASSETS"] = str(Path(args.assets).resolve())
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                client = Client(url, verbose=False)
                client.predict(args.dataset, handle_file(str(files[0])), 8, api_name="/search")
                break
            except Exception:
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    print("the app did not start:\n" + "".join(lines), file=sys.stderr)
                    return 1
                time.sleep(0.1)
        first = time.perf_counter() - t0
        imports = next((float(x.split("took")[1].split("s")[0]) for x in lines if "[startup] imports" in x), None)
        print(f"start-up: first /search answered {first:.1f} s after process start"
              + (f"; imports {imports:.1f} s, so ready {first - imports:.1f} s after imports" if imports else ""))

        # 2. in-process
        for q in queries[:10]:
            demo.search(args.dataset, "Hybrid-1", q, 8)
        ms = []
        for q in queries:
            t = time.perf_counter()
            demo.search(args.dataset, "Hybrid-1", q, 8)
            ms.append((time.perf_counter() - t) * 1000)
        print(f"in-process Demo.search (k=8): {pct(ms)}")

        # 3. HTTP, sequential
        ms = []
        for i in range(min(args.requests, 100)):
            t = time.perf_counter()
            client.predict(args.dataset, handle_file(str(files[i % len(files)])), 8, api_name="/search")
            ms.append((time.perf_counter() - t) * 1000)
        print(f"HTTP /search, 1 client: {pct(ms)}")

        # 4. HTTP, concurrent clients
        results: list[float] = []
        errors: list[str] = []
        per_client = 10

        def worker(c: int) -> None:
            cl = Client(url, verbose=False)
            for i in range(per_client):
                t = time.perf_counter()
                try:
                    cl.predict(args.dataset, handle_file(str(files[(c + i) % len(files)])), 8, api_name="/search")
                    results.append((time.perf_counter() - t) * 1000)
                except Exception as e:  # counted, not hidden
                    errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(args.clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        print(f"HTTP /search, {args.clients} concurrent clients x {per_client}: {pct(results)}, "
              f"{len(errors)} errors, {len(results) / wall:.0f} req/s")
        if errors:
            print("first error:", errors[0])
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
