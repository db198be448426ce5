"""Quantised indexes of one cell (L, d, precision): float16, int8 and binary embeddings, searched exactly.

The precisions practitioners combine with Matryoshka truncation:
- float16: faiss' ScalarQuantizer QT_fp16 (documents stored in half precision, float query).
- int8: sentence-transformers' `quantize_embeddings(..., "int8")` with per-coordinate ranges calibrated on the
  corpus; queries are quantised with the corpus ranges and scored by the int8 x int8 inner product.
- binary: sentence-transformers' "ubinary" (sign bits, packed) in a faiss IndexBinaryFlat; Hamming search,
  scored as d - 2 * hamming (the inner product of the +-1 vectors, so higher is better as everywhere else).
- binary+rescore: the binary search fetches RESCORE_MULTIPLIER x k candidates, which are rescored by the float
  query against the documents' +-1 vectors (the documents stay binary in memory; the recipe of the
  sentence-transformers quantisation guide).

Each precision is registered here (elasticir/index/precisions.py holds the registry: name, report order, file
token, cost counts, bytes per vector); QuantizedIndex dispatches to the registered codes of its precision.
Quantised points are always exact search over the quantised vectors (whatever --index says for float32), so a
difference from the float32 cell is the quantisation's alone.
Integer scores (int8, binary) tie often, so ties are broken exactly as trec_eval orders them (score descending,
then doc id descending) by searching on one integer key per (score, tie rank) pair, never by chance.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from elasticir.encoders import truncate
from elasticir.errors import ElasticIRError
from elasticir.index import kinds
from elasticir.index.dense import TIE_MARGIN, order_hits, search_depth
from elasticir.index.precisions import Precision, check_precisions, lookup, names, precision_slug, register

RESCORE_MULTIPLIER = 4  # binary+rescore: candidates rescored per result kept (k=1000 -> 4000 candidates)
CHUNK = 1 << 16


def int_topk(key_fn, n: int, fetch: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(keys, corpus rows) of the `fetch` largest int64 keys per query (keys unique per row, so the order is exact);
    key_fn(start, stop) returns the [queries, stop - start] keys of those corpus rows."""
    best_k = best_i = None
    for c0 in range(0, n, chunk):
        keys = key_fn(c0, min(n, c0 + chunk))
        k_s, k_i = torch.topk(keys, min(fetch, keys.shape[1]), dim=1)
        k_i = k_i + c0
        if best_k is not None:
            k_s, pick = torch.topk(torch.cat([best_k, k_s], 1), min(fetch, best_k.shape[1] + k_s.shape[1]), dim=1)
            k_i = torch.gather(torch.cat([best_i, k_i], 1), 1, pick)
        best_k, best_i = k_s, k_i
    return best_k.numpy(), best_i.numpy()


