import json
import re
from pathlib import Path

import pytest

from elasticir.errors import ElasticIRError
from elasticir.results.leaderboard import Difference, render_leaderboards, reproduce, write_leaderboards
from elasticir.runner import RunConfig, run


def config(root, out, model="unused", **kw):
    kw = {"sts": ["toy-a", "toy-b"], "retrieval": [], "layers": [1, 4], "dims": [8, 32], "pairs": [(1, 8), (4, 32)],
          **kw}
    return RunConfig(model=model, data_root=str(root), out=str(out), show_progress=False, **kw)


@pytest.fixture
def two_runs(tiny_encoder, tiny_data_root, tmp_path):
    """Two runs of the tiny model that differ in max length (so in their numbers and their run ids)."""
    first = run(config(tiny_data_root, tmp_path / "a"), tiny_encoder)
    other = type(tiny_encoder).__new__(type(tiny_encoder))
    other.__dict__.update(tiny_encoder.__dict__)
    other.info = type(tiny_encoder.info)(**{**tiny_encoder.info.as_dict(), "name": "tiny/other", "max_length": 6})
    second = run(config(tiny_data_root, tmp_path / "b", layers=[2, 4]), other)
    return first, second


def test_render_compares_runs_with_bold_best(two_runs):
    first, second = two_runs
    markdown, _page = render_leaderboards([first.dir / "leaderboard.json", second.dir])  # a file or a run dir
    name = first.leaderboard.model.name
    assert Path(name).name in markdown and "tiny/other" in markdown
    assert "## toy-a — spearman, diagonal (grid pairs)" in markdown and "(4,32)" in markdown
    assert "toy-b" in markdown and "every (layer, dim) cell" in markdown
    # the full-model row: both runs evaluated (4, 32) on toy-a; the bold one is the larger
    values = {run.leaderboard.model.name: next(c.metrics["spearman"] for c in run.leaderboard.results
                                               if (c.dataset, c.layer, c.dim) == ("toy-a", 4, 32))
              for run in two_runs}
    best = max(values.values())
    assert f"**{best:.4f}**" in markdown.split("## toy-a")[0]
    assert re.search(r"\*\*-?\d\.\d{4}\*\*", markdown)
    # a cell only one run has is not bolded (nothing to compare with)
    row = next(line for line in markdown.split("## toy-a — spearman, every")[1].splitlines() if "tiny/other" in line)
    assert row.split("|")[2].strip() == "–"


def test_html_is_self_contained(two_runs, tmp_path):
    md_path, html_path = write_leaderboards([r.dir for r in two_runs], tmp_path / "board")
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<b>" in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"(src|href)\s*=", page) and "http://" not in page and "https://" not in page
    assert "tiny/other" in page and md_path.read_text().startswith("# elasticir leaderboard")


def test_bm25_baseline_is_a_row(two_runs, tmp_path):
    first, _ = two_runs
    data = json.loads((first.dir / "leaderboard.json").read_text())
    data["baselines"] = [{"dataset": "toy-a", "name": "bm25-flat", "params": {"k1": 0.9}, "metrics": {"spearman": 0.99}}]
    path = tmp_path / "with_bm25.json"
    path.write_text(json.dumps(data))
    markdown, page = render_leaderboards([path])
    assert "| *BM25 (bm25-flat)* | **0.9900** |" in markdown and 'class="baseline"' in page


def test_corrupted_file_gives_a_clear_error(two_runs, tmp_path):
    bad = tmp_path / "broken" / "leaderboard.json"
    bad.parent.mkdir()
    bad.write_text((two_runs[0].dir / "leaderboard.json").read_text()[:200])
    with pytest.raises(ElasticIRError, match=r"broken/leaderboard.json is not a valid elasticir leaderboard"):
        render_leaderboards([two_runs[0].dir, bad])
    data = json.loads((two_runs[0].dir / "leaderboard.json").read_text())
    del data["model"]["weights_sha256"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ElasticIRError, match=r"(?s)broken/leaderboard.json.*weights_sha256"):
        render_leaderboards([bad])
    with pytest.raises(ElasticIRError, match="no such leaderboard file"):
        render_leaderboards([tmp_path / "nope.json"])


def test_reproduce_finds_no_difference_then_a_tampered_metric(tiny_model_dir, tiny_encoder, tiny_data_root, tmp_path):
    original = run(config(tiny_data_root, tmp_path / "orig", model=str(tiny_model_dir), device="cpu"), tiny_encoder)
    path = original.dir / "leaderboard.json"
    assert reproduce(path) == []  # loads the model from the recorded config by itself

    data = json.loads(path.read_text())
    cell = data["results"][3]
    cell["metrics"]["spearman"] += 0.01
    data["datasets"][0]["files"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    differences = reproduce(path, encoder=tiny_encoder, out=tmp_path / "again")
    assert [d.kind for d in differences] == ["data", "metric"]
    metric = differences[1]
    assert (metric.dataset, metric.layer, metric.dim, metric.metric) == (cell["dataset"], cell["layer"], cell["dim"],
                                                                          "spearman")
    assert metric.delta == pytest.approx(-0.01, abs=1e-6) and "spearman" in str(metric)
    assert list((tmp_path / "again").glob("*/leaderboard.json"))  # an explicit out is kept
    assert reproduce(path, encoder=tiny_encoder, tolerance=0.05) == [differences[0]]  # within tolerance


def test_reproduce_flags_changed_weights(tiny_encoder, tiny_data_root, tmp_path):
    original = run(config(tiny_data_root, tmp_path / "orig", sts=["toy-a"]), tiny_encoder)
    data = json.loads((original.dir / "leaderboard.json").read_text())
    data["model"]["weights_sha256"] = "f" * 64
    path = tmp_path / "board.json"
    path.write_text(json.dumps(data))
    assert reproduce(path, encoder=tiny_encoder) == [
        Difference("weights", None, None, None, "weights_sha256", "f" * 64, tiny_encoder.info.weights_sha256)]


def test_mteb_scores_a_tiny_cell_like_we_do(tiny_encoder, tiny_data_root):
    """mteb's own STS evaluation through the cell wrapper; the real-model check (about 1 min per cell on CPU)
    is benchmarks/check_mteb_cell.py."""
    pytest.importorskip("mteb")
    from elasticir.cells import Grid
    from elasticir.data.sts import load_sts
    from elasticir.encoders.mteb import ElasticCellModel, OfflineSTSBenchmark, evaluate_cell_with_mteb
    from elasticir.evaluation.sts import evaluate_sts

    path = tiny_data_root / "sts" / "toy-a" / "test.jsonl.gz"
    ours = evaluate_sts(tiny_encoder, load_sts(path), Grid.for_model(4, 32, [2], [8]), show_progress=False)
    theirs = evaluate_cell_with_mteb(tiny_encoder, 2, 8, OfflineSTSBenchmark(path))
    assert theirs["cosine_spearman"] == pytest.approx(float(ours.cells.spearman.iloc[0]), abs=1e-6)
    assert theirs["cosine_pearson"] == pytest.approx(float(ours.cells.pearson.iloc[0]), abs=1e-6)
    meta = ElasticCellModel(tiny_encoder, 2, 8).mteb_model_meta
    assert meta.experiment_kwargs == {"layer": 2, "embed_dim": 8} and meta.embed_dim == 8
    with pytest.raises(ElasticIRError, match="out of range"):
        ElasticCellModel(tiny_encoder, 5, 8)
