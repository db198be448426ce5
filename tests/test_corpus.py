"""The on-disk corpus gives what the in-memory lists gave: texts, ids, store keys, metrics and errors."""

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from elasticir.cells import Grid
from elasticir.data.beir import RetrievalData, load_beir
from elasticir.data.corpus import DocIds, DocTexts, document_text, open_corpus
from elasticir.data.jsonl import read_jsonl
from elasticir.data.subset import subset_retrieval
from elasticir.encoders.store import store_key
from elasticir.errors import InputFormatError
from elasticir.evaluation.retrieval import to_run
from elasticir.evaluation.standalone import evaluate_retrieval
from elasticir.index.dense import tie_ranks
from elasticir.results.store import PartFolder

ROWS = [
    {"_id": "d1", "title": "Guitars", "text": "A man is playing a guitar on stage."},
    {"_id": "d2", "title": "", "text": "  The cat sleeps on the warm sofa.  "},
    {"_id": "d10", "title": None, "text": "Stock markets fell — sharply — on Monday: 5 %"},
    {"_id": 7, "title": "Cooking", "text": ""},  # a numeric id is read as "7", as before
    {"_id": "d3", "title": "", "text": ""},  # empty: kept and counted
    {"_id": "ü-ñ", "title": "Ünïcode", "text": "naïve café\nwith a newline and a \r return", "extra": [1, 2]},
]


