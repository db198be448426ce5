"""The asymmetric-grid numbers of finished runs (`eval retrieval --query-layers ... --doc-layers ...`): per run
and retrieval dataset, nDCG@10 of every (Lq, Ld) at the full width and at one smaller dim, and the deep-documents
verdict of the report (documents at the deepest layer against the symmetric cell of the same query cost).

    python benchmarks/asymmetric_summary.py RUN_DIR [RUN_DIR ...] --out results/examples/asymmetric [--dim 64] \
        [--figures scifact]

Writes summary.md and summary.json, and copies each run's d=full heatmap and FLOPs Pareto plot of the datasets
named by --figures (default: every one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from elasticir.report.asymmetric import (
    add_tests,
    deep_against_symmetric,
    float32_points,
    layer_grid,
    per_query_points,
)
from elasticir.report.build import write_report
from elasticir.report.rundir import load_run

METRIC = "nDCG@10"


def _grid_markdown(grid) -> str:
    lines = ["| Lq \\ Ld | " + " | ".join(str(int(c)) for c in grid.columns) + " |",
             "|---" * (len(grid.columns) + 1) + "|"]
    for layer, row in grid.iterrows():
        cells = [f"**{v:.4f}**" if int(c) == int(layer) else f"{v:.4f}" for c, v in row.items()]
        lines.append(f"| {int(layer)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise(run_dir: Path, small: int, figures: Path, summary: dict, shown: list[str] | None) -> list[str]:
    run = load_run(run_dir)
    lines = [f"## {run.label} (`{run.board.run_id}`)\n"]
    with tempfile.TemporaryDirectory() as tmp:
        write_report(run_dir, Path(tmp))
        for dataset in [d for d in run.datasets if run.tasks[d] == "retrieval"]:
            points = float32_points(run, dataset)
            full = int(points.dim.max())
            compared = add_tests(deep_against_symmetric(points, METRIC), per_query_points(run, dataset, METRIC))
            entry = summary.setdefault(run.label, {})[dataset] = {}
            for dim in (full, small):
                grid = layer_grid(points, dim, METRIC)
                entry[f"d{dim}"] = {f"{int(q)},{int(d)}": float(v) for (q, d), v in grid.stack().items()}
                lines += [f"### {dataset}, d={dim}: {METRIC}, rows Lq, columns Ld (bold: Lq = Ld)\n",
                          _grid_markdown(grid), ""]
            rows = compared.to_dict("records")
            entry["deep_vs_symmetric"] = rows
            up = sum(r["significant"] and r["diff"] > 0 for r in rows)
            down = sum(r["significant"] and r["diff"] < 0 for r in rows)
            lines += [(f"{dataset}: documents at Ld = {int(points.doc_layer.max())} beat the symmetric cell of the "
                      f"same query cost in {sum(r['diff'] > 0 for r in rows)} of {len(rows)} (Lq, d) points "
                      f"(significantly: {up} higher, {down} lower; paired t-test, Holm).\n")]
            if shown is not None and dataset not in shown:
                continue
            stem = f"{run.short_name}_{dataset}"
            for name, target in ((f"asymmetric_{dataset}_d{full}.png", f"{stem}_d{full}.png"),
                                 (f"pareto_{dataset}_asymmetric_flops.png", f"{stem}_pareto_flops.png")):
                shutil.copy(Path(tmp) / "figures" / name, figures / target)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=64, help="The smaller dim shown next to the full width.")
    parser.add_argument("--figures", help="Comma list of the datasets whose figures are copied (default: all).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    lines = ["# Asymmetric grid: queries at (Lq, d) against documents at (Ld, d)\n"]
    for run_dir in args.runs:
        lines += summarise(run_dir, args.dim, args.out, summary, args.figures.split(",") if args.figures else None)
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
