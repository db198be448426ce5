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


def test_a_published_leaderboard_gets_the_level_flags_only():
    from pathlib import Path

    run = load_run(Path(__file__).resolve().parents[1] / "leaderboards" / "all-MiniLM-L6-v2.json")
    flags = find_anomalies(run)
    assert {a.kind for a in flags} <= {"below-bm25", "near-chance", "nan"}
    # a real one: MiniLM's full cell on SciFact (0.6451) is below pyserini's BM25 flat (0.6789)
    assert any(a.kind == "below-bm25" and a.dataset == "scifact" for a in flags)
    assert "No per-query" in markdown_section(flags, run.has_examples)
