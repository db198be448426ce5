"""Funnel retrieval: a shortlist of the whole corpus reproduces the stage-2 cell; bad funnels are clear errors."""

import gzip
import json
import random

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.errors import ElasticIRError
from elasticir.evaluation.funnel import Funnel, parse_funnel, rescore, resolve_funnels
from elasticir.index.dense import CellIndex, tie_ranks
from elasticir.runner import RunConfig, run
from tests.test_retrieval import write_beir


def test_rescoring_the_whole_corpus_equals_the_stage2_cell():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 48)).astype(np.float32)
    docs[10] = docs[20]  # an exact tie: ordered by doc id in both
    queries = rng.standard_normal((12, 48)).astype(np.float32)
    tie_rank = tie_ranks([f"d{i}" for i in rng.permutation(300)])
    cell_scores, cell_ids, _ = CellIndex(docs, 40, normalize=True).search(queries, 300, tie_rank)
    shortlist = np.tile(np.arange(300)[::-1], (12, 1))  # every document, in no useful order
    scores, ids = rescore(docs, queries, shortlist, 40, normalize=True, tie_rank=tie_rank, keep=300)
    np.testing.assert_array_equal(ids, cell_ids)
    np.testing.assert_allclose(scores, cell_scores, atol=1e-6)


def test_funnel_syntax_and_auto_space():
    assert parse_funnel("2:64/100/6:384") == Funnel(2, 64, "float32", 100, 6, 384)
    assert str(parse_funnel(" 2:64:binary / 100 / 6:384")) == "2:64:binary/100/6:384"
    for bad, message in (("2:64/100", "malformed"), ("2:64/x/6:384", "malformed"), ("6:64/100/2:384", "deeper"),
                         ("2:64:int4/100/6:384", "unknown precision")):
        with pytest.raises(ElasticIRError, match=message):
            parse_funnel(bad)
    funnels = resolve_funnels(["auto"], [(1, 8), (4, 32)], ["float32", "binary"], (4, 32), 120)
    assert Funnel(4, 32, "binary", 100, 4, 32) in funnels and Funnel(4, 32, "float32", 50, 4, 32) not in funnels
    assert {f.k for f in funnels} == {50, 100} and len(funnels) == 3 * 2


@pytest.fixture
def corpus_root(tmp_path):
    rnd = random.Random(1)
    words = ["cat", "dog", "river", "stock", "market", "guitar", "onion", "plane", "runway", "butter", "sofa", "music", "bank", "loan", "tree"]
    docs = {f"d{i:02d}": ("", " ".join(rnd.choices(words, k=8))) for i in range(60)}
    queries = {f"q{i}": " ".join(rnd.choices(words, k=3)) for i in range(8)}
    qrels = [(f"q{i}", f"d{rnd.randrange(60):02d}", 1) for i in range(8)] + [("q0", "d07", 2)]
    write_beir(tmp_path / "data" / "beir" / "toyfunnel", docs, queries, qrels)
    return tmp_path / "data"


def _run_lines(path):
    return [line.split()[:4] for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_whole_corpus_funnel_reproduces_the_cell_end_to_end(tiny_encoder, corpus_root, tmp_path):
    config = RunConfig(model="unused", sts=[], retrieval=["toyfunnel"], bm25=False, layers=[2, 4], dims=[8, 32],
                       funnels=["2:8/60/4:32", "2:8:binary/20/4:32"], data_root=str(corpus_root),
                       out=str(tmp_path / "out"), show_progress=False, latency_samples=3, latency_texts=0)
    outcome = run(config, tiny_encoder)
    part = outcome.dir / "retrieval" / "toyfunnel"
    funnel_run = _run_lines(part / "runs" / "funnel_L2_d8_K60_L4_d32.trec.gz")
    assert funnel_run == _run_lines(part / "runs" / "L4_d32.trec.gz")  # ids, ranks, same order
    table = pd.read_csv(part / "funnels.csv")
    whole = table.set_index("funnel").loc["2:8/60/4:32"]
    full = outcome.cells.set_index(["layer", "dim"]).loc[(4, 32)]
    assert whole["nDCG@10"] == full["nDCG@10"] and whole["p"] == 1.0
    assert whole["search_madds"] == 60 * 8 + 60 * 32 and whole["madds_ratio"] == pytest.approx((60 * 40) / (60 * 32))
    binary = table.set_index("funnel").loc["2:8:binary/20/4:32"]
    assert binary["search_madds"] == 20 * 32 and binary["hamming_bits"] == 60 * 8 and binary["stage1_bytes"] < 200
    board = json.loads((outcome.dir / "leaderboard.json").read_text())
    assert {f["funnel"] for f in board["funnels"]} >= {"2:8/60/4:32", "2:8:binary/20/4:32", "full (4,32)"}
    per_query = pd.read_csv(part / "funnel_per_query.csv.gz")
    assert set(per_query.funnel) == set(table.funnel) and len(per_query.query_id.unique()) == 8
    _reproduce_compares_funnels(outcome.leaderboard)


def test_funnels_with_narrow_grid_dims_encode_each_store_once(tiny_encoder, corpus_root, tmp_path, monkeypatch):
    """The grid (dims 8) and the funnels (full cell, width 32) share one store width: nothing is encoded twice."""
    calls = []
    original = tiny_encoder.iter_encode

    def counted(texts, layers, **kwargs):
        calls.append((len(texts), tuple(layers)))
        return original(texts, layers, **kwargs)

    monkeypatch.setattr(tiny_encoder, "iter_encode", counted)
    config = RunConfig(model="unused", sts=[], retrieval=["toyfunnel"], bm25=False, layers=[2, 4], dims=[8],
                       funnels=["2:8/20/4:32"], data_root=str(corpus_root), out=str(tmp_path / "out"),
                       show_progress=False, latency_samples=0, latency_texts=0)
    run(config, tiny_encoder)
    assert len(calls) == 2, calls  # the corpus and the queries, once each


def _reproduce_compares_funnels(board):
    """reproduce reports a funnel's metric that moved, by name; a leaderboard without funnels still loads."""
    from elasticir.reproduce import compare_leaderboards
    from elasticir.results.schema import Leaderboard

    changed = board.model_copy(deep=True)
    changed.funnels[1].metrics["nDCG@10"] -= 0.1
    (difference,) = compare_leaderboards(board, changed)
    assert difference.kind == "funnel" and difference.metric == f"funnel {board.funnels[1].funnel} nDCG@10"
    old = json.loads(board.model_dump_json())
    old.pop("funnels")
    assert Leaderboard.model_validate(old).funnels == []


@pytest.mark.parametrize("funnel, message", [
    ("2:8/100/4:32", "larger than the toyfunnel corpus"),
    ("4:8/20/2:32", "deeper than stage 2"),
    ("2:8-20-4:32", "malformed"),
    ("2:8:int4/20/4:32", "unknown precision"),
])
def test_bad_funnels_exit_2_naming_the_flag(tiny_model_dir, corpus_root, tmp_path, funnel, message):
    result = CliRunner().invoke(app, ["eval", "funnel", "--model", str(tiny_model_dir), "--dataset", "toyfunnel",
                                      "--data-root", str(corpus_root), "--out", str(tmp_path / "o"),
                                      "--funnel", funnel])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "--funnel" in result.output and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o" / "_cache").exists()  # nothing encoded
