"""The precision axis: quantised search equals a brute-force numpy reference over the same quantised vectors."""

import gzip

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.encoders import truncate
from elasticir.errors import ElasticIRError
from elasticir.index.dense import tie_ranks
from elasticir.index.quantized import RESCORE_MULTIPLIER, QuantizedIndex, check_precisions
from elasticir.runner import RunConfig, run
from tests.test_retrieval import beir_root  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(3)
    n, hidden = 400, 48
    docs = rng.standard_normal((n, hidden)).astype(np.float32)
    docs[50] = docs[7]  # duplicates: exact ties at every precision
    docs[300] = docs[7]
    queries = rng.standard_normal((25, hidden)).astype(np.float32)
    queries[0] = docs[7]
    ids = [f"doc{i:04d}" for i in rng.permutation(n)]
    return docs, queries, ids


def reference_order(scores: np.ndarray, tie_rank: np.ndarray, k: int) -> np.ndarray:
    """Brute force: every document sorted by (score descending, doc id descending), first k."""
    return np.stack([np.lexsort((tie_rank, -row))[:k] for row in scores])


@pytest.mark.parametrize("dim", [16, 20, 48])
def test_int8_search_equals_numpy_reference(corpus, dim):
    docs, queries, ids = corpus
    tie_rank = tie_ranks(ids)
    d, q = truncate(docs, dim, True), truncate(queries, dim, True)
    doc_codes = quantize_embeddings(d, "int8", calibration_embeddings=d)
    ranges = np.vstack([d.min(0), d.max(0)])
    query_codes = quantize_embeddings(q, "int8", ranges=ranges)
    scores = query_codes.astype(np.int64) @ doc_codes.astype(np.int64).T
    index = QuantizedIndex(docs, dim, "int8", normalize=True, chunk=128)  # chunks exercise the running top-k
    got_scores, got_ids, _ = index.search(queries, 30, tie_rank)
    want = reference_order(scores, tie_rank, 30)
    np.testing.assert_array_equal(got_ids, want)
    np.testing.assert_array_equal(got_scores, np.take_along_axis(scores, want, 1))
    assert index.nbytes == len(docs) * dim + 2 * dim * 4


@pytest.mark.parametrize("dim", [8, 12, 48])
def test_binary_search_equals_numpy_reference_with_ties(corpus, dim):
    docs, queries, ids = corpus
    tie_rank = tie_ranks(ids)
    signs = lambda x: np.where(truncate(x, dim, True) > 0, 1, -1).astype(np.int64)
    scores = signs(queries) @ signs(docs).T  # = dim - 2 * hamming
    index = QuantizedIndex(docs, dim, "binary", normalize=True)
    got_scores, got_ids, _ = index.search(queries, 40, tie_rank)
    want = reference_order(scores, tie_rank, 40)
    np.testing.assert_array_equal(got_ids, want)  # dim 8: hundreds of ties at the cut, beyond the fetch margin
    np.testing.assert_array_equal(got_scores, np.take_along_axis(scores, want, 1))
    assert index.nbytes < len(docs) * ((dim + 7) // 8) + 200  # codes plus faiss' small header


def test_binary_rescore_equals_numpy_reference(corpus):
    docs, queries, ids = corpus
    dim, k = 20, 10
    tie_rank = tie_ranks(ids)
    signs = np.where(truncate(docs, dim, True) > 0, 1, -1)
    q = truncate(queries, dim, True)
    candidates = reference_order(np.where(q > 0, 1, -1) @ signs.T, tie_rank, k * RESCORE_MULTIPLIER)
    index = QuantizedIndex(docs, dim, "binary+rescore", normalize=True)
    got_scores, got_ids, _ = index.search(queries, k, tie_rank)
    for row, cand in enumerate(candidates):
        rescored = signs[cand].astype(np.float32) @ q[row]
        order = cand[np.lexsort((tie_rank[cand], -rescored))][:k]
        np.testing.assert_array_equal(got_ids[row], order)
    assert np.all(np.diff(got_scores, axis=1) <= 0)


def test_float16_matches_rounded_reference_and_self_hits_are_excluded(corpus):
    docs, queries, ids = corpus
    tie_rank = tie_ranks(ids)
    d = truncate(docs, 32, True).astype(np.float16).astype(np.float32)
    scores = truncate(queries, 32, True) @ d.T
    index = QuantizedIndex(docs, 32, "float16", normalize=True)
    _, got, _ = index.search(queries, 5, tie_rank)
    np.testing.assert_array_equal(got, reference_order(scores, tie_rank, 5))
    exclude = np.full(len(queries), -1)
    exclude[0] = got[0, 0]
    _, without, _ = index.search(queries, 5, tie_rank, exclude)
    assert got[0, 0] not in without[0] and (without[1:] == got[1:]).all()


def test_float32_is_always_the_first_precision():
    assert RunConfig(precisions=["int8", "binary"]).precisions == ["float32", "int8", "binary"]
    assert RunConfig(precisions=["binary", "float32"]).precisions == ["float32", "binary"]
    with pytest.raises(ElasticIRError, match="empty"):
        check_precisions(RunConfig(precisions=[]).precisions)


def test_unknown_precision_is_refused():
    with pytest.raises(ElasticIRError, match="unknown precision.*'int4'"):
        check_precisions(["float32", "int4"])
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", "scifact", "--precisions", "float32,int4"])
    assert result.exit_code == 2 and "error:" in result.output and "--precisions" in result.output
    assert "Traceback" not in result.output


def test_run_records_one_point_per_precision(tiny_encoder, beir_root, tmp_path):  # noqa: F811
    config = RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, layers=[4], dims=[8, 32],
                       precisions=["float32", "int8", "binary"], data_root=str(beir_root), out=str(tmp_path),
                       show_progress=False, latency_samples=2)
    outcome = run(config, tiny_encoder)
    cells = outcome.cells
    assert len(cells) == 6 and sorted(set(cells.precision)) == ["binary", "float32", "int8"]
    by = cells.set_index(["dim", "precision"]).index_bytes
    assert by[(32, "float32")] == 7 * 32 * 4 and by[(32, "int8")] == 7 * 32 + 2 * 32 * 4
    assert by[(32, "binary")] < by[(32, "int8")]
    runs = sorted(p.name for p in (outcome.dir / "retrieval" / "toyir" / "runs").glob("*.trec.gz"))
    assert runs == ["L4_d32.trec.gz", "L4_d32_binary.trec.gz", "L4_d32_int8.trec.gz",
                    "L4_d8.trec.gz", "L4_d8_binary.trec.gz", "L4_d8_int8.trec.gz"]
    assert gzip.decompress((outcome.dir / "retrieval/toyir/runs/L4_d8_int8.trec.gz").read_bytes()).count(b"\n") > 0
    points = {(r.dim, r.precision) for r in outcome.leaderboard.results}
    assert (8, "binary") in points and (32, "float32") in points
    plain = run(config.model_copy(update={"precisions": ["float32"], "out": str(tmp_path / "plain")}), tiny_encoder)
    assert "precision" not in plain.cells.columns and plain.leaderboard.results[0].precision is None
    float32 = cells[cells.precision == "float32"].drop(columns="precision").reset_index(drop=True)
    assert np.allclose(float32["nDCG@10"], plain.cells["nDCG@10"])
    _reproduce_and_leaderboard_see_precisions(outcome)


