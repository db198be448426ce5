"""Training data: pair/triplet JSONL, scored pairs, and retrieval groups mined from a BEIR folder's train qrels.

Everything becomes a `datasets.Dataset` with the column names sentence-transformers' losses expect (anchor,
positive, negative...; or sentence1, sentence2, score); several files become a DatasetDict, which the
sentence-transformers trainer samples one dataset per batch (so triplets and pairs never share a batch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from elasticir.data.beir import load_beir
from elasticir.data.catalog import data_root, find_local
from elasticir.data.corpus import DocIds, id_array, rows_of
from elasticir.data.jsonl import read_jsonl
from elasticir.errors import DataNotFoundError, InputFormatError
from elasticir.io import file_checksum

PAIR_KINDS = ("pairs", "scored")
MINERS = ("bm25", "model", "none")
# STSb train shares 50-62% of its pairs with the STS13-16 test sets (data README): allowed, but labelled.
LOW_RESOURCE_NOTE = ("low-resource setting: trained on STSb train, which shares 50-62% of its pairs with the "
                     "STS13-16 test sets; compare only with runs in the same setting")


@dataclass
class TrainingData:
    """Named datasets of one kind, the files they came from, and what a reader of the results must know."""

    datasets: dict[str, object]  # name -> datasets.Dataset
    kind: str  # "pairs" (MNRL: anchor, positive, negatives...) or "scored" (CoSENT: sentence1, sentence2, score)
    files: list[Path]
    notes: list[str] = field(default_factory=list)

    def checksums(self) -> list[dict]:
        return [file_checksum(path) for path in self.files]

    @property
    def rows(self) -> int:
        return sum(len(dataset) for dataset in self.datasets.values())


def resolve(spec: str, root: Path) -> Path:
    """A training file or BEIR folder (see `find_local`), or an error that says what is accepted."""
    found = find_local(spec, root)
    if found:
        return found
    raise DataNotFoundError(
        f"training data {spec!r} not found: not a file or folder, not {root / spec}, and no BEIR folder "
        f"{root}/beir/{spec}/. Fix: give a JSONL path (anchor/positive[/negative] or sentence1/sentence2/score), "
        "a BEIR folder with qrels/train.tsv, or set ELASTICIR_DATA to the data root that has it"
    )


def refuse_evaluation_data(path: Path) -> None:
    """Never train on an evaluation set: SICK-R is all of SICK, and any STS `test` file is a test set."""
    parts = {part.lower() for part in path.parts}
    if parts & {"sickr", "sick", "sick-r"} or (("sts" in parts) and path.name.startswith("test")):
        raise InputFormatError(
            f"{path}: this is an STS evaluation set (SICK-R uses all SICK pairs; sts/*/test is a test split); "
            "training on it would leak into the results. Train on pairs/snli, pairs/mrpc or sts/stsbenchmark/train"
        )


def check_specs(specs: list[str], root: str | Path | None = None) -> list[Path]:
    """Resolve every spec and refuse evaluation sets before any work (or any output folder) is started."""
    if not specs:
        raise InputFormatError("no training data given; pass --data FILE[,FILE...]")
    paths = [resolve(spec, data_root(root)) for spec in specs]
    for path in paths:
        refuse_evaluation_data(path)
    return paths


def read_pair_file(path: Path) -> tuple[str, dict[str, list]]:
    """Columns of a pair/triplet file (anchor, positive[, negative]) or a scored-pair file (sentence1, sentence2,
    score); the first line decides the kind and every other line must match it."""
    columns: dict[str, list] = {}
    kind = keys = None
    for number, row in read_jsonl(path):
        if kind is None:
            if {"anchor", "positive"} <= row.keys():
                kind, keys = "pairs", ["anchor", "positive"] + (["negative"] if "negative" in row else [])
            elif {"sentence1", "sentence2", "score"} <= row.keys():
                kind, keys = "scored", ["sentence1", "sentence2", "score"]
            else:
                raise InputFormatError(
                    f"{path} line {number}: fields {sorted(row)} are neither anchor/positive[/negative] "
                    "(pairs, triplets) nor sentence1/sentence2/score (scored pairs)"
                )
            columns = {key: [] for key in keys}
        for key in keys:
            value = row.get(key)
            if key == "score":
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise InputFormatError(f"{path} line {number}: score {value!r} is not a number")
                value = float(value)
            elif not isinstance(value, str) or not value.strip():
                raise InputFormatError(
                    f"{path} line {number}: {key!r} is {'missing' if value is None else 'empty or not text'}; "
                    f"every line of this file needs non-empty {', '.join(k for k in keys if k != 'score')}"
                )
            columns[key].append(value)
    if kind is None:
        raise InputFormatError(f"{path}: no rows; a training file needs at least one JSON line")
    return kind, columns


def retrieval_groups(folder: Path, *, negatives: int, miner: str, depth: int, seed: int,
                     model: str | None) -> tuple[dict[str, list], list[Path], str]:
    """(query, positive, k negatives) rows from qrels/train.tsv; negatives are sampled from the top `depth`
    non-relevant documents of BM25 (pyserini, flat title + text) or of the model's full cell."""
    data = load_beir(folder, split="train")
    queries = dict(zip(data.query_ids, data.query_texts))
    ranked = _mine(data, miner, depth, model) if negatives and miner != "none" else {}
    documents = _texts_of(data, {doc for judged in data.qrels.values() for doc in judged}
                          | {doc for hits in ranked.values() for doc in hits})
    rng = random.Random(seed)
    columns: dict[str, list] = {"anchor": [], "positive": [], **{f"negative_{i + 1}": [] for i in range(negatives)}}
    dropped = 0
    for qid in data.query_ids:
        relevant = {doc for doc, grade in data.qrels[qid].items() if grade > 0}
        pool = [doc for doc in ranked.get(qid, []) if doc not in relevant and documents[doc]]
        if negatives and len(pool) < negatives:
            dropped += 1
            continue
        for doc in sorted(relevant):
            if not documents[doc]:
                continue
            columns["anchor"].append(queries[qid])
            columns["positive"].append(documents[doc])
            for i, negative in enumerate(rng.sample(pool, negatives)):
                columns[f"negative_{i + 1}"].append(documents[negative])
    note = (f"{folder.name} train groups: {len(columns['anchor'])} (query, positive"
            + (f", {negatives} {miner} negatives from the top {depth})" if negatives else ")")
            + (f"; {dropped} queries without enough negatives skipped" if dropped else ""))
    return columns, data.files, note


