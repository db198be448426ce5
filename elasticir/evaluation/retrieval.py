"""Retrieval over a grid: encode corpus and queries once, index every cell, evaluate with ir-measures.

Per cell it keeps the aggregate metrics, per-query values (for significance tests), a gzipped TREC run file,
and cost numbers (index bytes, build time, batched search throughput, single-query p50/p95 latency).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ir_measures
import numpy as np
import pandas as pd
from ir_measures import RR, R, nDCG

from elasticir.cells import Cell, Grid
from elasticir.data.beir import RetrievalData
from elasticir.data.corpus import DocIds, id_array, rows_of
from elasticir.encoders import ElasticEncoder, EmbeddingStore
from elasticir.encoders.prompts import dataset_prompts
from elasticir.encoders.store import StoredLayers
from elasticir.evaluation.result import GridResult
from elasticir.execution import PointWork
from elasticir.index.dense import tie_ranks
from elasticir.index.quantized import build_index, precision_slug
from elasticir.io import atomic_write, release_free_heap

if TYPE_CHECKING:
    from elasticir.execution import Executor
    from elasticir.results.store import PartFolder

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
    encoder: ElasticEncoder, data: RetrievalData, grid: Grid, *, executor: Executor, part_dir: PartFolder, cache_dir: Path,
    remove_self_hits: bool = False, index: str = "flat", flat_backend: str = "torch", k: int = 1000,
    normalize: bool | None = None, query_prompt: str | None = None, doc_prompt: str | None = None,
    batch_size: int = 64, latency_samples: int = 100, show_progress: bool = True, name: str = "retrieval",
    precisions: tuple[str, ...] = ("float32",), store_dtype: str = "float32", store_width: int | None = None,
    layer_pairs: Sequence[tuple[int, int]] = (),
) -> GridResult:
    """Per-cell table (layer, dim, metrics, costs), per-query values of every cell, and stage timings.

    Other precisions than float32 add one point per (cell, precision) and a `precision` column (absent from
    float32-only runs, whose tables and run files stay as they were).
    `executor` (elasticir.execution) encodes the stores and runs every (cell, precision) point: search, score
    and run file. `store_width`: the columns the stores keep (default the grid's widest dim; see
    runner.store_width).
    `layer_pairs`: (query layer, doc layer) pairs besides the grid's own (L, L): one more point per pair, dim and
    precision, with a `doc_layer` column (absent without them). The index of a doc layer at one (dim, precision)
    is built once and searched with the queries of every layer paired with it, so an asymmetric point costs one
    search; the stores encode only the layers each side needs."""
    encoder.check_cells(grid.cells)
    normalize = encoder.info.normalize if normalize is None else normalize
    timings: dict[str, float] = {}
    start = time.perf_counter()
    docs, queries = corpus_stores(encoder, data, cache_dir, store_width or max(grid.dims), query_prompt=query_prompt,
                                  doc_prompt=doc_prompt, store_dtype=store_dtype)
    sides = store_layers(grid, layer_pairs)
    for store, what in ((docs, "corpus"), (queries, "queries")):
        executor.encode_store(store, sides[what], batch_size=batch_size, show_progress=show_progress,
                              desc=f"{name} {what}")
    timings["encode"] = time.perf_counter() - start
    release_free_heap()  # the encode's freed batches, before the indexes are built

    tie_rank, exclude, doc_ids = corpus_order(data, remove_self_hits)
    search = {"normalize": normalize, "index": index, "flat_backend": flat_backend, "k": k,
              "tie_rank": tie_rank, "exclude": exclude, "latency_samples": latency_samples}
    # on-disk ids stay on disk: run files look names up per query
    cells = CellsData(str(docs.dir), str(queries.dir), search, data.query_ids, doc_ids, data.qrels,
                      measures_for(data.qrels), part_dir, tuple(precisions) != ("float32",), bool(layer_pairs))
    work = PointWork(grid_points(grid, precisions, layer_pairs), cells, prepare=open_cells, search=search_point,
                     prepare_scoring=scoring_context, score=score_point, overlap=True)
    desc, unit = ((f"{name}: one index per (Ld, d), searched by each paired Lq", "doc layer cell") if layer_pairs
                  else (f"{name}: index + search per cell", "cell"))
    ran = executor.run_points(work, show_progress=show_progress, desc=desc, unit=unit)
    rows = [row for scored in ran.results for row, _ in scored]
    timings.update(index=sum(scored[0][0]["build_s"] for scored in ran.results),  # one build per point
                   search=sum(r.pop("search_s") for r in rows), evaluate=sum(r.pop("evaluate_s") for r in rows),
                   evaluate_wait=ran.score_wait_s)
    per_query = pd.concat([values for scored in ran.results for _, values in scored], ignore_index=True)
    table = pd.DataFrame(rows)
    return GridResult(_ordered(_by_query_layer(table, precisions) if layer_pairs else table), per_query, timings)


def _by_query_layer(table: pd.DataFrame, precisions: Sequence[str]) -> pd.DataFrame:
    """An asymmetric grid's rows in (query layer, dim, precision, doc layer) order, the grid's own (L, L)
    point among its layer's pairs; `doc_layer` whole numbers, empty where it equals the query layer."""
    order = {p: i for i, p in enumerate(precisions)}
    table = table.assign(_p=table.precision.map(order) if "precision" in table else 0,
                         _d=table.doc_layer.fillna(table.layer))
    table = table.sort_values(["layer", "dim", "_p", "_d"], kind="stable").drop(columns=["_p", "_d"])
    return table.assign(doc_layer=table.doc_layer.astype("Int64")).reset_index(drop=True)


