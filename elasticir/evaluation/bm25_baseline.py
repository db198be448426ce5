"""BM25 (pyserini, "flat": title + text in one field, k1=0.9, b=0.4) beside the dense cells of a dataset."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from elasticir.data.beir import RetrievalData
from elasticir.data.catalog import DatasetSpec
from elasticir.evaluation.retrieval import evaluate_run, measures_for, trec_order, write_trec_run
from elasticir.index.bm25 import bm25_search, build_bm25_index
from elasticir.io import atomic_write

if TYPE_CHECKING:
    from elasticir.results.store import PartFolder

K1, B = 0.9, 0.4


def run_bm25(data: RetrievalData, part_dir: PartFolder, cache_dir: Path, spec: DatasetSpec, *, k: int = 1000) -> dict:
    """Index the corpus (once per corpus content), search the judged queries, evaluate like the dense cells."""
    digest = hashlib.sha256()
    for doc_id, text in zip(data.doc_ids, data.doc_texts):
        digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    index_dir = build_bm25_index(zip(data.doc_ids, data.doc_texts), cache_dir / f"{spec.name}-{digest.hexdigest()[:16]}")
    run = trec_order(bm25_search(index_dir, dict(zip(data.query_ids, data.query_texts)), k=k, k1=K1, b=B,
                                 remove_self_hits=spec.remove_self_hits, n_docs=len(data.doc_ids)))
    aggregate, per_query = evaluate_run(data.qrels, run, measures_for(data.qrels))
    run_file = part_dir.bm25_run
    write_trec_run(run_file, run, "bm25-flat")
    atomic_write(part_dir.bm25_per_query, gzip.compress(per_query.to_csv(index=False).encode()))
    return {"name": "bm25-flat", "params": {"k1": K1, "b": B, "fields": "title+text", "k": k,
                                            "remove_self_hits": spec.remove_self_hits},
            "metrics": aggregate, "run_file": str(run_file)}