class Float16Codes:
    """Documents in half precision (faiss ScalarQuantizer QT_fp16), float queries, inner product."""

    def __init__(self, docs_full: np.ndarray, dim: int, normalize: bool, chunk: int) -> None:
        import faiss

        self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        for c0 in range(0, len(docs_full), chunk):
            self.index.add(truncate(docs_full[c0:c0 + chunk], dim, normalize))
        self.nbytes = len(faiss.serialize_index(self.index))
        self.backend = "faiss SQfp16"

    def encode(self, queries: np.ndarray) -> np.ndarray:
        return queries

    def search(self, codes: np.ndarray, fetch: int, tie_rank: np.ndarray,
               floats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Best `fetch` by score only (the caller fetched TIE_MARGIN more and orders ties)."""
        scores, ids = self.index.search(np.ascontiguousarray(codes, dtype=np.float32), fetch)
        return scores, ids.astype(np.int64)


class Int8Codes:
    """sentence-transformers int8 codes with per-coordinate corpus ranges; exact int8 x int8 inner product."""

    def __init__(self, docs_full: np.ndarray, dim: int, normalize: bool, chunk: int) -> None:
        from sentence_transformers.util.quantization import quantize_embeddings

        self.dim, self.n = dim, len(docs_full)
        # calibration: per-coordinate min/max over the whole corpus, as sentence-transformers computes them
        lo = np.full(dim, np.inf, dtype=np.float32)
        hi = np.full(dim, -np.inf, dtype=np.float32)
        for c0 in range(0, self.n, chunk):
            part = truncate(docs_full[c0:c0 + chunk], dim, normalize)
            lo, hi = np.minimum(lo, part.min(0)), np.maximum(hi, part.max(0))
        self.ranges = np.vstack([lo, hi])
        self.codes = np.concatenate([quantize_embeddings(truncate(docs_full[c0:c0 + chunk], dim, normalize),
                                                         "int8", ranges=self.ranges)
                                     for c0 in range(0, self.n, chunk)])
        self.nbytes = self.codes.nbytes + self.ranges.nbytes
        self.backend = "int8 (sentence-transformers quantize_embeddings) exact int8 inner product"

    def encode(self, queries: np.ndarray) -> np.ndarray:
        from sentence_transformers.util.quantization import quantize_embeddings

        return quantize_embeddings(queries, "int8", ranges=self.ranges)

    def search(self, codes: np.ndarray, fetch: int, tie_rank: np.ndarray,
               floats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        # int8 products summed in float32 are exact while |sum| <= d * 128^2 < 2^24 (d <= 1024; float64 beyond),
        # and the key score * n + (n - 1 - tie_rank) is unique per row and orders exactly as trec_eval does
        exact = torch.float32 if self.dim <= 1024 else torch.float64
        q = torch.from_numpy(codes.astype(np.float64)).to(exact)
        docs = torch.from_numpy(self.codes)
        tie = torch.from_numpy(self.n - 1 - tie_rank)

        def keys(c0: int, c1: int) -> torch.Tensor:
            scores = (q @ docs[c0:c1].to(exact).T).to(torch.int64)
            return scores * self.n + tie[c0:c1]

        best, ids = int_topk(keys, self.n, fetch)
        return (best // self.n).astype(np.float32), ids  # floor division undoes the key (tie part in [0, n))


class BinaryCodes:
    """Packed sign bits in a faiss IndexBinaryFlat, Hamming search scored d - 2 * hamming; with `rescore`, the
    RESCORE_MULTIPLIER x k Hamming candidates are rescored by the float query against the +-1 documents."""

    def __init__(self, docs_full: np.ndarray, dim: int, normalize: bool, chunk: int, *, rescore: bool) -> None:
        import faiss
        from sentence_transformers.util.quantization import quantize_embeddings

        self.dim, self.n, self.rescore = dim, len(docs_full), rescore
        self.index = faiss.IndexBinaryFlat(8 * ((dim + 7) // 8))
        for c0 in range(0, self.n, chunk):
            self.index.add(quantize_embeddings(truncate(docs_full[c0:c0 + chunk], dim, normalize), "ubinary"))
        self.nbytes = len(faiss.serialize_index_binary(self.index))
        self.backend = "faiss IndexBinaryFlat (Hamming)" + (
            f" + float rescoring of {RESCORE_MULTIPLIER}x k" if rescore else "")
        self._packed = None

    def encode(self, queries: np.ndarray) -> np.ndarray:
        from sentence_transformers.util.quantization import quantize_embeddings

        return quantize_embeddings(queries, "ubinary")

    def search(self, codes: np.ndarray, fetch: int, tie_rank: np.ndarray,
               floats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if not self.rescore:
            return self._hamming_search(codes, fetch, tie_rank)
        _, ids = self._hamming_search(codes, search_depth(fetch * RESCORE_MULTIPLIER, self.n), tie_rank)
        return self._rescore(floats, ids, tie_rank, fetch)

    def _hamming_search(self, codes: np.ndarray, fetch: int, tie_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """faiss Hamming top-`fetch`; queries whose boundary distance ties beyond the fetched margin get every
        document within that distance (range search), so the cut follows trec_eval's tie order exactly."""
        margin = search_depth(fetch, self.n, TIE_MARGIN)
        dist, ids = self.index.search(np.ascontiguousarray(codes), margin)
        out_s = np.empty((len(codes), fetch), dtype=np.float32)
        out_i = np.empty((len(codes), fetch), dtype=np.int64)
        for row in range(len(codes)):
            d_row, i_row = dist[row], ids[row].astype(np.int64)
            if margin < self.n and d_row[-1] == d_row[fetch - 1]:  # the tie may go on past what was fetched
                _, d_row, i_row = self.index.range_search(codes[row:row + 1], int(d_row[fetch - 1]) + 1)
                i_row = i_row.astype(np.int64)
            scores = (self.dim - 2 * d_row.astype(np.int64)).astype(np.float32)
            order = np.lexsort((tie_rank[i_row], -scores))[:fetch]
            out_s[row], out_i[row] = scores[order], i_row[order]
        return out_s, out_i

    def _rescore(self, floats: np.ndarray, ids: np.ndarray, tie_rank: np.ndarray,
                 fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Float query . +-1 document vectors (unpacked from the index's own codes) over the candidates."""
        import faiss

        if getattr(self, "_packed", None) is None:  # a copy of the codes, made once (not per query)
            self._packed = faiss.vector_to_array(self.index.xb).reshape(self.n, self.index.code_size)
        packed = self._packed
        scores = np.empty(ids.shape, dtype=np.float32)
        for row in range(len(ids)):
            signs = np.unpackbits(packed[ids[row]], axis=1)[:, : self.dim].astype(np.float32) * 2 - 1
            scores[row] = signs @ floats[row]
        return order_hits(scores, ids, tie_rank, fetch)


class QuantizedIndex:
    """Same interface as CellIndex (search, latency_ms, nbytes, build_s, backend) for one quantised cell: the
    codes are the registered precision's (`Precision.store`), the query path and tie order are shared."""

    def __init__(self, docs_full: np.ndarray, dim: int, precision: str, *, normalize: bool,
                 chunk: int = CHUNK) -> None:
        quantised = [name for name in names() if lookup(name).store is not None]
        if precision not in quantised:
            raise ElasticIRError(f"precision {precision!r}: use one of {', '.join(quantised)} here")
        self.dim, self.precision, self.normalize, self.n = dim, precision, normalize, len(docs_full)
        self.spec = lookup(precision)
        start = time.perf_counter()
        self.store = self.spec.store(docs_full, dim, normalize, chunk)
        self.nbytes, self.backend = self.store.nbytes, self.store.backend
        self.build_s = time.perf_counter() - start

    # --- queries ------------------------------------------------------------------------------------------------
    def encode_queries(self, queries_full: np.ndarray) -> np.ndarray:
        """Queries in the index's code (float16: float, int8: with the corpus ranges, binary: packed sign bits)."""
        return self.store.encode(truncate(queries_full, self.dim, self.normalize))

    def _raw_search(self, codes: np.ndarray, fetch: int, tie_rank: np.ndarray,
                    floats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the `fetch` best per query in trec_eval order (float16: best by score only)."""
        return self.store.search(codes, search_depth(fetch, self.n), tie_rank, floats)

    def search(self, queries_full: np.ndarray, k: int, tie_rank: np.ndarray,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Top-k (scores, corpus rows) per query in trec_eval order, and the batched search seconds."""
        codes = self.encode_queries(queries_full)
        floats = truncate(queries_full, self.dim, self.normalize)
        extra = (1 if exclude is not None else 0) + self.spec.tie_margin
        start = time.perf_counter()
        scores, ids = self._raw_search(codes, search_depth(k, self.n, extra), tie_rank, floats)
        seconds = time.perf_counter() - start
        scores, ids = order_hits(scores, ids, tie_rank, search_depth(k, self.n), exclude)
        return scores, ids, seconds

    def latency_ms(self, queries_full: np.ndarray, k: int, samples: int = 100,
                   tie_rank: np.ndarray | None = None) -> tuple[float, float]:
        """p50 and p95 milliseconds of one-query-at-a-time search (query quantisation included)."""
        tie_rank = np.arange(self.n)[::-1].copy() if tie_rank is None else tie_rank
        times = []
        for row in range(min(samples, len(queries_full))):
            start = time.perf_counter()
            one = queries_full[row:row + 1]
            self._raw_search(self.encode_queries(one), k, tie_rank, truncate(one, self.dim, self.normalize))
            times.append((time.perf_counter() - start) * 1000)
        return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def build_index(docs_full: np.ndarray, dim: int, precision: str, *, normalize: bool, index: str = "flat",
                flat_backend: str = "torch", device: str = "cpu"):
    """The index of one (cell, precision), built as the registered precision builds it (float32: CellIndex)."""
    return lookup(precision).build(docs_full, dim, normalize=normalize, index=index, flat_backend=flat_backend,
                                   device=device)


def _dense(docs_full: np.ndarray, dim: int, *, normalize: bool, index: str, flat_backend: str, device: str):
    """float32: the index of the kind --index names (index.kinds)."""
    return kinds.build(docs_full, dim, normalize=normalize, index=index, flat_backend=flat_backend, device=device)


def quantised_build(name: str):
    """The `build` of a quantised precision: a QuantizedIndex over the precision's registered codes (exact
    search, whatever --index says for float32)."""
    def build(docs_full: np.ndarray, dim: int, *, normalize: bool, **_float32_only) -> QuantizedIndex:
        return QuantizedIndex(docs_full, dim, name, normalize=normalize)
    return build


def _full_scan(n_docs: int, k: int, dim: int) -> float:
    return float(n_docs * dim)  # every document scored at d multiply-adds


def _sign_bits(dim: int) -> float:
    return float((dim + 7) // 8)


def _hamming(n_docs: int, dim: int) -> float:
    return float(n_docs * dim)  # every document's d bits compared


def _binary(rescore: bool):
    return lambda docs, dim, normalize, chunk: BinaryCodes(docs, dim, normalize, chunk, rescore=rescore)


# the built-in precisions; registration order is how --precisions lists them, `order` how reports sort them
register(Precision("float32", order=0, slug="float32", build=_dense, bytes_per_vector=lambda dim: 4.0 * dim,
                   search_madds=_full_scan))
register(Precision("float16", order=1, slug="float16", build=quantised_build("float16"),
                   bytes_per_vector=lambda dim: 2.0 * dim, search_madds=_full_scan, store=Float16Codes,
                   tie_margin=TIE_MARGIN))
register(Precision("int8", order=2, slug="int8", build=quantised_build("int8"), bytes_per_vector=float,
                   search_madds=_full_scan, store=Int8Codes))
register(Precision("binary", order=4, slug="binary", build=quantised_build("binary"), bytes_per_vector=_sign_bits,
                   search_madds=lambda n_docs, k, dim: 0.0, hamming_bits=_hamming, store=_binary(False)))
register(Precision("binary+rescore", order=3, slug="binary-rescore", build=quantised_build("binary+rescore"),
                   bytes_per_vector=_sign_bits, hamming_bits=_hamming, store=_binary(True),
                   search_madds=lambda n_docs, k, dim: float(RESCORE_MULTIPLIER * k * dim)))  # the rescoring

__all__ = ["CHUNK", "RESCORE_MULTIPLIER", "BinaryCodes", "Float16Codes", "Int8Codes", "QuantizedIndex",
           "build_index", "check_precisions", "int_topk", "precision_slug", "quantised_build"]
