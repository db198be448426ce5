"""The token store: ids identical to tokenizing (real MiniLM tokenizer, real STS / SciFact texts), embeddings
identical through the encoder, one store per (tokenizer, texts), written once and refused for other inputs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from elasticir.encoders import batching, token_store, tokens
from elasticir.errors import ElasticIRError


def real_texts(root, count: int = 400) -> list[str]:
    sts = [json.loads(line) for line in gzip.decompress(
        (root / "sts" / "stsbenchmark" / "test.jsonl.gz").read_bytes()).decode().splitlines()[:count // 2]]
    texts = [row["sentence1"] for row in sts] + [row["sentence2"] for row in sts]
    corpus = (root / "beir" / "scifact" / "corpus.jsonl").read_text().splitlines()[:count // 2]
    docs = [json.loads(line) for line in corpus]
    return texts + [f"{doc.get('title', '')} {doc['text']}" for doc in docs] + ["", "é ü 漢字"]


def test_ids_identical_to_tokenizing_real_texts(tiny_encoder, shared_data, tmp_path):
    texts = real_texts(shared_data)
    standalone = tiny_encoder._standalone_tokenizer()
    store = token_store.open_or_build(tmp_path, standalone, texts)
    assert len(store) == len(texts)
    ids, lengths = store.arrays(np.arange(len(texts)))
    want_ids, want_lengths = tokens.encode_arrays(standalone, texts)
    assert ids.dtype == want_ids.dtype == np.int32
    np.testing.assert_array_equal(lengths, want_lengths)
    np.testing.assert_array_equal(ids, want_ids)
    assert max(lengths) == tiny_encoder.info.max_length  # long SciFact abstracts are truncated as the model does
    rows = np.array([len(texts) - 1, 3, 200, 0])  # any rows, any order: each text's own ids
    got = batching.TokenBatch(*store.arrays(rows))
    assert [list(x) for x in got] == [tiny_encoder._token_ids([texts[i]])[0] for i in rows]


def test_embeddings_identical_with_store_and_reused(tiny_encoder, shared_data, tmp_path):
    texts = real_texts(shared_data, 120)
    store = tiny_encoder.build_token_store(texts, tmp_path)
    plain = tiny_encoder.encode(texts, [1, 4], batch_size=16, show_progress=False)
    stored = tiny_encoder.encode(texts, [1, 4], batch_size=16, show_progress=False, token_store=store)
    for layer in (1, 4):
        np.testing.assert_array_equal(stored[layer], plain[layer])
    again = tiny_encoder.build_token_store(texts, tmp_path)  # the second run opens the same store
    assert again.folder == store.folder and len(list((tmp_path / "tokens").iterdir())) == 2  # store + its lock
    with_prompt = tiny_encoder.build_token_store(texts, tmp_path, prompt="query: ")
    assert with_prompt.folder != store.folder
    with pytest.raises(ElasticIRError, match="other texts"):
        tiny_encoder.encode(texts, [1], show_progress=False, token_store=with_prompt)
    with pytest.raises(ElasticIRError, match="other texts"):
        tiny_encoder.encode(texts[::-1], [1], show_progress=False, token_store=store)


def test_key_follows_tokenizer_settings(tiny_encoder, tmp_path):
    texts = ["one text", "another text"]
    short = tokens.standalone_tokenizer(tiny_encoder.tokenizer, 8)
    long = tokens.standalone_tokenizer(tiny_encoder.tokenizer, 64)
    assert token_store.tokenizer_key(short) != token_store.tokenizer_key(long)
    assert token_store.store_folder(tmp_path, short, texts) != token_store.store_folder(tmp_path, long, texts)
    store = token_store.open_or_build(tmp_path, short, texts)
    with pytest.raises(ElasticIRError, match="another tokenizer"):
        store.check(long, texts)
    with pytest.raises(ElasticIRError, match="fast"):
        token_store.tokenizer_key(None)
    assert not [p for p in (tmp_path / "tokens").iterdir() if p.name.endswith(".tmp")]  # no scratch left


def test_empty_and_all_empty_texts(tiny_encoder, tmp_path):
    standalone = tiny_encoder._standalone_tokenizer()
    empty = token_store.open_or_build(tmp_path, standalone, [])
    assert len(empty) == 0
    blanks = token_store.open_or_build(tmp_path, standalone, ["", ""])
    ids, lengths = blanks.arrays(np.array([1, 0]))
    np.testing.assert_array_equal(lengths, [2, 2])  # [CLS] [SEP]
    np.testing.assert_array_equal(ids, tokens.encode_arrays(standalone, ["", ""])[0])
