import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from elasticir.cells import Grid
from elasticir.data.beir import load_beir
from elasticir.encoders import EmbeddingStore
from elasticir.errors import InputFormatError
from elasticir.evaluation.retrieval import evaluate_run
from elasticir.evaluation.standalone import evaluate_retrieval
from elasticir.index.dense import CellIndex, bytes_per_vector, exact_search, tie_ranks
from elasticir.results.store import PartFolder
from elasticir.runner import RunConfig, run

DOCS = {
    "d1": ("Guitars", "A man is playing a guitar on stage."),
    "d2": ("Cats", "The cat sleeps on the warm sofa."),
    "d9": ("Cats", "The cat sleeps on the warm sofa."),  # identical to d2: a guaranteed tie
    "d3": ("Markets", "Stock markets fell sharply on Monday."),
    "d4": ("Cooking", "Slice the onions and fry them in butter."),
    "d5": ("Planes", "The plane took off from the runway."),
    "d6": ("", ""),  # empty document, kept and reported
}
QUERIES = {"q1": "who plays the guitar", "q2": "sleeping cat", "d3": "Markets Stock markets fell sharply on Monday."}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d9", 1), ("d3", "d3", 1), ("d3", "d4", 0)]


def write_beir(folder, docs=DOCS, queries=QUERIES, qrels=QRELS, header=True):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def beir_root(tmp_path):
    write_beir(tmp_path / "data" / "beir" / "toyir")
    return tmp_path / "data"


def test_beir_folder_is_read_and_empty_docs_reported(beir_root):
    data = load_beir(beir_root / "beir" / "toyir")
    assert data.doc_texts[0] == "Guitars A man is playing a guitar on stage." and len(data.doc_ids) == 7
    assert data.query_ids == ["q1", "q2", "d3"] and data.qrels["q2"] == {"d2": 2, "d9": 1}
    assert data.notes and "1 document(s) with empty title and text kept (ids d6)" in data.notes[0]
    # the latency probe's sample: the first documents as evaluated, read without loading the whole corpus
    from elasticir.data.beir import first_documents

    assert first_documents(beir_root / "beir" / "toyir" / "corpus.jsonl", 3) == data.doc_texts[:3]


@pytest.mark.parametrize("change, message", [
    (lambda d, q, r: (dict(d) | {"d1": ("x", "y")}, q, r), None),  # control: valid
    (lambda d, q, r: (d, q, r + [("q1", "nope", 1)]), "judged document id.*'nope'"),
    (lambda d, q, r: (d, q, r + [("q7", "d1", 1)]), "judged query id.*'q7'"),
    (lambda d, q, r: (d, dict(q) | {"q1": "  "}, r), "queries.jsonl line 1: query 'q1' has empty text"),
])
def test_bad_beir_input_is_refused(tmp_path, change, message):
    folder = write_beir(tmp_path / "x", *change(DOCS, QUERIES, QRELS))
    if message is None:
        load_beir(folder)
    else:
        with pytest.raises(InputFormatError, match=message):
            load_beir(folder)


