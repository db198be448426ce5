"""Exact flat search streamed from the per-layer store in chunks: nothing but one chunk on the device.

Why: a flat index holds the whole cell (n x d) on the device for every cell of the grid; the streamed search
reads the store's rows a chunk at a time (a memory-mapped store pages them in from disk), moves the chunk to the
device in the chunk dtype, scores every query against it with one matmul, keeps each chunk's top `fetch` and
merges it into a running top `fetch` per query. Device memory is bounded by the chunk, not the corpus: about
`chunk x d x itemsize` for the documents plus `query_chunk x chunk x 4` bytes of scores plus the running top-k
(`query_chunk x 2 fetch x 12` bytes), e.g. ~0.5 GB for 65,536 rows x 768 in float16 and 1,024 queries.
`grid_search` goes further for the grid: one pass over a layer's full-width store serves every dim of that
layer (each chunk is moved once; its prefixes are cut and re-normalised on the device).

Chunk dtype: float32 gives exactly the flat search (the same float32 prefixes, scored and ordered the same way);
float16 (the default on CUDA: half the bytes moved and tensor-core matmuls) rounds every score to float16, so
documents whose float32 scores differ by less than float16's resolution (~1e-3 for unit vectors) can change
places or become ties, which fall to the doc-id order as trec_eval orders them; like the float16 precision it
fetches TIE_MARGIN extra candidates so ties at the k-th score are ordered by doc id, not by chance.
Registered as the index kind "streamed" (`--index streamed`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from elasticir.encoders import truncate
from elasticir.index.dense import CHUNK, CellIndex, search_depth
from elasticir.index.kinds import IndexKind, register

QUERY_CHUNK = 1024


def chunk_dtype(device: str | torch.device, dtype: torch.dtype | None = None) -> torch.dtype:
    """The chunk dtype: as given, else float16 on CUDA and float32 elsewhere (CPU float16 matmuls are slow)."""
    return dtype or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)


def merge_topk(top: tuple[torch.Tensor, torch.Tensor], scores: torch.Tensor, first_row: int,
               fetch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The running (float32 scores, rows) top `fetch` per query merged with one chunk's `scores`."""
    chunk_s, chunk_i = torch.topk(scores, min(fetch, scores.shape[1]), dim=1)
    merged_s = torch.cat([top[0], chunk_s.float()], 1)
    merged_i = torch.cat([top[1], chunk_i + first_row], 1)
    best_s, pick = torch.topk(merged_s, min(fetch, merged_s.shape[1]), dim=1)
    return best_s, torch.gather(merged_i, 1, pick)


def _empty_top(n_queries: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty((n_queries, 0), device=device), torch.empty((n_queries, 0), dtype=torch.int64, device=device))


def _to_device(chunk: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A chunk of rows on the device in `dtype`. On CUDA it crosses in its own dtype through pinned memory
    (a store already in pinned memory or on the device is not copied on the host) and is cast there."""
    if not isinstance(chunk, torch.Tensor):
        chunk = torch.from_numpy(np.require(chunk, requirements=["C", "W"]))  # a read-only memmap is copied
    if device.type == "cuda" and chunk.device.type == "cpu":
        chunk = (chunk if chunk.is_pinned() else chunk.pin_memory()).to(device, non_blocking=True)
    return chunk.to(device=device, dtype=dtype)


def streamed_search(queries: np.ndarray, chunks: Iterator[tuple[int, np.ndarray]], fetch: int, *,
                    device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    query_chunk: int = QUERY_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the best `fetch` per query by score only, over `chunks` ((first row, [rows, d] docs)
    ready to score). All queries stay on the device; each chunk is scored against them in `query_chunk` slices."""
    device, dtype = torch.device(device), chunk_dtype(device, dtype)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device).to(dtype)
    tops = [_empty_top(len(part), device) for part in q.split(query_chunk)]
    for first_row, docs in chunks:
        block = _to_device(docs, device, dtype)
        tops = [merge_topk(top, part @ block.T, first_row, fetch) for top, part in zip(tops, q.split(query_chunk))]
    return _to_host(tops, len(queries), fetch)


