"""Funnel (adaptive) retrieval: a small stage-1 point shortlists K documents per query from the whole corpus, a
larger stage-2 cell rescores only the shortlist (the adaptive retrieval of Matryoshka Representation Learning).

A funnel is written L1:d1[:p1]/K/L2:d2, e.g. 2:64/100/6:384 or 2:64:binary/100/6:384. Stage 2 reads the
documents' layer-L2 vectors from the per-layer store and the queries' layer-L2 vectors from the store too: one
early-exit pass to L2 yields the layer-L1 query on the way, so a funnel encodes each query once, to its deepest
layer. Without explicit funnels a small space is searched: every grid cell (at each --precisions) x K in
AUTO_KS, stage 2 the full cell.

Costs per query: encode FLOPs of the deepest layer (encoders.cost), search multiply-adds N x d1 + K x d2 (binary
stage 1: N x d1 bit operations of Hamming work instead, counted apart, plus 4K x d1 for binary+rescore), the
bytes each stage keeps, and measured latency: one query at a time, funnel and full cell timed side by side
(interleaved per query). Every funnel is tested against the full cell, paired per query (evaluation.significance,
Holm over the funnels of a dataset).

The full cell and each group of funnels sharing a stage-1 point are points of the run's executor
(elasticir.execution): one after the other in this process, or Ray tasks, each worker building the full cell's
index once for the latency comparison.
"""

from __future__ import annotations

import gzip
import re
import time
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

import ir_measures
import numpy as np
import pandas as pd
import torch

from elasticir.cells import Cell, validate_cells
from elasticir.encoders import truncate
from elasticir.encoders.cost import EncoderShape, encode_flops_per_token
from elasticir.encoders.store import StoredLayers
from elasticir.errors import ElasticIRError
from elasticir.evaluation.retrieval import (
    corpus_order,
    corpus_stores,
    evaluate_run,
    measures_for,
    to_run,
    write_trec_run,
)
from elasticir.evaluation.significance import holm, paired_ttest, pareto_front
from elasticir.execution import PointWork
from elasticir.index.precisions import check_precisions, lookup, precision_slug
from elasticir.index.quantized import build_index
from elasticir.io import atomic_write, release_free_heap

if TYPE_CHECKING:
    from elasticir.execution import Executor
    from elasticir.results.store import PartFolder

AUTO_KS = (50, 100, 200, 500, 1000)
TOLERANCE = 0.005  # "as good as the full cell": main metric within this of it
_FORM = re.compile(r"^\s*(\d+):(\d+)(?::([a-z0-9+]+))?\s*/\s*(\d+)\s*/\s*(\d+):(\d+)\s*$")


@dataclass(frozen=True)
class Funnel:
    layer1: int
    dim1: int
    precision1: str
    k: int
    layer2: int
    dim2: int

    def __str__(self) -> str:
        p1 = "" if self.precision1 == "float32" else f":{self.precision1}"
        return f"{self.layer1}:{self.dim1}{p1}/{self.k}/{self.layer2}:{self.dim2}"

    @property
    def slug(self) -> str:
        return (f"funnel_L{self.layer1}_d{self.dim1}{precision_slug(self.precision1)}_K{self.k}"
                f"_L{self.layer2}_d{self.dim2}")

    def search_madds(self, n_docs: int) -> float:
        return lookup(self.precision1).search_madds(n_docs, self.k, self.dim1) + float(self.k * self.dim2)

    def hamming_bits(self, n_docs: int) -> float:
        return lookup(self.precision1).hamming_bits(n_docs, self.dim1)


