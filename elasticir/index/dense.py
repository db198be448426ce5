"""Dense indexes per cell (L, d): FAISS factory indexes, or exact search by matmul + top-k.

Exact flat search defaults to a torch matmul + top-k: on CPU it measured 2-4x faster than faiss' IndexFlatIP
(100k x 384 vectors, 1,000 queries; benchmarks/bench_retrieval.py compares the two) and on GPU it needs no faiss GPU build; it returns the same ranking as faiss (a test checks it).
Ties are broken deterministically as trec_eval and pytrec_eval order them: score descending, then doc id
descending, so the rank column of our run files agrees with what trec_eval evaluates.
Indexes are filled chunk by chunk from the full-width store (prefix slice + optional re-normalisation per chunk),
so building never holds more than the index itself plus one chunk.
The --index kinds these indexes serve (flat, hnsw, sq8, ivfpq, any other FAISS factory string) are registered
at the bottom, each with its FAISS factory string and its up-front check (index.kinds holds the registry).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence

import numpy as np
import torch

from elasticir.encoders import truncate
from elasticir.errors import ElasticIRError
from elasticir.index.kinds import FACTORY, IndexKind, check_index, lookup, register

TIE_MARGIN = 16  # extra candidates fetched so ties at the k-th score are ordered by doc id, not by chance
CHUNK = 1 << 16
SCRATCH_BYTES = 64 << 20  # the exact search's score block (query chunk x doc chunk), flat in the corpus size
MIN_DOC_CHUNK = 1 << 14  # below this, the per-chunk top-k merges would cost more than the matmul
GPU_MAX_K = 1024  # the smallest top-k limit of faiss GPU indexes across versions
K_MAX = 2**31 - 1  # the largest --k: FAISS, torch.topk and Lucene take a 32-bit k


def search_depth(k: int, n_docs: int, extra: int = 0) -> int:
    """How many hits to ask any index for: k plus an `extra` margin (tie candidates, a self-hit), never more than
    the corpus holds. Every search path (torch, faiss flat / HNSW / SQ8 / IVF-PQ / factory strings, each quantised
    precision, funnels, BM25) asks through this, so a k beyond the corpus returns the whole ranked corpus (as
    k = n_docs does) instead of a FAISS error or a huge allocation (HNSW with k = 10^9 never returned)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ElasticIRError(f"--k {k!r}: must be a whole number >= 1")
    return max(0, min(int(k) + int(extra), int(n_docs)))


def factory_string(index: str, n: int, dim: int) -> str:
    """The FAISS index-factory string of an --index value: its kind's (flat, hnsw, sq8, ivfpq; a raw factory
    string as given)."""
    kind = lookup(index)
    if kind.factory is None:
        raise ElasticIRError(f"--index {index!r} is not a FAISS index; it has no factory string")
    return kind.factory(index, n, dim)


def ivfpq_factory(n: int, dim: int) -> str:
    """IVF-PQ sized to the corpus and dim: about 4 sqrt(n) lists, d/4 sub-quantisers (a divisor of d)."""
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return f"IVF{nlist},PQ{m}x8"


def bytes_per_vector(factory: str, dim: int) -> float:
    """The FAISS memory formula (bytes per vector): Flat 4d, HNSW 4d + 8M, SQ8 d, PQ M, IVF-PQ M + 8 (the id)."""
    if factory == "Flat":
        return 4 * dim
    if factory.startswith("HNSW"):
        return 4 * dim + 8 * int(factory.removeprefix("HNSW").split(",")[0] or 32)
    if factory == "SQ8":
        return dim
    if factory.startswith("IVF") and ",PQ" in factory:
        return int(factory.split(",PQ")[1].split("x")[0]) + 8
    raise ElasticIRError(f"no bytes-per-vector formula for index {factory!r}")


def tie_ranks(doc_ids: list[str]) -> np.ndarray:
    """Per corpus row, its position in trec_eval's tie order (doc id descending): lower comes first."""
    ranks = np.empty(len(doc_ids), dtype=np.int64)
    ranks[np.argsort(np.asarray(doc_ids, dtype=object))[::-1]] = np.arange(len(doc_ids))
    return ranks