def test_duplicate_ids_and_bad_qrels_name_file_and_line(tmp_path):
    folder = write_beir(tmp_path / "x")
    with open(folder / "corpus.jsonl", "a") as handle:
        handle.write(json.dumps({"_id": "d2", "title": "", "text": "again"}) + "\n")
    with pytest.raises(InputFormatError, match=r"corpus.jsonl line 8: duplicate document id 'd2' \(first on line 2\)"):
        load_beir(folder)
    folder = write_beir(tmp_path / "y")
    with open(folder / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\td1\n")
    with pytest.raises(InputFormatError, match=r"test.tsv line 7: expected 3 tab-separated fields"):
        load_beir(folder)
    with pytest.raises(InputFormatError, match="dev.tsv not found; splits present: test"):
        load_beir(folder, split="dev")


def test_self_hits_and_ties(tiny_encoder, beir_root, tmp_path):
    data = load_beir(beir_root / "beir" / "toyir")
    grid = Grid.for_model(4, 32, [4], [32])
    kwargs = {"part_dir": PartFolder(tmp_path / "part"), "cache_dir": tmp_path / "cache", "show_progress": False, "latency_samples": 3}
    kept = evaluate_retrieval(tiny_encoder, data, grid, **kwargs)
    run_file = tmp_path / "part" / "runs" / "L4_d32.trec.gz"
    lines = [line.split() for line in gzip.decompress(run_file.read_bytes()).decode().splitlines()]
    assert all(len(parts) == 6 and parts[1] == "Q0" and parts[5] == "elasticir-L4_d32" for parts in lines)
    by_query = {}
    for qid, _, doc, rank, score, _ in lines:
        by_query.setdefault(qid, []).append((doc, int(rank), float(score)))
    assert by_query["d3"][0][0] == "d3"  # the query is the document's own text: a self-hit at rank 1
    for hits in by_query.values():
        assert [rank for _, rank, _ in hits] == list(range(1, len(hits) + 1))
        assert all(a[2] >= b[2] for a, b in itertools.pairwise(hits))
        docs = [doc for doc, _, _ in hits]
        assert docs.index("d9") + 1 == docs.index("d2")  # identical docs: tie broken by doc id, descending
    removed = evaluate_retrieval(tiny_encoder, data, grid, remove_self_hits=True, **kwargs)
    lines = gzip.decompress(run_file.read_bytes()).decode().splitlines()
    assert not [line for line in lines if line.split()[0] == line.split()[2]]
    rr = lambda table: table.query("query_id == 'd3' and measure == 'RR@10'")["value"].item()
    assert rr(kept.per_example) == 1.0 and rr(removed.per_example) < 1.0


def test_trec_eval_c_semantics_count_queries_without_results():
    qrels = {"a": {"x": 1}, "b": {"y": 1}}
    aggregate, per_query = evaluate_run(qrels, {"a": {"x": 1.0}}, [__import__("ir_measures").RR @ 10])
    assert aggregate["RR@10"] == 0.5 and len(per_query) == 2


def test_retrieval_run_end_to_end(tiny_encoder, beir_root, tmp_path):
    config = RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, layers=[1, 4], dims=[8, 32],
                       data_root=str(beir_root), out=str(tmp_path), show_progress=False, latency_samples=2)
    outcome = run(config, tiny_encoder)
    cells = outcome.cells
    assert len(cells) == 4 and {"nDCG@10", "RR@10", "R@100", "R@1000", "R(rel=2)@1000"} <= set(cells.columns)
    assert (cells.index_bytes == 7 * cells.dim * 4).all()
    assert outcome.leaderboard.results[0].costs["index_bytes"] == 7 * 8 * 4
    per_query = outcome.dir / "retrieval" / "toyir" / "per_query.csv.gz"
    assert per_query.is_file() and len(list((outcome.dir / "retrieval" / "toyir" / "runs").glob("*.trec.gz"))) == 4
    assert any("empty title and text" in note for note in outcome.leaderboard.notes)


def test_embeddings_are_encoded_once(tiny_encoder, tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b"], ["one text", "another text"])
    assert store.ensure([2], show_progress=False) and not store.ensure([1, 2], show_progress=False) is False
    assert store.missing([1, 2, 3]) == [3]
    monkeypatch.setattr(tiny_encoder, "iter_encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("again")))
    again = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b"], ["one text", "another text"])
    assert not again.ensure([1, 2], show_progress=False) and again.layer(2).shape == (2, 32)
    other_prompt = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b"], ["one text", "another text"], prompt="q: ")
    assert other_prompt.dir != again.dir


def test_torch_exact_search_matches_faiss_flat():
    import faiss
    import torch

    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    docs[10] = docs[20]  # a tie
    queries = np.vstack([rng.normal(size=(20, 16)), docs[10:11]]).astype(np.float32)
    ranks = tie_ranks([f"doc{i:03d}" for i in range(500)])
    index = faiss.IndexFlatIP(16)
    index.add(docs)
    ours = CellIndex(docs, 16, normalize=False)
    theirs = CellIndex(docs, 16, normalize=False, flat_backend="faiss")
    s1, i1, _ = ours.search(queries, 50, ranks)
    s2, i2, _ = theirs.search(queries, 50, ranks)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)
    assert list(i1[-1][:2]) == [20, 10]  # tie: doc020 before doc010 (doc id descending)
    scores, _ = exact_search(queries, torch.from_numpy(docs), 5, doc_chunk=64)  # chunked running top-k
    np.testing.assert_allclose(scores, index.search(queries, 5)[0], rtol=1e-5)



def test_exact_search_scratch_is_bounded_by_bytes_not_by_corpus_size(monkeypatch):
    """The default doc chunk keeps one score block within SCRATCH_BYTES: with a tiny budget, 40k documents are
    searched in several chunks (the floor MIN_DOC_CHUNK), and the ranking is the one-block ranking."""
    import torch

    from elasticir.index import dense

    rng = np.random.default_rng(3)
    docs = torch.from_numpy(rng.normal(size=(40000, 8)).astype(np.float32))
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    blocks = []
    real_topk = torch.topk

    def counting_topk(scores, k, dim):
        blocks.append(scores.shape)
        return real_topk(scores, k, dim=dim)

    whole_s, whole_i = dense.exact_search(queries, docs, 20, doc_chunk=len(docs))
    monkeypatch.setattr(dense, "SCRATCH_BYTES", 1024)
    monkeypatch.setattr(dense.torch, "topk", counting_topk)
    chunked_s, chunked_i = dense.exact_search(queries, docs, 20)
    score_blocks = [shape for shape in blocks if shape[1] > 2 * 20]  # not the merges of the running top-k
    assert max(shape[1] for shape in score_blocks) == dense.MIN_DOC_CHUNK and len(score_blocks) == 3
    np.testing.assert_array_equal(chunked_i, whole_i)
    np.testing.assert_allclose(chunked_s, whole_s, rtol=1e-6)

@pytest.mark.parametrize("factory", ["Flat", "SQ8", pytest.param("IVF16,PQ8x8", marks=pytest.mark.slow), "HNSW32"])
def test_index_bytes_follow_the_faiss_formula(factory):
    """The marginal bytes per added vector (faiss' own serialized size) match the formula; HNSW's 8M is a bound."""
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(16000, 32)).astype(np.float32)
    small, large = (CellIndex(docs[:n], 32, normalize=True, index=factory).nbytes for n in (8000, 16000))
    measured, formula = (large - small) / 8000, bytes_per_vector(factory, 32)
    if factory.startswith("HNSW"):  # level-0 links are 2M ids of 4 bytes; upper levels add a little
        assert 4 * 32 + 4 * 32 <= measured <= formula * 1.05, (measured, formula)
    else:
        assert abs(measured - formula) <= 0.5, (measured, formula)


