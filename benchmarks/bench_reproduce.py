"""Starbucks-style reproduction at the scale of this machine: every fine-tuning method from one start, same data,
steps and seed, evaluated on the full STS grid, with the diagonal table the paper reports.

Budget (default, ~60 min on a 2-core CPU with one torch thread): all-MiniLM-L6-v2, SNLI triplets + MRPC pairs
(never SICK or an STS test set; STSb train is left out because it shares 50-62% of its pairs with STS13-16),
120 steps of batch 32 at lr 2e-5, seed 0, for each method under its published recipe (training presets): SRL
(starbucks-sts), 2DMSE as sentence-transformers 6 (2dmse-st6) and <= 5 (2dmse-st5, the Starbucks paper's
baseline), SortedNet, full-grid SRL, plain, MRL, and one separately trained model per pair cell at exactly (L, d). The paper trains bert-base for far longer: read the numbers as "what these methods
do to an already strong small encoder in 3,840 training pairs", not as the paper's setting.

    ELASTICIR_DATA=../shared/data python benchmarks/bench_reproduce.py [--steps 120] [--out results/bench_reproduce]

Writes under --out: models/, runs/ (run directories with leaderboard JSON), leaderboards/<method>.json, the report
(SRL against 2DMSE, all methods overlaid on the diagonal figures), diagonal.json and diagonal.md.
Re-running reuses every finished model and evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from elasticir.cells import Cell, default_dims, default_pairs
from elasticir.data.catalog import data_root, sts_path
from elasticir.encoders import DEFAULT_MODEL
from elasticir.report.build import write_report
from elasticir.report.rundir import load_run
from elasticir.report.significance import compare_runs, holm
from elasticir.results.portable import make_portable
from elasticir.runner import RunConfig, run
from elasticir.training.trainer import TrainConfig, train, train_separate

# column -> the TrainConfig keys that select it; the methods whose KL changed come first, so a run cut short
# has them
METHODS = {"srl": {"preset": "starbucks-sts"}, "2dmse": {"preset": "2dmse-st6"},
           "2dmse-st5": {"preset": "2dmse-st5"}, "sortednet": {"preset": "sortednet"},
           "srl-grid": {"method": "srl-grid"}, "plain": {"method": "plain"}, "mrl": {"method": "mrl"}}
GRID_METHODS = ("mrl", "2dmse", "2dmse-st5", "srl-grid")  # trained on the benchmark's dims
DATA = "pairs/snli/train.jsonl.gz,pairs/mrpc/train.jsonl.gz"
STS = ("stsbenchmark", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr")
console = Console()


def evaluate(model: str | Path, args, datasets: list[str], **grid) -> Path:
    outcome = run(RunConfig(model=str(model), sts=datasets, retrieval=[], bm25=False, out=str(args.out / "runs"),
                            latency_texts=0, seed=args.seed, **grid))
    return outcome.dir


def significance(run, baseline, cells: list[Cell], seed: int, *, corrected: bool = True) -> dict:
    """{dataset: {cell: p}} at the pair cells, from the report's own test (paired bootstrap over STS pairs);
    `corrected`: Holm over every cell both grids share, as the report's difference maps; else the raw p."""
    table = compare_runs(run, baseline, seed=seed)
    wanted = {tuple(cell) for cell in cells}
    result: dict[str, dict[str, float]] = {}
    for row in table.itertuples():
        if (row.layer, row.dim) in wanted:
            result.setdefault(row.dataset, {})[f"({row.layer},{row.dim})"] = float(
                row.p_holm if corrected else row.p)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-separate", action="store_true", help="Skip the per-cell separately trained models.")
    parser.add_argument("--out", type=Path, default=Path("results/bench_reproduce"))
    parser.add_argument("--no-report", action="store_true", help="Skip the figures and tables of the SRL run.")
    parser.add_argument("--compare-with", type=Path, help=(
        "diagonal.md of an earlier run: also write comparison.md, this run's diagonal with significance marks "
        "and the difference to that one cell by cell"))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        parser.error(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    datasets = [name for name in STS if sts_path(data_root(), name)]
    console.print(f"STS datasets present: {', '.join(datasets)}; budget {args.steps} steps x batch {args.batch_size}")

    common = {"base": args.base, "data": args.data.split(","), "max_steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    from transformers import AutoConfig

    from elasticir.encoders import resolve_model_path

    shape = AutoConfig.from_pretrained(resolve_model_path(args.base)[0])
    pairs = default_pairs(shape.num_hidden_layers, shape.hidden_size)
    dims = sorted(set(default_dims(shape.hidden_size)) | {cell.dim for cell in pairs})
    grid = {"dims": dims, "pairs": [tuple(p) for p in pairs]}

    runs = {"base (no fine-tuning)": evaluate(args.base, args, datasets, **grid)}
    train_seconds = {}
    for method in methods:
        extra = {"dims": dims} if method in GRID_METHODS else {}
        folder = train(TrainConfig(**METHODS[method], out=str(args.out / "models" / method), **common, **extra))
        train_seconds[method] = json.loads((folder / "elastic.json").read_text())["train_seconds"]
        runs[method] = evaluate(folder, args, datasets, **grid)
    separate = {}
    if not args.no_separate:
        folders = train_separate(TrainConfig(out=str(args.out / "models" / "separate"), **common), pairs[:-1])
        for folder, cell in zip(folders, pairs[:-1]):
            train_seconds[f"separate {cell}"] = json.loads((folder / "elastic.json").read_text())["train_seconds"]
            separate[cell] = evaluate(folder, args, datasets, layers=[cell.layer], dims=[cell.dim],
                                      pairs=[tuple(cell)])

    loaded = {name: load_run(path, label=name) for name, path in runs.items()}
    per_dataset: dict[str, dict[str, dict[str, float]]] = {}
    for cell in pairs:
        key = f"({cell.layer},{cell.dim})"
        per_dataset[key] = {name: {d: r.value(d, tuple(cell)) for d in datasets} for name, r in loaded.items()}
        source = loaded.get("plain") if cell == pairs[-1] else (load_run(separate[cell]) if cell in separate else None)
        if source is not None and (separate or cell != pairs[-1]):
            per_dataset[key]["separate"] = {d: source.value(d, tuple(cell)) for d in datasets}
    means = pd.DataFrame({cell: {name: float(np.mean(list(v.values()))) for name, v in row.items()}
                          for cell, row in per_dataset.items()}).T
    means.loc["mean"] = means.mean()

    tests = {}
    if "srl" in loaded:
        for other in ("2dmse", "2dmse-st5", "sortednet", "plain"):
            if other in loaded:
                tests[f"srl vs {other}"] = significance(loaded["srl"], loaded[other], pairs, args.seed)
        if separate:
            tests["srl vs separate"] = {}
            for cell, path in separate.items():
                raw = significance(loaded["srl"], load_run(path), [cell], args.seed, corrected=False)
                for dataset, pv in raw.items():
                    tests["srl vs separate"].setdefault(dataset, {}).update(pv)
            for dataset, pv in tests["srl vs separate"].items():  # Holm across the pair cells (one per separate model)
                tests["srl vs separate"][dataset] = dict(zip(pv, map(float, holm(list(pv.values())))))

    table = Table(title=f"Diagonal: mean Spearman over {len(datasets)} STS sets ({', '.join(datasets)})")
    table.add_column("cell")
    for name in means.columns:
        table.add_column(name, justify="right")
    for cell, row in means.iterrows():
        table.add_row(cell, *(f"{v:.4f}" if np.isfinite(v) else "-" for v in row))
    console.print(table)
    for name, by_dataset in tests.items():
        wins = {cell: sum(1 for d in datasets if by_dataset[d].get(cell, 1) < 0.05
                          and per_dataset[cell]["srl"][d] > per_dataset[cell][name.split(" vs ")[1]][d])
                for cell in per_dataset}
        losses = {cell: sum(1 for d in datasets if by_dataset[d].get(cell, 1) < 0.05
                            and per_dataset[cell]["srl"][d] < per_dataset[cell][name.split(" vs ")[1]][d])
                  for cell in per_dataset}
        tested = [c for c in per_dataset if any(c in by_dataset[d] for d in datasets)]
        console.print(f"{name} (paired bootstrap; Holm per dataset over the shared grid, or the pair cells for separate): significantly better / worse in datasets "
                      + ", ".join(f"{c} {wins[c]}/{losses[c]}" for c in tested))
    claims = _claims(means, pairs)
    for line in claims:
        console.print(f"claim: {line}")

    leaderboards = args.out / "leaderboards"
    leaderboards.mkdir(parents=True, exist_ok=True)
    for name, path in {**runs, **{f"separate-{c.slug}": p for c, p in separate.items()}}.items():
        board = make_portable(json.loads((path / "leaderboard.json").read_text()))  # no paths of this machine
        (leaderboards / f"{name.split(' ')[0]}.json").write_text(json.dumps(board, indent=2))
    report = []
    if "srl" in runs and not args.no_report:
        baseline = runs.get("2dmse-st5") or runs.get("2dmse") or runs.get("plain")
        extra = [p for name, p in runs.items() if name not in ("srl",) and p != baseline]
        report = write_report(runs["srl"], args.out / "report", baseline_dir=baseline, extra_runs=extra)
    summary = {"settings": {k: str(v) for k, v in vars(args).items()}, "datasets": datasets,
               "pairs": [tuple(p) for p in pairs], "diagonal_mean": means.to_dict(), "per_dataset": per_dataset,
               "holm_p": tests, "train_seconds": train_seconds, "claims": claims,
               "runs": {k: str(v) for k, v in runs.items()},
               "separate_runs": {str(c): str(p) for c, p in separate.items()}}
    (args.out / "diagonal.json").write_text(json.dumps(summary, indent=2))
    (args.out / "diagonal.md").write_text(_markdown(means))
    if args.compare_with:
        text = _comparison(means, _read_markdown(args.compare_with), tests, per_dataset, datasets)
        (args.out / "comparison.md").write_text(text)
        console.print(text, markup=False, highlight=False)
    console.print(f"written: {args.out / 'diagonal.json'}, {args.out / 'diagonal.md'}, {leaderboards}/, "
                  f"report {len(report)} files in {args.out / 'report'}")


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| cell | " + " | ".join(frame.columns) + " |", "|---" * (len(frame.columns) + 1) + "|"]
    lines += [f"| {cell} | " + " | ".join(f"{v:.4f}" if np.isfinite(v) else "-" for v in row) + " |"
              for cell, row in frame.iterrows()]
    return "\n".join(lines) + "\n"


def _read_markdown(path: Path) -> pd.DataFrame:
    """A diagonal table as `_markdown` writes it (cells as rows, methods as columns)."""
    rows = [[part.strip() for part in line.strip().strip("|").split("|")]
            for line in path.read_text().splitlines() if line.startswith("|") and not line.startswith("|---")]
    frame = pd.DataFrame([row[1:] for row in rows[1:]], index=[row[0] for row in rows[1:]], columns=rows[0][1:])
    return frame.replace("-", "nan").astype(float)


def _marks(tests: dict, per_dataset: dict, datasets: list[str], other: str, cell: str) -> str:
    """SRL vs `other` at `cell`: datasets where SRL is significantly better (+) / worse (-), Holm-corrected."""
    by_dataset = tests.get(f"srl vs {other}")
    if not by_dataset or cell not in per_dataset or other not in per_dataset[cell]:
        return ""
    significant = [d for d in datasets if by_dataset.get(d, {}).get(cell, 1.0) < 0.05]
    better = sum(per_dataset[cell]["srl"][d] > per_dataset[cell][other][d] for d in significant)
    return f" [{better}+/{len(significant) - better}-]"


def _comparison(means: pd.DataFrame, previous: pd.DataFrame, tests: dict, per_dataset: dict,
                datasets: list[str]) -> str:
    """This run's diagonal (marks: SRL significantly better+/worse- on how many datasets), then this run minus
    the earlier one for every method both have."""
    title = ("This run (mean Spearman; [b+/w-]: SRL significantly better / worse than that column on b / w of "
             f"the {len(datasets)} datasets, paired bootstrap, Holm):")
    lines = [title, "",
             "| cell | " + " | ".join(means.columns) + " |", "|---" * (len(means.columns) + 1) + "|"]
    for cell, row in means.iterrows():
        lines.append(f"| {cell} | " + " | ".join(
            (f"{value:.4f}" + _marks(tests, per_dataset, datasets, name, cell)) if np.isfinite(value) else "-"
            for name, value in row.items()) + " |")
    shared = [name for name in means.columns if name in previous.columns]
    lines += ["", "This run minus the earlier one:", "", "| cell | " + " | ".join(shared) + " |",
              "|---" * (len(shared) + 1) + "|"]
    for cell in means.index:
        if cell in previous.index:
            lines.append(f"| {cell} | " + " | ".join(
                f"{means.loc[cell, name] - previous.loc[cell, name]:+.4f}" for name in shared) + " |")
    return "\n".join(lines) + "\n"


def _claims(means: pd.DataFrame, pairs: list[Cell]) -> list[str]:
    """The Starbucks paper's claims, checked on these numbers (held / not held), never asserted."""
    small = [f"({c.layer},{c.dim})" for c in pairs[:-1]]
    out = []

    def compare(a: str, b: str, rows: list[str], text: str) -> None:
        if a in means and b in means:
            diff = means.loc[rows, a] - means.loc[rows, b]
            verdict = "holds" if (diff > 0).all() else f"holds at {(diff > 0).sum()}/{len(rows)} cells"
            out.append(f"{text}: {verdict} (mean diff {diff.mean():+.4f})")

    compare("srl", "2dmse-st5", small + [means.index[-2]], "SRL beats 2DMSE (the paper's, ST <= 5) on every diagonal cell")
    compare("srl", "2dmse", small + [means.index[-2]], "SRL beats 2DMSE (ST 6) on every diagonal cell")
    compare("srl", "separate", small, "SRL matches or beats separately trained models below full size")
    compare("srl", "plain", small, "SRL beats plain fine-tuning on the sub-cells")
    compare("srl-grid", "srl", small, "full-grid SRL beats diagonal SRL on the diagonal")
    if "plain" in means and "srl" in means:
        full = means.index[-2]
        out.append(f"SRL costs little at the full cell: srl {means.loc[full, 'srl']:.4f} vs plain "
                   f"{means.loc[full, 'plain']:.4f}")
    return out


if __name__ == "__main__":
    main()