def order_hits(scores: np.ndarray, ids: np.ndarray, tie_rank: np.ndarray, k: int,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Drop missing (-1) and excluded hits (self-hits), sort by (score desc, tie order), keep k per query."""
    out_scores = np.full((len(scores), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(scores), k), -1, dtype=np.int64)
    for row in range(len(scores)):
        valid = ids[row] >= 0
        if exclude is not None and exclude[row] >= 0:
            valid &= ids[row] != exclude[row]
        keep = np.flatnonzero(valid)
        order = keep[np.lexsort((tie_rank[ids[row][keep]], -scores[row][keep]))][:k]
        out_scores[row, : len(order)], out_ids[row, : len(order)] = scores[row, order], ids[row, order]
    return out_scores, out_ids


def exact_search(queries: np.ndarray, docs: torch.Tensor, k: int, *, doc_chunk: int | None = None,
                 query_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product top-k by matmul, over doc chunks with a running top-k. The score block of one query chunk x
    one doc chunk is the scratch; by default the doc chunk is sized so that block stays within SCRATCH_BYTES
    whatever the corpus size (a 200-query search over 1M passages used to hold 200 MB of it)."""
    k = search_depth(k, len(docs))
    if doc_chunk is None:
        block_rows = min(len(queries), query_chunk) * docs.element_size()
        doc_chunk = max(MIN_DOC_CHUNK, SCRATCH_BYTES // max(block_rows, 1))
    best_scores = np.empty((len(queries), k), dtype=np.float32)
    best_ids = np.empty((len(queries), k), dtype=np.int64)
    for q0 in range(0, len(queries), query_chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[q0:q0 + query_chunk])).to(docs.device, docs.dtype)
        top_s = torch.empty((len(q), 0), device=docs.device, dtype=docs.dtype)
        top_i = torch.empty((len(q), 0), dtype=torch.int64, device=docs.device)
        for d0 in range(0, len(docs), doc_chunk):
            s, i = torch.topk(q @ docs[d0:d0 + doc_chunk].T, min(k, len(docs) - d0), dim=1)
            merged_s, merged_i = torch.cat([top_s, s], 1), torch.cat([top_i, i + d0], 1)
            top_s, pick = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1)
            top_i = torch.gather(merged_i, 1, pick)
        best_scores[q0:q0 + len(q)] = top_s.float().cpu().numpy()
        best_ids[q0:q0 + len(q)] = top_i.cpu().numpy()
    return best_scores, best_ids


