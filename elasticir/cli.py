"""The `elasticir` command line: `run` is the main job, `eval <stage>` runs one stage on its own.

The options of `run` and `eval` are generated from the run config's fields (elasticir.config): one declaration
per option, and every command takes every option of the config parts that apply to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from elasticir.cells import parse_pairs
from elasticir.cli_support import (
    config_options,
    extra_option,
    field_option,
    friendly_errors,
    load_config,
    with_options,
)
from elasticir.config import RunConfig, check_dataset_names
from elasticir.progress import stage

# each command imports its stage inside it (`# lazy: torch`): `elasticir --help` loads no torch, pandas or numpy
app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, pretty_exceptions_enable=False)
eval_app = typer.Typer(help="Run one evaluation stage over the (layer, dim) grid.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
# long output paths stay on one line when piped (rich would wrap them at 80); paths and dataset names may
# contain [brackets], which are text, not markup
out = Console(soft_wrap=True, markup=False)

ConfigOpt = Annotated[Path | None, typer.Option(help="YAML file with any of these options (flags win).")]
# run-config options that the other commands share: the same flag and help as on `run`
BaselineOpt, DataRootOpt, DeviceOpt, LayersOpt, DimsOpt, PairsOpt, MaxLenOpt = (
    field_option(RunConfig, name) for name in ("baseline", "data_root", "device", "layers", "dims", "pairs",
                                               "max_length"))
SMOKE = extra_option("smoke", Annotated[bool, typer.Option(
    "--smoke", help="Check a config in a minute or two: --limit-queries 50 --limit-corpus 300 unless given. "
    "Marked as a subset everywhere.")], False)
CONFIG = extra_option("config", ConfigOpt)
REPORT = extra_option("report", Annotated[bool, typer.Option(
    "--report/--no-report", help="End with the run's figures and tables.")], True)
DATASET = extra_option("dataset", Annotated[str | None, typer.Option(
    "--dataset", "--datasets", help="BEIR dataset(s), comma list (folder names).")])
FUNNEL = extra_option("funnel", Annotated[list[str] | None, typer.Option(
    "--funnel", help=r"L1:d1\[:precision]/K/L2:d2, e.g. 2:64/100/6:384 or 2:64:binary/100/6:384 (repeatable). "
    "Default: every grid cell (at each --precisions) x K in 50,100,200,500,1000, stage 2 the full cell.")])
# the options of each command: `run` takes every field; `eval` every field of the parts that apply to its stage
RUN_OPTIONS = config_options(RunConfig)
STS_OPTIONS = config_options(RunConfig, without=("datasets", "search"))
RETRIEVAL_OPTIONS = config_options(RunConfig, without=("datasets",))
FUNNEL_OPTIONS = config_options(RunConfig, without=("datasets", "funnels"))


def _run_config(config_file: Path | None, smoke: bool, **flags) -> RunConfig:
    """A RunConfig from an optional YAML file, overridden by the flags that were given; --smoke fills in the
    subset limits the flags leave out and skips the encode-latency probe unless --latency-texts asks for it."""
    from elasticir.data.subset import SMOKE as SMOKE_LIMITS  # lazy: pulls numpy

    if smoke:
        for key, value in SMOKE_LIMITS.items():
            flags[key] = flags.get(key) or value
        if flags.get("latency_texts") is None:
            flags["latency_texts"] = 0
    config = load_config(RunConfig, config_file, **flags)
    if config_file:  # a dataset name from the YAML: the error names the file and key
        check_dataset_names(config, {task: f"{config_file}: key {task}" for task in ("sts", "retrieval")
                                     if flags.get(task) is None})
    return config


def _run(config: RunConfig, report: bool = False) -> None:
    from elasticir.baselines import run_with_baseline  # lazy: torch
    from elasticir.report.summary import print_outcome  # lazy: torch

    outcome = run_with_baseline(config)
    if outcome is None:  # --shard: encoded one shard, nothing evaluated
        return
    print_outcome(outcome, out)
    if outcome.baseline:
        out.print(f"baseline: evaluated {len(outcome.baseline.evaluated)} member datasets, reused "
                  f"{len(outcome.baseline.reused)}; {outcome.baseline.folder.leaderboard}")
    if report:
        from elasticir.report.build import write_report  # lazy: torch

        stage(f"report: figures and tables into {outcome.folder.report}")
        baseline = outcome.baseline.dir if outcome.baseline else None
        paths = write_report(outcome.dir, outcome.folder.report, baseline_dir=baseline)
        out.print(f"report:           {outcome.folder.report / 'report.md'} ({len(paths)} files)")


@app.command("run")
@friendly_errors
@with_options(RUN_OPTIONS, [SMOKE, REPORT, CONFIG])
def run_command(config: Path | None = None, smoke: bool = False, report: bool = True, **flags) -> None:
    """The main job: every (layer, dim) cell on STS (STSb, STS12, SICK-R) and SciFact (dense grid + BM25)."""
    _run(_run_config(config, smoke, **flags), report=report)


@eval_app.command("sts")
@friendly_errors
@with_options(STS_OPTIONS, [extra_option("datasets", Annotated[str | None, typer.Option(
    help="Comma list of STS datasets (folder names).")]), SMOKE, CONFIG])
def eval_sts(datasets: str | None = None, config: Path | None = None, smoke: bool = False, **flags) -> None:
    """STS only: Spearman and Pearson of cosine for every cell (MTEB protocol)."""
    _run(_run_config(config, smoke, sts=datasets, retrieval=[], **flags))


@eval_app.command("retrieval")
@friendly_errors
@with_options(RETRIEVAL_OPTIONS, [DATASET, SMOKE, CONFIG])
def eval_retrieval(dataset: str | None = None, config: Path | None = None, smoke: bool = False, **flags) -> None:
    """Retrieval only: index every cell, search, evaluate with ir-measures (nDCG@10, RR@10, R@100, R@1000)."""
    _run(_run_config(config, smoke, sts=[], retrieval=dataset, **flags))


@eval_app.command("funnel")
@friendly_errors
@with_options(FUNNEL_OPTIONS, [DATASET, FUNNEL, SMOKE, CONFIG])
def eval_funnel(dataset: str | None = None, funnel: list[str] | None = None, config: Path | None = None,
                smoke: bool = False, **flags) -> None:
    """Funnel retrieval: shortlist K per query with a small cell, rescore the shortlist with a larger one; every
    funnel against the full cell (quality, search work, latency, paired test), next to the grid's cells. BM25
    only with --bm25."""
    flags["bm25"] = flags.get("bm25") or False
    _run(_run_config(config, smoke, sts=[], retrieval=dataset, funnels=list(funnel) if funnel else ["auto"],
                     **flags))


@app.command("report")
@friendly_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (results/<model>-<hash>/).")],
    baseline: BaselineOpt = None,
    also: Annotated[list[Path] | None, typer.Option(help="More runs to overlay on Pareto and diagonal plots.")] = None,
    compare: Annotated[list[Path] | None, typer.Option(help="Runs of other methods: overlaid on the figures and "
                                                       "given a row block each in the paper table.")] = None,
    reference: Annotated[str | None, typer.Option(help="Paper-table significance marks against this run (its "
                                                  "label or directory; default: the baseline, else RUN_DIR).")] = None,
    cost: Annotated[str, typer.Option(help="Pareto x axis: flops, latency or bytes.")] = "flops",
    test: Annotated[str, typer.Option(help="Retrieval significance test: ttest or randomization.")] = "ttest",
    mteb: Annotated[Path | None, typer.Option(help="Also export every cell in MTEB's result layout here.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default RUN_DIR/report).")] = None,
) -> None:
    """Paper report: heatmaps, difference maps with significance, Pareto plots, LaTeX/Markdown tables."""
    from elasticir.report.build import write_report  # lazy: torch
    from elasticir.results.store import RunFolder  # lazy: torch

    target = out_dir or RunFolder(run_dir).report
    if baseline:
        from elasticir.baselines import baseline_for_report  # lazy: torch

        baseline = baseline_for_report(baseline, run_dir)
    paths = write_report(run_dir, target, baseline_dir=baseline, cost=cost, extra_runs=(*(also or ()), *(compare or ())),
                         test=test, reference=reference)
    out.print(f"wrote {len(paths)} files; see {target / 'report.md'}")
    if mteb:
        from elasticir.report.mteb_export import export_mteb  # lazy: torch

        export_mteb(run_dir, mteb)
        out.print(f"MTEB results layout: {mteb}")


@app.command("leaderboard")
@friendly_errors
def leaderboard_command(
    files: Annotated[list[Path] | None, typer.Argument(
        help="leaderboard.json files or run directories to compare (default: leaderboards/*.json).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write leaderboard.md and leaderboard.html here (default: print the Markdown).")] = None,
) -> None:
    """Compare runs: the full model per dataset, each run's diagonal, and every cell (HTML: with heatmaps)."""
    from elasticir.report.leaderboard import render_leaderboards, write_leaderboards  # lazy: torch

    if out_dir is None:
        typer.echo(render_leaderboards(files or None, page=False)[0], nl=False)  # not rich: it would wrap the table rows
        return
    md_path, html_path = write_leaderboards(files or None, out_dir)
    out.print(f"wrote {md_path} and {html_path}")