needs_proc = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux /proc")


def _mapped_rss(path_end: str) -> int:
    """Resident bytes of this process's mappings of files whose path ends with `path_end` (/proc/self/smaps)."""
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            current = len(fields) >= 6 and fields[-1].endswith(path_end)
        elif current and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@needs_proc
def test_encoding_keeps_no_store_pages_resident(tiny_encoder, tmp_path):
    """Batches of length-sorted texts scatter their rows over the whole layer file: written through a shared
    mapping, every touched page stayed in the RSS (the whole store). The writer uses pwrite, so the process
    maps none of the layer while it encodes, and the rows are those of a plain encode."""
    from elasticir.encoders import store as store_module

    texts = [f"passage {i} about {'word ' * (i % 7)}" for i in range(3000)]
    ids = [str(i) for i in range(len(texts))]
    resident, batches = [], itertools.count()

    def encode_pieces(store, pieces, batch_size, **_):
        for piece in pieces:
            store_module.write_rows(store.dir, store.encoder, store.texts[piece.start:piece.stop], piece,
                                    prompt=store.prompt, batch_size=batch_size,
                                    after_batch=lambda: next(batches) % 4 or resident.append(_mapped_rss("layer_2.npy")))

    store = EmbeddingStore(tmp_path, tiny_encoder, ids, texts, dtype="float16")
    store.ensure([2], batch_size=16, show_progress=False, encode_pieces=encode_pieces)
    assert resident and max(resident) == 0
    reference = tiny_encoder.encode(texts, [2], batch_size=16, show_progress=False)[2]
    np.testing.assert_array_equal(store.layer(2), reference.astype(np.float16))


def test_truncate_normalises_in_blocks_with_the_same_numbers_and_no_second_copy(monkeypatch):
    """A cell's vectors are normalised by row blocks: bit-identical to normalising all rows at once, and the
    peak allocation is the prefix itself plus one block, not twice the index (numpy reports to tracemalloc)."""
    import tracemalloc

    from elasticir.encoders import model as model_module

    vectors = np.random.default_rng(0).standard_normal((50_000, 64)).astype(np.float32)
    whole = np.array(vectors[:, :48])
    whole /= np.maximum(np.linalg.norm(whole, axis=1, keepdims=True), 1e-12)
    monkeypatch.setattr(model_module, "NORM_ROWS", 4096)
    tracemalloc.start()
    blocked = model_module.truncate(vectors, 48)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(blocked, whole)
    assert peak < 1.25 * blocked.nbytes, (peak, blocked.nbytes)


@needs_proc
def test_truncate_drops_the_mapped_store_pages_it_read(tmp_path, monkeypatch):
    """Building a cell from a memory-mapped layer keeps its pages out of the RSS (block by block), while the
    memmap stays open: the index is what the process holds, not also the whole mapped layer."""
    from elasticir.encoders import model as model_module

    monkeypatch.setattr(model_module, "NORM_ROWS", 4096)
    path = tmp_path / "layer_1.npy"
    np.save(path, np.random.default_rng(0).standard_normal((40_000, 64)).astype(np.float32))  # 10 MB
    mapped = np.load(path, mmap_mode="r")
    cell = model_module.truncate(mapped, 64)
    assert _mapped_rss("layer_1.npy") <= 2 * 4096 * 64 * 4  # about one block, not 10 MB
    expected = np.array(mapped)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_array_equal(cell, expected)


@needs_proc
def test_free_heap_goes_back_to_the_os_after_an_encode():
    """Freed batch-sized buffers stay resident in the C heap (fragmented by the few that live on); the run hands
    them back after its encode, before the indexes are built."""
    import ctypes

    from elasticir.io import release_free_heap

    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("not glibc")

    def anon_mb() -> int:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon:"))
        return int(line.split()[1]) // 1024

    buffers = [np.ones(1000) for _ in range(25_000)]  # 8 KB each, below malloc's mmap threshold: 200 MB of heap
    _survivors = buffers[::50]  # live to the end: the freed space between them cannot shrink the heap's top
    del buffers
    held = anon_mb()
    release_free_heap()
    assert held - anon_mb() > 100, (held, anon_mb())
