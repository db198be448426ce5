"""Retrieval over a grid: encode corpus and queries once, index every cell, evaluate with ir-measures.

Per cell it keeps the aggregate metrics, per-query values (for significance tests), a gzipped TREC run file,
and cost numbers (index bytes, build time, batched search throughput, single-query p50/p95 latency).
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
from ir_measures import RR, R, nDCG

from elasticir.cells import Cell, Grid
from elasticir.data.beir import RetrievalData
from elasticir.data.corpus import DocIds, id_array, rows_of
from elasticir.encoders import ElasticEncoder, EmbeddingStore
from elasticir.encoders.prompts import dataset_prompts
from elasticir.evaluation.result import GridResult
from elasticir.index.dense import tie_ranks
from elasticir.index.quantized import build_index, precision_slug
from elasticir.io import atomic_write
from elasticir.progress import progress

MEASURES = [nDCG @ 10, RR @ 10, R @ 100, R @ 1000]
GRADED_EXTRA = [R(rel=2) @ 1000]  # TREC DL: recall counts grade >= 2 as relevant


def measures_for(qrels: dict[str, dict[str, int]]) -> list:
    graded = max(score for judged in qrels.values() for score in judged.values()) > 1
    return MEASURES + GRADED_EXTRA if graded else MEASURES


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                 measures: list, evaluator=None) -> tuple[dict[str, float], pd.DataFrame]:
    """Aggregates with trec_eval -c semantics (every judged query counts; no results = 0) and per-query values.

    Pass `evaluator=ir_measures.evaluator(measures, qrels)` to reuse the parsed qrels across many runs.
    """
    evaluator = evaluator or ir_measures.evaluator(measures, qrels)
    per_query = {(str(m.measure), m.query_id): m.value for m in evaluator.iter_calc(run)}
    rows = [{"query_id": qid, "measure": str(measure), "value": per_query.get((str(measure), qid), 0.0)}
            for measure in measures for qid in qrels]
    table = pd.DataFrame(rows)
    return table.groupby("measure", sort=False)["value"].mean().to_dict(), table


def to_run(query_ids: list[str], doc_ids, ids: np.ndarray, scores: np.ndarray) -> dict:
    """{qid: {doc id: score}} of hit rows (-1: no hit); `doc_ids` an object array or DocIds, indexed by an
    array of rows per query (one look-up of the names, not one per hit)."""
    run = {}
    for qid, row_ids, row_scores in zip(query_ids, ids, scores):
        found = np.asarray(row_ids) >= 0
        run[qid] = dict(zip(doc_ids[np.asarray(row_ids)[found]], np.asarray(row_scores)[found].tolist()))
    return run


def trec_order(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each query's hits in trec_eval's order (score descending, then doc id descending)."""
    return {qid: dict(sorted(hits.items(), key=lambda hit: (hit[1], hit[0]), reverse=True))
            for qid, hits in run.items()}