@app.command("check")
@friendly_errors
def check_command(
    target: Annotated[Path, typer.Argument(help="A run directory or leaderboard.json.")],
    references: Annotated[Path | None, typer.Option(help="A references YAML file or a folder of them "
                                                    "(default: the repository's references/).")] = None,
) -> None:
    """Compare every cell that has a published number with it: matches / differs / not run (exit 1 on differs)."""
    from elasticir.report.check import check_results, format_check  # lazy: torch

    results = check_results(target, references)
    typer.echo(format_check(results), nl=False)
    if any(r.status == "differs" for r in results):
        raise typer.Exit(1)


@app.command("reproduce")
@friendly_errors
def reproduce_command(
    file: Annotated[Path, typer.Argument(help="A leaderboard.json (or its run directory) to re-run.")],
    tolerance: Annotated[float, typer.Option(help="Largest accepted |difference| of a metric.")] = 1e-4,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the re-run (default: results/reproduce; "
                                                               "re-running resumes it).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model folder or hub id to use (default: found "
                                              "by hub id and weights sha256, also under $ELASTICIR_MODELS).")] = None,
) -> None:
    """Re-run a leaderboard's recorded config and compare every metric (exit 1 when something differs)."""
    from elasticir.reproduce import format_differences, reproduce  # lazy: torch

    differences = reproduce(file, tolerance=tolerance, out=out_dir, data_root=data_root, device=device, model=model)
    out.print(format_differences(differences, tolerance), markup=False, highlight=False)
    if differences:
        raise typer.Exit(1)


