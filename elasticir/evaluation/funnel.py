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
"""

from __future__ import annotations

import gzip
import re
import time
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import pandas as pd

from elasticir.cells import Cell, validate_cells
from elasticir.encoders import truncate
from elasticir.errors import ElasticIRError
from elasticir.index.quantized import PRECISIONS, RESCORE_MULTIPLIER, build_index, check_precisions

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
        p1 = "" if self.precision1 == "float32" else "_" + self.precision1.replace("+", "-")
        return f"funnel_L{self.layer1}_d{self.dim1}{p1}_K{self.k}_L{self.layer2}_d{self.dim2}"

    def search_madds(self, n_docs: int) -> float:
        stage1 = {"binary": 0, "binary+rescore": RESCORE_MULTIPLIER * self.k * self.dim1}.get(self.precision1,
                                                                                            n_docs * self.dim1)
        return float(stage1 + self.k * self.dim2)

    def hamming_bits(self, n_docs: int) -> float:
        return float(n_docs * self.dim1) if self.precision1.startswith("binary") else 0.0


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
    queries = truncate(queries_full, dim, normalize)
    scores = np.full((len(shortlist), keep), -np.inf, dtype=np.float32)
    ids = np.full((len(shortlist), keep), -1, dtype=np.int64)
    for row, candidates in enumerate(shortlist):
        candidates = candidates[candidates >= 0]
        values = truncate(docs_full[candidates], dim, normalize) @ queries[row]
        order = np.lexsort((tie_rank[candidates], -values))[:keep]
        scores[row, : len(order)], ids[row, : len(order)] = values[order], candidates[order]
    return scores, ids


@dataclass
class FunnelInputs:
    """What every funnel of one dataset reads: the stores, the scoring context and the full cell."""

    docs: object  # EmbeddingStore of the corpus
    queries: object  # EmbeddingStore of the judged queries
    tie_rank: np.ndarray
    exclude: np.ndarray | None
    normalize: bool
    k: int
    score: object  # (ids, scores, run_path or None, tag) -> (aggregate, per-query table)


def _full_cell(inputs: FunnelInputs, full: Cell, device: str):
    index = build_index(inputs.docs.layer(full.layer), full.dim, "float32", normalize=inputs.normalize,
                        device=device)
    scores, ids, seconds = index.search(inputs.queries.layer(full.layer), inputs.k, inputs.tie_rank, inputs.exclude)
    return index, inputs.score(ids, scores, None, f"elasticir-{full.slug}"), seconds


def _latencies(inputs: FunnelInputs, funnel: Funnel, index, full: Cell, full_index,
               samples: int) -> tuple[list[float], list[float]]:
    """Milliseconds per query of the funnel (stage-1 search of K + stage-2 rescoring) and of the full cell's
    search, one query at a time, interleaved so that drift of the shared machine hits both alike."""
    q1, q2 = inputs.queries.layer(funnel.layer1), inputs.queries.layer(funnel.layer2)
    full_q, docs2 = inputs.queries.layer(full.layer), inputs.docs.layer(funnel.layer2)
    times, full_times = [], []
    for row in range(min(samples, len(q1))):
        started = time.perf_counter()
        full_index.search(full_q[row:row + 1], inputs.k, inputs.tie_rank)
        full_times.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _, short, _ = index.search(q1[row:row + 1], funnel.k, inputs.tie_rank)
        rescore(docs2, q2[row:row + 1], short, funnel.dim2, normalize=inputs.normalize, tie_rank=inputs.tie_rank,
                keep=min(funnel.k, inputs.k))
        times.append((time.perf_counter() - started) * 1000)
    return times, full_times


def evaluate_group(inputs: FunnelInputs, funnels: list[Funnel], full: Cell, full_index, samples: int,
                   device: str, part_dir, explicit: set) -> list[dict]:
    """The funnels sharing one stage-1 point: one stage-1 index and search (shortlists are prefixes of the
    deepest K), then per funnel stage 2, scoring, and latency interleaved with the full cell's."""
    first = funnels[0]
    q1, n = inputs.queries.layer(first.layer1), len(inputs.tie_rank)
    index = build_index(inputs.docs.layer(first.layer1), first.dim1, first.precision1, normalize=inputs.normalize,
                        device=device)
    _, shortlist, stage1_s = index.search(q1, max(f.k for f in funnels), inputs.tie_rank, inputs.exclude)
    rows = []
    for funnel in funnels:
        docs2, q2 = inputs.docs.layer(funnel.layer2), inputs.queries.layer(funnel.layer2)
        keep = min(funnel.k, inputs.k)
        started = time.perf_counter()
        scores, ids = rescore(docs2, q2, shortlist[:, : funnel.k], funnel.dim2, normalize=inputs.normalize,
                              tie_rank=inputs.tie_rank, keep=keep)
        stage2_s = time.perf_counter() - started
        run_path = part_dir.run_file(funnel.slug) if funnel in explicit else None
        aggregate, values = inputs.score(ids, scores, run_path, f"elasticir-{funnel.slug}")

        times, full_times = _latencies(inputs, funnel, index, full, full_index, samples)
        rows.append({"funnel": str(funnel), "layer1": funnel.layer1, "dim1": funnel.dim1,
                     "precision1": funnel.precision1, "K": funnel.k, "layer2": funnel.layer2, "dim2": funnel.dim2,
                     **aggregate, "search_madds": funnel.search_madds(n), "hamming_bits": funnel.hamming_bits(n),
                     "stage1_bytes": index.nbytes, "stage2_bytes": n * funnel.dim2 * 4,
                     "search_s": stage1_s + stage2_s,
                     "latency_p50_ms": float(np.percentile(times, 50)) if times else np.nan,
                     "latency_p95_ms": float(np.percentile(times, 95)) if times else np.nan,
                     "full_latency_p50_ms": float(np.percentile(full_times, 50)) if full_times else np.nan,
                     "_values": values})
    return rows


