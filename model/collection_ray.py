"""`python -m model.collection build FOLDER --checkpoint CKPT --out DIR --ray [ADDRESS]`: the
decoding and embedding of a build as a Ray Data pipeline, writing the same parts as a local build.

The files to embed become a dataset (`ray.data.from_items`); `map_batches` runs `EmbedBatch`
on a pool of actors, each loading the embedder once (`fn_constructor_args`) and decoding and
embedding a batch with collection.decode_file and Embedder.embed, the code of a local build;
the driver streams the results (`iter_batches`) into parts of PART_ROWS, so what it holds stays
bounded and a build stopped at any moment resumes as a local one does. Without ADDRESS,
`ray.init()` starts a local Ray instance (as CI runs it); with one (`ray://HOST:10001` or
`auto`), the actors run on that cluster, whose workers must see FOLDER and CKPT at the same
paths (a shared file system): docs/collections.md says how this scales out.

Ray is an optional extra: `pip install "ray[data]"`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .collection import BATCH, PART_ROWS, CollectionError, Decoded, _part_numbers, decode_file, write_part
from .image_folder import UNREADABLE


class EmbedBatch:
    """A Ray Data actor: the embedder loaded once, then batches of files decoded and embedded."""

    def __init__(self, folder: str, checkpoint: str, views: dict | None = None) -> None:
        import torch

        from .collection import _embedder_and_style

        torch.set_num_threads(1)  # one core an actor: Ray schedules the actors on the cores
        self.folder = Path(folder)
        self.embedder, self.style = _embedder_and_style(Path(checkpoint), views)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded, errors = [], []
        for p in batch["path"].tolist():
            try:
                decoded.append(decode_file(self.folder / p, self.embedder.image_size, self.embedder.channels,
                                           self.style))
                errors.append("")
            except UNREADABLE as e:
                decoded.append(None)
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}")
        good = [d for d in decoded if isinstance(d, Decoded)]
        vectors = self.embedder.embed(np.stack([d.model_input for d in good])) if good else None
        dim = self.embedder.model.embedding_dim
        embedding = np.zeros((len(decoded), dim), np.float32)
        j = 0
        for i, d in enumerate(decoded):
            if d is not None:
                embedding[i] = vectors[j]
                j += 1
        return {"path": batch["path"], "size": batch["size"], "mtime_ns": batch["mtime_ns"], "embedding": embedding,
                "dhash": np.array([d.dhash if d else 0 for d in decoded], np.uint64),
                "thumbnail": np.array([d.thumbnail if d else b"" for d in decoded], dtype=object),
                "error": np.array(errors)}


def embed_with_ray(todo: list[tuple[str, int, int]], folder: Path, checkpoint: Path, out: Path,
                   address: str | None, skipped: dict[str, str], log=print, views: dict | None = None) -> None:
    """Embed `todo` (path, size, mtime_ns) into new parts of `out` with a Ray Data pipeline."""
    try:
        import ray
    except ImportError:
        raise CollectionError('--ray needs Ray Data: pip install "ray[data]"') from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        log(f"Ray: {len(todo):,} images on {cpus} CPU(s) of {'a local instance' if not address else address}")
        items = [{"path": p, "size": s, "mtime_ns": m} for p, s, m in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // BATCH, 4 * cpus)))
        ds = ds.map_batches(EmbedBatch, fn_constructor_args=(str(folder), str(checkpoint), views), batch_size=BATCH,
                            batch_format="numpy", concurrency=max(1, cpus - 1), num_cpus=1)
        number = (_part_numbers(out) or [-1])[-1] + 1
        rows: list = []
        for batch in ds.iter_batches(batch_size=BATCH, batch_format="numpy"):
            for i, p in enumerate(batch["path"].tolist()):
                if batch["error"][i]:
                    skipped[p] = str(batch["error"][i])
                    continue
                rows.append((p, int(batch["size"][i]), int(batch["mtime_ns"][i]), batch["embedding"][i],
                             int(batch["dhash"][i]), bytes(batch["thumbnail"][i])))
            while len(rows) >= PART_ROWS:
                write_part(out, number, rows[:PART_ROWS])
                rows, number = rows[PART_ROWS:], number + 1
        if rows:
            write_part(out, number, rows)
    finally:
        if started:
            ray.shutdown()
