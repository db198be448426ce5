"""The asymmetric grid: queries at (Lq, d) searched against documents at (Ld, d)."""

import gzip
import json

import pandas as pd
import pytest

from elasticir.cells import layer_pairs
from elasticir.errors import ElasticIRError
from elasticir.results.schema import load_leaderboard
from elasticir.runner import RunConfig, run
from tests.test_retrieval import write_beir

METRICS = ["nDCG@10", "RR@10", "R@100", "R@1000", "R(rel=2)@1000"]


@pytest.fixture
def beir_root(tmp_path):
    write_beir(tmp_path / "data" / "beir" / "toyir")
    return tmp_path / "data"


def _config(beir_root, out, **flags) -> RunConfig:
    grid = {"layers": [1, 2, 4], "dims": [8, 32]}
    return RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, data_root=str(beir_root), out=str(out),
                     show_progress=False, latency_samples=0, k=5, **(grid | flags))


@pytest.fixture
def runs(tiny_encoder, beir_root, tmp_path):
    """Today's grid and the same grid with every layer's queries against every layer's documents."""
    plain = run(_config(beir_root, tmp_path / "plain"), tiny_encoder)
    asym = run(_config(beir_root, tmp_path / "asym", query_layers=[1, 2, 4], doc_layers=[1, 2, 4]), tiny_encoder)
    return plain, asym


def test_the_diagonal_equals_the_plain_grid_exactly(runs):
    plain, asym = runs
    own = asym.cells[asym.cells.doc_layer.isna()].drop(columns="doc_layer").reset_index(drop=True)
    keys = ["dataset", "layer", "dim"]
    pd.testing.assert_frame_equal(own[keys + METRICS + ["index_bytes"]], plain.cells[keys + METRICS + ["index_bytes"]])
    for name in ("L2_d8", "L4_d32"):  # the same run files, byte for byte
        files = [r.dir / "retrieval" / "toyir" / "runs" / f"{name}.trec.gz" for r in (plain, asym)]
        assert gzip.decompress(files[0].read_bytes()) == gzip.decompress(files[1].read_bytes())
    plain_pq = pd.read_csv(plain.dir / "retrieval" / "toyir" / "per_query.csv.gz", dtype={"query_id": str})
    asym_pq = pd.read_csv(asym.dir / "retrieval" / "toyir" / "per_query.csv.gz", dtype={"query_id": str})
    own_pq = asym_pq[asym_pq.doc_layer.isna()].drop(columns="doc_layer").reset_index(drop=True)
    pd.testing.assert_frame_equal(own_pq, plain_pq)


def test_off_diagonal_points_carry_their_doc_layer(runs):
    plain, asym = runs
    cells = asym.cells
    assert len(cells) == 3 * 3 * 2 and "doc_layer" not in plain.cells
    off = cells[cells.doc_layer.notna()]
    assert sorted({(int(q), int(d)) for q, d in zip(off.layer, off.doc_layer)}) == [
        (q, d) for q in (1, 2, 4) for d in (1, 2, 4) if q != d]
    # a shallow query against deep documents is a different ranking from either symmetric cell
    assert (asym.dir / "retrieval" / "toyir" / "runs" / "L1_d32_docL4.trec.gz").is_file()
    written = pd.read_csv(asym.dir / "cells.csv")
    assert written.doc_layer.dropna().tolist() == off.doc_layer.astype(int).tolist()
    board = json.loads((asym.dir / "leaderboard.json").read_text())
    with_doc = [r for r in board["results"] if "doc_layer" in r]
    assert len(with_doc) == len(off) and all(r["doc_layer"] != r["layer"] for r in with_doc)
    assert not any("doc_layer" in r for r in json.loads((plain.dir / "leaderboard.json").read_text())["results"])
    assert {r.doc_layer for r in load_leaderboard(asym.dir / "leaderboard.json").results} == {None, 1, 2, 4}
    from io import StringIO

    from rich.console import Console

    from elasticir.report.summary import print_outcome

    printed = StringIO()
    print_outcome(asym, Console(file=printed, width=200, markup=False))
    assert "documents at layer 4, d=32, nDCG@10: Lq=1 " in printed.getvalue()
    pq = pd.read_csv(asym.dir / "retrieval" / "toyir" / "per_query.csv.gz", dtype={"query_id": str})
    assert len(pq[(pq.layer == 1) & (pq.doc_layer == 4) & (pq.dim == 8)]) == 3 * len(METRICS)