def evaluate_funnels(inputs: FunnelInputs, funnels: list[Funnel], full: Cell, *, encode_flops, samples: int,
                     device: str, part_dir, metric: str, explicit_funnels=(), show_progress: bool = True,
                     name: str = "funnel") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per funnel (metrics, costs, ratios to the full cell, paired test) and the per-query values.
    Run files are written for the explicit funnels (an automatic search's hundreds would not be read)."""
    from elasticir.progress import progress

    full_index, (full_aggregate, full_values), full_s = _full_cell(inputs, full, device)
    n = len(inputs.tie_rank)
    rows = []
    key = lambda f: (f.layer1, f.dim1, f.precision1)  # the stage-1 point
    groups = [list(g) for _, g in groupby(sorted(funnels, key=key), key=key)]
    for group in progress(groups, desc=f"{name}: funnels per stage-1 point", unit="point", enabled=show_progress):
        rows += evaluate_group(inputs, group, full, full_index, samples, device, part_dir, set(explicit_funnels))
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
                "hamming_bits": 0.0, "stage1_bytes": full_index.nbytes, "stage2_bytes": 0, "search_s": full_s,
                "encode_flops": encode_flops(full.layer), f"delta_{metric}": 0.0, "madds_ratio": 1.0,
                "latency_ratio": 1.0, "selected": "full cell"}
    table = pd.concat([pd.DataFrame([full_row]), table], ignore_index=True)
    return table, pd.concat(per_query, ignore_index=True)


def _test_against_full(table: pd.DataFrame, per_query: pd.DataFrame, metric: str, full_name: str) -> pd.DataFrame:
    """Paired t-test per funnel against the full cell over the queries (Holm over the funnels), and which
    funnels are selected: per stage-1 precision the cheapest within TOLERANCE of the full cell, and the Pareto
    front of search work vs the metric. Search work = multiply-adds + Hamming bits / 64 (one 64-bit XOR + popcount
    counted as one operation; a convention, stated here and in the notes), ties broken by measured latency."""
    from elasticir.evaluation.significance import holm, paired_ttest, pareto_front

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


def write_per_query(path, per_query: pd.DataFrame) -> None:
    from elasticir.io import atomic_write

    atomic_write(path, gzip.compress(per_query.to_csv(index=False).encode()))


__all__ = ["AUTO_KS", "PRECISIONS", "TOLERANCE", "Funnel", "check_funnel_flags", "check_funnels_fit",
           "evaluate_funnels", "parse_funnel", "rescore", "resolve_funnels"]


# --- the driver a retrieval part calls ------------------------------------------------------------------------
def query_encode_flops(encoder, texts: list[str]):
    """layer -> analytic FLOPs to encode one query of the mean test-query length to that layer (encoders.cost)."""
    from elasticir.encoders.cost import EncoderShape, encode_flops_per_token

    shape = EncoderShape.from_config(encoder.model.config)
    lengths = [len(ids) for ids in encoder.tokenizer(list(texts), truncation=True,
                                                     max_length=encoder.info.max_length)["input_ids"]]
    seq = max(1, round(sum(lengths) / max(1, len(lengths))))
    return lambda layer: float(encode_flops_per_token(shape, int(layer), seq, encoder.info.pooling) * seq), seq


