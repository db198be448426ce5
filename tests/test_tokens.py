"""Token ids as arrays, tokenized in worker processes: the same ids, batches and embeddings as in-process."""

import numpy as np
import pytest

from elasticir.encoders import batching, tokens

TEXTS = [
    "A man is playing a guitar on the street corner while people walk past.",
    "Cats sleep.",
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest to hide from the hunters.",
    "",
    "Stocks fell sharply on Monday; analysts blamed the weather, the moon and the café's new menu (naïvely).",
    "Rain.",
    " ".join(["supercalifragilistic"] * 40),  # longer than the max length: truncated
] * 5


def test_standalone_tokenizer_gives_the_hf_ids(tiny_encoder):
    hf = tiny_encoder.tokenizer(TEXTS, truncation=True, max_length=24)["input_ids"]
    before = tiny_encoder.tokenizer.backend_tokenizer.truncation
    ids, lengths = tokens.encode_arrays(tokens.standalone_tokenizer(tiny_encoder.tokenizer, 24), TEXTS)
    assert ids.dtype == np.int32 and lengths.tolist() == [len(x) for x in hf] and max(lengths) == 24
    assert [x.tolist() for x in batching.TokenBatch(ids, lengths)] == hf
    assert tiny_encoder.tokenizer.backend_tokenizer.truncation == before  # the encoder's tokenizer untouched


def test_take_and_collate_match_lists():
    lists = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    batch = batching.TokenBatch.of(lists).take(np.array([3, 0, 2]))
    assert [x.tolist() for x in batch] == [lists[3], lists[0], lists[2]]
    padded = batching.pad(batch, 0)
    assert padded["input_ids"].tolist() == [[11, 12, 13, 14], [5, 6, 7, 0], [9, 10, 0, 0]]
    assert padded["attention_mask"].sum(1).tolist() == [4, 3, 2]
    assert batching.pack(batch)["input_ids"].tolist() == [[11, 12, 13, 14, 5, 6, 7, 9, 10]]


def stream(tiny_encoder, workers: int):
    hf = tiny_encoder.tokenizer
    return [(rows.tolist(), [x.tolist() for x in ids]) for rows, ids in batching.iter_batches(
        TEXTS, lambda chunk: hf(chunk, truncation=True, max_length=24)["input_ids"], batch_size=5, max_tokens=60,
        packed=True, window=6, standalone=tokens.standalone_tokenizer(hf, 24), workers=workers)]


def test_worker_processes_give_the_in_process_token_stream(tiny_encoder):
    """Same batches (rows, ids, boundaries) in the same order from 2 forked workers (6 windows, 2 in flight,
    each split in two parts) and from 3 (parts of 2, 2 and 2 texts)."""
    if not tokens.fork_available():
        pytest.skip("no fork start method here")
    in_process = stream(tiny_encoder, 0)
    assert sorted(row for rows, _ in in_process for row in rows) == list(range(len(TEXTS)))
    assert stream(tiny_encoder, 2) == in_process
    assert stream(tiny_encoder, 3) == in_process


def test_encode_with_worker_processes_equals_in_process(tiny_encoder, monkeypatch):
    if not tokens.fork_available():
        pytest.skip("no fork start method here")
    want = tiny_encoder.encode(TEXTS[:14], [1, 4], batch_size=8, show_progress=False)
    monkeypatch.setattr(tiny_encoder, "tokenize_workers", 2)
    got = tiny_encoder.encode(TEXTS[:14], [1, 4], batch_size=8, show_progress=False)
    assert all(np.array_equal(got[layer], want[layer]) for layer in (1, 4))


def test_auto_workers_only_for_large_inputs_on_an_accelerator(monkeypatch):
    monkeypatch.delenv(tokens.WORKERS_ENV, raising=False)
    monkeypatch.setattr(tokens.os, "cpu_count", lambda: 16)
    assert tokens.auto_workers(10**6, "cpu") == 0 and tokens.auto_workers(1000, "cuda") == 0
    assert tokens.auto_workers(10**6, "cuda") == (12 if tokens.fork_available() else 0)
    monkeypatch.setenv(tokens.WORKERS_ENV, "3")
    assert tokens.auto_workers(10, "cpu") == (3 if tokens.fork_available() else 0)
