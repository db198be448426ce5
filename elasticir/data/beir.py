"""BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), validated.

Why not beir's GenericDataLoader? It keeps the last of two duplicate ids silently, accepts qrels that point at
documents that do not exist, and reports no line numbers. We read the same format and refuse those cases,
naming the file and line. Documents with empty text are kept (BEIR and MTEB keep them; Cranfield has two, one
judged relevant) and counted in `notes`, so nothing is dropped silently.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elasticir.data.corpus import DocIds, DocTexts, document_text, open_corpus
from elasticir.data.jsonl import numbered_lines, read_jsonl
from elasticir.errors import InputFormatError


@dataclass
class RetrievalData:
    """`doc_ids` / `doc_texts`: sequences of str; from load_beir the on-disk DocIds / DocTexts of the corpus (see
    elasticir.data.corpus), lists when built by hand. Queries and qrels are small and stay in memory."""

    doc_ids: Sequence[str]
    doc_texts: Sequence[str]
    query_ids: list[str]  # only the queries judged in the split, as BEIR evaluates
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def _first_existing(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise InputFormatError(f"{folder}: missing {name} (BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")


QRELS_HEADER_FIELDS = {"query-id", "query_id", "qid", "corpus-id", "corpus_id", "doc-id", "docid", "doc_id"}


def _is_header(row: list[str]) -> bool:
    """A header names its columns (BEIR: query-id, corpus-id, score). Judged by content, not by "the last
    field is not an integer", which would swallow a first judgement whose grade is malformed."""
    return any(field.strip().lower() in QRELS_HEADER_FIELDS for field in row[:2])


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV with a `query-id corpus-id score` header (a header-less file is accepted too)."""
    qrels: dict[str, dict[str, int]] = {}
    seen_row = False
    # read as bytes line by line: a leading BOM is not part of an id, and a non-UTF-8 byte names its line
    for number, text in numbered_lines(path):
        row = next(csv.reader([text.rstrip("\r\n")], delimiter="\t"), [])
        if not row or not any(field.strip() for field in row):
            continue
        if not seen_row and _is_header(row):
            seen_row = True
            continue
        seen_row = True
        if len(row) != 3:
            raise InputFormatError(
                f"{path} line {number}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(row)}"
            )
        try:
            score = int(row[2])
        except ValueError:
            raise InputFormatError(f"{path} line {number}: score {row[2]!r} is not an integer") from None
        qrels.setdefault(row[0], {})[row[1]] = score
    if not qrels:
        raise InputFormatError(f"{path}: no judgements")
    return qrels


def _read_texts(path: Path, kind: str) -> tuple[dict[str, str], dict[str, int]]:
    texts: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, row in read_jsonl(path, required=("_id", "text")):
        key = str(row["_id"])
        if key in lines:
            raise InputFormatError(
                f"{path} line {number}: duplicate {kind} id {key!r} (first on line {lines[key]}); ids must be unique"
            )
        lines[key] = number
        texts[key] = document_text(row) if kind == "document" else (row.get("text") or "").strip()
    return texts, lines


def first_documents(corpus_path: Path, count: int) -> list[str]:
    """The first `count` documents' texts, read without loading the rest of the corpus (a sample for timing)."""
    texts = []
    for _number, row in read_jsonl(corpus_path, required=("_id", "text")):
        if len(texts) >= count:
            break
        texts.append(document_text(row))
    return texts


def judged_query_texts(queries_path: Path, qrels_path: Path | None) -> list[str]:
    """The texts of the queries a split judges (every query when there are no qrels), without the corpus."""
    queries, _ = _read_texts(queries_path, "query")
    judged = read_qrels(qrels_path) if qrels_path else queries
    return [text for query_id, text in queries.items() if query_id in judged]


def beir_files(folder: Path, split: str = "test") -> list[Path]:
    """The three files a BEIR evaluation reads (corpus, queries, qrels of `split`), checked to exist."""
    corpus_path = _first_existing(folder, "corpus.jsonl")
    queries_path = _first_existing(folder, "queries.jsonl")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise InputFormatError(f"{qrels_path} not found; splits present: {', '.join(splits) or 'none'}")
    return [corpus_path, queries_path, qrels_path]


def load_beir(folder: Path, split: str = "test", *, cache: Path | None = None) -> RetrievalData:
    """Read and cross-check a BEIR folder; documents are `title + " " + text` (the BEIR/MTEB convention). The
    corpus stays on disk (elasticir.data.corpus; its index is built once into `cache`, default beside the
    dataset cache), so memory does not grow with its size; queries and qrels are read into memory."""
    corpus_path, queries_path, qrels_path = beir_files(folder, split)
    corpus = open_corpus(corpus_path, cache)
    queries, query_lines = _read_texts(queries_path, "query")
    for count, file, kind in ((len(corpus), corpus_path, "documents"), (len(queries), queries_path, "queries")):
        if not count:  # said first: otherwise it reads as judged ids missing from a file that has none at all
            raise InputFormatError(f"{file}: the file is empty (no {kind}); BEIR needs one JSON object per line with "
                                   "_id and text - restore or re-download it")
    qrels = read_qrels(qrels_path)
    doc_ids, doc_texts = DocIds(corpus), DocTexts(corpus)

    missing_queries = [q for q in qrels if q not in queries]
    if missing_queries:
        raise InputFormatError(
            f"{qrels_path}: {len(missing_queries)} judged query id(s) are not in {queries_path.name}, "
            f"e.g. {missing_queries[:3]}; fix the qrels or add the queries"
        )
    judged = sorted({d for judgements in qrels.values() for d in judgements})
    missing_docs = [d for d, row in zip(judged, doc_ids.rows_of(judged)) if row < 0]
    if missing_docs:
        raise InputFormatError(
            f"{qrels_path}: {len(missing_docs)} judged document id(s) are not in {corpus_path.name}, "
            f"e.g. {missing_docs[:3]}; the corpus is incomplete or the qrels belong to another version"
        )
    empty_queries = [q for q in qrels if not queries[q]]
    if empty_queries:
        raise InputFormatError(
            f"{queries_path} line {query_lines[empty_queries[0]]}: query {empty_queries[0]!r} has empty text "
            f"({len(empty_queries)} judged queries are empty); fix the text or drop it from the qrels"
        )
    notes = []
    if corpus.meta["empty"]:
        notes.append(f"{corpus.meta['empty']} document(s) with empty title and text kept "
                     f"(ids {', '.join(corpus.meta['empty_ids'])})")
    query_ids = [q for q in queries if q in qrels]
    return RetrievalData(
        doc_ids=doc_ids, doc_texts=doc_texts,
        query_ids=query_ids, query_texts=[queries[q] for q in query_ids],
        qrels=qrels, files=[corpus_path, queries_path, qrels_path], notes=notes,
    )
