"""Speed of the demo, measured (not asserted): start-up, in-process and HTTP search latency.

    python scripts/benchmark_demo.py [--assets assets] [--dataset MNIST]

1. start-up: `python app.py` in a subprocess; seconds from process start to the first
   answered /search, and that minus the time app.py spent importing (it prints it).
2. in-process: Demo.search on gallery images, p50 / p95 in ms.
3. HTTP: /search through gradio_client, sequential, p50 / p95.
4. HTTP under load: 16 concurrent clients, each sending its next query as soon as the last
   is answered, p50 / p95, throughput and the error count.

HTTP is measured twice: as gradio_client returns the gallery by default (downloading the k
images) and with download_files=False (the gallery as URLs). The clients run on this
machine beside the server, and they pass ssl_verify=False: gradio_client opens a new httpx
client for every upload and download, and with verification on each one loads the CA bundle
(40 ms of CPU here; 8 downloads + 1 upload per search). The URL is http://, so there is no
TLS to verify either way. Each client downloads into its own folder: gradio_client moves
files into a folder named by content hash, and threads sharing one folder race there.
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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), to tell where load goes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def load_test(make_client, clients: int, per_client: int, dataset: str,
              files: list[Path]) -> tuple[list[float], list[str], float]:
    """`clients` threads, each with its own gradio_client, each sending `per_client` searches
    back to back; returns latencies (ms), errors and the wall time."""
    from gradio_client import handle_file

    results: list[float] = []
    errors: list[str] = []

    def worker(c: int) -> None:
        cl = make_client(c)
        for i in range(per_client):
            t = time.perf_counter()
            try:
                cl.predict(dataset, handle_file(str(files[(c + i) % len(files)])), 8, api_name="/search")
                results.append((time.perf_counter() - t) * 1000)
            except Exception as e:  # counted, not hidden
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results, errors, time.perf_counter() - t


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

        # 3. and 4. HTTP, sequential and under load, with and without downloading the gallery
        downloads = Path(tempfile.mkdtemp())

        def make_client(name: str, download: bool) -> Client:
            folder = downloads / name if download else False
            return Client(url, verbose=False, ssl_verify=False, download_files=folder)

        for download in (True, False):
            mode = "gallery downloaded" if download else "download_files=False"
            client = make_client("sequential", download)
            ms = []
            for i in range(min(args.requests, 100)):
                t = time.perf_counter()
                client.predict(args.dataset, handle_file(str(files[i % len(files)])), 8, api_name="/search")
                ms.append((time.perf_counter() - t) * 1000)
            print(f"HTTP /search, 1 client, {mode}: {pct(ms)}")

            per_client = 10
            server0, clients0 = cpu_seconds(proc.pid), time.process_time()
            results, errors, wall = load_test(lambda c, d=download: make_client(f"client{c}", d), args.clients,
                                              per_client, args.dataset, files)
            print(f"HTTP /search, {args.clients} concurrent clients x {per_client}, {mode}: {pct(results)}, "
                  f"{len(errors)} errors, {len(results) / wall:.1f} req/s")
            server1 = cpu_seconds(proc.pid)
            if server0 is not None and server1 is not None:
                print(f"  CPU over those {wall:.1f} s: server {(server1 - server0) / wall:.2f} cores, "
                      f"the clients (this process) {(time.process_time() - clients0) / wall:.2f} cores, "
                      f"of {os.cpu_count()}")
            if errors:
                print("first error:", errors[0])
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