def parse_funnel(text: str) -> Funnel:
    """L1:d1[:p1]/K/L2:d2, or one error naming --funnel and the form."""
    match = _FORM.match(str(text))
    if not match:
        raise ElasticIRError(f"--funnel {text!r} is malformed; write STAGE1/K/STAGE2 as L1:d1[:precision]/K/L2:d2, "
                             "e.g. 2:64/100/6:384 or 2:64:binary/100/6:384")
    l1, d1, p1, k, l2, d2 = match.groups()
    funnel = Funnel(int(l1), int(d1), p1 or "float32", int(k), int(l2), int(d2))
    check_precisions([funnel.precision1], f"--funnel {text}")
    if funnel.k < 1:
        raise ElasticIRError(f"--funnel {text}: the shortlist K must be >= 1")
    if funnel.layer1 > funnel.layer2:
        raise ElasticIRError(f"--funnel {text}: stage 1 (layer {funnel.layer1}) is deeper than stage 2 (layer "
                             f"{funnel.layer2}); a funnel shortlists with the cheaper cell. Fix: L1 <= L2")
    return funnel


def check_funnel_flags(specs: list[str] | None) -> None:
    """Syntax, precisions and L1 <= L2 of explicit funnels: before the model is loaded."""
    for spec in specs or []:
        if spec != "auto":
            parse_funnel(spec)


def check_funnels_fit(specs: list[str] | None, num_layers: int, hidden_size: int, corpus_sizes: dict[str, int]) -> None:
    """Cells the model has and K no larger than each corpus: before any encoding."""
    for spec in specs or []:
        if spec == "auto":
            continue
        funnel = parse_funnel(spec)
        try:
            validate_cells([Cell(funnel.layer1, funnel.dim1), Cell(funnel.layer2, funnel.dim2)], num_layers,
                           hidden_size)
        except ElasticIRError as exc:
            raise ElasticIRError(f"--funnel {spec}: {exc}") from None
        for dataset, n_docs in corpus_sizes.items():
            if funnel.k > n_docs:
                raise ElasticIRError(f"--funnel {spec}: K = {funnel.k} is larger than the {dataset} corpus "
                                     f"({n_docs} documents). Fix: a K of at most {n_docs}")


def resolve_funnels(specs: list[str], cells: list[Cell], precisions: list[str], full: Cell,
                    n_docs: int) -> list[Funnel]:
    """Explicit funnels as given; "auto": every (cell, precision) but the full float32 cell x K < n_docs."""
    funnels, full = [], Cell(*full)
    for spec in specs:
        if spec != "auto":
            funnels.append(parse_funnel(spec))
            if funnels[-1].k > n_docs:  # a subset's corpus may be smaller than the check before encoding knew
                raise ElasticIRError(f"--funnel {spec}: K = {funnels[-1].k} is larger than the corpus ({n_docs} "
                                     f"documents). Fix: a K of at most {n_docs}")
            continue
        for (layer, dim), precision in ((c, p) for c in cells for p in precisions):
            if (Cell(layer, dim), precision) != (full, "float32") and layer <= full.layer:
                funnels += [Funnel(layer, dim, precision, k, *full) for k in AUTO_KS if k < n_docs]
    return list(dict.fromkeys(funnels))