class CellIndex:
    """The index of one cell, built from the full-width document embeddings of its layer."""

    def __init__(self, docs_full: np.ndarray, dim: int, *, normalize: bool, index: str = "flat",
                 flat_backend: str = "torch", device: str = "cpu", chunk: int = CHUNK) -> None:
        n = len(docs_full)
        self.factory = factory_string(index, n, dim)
        self.dim, self.normalize, self.device = dim, normalize, device
        start = time.perf_counter()
        if self.factory == "Flat" and flat_backend == "torch":
            # on a GPU the matrix keeps the store's dtype (a float16 store: half the GPU memory, tensor-core
            # matmuls; scores then carry float16 rounding, so more near-ties fall to the doc-id order)
            half = docs_full.dtype == np.float16 and str(device).startswith("cuda")
            self.backend = f"torch matmul+topk ({device}{', float16' if half else ''})"
            self.matrix = torch.empty((n, dim), dtype=torch.float16 if half else torch.float32, device=device)
            for c0 in range(0, n, chunk):
                self.matrix[c0:c0 + chunk] = torch.from_numpy(truncate(docs_full[c0:c0 + chunk], dim, normalize))
            self.faiss = None
            self.nbytes = self.matrix.element_size() * self.matrix.nelement()
        else:
            self.matrix, self.faiss = None, self._build_faiss(docs_full, chunk)
            self.backend = f"faiss {self.factory}" + (" (gpu)" if self._on_gpu else "")
            self.nbytes = self._serialized_bytes()
        self.build_s = time.perf_counter() - start

    def _build_faiss(self, docs_full: np.ndarray, chunk: int):
        import faiss

        index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:  # train on a fixed-seed sample, never the whole corpus at once
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(len(docs_full), size=min(len(docs_full), 100_000), replace=False))
            index.train(truncate(docs_full[sample], self.dim, self.normalize))
        for c0 in range(0, len(docs_full), chunk):
            index.add(truncate(docs_full[c0:c0 + chunk], self.dim, self.normalize))
        if self.factory.startswith("HNSW"):
            index.hnsw.efSearch = 128
        self._on_gpu = self.device.startswith("cuda") and faiss.get_num_gpus() > 0 and "HNSW" not in self.factory
        self._cpu_index = index
        return faiss.index_cpu_to_all_gpus(index) if self._on_gpu else index

    def _serialized_bytes(self) -> int:
        import faiss

        return len(faiss.serialize_index(self._cpu_index))

    @property
    def n(self) -> int:
        return len(self.matrix) if self.matrix is not None else self._cpu_index.ntotal

    def _raw_search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        fetch = search_depth(fetch, self.n)
        if self.matrix is not None:
            return exact_search(queries, self.matrix, fetch)
        # faiss GPU indexes select at most GPU_MAX_K per query (1024 or 2048 by version): deeper searches use the
        # CPU copy of the same index (same results, slower), never a faiss error
        index = self._cpu_index if self._on_gpu and fetch > GPU_MAX_K else self.faiss
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        return scores, ids.astype(np.int64)

    def search(self, queries_full: np.ndarray, k: int, tie_rank: np.ndarray,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Top-k (scores, corpus rows) per query in trec_eval order, and the batched search seconds."""
        queries = truncate(queries_full, self.dim, self.normalize)
        fetch = search_depth(k, len(tie_rank), TIE_MARGIN + (1 if exclude is not None else 0))
        start = time.perf_counter()
        scores, ids = self._raw_search(queries, fetch)
        seconds = time.perf_counter() - start
        scores, ids = order_hits(scores, ids, tie_rank, search_depth(k, len(tie_rank)), exclude)
        return scores, ids, seconds

    def latency_ms(self, queries_full: np.ndarray, k: int, samples: int = 100) -> tuple[float, float]:
        """p50 and p95 milliseconds of one-query-at-a-time search (what an interactive user waits)."""
        queries = truncate(queries_full[:samples], self.dim, self.normalize)
        times = []
        for row in queries:
            start = time.perf_counter()
            self._raw_search(row[None, :], k)
            times.append((time.perf_counter() - start) * 1000)
        return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _faiss_reason(exc: Exception) -> str:
    """FAISS's own words without its C++ source location ("Error in ... at index_factory.cpp:1228: ...")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Error in .*?\.cpp:\d+:\s*", "", text)
    return text.split("failed: ", 1)[-1]


def check_faiss(index: str, dims: Sequence[int], n_docs: int | None = None, *, flat_backend: str = "torch") -> None:
    """The check of every FAISS kind: refuse a factory string FAISS does not parse, a product quantiser whose
    sub-quantiser count does not divide a dim, or (when the corpus size is known) an index that needs more
    training vectors than the corpus has (IVF lists, PQ centroids per sub-quantiser)."""
    if factory_string(index, n_docs or 1_000_000, max(dims)) == "Flat" and flat_backend == "torch":
        return
    import faiss

    for dim in sorted(set(dims)):
        factory = factory_string(index, n_docs or 1_000_000, dim)
        try:
            built = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ElasticIRError(
                f"--index {index!r} (FAISS factory {factory!r}) cannot be built at dim {dim}: {_faiss_reason(exc)}. "
                "Fix: use flat, hnsw, sq8, ivfpq, or a FAISS factory string valid for every dim of the grid "
                "(e.g. IVF256,Flat or HNSW32)"
            ) from None
        if n_docs is None or built.is_trained:
            continue
        needs = [("IVF lists", _nlist(built)), ("PQ centroids", getattr(getattr(faiss.downcast_index(built), "pq", None), "ksub", 0))]
        for what, count in needs:
            if count and n_docs < count:
                raise ElasticIRError(
                    f"--index {index!r} (FAISS factory {factory!r}) needs at least {count} training vectors for its "
                    f"{count} {what}, but the corpus has {n_docs} documents. Fix: use fewer lists/centroids, "
                    "flat, or hnsw for a corpus this small"
                )


def _nlist(index) -> int:
    import faiss

    try:
        return faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return 0


def _cell_index(docs_full: np.ndarray, dim: int, *, normalize: bool, index: str, flat_backend: str,
                device: str) -> CellIndex:
    return CellIndex(docs_full, dim, normalize=normalize, index=index, flat_backend=flat_backend, device=device)


register(IndexKind("flat", _cell_index, check_faiss, lambda index, n, dim: "Flat"))  # torch matmul or faiss Flat
register(IndexKind("hnsw", _cell_index, check_faiss, lambda index, n, dim: "HNSW32"))
register(IndexKind("sq8", _cell_index, check_faiss, lambda index, n, dim: "SQ8"))
register(IndexKind("ivfpq", _cell_index, check_faiss, lambda index, n, dim: ivfpq_factory(n, dim)))
register(IndexKind(FACTORY, _cell_index, check_faiss, lambda index, n, dim: index))  # any other --index string
__all__ = ["CHUNK", "GPU_MAX_K", "K_MAX", "TIE_MARGIN", "CellIndex", "bytes_per_vector", "check_faiss",
           "check_index", "exact_search", "factory_string", "ivfpq_factory", "order_hits", "search_depth",
           "tie_ranks"]  # check_index re-exported from index.kinds: the runner and the config checks import it here
