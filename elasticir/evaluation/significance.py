"""Paired significance tests between two runs' cells, corrected for testing many cells.

Retrieval: a two-sided **paired t-test over queries** (scipy.stats.ttest_rel; the usual IR test, which Smucker
et al. 2007 found to agree with the randomisation test), or a two-sided **paired randomisation (sign-flip)
test** over queries (`test="randomization"`, exact when 2^n <= the resample count).
STS: a two-sided **paired bootstrap over sentence pairs** of the Spearman difference: both runs' Spearman are
recomputed on the same resamples of pairs; p = 2 * min(P*(delta <= 0), P*(delta >= 0)) with the +1 correction.
Ranks of a resample are computed from multiplicities (no re-sort per resample), equal to scipy's average ranks.
Multiple cells: Holm's step-down correction over the cells of one dataset (the family), so a cell is marked at
p_holm < alpha; it controls the family-wise error rate. Cells absent from either run are not tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import numpy as np
import pandas as pd
from scipy import stats

TESTS = ("ttest", "randomization")
TEST_NAMES = {
    "ttest": "two-sided paired t-test over queries",
    "randomization": "two-sided paired randomisation (sign-flip) test over queries",
    "bootstrap": "two-sided paired bootstrap over pairs (Spearman difference)",
}


# --- basic tests --------------------------------------------------------------------------------------------
def paired_ttest(a, b) -> tuple[float, float]:
    """(t, p) of scipy.stats.ttest_rel(a, b); identical inputs give (0, 1) instead of scipy's nan."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = a - b
    if len(diff) < 2 or np.all(diff == diff[0]):
        if len(diff) and diff[0] != 0:
            return (math.copysign(math.inf, diff[0]), 0.0)
        return (0.0, 1.0)
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def paired_randomization(a, b, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """(mean difference, two-sided p) of a paired sign-flip randomisation test on the mean difference.

    Exact (every sign vector, the observed one included) when 2^n <= n_resamples, as scipy.stats.permutation_test
    does; otherwise p = (1 + #{|mean*| >= |mean|}) / (1 + n_resamples) with a fixed seed.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(diff)
    observed = diff.mean() if n else 0.0
    if n == 0 or np.all(diff == 0):
        return float(observed), 1.0
    tol = 1e-12 * max(1.0, abs(observed))  # floating-point ties count as "as extreme"
    if 2 ** n <= n_resamples:
        signs = np.array(list(product((1.0, -1.0), repeat=n)))
        means = signs @ diff / n
        return float(observed), float(np.mean(np.abs(means) >= abs(observed) - tol))
    rng = np.random.default_rng(seed)
    hits, done, chunk = 0, 0, 2000
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        signs = rng.choice((-1.0, 1.0), size=(size, n))
        hits += int(np.sum(np.abs(signs @ diff / n) >= abs(observed) - tol))
        done += size
    return float(observed), float((hits + 1) / (n_resamples + 1))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, capped at 1); nan stays nan and is not counted."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


# --- Spearman on bootstrap resamples ------------------------------------------------------------------------
def _tie_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    sizes = np.diff(np.r_[starts, len(x)])
    return order, starts, sizes


def weighted_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks each item would get in a sample holding it weights[i, b] times: [n, B] (items x resamples).

    Equal to scipy.stats.rankdata(x[idx]) mapped back to items, for idx with bincount(idx) == weights[:, b].
    Items are rows, so every gather and scatter moves whole contiguous rows.
    """
    order, starts, sizes = _tie_groups(np.asarray(x))
    w_sorted = weights[order]
    group = w_sorted if len(starts) == len(order) else np.add.reduceat(w_sorted, starts, axis=0)
    rank_group = np.cumsum(group, axis=0) - (group - 1) / 2.0  # before + (count + 1) / 2
    ranks = np.empty(weights.shape, dtype=np.float64)
    ranks[order] = rank_group if len(starts) == len(order) else np.repeat(rank_group, sizes, axis=0)
    return ranks


def weighted_spearman(x: np.ndarray, y_ranks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman of x against precomputed y ranks ([n, B]) on each resample (columns of `weights`): [B]."""
    x_ranks = weighted_ranks(x, weights)
    mean = (weights.sum(axis=0) + 1) / 2.0  # ranks of a sample of size N always average (N + 1) / 2
    x_ranks -= mean
    wy = weights * (y_ranks - mean)
    cov = np.einsum("nb,nb->b", x_ranks, wy)
    var_x = np.einsum("nb,nb,nb->b", x_ranks, x_ranks, weights)
    var_y = np.einsum("nb,nb->b", wy, y_ranks - mean)
    denominator = np.sqrt(var_x * var_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, cov / denominator, np.nan)


def _resample_weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Multiplicities [n, size] of `size` bootstrap resamples (n draws with replacement each)."""
    idx = rng.integers(0, n, size=(size, n))
    counts = np.bincount((idx + np.arange(size)[:, None] * n).ravel(), minlength=size * n)
    return counts.reshape(size, n).T.astype(np.float64)


def bootstrap_spearman(scores: np.ndarray, gold: np.ndarray, n_resamples: int = 5000, seed: int = 0,
                       chunk: int = 250) -> np.ndarray:
    """Spearman(scores[k], gold) on `n_resamples` paired bootstrap resamples of the pairs: [k, n_resamples].

    Every row sees the same resamples (same seed and n), which is what makes a difference of rows paired.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    gold = np.asarray(gold, dtype=np.float64)
    n = len(gold)
    rng = np.random.default_rng(seed)
    out = np.empty((len(scores), n_resamples))
    for b0 in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - b0)
        weights = np.ascontiguousarray(_resample_weights(rng, n, size))
        gold_ranks = weighted_ranks(gold, weights)
        for row, x in enumerate(scores):
            out[row, b0:b0 + size] = weighted_spearman(x, gold_ranks, weights)
    return out


def bootstrap_pvalue(deltas: np.ndarray) -> float:
    """Two-sided percentile p of a bootstrap distribution of differences against 0 (+1 corrected)."""
    deltas = deltas[~np.isnan(deltas)]
    b = len(deltas)
    if b == 0:
        return float("nan")
    low = (np.sum(deltas <= 0) + 1) / (b + 1)
    high = (np.sum(deltas >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(low, high)))


# --- run vs run ---------------------------------------------------------------------------------------------
def compare_runs(run, baseline, *, test: str = "ttest", alpha: float = 0.05, n_resamples: int = 2000,
                 seed: int = 0, datasets: list[str] | None = None, cells=None) -> pd.DataFrame:
    """Every cell both runs have, on every dataset both have: values, difference (run - baseline), p, Holm p.

    Columns: dataset, task, metric, layer, dim, value, baseline, diff, ci_low, ci_high, p, p_holm, significant,
    test, n (queries or pairs), family (cells in the Holm family). Datasets whose per-example files are missing
    get p = nan (and are never marked). Resample counts grow with the family so that the smallest attainable
    bootstrap / randomisation p (about 2 / B) can pass Holm's first threshold alpha / family. `cells` limits the
    comparison (and so the Holm family) to those cells, e.g. a pair list.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    shared_datasets = [d for d in run.datasets if d in baseline.tasks and (datasets is None or d in datasets)]
    rows = []
    for dataset in shared_datasets:
        task, metric = run.tasks[dataset], run.metric(dataset)
        shared = sorted(set(run.grid_cells) & set(baseline.grid_cells) & set(cells or run.grid_cells))
        # enough resamples that the smallest attainable p (about 2 / B) can survive Holm over the family
        resamples = max(n_resamples, math.ceil(3 * len(shared) / alpha))
        if task == "retrieval":
            rows += _compare_retrieval(run, baseline, dataset, metric, shared, test, resamples, seed)
        else:
            rows += _compare_sts(run, baseline, dataset, metric, shared, resamples, seed)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    for dataset, index in table.groupby("dataset").groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p"].to_numpy())
        table.loc[index, "family"] = len(index)
    table["significant"] = table["p_holm"] < alpha
    return table


def _compare_retrieval(run, baseline, dataset, metric, shared, test, n_resamples, seed) -> list[dict]:
    mine, theirs = run.per_query(dataset, metric), baseline.per_query(dataset, metric)
    rows = []
    for cell in shared:
        value, base = run.value(dataset, cell), baseline.value(dataset, cell)
        p, n, low, high = np.nan, 0, np.nan, np.nan
        if mine is not None and theirs is not None and cell in mine.columns and cell in theirs.columns:
            joined = pd.concat([mine[cell], theirs[cell]], axis=1, join="inner").dropna()
            a, b = joined.iloc[:, 0].to_numpy(), joined.iloc[:, 1].to_numpy()
            n = len(joined)
            p = paired_ttest(a, b)[1] if test == "ttest" else paired_randomization(a, b, n_resamples, seed)[1]
            if n > 1:
                diff = a - b
                half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)
                low, high = diff.mean() - half, diff.mean() + half
        rows.append({"dataset": dataset, "task": "retrieval", "metric": metric, "layer": cell[0], "dim": cell[1],
                     "value": value, "baseline": base, "diff": value - base, "ci_low": low, "ci_high": high,
                     "p": p, "test": test, "n": n})
    return rows


def _compare_sts(run, baseline, dataset, metric, shared, n_resamples, seed) -> list[dict]:
    mine, theirs = run.pair_scores(dataset), baseline.pair_scores(dataset)
    rows = []
    usable = (mine is not None and theirs is not None and len(mine[1]) == len(theirs[1])
              and np.allclose(mine[1], theirs[1]))
    boot = {}
    if usable and metric == "spearman" and shared:
        index_a = {c: i for i, c in enumerate(mine[2])}
        index_b = {c: i for i, c in enumerate(theirs[2])}
        cells = [c for c in shared if c in index_a and c in index_b]
        stacked = np.vstack([mine[0][[index_a[c] for c in cells]], theirs[0][[index_b[c] for c in cells]]])
        resampled = bootstrap_spearman(stacked, mine[1], n_resamples, seed)
        for k, cell in enumerate(cells):
            boot[cell] = resampled[k] - resampled[len(cells) + k]
    for cell in shared:
        value, base = run.value(dataset, cell), baseline.value(dataset, cell)
        deltas = boot.get(cell)
        rows.append({"dataset": dataset, "task": "sts", "metric": metric, "layer": cell[0], "dim": cell[1],
                     "value": value, "baseline": base, "diff": value - base,
                     "ci_low": float(np.nanpercentile(deltas, 2.5)) if deltas is not None else np.nan,
                     "ci_high": float(np.nanpercentile(deltas, 97.5)) if deltas is not None else np.nan,
                     "p": bootstrap_pvalue(deltas) if deltas is not None else np.nan, "test": "bootstrap",
                     "n": len(mine[1]) if usable else 0})
    return rows


def describe(table: pd.DataFrame, alpha: float = 0.05) -> str:
    """One sentence naming the tests and the correction, for captions and legends."""
    if table.empty:
        return "no shared cells were tested"
    if table["p"].isna().all():
        return "no significance test: per-query / per-pair values are missing on one side (e.g. a leaderboard JSON)"
    parts = []
    for test in dict.fromkeys(table["test"]):
        sub = table[table.test == test]
        sizes = ", ".join(f"{d}: n={int(n)}" for d, n in sub.groupby("dataset")["n"].first().items())
        parts.append(f"{TEST_NAMES[test]} ({sizes})")
    families = ", ".join(sorted({str(int(f)) for f in table["family"]}))
    return (f"p < {alpha} after Holm correction over the {families} shared cells of each dataset; "
            + "; ".join(parts))


# --- the mean over datasets -------------------------------------------------------------------------------------
def compare_mean(run, baseline, *, datasets: list[str] | None = None, alpha: float = 0.05, n_resamples: int = 2000,
                 seed: int = 0, cells=None) -> pd.DataFrame:
    """The unweighted mean over datasets of each shared cell's difference (run - baseline), tested with a
    stratified paired bootstrap: every dataset's pairs / queries are resampled on their own (the same resamples
    for both runs), each resample's per-dataset differences (Spearman, or the mean per-query measure) are
    averaged, and p is the two-sided percentile p of that mean. Holm over the cells; one row per cell with
    dataset "mean". Cells or datasets without per-example values on both sides are left out; `cells` limits the
    cells (and the Holm family)."""
    datasets = [d for d in (datasets or run.datasets) if d in baseline.tasks]
    shared = sorted(set(run.grid_cells) & set(baseline.grid_cells) & set(cells or run.grid_cells))
    resamples = max(n_resamples, math.ceil(3 * max(1, len(shared)) / alpha))
    per_dataset = [_bootstrap_deltas(run, baseline, d, shared, resamples, seed + k) for k, d in enumerate(datasets)]
    per_dataset = [p for p in per_dataset if p is not None]
    rows = []
    for cell in shared:
        if not per_dataset or any(cell not in deltas for deltas in per_dataset):
            continue
        deltas = np.mean([deltas[cell] for deltas in per_dataset], axis=0)
        diff = float(np.mean([run.value(d, cell) - baseline.value(d, cell) for d in datasets]))
        rows.append({"dataset": "mean", "layer": cell[0], "dim": cell[1], "diff": diff,
                     "ci_low": float(np.nanpercentile(deltas, 2.5)), "ci_high": float(np.nanpercentile(deltas, 97.5)),
                     "p": bootstrap_pvalue(deltas), "test": "stratified bootstrap", "n": len(per_dataset)})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p"].to_numpy())
        table["family"] = len(table)
        table["significant"] = table["p_holm"] < alpha
    return table


def _bootstrap_deltas(run, baseline, dataset: str, cells, n_resamples: int, seed: int) -> dict | None:
    """{cell: [n_resamples] metric differences on paired resamples of one dataset's examples}, or None."""
    if run.tasks[dataset] == "sts":
        mine, theirs = run.pair_scores(dataset), baseline.pair_scores(dataset)
        if mine is None or theirs is None or len(mine[1]) != len(theirs[1]) or not np.allclose(mine[1], theirs[1]):
            return None
        index_a, index_b = {c: i for i, c in enumerate(mine[2])}, {c: i for i, c in enumerate(theirs[2])}
        cells = [c for c in cells if c in index_a and c in index_b]
        stacked = np.vstack([mine[0][[index_a[c] for c in cells]], theirs[0][[index_b[c] for c in cells]]])
        boot = bootstrap_spearman(stacked, mine[1], n_resamples, seed)
        return {cell: boot[k] - boot[len(cells) + k] for k, cell in enumerate(cells)}
    metric = run.metric(dataset)
    mine, theirs = run.per_query(dataset, metric), baseline.per_query(dataset, metric)
    if mine is None or theirs is None:
        return None
    cells = [c for c in cells if c in mine.columns and c in theirs.columns]
    diffs = {c: pd.concat([mine[c], theirs[c]], axis=1, join="inner").dropna() for c in cells}
    queries = sorted(set.intersection(*(set(d.index) for d in diffs.values()))) if diffs else []
    if not queries:
        return None
    weights = _resample_weights(np.random.default_rng(seed), len(queries), n_resamples)  # [queries, resamples]
    out = {}
    for cell, joined in diffs.items():
        diff = (joined.iloc[:, 0] - joined.iloc[:, 1]).reindex(queries).to_numpy()
        out[cell] = diff @ weights / len(queries)
    return out


def pareto_front(costs: Sequence[float], values: Sequence[float], rel_tol: float = 0.01) -> list[int]:
    """Indices of the Pareto-optimal points, ordered by cost.

    A point is dominated when another costs at most (1 + rel_tol) times as much and is strictly better, or costs
    strictly less and is as good. Costs within rel_tol count as equal, so a cell that is 0.1% cheaper (e.g. a
    smaller d at the same layer when the cost is encoder FLOPs) does not make the front on that alone.
    """
    costs, values = np.asarray(costs, dtype=float), np.asarray(values, dtype=float)
    valid = np.flatnonzero(np.isfinite(costs) & np.isfinite(values))
    front = []
    for i in valid:
        near = costs[valid] <= costs[i] * (1 + rel_tol)
        better = values[valid] > values[i]
        cheaper_as_good = (costs[valid] < costs[i]) & (values[valid] >= values[i])
        if not np.any(near & better) and not np.any(cheaper_as_good):
            front.append(int(i))
    return sorted(front, key=lambda i: (costs[i], values[i]))
