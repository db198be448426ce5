"""Reports for papers (elasticir.report): significance tests, the FLOPs model, figures, tables, write_report.

Fast: no real model or data; runs are tiny synthetic run directories written in the real layout.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from elasticir.encoders import cost
from elasticir.evaluation import significance
from elasticir.report import tables
from elasticir.report.rundir import load_run


# --- synthetic run directories --------------------------------------------------------------------------------
def make_run(root: Path, name: str, layers=(1, 2, 3, 4), dims=(8, 16, 32), *, seed=0, quality_shift=0.0,
             n_pairs=120, n_queries=40, hidden=32) -> Path:
    """A run directory like elasticir's: cells.csv, leaderboard.json, pair_scores.npz, per_query files.

    Data (gold scores, query ids) depend only on a fixed seed, so two runs share them; cell quality grows with
    layer and dim, and `quality_shift` moves a whole run up or down.
    """
    data_rng, rng = np.random.default_rng(123), np.random.default_rng(seed)
    run_dir = root / f"{name}-0123456789"
    model_dir = root / f"model-{name}"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({"num_hidden_layers": max(layers), "hidden_size": hidden,
                                                       "intermediate_size": 2 * hidden, "vocab_size": 100,
                                                       "max_position_embeddings": 64, "type_vocab_size": 2}))
    cells = [(layer, dim) for layer in layers for dim in dims]
    gold = data_rng.integers(0, 11, n_pairs) / 2.0
    cosines, rows, results = [], [], []
    for layer, dim in cells:
        strength = (layer / max(layers)) * (dim / max(dims)) + quality_shift
        cosine = strength * gold + rng.normal(0, 1.5, n_pairs)
        cosines.append(cosine)
        rho = stats.spearmanr(cosine, gold).statistic
        rows.append({"task": "sts", "dataset": "toysts", "layer": layer, "dim": dim, "spearman": rho,
                     "pearson": stats.pearsonr(cosine, gold).statistic})
    part = run_dir / "sts" / "toysts"
    part.mkdir(parents=True)
    np.savez_compressed(part / "pair_scores.npz", cosines=np.array(cosines, dtype=np.float32), gold=gold,
                        cells=np.array(cells))
    query_ids = [f"q{i}" for i in range(n_queries)]
    per_query = []
    part = run_dir / "retrieval" / "toyret"
    part.mkdir(parents=True)
    for layer, dim in cells:
        strength = np.clip(0.2 + 0.5 * (layer / max(layers)) * (dim / max(dims)) + quality_shift, 0, 1)
        values = np.clip(strength + rng.normal(0, 0.15, n_queries), 0, 1)
        per_query += [{"query_id": q, "measure": "nDCG@10", "value": v, "layer": layer, "dim": dim}
                      for q, v in zip(query_ids, values)]
        rows.append({"task": "retrieval", "dataset": "toyret", "layer": layer, "dim": dim,
                     "nDCG@10": values.mean(), "index_bytes": 4 * dim * 500, "build_s": 0.01,
                     "search_qps": 1000.0 / layer, "latency_p50_ms": 0.1 * dim / 8,
                     "latency_p95_ms": 0.2 * dim / 8, "backend": "torch matmul+topk (cpu)"})
    # as the runner writes it: named .gz but plain text (bm25_per_query below is really gzipped)
    (part / "per_query.csv.gz").write_bytes(pd.DataFrame(per_query).to_csv(index=False).encode())
    bm25_values = np.clip(0.45 + data_rng.normal(0, 0.2, n_queries), 0, 1)
    pd.DataFrame({"query_id": query_ids, "measure": "nDCG@10", "value": bm25_values}).to_csv(
        part / "bm25_per_query.csv.gz", index=False)
    table = pd.DataFrame(rows)
    table = table[["task", "dataset", "layer", "dim"] + [c for c in table.columns if c not in
                                                         ("task", "dataset", "layer", "dim")]]
    table.to_csv(run_dir / "cells.csv", index=False)
    metric_cols = {"spearman", "pearson", "nDCG@10"}
    cost_cols = {"index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms"}
    for row in table.to_dict("records"):
        results.append({"dataset": row["dataset"], "layer": row["layer"], "dim": row["dim"],
                        "metrics": {k: float(v) for k, v in row.items() if k in metric_cols and pd.notna(v)},
                        "costs": {k: float(v) for k, v in row.items() if k in cost_cols and pd.notna(v)}})
    pairs = [(layers[i], dims[min(i, len(dims) - 1)]) for i in range(len(layers))]
    board = {
        "created_at": datetime.now(UTC).isoformat(), "run_id": run_dir.name,
        "model": {"name": f"toy/{name}", "path": str(model_dir), "revision": None, "weights_sha256": "0" * 64,
                  "num_layers": max(layers), "hidden_size": hidden, "pooling": "mean", "normalize": True,
                  "max_length": 64, "prompts": {}, "dtype": "float32", "device": "cpu"},
        "config": {}, "grid": {"layers": list(layers), "dims": list(dims), "pairs": pairs},
        "datasets": [
            {"name": "toysts", "task": "sts", "split": "test", "n_examples": n_pairs, "source": None, "files": []},
            {"name": "toyret", "task": "retrieval", "split": "test", "n_examples": n_queries, "source": None,
             "files": []}],
        "main_metric": {"sts": "spearman", "retrieval": "nDCG@10"}, "results": results,
        "baselines": [{"dataset": "toyret", "name": "bm25-flat", "params": {},
                       "metrics": {"nDCG@10": float(bm25_values.mean())}}],
        "notes": [], "library_versions": {}, "seed": 0, "command": ["test"], "timings": [],
        "machine": {"platform": "x", "python": "3", "processor": "x", "cpu_count": 1, "gpu": None},
    }
    (run_dir / "leaderboard.json").write_text(json.dumps(board))
    return run_dir


# --- significance -----------------------------------------------------------------------------------------------
def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=60)
    b = a + rng.normal(0.1, 0.4, size=60)
    expected = stats.ttest_rel(a, b)
    t, p = significance.paired_ttest(a, b)
    assert t == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert significance.paired_ttest(a, a) == (0.0, 1.0)  # scipy says nan; identical runs are not different


def test_randomization_exact_matches_scipy_permutation_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=9), rng.normal(size=9)
    expected = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                      permutation_type="samples", n_resamples=10_000).pvalue
    assert significance.paired_randomization(a, b)[1] == pytest.approx(expected)
    # sampled version close to the t-test on well-behaved data
    a, b = rng.normal(size=80), rng.normal(0.2, 1, size=80)
    assert significance.paired_randomization(a, b, 20_000)[1] == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=0.02)


def test_holm_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert significance.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = significance.holm([0.5, np.nan, 0.9])
    assert np.isnan(adjusted[1]) and adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)


def test_weighted_spearman_equals_spearman_of_the_resample():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40).round(1)  # ties on both sides
    y = (x + rng.normal(size=40)).round(0)
    for _ in range(5):
        idx = rng.integers(0, 40, 40)
        weights = np.bincount(idx, minlength=40)[:, None].astype(float)
        got = significance.weighted_spearman(x, significance.weighted_ranks(y, weights), weights)[0]
        assert got == pytest.approx(stats.spearmanr(x[idx], y[idx]).statistic)


def test_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(3)
    gold = rng.normal(size=400)
    good, bad = gold + rng.normal(0, 0.5, 400), gold + rng.normal(0, 2.0, 400)
    boot = significance.bootstrap_spearman(np.vstack([good, bad, good]), gold, 1000)
    assert significance.bootstrap_pvalue(boot[0] - boot[1]) < 0.01
    assert significance.bootstrap_pvalue(boot[0] - boot[2]) == 1.0


def test_run_compared_with_itself_has_no_significant_cell(tmp_path):
    run = load_run(make_run(tmp_path, "a"))
    table = significance.compare_runs(run, load_run(run.dir), n_resamples=500)
    assert len(table) == 2 * 12 and not table.significant.any()
    assert (table["diff"] == 0).all() and (table.p == 1).all()


def test_shared_cells_only_and_a_clear_difference_is_found(tmp_path):
    big = load_run(make_run(tmp_path, "big", layers=(1, 2, 3, 4), quality_shift=0.6, seed=1))
    small = load_run(make_run(tmp_path, "small", layers=(1, 2), seed=2))
    table = significance.compare_runs(big, small, n_resamples=500)
    assert set(zip(table.layer, table.dim)) == {(layer, dim) for layer in (1, 2) for dim in (8, 16, 32)}
    assert table[table.dataset == "toyret"].significant.all()  # +0.6 nDCG on every query
    assert (table.family == 6).all()


# --- costs ------------------------------------------------------------------------------------------------------
def test_flops_formula_hand_count():
    shape = cost.EncoderShape(num_layers=2, hidden_size=4, intermediate_size=8)
    # per layer per token at n = 3: QKVO 4*2*4*4 = 128, QK^T 2*3*4 = 24, AV 24, FFN 2*2*4*8 = 128 -> 304
    assert cost.layer_flops_per_token(shape, 3) == 304
    assert cost.encode_flops_per_token(shape, 2, 3, pooling="mean") == 2 * 304 + 4
    assert cost.encode_flops_per_token(shape, 2, 3, pooling="cls") == 2 * 304
    costs = cost.cell_costs(shape, 1, 2, seq_len=3, n_docs=10)
    assert costs["encode_flops"] == (304 + 4) * 3 + 3 * 2 and costs["search_flops"] == 2 * 2 * 10


def test_flops_and_params_match_a_tiny_bert():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    shape = cost.EncoderShape.from_config(config)
    batch, length = 3, 7
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.randint(0, 100, (batch, length)))
    assert counter.get_total_flops() == batch * length * cost.encode_flops_per_token(shape, 2, length, "cls")
    assert cost.params_touched(shape, 2)["total"] == sum(p.numel() for p in model.parameters())


# --- figures, tables, report --------------------------------------------------------------------------------------
def test_pareto_front():
    from elasticir.evaluation.significance import pareto_front

    costs = [1, 2, 2, 3, 4, 5]
    values = [0.1, 0.3, 0.2, 0.25, 0.5, 0.5]
    assert pareto_front(costs, values) == [0, 1, 4]


def test_table_bolds_the_best_per_column(tmp_path):
    run = load_run(make_run(tmp_path, "a"))
    latex, markdown = tables.grid_table(run, "toyret")
    grid = run.grid("toyret")
    best = grid[32].idxmax()
    assert r"\toprule" in latex and r"\bottomrule" in latex
    assert f"\\textbf{{{tables.fmt_value(grid.at[best, 32], 4)}}}" in latex
    assert f"**{tables.fmt_value(grid.at[best, 32], 4)}**" in markdown
    assert latex.count(r"\textbf") == grid.shape[1]  # one best per dim column (no ties in random data)


def test_write_report_writes_figures_and_tables(tmp_path):
    from elasticir.report.build import write_report

    run = make_run(tmp_path, "big", quality_shift=0.3, seed=1)
    base = make_run(tmp_path, "small", layers=(1, 2), seed=2)
    paths = write_report(run, tmp_path / "report", baseline_dir=base, cost="latency")
    names = {p.name for p in paths}
    for stem in ("heatmap_toysts", "heatmap_toyret", "heatmap_mean-all", "diff_toysts", "diff_toyret", "diff_mean",
                 "pareto_toyret_latency", "diagonal"):
        assert f"{stem}.pdf" in names and f"{stem}.png" in names
    assert "grid_toyret.tex" in names and "diagonal.md" in names and "comparison.tex" in names
    assert all(p.stat().st_size > 0 for p in paths)
    # the tables carry the run's numbers: every cell of the grid table, the comparison's differences
    grid_md = (tmp_path / "report" / "tables" / "grid_toyret.md").read_text()
    big = load_run(run)
    for value in big.grid("toyret").to_numpy().ravel():
        assert tables.fmt_value(value, 4) in grid_md
    sig = pd.read_csv(tmp_path / "report" / "significance.csv")
    small = load_run(base)
    for row in sig.itertuples():
        expected = big.value(row.dataset, (row.layer, row.dim)) - small.value(row.dataset, (row.layer, row.dim))
        assert row.diff == pytest.approx(expected, abs=1e-9)
    assert set(zip(sig.layer, sig.dim)) == {(1, d) for d in (8, 16, 32)} | {(2, d) for d in (8, 16, 32)}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "only the 6 cells both grids have are compared" in report
    assert "Holm" in report and "paired t-test" in report
    assert "pareto_toysts_latency.png" not in names  # no latency for STS cells: said in the notes instead
    assert "no latency cost recorded for sts cells" in report


def test_flops_cost_axis_covers_sts_and_retrieval(tmp_path):
    from elasticir.report.build import _cost_axis, cost_table

    run = load_run(make_run(tmp_path, "a"))
    costs = cost_table(run, [])
    sts, ret = costs[costs.dataset == "toysts"], costs[costs.dataset == "toyret"]
    assert _cost_axis("flops", "sts", sts) is not None and _cost_axis("latency", "sts", sts) is None
    x, _label, phrase = _cost_axis("flops", "retrieval", ret)
    assert "500 docs" in phrase and (x > 0).all()  # corpus size read back from the flat index bytes
    # deeper cells cost more; at one layer a wider dim costs only its search term more
    assert ret.set_index(["layer", "dim"]).query_flops.is_monotonic_increasing


def test_mteb_export_layout(tmp_path):
    from elasticir.report.mteb_export import export_mteb

    run_dir = make_run(tmp_path, "a")
    paths = export_mteb(run_dir, tmp_path / "mteb")
    base = tmp_path / "mteb" / "results" / "toy__a" / "no_revision_available"
    cell = base / "experiments" / "embed_dim_16__layer_2"
    meta = json.loads((cell / "model_meta.json").read_text())
    assert meta["experiment_kwargs"] == {"layer": 2, "embed_dim": 16} and meta["embed_dim"] == 16
    result = json.loads((cell / "toyret.json").read_text())
    run = load_run(run_dir)
    assert result["scores"]["test"][0]["main_score"] == pytest.approx(run.value("toyret", (2, 16)))
    assert result["scores"]["test"][0]["ndcg_at_10"] == pytest.approx(run.value("toyret", (2, 16)))
    assert (base / "toysts.json").is_file()  # the full model, without an experiment
    assert len(paths) == (12 + 1) * 3  # every cell + the full model, 2 tasks + model_meta each


@pytest.mark.slow  # a full report: ~10 s here
def test_baseline_can_be_a_published_leaderboard_json(tmp_path):
    """`report RUN --baseline leaderboards/X.json`: difference maps, no significance, and the caption says so."""
    from elasticir.report.build import write_report

    run = make_run(tmp_path, "big", quality_shift=0.3, seed=1)
    base = make_run(tmp_path, "small", layers=(1, 2), seed=2)
    published = tmp_path / "leaderboards" / "small.json"
    published.parent.mkdir()
    published.write_text((base / "leaderboard.json").read_text())  # a JSON alone: no per-example files beside it
    paths = write_report(run, tmp_path / "report", baseline_dir=published)
    names = {p.name for p in paths}
    assert "diff_toysts.png" in names and "diff_toyret.png" in names
    caption = (tmp_path / "report" / "figures" / "diff_toyret.caption.txt").read_text()
    assert "No significance test" in caption and "differences only" in caption and "significant (" not in caption
    significance = pd.read_csv(tmp_path / "report" / "significance.csv")
    assert significance.p.isna().all() and not significance.significant.any()
    assert len(significance) == 2 * 6  # the shared cells of both datasets, with their differences
    assert np.isfinite(significance["diff"]).all()
