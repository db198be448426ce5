"""Published numbers as checks: the reference files load, the committed MiniLM leaderboard matches MTEB and
pyserini, an edited one differs (exit 1), a subset never matches, and a malformed file is one error line."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.errors import ElasticIRError
from elasticir.results.references import (
    DEFAULT_REFERENCES,
    check_board,
    counts_by_source,
    load_reference_file,
    load_references,
)
from elasticir.results.schema import load_leaderboard

ROOT = Path(__file__).resolve().parents[1]
MINILM = ROOT / "leaderboards" / "all-MiniLM-L6-v2.json"


@pytest.fixture(scope="module")
def references():
    return load_references()


def test_every_shipped_file_validates_and_names_its_sources(references):
    files = sorted(DEFAULT_REFERENCES.glob("*.yaml"))
    assert {f.stem for f in files} >= {"mteb", "pyserini-2cr", "starbucks", "model-cards"}
    by_source = {}
    for item in references:
        by_source.setdefault(item.source, []).append(item.reference)
        assert item.reference.url.startswith("https://") and item.reference.where
    starbucks = by_source["starbucks"]
    # the released checkpoints: STS columns for Starbucks_STS, retrieval columns for Starbucks-msmarco, 6 sizes
    assert {r.cell for r in starbucks if r.model == "ielabgroup/Starbucks_STS"} == {
        (2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)}
    quora = next(r for r in starbucks if r.model == "ielabgroup/Starbucks-msmarco" and r.dataset == "quora"
                 and r.cell == (10, 512))
    assert quora.value == 0.0178 and "Table A2" in quora.where  # the README's fault, transcribed as printed
    stsb = next(r for r in by_source["mteb"] if r.model == "sentence-transformers/all-MiniLM-L6-v2"
                and r.dataset == "stsbenchmark" and r.metric == "spearman")
    assert abs(stsb.value - 0.8203) < 1e-4 and stsb.weights_sha256 == load_leaderboard(MINILM).model.weights_sha256
    bm25 = next(r for r in by_source["pyserini-2cr"] if r.dataset == "scifact" and r.metric == "nDCG@10")
    assert bm25.baseline == "bm25-flat" and bm25.value == 0.6789


def test_committed_minilm_leaderboard_matches_its_references(references):
    results = check_board(load_leaderboard(MINILM), references)
    counts = counts_by_source(results)
    assert counts["mteb"]["matches"] == 7 and counts["mteb"]["differs"] == 0  # STSb, STS12, SICK-R x2 + SciFact
    assert counts["pyserini-2cr"]["matches"] == 3 and counts["pyserini-2cr"]["differs"] == 0
    assert "starbucks" not in counts  # another model's references do not apply
    not_run = {r.reference.dataset for r in results if r.status == "not run" and r.source == "mteb"}
    assert {"sts13", "nfcorpus"} <= not_run and "stsbenchmark" not in not_run


def test_edited_leaderboard_differs_and_exits_1(tmp_path):
    data = json.loads(MINILM.read_text())
    cell = next(c for c in data["results"] if c["dataset"] == "stsbenchmark" and (c["layer"], c["dim"]) == (6, 384))
    cell["metrics"]["spearman"] -= 0.02
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["check", str(edited)])
    assert result.exit_code == 1, result.output
    line = next(row for row in result.output.splitlines() if row.startswith("differs"))
    assert "stsbenchmark/test L6 d384 spearman" in line and "-0.0200 / 0.005" in line
    assert "mteb: 6 matches, 1 differs" in result.output
    assert CliRunner().invoke(app, ["check", str(MINILM)]).exit_code == 0


def test_subset_run_never_matches_a_full_reference(references):
    board = load_leaderboard(ROOT / "leaderboards" / "all-mpnet-base-v2.json")
    assert board.subset
    statuses = {r.status for r in check_board(board, references) if r.reference.dataset == "stsbenchmark"}
    assert statuses == {"subset"}


def test_a_reference_pinned_to_other_weights_is_not_compared(references):
    board = load_leaderboard(MINILM).model_copy(deep=True)
    board.model.weights_sha256 = "0" * 64
    statuses = {r.status for r in check_board(board, references) if r.source == "mteb" and r.status != "not run"}
    assert statuses == {"other weights"}


@pytest.mark.parametrize("edit, message", [
    ("value: 0.8203", "value: abc"),
    ("value: 0.8203, tolerance: 0.005", "value: 0.8203, tolerance: -1"),
    ("dataset: stsbenchmark", "dataset: stsbenchmark, colour: red"),
])
def test_malformed_reference_file_is_one_error_naming_file_and_entry(tmp_path, edit, message):
    good = ("source: t\ndescription: d\ntolerance_rule: r\nreferences:\n"
            "  - {model: m/x, dataset: sts12, split: test, cell: [1, 8], metric: spearman, value: 0.5, "
            "tolerance: 0.005, url: 'https://x', where: w}\n"
            "  - {model: m/x, dataset: stsbenchmark, split: test, cell: [1, 8], metric: spearman, value: 0.8203, "
            "tolerance: 0.005, url: 'https://x', where: w}\n")
    path = tmp_path / "bad.yaml"
    path.write_text(good.replace(edit, message))
    with pytest.raises(ElasticIRError) as info:
        load_reference_file(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "references[1] (m/x stsbenchmark spearman)" in text
    result = CliRunner().invoke(app, ["check", str(MINILM), "--references", str(path)])
    assert result.exit_code == 2 and result.output.startswith("error:")  # a user mistake, not a difference


def test_check_needs_an_existing_target():
    result = CliRunner().invoke(app, ["check", "no/such/run"])
    assert result.exit_code == 2 and result.output.startswith("error:") and "no/such/run" in result.output


@pytest.mark.slow
@pytest.mark.integration
def test_fresh_minilm_run_on_stsbenchmark_matches_mteb(shared_data, tmp_path):
    """The real model on the full STSb test set: its full cell matches MTEB; nothing differs."""
    from elasticir.encoders import ElasticEncoder
    from elasticir.runner import RunConfig, run

    encoder = ElasticEncoder("all-MiniLM-L6-v2", device="cpu")
    run(RunConfig(sts=["stsbenchmark"], retrieval=[], data_root=str(shared_data), out=str(tmp_path), layers=[6],
                  dims=[384], bm25=False, show_progress=False), encoder)
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "leaderboard.json").is_file()]
    result = CliRunner().invoke(app, ["check", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "mteb: 2 matches" in result.output


def test_the_sections_list_compared_references_and_count_the_rest(references):
    from elasticir.report.check import markdown_section
    from elasticir.results.references import references_html

    board = load_leaderboard(MINILM)
    text = markdown_section(check_board(board, references))
    assert text.startswith("## Published references") and "mteb: 7 matches, 33 not run" in text
    assert text.count("| matches |") == 10 and "| not run |" not in text
    html = "\n".join(references_html([board], ["MiniLM"]))
    assert "<h3>MiniLM: mteb: 7 matches" in html and html.count("<td>matches</td>") == 10


@pytest.mark.slow
def test_report_and_leaderboard_page_carry_the_check(tmp_path):
    from elasticir.report.build import write_report
    from elasticir.report.leaderboard import render_leaderboards

    _, page = render_leaderboards([MINILM])
    assert "<h2>Published references</h2>" in page and "mteb: 7 matches, 33 not run" in page
    write_report(MINILM, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Published references" in text and "| matches | mteb | sentence-transformers/all-MiniLM-L6-v2 " \
        "stsbenchmark/test L6 d384 spearman | 0.8203 | 0.8203 |" in text
    assert "## Anomalies" in text and "| scifact | L6 d384 | below-bm25 |" in text
