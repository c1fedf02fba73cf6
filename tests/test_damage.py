"""Damage the demo must notice: a search bundle that does not belong to its checkpoint, one made
before checksums, a stale one in a read-only folder, a checkpoint that cannot load, a corrupt
metrics.json. None is ever searched or stops the app; each is rebuilt once or named in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import model.index
from model.checkpoint import CheckpointError
from model.demo import Demo, feature_maps
from model.index import INDEX_JSON, INDEX_NPZ, BundleError, bundle_cache_dir, load_index


@pytest.fixture
def copy(assets, tmp_path, monkeypatch) -> Path:
    """A writable copy of the test assets (two MNIST checkpoints and their gallery), with a bundle
    cache of its own."""
    monkeypatch.setenv("INVOLUTION_CACHE", str(tmp_path / "cache"))
    shutil.copytree(assets, tmp_path / "assets")
    return tmp_path / "assets"


@pytest.mark.slow
def test_a_foreign_index_is_named_never_searched_and_rebuilt_once(copy) -> None:
    ckpt = copy / "mnist-hybrid1"
    shutil.copyfile(copy / "mnist-cnn3a" / INDEX_NPZ, ckpt / INDEX_NPZ)  # another model's embeddings
    with pytest.raises(BundleError, match="is damaged or foreign"):
        load_index(ckpt, rebuild=False)
    messages: list[str] = []
    index = load_index(ckpt, log=messages.append)
    assert sum("rebuilding it once" in m for m in messages) == 1
    assert index.search(index.images[9], 1)[1][0].index == 9
    load_index(ckpt, rebuild=False)  # now intact


def test_a_bundle_without_checksum_is_rebuilt(copy) -> None:
    ckpt = copy / "mnist-hybrid1"
    meta = json.loads((ckpt / INDEX_JSON).read_text())
    del meta["index_sha256"]
    (ckpt / INDEX_JSON).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="predates checksums"):
        load_index(ckpt, rebuild=False)
    (ckpt / INDEX_JSON).write_text("{not json")
    with pytest.raises(BundleError, match="is damaged"):
        load_index(ckpt, rebuild=False)


def test_a_read_only_checkpoint_rebuilds_into_the_cache_once(copy, monkeypatch) -> None:
    ckpt = copy / "mnist-hybrid1"
    meta = json.loads((ckpt / INDEX_JSON).read_text())
    (ckpt / INDEX_JSON).write_text(json.dumps({**meta, "gallery_sha256": "0" * 64}))  # stale
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    monkeypatch.setattr(model.index, "_writable", lambda folder: folder != ckpt)  # as on a read-only disk
    messages: list[str] = []
    load_index(ckpt, log=messages.append)
    load_index(ckpt, log=messages.append)  # the cached rebuild serves from now on
    assert sum("rebuilding it once" in m for m in messages) == 1
    assert str(bundle_cache_dir(ckpt)) in messages[0]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before  # nothing written there


def test_a_broken_checkpoint_is_unavailable_and_the_others_serve(copy, monkeypatch) -> None:
    (copy / "mnist-cnn3a" / "model.safetensors").write_bytes(b"not safetensors")
    demo = Demo(assets=copy)
    assert "is not a readable safetensors file" in demo.problem("MNIST", "CNN-3a")
    with pytest.raises(CheckpointError, match="CNN-3a on MNIST is unavailable: .*not a readable safetensors") as e:
        demo.index("MNIST", "CNN-3a")
    assert "\n" not in str(e.value)
    index = demo.index("MNIST", "Hybrid-1")
    assert demo.search("MNIST", "Hybrid-1", index.images[2], 3).hits[0].index == 2
    # the feature maps compare with CNN-3a where it serves; without it they still show Hybrid-1's
    assert set(feature_maps(demo, "MNIST", index.images[2], (14, 14)).conv) == {"Hybrid-1"}

    import app

    (copy / "mnist-hybrid1" / "metrics.json").write_text("{corrupt")
    monkeypatch.setattr(app, "demo_state", demo)
    about = app.about_markdown()  # the app starts all the same
    assert "| MNIST | CNN-3a (paper) | unavailable: " in about
    assert "| MNIST | Hybrid-1 (paper) | figures unavailable: metrics.json cannot be read" in about


def test_a_bundle_that_cannot_be_rebuilt_is_not_retried_on_every_request(copy) -> None:
    (copy / "mnist-hybrid1" / INDEX_NPZ).unlink()
    calls = []

    def failing_build(checkpoint, **options):
        calls.append(checkpoint)
        raise OSError("read-only file system")

    demo = Demo(assets=copy, build=failing_build)
    for _ in range(3):
        with pytest.raises(BundleError, match="Hybrid-1 on MNIST is unavailable: .*read-only file system"):
            demo.index("MNIST", "Hybrid-1")
    assert len(calls) == 1