def _reproduce_and_leaderboard_see_precisions(outcome):
    """reproduce compares each (cell, precision) point with its own; the leaderboard shows the float32 ones."""
    from elasticir.report.leaderboard import _values, render_leaderboards
    from elasticir.reproduce import compare_leaderboards

    board = outcome.leaderboard
    assert compare_leaderboards(board, board) == []
    changed = board.model_copy(deep=True)
    point = next(r for r in changed.results if r.precision == "int8")
    point.metrics["nDCG@10"] += 0.5
    (difference,) = compare_leaderboards(board, changed)
    assert difference.metric == "int8 nDCG@10" and difference.dim == point.dim
    float32 = next(r for r in board.results if r.precision == "float32" and r.dim == 32)
    assert _values(board, "toyir", "nDCG@10")[(4, 32)] == float32.metrics["nDCG@10"]
    assert "toyir" in render_leaderboards([outcome.dir / "leaderboard.json"], page=False)[0]


@pytest.mark.slow
def test_report_gains_a_precision_facet(tiny_encoder, beir_root, tmp_path):  # noqa: F811
    from elasticir.report.build import write_report

    config = RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, layers=[2, 4], dims=[8, 32],
                       precisions=["float32", "int8", "binary+rescore"], data_root=str(beir_root), out=str(tmp_path),
                       show_progress=False, latency_samples=2, latency_texts=0)
    outcome = run(config, tiny_encoder)
    paths = {p.name for p in write_report(outcome.dir, tmp_path / "report")}
    assert {"heatmap_toyir.png", "heatmap_toyir_int8.png", "heatmap_toyir_binary-rescore.png",
            "pareto_toyir_precision.png"} <= paths
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| (4,32) |" in text and (tmp_path / "report" / "tables" / "precision_bytes_toyir.tex").is_file()


def test_int8_wider_than_1024_stays_exact():
    rng = np.random.default_rng(5)
    docs, queries = rng.standard_normal((150, 1100)).astype(np.float32), rng.standard_normal((4, 1100)).astype(np.float32)
    tie_rank = tie_ranks([f"d{i:03d}" for i in range(150)])
    d = truncate(docs, 1100, True)
    ranges = np.vstack([d.min(0), d.max(0)])
    scores = (quantize_embeddings(truncate(queries, 1100, True), "int8", ranges=ranges).astype(np.int64)
              @ quantize_embeddings(d, "int8", ranges=ranges).astype(np.int64).T)  # beyond float32's exact range
    got_scores, got_ids, _ = QuantizedIndex(docs, 1100, "int8", normalize=True).search(queries, 15, tie_rank)
    want = reference_order(scores, tie_rank, 15)
    np.testing.assert_array_equal(got_ids, want)
    np.testing.assert_array_equal(got_scores, np.take_along_axis(scores, want, 1).astype(np.float32))


def test_cli_prints_each_precision_on_the_diagonal(tiny_model_dir, beir_root, tmp_path):  # noqa: F811
    result = CliRunner().invoke(app, [
        "eval", "retrieval", "--model", str(tiny_model_dir), "--dataset", "toyir", "--layers", "2,4",
        "--dims", "8,32", "--precisions", "int8,binary", "--no-bm25", "--latency-texts", "0",
        "--data-root", str(beir_root), "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "cache" / "embeddings").glob("*/layer_4.npy"))  # --cache-dir, not OUT/_cache
    assert not (tmp_path / "runs" / "_cache").exists()
    lines = {line.split()[0]: line for line in result.output.splitlines() if "nDCG@10: (" in line}
    assert set(lines) == {"int8", "binary"} and "(4,32)" in lines["int8"] and "index x" in lines["binary"]
