"""The ONNX Runtime backend on a tiny random BERT: same numbers as torch, early exit, cache, clear refusals."""

import shutil

import numpy as np
import pytest
import torch
from conftest import SENTENCES
from typer.testing import CliRunner

import elasticir.encoders.onnx as onnx_backend
from elasticir.cli import app
from elasticir.encoders import ElasticEncoder
from elasticir.errors import ElasticIRError
from elasticir.runner import RunConfig, run

onnx = pytest.importorskip("onnx")  # the `onnx` extra
pytest.importorskip("onnxruntime")
TEXTS = [text for pair in SENTENCES for text in pair[:2]]


@pytest.fixture
def onnx_encoder(tiny_model_dir, tmp_path):
    return ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=tmp_path / "onnx")


def test_graph_layers_equal_torch_and_stop_at_the_deepest(tiny_encoder, onnx_encoder):
    ours = onnx_encoder.encode(TEXTS, [1, 3], batch_size=5, show_progress=False)
    reference = tiny_encoder.encode(TEXTS, [1, 3], batch_size=5, show_progress=False)
    for layer in (1, 3):
        np.testing.assert_allclose(ours[layer], reference[layer], atol=1e-5, rtol=0)
    assert np.abs(ours[3] - ours[1]).max() > 1e-3  # two different layers, not one output twice
    graph = onnx.load(str(onnx_encoder._onnx.path([1, 3]))).graph
    assert [output.name for output in graph.output] == ["layer_1", "layer_3"]
    attention = [node for node in graph.node if node.op_type == "Attention"]
    assert len(attention) == 3  # fused by the BERT optimizer, and block 4 of 4 is not in the graph


def test_cls_pooling_equals_torch(tiny_model_dir, tmp_path):
    torch_cls = ElasticEncoder(str(tiny_model_dir), device="cpu", pooling="cls")
    onnx_cls = ElasticEncoder(str(tiny_model_dir), pooling="cls", backend="onnx", onnx_cache=tmp_path)
    np.testing.assert_allclose(onnx_cls.encode(TEXTS[:4], [2], show_progress=False)[2],
                               torch_cls.encode(TEXTS[:4], [2], show_progress=False)[2], atol=1e-5, rtol=0)


def test_cache_is_reused_and_invalidated(tiny_model_dir, tmp_path, monkeypatch):
    exports = []
    real_export = onnx_backend.export
    monkeypatch.setattr(onnx_backend, "export", lambda *a, **k: exports.append(a[3]) or real_export(*a, **k))
    cache = tmp_path / "onnx"
    first = ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=cache)
    first.encode(TEXTS[:3], [2, 4], show_progress=False)
    assert len(exports) == 1 and exports[0].is_file()
    again = ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=cache)
    again.encode(TEXTS[:3], [4, 2], show_progress=False)
    assert len(exports) == 1  # same weights, layers, pooling and length: the file on disk is reused
    again.encode(TEXTS[:3], [2], show_progress=False)
    assert len(exports) == 2 and exports[1] != exports[0]  # another layer set is another graph

    changed = tmp_path / "changed-weights"
    shutil.copytree(tiny_model_dir, changed)
    model = first.model.__class__.from_pretrained(changed)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(2)
    model.save_pretrained(changed)
    other = ElasticEncoder(str(changed), backend="onnx", onnx_cache=cache)
    assert other.info.weights_sha256 != first.info.weights_sha256
    other.encode(TEXTS[:3], [2, 4], show_progress=False)
    assert len(exports) == 3 and exports[2] not in exports[:2]  # changed weights: re-exported
    assert not list(cache.rglob("*.tmp"))  # written via a temporary file and a rename


def test_run_with_the_onnx_backend_gives_the_torch_metrics(tiny_encoder, onnx_encoder, tiny_data_root, tmp_path):
    def metrics(encoder, out):
        config = RunConfig(model="unused", sts=["toy-a"], retrieval=[], latency_texts=0, layers=[2, 4],
                           dims=[8, 32], data_root=str(tiny_data_root), out=str(out), show_progress=False)
        return run(config, encoder).cells.set_index(["layer", "dim"])["spearman"]

    np.testing.assert_allclose(metrics(onnx_encoder, tmp_path / "a"), metrics(tiny_encoder, tmp_path / "b"),
                               atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def tiny_distilbert_dir(tmp_path_factory, tiny_model_dir):
    from transformers import DistilBertConfig, DistilBertModel

    folder = tmp_path_factory.mktemp("tiny-distilbert")
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    DistilBertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_model_dir / name).is_file():
            shutil.copy(tiny_model_dir / name, folder / name)
    return folder


def test_unsupported_model_or_device_is_a_clear_error(tiny_distilbert_dir, tiny_model_dir, tiny_data_root, tmp_path):
    with pytest.raises(ElasticIRError, match="exports for bert models; this model is 'distilbert': use --backend torch"):
        ElasticEncoder(str(tiny_distilbert_dir), backend="onnx")
    # int8 chooses ONNX Runtime without --backend: the error names the flag the user gave
    with pytest.raises(ElasticIRError, match=r"^--encoder-precisions int8 runs through ONNX Runtime.*'distilbert': "
                                             "leave int8 out of --encoder-precisions"):
        ElasticEncoder(str(tiny_distilbert_dir), precision="int8")
    with pytest.raises(ElasticIRError, match="float32 only"):
        ElasticEncoder(str(tiny_model_dir), backend="onnx", dtype=torch.bfloat16)
    runner = CliRunner()
    args = ["eval", "sts", "--model", str(tiny_distilbert_dir), "--datasets", "toy-a", "--data-root",
            str(tiny_data_root), "--out", str(tmp_path), "--backend", "onnx"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "error:" in result.output and "use --backend torch" in result.output
    assert "Traceback" not in result.output
    unknown = runner.invoke(app, args[:-1] + ["tensorrt"])
    assert unknown.exit_code == 2 and "backend" in unknown.output and "Traceback" not in unknown.output