def store_layers(grid: Grid, layer_pairs: Sequence[tuple[int, int]] = ()) -> dict[str, list[int]]:
    """The layers each store encodes: the grid's, plus the doc layers of the pairs for the corpus and their
    query layers for the queries (`--layers 6 --query-layers 1,2` encodes no shallow document layer)."""
    return {"corpus": sorted({*grid.layers, *(d for _, d in layer_pairs)}),
            "queries": sorted({*grid.layers, *(q for q, _ in layer_pairs)})}


def grid_points(grid: Grid, precisions: Sequence[str], layer_pairs: Sequence[tuple[int, int]] = ()) -> list[tuple]:
    """The executor's points: one per (doc layer, dim, precision) index, each with the query layers searched
    against it (the grid's own layer first, then the paired ones). Without pairs: one per grid cell and
    precision, in the grid's order, each searched with its own layer's queries."""
    if not layer_pairs:
        return [(*cell, p, (cell.layer,)) for cell in grid.cells for p in precisions]
    paired: dict[int, list[int]] = {}
    for query_layer, doc_layer in layer_pairs:
        paired.setdefault(doc_layer, []).append(query_layer)
    points = []
    for doc_layer in sorted({*grid.layers, *paired}):
        own = [doc_layer] if doc_layer in grid.layers else []
        queries = tuple(own + sorted(set(paired.get(doc_layer, ())) - set(own)))
        points += [(doc_layer, dim, p, queries) for dim in grid.dims for p in precisions]
    return points


def corpus_order(data: RetrievalData, remove_self_hits: bool) -> tuple[np.ndarray, np.ndarray | None, object]:
    """What a search of `data`'s corpus needs of its ids: the tie order, the self-hit rows to exclude (where the
    queries are documents of the corpus: ArguAna, Quora) and the ids for run files, computed on the on-disk ids
    without a Python string per document."""
    tie_rank = data.doc_ids.tie_ranks() if isinstance(data.doc_ids, DocIds) else tie_ranks(data.doc_ids)
    exclude = rows_of(data.doc_ids, data.query_ids) if remove_self_hits else None
    return tie_rank, exclude, id_array(data.doc_ids)


@dataclass(frozen=True)
class CellsData:
    """What every grid point of one dataset reads, as plain data an executor can ship: the store folders,
    the search settings, the scoring inputs and the part folder for the run files."""

    docs_dir: str
    queries_dir: str
    search: dict  # normalize, index, flat_backend, k, tie_rank, exclude, latency_samples
    query_ids: list[str]
    doc_ids: object  # an object array or the on-disk DocIds (picklable as the names)
    qrels: dict[str, dict[str, int]]
    measures: list
    part_dir: PartFolder  # picklable: where the run files go
    labelled: bool  # a precision axis: rows and per-query tables carry a `precision` column
    asymmetric: bool = False  # layer pairs: rows and per-query tables carry a `doc_layer` column


