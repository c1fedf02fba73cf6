"""The ONNX export (model/export.py): every shipped checkpoint's graph embeds as load_embedder does,
views and whitening included, on its gallery's test images, with onnxruntime alone."""

import json

import numpy as np
import onnx
import pytest
from conftest import ROOT

from model import export, load_embedder

SHIPPED = sorted(p.parent.name for p in (ROOT / "assets").glob("*/config.json"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("onnx")
    return {name: export.export_onnx(ROOT / "assets" / name, folder / f"{name}.onnx") for name in SHIPPED}


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_checkpoint_exports_with_parity(name, exported) -> None:
    checkpoint = ROOT / "assets" / name
    images = export.gallery_images(checkpoint)  # sampled from the test split: no choice was made on them
    result = export.parity(checkpoint, exported[name], images)
    assert result["images"] == 2000
    assert result["max_abs_diff"] <= 1e-4, result
    # the same ten neighbours in the same order, but where two of them are within 1e-6 of the
    # query (float rounding may swap those; FashionMNIST's gallery holds near-duplicates)
    assert result["same_top_10_up_to_ties"] == 1.0, result


def test_the_graph_has_one_uint8_input_with_a_dynamic_batch_and_one_float_output(exported) -> None:
    name = "cifar10-hybrid1"
    graph = onnx.load(str(exported[name])).graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == ("images", "embeddings")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert not {node.op_type for node in graph.node} & {"Im2Col", "Col2Im"}
    embedder = load_embedder(ROOT / "assets" / name)
    images = export.gallery_images(ROOT / "assets" / name)
    for n in (1, 3):
        got = export.onnx_embed(exported[name], images[:n])
        assert got.shape == (n, embedder.model.embedding_dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_the_cli_writes_the_file_and_prints_its_parity(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert export.main([str(ROOT / "assets" / "mnist-cnn3a"), "--onnx", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"wrote {out}") and out.is_file()
    assert json.loads(lines[1])["max_abs_diff"] <= 1e-4
    assert export.main([str(tmp_path / "nothing"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "config.json is missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