def test_run_id_unchanged_without_the_flags(tiny_encoder, beir_root, tmp_path):
    from elasticir.runner import build_grid

    plain = _config(beir_root, tmp_path)
    assert "asymmetric" not in build_grid(plain, tiny_encoder)[2]["retrieval"]
    assert build_grid(plain, tiny_encoder)[2] == build_grid(plain.model_copy(update={"doc_layers": None}),
                                                            tiny_encoder)[2]
    doc_only = _config(beir_root, tmp_path, doc_layers=[4, 4])
    assert build_grid(doc_only, tiny_encoder)[2]["retrieval"]["asymmetric"] == {"query_layers": None,
                                                                                "doc_layers": [4]}
    assert layer_pairs([1, 2, 4], 4, None, [4]) == [(1, 4), (2, 4)]


def test_a_layer_the_model_lacks_is_one_error_line(tiny_model_dir, beir_root, tmp_path):
    from typer.testing import CliRunner

    from elasticir.cli import app

    result = CliRunner().invoke(app, ["eval", "retrieval", "--model", str(tiny_model_dir), "--dataset", "toyir",
                                      "--data-root", str(beir_root), "--out", str(tmp_path), "--query-layers", "1,9",
                                      "--no-bm25"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--query-layers 1,9" in lines[0] and "layers 1..4" in lines[0]
    with pytest.raises(ElasticIRError, match="--doc-layers is empty"):
        RunConfig(doc_layers=[])


def test_the_report_has_the_asymmetric_section(runs, tmp_path):
    from elasticir.report.build import write_report

    plain, asym = runs
    paths = write_report(asym.dir, tmp_path / "report")
    names = {p.name for p in paths}
    assert {"asymmetric_toyir_d8.png", "asymmetric_toyir_d32.png", "pareto_toyir_asymmetric_flops.png",
            "pareto_toyir_asymmetric_latency.png", "asymmetric_toyir.md"} <= names
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Asymmetric grid" in text and "against the symmetric cell of the same query encode cost" in text
    assert "paired t-test over queries, Holm over the 4 comparisons" in text
    table = (tmp_path / "report" / "tables" / "asymmetric_toyir.md").read_text().splitlines()
    assert len(table) == 2 + 2 * 2  # Lq 1 and 2 below the deepest doc layer 4, at two dims
    plain_report = write_report(plain.dir, tmp_path / "plain-report")
    assert not any("asymmetric" in p.name for p in plain_report)
    assert "Asymmetric" not in (tmp_path / "plain-report" / "report.md").read_text()


def test_reproduce_replays_the_asymmetric_points(runs, tiny_encoder, beir_root, tmp_path):
    from elasticir.reproduce import compare_leaderboards, reproduce

    _, asym = runs
    assert reproduce(asym.dir, encoder=tiny_encoder, out=tmp_path / "again", data_root=beir_root) == []
    moved = asym.leaderboard.model_copy(deep=True)
    point = next(r for r in moved.results if r.doc_layer == 4 and r.layer == 1)
    point.metrics["nDCG@10"] = point.metrics["nDCG@10"] - 0.5
    (difference,) = compare_leaderboards(asym.leaderboard, moved)
    assert difference.metric == "doc layer 4 nDCG@10" and (difference.layer, difference.dim) == (1, point.dim)


def test_each_store_encodes_only_the_layers_its_side_needs(tiny_encoder, beir_root, tmp_path):
    """Documents at full depth only: the corpus store gets the grid's layer and 4, the queries only the grid's;
    a `--shard` run encodes the same layers, so the plain command after it encodes nothing."""
    import elasticir.encoders.store as store_module

    flags = {"layers": [1], "dims": [8], "doc_layers": [4]}
    config = _config(beir_root, tmp_path, **flags).model_copy(update={"shard": "0/1"})
    assert run(config, tiny_encoder) is None
    stores = sorted(sorted(p.name for p in folder.glob("layer_*.npy"))
                    for folder in (tmp_path / "_cache" / "embeddings").iterdir() if folder.is_dir())
    assert stores == [["layer_1.npy"], ["layer_1.npy", "layer_4.npy"]]  # queries; documents
    original, written = store_module.write_rows, []
    store_module.write_rows = lambda *a, **k: written.append(a) or original(*a, **k)
    try:
        outcome = run(_config(beir_root, tmp_path, **flags), tiny_encoder)
    finally:
        store_module.write_rows = original
    assert not written and len(outcome.cells) == 2 and outcome.cells.doc_layer.tolist()[1] == 4