def _texts_of(data, names: set[str]) -> dict[str, str]:
    """{id: text} of the documents the groups use (judged or mined), not of the whole corpus."""
    names = sorted(names)
    rows = rows_of(data.doc_ids, names)
    return {name: data.doc_texts[int(row)] for name, row in zip(names, rows) if row >= 0}


def _mine(data, miner: str, depth: int, model: str | None) -> dict[str, list[str]]:
    fetch = depth + max(len(judged) for judged in data.qrels.values())
    if miner == "bm25":
        import tempfile

        from elasticir.index.bm25 import bm25_search, build_bm25_index

        with tempfile.TemporaryDirectory(prefix="elasticir-mine-") as tmp:
            index = build_bm25_index(zip(data.doc_ids, data.doc_texts), Path(tmp) / "index")
            run = bm25_search(index, dict(zip(data.query_ids, data.query_texts)), k=fetch)
        return {qid: list(hits) for qid, hits in run.items()}

    from elasticir.encoders import ElasticEncoder
    from elasticir.index.dense import CellIndex, tie_ranks

    encoder = ElasticEncoder(model) if model else ElasticEncoder()
    full = encoder.num_layers
    docs = encoder.encode(data.doc_texts, [full])[full]
    queries = encoder.encode(data.query_texts, [full])[full]
    index = CellIndex(docs, encoder.hidden_size, normalize=encoder.info.normalize)
    ties = data.doc_ids.tie_ranks() if isinstance(data.doc_ids, DocIds) else tie_ranks(data.doc_ids)
    _, rows, _ = index.search(queries, min(fetch, len(docs)), ties)
    ids = id_array(data.doc_ids)
    return {qid: list(ids[hit_rows]) for qid, hit_rows in zip(data.query_ids, rows)}


def load_training_data(specs: list[str], *, root: str | Path | None = None, negatives: int = 1,
                       miner: str = "bm25", depth: int = 30, seed: int = 0, model: str | None = None) -> TrainingData:
    """Read every spec into one TrainingData; mixing scored pairs with pairs/triplets is refused (they need
    different base losses)."""
    from datasets import Dataset

    if miner not in MINERS:
        raise InputFormatError(f"negative miner {miner!r}: choose one of {', '.join(MINERS)}")
    datasets, files, notes, kinds = {}, [], [], set()
    for path in check_specs(specs, root):
        if path.is_dir():
            if not (path / "qrels" / "train.tsv").is_file():
                raise InputFormatError(f"{path}: a BEIR folder used for training needs qrels/train.tsv")
            columns, used, note = retrieval_groups(path, negatives=negatives, miner=miner, depth=depth,
                                                   seed=seed, model=model)
            kind, name = "pairs", path.name
            notes.append(note)
            files.extend(used)
        else:
            kind, columns = read_pair_file(path)
            name = path.parent.name if path.name.startswith(("train", "test", "validation")) else path.stem
            files.append(path)
            if "stsbenchmark" in path.parts:
                notes.append(LOW_RESOURCE_NOTE)
        if not columns["anchor" if kind == "pairs" else "sentence1"]:
            raise InputFormatError(f"{path}: no usable training rows")
        while name in datasets:
            name += "_"
        datasets[name] = Dataset.from_dict(columns)
        kinds.add(kind)
    if len(kinds) > 1:
        raise InputFormatError(
            "the data mixes scored pairs (sentence1/sentence2/score, trained with CoSENT) and pairs or triplets "
            "(anchor/positive, trained with MultipleNegativesRanking); train them in separate runs"
        )
    return TrainingData(datasets, kinds.pop(), files, notes)
