"""Fault suite, caches and read-back results: a cached artefact is trusted by its content, not its presence.

A cached ONNX graph, an embedding store's layer, a BM25 index, a finished part's files: each one that was
altered, truncated, emptied or removed after it was written is rebuilt (and the numbers afterwards equal a clean
run's), never reused. Numbers read back from leaderboards and cells.csv are checked by kind, and the user
mistakes of this area (constant gold scores, a non-UTF-8 byte, an empty corpus) end in one `error:` line with
exit status 2, never a traceback. Style and helpers as in test_faults.py.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_faults import (
    GOOD,
    Ctx,
    _cells,
    _same_metrics,
    _sts_rows,
    assert_clean_error,
    ctx,
    invoke,
    ir_args,
    sts_args,
)

__all__ = ["ctx"]  # the fixture, imported for this module's tests

TEXTS = ["A man is playing a guitar.", "A cat sleeps on the sofa.", "Two kids are swimming.", "The stock market fell."]


def run_dir(out: Path) -> Path:
    (found,) = [p for p in out.iterdir() if (p / "leaderboard.json").is_file()]
    return found


def assert_ok(result) -> None:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "error:" not in result.output


# ---- the ONNX graph cache -------------------------------------------------------------------------------------

onnx_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("onnxruntime") is None or __import__("importlib").util.find_spec("onnx") is None,
    reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def onnx_reference(tiny_model_dir, tmp_path_factory):
    """A clean export's cache folder and the torch vectors of TEXTS at layers 1 and 3."""
    from elasticir.encoders import ElasticEncoder

    cache = tmp_path_factory.mktemp("onnx-clean")
    encoder = ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=cache)
    vectors = encoder.encode(TEXTS, [1, 3], show_progress=False)
    torch_vectors = ElasticEncoder(str(tiny_model_dir), device="cpu").encode(TEXTS, [1, 3], show_progress=False)
    for layer in (1, 3):
        np.testing.assert_allclose(vectors[layer], torch_vectors[layer], atol=1e-5, rtol=0)
    return cache, encoder._onnx.path([1, 3]), torch_vectors