@app.command("datasets")
@friendly_errors
def datasets_command(data_root: DataRootOpt = None) -> None:
    """List catalogued and local datasets and whether each is available under the data root."""
    from elasticir.data.catalog import CATALOG, beir_path, sts_path  # lazy: ~4% of `elasticir --help`
    from elasticir.data.catalog import data_root as resolve_root  # lazy: as above

    root = resolve_root(data_root)
    local = {p.parent.name for p in root.glob("sts/*/test.jsonl*")} | {p.parent.name for p in root.glob("beir/*/corpus.jsonl*")}
    table = Table(title=f"datasets (data root {root})")
    for column in ("name", "task", "split", "expected", "local", "official source"):
        table.add_column(column, no_wrap=column == "name", overflow="fold")
    for name in sorted(set(CATALOG) | local):
        spec = CATALOG.get(name)
        here = sts_path(root, name) or beir_path(root, name)
        table.add_row(name, spec.task if spec else "?", spec.split if spec else "test",
                      str(spec.expected_rows or "") if spec else "", "yes" if here else "no",
                      spec.source if spec else "(your own folder)")
    out.print(table)





TrainDataOpt = Annotated[str | None, typer.Option(
    "--data", help="Comma list: pair/triplet JSONL (anchor, positive[, negative]), scored pairs (sentence1, "
    "sentence2, score) or a BEIR folder with qrels/train.tsv; relative paths also resolve under the data root.")]
