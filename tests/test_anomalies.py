"""Anomaly flags: a planted fault (one cell's pair scores swapped for bad ones) is flagged by the paired
bootstrap, the clean grid is not, a run's leaderboard carries the flags, and no number changes."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SENTENCES, write_sts
from scipy.stats import spearmanr

from elasticir.io import file_checksum
from elasticir.report.anomalies import find_anomalies, markdown_section
from elasticir.report.rundir import load_run
from elasticir.results.schema import load_leaderboard
from elasticir.runner import RunConfig, run

N_PAIRS = 120


@pytest.fixture
def run_dir(tiny_encoder, tmp_path):
    """A real run of the tiny random model on one 120-pair STS set, over layers {1, 2, 4} x dims {8, 16, 32}."""
    rng = np.random.default_rng(0)
    rows = [(SENTENCES[i % len(SENTENCES)][0], SENTENCES[(i * 7 + 3) % len(SENTENCES)][1], float(rng.uniform(0, 5)))
            for i in range(N_PAIRS)]
    write_sts(tmp_path / "data" / "sts" / "toy" / "test.jsonl.gz", rows)
    outcome = run(RunConfig(model="unused", sts=["toy"], retrieval=[], data_root=str(tmp_path / "data"),
                            out=str(tmp_path / "results"), layers=[1, 2, 4], dims=[8, 16, 32], latency_texts=0,
                            show_progress=False), tiny_encoder)
    return outcome.dir


def plant(run_dir, bad_cell=None):
    """Give the run clean pair scores (noise shrinking with depth and width, so the expected order holds) and,
    with `bad_cell`, swap that cell's scores for shuffled ones; cells.csv and the part's checksums follow."""
    npz = run_dir / "sts" / "toy" / "pair_scores.npz"
    with np.load(npz) as data:
        gold, cells = data["gold"], data["cells"]
    rng = np.random.default_rng(1)
    cosines = np.stack([gold + rng.normal(0, 4.0 / (layer * dim) ** 0.5, len(gold)) for layer, dim in cells])
    if bad_cell is not None:
        k = next(i for i, c in enumerate(cells) if tuple(c) == bad_cell)
        cosines[k] = rng.permutation(cosines[k])
    np.savez(npz, cosines=cosines, gold=gold, cells=cells)
    table = pd.read_csv(run_dir / "cells.csv")
    for row, (layer, dim) in enumerate(cells):
        where = (table.layer == layer) & (table.dim == dim)
        table.loc[where, "spearman"] = spearmanr(cosines[row], gold).statistic
    table.to_csv(run_dir / "cells.csv", index=False)
    mark = run_dir / "sts" / "toy.json"
    record = json.loads(mark.read_text())
    record["files_sha256"]["pair_scores.npz"] = file_checksum(npz)["sha256"]
    mark.write_text(json.dumps(record))


def test_planted_fault_is_flagged_and_the_clean_grid_is_not(run_dir):
    plant(run_dir)
    clean = find_anomalies(load_run(run_dir))
    assert [a for a in clean if a.kind == "order"] == [], clean
    plant(run_dir, bad_cell=(4, 16))
    before = pd.read_csv(run_dir / "cells.csv")
    faulty = find_anomalies(load_run(run_dir))
    order = {(a.layer, a.dim) for a in faulty if a.kind == "order"}
    assert (4, 16) in order  # below both L2 d16 and L4 d8, outside the noise band
    assert order <= {(4, 16), (4, 32)}  # and perhaps the cell after it (which beats a broken cell: not flagged)
    assert pd.read_csv(run_dir / "cells.csv").equals(before)  # flags never change a number
    text = markdown_section(faulty, True)
    assert "| toy | L4 d16 | order |" in text and "noise band" in text


def test_the_run_records_its_anomalies_in_the_leaderboard(run_dir):
    board = load_leaderboard(run_dir / "leaderboard.json")
    # the tiny random model is near chance in every cell: the flags say so, and old files without them load
    assert board.anomalies and all(a.dataset == "toy" for a in board.anomalies)
    assert {a.kind for a in board.anomalies} <= {"near-chance", "order", "moves-mean", "constant", "nan"}
    data = json.loads((run_dir / "leaderboard.json").read_text())
    data.pop("anomalies")
    (run_dir / "old.json").write_text(json.dumps(data))
    assert load_leaderboard(run_dir / "old.json").anomalies == []


def test_a_published_leaderboard_gets_the_fixed_band_and_a_starbucks_like_fault_is_flagged(tmp_path):
    """No per-example values: order breaks only beyond the fixed band. The committed MiniLM leaderboard's flags
    are all real: STS12 dips at layers 2-3 below layer 1 (a model never trained for its early exits), two
    32-dim SciFact cells near chance, and the full model below BM25 on SciFact. A Quora-like collapse planted in
    a copy is an order break that also moves the STS mean over its three datasets by itself."""
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "leaderboards" / "all-MiniLM-L6-v2.json"
    flags = find_anomalies(load_run(committed))
    assert [(a.kind, a.dataset, a.layer, a.dim) for a in flags] == [
        ("order", "sts12", 2, 64), ("order", "sts12", 2, 128), ("order", "sts12", 3, 32), ("order", "sts12", 3, 64),
        ("order", "sts12", 3, 128), ("near-chance", "scifact", 1, 32), ("near-chance", "scifact", 3, 32),
        ("below-bm25", "scifact", 6, 384)]
    assert "0.6451 < BM25 0.6789" in flags[-1].detail
    data = json.loads(committed.read_text())
    cell = next(c for c in data["results"] if c["dataset"] == "sickr" and (c["layer"], c["dim"]) == (5, 256))
    cell["metrics"]["spearman"] = 0.0178
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    flags = find_anomalies(load_run(edited))
    kinds = {a.kind for a in flags if (a.dataset, a.layer, a.dim) == ("sickr", 5, 256)}
    assert kinds == {"order", "near-chance", "moves-mean"}
    assert "fixed band 0.05" in next(a.detail for a in flags if a.kind == "order")
    assert "No per-query" in markdown_section(flags, False)


def test_retrieval_fault_from_per_query_values_is_flagged(tiny_encoder, toy_root, tmp_path):
    """Retrieval reads per_query.csv.gz: one cell's queries all scoring 0 (a swapped run file) is an order
    break, constant and near chance; the clean pattern around it is not flagged."""
    outcome = run(RunConfig(model="unused", sts=[], retrieval=["toyir"], data_root=str(toy_root), bm25=False,
                            out=str(tmp_path / "results"), layers=[1, 4], dims=[16, 32], latency_texts=0,
                            show_progress=False), tiny_encoder)
    part = outcome.dir / "retrieval" / "toyir"
    frame = pd.read_csv(part / "per_query.csv.gz", dtype={"query_id": str})
    queries = sorted(frame.query_id.unique())
    step = {(1, 16): 0.0, (1, 32): 0.1, (4, 16): 0.1, (4, 32): 0.2}
    noise = {q: 0.01 * i for i, q in enumerate(queries)}
    ndcg = frame.measure == "nDCG@10"
    frame.loc[ndcg, "value"] = [0.0 if (layer, dim) == (4, 32) else 0.6 + step[(layer, dim)] + noise[q]
                                for q, layer, dim in frame.loc[ndcg, ["query_id", "layer", "dim"]].itertuples(index=False)]
    frame.to_csv(part / "per_query.csv.gz", index=False)
    table = pd.read_csv(outcome.dir / "cells.csv")
    means = frame[ndcg].groupby(["layer", "dim"])["value"].mean()
    table["nDCG@10"] = [means[(layer, dim)] for layer, dim in zip(table.layer, table.dim)]
    table.to_csv(outcome.dir / "cells.csv", index=False)
    mark = outcome.dir / "retrieval" / "toyir.json"
    record = json.loads(mark.read_text())
    record["files_sha256"]["per_query.csv.gz"] = file_checksum(part / "per_query.csv.gz")["sha256"]
    mark.write_text(json.dumps(record))
    flags = find_anomalies(load_run(outcome.dir))
    assert {(a.kind, a.layer, a.dim) for a in flags} == {("order", 4, 32), ("constant", 4, 32), ("near-chance", 4, 32)}