def _alter_weights(path: Path) -> None:
    """A graph that still loads and runs, but one weight matrix is scaled: wrong vectors, no error."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest) * 3.0 + 0.5
    largest.CopyFrom(numpy_helper.from_array(array.astype(numpy_helper.to_array(largest).dtype), largest.name))
    onnx.save(model, str(path))


def _record(path: Path) -> None:
    """Rewrite the checksum record to match the altered file (someone 'fixed' the cache by hand)."""
    from elasticir.io import sha256_of_files

    (path.parent / (path.name + ".sha256")).write_text(sha256_of_files([path]) + "  model.onnx\n")


DAMAGE = {
    "altered-weights": _alter_weights,
    "altered-weights-and-record": lambda p: (_alter_weights(p), _record(p)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
    "empty": lambda p: p.write_bytes(b""),
    "record-missing": lambda p: (p.parent / (p.name + ".sha256")).unlink(),
}


SLOW_DAMAGE = ("altered-weights-and-record", "empty", "record-missing")  # same path as the two kept by default


@onnx_needed
@pytest.mark.parametrize("damage", [pytest.param(d, marks=pytest.mark.slow) if d in SLOW_DAMAGE else d
                                    for d in DAMAGE], ids=list(DAMAGE))
def test_a_damaged_onnx_cache_is_exported_again(onnx_reference, tiny_model_dir, tmp_path, damage, capfd):
    """Altered (loads, wrong vectors), truncated / empty (InvalidProtobuf), or unrecorded: exported again, with
    a clean export's vectors, its checksum recorded, and the permissions the umask gives (not mkstemp's 0600)."""
    from elasticir.encoders import ElasticEncoder

    clean_cache, clean_path, torch_vectors = onnx_reference
    cache = tmp_path / "onnx"
    shutil.copytree(clean_cache, cache)
    path = cache / clean_path.relative_to(clean_cache)
    DAMAGE[damage](path)
    previous = os.umask(0o022)
    try:
        encoder = ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=cache)
        vectors = encoder.encode(TEXTS, [1, 3], show_progress=False)
    finally:
        os.umask(previous)
    for layer in (1, 3):  # the numbers of a clean run, not of the damaged graph
        np.testing.assert_allclose(vectors[layer], torch_vectors[layer], atol=1e-5, rtol=0)
    assert encoder._onnx.trusted(path)  # re-exported and recorded
    assert "exporting it again" in capfd.readouterr().err
    assert not list(cache.rglob("*.tmp"))
    assert path.stat().st_mode & 0o777 == 0o644
    assert (path.parent / "model.onnx.sha256").stat().st_mode & 0o777 == 0o644


@onnx_needed
@pytest.mark.slow
def test_a_later_torch_run_does_not_reuse_vectors_of_an_altered_graph(ctx):
    """The reported path: an altered cached graph, an ONNX run, then a torch run on the shared store."""
    clean = ctx.tmp / "clean"
    assert_ok(invoke(ir_args(ctx, out=clean)))
    assert_ok(invoke(ir_args(ctx, backend="onnx")))
    graphs = list((ctx.out / "_cache" / "onnx").rglob("model.onnx"))  # the grid's, and the latency probe's
    assert graphs
    for graph in graphs:
        _alter_weights(graph)
    shutil.rmtree(ctx.out / "_cache" / "embeddings")
    assert_ok(invoke(ir_args(ctx, backend="onnx", recompute=True)))
    _same_metrics(_cells(clean), _cells(ctx.out))
    assert_ok(invoke(ir_args(ctx, recompute=True)))  # torch, reusing the store the ONNX run wrote
    _same_metrics(_cells(clean), _cells(ctx.out))


# ---- the embedding store and the BM25 index -------------------------------------------------------------------

def test_an_altered_store_layer_is_encoded_again(tmp_path, tiny_encoder, capfd):
    from elasticir.encoders import EmbeddingStore

    store = EmbeddingStore(tmp_path / "cache", tiny_encoder, ["a", "b", "c"], TEXTS[:3])
    assert store.ensure([1, 2], show_progress=False)
    reference = store.layer(2).copy()
    layer = np.lib.format.open_memmap(store.dir / "layer_2.npy", mode="r+")
    layer[0, :4] += 1.0  # same shape and dtype, listed in meta.json: only the content tells
    layer.flush()
    del layer
    assert store.missing([1, 2]) == [2]
    assert "does not match the sha256 recorded" in capfd.readouterr().err
    assert store.ensure([1, 2], show_progress=False)
    assert np.array_equal(store.layer(2), reference) and store.missing([1, 2]) == []


@pytest.mark.slow
def test_an_altered_store_layer_is_encoded_again_by_the_cli(ctx):
    assert_ok(invoke(ir_args(ctx)))
    clean = _cells(ctx.out)
    stores = sorted((ctx.out / "_cache" / "embeddings").glob("*/meta.json"))
    assert stores and all("2" in json.loads(m.read_text())["sha256"] for m in stores)
    layer = stores[0].parent / "layer_2.npy"
    array = np.load(layer, mmap_mode="r+")
    array[:] = np.random.default_rng(0).standard_normal(array.shape)  # same shape and dtype: only content differs
    array.flush()
    del array
    result = invoke(ir_args(ctx, recompute=True))
    assert_ok(result)
    assert "does not match the sha256 recorded" in result.output
    _same_metrics(clean, _cells(ctx.out))


def test_a_store_layer_without_a_recorded_checksum_is_encoded_again(ctx, tiny_encoder):
    from elasticir.encoders import EmbeddingStore

    store = EmbeddingStore(ctx.tmp / "cache", tiny_encoder, ["a", "b", "c"], TEXTS[:3])
    assert store.ensure([1, 2], show_progress=False)
    reference = store.layer(1).copy()
    meta = json.loads((store.dir / "meta.json").read_text())
    del meta["sha256"]  # a store written before checksums were recorded
    (store.dir / "meta.json").write_text(json.dumps(meta))
    np.lib.format.open_memmap(store.dir / "layer_1.npy", mode="r+")[:] = 0.0
    assert store.missing([1, 2]) == [1, 2]
    assert store.ensure([1, 2], show_progress=False)
    assert np.array_equal(store.layer(1), reference) and store.missing([1, 2]) == []


def test_a_changed_bm25_index_is_built_again(tmp_path):
    from elasticir.index import bm25

    index = tmp_path / "index"
    index.mkdir()
    (index / "segments_1").write_bytes(b"lucene segment")
    (index / bm25.MARKER).write_text(json.dumps({"documents": 1, "sha256": bm25.index_checksums(index)}))
    assert bm25._complete_index(index)  # whole: reused
    (index / "segments_1").write_bytes(b"lucene segm")  # truncated
    assert not bm25._complete_index(index) and not index.exists()  # moved aside and removed: rebuilt next
    assert not list(tmp_path.iterdir())


# ---- numbers outside what they can be ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> Ctx:
    """One finished STS run and one retrieval run (read back only, never changed: tests edit copies)."""
    from conftest import write_sts
    from test_retrieval import write_beir

    tmp = tmp_path_factory.mktemp("finished")
    write_sts(tmp / "data" / "sts" / "toy-a" / "test.jsonl.gz")
    write_beir(tmp / "data" / "beir" / "toyir")
    c = Ctx(tmp / "data", tmp / "out", tiny_model_dir, tmp)
    assert_ok(invoke(sts_args(c)))
    assert_ok(invoke(ir_args(c, out=tmp / "ir")))
    return c


@pytest.fixture
def sts_board(finished) -> Path:
    return run_dir(finished.out) / "leaderboard.json"


def _edit(board: Path, edit, where: Path | None = None) -> Path:
    data = json.loads(board.read_text())
    edit(data)
    edited = (where or board.parent.parent) / "edited.json"
    edited.write_text(json.dumps(data))
    return edited


def _set_metric(name: str, value: float, index: int = 0):
    return lambda data: data["results"][index]["metrics"].__setitem__(name, value)


RANGE_CASES = [
    ("spearman-7.5", _set_metric("spearman", 7.5), r"results\[0\] \(toy-a L1 d8\) spearman = 7.5 is outside \[-1, 1\]"),
    ("pearson-below-minus-1", _set_metric("pearson", -1.2, 3), r"results\[3\] .*pearson = -1.2 is outside \[-1, 1\]"),
    ("negative-count", lambda d: d["datasets"][0].__setitem__("n_examples", -3),
     r"datasets\[0\] \(toy-a\) n_examples = -3 is negative"),
    ("negative-timing", lambda d: d["timings"][0].__setitem__("seconds", -1.0), r"timings\[0\] .*seconds = -1 is negative"),
]


@pytest.mark.parametrize("edit, pattern", [c[1:] for c in RANGE_CASES], ids=[c[0] for c in RANGE_CASES])
def test_leaderboard_with_impossible_numbers_is_refused(sts_board, tmp_path, edit, pattern):
    edited = _edit(sts_board, edit, tmp_path)
    result = invoke(["leaderboard", edited])
    assert_clean_error(result, rf"edited.json: {pattern}.*regenerate it")


def test_out_of_range_ir_measures_are_refused(finished, tmp_path):
    board = run_dir(finished.tmp / "ir") / "leaderboard.json"
    edited = _edit(board, _set_metric("nDCG@10", 1.5), tmp_path)
    assert_clean_error(invoke(["leaderboard", edited]), r"edited.json: results\[0\] .*nDCG@10 = 1.5 is outside \[0, 1\]")
    edited = _edit(board, lambda d: d["results"][0]["costs"].__setitem__("index_bytes", -8.0), tmp_path)
    assert_clean_error(invoke(["leaderboard", edited]), r"index_bytes = -8 is negative")


def test_a_baseline_with_an_impossible_spearman_is_refused_by_the_report(finished, sts_board, tmp_path):
    edited = _edit(sts_board, _set_metric("spearman", 7.5), tmp_path)
    result = invoke(["report", run_dir(finished.out), "--baseline", edited, "--out", tmp_path / "report"])
    assert_clean_error(result, r"edited.json: results\[0\] \(toy-a L1 d8\) spearman = 7.5 is outside")
    assert not (tmp_path / "report" / "report.md").exists()


def test_a_baseline_run_with_an_edited_cells_table_is_refused_by_the_report(finished, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir(finished.out), other)
    cells = pd.read_csv(other / "cells.csv")
    cells.loc[1, "spearman"] = 7.5
    cells.to_csv(other / "cells.csv", index=False)
    result = invoke(["report", run_dir(finished.out), "--baseline", other, "--out", tmp_path / "report"])
    assert_clean_error(result, r"other/cells.csv row 3 \(dataset toy-a layer 1 dim 32\): spearman = 7.5 is outside")


def test_reproduce_refuses_an_impossible_leaderboard_before_running(finished, sts_board, tmp_path):
    edited = _edit(sts_board, _set_metric("spearman", 7.5), tmp_path)
    result = invoke(["reproduce", edited, "--out", tmp_path / "again", "--model", finished.model])
    assert_clean_error(result, r"spearman = 7.5 is outside \[-1, 1\]")
    assert not (tmp_path / "again").exists()


# ---- a finished part missing one of its files -------------------------------------------------------------------

PART_FILES = [  # (args builder, file of the part removed); the reported case by default, the others slow
    pytest.param(ir_args, "retrieval/toyir/per_query.csv.gz", id="retrieval-per-query"),
    pytest.param(sts_args, "sts/toy-a/pair_scores.npz", id="sts-pair-scores", marks=pytest.mark.slow),
    pytest.param(ir_args, "retrieval/toyir/runs/L2_d32.trec.gz", id="retrieval-run-file", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("builder, name", PART_FILES)
def test_a_part_missing_a_file_is_not_reused(ctx, finished, builder, name):
    seed_out(ctx, finished, builder)
    clean = _cells(ctx.out)
    path = run_dir(ctx.out) / name
    assert path.is_file()
    before = path.read_bytes()
    path.unlink()
    result = invoke(builder(ctx))
    assert_ok(result)
    assert "reusing" not in result.output and f"{name.split('/', 2)[2]} is missing; recomputing" in result.output
    unzip = gzip.decompress if name.endswith(".gz") else (lambda data: data)
    assert unzip(path.read_bytes()) == unzip(before)  # the file is back, and the table's numbers are a clean run's
    _same_metrics(clean, _cells(ctx.out))


def test_a_part_with_a_changed_file_is_not_reused(ctx, finished):
    seed_out(ctx, finished, sts_args)
    path = run_dir(ctx.out) / "sts" / "toy-a" / "pair_scores.npz"
    data = dict(np.load(path))
    data["cosines"] = data["cosines"] * 0
    np.savez_compressed(path, **data)
    result = invoke(sts_args(ctx))
    assert_ok(result)
    assert "pair_scores.npz changed since it was written; recomputing" in result.output, result.output
    assert np.load(path)["cosines"].any()


def seed_out(ctx: Ctx, finished: Ctx, builder) -> None:
    """ctx.out as `builder` would leave it: a copy of the module's finished run (same data content, so the
    same part keys: a re-run reuses it when nothing changed)."""
    shutil.copytree(finished.out if builder is sts_args else finished.tmp / "ir", ctx.out)
    shutil.copy(finished.root / "sts" / "toy-a" / "test.jsonl.gz", ctx.root / "sts" / "toy-a")  # gzip stamps a time


def _two_runs(ctx: Ctx, finished: Ctx, builder) -> tuple[Path, Path]:
    seed_out(ctx, finished, builder)
    shutil.copytree(run_dir(ctx.out), ctx.tmp / "base")  # the baseline: the same run, whole
    return run_dir(ctx.out), ctx.tmp / "base"


@pytest.mark.parametrize("builder, name", [
    pytest.param(sts_args, "sts/toy-a/pair_scores.npz", marks=pytest.mark.slow),
    (ir_args, "retrieval/toyir/per_query.csv.gz")], ids=["sts", "retrieval"])
def test_the_report_refuses_a_part_missing_its_per_example_file(ctx, finished, builder, name):
    run, base = _two_runs(ctx, finished, builder)
    (run / name).unlink()
    result = invoke(["report", run, "--baseline", base, "--out", ctx.tmp / "report"])
    assert_clean_error(result, rf"{name}: missing, though the finished part .* records it; re-run")


# ---- reproduce after two commands shared a run folder ------------------------------------------------------------

def _shared_folder(ctx: Ctx, finished: Ctx) -> dict:
    seed_out(ctx, finished, ir_args)  # eval retrieval --no-bm25 finished in ctx.out
    assert_ok(invoke(sts_args(ctx)))  # bm25 left at its default (on): it never ran
    board = json.loads((run_dir(ctx.out) / "leaderboard.json").read_text())
    settings = {d["name"]: d["settings"] for d in board["datasets"]}
    assert settings["toyir"]["bm25"] is False and not board["baselines"]
    return board


def test_each_part_records_what_it_ran_and_reproduce_groups_by_it(ctx, finished):
    from elasticir.reproduce import part_groups
    from elasticir.results.schema import load_leaderboard

    board = _shared_folder(ctx, finished)
    assert board["config"]["bm25"] is True  # the last command's flag: not what the retrieval part ran
    groups = part_groups(load_leaderboard(run_dir(ctx.out) / "leaderboard.json"))
    assert sorted((s["bm25"], names["sts"], names["retrieval"]) for s, names in groups) == [
        (False, [], ["toyir"]), (True, ["toy-a"], [])]


@pytest.mark.slow
def test_reproduce_replays_each_part_with_its_own_settings(ctx, finished):
    _shared_folder(ctx, finished)
    result = invoke(["reproduce", run_dir(ctx.out), "--out", ctx.tmp / "again", "--model", ctx.model])
    assert result.exit_code == 0, result.output
    assert "reproduced: every metric within" in result.output and "Traceback" not in result.output
    again = json.loads((run_dir(ctx.tmp / "again") / "leaderboard.json").read_text())
    assert not again["baselines"] and {d["name"] for d in again["datasets"]} == {"toyir", "toy-a"}


# ---- user mistakes in this area: one clean error ------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def _constant_gold(c: Ctx):
    _sts_rows(c, *(json.dumps({"sentence1": f"a {i}", "sentence2": f"b {i}", "score": 3.0}) for i in range(5)))


def _latin1_sts(c: Ctx):
    _write(c.root / "sts" / "toy-a" / "test.jsonl.gz",
           (GOOD + "\n" + '{"sentence1": "caf\xe9", "sentence2": "b", "score": 2}\n').encode("latin-1"))


def _latin1_corpus(c: Ctx):
    corpus = c.root / "beir" / "toyir" / "corpus.jsonl"
    lines = corpus.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"_id": "d3", "text": "na\xefve \xe9t\xe9"}\n'
    corpus.write_bytes(b"".join(lines))


ERROR_CASES = [  # (id, args builder, setup, pattern of the one error line)
    ("sts-constant-gold", sts_args, _constant_gold, r"every one of the 5 pairs has the score 3; a correlation needs"),
    ("sts-non-utf8-line", sts_args, _latin1_sts, r"test.jsonl.gz line 2: byte 0xe9 at column 19 is not UTF-8"),
    ("corpus-non-utf8-line", ir_args, _latin1_corpus, r"corpus.jsonl line 3: byte 0xef at column 26 is not UTF-8"),
    ("qrels-non-utf8-line", ir_args,
     lambda c: (c.root / "beir" / "toyir" / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td\xe91\t1\n"),
     r"test.tsv line 2: byte 0xe9 at column 5 is not UTF-8"),
    ("json-error-column", sts_args, lambda c: _sts_rows(c, GOOD, '{"sentence1": "a", "sentence2": "b", "score": }'),
     r"line 2: not valid JSON at column 47 \(Expecting value\)"),
    ("json-error-column-after-lone-cr", sts_args,
     # a lone CR is JSON whitespace, not a line break: text mode split line 1 there and misnumbered the rest
     lambda c: _sts_rows(c, '{"sentence1": "a",\r "sentence2": "c", "score": 1}', GOOD, '{"sentence1": x}'),
     r"line 3: not valid JSON at column 15"),
    ("corpus-empty", ir_args, lambda c: (c.root / "beir" / "toyir" / "corpus.jsonl").write_text(""),
     r"corpus.jsonl: the file is empty \(no documents\)"),
    ("queries-empty", ir_args, lambda c: (c.root / "beir" / "toyir" / "queries.jsonl").write_text("\n\n"),
     r"queries.jsonl: the file is empty \(no queries\)"),
]


@pytest.mark.parametrize("builder, setup, pattern", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_input_in_this_area_is_one_clean_error(ctx, builder, setup, pattern):
    setup(ctx)
    result = invoke(builder(ctx))
    assert_clean_error(result, pattern, ctx.out)
    assert "ConstantInputWarning" not in result.output


def test_a_gold_score_far_outside_the_set_is_a_warning_naming_the_line(ctx):
    rows = [json.dumps({"sentence1": f"s {i}", "sentence2": f"t {i}", "score": s})
            for i, s in enumerate([4.2, 0.4, 4.0, 3.5, 50.0, 3.8, 0.8])]
    _sts_rows(ctx, *rows)
    result = invoke(sts_args(ctx))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "warning:" in result.output and "line 5: score 50" in result.output
    assert "line 1:" not in result.output.split("warning:")[1].split("\n")[0]


def test_a_subset_with_constant_gold_is_one_clean_error():
    """A --limit-queries sample can be constant where the file is not: refused before scipy says NaN."""
    from elasticir.cells import Grid
    from elasticir.errors import ElasticIRError
    from elasticir.evaluation.sts import score_cells

    vectors = {1: np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}
    with pytest.raises(ElasticIRError, match="at least 2 pairs whose scores differ; raise --limit-queries"):
        score_cells(vectors, np.array([0, 1]), np.array([2, 3]), np.array([2.0, 2.0]), Grid((1,), (8,)))