BaseOpt = Annotated[str | None, typer.Option("--base", help="Model to start from: hub id or local folder.")]
TrainOutOpt = Annotated[Path | None, typer.Option("--out", help="Output folder (a sentence-transformers model).")]
StepsOpt = Annotated[int | None, typer.Option(help="Optimiser steps (default 1000).")]
TrainBatchOpt = Annotated[int | None, typer.Option(help="Training batch size (default 32).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default 2e-5).")]
TrainSeedOpt = Annotated[int | None, typer.Option(help="Seed of initialisation order, sampling and data order.")]
NegativesOpt = Annotated[int | None, typer.Option(help="BEIR groups: hard negatives per query (default 1).")]
MinerOpt = Annotated[str | None, typer.Option(help="BEIR groups: mine negatives with bm25, model or none.")]
CheckpointOpt = Annotated[int | None, typer.Option(help="Save a resumable checkpoint every N steps (default 200).")]


@app.command("train")
@friendly_errors
def train_command(
    preset: Annotated[str | None, typer.Option(help=(
        "Published recipe, every choice at once: starbucks-sts (default; SRL as the Starbucks STS code), "
        "starbucks-retrieval (SRL as the Starbucks MS MARCO code: CLS, dot, T=1, no re-normalisation, 1 positive "
        "+ 7 hard negatives), 2dmse-st5 (the Starbucks paper's 2DMSE), 2dmse-st6, sortednet. The flags below "
        "override single choices; elastic.json records the preset and the overrides."))] = None,
    method: Annotated[str | None, typer.Option(help=(
        "srl | srl-grid | 2dmse | sortednet | mrl | plain (default: the preset's; without a preset, 2dmse takes "
        "2dmse-st6, sortednet takes sortednet, the others starbucks-sts)."))] = None,
    base: BaseOpt = None,
    data: TrainDataOpt = None,
    out_dir: TrainOutOpt = None,
    max_steps: StepsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: LrOpt = None,
    seed: TrainSeedOpt = None,
    pairs: PairsOpt = None,
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    kl: Annotated[str | None, typer.Option(help="KL: scores (SRL retrieval code), embedding (SRL STS code, 2DMSE) or none.")] = None,
    kl_point: Annotated[str | None, typer.Option(help=(
        "Where embedding KLs read: output (after Normalize, as the originals; default) or pooled (before it)."))] = None,
    kl_weight: Annotated[float | None, typer.Option(help="Weight of each KL term (default: the recipe's).")] = None,
    temperature: Annotated[float | None, typer.Option(help=(
        "KL temperature: SRL kl=scores divides scores by it (default 1 / scale); 2DMSE's KL (default 0.3)."))] = None,
    detach: Annotated[bool | None, typer.Option("--detach/--no-detach", help="Cut the KL teacher from the graph.")] = None,
    pooling: Annotated[str | None, typer.Option(help="model (the base model's own), mean or cls.")] = None,
    similarity: Annotated[str | None, typer.Option(help="Base-loss similarity: cosine or dot.")] = None,
    scale: Annotated[float | None, typer.Option(help="Base-loss scale, 1 / its temperature (default 20; retrieval 1).")] = None,
    normalize: Annotated[bool | None, typer.Option("--normalize/--no-normalize", help=(
        "L2-normalise each cell again after the cut (off for dot-product models)."))] = None,
    layer_weighting: Annotated[str | None, typer.Option(help="2DMSE layer weights: uniform, inverse (1/L) or log.")] = None,
    schedule: Annotated[str | None, typer.Option(help="SortedNet: random (uniform per step) or cyclic.")] = None,
    negatives: NegativesOpt = None,
    miner: MinerOpt = None,
    max_length: MaxLenOpt = None,
    checkpoint_steps: CheckpointOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    recompute: Annotated[bool | None, typer.Option("--recompute", help="Delete --out (only a folder elasticir made) and train again.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune an elastic encoder; an interrupted run resumes from its last checkpoint when re-run."""
    from elasticir.training.trainer import TrainConfig, train  # lazy: torch

    folder = train(load_config(
        TrainConfig, config, preset=preset, method=method, base=base, data=data, out=out_dir, max_steps=max_steps,
        batch_size=batch_size, lr=lr, seed=seed, pairs=pairs, layers=layers, dims=dims, kl=kl, kl_point=kl_point,
        kl_weight=kl_weight, temperature=temperature, detach=detach, pooling=pooling, similarity=similarity,
        scale=scale, normalize=normalize, layer_weighting=layer_weighting, schedule=schedule, negatives=negatives,
        miner=miner, max_length=max_length, checkpoint_steps=checkpoint_steps, data_root=data_root, device=device,
        recompute=recompute))
    out.print(f"model: {folder}  (evaluate it: elasticir run --model {folder})")


@app.command("train-separate")
@friendly_errors
def train_separate_command(
    cells: Annotated[str, typer.Option(help="Cells LAYER:DIM,... to train one model each (e.g. 2:32,4:64).")],
    variant: Annotated[str, typer.Option(
        help="exact: first L layers trained at width d; full-width: trained at full width, cut at evaluation.")]
    = "exact",
    base: BaseOpt = None,
    data: TrainDataOpt = None,
    out_dir: TrainOutOpt = None,
    max_steps: StepsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: LrOpt = None,
    seed: TrainSeedOpt = None,
    negatives: NegativesOpt = None,
    miner: MinerOpt = None,
    max_length: MaxLenOpt = None,
    checkpoint_steps: CheckpointOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    recompute: Annotated[bool | None, typer.Option("--recompute", help="Delete each cell's folder and train again.")]
    = None,
    config: ConfigOpt = None,
) -> None:
    """Separately trained baselines: one plain model per cell, same data, steps and seed."""
    from elasticir.training.trainer import TrainConfig, train_separate  # lazy: torch

    folders = train_separate(load_config(
        TrainConfig, config, method="plain", base=base, data=data, out=out_dir, max_steps=max_steps, batch_size=batch_size, lr=lr,
        seed=seed, negatives=negatives, miner=miner, max_length=max_length, checkpoint_steps=checkpoint_steps,
        data_root=data_root, device=device, recompute=recompute), parse_pairs(cells), variant=variant)
    for folder in folders:
        out.print(f"model: {folder}")


@app.command("pretrain")
@friendly_errors
def pretrain_command(
    method: Annotated[str | None, typer.Option(help="smae (Starbucks-MAE) or mlm (plain MLM; default smae).")] = None,
    base: BaseOpt = None,
    data: Annotated[str | None, typer.Option(
        help="Comma list of raw-text files: .jsonl(.gz) with `text` (BEIR corpora: title + text) or .txt(.gz), "
        "one document per line; a folder with corpus.jsonl; relative paths also resolve under the data root.")]
    = None,
    out_dir: TrainOutOpt = None,
    max_steps: StepsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate, cosine decay (default 1e-4).")]
    = None,
    seed: TrainSeedOpt = None,
    pairs: PairsOpt = None,
    max_length: MaxLenOpt = None,
    checkpoint_steps: Annotated[int | None, typer.Option(help="Save a resumable checkpoint every N steps "
                                                               "(default 500).")] = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    recompute: Annotated[bool | None, typer.Option("--recompute", help="Delete --out (only a folder elasticir made) and train again.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Pre-train an encoder with SMAE or MLM; an interrupted run resumes from its checkpoint when re-run."""
    from elasticir.pretraining.pretrain import PretrainConfig, pretrain  # lazy: torch

    folder = pretrain(load_config(
        PretrainConfig, config, method=method, base=base, data=data, out=out_dir, max_steps=max_steps, batch_size=batch_size, lr=lr,
        seed=seed, pairs=pairs, max_length=max_length, checkpoint_steps=checkpoint_steps, data_root=data_root,
        device=device, recompute=recompute))
    out.print(f"model: {folder}  (fine-tune it: elasticir train --base {folder}; "
              f"evaluate it: elasticir run --model {folder})")


if __name__ == "__main__":  # python -m elasticir.cli ...
    app()
