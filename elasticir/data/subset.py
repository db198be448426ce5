"""Smoke-test subsets: a small, seeded, honest slice of a dataset to check a config in a minute.

Retrieval keeps the first `queries` judged queries (in a seeded shuffle), every document judged for them (so no
kept query loses a relevant document) and a seeded sample of the other documents up to `corpus`. STS keeps a
seeded sample of `queries` pairs. The numbers are not comparable with full-data numbers (a smaller corpus is an
easier ranking problem), so the limits enter the run id and every table and figure of such a run says "subset".
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from elasticir.data.beir import RetrievalData
from elasticir.data.corpus import CorpusView, DocIds
from elasticir.data.sts import StsPairs
from elasticir.errors import ElasticIRError

SMOKE = {"limit_queries": 50, "limit_corpus": 300}  # what `--smoke` sets: ~a minute for the default job


def describe(limit_queries: int | None, limit_corpus: int | None, seed: int) -> dict | None:
    """The subset record kept in the leaderboard (None for a full run)."""
    if limit_queries is None and limit_corpus is None:
        return None
    for name, value in (("--limit-queries", limit_queries), ("--limit-corpus", limit_corpus)):
        if value is not None and value < 1:
            raise ElasticIRError(f"{name} must be at least 1, got {value}; leave it out for the full dataset")
    return {"limit_queries": limit_queries, "limit_corpus": limit_corpus, "seed": seed}


def subset_retrieval(data: RetrievalData, queries: int | None, corpus: int | None, seed: int) -> RetrievalData:
    """Kept queries, their judged documents, and seeded filler documents up to `corpus` (judged ones always stay)."""
    rng = random.Random(seed)
    query_rows = list(range(len(data.query_ids)))
    if queries is not None and queries < len(query_rows):
        query_rows = sorted(rng.sample(query_rows, queries))
    query_ids = [data.query_ids[i] for i in query_rows]
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    judged = {doc for judgements in qrels.values() for doc in judgements}
    n_docs = len(data.doc_ids)
    doc_rows = list(range(n_docs))
    if corpus is not None and corpus < n_docs:
        is_judged = (data.doc_ids.isin(judged) if isinstance(data.doc_ids, DocIds)
                     else np.array([doc in judged for doc in data.doc_ids], dtype=bool))
        others = np.flatnonzero(~is_judged).tolist()
        room = max(0, corpus - len(judged))
        keep = set(np.flatnonzero(is_judged).tolist()) | set(rng.sample(others, min(room, len(others))))
        doc_rows = sorted(keep)
    note = (f"subset: {len(query_ids)} of {len(data.query_ids)} queries, {len(doc_rows)} of {n_docs} "
            f"documents (every judged document of the kept queries; seed {seed})")
    return replace(data, doc_ids=_take(data.doc_ids, doc_rows), doc_texts=_take(data.doc_texts, doc_rows),
                   query_ids=query_ids, query_texts=[data.query_texts[i] for i in query_rows], qrels=qrels,
                   notes=data.notes + [note])


def _take(values, rows: list[int]):
    """A view of the on-disk corpus (DocIds / DocTexts), a list of a list."""
    return values.take(rows) if isinstance(values, CorpusView) else [values[i] for i in rows]


def subset_sts(pairs: StsPairs, limit: int | None, seed: int) -> StsPairs:
    """A seeded sample of `limit` pairs, in file order."""
    if limit is None or limit >= len(pairs):
        return pairs
    rows = np.sort(np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False))
    return replace(pairs, sentence1=[pairs.sentence1[i] for i in rows], sentence2=[pairs.sentence2[i] for i in rows],
                   scores=pairs.scores[rows])
