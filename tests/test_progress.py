"""Progress in logs, smoke subsets, and the newcomer-facing CLI behaviour around them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elasticir.data.beir import RetrievalData
from elasticir.data.sts import StsPairs
from elasticir.data.subset import describe, subset_retrieval, subset_sts
from elasticir.errors import ElasticIRError
from elasticir.progress import LogProgress, progress, stage
from elasticir.runner import RunConfig, run

REPO = Path(__file__).parents[1]


def test_log_progress_writes_stage_rate_and_eta_lines(capsys, monkeypatch):
    monkeypatch.setenv("ELASTICIR_PROGRESS_SECONDS", "0")  # a line per update
    stage("corpus: encoding")
    bar = progress(total=4, desc="corpus", unit="text")
    assert isinstance(bar, LogProgress)  # stderr is captured, not a terminal
    bar.update(2)
    bar.update(2)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[elasticir] corpus: encoding"
    assert re.fullmatch(r"\[elasticir\] corpus: 2/4 texts \(50%\), [\d.]+ text/s, ETA \d+s", lines[1])
    assert re.fullmatch(r"\[elasticir\] corpus: done, 4/4 texts in \d+s \([\d.]+ text/s\)", lines[2])
    assert len(lines) == 3  # the last update is reported by the final line only
    assert list(progress([1, 2], enabled=False)) == [1, 2] and capsys.readouterr().err == ""


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: 10-30 s here
def test_cli_logged_to_a_file_shows_stages_and_progress(tiny_model_dir, tiny_data_root, tmp_path):
    log = tmp_path / "run.log"
    env = {**os.environ, "ELASTICIR_PROGRESS_SECONDS": "0", "PYTHONPATH": str(REPO)}
    with open(log, "w") as handle:  # stdout and stderr both to a file, as under nohup or SLURM
        done = subprocess.run(
            [sys.executable, "-c", "from elasticir.cli import app; app()", "eval", "sts", "--model",
             str(tiny_model_dir), "--datasets", "toy-a,toy-b", "--layers", "2,4", "--dims", "8,32", "--data-root",
             str(tiny_data_root), "--out", str(tmp_path / "out"), "--batch-size", "4", "--device", "cpu"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=300, check=False)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "[elasticir] loading model" in text
    assert "[elasticir] sts toy-a: 4 cells (2 layers x 2 dims)" in text and "[elasticir] sts toy-b:" in text
    assert re.search(r"\[elasticir\] sts toy-a: \d+/12 texts \(\d+%\), [\d.]+ text/s, ETA", text)
    assert re.search(r"\[elasticir\] sts toy-a: done, 12/12 texts in", text)
    assert "[elasticir] writing" in text and "leaderboard:" in text
    assert "\x1b[" not in text and "\r" not in text  # no bar redraws or colour codes in a log


def _retrieval() -> RetrievalData:
    docs = [f"d{i}" for i in range(50)]
    queries = [f"q{i}" for i in range(10)]
    qrels = {q: {f"d{3 * i}": 1, f"d{3 * i + 1}": 2} for i, q in enumerate(queries)}
    return RetrievalData(docs, [f"text {d}" for d in docs], queries, [f"query {q}" for q in queries], qrels, [])


def test_subset_keeps_every_judged_document_of_the_kept_queries():
    data = _retrieval()
    small = subset_retrieval(data, 4, 12, seed=3)
    assert len(small.query_ids) == 4 and set(small.qrels) == set(small.query_ids)
    judged = {d for q in small.query_ids for d in data.qrels[q]}
    assert judged <= set(small.doc_ids) and len(small.doc_ids) == 12
    assert small.doc_texts == [f"text {d}" for d in small.doc_ids]
    assert subset_retrieval(data, 4, 12, seed=3).doc_ids == small.doc_ids  # seeded
    assert subset_retrieval(data, 4, 12, seed=4).query_ids != small.query_ids
    assert "subset: 4 of 10 queries, 12 of 50 documents" in small.notes[-1]
    # a corpus limit below the judged documents keeps the judged ones anyway: no kept query loses its answers
    assert len(subset_retrieval(data, 10, 5, seed=0).doc_ids) == 20
    pairs = StsPairs(list("abcdef"), list("ghijkl"), np.arange(6.0))
    few = subset_sts(pairs, 3, seed=0)
    assert len(few) == 3 and [pairs.sentence1.index(s) for s in few.sentence1] == list(few.scores.astype(int))
    with pytest.raises(ElasticIRError, match="--limit-corpus must be at least 1"):
        describe(None, 0, 0)


def test_a_subset_run_has_its_own_run_id_and_says_subset(tiny_encoder, tiny_data_root, tmp_path):
    base = {"model": "unused", "sts": ["toy-a"], "retrieval": [], "layers": [4], "dims": [32], "show_progress": False,
            "data_root": str(tiny_data_root), "out": str(tmp_path), "latency_texts": 0}
    full = run(RunConfig(**base), tiny_encoder)
    smoke = run(RunConfig(**base, limit_queries=3), tiny_encoder)
    assert full.dir != smoke.dir  # never mixed with (or reused as) the full results
    assert full.leaderboard.subset is None and smoke.leaderboard.subset == {"limit_queries": 3, "limit_corpus": None,
                                                                             "seed": 0}
    assert smoke.leaderboard.datasets[0].n_examples == 3 and full.leaderboard.datasets[0].n_examples == 6
    assert full.leaderboard.encode_latency == []  # --latency-texts 0: no probe
    record = full.leaderboard.datasets[0]
    assert record.source.startswith("local sha256:") and record.official_source is None  # a user's own folder


def test_misspelled_dataset_gets_a_suggestion(tiny_data_root):
    from elasticir.data.catalog import spec_for

    with pytest.raises(ElasticIRError, match=r"unknown dataset 'scifcat' \(did you mean 'scifact'\?\)"):
        spec_for("scifcat", tiny_data_root)
    with pytest.raises(ElasticIRError, match=r"did you mean 'toy-a'"):
        spec_for("toy_a", tiny_data_root)


def test_layer_and_dim_errors_come_from_the_config_before_the_weights_load(tiny_model_dir, tiny_data_root,
                                                                          monkeypatch, tmp_path):
    from elasticir import runner

    def never(*_args, **_kwargs):
        raise AssertionError("the model was loaded before its shape was checked")

    monkeypatch.setattr(runner, "ElasticEncoder", never)
    base = {"model": str(tiny_model_dir), "sts": ["toy-a"], "retrieval": [], "data_root": str(tiny_data_root),
            "out": str(tmp_path), "show_progress": False}
    with pytest.raises(ElasticIRError, match=r"layer 9 is out of range: this model has layers 1..4"):
        run(RunConfig(**base, layers=[9]))
    with pytest.raises(ElasticIRError, match=r"dim 64 is out of range"):
        run(RunConfig(**base, pairs=[(2, 64)]))


def test_help_shows_the_defaults_and_the_new_flags():
    from typer.testing import CliRunner

    from elasticir.cli import app

    text = " ".join(CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "default: sentence-transformers/all-MiniLM-L6-v2" in text and "(default: results)" in text
    for flag in ("--smoke", "--limit-queries", "--limit-corpus", "--latency-texts"):
        assert flag in text
    text = " ".join(CliRunner().invoke(app, ["leaderboard", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "default: leaderboards/*.json" in text


def test_console_shows_qps_and_p50_for_approximate_indexes(capsys):
    from types import SimpleNamespace

    import pandas as pd

    from elasticir.report.summary import print_ann_costs

    cells = pd.DataFrame({"layer": [1, 2, 2], "dim": [8, 8, 16], "search_qps": [900.0, 450.0, 400.0],
                          "latency_p50_ms": [0.5, 0.9, 1.1]})
    board = SimpleNamespace(config={"index": "hnsw"}, grid=SimpleNamespace(pairs=[(1, 8)]),
                            model=SimpleNamespace(num_layers=2, hidden_size=16))
    print_ann_costs(board, cells)
    shown = capsys.readouterr().out
    assert "(1,8) hnsw: 900 QPS, p50 0.50 ms" in shown and "(2,16) hnsw: 400 QPS, p50 1.10 ms" in shown
    assert "L2 d8" not in shown  # the diagonal and the full cell only; every cell is in cells.csv
    print_ann_costs(SimpleNamespace(config={"index": "flat"}), cells)  # exact search: quality only
    assert capsys.readouterr().out == ""


@pytest.mark.slow  # starts a JVM in a fresh process: ~15 s here
def test_bm25_run_prints_no_expected_java_warnings(tmp_path):
    """The JVM's "Using incubator modules" and Lucene's "Java 22 or later" lines need no action: not shown."""
    pytest.importorskip("pyserini")
    script = (
        "import sys\nfrom pathlib import Path\nfrom elasticir.index import bm25\n"
        "index = bm25.build_bm25_index([('a', 'red apples and pears'), ('b', 'blue sky')], Path(sys.argv[1]))\n"
        "print(list(bm25.bm25_search(index, {'q': 'apple'})['q']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "index")], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['a']"
    assert "incubator" not in done.stderr and "Java 22" not in done.stderr and "MMapDirectory" not in done.stderr