def write_trec_run(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    """`qid Q0 docid rank score tag`, in the run's (already trec_eval-ordered) order, gzipped, atomically."""
    lines = [f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n"
             for qid, hits in run.items() for rank, (doc, score) in enumerate(hits.items(), start=1)]
    atomic_write(path, gzip.compress("".join(lines).encode(), compresslevel=1))


def evaluate_retrieval(
    encoder: ElasticEncoder, data: RetrievalData, grid: Grid, *, part_dir: Path, cache_dir: Path,
    remove_self_hits: bool = False, index: str = "flat", flat_backend: str = "torch", k: int = 1000,
    normalize: bool | None = None, query_prompt: str | None = None, doc_prompt: str | None = None,
    batch_size: int = 64, latency_samples: int = 100, show_progress: bool = True, name: str = "retrieval",
    precisions: tuple[str, ...] = ("float32",), store_dtype: str = "float32", executor=None,
    store_width: int | None = None,
) -> GridResult:
    """Per-cell table (layer, dim, metrics, costs), per-query values of every cell, and stage timings.

    Other precisions than float32 add one point per (cell, precision) and a `precision` column (absent from
    float32-only runs, whose tables and run files stay as they were).
    `executor`: None (this process) or an elasticir.distributed.RayExecutor (encoding actors, cell tasks).
    `store_width`: the columns the stores keep (default the grid's widest dim; see runner.store_width)."""
    encoder.check_cells(grid.cells)
    normalize = encoder.info.normalize if normalize is None else normalize
    timings: dict[str, float] = {}
    start = time.perf_counter()
    docs, queries = corpus_stores(encoder, data, cache_dir, store_width or max(grid.dims), query_prompt=query_prompt,
                                  doc_prompt=doc_prompt, store_dtype=store_dtype)
    for store, what in ((docs, "corpus"), (queries, "queries")):
        store.ensure(grid.layers, batch_size=batch_size, show_progress=show_progress, desc=f"{name} {what}",
                     **(executor.ensure_options() if executor else {}))
    timings["encode"] = time.perf_counter() - start

    doc_ids = id_array(data.doc_ids)  # on-disk ids stay on disk: run files look names up per query
    tie_rank = data.doc_ids.tie_ranks() if isinstance(data.doc_ids, DocIds) else tie_ranks(data.doc_ids)
    exclude = rows_of(data.doc_ids, data.query_ids) if remove_self_hits else None
    device = str(encoder.device)
    context = (data.query_ids, doc_ids, data.qrels, measures_for(data.qrels))
    search = {"normalize": normalize, "index": index, "flat_backend": flat_backend, "device": device, "k": k,
              "tie_rank": tie_rank, "exclude": exclude, "latency_samples": latency_samples}
    if executor is not None:  # every cell a task: search, score and write its run file on any free worker
        rows, per_query = executor.run_cells(docs.dir, queries.dir, grid, search, context, part_dir,
                                             precisions=tuple(precisions), show_progress=show_progress,
                                             desc=f"{name}: index + search per cell")
        timings.update(index=sum(r["build_s"] for r in rows), search=sum(r.pop("search_s") for r in rows),
                       evaluate=sum(r.pop("evaluate_s") for r in rows))
        return GridResult(_ordered(pd.DataFrame(rows)), pd.concat(per_query, ignore_index=True), timings)
    rows, per_query = _search_locally(docs, queries, grid, precisions, search, context, part_dir, timings,
                                      show_progress=show_progress, desc=f"{name}: index + search per cell")
    return GridResult(_ordered(pd.DataFrame(rows)), pd.concat(per_query, ignore_index=True), timings)


def _search_locally(docs: EmbeddingStore, queries: EmbeddingStore, grid: Grid, precisions, search: dict,
                    context: tuple, part_dir: Path, timings: dict, *, show_progress: bool,
                    desc: str) -> tuple[list[dict], list[pd.DataFrame]]:
    """Every (cell, precision) point in this process: searches in order, scoring overlapped in worker processes."""
    rows, per_query, pending = [], [], {}
    timings.update(index=0.0, search=0.0, evaluate=0.0)
    with _scoring_pool(context) as pool:
        points = [(*cell, p) for cell in grid.cells for p in precisions]
        bar = progress(points, desc=desc, unit="cell", enabled=show_progress)
        for layer, dim, precision in bar:
            row, ids, scores = _search_cell(docs.layer(layer), queries.layer(layer), layer, dim, precision, **search)
            slug = Cell(layer, dim).slug + precision_slug(precision)
            pending[(layer, dim, precision)] = pool.submit(_score_cell, ids, scores,
                                                           part_dir / "runs" / f"{slug}.trec.gz", f"elasticir-{slug}")
            timings["index"] += row["build_s"]
            timings["search"] += row.pop("search_s")
            rows.append(row | ({"precision": precision} if tuple(precisions) != ("float32",) else {}))
        started = time.perf_counter()
        for row in rows:
            aggregate, values, seconds = pending[(row["layer"], row["dim"], row.get("precision", "float32"))].result()
            row.update(aggregate)
            timings["evaluate"] += seconds
            per_query.append(values.assign(layer=row["layer"], dim=row["dim"],
                                           **({"precision": row["precision"]} if "precision" in row else {})))
        timings["evaluate_wait"] = time.perf_counter() - started  # scoring not hidden behind the searches
    return rows, per_query


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    costs = ["index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms", "backend"]
    keys = [c for c in ("layer", "dim", "precision") if c in table.columns]
    return table[keys + [c for c in table.columns if c not in costs and c not in keys] + costs]


def corpus_stores(encoder: ElasticEncoder, data: RetrievalData, cache_dir: Path, width: int, *,
                  query_prompt: str | None = None, doc_prompt: str | None = None,
                  store_dtype: str = "float32") -> tuple[EmbeddingStore, EmbeddingStore]:
    """The corpus and query stores of a dataset, each keeping the first `width` dims (the widest the caller
    needs): what `--shard`, the grid evaluation and funnels all open. A prompt left None is the model's prompt
    MTEB selects for a retrieval task of no known name (the runner passes the ones selected for the dataset)."""
    info = encoder.info
    chosen = dataset_prompts(encoder.prompt_table, info.default_prompt_name, task="retrieval", task_name=None,
                             task_type="Retrieval", query_prompt=query_prompt, doc_prompt=doc_prompt)
    docs = EmbeddingStore(cache_dir, encoder, data.doc_ids, data.doc_texts, dtype=store_dtype, width=width,
                          prompt=chosen["document"].text)
    queries = EmbeddingStore(cache_dir, encoder, data.query_ids, data.query_texts, dtype=store_dtype, width=width,
                             prompt=chosen["query"].text)
    return docs, queries


def _search_cell(docs_full: np.ndarray, queries_full: np.ndarray, layer: int, dim: int, precision: str, *,
                 normalize: bool, index: str, flat_backend: str, device: str, k: int, tie_rank: np.ndarray,
                 exclude: np.ndarray | None, latency_samples: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """One cell at one precision: build its index from the stored layer, search every query, time single
    queries. Returns its cost row (with `search_s`), the hit ids and scores. Called by the local loop and by
    the Ray cell task."""
    cell = build_index(docs_full, dim, precision, normalize=normalize, index=index, flat_backend=flat_backend,
                       device=device)
    scores, ids, search_s = cell.search(queries_full, k, tie_rank, exclude)
    p50, p95 = cell.latency_ms(queries_full, k, latency_samples) if latency_samples else (np.nan, np.nan)
    row = {"layer": layer, "dim": dim, "index_bytes": cell.nbytes, "build_s": cell.build_s,
           "search_qps": len(queries_full) / max(search_s, 1e-9), "latency_p50_ms": p50, "latency_p95_ms": p95,
           "backend": cell.backend, "search_s": search_s}
    return row, ids, scores


# Scoring a cell (run dict, ir-measures, run file) is CPU work in Python that would otherwise serialise behind
# the searches; worker processes overlap it with the next cells' searches (on a GPU the searches take
# milliseconds and scoring would dominate). Workers get the query ids, doc ids and qrels once, at start.
_WORKER: dict = {}


def _init_worker(query_ids, doc_ids, qrels, measures) -> None:
    _WORKER.update(query_ids=query_ids, doc_ids=doc_ids, qrels=qrels, measures=measures,
                   evaluator=ir_measures.evaluator(measures, qrels))


def _score_cell(ids: np.ndarray, scores: np.ndarray, run_path: Path, tag: str):
    return score_cell(_WORKER, ids, scores, run_path, tag)


def score_cell(context: dict, ids: np.ndarray, scores: np.ndarray, run_path: Path, tag: str):
    """Metrics and per-query values of one cell's hits, its run file written; `context` as `_init_worker` sets."""
    started = time.perf_counter()
    run = to_run(context["query_ids"], context["doc_ids"], ids, scores)
    aggregate, values = evaluate_run(context["qrels"], run, context["measures"], context.get("evaluator"))
    write_trec_run(run_path, run, tag)
    return aggregate, values, time.perf_counter() - started


def _scoring_pool(context: tuple) -> Executor:
    """Processes (forked: no re-import, nothing but numpy and ir-measures used in them) or, on one core, a thread."""
    workers = min(4, (os.cpu_count() or 1) - 1)
    if workers < 1 or "fork" not in mp.get_all_start_methods():
        _init_worker(*context)
        return ThreadPoolExecutor(max_workers=1)
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"), initializer=_init_worker,
                               initargs=context)
