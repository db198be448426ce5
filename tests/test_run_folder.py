"""The run directory's layout has one owner (results.store); the corpus size is recorded, not inferred."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import elasticir
from elasticir.errors import ElasticIRError
from elasticir.results.store import RunFolder

PACKAGE = Path(elasticir.__file__).parent
OWNER = PACKAGE / "results" / "store.py"
# file names of a run directory, as string literals (alone or as a piece of an f-string)
NAMES = {"leaderboard.json", "cells.csv", "per_query.csv.gz", "pair_scores.npz", "bm25_per_query.csv.gz",
         "funnel_per_query.csv.gz", "funnels.csv", "summary.lock"}
SUFFIXES = (".trec.gz",)  # run files: f"{slug}.trec.gz"
FOLDERS = {"runs", "report"}  # folders of a run directory, spelled as `path / "runs"`


def spelled_names(path: Path) -> set[str]:
    """The run-folder names `path` spells as literals: whole constants, f-string pieces, `x / "runs"`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in NAMES:
                found.add(node.value)
            found.update(s for s in SUFFIXES if node.value.endswith(s))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operand = node.right
            if isinstance(operand, ast.Constant) and operand.value in FOLDERS:
                found.add(operand.value)
    return found


def test_only_the_store_names_the_files_of_a_run_directory():
    offenders = {(str(path.relative_to(PACKAGE)), name) for path in sorted(PACKAGE.rglob("*.py")) if path != OWNER
                 for name in spelled_names(path)}
    assert offenders == set(), "spell these through results.store.RunFolder / PartFolder"
    # the scan is not vacuous: it finds every name where they are spelled
    assert spelled_names(OWNER) >= NAMES | set(SUFFIXES) | FOLDERS


def test_the_folder_objects_give_the_documented_layout(tmp_path):
    run = RunFolder(tmp_path / "m-123")
    part = run.part("retrieval", "scifact")
    assert (run.leaderboard, run.cells, run.report) == (tmp_path / "m-123" / "leaderboard.json",
                                                        tmp_path / "m-123" / "cells.csv", tmp_path / "m-123" / "report")
    assert part.dir == tmp_path / "m-123" / "retrieval" / "scifact"
    assert run.part_table("retrieval", "scifact") == tmp_path / "m-123" / "retrieval" / "scifact.csv"
    assert run.part_mark("retrieval", "scifact") == tmp_path / "m-123" / "retrieval" / "scifact.json"
    assert part.name_of(part.run_file("L2_d8-int8")) == "runs/L2_d8-int8.trec.gz"
    assert part.name_of(part.bm25_run) == "runs/bm25-flat.trec.gz"
    assert [part.name_of(p) for p in (part.per_query, part.pair_scores, part.bm25_per_query, part.funnels,
                                      part.funnel_per_query)] == [
        "per_query.csv.gz", "pair_scores.npz", "bm25_per_query.csv.gz", "funnels.csv", "funnel_per_query.csv.gz"]
    assert Path(part) == part.dir and str(part) == str(part.dir)  # what a Ray worker is handed
    with pytest.raises(ElasticIRError):
        run.part("retrieval", "../elsewhere")  # a part's files stay inside the run directory
    assert not run.is_run() and run.recorded_files("retrieval", "scifact") is None


def test_the_runner_alone_refuses_a_baseline_it_would_not_evaluate():
    from elasticir.config import RunConfig
    from elasticir.runner import run

    with pytest.raises(ElasticIRError, match="run_with_baseline"):
        run(RunConfig(baseline="some/baseline.yaml", sts=["stsbenchmark"], retrieval=[]))


def test_the_corpus_size_is_recorded_and_the_report_reads_it(tiny_encoder, toy_root, tmp_path):
    from elasticir.report.build import _n_docs
    from elasticir.report.rundir import load_run
    from elasticir.runner import RunConfig, run

    config = RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, layers=[1], dims=[8],
                       data_root=str(toy_root), out=str(tmp_path / "out"), show_progress=False, latency_samples=2,
                       latency_texts=0, limit_corpus=5, limit_queries=2)
    outcome = run(config, tiny_encoder)
    (record,) = outcome.leaderboard.datasets
    assert record.n_docs == 5  # the documents searched: the subset, not the 7 of the corpus file
    loaded = load_run(outcome.dir)
    assert _n_docs(loaded, "toyir") == 5
    loaded.board.datasets[0] = record.model_copy(update={"n_docs": 4})
    assert _n_docs(loaded, "toyir") == 4  # read from the record, not inferred
    loaded.board.datasets[0] = record.model_copy(update={"n_docs": None})  # a leaderboard from before the field
    assert _n_docs(loaded, "toyir") == 5  # inferred from the flat index's bytes, as before


def test_one_builder_makes_every_leaderboard():
    """A model's run and a baseline grid are stamped and written by results.assemble alone: no other module
    constructs a Leaderboard (loading and validating one is another matter)."""
    builders = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Leaderboard":
                builders.add(str(path.relative_to(PACKAGE)))
    assert builders == {"results/assemble.py"}