def open_cells(data: CellsData, device: str) -> dict:
    """A worker's search context: the stores' layers by path, the search settings and the device."""
    return {"docs": StoredLayers(data.docs_dir), "queries": StoredLayers(data.queries_dir), "search": data.search,
            "device": device}


def search_point(point: tuple, prepared: dict) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """One (doc layer, dim, precision, query layers) point: its index built once, searched with each query
    layer's vectors; per query layer its cost row (with `search_s`), hit ids and scores."""
    doc_layer, dim, precision, query_layers = point
    settings = prepared["search"]
    cell = build_index(prepared["docs"].layer(doc_layer), dim, precision, normalize=settings["normalize"],
                       index=settings["index"], flat_backend=settings["flat_backend"], device=prepared["device"])
    searching = {key: settings[key] for key in ("k", "tie_rank", "exclude", "latency_samples")}
    return [_search_cell(cell, prepared["queries"].layer(layer), layer, dim, **searching) for layer in query_layers]


def scoring_context(data: CellsData) -> dict:
    """A scoring worker's context: the qrels parsed once (ir-measures) for all its points."""
    return {"query_ids": data.query_ids, "doc_ids": data.doc_ids, "qrels": data.qrels, "measures": data.measures,
            "evaluator": ir_measures.evaluator(data.measures, data.qrels), "part_dir": data.part_dir,
            "labelled": data.labelled, "asymmetric": data.asymmetric}


def score_point(point: tuple, searched: list, scoring: dict) -> list[tuple[dict, pd.DataFrame]]:
    """One searched point scored, per query layer: its row (costs, metrics, `search_s`, `evaluate_s`) and
    per-query values; its run file written (an asymmetric one named with its doc layer: L2_d64_docL6)."""
    doc_layer, dim, precision, _ = point
    scored = []
    for row, ids, scores in searched:
        layer = row["layer"]
        paired = {"doc_layer": doc_layer} if layer != doc_layer else {}
        slug = Cell(layer, dim).slug + (f"_docL{doc_layer}" if paired else "") + precision_slug(precision)
        aggregate, values, seconds = score_cell(scoring, ids, scores, scoring["part_dir"].run_file(slug),
                                                f"elasticir-{slug}")
        label = {"precision": precision} if scoring["labelled"] else {}
        if scoring.get("asymmetric"):
            label["doc_layer"] = paired.get("doc_layer", pd.NA)
        scored.append((row | label | aggregate | {"evaluate_s": seconds},
                       values.assign(layer=layer, dim=dim, **label)))
    return scored


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    costs = ["index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms", "backend"]
    keys = [c for c in ("layer", "doc_layer", "dim", "precision") if c in table.columns]
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


def _search_cell(cell, queries_full: np.ndarray, layer: int, dim: int, *, k: int, tie_rank: np.ndarray,
                 exclude: np.ndarray | None, latency_samples: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """One built index searched with one layer's queries, single queries timed. Returns the cost row (with
    `search_s`; `layer` is the query layer), the hit ids and scores."""
    scores, ids, search_s = cell.search(queries_full, k, tie_rank, exclude)
    p50, p95 = cell.latency_ms(queries_full, k, latency_samples) if latency_samples else (np.nan, np.nan)
    row = {"layer": layer, "dim": dim, "index_bytes": cell.nbytes, "build_s": cell.build_s,
           "search_qps": len(queries_full) / max(search_s, 1e-9), "latency_p50_ms": p50, "latency_p95_ms": p95,
           "backend": cell.backend, "search_s": search_s}
    return row, ids, scores


def score_cell(context: dict, ids: np.ndarray, scores: np.ndarray, run_path: Path, tag: str):
    """Metrics and per-query values of one cell's hits, its run file written; `context` as scoring_context
    builds it."""
    started = time.perf_counter()
    run = to_run(context["query_ids"], context["doc_ids"], ids, scores)
    aggregate, values = evaluate_run(context["qrels"], run, context["measures"], context.get("evaluator"))
    write_trec_run(run_path, run, tag)
    return aggregate, values, time.perf_counter() - started
