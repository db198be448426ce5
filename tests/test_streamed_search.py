"""Streamed exact search: float32 chunks give exactly the flat search; float16 chunks the same ranking up to
float16's resolution; the grid pass (every dim of a layer at once) agrees with the per-cell index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elasticir.index import kinds
from elasticir.index.dense import TIE_MARGIN, CellIndex, order_hits, tie_ranks
from elasticir.index.streamed import StreamedIndex, grid_search


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(3)
    docs = rng.standard_normal((1000, 48)).astype(np.float32)
    docs[500:520] = docs[10]  # exact duplicates: ties ordered by doc id, across chunk boundaries
    queries = rng.standard_normal((37, 48)).astype(np.float32)
    queries[0] = docs[10]
    doc_ids = [f"d{(i * 7919) % 1000:04d}" for i in range(len(docs))]  # tie order unlike the row order
    return docs, queries, tie_ranks(doc_ids)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dim", [8, 48])
def test_float32_chunks_equal_flat_search(corpus, dim, normalize):
    docs, queries, ranks = corpus
    flat = CellIndex(docs, dim, normalize=normalize)
    streamed = StreamedIndex(docs, dim, normalize=normalize, chunk=97, dtype=torch.float32)
    want_s, want_i, _ = flat.search(queries, 25, ranks)
    got_s, got_i, _ = streamed.search(queries, 25, ranks)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)
    exclude = np.arange(len(queries))  # self-hit exclusion, as CellIndex does it
    np.testing.assert_array_equal(streamed.search(queries, 5, ranks, exclude)[1], flat.search(queries, 5, ranks, exclude)[1])
    assert streamed.search(queries, 5000, ranks)[1].shape == (len(queries), len(docs))  # k beyond the corpus


def test_float16_chunks_same_ranking_up_to_resolution(corpus):
    docs, queries, ranks = corpus
    flat_s, flat_i, _ = CellIndex(docs, 32, normalize=True).search(queries, 50, ranks)
    half_s, half_i, _ = StreamedIndex(docs, 32, normalize=True, chunk=128, dtype=torch.float16).search(queries, 50, ranks)
    np.testing.assert_allclose(half_s, flat_s, atol=2e-3)
    assert not np.array_equal(half_s, flat_s)  # the scores did carry float16 rounding
    true = CellIndex(docs, 32, normalize=True)  # the float32 score of what float16 ranked at each position
    exact = np.einsum("qd,qkd->qk", truncate_q(queries, 32), true.matrix.numpy()[half_i])
    np.testing.assert_allclose(exact, flat_s, atol=2e-3)  # every swap is between near-equal documents
    assert (half_i == flat_i).mean() > 0.9
    duplicates = set(range(500, 520)) | {10}
    assert set(half_i[0, :21]) == duplicates  # the 21 exact copies of query 0 come first ...
    assert list(half_i[0, :21]) == sorted(duplicates, key=lambda row: ranks[row])  # ... in trec_eval's tie order


def truncate_q(queries, dim):
    prefix = queries[:, :dim]
    return prefix / np.linalg.norm(prefix, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_grid_pass_matches_per_cell_index(corpus, dtype, atol):
    docs, queries, ranks = corpus
    dims, k = (8, 16, 48), 10
    raw = grid_search(queries, docs, dims, k + TIE_MARGIN, normalize=True, chunk=300, dtype=dtype)
    for dim in dims:
        scores, ids = order_hits(*raw[dim], ranks, k)
        want_s, want_i, _ = CellIndex(docs, dim, normalize=True).search(queries, k, ranks)
        np.testing.assert_allclose(scores, want_s, atol=atol)
        assert (ids == want_i).mean() > (0.99 if dtype == torch.float32 else 0.9)


def test_registered_as_index_kind(corpus):
    docs, queries, ranks = corpus
    assert "streamed" in kinds.names() and kinds.names()[:4] == ("flat", "hnsw", "sq8", "ivfpq")
    kinds.check_index("streamed", [8, 48], len(docs))
    index = kinds.build(docs, 16, normalize=True, index="streamed")
    assert isinstance(index, StreamedIndex) and index.n == len(docs) and "float32" in index.backend
    np.testing.assert_array_equal(index.search(queries, 10, ranks)[1],
                                  CellIndex(docs, 16, normalize=True).search(queries, 10, ranks)[1])
    p50, p95 = index.latency_ms(queries, 10, samples=3)
    assert 0 < p50 <= p95
