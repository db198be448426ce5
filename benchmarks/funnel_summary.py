"""The funnel numbers of a finished `elasticir eval funnel` run, per retrieval dataset: the full cell, the cheapest
funnel whose nDCG@10 is within 0.005 of it (float32 stage 1; binary stage 1 = binary shortlist + float
rescoring), their cost ratios (search multiply-adds, latency measured side by side), the paired test, the
fastest funnel by measured latency, and the precision points of the full cell.

    python benchmarks/funnel_summary.py RUN_DIR --out results/examples/funnel [--latency-runs DIR ...]

--latency-runs: run directories of `eval funnel --funnel ...` with the picked funnels, measured again (e.g. with
one thread and every query): their side-by-side latency ratios replace the search run's in the tables.

Writes summary.json, summary.md and one figure per dataset (the multiply-adds Pareto plot of the report).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from elasticir.evaluation.funnel import TOLERANCE
from elasticir.report.build import write_report
from elasticir.report.rundir import load_run

METRIC = "nDCG@10"
KEEP = ("funnel", METRIC, f"delta_{METRIC}", "p", "p_holm", "search_madds", "hamming_bits", "madds_ratio",
        "latency_p50_ms", "full_latency_p50_ms", "latency_ratio", "stage1_bytes", "stage2_bytes", "encode_flops")


def _pick(rows: pd.DataFrame, by: list[str]) -> dict | None:
    if rows.empty:
        return None
    row = rows.sort_values(by).iloc[0]
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in KEEP if k in row}


def dataset_summary(run, dataset: str) -> dict:
    table = pd.read_csv(run.part(dataset).funnels)
    full = table[table.selected == "full cell"].iloc[0]
    funnels = table[table.selected != "full cell"]
    funnels = funnels.assign(work=funnels.search_madds + funnels.hamming_bits / 64)  # as evaluation.funnel counts
    close = funnels[funnels[f"delta_{METRIC}"] >= -TOLERANCE]
    summary = {"n_docs": int(full.K), "n_queries": run.n_examples(dataset), "funnels": len(funnels),
               "full_cell": {"funnel": full.funnel, METRIC: float(full[METRIC]),
                             "search_madds": float(full.search_madds)}}
    summary["cheapest_float32_within_tolerance"] = _pick(close[close.precision1 == "float32"],
                                                         ["work", "latency_p50_ms"])
    summary["cheapest_binary_rescored_within_tolerance"] = _pick(close[close.precision1 == "binary"],
                                                                 ["work", "latency_p50_ms"])
    summary["cheapest_int8_within_tolerance"] = _pick(close[close.precision1 == "int8"], ["work", "latency_p50_ms"])
    summary["stage1_precisions"] = sorted(funnels.precision1.unique())
    summary["best_per_stage1_layer"] = [  # does a shallower stage 1 ever come within tolerance?
        _pick(rows, [f"delta_{METRIC}"]) | {"layer1": int(layer), "precision1": precision}
        for (layer, precision), rows in funnels.assign(**{f"delta_{METRIC}": -funnels[f"delta_{METRIC}"]})
        .groupby(["layer1", "precision1"])]
    for best in summary["best_per_stage1_layer"]:
        best[f"delta_{METRIC}"] = -best[f"delta_{METRIC}"]
    if run.points is not None:
        points = run.points[(run.points.dataset == dataset) & (run.points.layer == full.layer2)
                            & (run.points.dim == full.dim2)]
        summary["full_cell_precisions"] = {r.precision: {METRIC: float(r[METRIC]), "index_bytes": int(r.index_bytes),
                                                         "latency_p50_ms": float(r.latency_p50_ms)}
                                           for _, r in points.iterrows()}
    return summary


def latency_ratios(runs: list[Path], dataset: str) -> dict[str, list[float]]:
    """funnel -> its latency ratio to the full cell in each latency run (side by side, interleaved per query)."""
    ratios: dict[str, list[float]] = {}
    for run_dir in runs:
        table = pd.read_csv(load_run(run_dir).part(dataset).funnels)
        for row in table[table.selected != "full cell"].itertuples():
            ratios.setdefault(row.funnel, []).append(float(row.latency_ratio))
    return ratios


def markdown(summaries: dict, threads: str) -> str:
    lines = ["# Funnel retrieval with all-MiniLM-L6-v2", "",
             (f"Stage 2 is always the full cell (6,384) float32; 'within tolerance' = nDCG@10 >= full - {TOLERANCE}. "
             "Search multiply-adds per query: N d1 + K d2 (binary stage 1: K d2, its N d1 Hamming bit operations "
             f"listed apart; 'cheapest' counts 64 of them as one operation). Latency: one query at a time, funnel and full cell interleaved ({threads}). p: paired "
             "t-test over queries against the full cell, Holm over all funnels of the dataset."), ""]
    for dataset, s in summaries.items():
        lines += [f"## {dataset} ({s['n_docs']} documents, {s['n_queries']} queries, {s['funnels']} funnels)", "",
                  (f"Full cell {s['full_cell']['funnel']}: nDCG@10 {s['full_cell'][METRIC]:.4f}, "
                  f"{s['full_cell']['search_madds']:,.0f} multiply-adds per query."), "",
                  "| choice | funnel | nDCG@10 | Δ | p (Holm) | madds x full | Hamming bits | latency x full |",
                  "|:--|:--|---:|---:|---:|---:|---:|---:|"]
        for label, key, precision in (
                ("cheapest, float32 stage 1", "cheapest_float32_within_tolerance", "float32"),
                ("cheapest, binary stage 1 + float rescoring", "cheapest_binary_rescored_within_tolerance", "binary"),
                ("cheapest, int8 stage 1", "cheapest_int8_within_tolerance", "int8")):
            if precision not in s["stage1_precisions"]:
                continue
            f = s.get(key)
            if f is None:
                lines.append(f"| {label} | none within tolerance | | | | | | |")
                continue
            measured = s.get("latency_runs", {}).get(f["funnel"])
            latency = " / ".join(f"{v:.2f}" for v in measured) if measured else f"{f['latency_ratio']:.2f}"
            lines.append(f"| {label} | {f['funnel']} | {f[METRIC]:.4f} | {f[f'delta_{METRIC}']:+.4f} | "
                         f"{f['p_holm']:.3g} | {f['madds_ratio']:.3f} | {f['hamming_bits']:,.0f} | {latency} |")
        if s.get("latency_runs"):
            lines += ["", "Every re-measured funnel (latency x full cell, one value per run):", ""]
            lines += [f"- {name}: {' / '.join(f'{v:.2f}' for v in values)}" for name, values in s["latency_runs"].items()]
        lines += ["", "Best funnel per stage-1 layer and precision (any K):", "",
                  "| stage 1 | funnel | nDCG@10 | Δ | p (Holm) |", "|:--|:--|---:|---:|---:|"]
        lines += [f"| L{b['layer1']} {b['precision1']} | {b['funnel']} | {b[METRIC]:.4f} | {b[f'delta_{METRIC}']:+.4f} "
                  f"| {b['p_holm']:.3g} |" for b in s["best_per_stage1_layer"]]
        if "full_cell_precisions" in s:
            lines += ["", "The full cell at each precision (single-stage search):", "",
                      "| precision | nDCG@10 | index bytes |", "|:--|---:|---:|"]
            lines += [f"| {p} | {v[METRIC]:.4f} | {v['index_bytes']:,} |" for p, v in s["full_cell_precisions"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/examples/funnel"))
    parser.add_argument("--threads", default="2 torch threads, shared 2-core CPU")
    parser.add_argument("--latency-runs", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    run = load_run(args.run_dir)
    datasets = [d for d in run.datasets if (run.part_dir(d) / "funnels.csv").is_file()]
    summaries = {d: dataset_summary(run, d) for d in datasets}
    for dataset in datasets if args.latency_runs else []:
        summaries[dataset]["latency_runs"] = latency_ratios(args.latency_runs, dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=2, default=float))
    (args.out / "summary.md").write_text(markdown(summaries, args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        write_report(args.run_dir, tmp)
        for dataset in datasets:
            shutil.copy(Path(tmp) / "figures" / f"funnel_{dataset}_search.png", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