def _to_host(tops, n_queries: int, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    scores = torch.cat([top[0] for top in tops]) if tops else torch.empty((0, fetch))
    rows = torch.cat([top[1] for top in tops]) if tops else torch.empty((0, fetch), dtype=torch.int64)
    return scores.cpu().numpy().astype(np.float32, copy=False), rows.cpu().numpy()


def grid_search(queries_full: np.ndarray, docs_full: np.ndarray, dims: Sequence[int], fetch: int, *,
                normalize: bool, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                chunk: int = CHUNK, query_chunk: int = QUERY_CHUNK) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{dim: (scores, rows)} of the best `fetch` per query (by score only) for every dim of one layer, from one
    pass over its full-width store: each chunk is moved to the device once, its prefixes cut (and re-normalised
    for cosine) there. Callers order ties with `dense.order_hits` as `CellIndex.search` does."""
    device, dtype = torch.device(device), chunk_dtype(device, dtype)
    fetch = search_depth(fetch, len(docs_full))
    q_full = torch.from_numpy(np.ascontiguousarray(queries_full, dtype=np.float32)).to(device)
    queries = {dim: _prefix(q_full, dim, normalize).to(dtype).split(query_chunk) for dim in dims}
    tops = {dim: [_empty_top(len(part), device) for part in queries[dim]] for dim in dims}
    for first_row in range(0, len(docs_full), chunk):
        block = _to_device(docs_full[first_row:first_row + chunk], device, torch.float32)
        for dim in dims:
            docs = _prefix(block, dim, normalize).to(dtype)
            tops[dim] = [merge_topk(top, part @ docs.T, first_row, fetch)
                         for top, part in zip(tops[dim], queries[dim])]
    return {dim: _to_host(tops[dim], len(queries_full), fetch) for dim in dims}


def _prefix(vectors: torch.Tensor, dim: int, normalize: bool) -> torch.Tensor:
    prefix = vectors[:, :dim]
    return prefix / prefix.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalize else prefix


class StreamedIndex(CellIndex):
    """One cell searched by streaming its layer's store (`docs_full`, kept as given: a memory map stays on disk)
    in chunks of `chunk` rows; searched and ordered as `CellIndex` (trec_eval order, TIE_MARGIN candidates)."""

    def __init__(self, docs_full: np.ndarray, dim: int, *, normalize: bool, device: str = "cpu",
                 chunk: int = CHUNK, dtype: torch.dtype | None = None) -> None:
        start = time.perf_counter()
        self.docs_full, self.dim, self.normalize, self.device, self.chunk = docs_full, dim, normalize, device, chunk
        self.dtype = chunk_dtype(device, dtype)
        self.factory, self.matrix, self.faiss = "Flat", None, None
        self.backend = f"torch streamed matmul+topk ({device}, {str(self.dtype).removeprefix('torch.')} chunks of {chunk})"
        self.nbytes = len(docs_full) * dim * torch.tensor([], dtype=self.dtype).element_size()  # what it scans
        self.build_s = time.perf_counter() - start

    @property
    def n(self) -> int:
        return len(self.docs_full)

    def _raw_search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        fetch = search_depth(fetch, self.n)
        chunks = ((c0, truncate(self.docs_full[c0:c0 + self.chunk], self.dim, self.normalize))
                  for c0 in range(0, self.n, self.chunk))
        return streamed_search(queries, chunks, fetch, device=self.device, dtype=self.dtype)


def _streamed_index(docs_full: np.ndarray, dim: int, *, normalize: bool, index: str, flat_backend: str,
                    device: str) -> StreamedIndex:
    return StreamedIndex(docs_full, dim, normalize=normalize, device=device)


def _check_streamed(index: str, dims: Sequence[int], n_docs: int | None = None, *, flat_backend: str = "torch") -> None:
    """Nothing to refuse: any dim and corpus size streams (an empty corpus returns no hits)."""


register(IndexKind("streamed", _streamed_index, _check_streamed, None))

__all__ = ["QUERY_CHUNK", "StreamedIndex", "chunk_dtype", "grid_search", "merge_topk", "streamed_search"]