def rescore(docs_full: np.ndarray, queries_full: np.ndarray, shortlist: np.ndarray, dim: int, *,
            normalize: bool, tie_rank: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2: each query's shortlist scored with the (L2, d2) vectors, in trec_eval order, `keep` per query."""
    values = _stage2_values(docs_full, queries_full, shortlist, dim, normalize=normalize)
    return _rank_prefix(values, shortlist, shortlist.shape[1], tie_rank=tie_rank, keep=keep)


def _stage2_values(docs_full: np.ndarray, queries_full: np.ndarray, shortlist: np.ndarray, dim: int, *,
                  normalize: bool) -> np.ndarray:
    """[queries, K] stage-2 scores of every shortlisted document (NaN where the shortlist has no document).
    Computed once for the widest shortlist of a stage-1 point: a narrower funnel's shortlist is its prefix, so
    its scores are the prefix of these (the same products, row by row, as scoring it alone)."""
    queries = truncate(queries_full, dim, normalize)
    values = np.full(shortlist.shape, np.nan, dtype=np.float32)
    for row, candidates in enumerate(shortlist):
        valid = candidates >= 0
        values[row, valid] = truncate(docs_full[candidates[valid]], dim, normalize) @ queries[row]
    return values


def _rank_prefix(values: np.ndarray, shortlist: np.ndarray, k: int, *, tie_rank: np.ndarray,
                keep: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `k` shortlisted documents of each query ranked by their stage-2 `values`, in trec_eval order
    (score, then the corpus tie order), `keep` per query."""
    scores = np.full((len(shortlist), keep), -np.inf, dtype=np.float32)
    ids = np.full((len(shortlist), keep), -1, dtype=np.int64)
    for row in range(len(shortlist)):
        candidates, row_values = shortlist[row, :k], values[row, :k]
        valid = candidates >= 0
        candidates, row_values = candidates[valid], row_values[valid]
        order = np.lexsort((tie_rank[candidates], -row_values))[:keep]
        scores[row, : len(order)], ids[row, : len(order)] = row_values[order], candidates[order]
    return scores, ids


@dataclass(frozen=True)
class _FunnelData:
    """What every funnel point of one dataset reads, as plain data an executor can ship: the store folders,
    tie order, self-hit exclusion, the scoring inputs, the full cell, the latency samples and run files."""

    docs_dir: str
    queries_dir: str
    tie_rank: np.ndarray
    exclude: np.ndarray | None
    normalize: bool
    k: int
    query_ids: list[str]
    doc_ids: object  # an object array or the on-disk DocIds (picklable as the names)
    qrels: dict[str, dict[str, int]]
    measures: list
    full: Cell
    samples: int
    part_dir: PartFolder  # picklable: where the explicit funnels' run files go
    explicit: frozenset  # the funnels given by name: they get run files


@dataclass
class _FunnelInputs:
    """What every funnel of one dataset reads: the stores, the scoring context and the full cell."""

    docs: object  # the corpus layers (StoredLayers)
    queries: object  # the judged queries' layers (StoredLayers)
    tie_rank: np.ndarray
    exclude: np.ndarray | None
    normalize: bool
    k: int


@dataclass
class _FunnelContext:
    """A worker's context for funnel points: the inputs and the full cell's index, built once per worker
    (every funnel's latency is timed against it)."""

    inputs: _FunnelInputs
    full_index: object
    data: _FunnelData
    device: str


FULL = "full"  # the point that is the full cell itself (its metrics, index bytes and search time)


def _funnel_context(data: _FunnelData, device: str) -> _FunnelContext:
    """Open the stores by path and build the full cell's index."""

    inputs = _FunnelInputs(StoredLayers(data.docs_dir), StoredLayers(data.queries_dir), data.tie_rank, data.exclude,
                          data.normalize, data.k)
    full_index = build_index(inputs.docs.layer(data.full.layer), data.full.dim, "float32",
                             normalize=inputs.normalize, device=device)
    return _FunnelContext(inputs, full_index, data, device)


def _funnel_scoring(data: _FunnelData):
    """A scoring worker's scorer: (ids, scores, run path or None, tag) -> (aggregate, per-query values), the
    qrels parsed once (ir-measures) for every funnel it scores."""
    evaluator = ir_measures.evaluator(data.measures, data.qrels)

    def score(ids, scores, run_path, tag):
        run = to_run(data.query_ids, data.doc_ids, ids, scores)
        if run_path is not None:
            write_trec_run(run_path, run, tag)
        return evaluate_run(data.qrels, run, data.measures, evaluator)

    return score


def _funnel_point(point, context: _FunnelContext):
    """The search side of a point. FULL: the full cell's hits, search seconds and index bytes; a group of funnels
    sharing a stage-1 point: per funnel its row without metrics and its hits (_search_group)."""
    inputs, data, full = context.inputs, context.data, context.data.full
    if point == FULL:
        scores, ids, seconds = context.full_index.search(inputs.queries.layer(full.layer), inputs.k, inputs.tie_rank,
                                                         inputs.exclude)
        return ids, scores, seconds, context.full_index.nbytes, f"elasticir-{full.slug}"
    return _search_group(inputs, list(point), full, context.full_index, data.samples, context.device,
                        data.part_dir, data.explicit)


def _score_funnel_point(point, searched, score):
    """The scoring side of a point (CPU work the executor may overlap with the next point's search). FULL:
    ((aggregate, per-query values), search seconds, index bytes); a group: its funnels' rows, metrics placed
    after the stages as before, per-query values under `_values`."""
    if point == FULL:
        ids, scores, seconds, nbytes, tag = searched
        return score(ids, scores, None, tag), seconds, nbytes
    rows = []
    for head, tail, ids, scores, run_path, tag in searched:
        aggregate, per_query = score(ids, scores, run_path, tag)
        rows.append(head | aggregate | tail | {"_values": per_query})
    return rows


def _latencies(inputs: _FunnelInputs, funnels: list[Funnel], index, full: Cell, full_index,
               samples: int) -> tuple[dict[Funnel, list[float]], list[float]]:
    """Milliseconds per query of each funnel of one stage-1 point and of the full cell's search, one query at a
    time. Per query: the full cell's search, then the stage-1 search at the point's largest K, then each funnel's
    stage-2 rescoring of its own prefix; a funnel's time is the stage-1 search plus its rescoring. Timing stage 1
    once at the largest K overstates a smaller K's stage 1 by the extra top-k selection only (never flattering a
    funnel), and timing them one after the other per query lets drift of the shared machine hit all alike."""
    first, widest = funnels[0], max(f.k for f in funnels)
    q1, full_q = inputs.queries.layer(first.layer1), inputs.queries.layer(full.layer)
    stage2 = {(f.layer2, f.dim2): (inputs.docs.layer(f.layer2), inputs.queries.layer(f.layer2)) for f in funnels}
    times: dict[Funnel, list[float]] = {funnel: [] for funnel in funnels}
    full_times = []
    for row in range(min(samples, len(q1))):
        started = time.perf_counter()
        full_index.search(full_q[row:row + 1], inputs.k, inputs.tie_rank)
        full_times.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _, short, _ = index.search(q1[row:row + 1], widest, inputs.tie_rank)
        stage1_ms = (time.perf_counter() - started) * 1000
        for funnel in funnels:
            docs2, q2 = stage2[(funnel.layer2, funnel.dim2)]
            started = time.perf_counter()
            rescore(docs2, q2[row:row + 1], short[:, : funnel.k], funnel.dim2, normalize=inputs.normalize,
                    tie_rank=inputs.tie_rank, keep=min(funnel.k, inputs.k))
            times[funnel].append(stage1_ms + (time.perf_counter() - started) * 1000)
    return times, full_times


def _search_group(inputs: _FunnelInputs, funnels: list[Funnel], full: Cell, full_index, samples: int,
                 device: str, part_dir, explicit: set) -> list[tuple]:
    """The funnels sharing one stage-1 point: one stage-1 index and search at the largest K (each shortlist is a
    prefix of it), stage-2 scores once per stage-2 cell over that widest shortlist (each funnel ranks its
    prefix), and the latencies of all of them interleaved with the full cell's. Per funnel: its row before and
    after the metrics, its hits, its run file (explicit funnels only) and run tag, for _score_funnel_point."""
    first = funnels[0]
    q1, n = inputs.queries.layer(first.layer1), len(inputs.tie_rank)
    index = build_index(inputs.docs.layer(first.layer1), first.dim1, first.precision1, normalize=inputs.normalize,
                        device=device)
    _, shortlist, stage1_s = index.search(q1, max(f.k for f in funnels), inputs.tie_rank, inputs.exclude)
    values: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    for layer2, dim2 in dict.fromkeys((f.layer2, f.dim2) for f in funnels):
        started = time.perf_counter()
        values[(layer2, dim2)] = (_stage2_values(inputs.docs.layer(layer2), inputs.queries.layer(layer2), shortlist,
                                                dim2, normalize=inputs.normalize), time.perf_counter() - started)
    times, full_times = _latencies(inputs, funnels, index, full, full_index, samples)
    searched = []
    for funnel in funnels:
        stage2, stage2_s = values[(funnel.layer2, funnel.dim2)]
        started = time.perf_counter()
        scores, ids = _rank_prefix(stage2, shortlist, funnel.k, tie_rank=inputs.tie_rank, keep=min(funnel.k, inputs.k))
        stage2_s = stage2_s * funnel.k / shortlist.shape[1] + time.perf_counter() - started  # its share of the products
        head = {"funnel": str(funnel), "layer1": funnel.layer1, "dim1": funnel.dim1, "precision1": funnel.precision1,
                "K": funnel.k, "layer2": funnel.layer2, "dim2": funnel.dim2}
        tail = {"search_madds": funnel.search_madds(n), "hamming_bits": funnel.hamming_bits(n),
                "stage1_bytes": index.nbytes, "stage2_bytes": n * funnel.dim2 * 4, "search_s": stage1_s + stage2_s,
                **_percentiles(times[funnel], full_times)}
        run_path = part_dir.run_file(funnel.slug) if funnel in explicit else None
        searched.append((head, tail, ids, scores, run_path, f"elasticir-{funnel.slug}"))
    return searched


def _percentiles(times: list[float], full_times: list[float]) -> dict[str, float]:
    return {"latency_p50_ms": float(np.percentile(times, 50)) if times else np.nan,
            "latency_p95_ms": float(np.percentile(times, 95)) if times else np.nan,
            "full_latency_p50_ms": float(np.percentile(full_times, 50)) if full_times else np.nan}


def _evaluate_funnels(data: _FunnelData, funnels: list[Funnel], *, executor: Executor, encode_flops, metric: str,
                     show_progress: bool = True, name: str = "funnel") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per funnel (metrics, costs, ratios to the full cell, paired test) and the per-query values.
    The full cell and each group of funnels sharing a stage-1 point are points `executor` runs. Run files are
    written for the explicit funnels (an automatic search's hundreds would not be read)."""
    full, n = data.full, len(data.tie_rank)
    key = lambda f: (f.layer1, f.dim1, f.precision1)  # the stage-1 point
    groups = [tuple(g) for _, g in groupby(sorted(funnels, key=key), key=key)]
    work = PointWork([FULL, *groups], data, prepare=_funnel_context, search=_funnel_point,
                     prepare_scoring=_funnel_scoring, score=_score_funnel_point, overlap=True)
    (full_scored, full_s, full_bytes), *grouped = executor.run_points(
        work, show_progress=show_progress, desc=f"{name}: funnels per stage-1 point", unit="point").results
    full_aggregate, full_values = full_scored
    rows = [row for group_rows in grouped for row in group_rows]
    per_query = [full_values.assign(funnel=f"full {full}")]
    for row in rows:
        per_query.append(row.pop("_values").assign(funnel=row["funnel"]))
    table = pd.DataFrame(rows)
    table["encode_flops"] = [encode_flops(max(a, b)) for a, b in zip(table.layer1, table.layer2)]
    table[f"delta_{metric}"] = table[metric] - full_aggregate[metric]
    table["madds_ratio"] = table.search_madds / (n * full.dim)
    table["latency_ratio"] = table.latency_p50_ms / table.full_latency_p50_ms
    table = _test_against_full(table, pd.concat(per_query, ignore_index=True), metric, f"full {full}")
    full_row = {"funnel": f"full {full}", "layer1": full.layer, "dim1": full.dim, "precision1": "float32", "K": n,
                "layer2": full.layer, "dim2": full.dim, **full_aggregate, "search_madds": float(n * full.dim),
                "hamming_bits": 0.0, "stage1_bytes": full_bytes, "stage2_bytes": 0, "search_s": full_s,
                "encode_flops": encode_flops(full.layer), f"delta_{metric}": 0.0, "madds_ratio": 1.0,
                "latency_ratio": 1.0, "selected": "full cell"}
    table = pd.concat([pd.DataFrame([full_row]), table], ignore_index=True)
    return table, pd.concat(per_query, ignore_index=True)


def _test_against_full(table: pd.DataFrame, per_query: pd.DataFrame, metric: str, full_name: str) -> pd.DataFrame:
    """Paired t-test per funnel against the full cell over the queries (Holm over the funnels), and which
    funnels are selected: per stage-1 precision the cheapest within TOLERANCE of the full cell, and the Pareto
    front of search work vs the metric. Search work = multiply-adds + Hamming bits / 64 (one 64-bit XOR + popcount
    counted as one operation; a convention, stated here and in the notes), ties broken by measured latency."""

    values = per_query[per_query.measure == metric].pivot(index="query_id", columns="funnel", values="value")
    table["p"] = [paired_ttest(values[f], values[full_name])[1] for f in table.funnel]
    table["p_holm"] = holm(table.p.to_numpy()) if len(table) else []
    selected = [""] * len(table)
    work = table.search_madds + table.hamming_bits / 64
    for i in pareto_front(work, table[metric]):
        selected[i] = "pareto"
    close = table.assign(work=work)[table[f"delta_{metric}"] >= -TOLERANCE]
    for _, rows in close.groupby("precision1"):
        best = rows.sort_values(["work", "latency_p50_ms"]).index[0]
        selected[best] = "cheapest within tolerance" + (" + pareto" if selected[best] else "")
    table["selected"] = selected
    return table


def _write_per_query(path, per_query: pd.DataFrame) -> None:

    atomic_write(path, gzip.compress(per_query.to_csv(index=False).encode()))


__all__ = ["AUTO_KS", "TOLERANCE", "Funnel", "check_funnel_flags", "check_funnels_fit",
           "parse_funnel", "rescore", "resolve_funnels"]


# --- the driver a retrieval part calls ------------------------------------------------------------------------
def _query_encode_flops(encoder, texts: list[str]):
    """layer -> analytic FLOPs to encode one query of the mean test-query length to that layer (encoders.cost)."""

    shape = EncoderShape.from_config(encoder.model.config)
    lengths = [len(ids) for ids in encoder.tokenizer(list(texts), truncation=True,
                                                     max_length=encoder.info.max_length)["input_ids"]]
    seq = max(1, round(sum(lengths) / max(1, len(lengths))))
    return lambda layer: float(encode_flops_per_token(shape, int(layer), seq, encoder.info.pooling) * seq), seq


def run_funnels(encoder, data, grid, config, part_dir, *, executor: Executor, remove_self_hits: bool, name: str,
                query_prompt: str | None = None, doc_prompt: str | None = None) -> tuple[list[dict], list[str]]:
    """Evaluate the config's funnels on one dataset through `executor` (which encodes the stores and runs the
    points); writes funnels.csv and funnel_per_query.csv.gz in the part folder (the part is finished only when
    its meta is written after them) and returns the leaderboard records."""

    full = Cell(encoder.num_layers, encoder.hidden_size)
    funnels = resolve_funnels(config.funnels, grid.cells, list(config.precisions), full, len(data.doc_ids))
    explicit = frozenset(parse_funnel(s) for s in config.funnels if s != "auto")
    layers = sorted({f.layer1 for f in funnels} | {f.layer2 for f in funnels} | {full.layer})
    inputs = _funnel_data(encoder, data, config, layers, full, part_dir, explicit, executor=executor,
                          remove_self_hits=remove_self_hits, name=name, query_prompt=query_prompt,
                          doc_prompt=doc_prompt)
    encode_flops, seq = _query_encode_flops(encoder, data.query_texts)
    metric = "nDCG@10"
    table, per_query = _evaluate_funnels(inputs, funnels, executor=executor, encode_flops=encode_flops, metric=metric,
                                        show_progress=config.show_progress, name=name)
    _write_per_query(part_dir.funnel_per_query, per_query)
    atomic_write(part_dir.funnels, table.to_csv(index=False))
    notes = [(f"{name}: {len(funnels)} funnels against the full cell {full} (stage 2 rescoring the shortlist; "
              f"encode FLOPs for {seq}-token queries, the mean test-query length; search multiply-adds N d1 + K d2, "
              "binary stage 1 as Hamming bit operations apart (selection and Pareto count 64 bits as one "
              "operation); latency: one query at a time, funnel and full cell "
              f"interleaved, {config.latency_samples} queries, {_threads()} torch thread(s))")]
    return _funnel_records(table, metric), notes


def _funnel_data(encoder, data, config, layers: list[int], full: Cell, part_dir, explicit: frozenset, *,
                 executor: Executor, remove_self_hits: bool, name: str, query_prompt: str | None = None,
                 doc_prompt: str | None = None) -> _FunnelData:
    """The corpus and query stores (the same cache entries the grid evaluation uses) encoded at `layers`, and
    what the funnel points read: the tie order, self-hit exclusion and the scoring inputs."""

    stores = corpus_stores(encoder, data, config.cache / "embeddings", encoder.hidden_size,  # stage 2: full width
                           query_prompt=query_prompt, doc_prompt=doc_prompt,
                           store_dtype=config.store_dtype)
    for store, what in zip(stores, ("corpus", "queries")):
        executor.encode_store(store, layers, batch_size=config.batch_size, show_progress=config.show_progress,
                              desc=f"{name} funnel {what}")
    release_free_heap()  # the encode's freed batches, before the indexes are built
    normalize = encoder.info.normalize if config.normalize is None else config.normalize
    tie_rank, exclude, doc_ids = corpus_order(data, remove_self_hits)
    return _FunnelData(str(stores[0].dir), str(stores[1].dir), tie_rank, exclude, normalize, config.k, data.query_ids,
                       doc_ids, data.qrels, measures_for(data.qrels), full, config.latency_samples, part_dir, explicit)


def _threads() -> int:
    return torch.get_num_threads()


COST_KEYS = ("encode_flops", "search_madds", "hamming_bits", "stage1_bytes", "stage2_bytes", "search_s",
             "latency_p50_ms", "latency_p95_ms", "full_latency_p50_ms", "madds_ratio", "latency_ratio")


def _funnel_records(table: pd.DataFrame, metric: str) -> list[dict]:
    """Leaderboard entries: the funnel, its two stages, metrics, costs and its paired test against the full cell."""
    stage_keys = ("funnel", "layer1", "dim1", "precision1", "K", "layer2", "dim2")
    records = []
    for row in table.to_dict("records"):
        metrics = {k: float(v) for k, v in row.items() if k not in stage_keys and k not in COST_KEYS
                   and k not in ("p", "p_holm", "selected", f"delta_{metric}") and pd.notna(v)}
        records.append({"funnel": row["funnel"], "stage1": {"layer": int(row["layer1"]), "dim": int(row["dim1"]),
                                                            "precision": row["precision1"]},
                        "k": int(row["K"]), "stage2": {"layer": int(row["layer2"]), "dim": int(row["dim2"])},
                        "metrics": metrics, "costs": {k: float(row[k]) for k in COST_KEYS if pd.notna(row.get(k))},
                        "p_value": None if pd.isna(row.get("p")) else float(row["p"]),
                        "p_holm": None if pd.isna(row.get("p_holm")) else float(row["p_holm"]),
                        "selected": row.get("selected") or ""})
    return records