@pytest.fixture(autouse=True)
def corpus_cache(tmp_path, monkeypatch):
    """Corpus indexes go where a user's would (beside the dataset cache), here under the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "elasticir" / "corpus"


def write_folder(folder: Path, rows=ROWS, *, gz=False, bom=False, blank_lines=True) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" + ("\n" if blank_lines and i == 1 else "")
             for i, row in enumerate(rows)]
    data = ("\ufeff" if bom else "") + "".join(lines)
    if gz:
        (folder / "corpus.jsonl.gz").write_bytes(gzip.compress(data.encode()))
    else:
        (folder / "corpus.jsonl").write_text(data, encoding="utf-8")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "guitar"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "cat sofa"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td10\t0\n")
    return folder


def reference_lists(path: Path) -> tuple[list[str], list[str]]:
    """What load_beir held before the corpus stayed on disk: a dict of id -> title + " " + text, in file order."""
    corpus = {str(row["_id"]): document_text(row) for _, row in read_jsonl(path, required=("_id", "text"))}
    return list(corpus), list(corpus.values())


@pytest.mark.parametrize("gz, bom", [(False, False), (True, False), (False, True), (True, True)])
def test_streamed_corpus_gives_the_lists_and_the_store_key(tmp_path, tiny_encoder, gz, bom):
    folder = write_folder(tmp_path / "beir" / "toy", gz=gz, bom=bom)
    data = load_beir(folder)
    ids, texts = reference_lists(data.files[0])
    assert isinstance(data.doc_ids, DocIds) and isinstance(data.doc_texts, DocTexts)
    assert list(data.doc_ids) == ids and list(data.doc_texts) == texts
    assert [data.doc_texts[i] for i in range(len(texts))] == texts  # by index (pread) as by iteration
    assert data.doc_texts[-1] == texts[-1] and data.doc_ids[-1] == ids[-1] == "ü-ñ"
    assert data.doc_texts[2] == "Stock markets fell — sharply — on Monday: 5 %"
    assert data.notes == ["1 document(s) with empty title and text kept (ids d3)"]
    for prompt in ("", "passage: "):
        assert (store_key(tiny_encoder, data.doc_ids, data.doc_texts, prompt, "float32")
                == store_key(tiny_encoder, ids, texts, prompt, "float32"))
    assert sorted(p.name for p in folder.rglob("*")) == sorted(["qrels", "test.tsv", "queries.jsonl",
                                                                 "corpus.jsonl" + (".gz" if gz else "")])


def test_real_beir_set_gives_the_lists_and_the_store_key(tiny_encoder):
    folder = Path(os.environ.get("ELASTICIR_DATA", "/nonexistent")) / "beir" / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip("SciFact is not under $ELASTICIR_DATA")
    data = load_beir(folder)
    ids, texts = reference_lists(folder / "corpus.jsonl")
    assert len(ids) == 5183 and list(data.doc_ids) == ids and list(data.doc_texts) == texts
    rows = np.random.default_rng(0).choice(len(ids), 200, replace=False)
    assert [data.doc_texts[int(i)] for i in rows] == [texts[i] for i in rows]
    assert (store_key(tiny_encoder, data.doc_ids, data.doc_texts, "", "float32")
            == store_key(tiny_encoder, ids, texts, "", "float32"))
    assert np.array_equal(data.doc_ids.tie_ranks(), tie_ranks(ids))


def test_views_slices_and_fancy_indexing(tmp_path):
    data = load_beir(write_folder(tmp_path / "toy"))
    ids, texts = list(data.doc_ids), list(data.doc_texts)
    assert list(data.doc_texts[1:4]) == texts[1:4] and data.doc_texts[1:4] == texts[1:4]
    assert list(data.doc_texts[::-2]) == texts[::-2] and list(data.doc_ids[4:1:-1]) == ids[4:1:-1]
    picked = data.doc_texts.take([5, 0, 3])
    assert list(picked) == [texts[5], texts[0], texts[3]] and picked[1] == texts[0] and len(picked) == 3
    assert list(data.doc_texts.take([0, 2, 5])) == [texts[0], texts[2], texts[5]]  # ascending: one read
    assert list(data.doc_texts[2:4].take([1])) == [texts[3]]  # a view of a view
    rows = np.array([[5, 0], [1, 1]])
    assert data.doc_ids[rows].tolist() == [[ids[5], ids[0]], [ids[1], ids[1]]]
    assert "d10" in data.doc_ids and "d4" not in data.doc_ids
    assert data.doc_ids.rows_of(["d10", "nope", "d1"]).tolist() == [2, -1, 0]
    assert data.doc_ids.isin({"d2", "7"}).tolist() == [False, True, False, True, False, False]
    assert np.array_equal(data.doc_ids.tie_ranks(), tie_ranks(ids))
    assert np.asarray(data.doc_ids, dtype=object).tolist() == ids
    with pytest.raises(IndexError):
        data.doc_texts[6]
    again = pickle.loads(pickle.dumps(data.doc_texts.take([4, 2])))  # a spawned worker reopens the files
    assert list(again) == [texts[4], texts[2]]
    shipped = pickle.loads(pickle.dumps(data.doc_ids[1:]))  # a Ray task gets the names: no cache path needed
    assert isinstance(shipped, np.ndarray) and shipped.tolist() == ids[1:]


def test_run_files_name_the_same_documents():
    ids = ["d1", "d2", "d10"]
    hits, scores = np.array([[2, 0, -1], [1, -1, -1]]), np.array([[0.5, 0.25, -np.inf], [1.0, 0, 0]], np.float32)
    expected = {"q1": {"d10": 0.5, "d1": 0.25}, "q2": {"d2": 1.0}}
    assert to_run(["q1", "q2"], np.asarray(ids, dtype=object), hits, scores) == expected


def test_retrieval_metrics_and_run_files_are_identical(tmp_path, tiny_encoder):
    data = load_beir(write_folder(tmp_path / "toy"))
    ids, texts = reference_lists(data.files[0])
    lists = RetrievalData(ids, texts, data.query_ids, data.query_texts, data.qrels, data.files)
    grid = Grid.for_model(4, 32, [1, 4], [16, 32])
    results = {}
    for name, dataset in (("streamed", data), ("lists", lists)):
        for self_hits in (False, True):
            part = tmp_path / f"{name}-{self_hits}"
            table, per_query, _ = evaluate_retrieval(tiny_encoder, dataset, grid, part_dir=PartFolder(part), k=5,
                                                     cache_dir=tmp_path / f"cache-{name}", show_progress=False,
                                                     latency_samples=0, remove_self_hits=self_hits)
            runs = {p.name: gzip.decompress(p.read_bytes()) for p in sorted((part / "runs").glob("*.trec.gz"))}
            results[name, self_hits] = (table.drop(columns=["build_s", "search_qps"]), per_query, runs)
    for self_hits in (False, True):
        (a_table, a_values, a_runs), (b_table, b_values, b_runs) = results["streamed", self_hits], results["lists", self_hits]
        assert a_table.equals(b_table) and a_values.equals(b_values) and a_runs == b_runs and len(a_runs) == 4
    assert sorted(p.name for p in (tmp_path / "cache-streamed").iterdir()) == sorted(
        p.name for p in (tmp_path / "cache-lists").iterdir())  # the same store keys


def test_subsets_are_views_of_the_same_rows(tmp_path):
    data = load_beir(write_folder(tmp_path / "toy"))
    ids, texts = reference_lists(data.files[0])
    lists = RetrievalData(ids, texts, data.query_ids, data.query_texts, data.qrels, data.files, data.notes)
    for queries, corpus in ((1, 2), (None, 4), (2, None)):
        view, listed = subset_retrieval(data, queries, corpus, 3), subset_retrieval(lists, queries, corpus, 3)
        assert isinstance(view.doc_texts, DocTexts) and list(view.doc_texts) == listed.doc_texts
        assert list(view.doc_ids) == listed.doc_ids and view.notes == listed.notes
        assert view.query_ids == listed.query_ids and view.qrels == listed.qrels


@pytest.mark.parametrize("gz", [False, True])
def test_a_corrupt_line_names_file_and_line_and_the_fixed_file_is_indexed_anew(tmp_path, corpus_cache, gz):
    folder = write_folder(tmp_path / "toy", gz=gz)
    path = folder / ("corpus.jsonl.gz" if gz else "corpus.jsonl")
    good = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    lines = good.split(b"\n")
    lines[4] = lines[4][:-3]  # line 5 (after the blank line 3): truncated JSON
    broken = b"\n".join(lines)
    path.write_bytes(gzip.compress(broken) if gz else broken)
    with pytest.raises(InputFormatError, match=rf"{path.name} line 5: not valid JSON at column \d+"):
        load_beir(folder)
    assert not any(p.name.endswith("-v1") for p in corpus_cache.iterdir())  # nothing half-built is kept
    path.write_bytes(gzip.compress(good) if gz else good)
    assert list(load_beir(folder).doc_ids) == reference_lists(path)[0]
    duplicated = good.replace(b'"_id": "d10"', b'"_id": "d1"')
    path.write_bytes(gzip.compress(duplicated) if gz else duplicated)
    with pytest.raises(InputFormatError, match=r"line 4: duplicate document id 'd1' \(first on line 1\)"):
        load_beir(folder)


def test_an_index_is_built_once_per_file_content(tmp_path, corpus_cache):
    first = write_folder(tmp_path / "a")
    second = write_folder(tmp_path / "b")  # the same bytes in another folder share one index
    load_beir(first)
    stamp = {p: p.stat().st_mtime_ns for p in corpus_cache.rglob("*")}
    data = load_beir(second)
    assert {p: p.stat().st_mtime_ns for p in corpus_cache.rglob("*")} == stamp and len(stamp) == 4
    assert data.doc_texts.index.data_file == second / "corpus.jsonl"  # texts are read from its own file
    index = open_corpus(second / "corpus.jsonl")
    assert index.meta["count"] == len(ROWS) and index.meta["empty_ids"] == ["d3"]