def run_funnels(encoder, data, grid, config, part_dir, *, remove_self_hits: bool, name: str,
                query_prompt: str | None = None, doc_prompt: str | None = None) -> tuple[list[dict], list[str]]:
    """Evaluate the config's funnels on one dataset; writes funnels.csv and funnel_per_query.csv.gz in the part
    folder (the part is finished only when its meta is written after them) and returns the leaderboard records."""
    from elasticir.io import atomic_write

    full = Cell(encoder.num_layers, encoder.hidden_size)
    funnels = resolve_funnels(config.funnels, grid.cells, list(config.precisions), full, len(data.doc_ids))
    explicit = [parse_funnel(s) for s in config.funnels if s != "auto"]
    layers = sorted({f.layer1 for f in funnels} | {f.layer2 for f in funnels} | {full.layer})
    inputs = _inputs(encoder, data, config, layers, remove_self_hits=remove_self_hits, name=name,
                     query_prompt=query_prompt, doc_prompt=doc_prompt)
    encode_flops, seq = query_encode_flops(encoder, data.query_texts)
    metric = "nDCG@10"
    table, per_query = evaluate_funnels(inputs, funnels, full, encode_flops=encode_flops,
                                        samples=config.latency_samples, device=str(encoder.device),
                                        part_dir=part_dir, metric=metric, explicit_funnels=explicit,
                                        show_progress=config.show_progress, name=name)
    write_per_query(part_dir.funnel_per_query, per_query)
    atomic_write(part_dir.funnels, table.to_csv(index=False))
    notes = [(f"{name}: {len(funnels)} funnels against the full cell {full} (stage 2 rescoring the shortlist; "
              f"encode FLOPs for {seq}-token queries, the mean test-query length; search multiply-adds N d1 + K d2, "
              "binary stage 1 as Hamming bit operations apart (selection and Pareto count 64 bits as one "
              "operation); latency: one query at a time, funnel and full cell "
              f"interleaved, {config.latency_samples} queries, {_threads()} torch thread(s))")]
    return funnel_records(table, metric), notes


def _inputs(encoder, data, config, layers: list[int], *, remove_self_hits: bool, name: str,
            query_prompt: str | None = None, doc_prompt: str | None = None) -> FunnelInputs:
    """The corpus and query stores (the same cache entries the grid evaluation uses), the tie order, self-hit
    exclusion and a scorer (ir-measures, optional run file)."""
    import ir_measures

    from elasticir.evaluation.retrieval import (
        corpus_stores,
        evaluate_run,
        measures_for,
        to_run,
        write_trec_run,
    )
    from elasticir.index.dense import tie_ranks

    stores = corpus_stores(encoder, data, config.cache / "embeddings", encoder.hidden_size,  # stage 2: full width
                           query_prompt=query_prompt, doc_prompt=doc_prompt,
                           store_dtype=config.store_dtype)
    for store, what in zip(stores, ("corpus", "queries")):
        store.ensure(layers, batch_size=config.batch_size, show_progress=config.show_progress,
                     desc=f"{name} funnel {what}")
    measures = measures_for(data.qrels)
    evaluator = ir_measures.evaluator(measures, data.qrels)
    doc_ids = np.asarray(data.doc_ids, dtype=object)

    def score(ids, scores, run_path, tag):
        run = to_run(data.query_ids, doc_ids, ids, scores)
        if run_path is not None:
            write_trec_run(run_path, run, tag)
        return evaluate_run(data.qrels, run, measures, evaluator)

    exclude = None
    if remove_self_hits:
        row_of = {doc: row for row, doc in enumerate(data.doc_ids)}
        exclude = np.array([row_of.get(qid, -1) for qid in data.query_ids])
    normalize = encoder.info.normalize if config.normalize is None else config.normalize
    return FunnelInputs(stores[0], stores[1], tie_ranks(data.doc_ids), exclude, normalize, config.k, score)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


COST_KEYS = ("encode_flops", "search_madds", "hamming_bits", "stage1_bytes", "stage2_bytes", "search_s",
             "latency_p50_ms", "latency_p95_ms", "full_latency_p50_ms", "madds_ratio", "latency_ratio")


def funnel_records(table: pd.DataFrame, metric: str) -> list[dict]:
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
