"""Starbucks-style reproduction at the scale of this machine: every fine-tuning method from one start, same data,
steps and seed, evaluated on the full STS grid, against separately trained models as one baseline grid.

Budget (default, several hours on a 2-core CPU with one torch thread): all-MiniLM-L6-v2, SNLI triplets + MRPC pairs
(never SICK or an STS test set; STSb train is left out because it shares 50-62% of its pairs with STS13-16),
120 steps of batch 32 at lr 2e-5, seed 0, for each method under its published recipe (training presets): SRL
(starbucks-sts), 2DMSE as sentence-transformers 6 (2dmse-st6) and <= 5 (2dmse-st5, the Starbucks paper's
baseline), SortedNet, full-grid SRL, plain, MRL, and one separately trained model per pair cell at exactly (L, d).
The paper trains bert-base for far longer: read the numbers as "what these methods do to an already strong small
encoder in 3,840 training pairs", not as the paper's setting. `--steps`, `--batch-size`, `--methods` and
`--datasets` choose a smaller, stated budget (recorded in summary.json and the report).

    ELASTICIR_DATA=../shared/data python benchmarks/bench_reproduce.py [--steps 120] [--out results/bench_reproduce]

Everything goes through the library's own path: the separately trained models (plus plain fine-tuning at the
full cell) form one baseline grid (`separate.yaml`, a baseline SPEC), and `write_report` draws the difference
maps, Pareto fronts and the paper table (SRL against the baseline grid, every method a row block). Writes under
--out: models/, runs/ (run directories) and the report; small files (report tables and figures, portable
leaderboards, summary.json) are copied to --examples. Re-running reuses every finished model and evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from elasticir.baselines import evaluate as evaluate_baseline
from elasticir.baselines import parse_spec
from elasticir.cells import Cell, default_dims, default_pairs
from elasticir.data.catalog import data_root, sts_path
from elasticir.encoders import DEFAULT_MODEL
from elasticir.report.build import write_report
from elasticir.report.rundir import load_run
from elasticir.results.portable import make_portable
from elasticir.results.store import RunFolder
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


def _config(args, datasets: list[str], model: str | Path = "", **grid) -> RunConfig:
    return RunConfig(model=str(model) or args.base, sts=datasets, retrieval=[], bm25=False,
                     out=str(args.out / "runs"), cache_dir=args.cache_dir, latency_texts=0, seed=args.seed, **grid)


def _separate_spec(args, common: dict, pairs: list[Cell]) -> Path:
    """The baseline SPEC: one exactly trained model per pair cell below the full one, plain fine-tuning at the
    full cell (it is the separately trained full model), as a YAML file next to the models."""
    folders = train_separate(TrainConfig(out=str(args.out / "models" / "separate"), **common), pairs[:-1])
    lines = [f'"{c.layer}:{c.dim}": models/separate/{f.name}' for c, f in zip(pairs[:-1], folders)]
    if (args.out / "models" / "plain" / "elastic.json").is_file():
        lines.append(f'"{pairs[-1].layer}:{pairs[-1].dim}": models/plain')
    spec = args.out / "separate.yaml"
    spec.write_text("# cell -> separately trained model (written by benchmarks/bench_reproduce.py)\n"
                    + "\n".join(lines) + "\n")
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--datasets", default=",".join(STS), help="STS datasets (those present are used).")
    parser.add_argument("--no-separate", action="store_true", help="Skip the per-cell separately trained models.")
    parser.add_argument("--out", type=Path, default=Path("results/bench_reproduce"))
    parser.add_argument("--examples", type=Path, default=Path("results/examples/bench_reproduce"),
                        help="Where the small outputs (report, portable leaderboards, summary) are copied.")
    parser.add_argument("--cache-dir", default=None, help="Embedding cache shared between runs.")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        parser.error(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    datasets = [name for name in args.datasets.split(",") if name and sts_path(data_root(), name)]
    console.print(f"STS datasets present: {', '.join(datasets)}; budget {args.steps} steps x batch {args.batch_size}")

    common = {"base": args.base, "data": args.data.split(","), "max_steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    from transformers import AutoConfig

    from elasticir.encoders import resolve_model_path

    shape = AutoConfig.from_pretrained(resolve_model_path(args.base)[0])
    pairs = default_pairs(shape.num_hidden_layers, shape.hidden_size)
    dims = sorted(set(default_dims(shape.hidden_size)) | {cell.dim for cell in pairs})
    grid = {"dims": dims, "pairs": [tuple(p) for p in pairs]}

    runs = {"base": run(_config(args, datasets, **grid)).dir}
    train_seconds = {}
    for method in methods:
        extra = {"dims": dims} if method in GRID_METHODS else {}
        folder = train(TrainConfig(**METHODS[method], out=str(args.out / "models" / method), **common, **extra))
        train_seconds[method] = json.loads((folder / "elastic.json").read_text())["train_seconds"]
        runs[method] = run(_config(args, datasets, folder, **grid)).dir
    baseline = None
    if not args.no_separate:
        spec = _separate_spec(args, common, pairs)
        outcome = evaluate_baseline(parse_spec(spec), _config(args, datasets), dims)
        baseline = outcome.dir
        console.print(f"baseline grid {baseline}: evaluated {len(outcome.evaluated)}, reused {len(outcome.reused)}")
        for sub in sorted((args.out / "models" / "separate").iterdir()):
            if (sub / "elastic.json").is_file():
                train_seconds[f"separate {sub.name}"] = json.loads((sub / "elastic.json").read_text())["train_seconds"]

    main_run = runs.get("srl") or next(iter(runs.values()))
    extra = [path for path in runs.values() if path != main_run]
    report = write_report(main_run, args.out / "report", baseline_dir=baseline, extra_runs=extra)
    loaded = [load_run(path) for path in [main_run, *([baseline] if baseline else []), *extra]]
    means = pd.DataFrame({r.label: {str(c): float(np.mean([r.value(d, c) for d in datasets])) for c in pairs}
                          for r in loaded})
    means.loc["mean"] = means.mean()
    claims = _claims(means, pairs)
    for line in claims:
        console.print(f"claim: {line}")
    summary = {"settings": {k: str(v) for k, v in vars(args).items()}, "datasets": datasets,
               "pairs": [tuple(p) for p in pairs], "diagonal_mean": means.to_dict(), "train_seconds": train_seconds,
               "claims": claims}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    _publish(args, runs, baseline, report, summary)


def _publish(args, runs: dict, baseline: Path | None, report: list[Path], summary: dict) -> None:
    """Copy the small outputs (report tables, figures, captions, CSVs; portable leaderboards; the summary) to
    --examples: never weights, embeddings or per-pair files."""
    target = args.examples
    if target.exists():
        shutil.rmtree(target)
    root = args.out / "report"
    for path in report:
        copy = target / "report" / path.relative_to(root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".md", ".tex", ".txt", ".csv"):  # paths relative to --out, not this machine's
            copy.write_text(path.read_text().replace(f"{args.out.resolve()}/", "").replace(f"{args.out}/", ""))
        elif path.suffix in (".png", ".pdf"):
            shutil.copy2(path, copy)
    boards = target / "leaderboards"
    boards.mkdir(parents=True, exist_ok=True)
    for name, path in {**runs, **({"separate": baseline} if baseline else {})}.items():
        board = make_portable(json.loads(RunFolder(path).leaderboard.read_text()))  # no paths of this machine
        (boards / f"{name}.json").write_text(json.dumps(board, indent=2))
    summary = {**summary, "settings": {**summary["settings"], "out": args.out.name, "cache_dir": None}}
    (target / "summary.json").write_text(json.dumps(summary, indent=2))
    if (args.out / "separate.yaml").is_file():
        shutil.copy2(args.out / "separate.yaml", target / "separate.yaml")
    (target / "README.md").write_text(
        f"# Reproduction benchmark, budget of this run\n\nWritten by `benchmarks/bench_reproduce.py`: "
        f"{args.base} fine-tuned with {', '.join(m for m in runs if m != 'base')} for {args.steps} steps of batch {args.batch_size} "
        f"(lr {args.lr}, seed {args.seed}) on {args.data}; STS datasets {', '.join(summary['datasets'])}. "
        f"The separate baseline is `separate.yaml` (one exactly trained model per pair cell, plain fine-tuning at "
        f"the full cell), evaluated and compared through `--baseline`. `report/report.md` is the report; "
        f"`report/tables/paper.md` the paper table; `leaderboards/` the portable leaderboards (the baseline grid "
        f"as `separate.json`, its members per cell).\n")
    console.print(f"written: {target} (report, leaderboards, summary.json)")


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
