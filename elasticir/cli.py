"""The `elasticir` command line: `run` is the main job, `eval <stage>` runs one stage on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from elasticir.cells import Cell, parse_pairs
from elasticir.cli_support import friendly_errors, load_config

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
eval_app = typer.Typer(help="Run one evaluation stage over the (layer, dim) grid.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
# long output paths stay on one line when piped (rich would wrap them at 80); paths and dataset names may
# contain [brackets], which are text, not markup
out = Console(soft_wrap=True, markup=False)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id, local folder, or a folder name under $ELASTICIR_MODELS "
                                                    "(default: sentence-transformers/all-MiniLM-L6-v2).")]
LayersOpt = Annotated[str | None, typer.Option(help="Comma list of layers, e.g. 1,2,6 (default: every layer).")]
DimsOpt = Annotated[str | None, typer.Option(help="Comma list of dims, e.g. 64,384 (default: 32,64,.. up to the width).")]
PairsOpt = Annotated[str | None, typer.Option(help="Pair list LAYER:DIM,... (default derived from the model shape).")]
DataRootOpt = Annotated[Path | None, typer.Option(help="Data root (default: $ELASTICIR_DATA, else ~/.cache/elasticir/data).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for run directories (default: results).")]
CacheDirOpt = Annotated[Path | None, typer.Option(help="Embedding (and ONNX) cache, content-keyed and safe to share "
                                                  "between runs and nodes (default: OUT/_cache).")]
BatchOpt = Annotated[int, typer.Option(help="Encoding batch size (the cap, with --max-tokens-per-batch).")]
TokensOpt = Annotated[int | None, typer.Option(help="Form encoding batches by this many tokens (padded tokens "
                                                    "on padded attention) instead of a fixed count.")]
MaxLenOpt = Annotated[int | None, typer.Option(help="Max tokens (default: the model's own setting).")]
PoolingOpt = Annotated[str | None, typer.Option(help="Replace the model's Pooling mode: mean, cls, max, lasttoken, "
                                                 "weightedmean, mean_sqrt_len_tokens (default: the model's own).")]
PromptNameOpt = Annotated[str | None, typer.Option(help="One of the model's prompts for every text (none: no prompt). "
                                                   "Default: the prompt MTEB selects for each dataset's task.")]
QueryPromptOpt = Annotated[str | None, typer.Option(help="Literal prefix for retrieval queries (default: as MTEB "
                                                    "selects from the model's prompts).")]
DocPromptOpt = Annotated[str | None, typer.Option(help="Literal prefix for retrieval documents (default: as MTEB "
                                                  "selects from the model's prompts).")]
TrustOpt = Annotated[bool | None, typer.Option("--trust-remote-code", help="Load a model whose repository ships its "
                                               "own Python code (refused by default).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda when present).")]
BackendOpt = Annotated[str | None, typer.Option(help="torch (default) or onnx (onnxruntime on the CPU, BERT models).")]
RecomputeOpt = Annotated[bool, typer.Option("--recompute", help="Recompute datasets an earlier run already finished.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed recorded in the leaderboard.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML file with any of these options (flags win).")]
IndexOpt = Annotated[str | None, typer.Option(help="flat (exact), hnsw, sq8, ivfpq, or a FAISS factory string.")]
FlatOpt = Annotated[str | None, typer.Option(help="Exact search backend: torch (matmul+topk) or faiss.")]
PrecisionsOpt = Annotated[str | None, typer.Option(
    help="Retrieval precisions, comma list of float32 (always evaluated, the reference), float16, int8, binary, binary+rescore "
    "(binary Hamming search, then float rescoring of 4x k candidates); one point per (layer, dim, precision).")]
KOpt = Annotated[int | None, typer.Option("--k", help="Retrieval depth (default 1000).")]
Bm25Opt = Annotated[bool | None, typer.Option("--bm25/--no-bm25", help="Add the pyserini BM25 baseline.")]
SmokeOpt = Annotated[bool, typer.Option("--smoke", help="Check a config in a minute or two: --limit-queries 50 "
                                        "--limit-corpus 300 unless given. Marked as a subset everywhere.")]
LimitQueriesOpt = Annotated[int | None, typer.Option(help="Keep N queries (STS: pairs) per dataset, seeded; the run "
                                                     "is a subset, never mixed with full results.")]
LimitCorpusOpt = Annotated[int | None, typer.Option(help="Keep N documents per corpus: every judged one of the kept "
                                                    "queries plus a seeded sample.")]
BaselineOpt = Annotated[str | None, typer.Option(help="Baseline SPEC: a run directory (or leaderboard JSON), a "
                                                "train-separate folder, or a YAML mapping cells to models "
                                                "(\"4:256\": MODEL[@L:D]); missing member evaluations are run.")]
LatencyTextsOpt = Annotated[int | None, typer.Option(help="Texts timed per layer for the measured encode cost "
                                                     "(default 32; 0 = skip the probe; --smoke: 0).")]
ExecutorOpt = Annotated[str | None, typer.Option(help="local (this process) or ray (encoding actors + cell tasks on "
                                                 "a Ray cluster; needs the [distributed] extra).")]
RayAddressOpt = Annotated[str | None, typer.Option(help="Ray cluster to join (default: $RAY_ADDRESS, else a local one).")]
WorkersOpt = Annotated[int | None, typer.Option(help="Ray encoding actors (default: one per GPU, else one per CPU).")]
ShardOpt = Annotated[str | None, typer.Option(help="i/n: encode shard i of n of every corpus into the store and "
                                              "exit (SLURM arrays); the plain command then reuses the shards.")]
StoreDtypeOpt = Annotated[str | None, typer.Option(help="Embedding store dtype: float32 (default) or float16 "
                                                   "(half the disk).")]


def _scale(executor, ray_address, workers, shard=None, store_dtype=None) -> dict:
    return {"executor": executor, "ray_address": ray_address, "workers": workers, "shard": shard,
            "store_dtype": store_dtype}


def _prompts(prompt_name=None, query_prompt=None, doc_prompt=None, trust_remote_code=None) -> dict:
    return {"prompt_name": prompt_name, "query_prompt": query_prompt, "doc_prompt": doc_prompt,
            "trust_remote_code": trust_remote_code}


def _limits(smoke: bool, limit_queries: int | None, limit_corpus: int | None) -> dict:
    """The subset flags; --smoke fills in what the limits leave out."""
    from elasticir.data.subset import SMOKE

    if smoke:
        limit_queries = limit_queries or SMOKE["limit_queries"]
        limit_corpus = limit_corpus or SMOKE["limit_corpus"]
    return {"limit_queries": limit_queries, "limit_corpus": limit_corpus}


def _latency_texts(smoke: bool, latency_texts: int | None) -> int | None:
    """--smoke skips the encode-latency probe unless --latency-texts asks for it (a smoke run checks a config)."""
    return 0 if smoke and latency_texts is None else latency_texts


def _config(config_file: Path | None, kind: type | None = None, **flags):
    """A RunConfig (or `kind`) from an optional YAML file, overridden by the flags that were given."""
    from elasticir.runner import RunConfig

    config = load_config(kind or RunConfig, config_file, **flags)
    if kind is None and config_file:  # a dataset name from the YAML: the error names the file and key
        from elasticir.checks import check_dataset_names

        check_dataset_names(config, {task: f"{config_file}: key {task}" for task in ("sts", "retrieval")
                                     if flags.get(task) is None})
    return config


def _print_outcome(outcome) -> None:
    board = outcome.leaderboard
    for dataset in board.datasets:
        metric = board.main_metric[dataset.task]
        cells = outcome.cells[outcome.cells.dataset == dataset.name]
        points = cells
        if "precision" in cells:  # the table shows the float32 points; every point is in cells.csv
            cells = cells[cells.precision.fillna("float32") == "float32"]
        grid = cells.pivot(index="layer", columns="dim", values=metric)
        subset = " — SUBSET, not comparable with full runs" if board.subset else ""
        table = Table(title=f"{dataset.name} ({dataset.task}, {metric}, {dataset.n_examples} examples){subset}")
        table.add_column("layer \\ dim", justify="right")
        for dim in grid.columns:
            table.add_column(str(dim), justify="right")
        for layer, row in grid.iterrows():
            table.add_row(str(layer), *(f"{value:.4f}" for value in row))
        out.print(table)
        _print_ann_costs(board, cells)
        _print_precisions(board, points, metric)
    for baseline in board.baselines:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in baseline.metrics.items())
        out.print(f"{baseline.dataset} {baseline.name}: {shown}")
    _print_funnels(board)
    for note in board.notes:
        out.print(f"note: {note}")
    if outcome.skipped:
        out.print(f"reused finished results for: {', '.join(outcome.skipped)} (pass --recompute to redo)")
    out.print(f"per-cell metrics: {outcome.folder.cells}")
    out.print(f"leaderboard:      {outcome.folder.leaderboard}")


def _print_precisions(board, points, metric: str) -> None:
    """Quantised points on the diagonal and the full cell, each with its index size against float32's."""
    if "precision" not in points:
        return
    shown = [Cell(*p) for p in board.grid.pairs] + [Cell(board.model.num_layers, board.model.hidden_size)]
    by_point = points.assign(precision=points.precision.fillna("float32")).set_index(["layer", "dim", "precision"])
    for precision in [p for p in dict.fromkeys(by_point.index.get_level_values(2)) if p != "float32"]:
        values = [f"{cell} {by_point.loc[(*cell, precision), metric]:.4f} "
                  f"(float32 {by_point.loc[(*cell, 'float32'), metric]:.4f}, index "
                  f"x{by_point.loc[(*cell, precision), 'index_bytes'] / by_point.loc[(*cell, 'float32'), 'index_bytes']:.3f})"
                  for cell in dict.fromkeys(shown) if (*cell, precision) in by_point.index]
        out.print(f"  {precision} {metric}: " + "; ".join(values))


def _print_funnels(board) -> None:
    """The selected funnels (cheapest within tolerance per stage-1 precision, Pareto front) against the full cell."""
    for f in (f for f in board.funnels if f.selected):
        metric = board.main_metric.get("retrieval", "nDCG@10")
        ratio = f.costs.get("madds_ratio", float("nan"))
        latency = f.costs.get("latency_ratio", float("nan"))
        p = f"p_holm {f.p_holm:.3g}" if f.p_holm is not None else ""
        out.print(f"{f.dataset} funnel {f.funnel}: {metric} {f.metrics.get(metric, float('nan')):.4f}, "
                  f"search multiply-adds x{ratio:.3f}, latency x{latency:.2f} of the full cell {p} [{f.selected}]")


def _print_ann_costs(board, cells) -> None:
    """Approximate indexes trade quality for speed: show the speed (QPS, p50) next to the quality table."""
    if board.config.get("index", "flat") == "flat" or "search_qps" not in cells:
        return
    shown = {tuple(p) for p in board.grid.pairs} | {(board.model.num_layers, board.model.hidden_size)}
    out.print(f"  {board.config['index']} search speed on the diagonal (every cell: cells.csv):")
    for row in cells.dropna(subset=["search_qps"]).to_dict("records"):
        if (row["layer"], row["dim"]) not in shown:
            continue
        out.print(f"  {Cell(row['layer'], row['dim'])} {board.config['index']}: {row['search_qps']:.0f} QPS, "
                  f"p50 {row.get('latency_p50_ms', float('nan')):.2f} ms")


def _run(config, report: bool = False) -> None:
    from elasticir.baselines import run_with_baseline

    outcome = run_with_baseline(config)
    if outcome is None:  # --shard: encoded one shard, nothing evaluated
        return
    _print_outcome(outcome)
    if outcome.baseline:
        out.print(f"baseline: evaluated {len(outcome.baseline.evaluated)} member datasets, reused "
                  f"{len(outcome.baseline.reused)}; {outcome.baseline.folder.leaderboard}")
    if report:
        from elasticir.progress import stage
        from elasticir.report.build import write_report

        stage(f"report: figures and tables into {outcome.folder.report}")
        baseline = outcome.baseline.dir if outcome.baseline else None
        paths = write_report(outcome.dir, outcome.folder.report, baseline_dir=baseline)
        out.print(f"report:           {outcome.folder.report / 'report.md'} ({len(paths)} files)")


@app.command("run")
@friendly_errors
def run_command(
    model: ModelOpt = None,
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    pairs: PairsOpt = None,
    sts: Annotated[str | None, typer.Option(help="STS datasets (default: stsbenchmark,sts12,sickr).")] = None,
    retrieval: Annotated[str | None, typer.Option(help="Retrieval datasets (default: scifact).")] = None,
    index: IndexOpt = None,
    flat_backend: FlatOpt = None,
    precisions: PrecisionsOpt = None,
    k: KOpt = None,
    bm25: Bm25Opt = None,
    data_root: DataRootOpt = None,
    out_dir: OutOpt = None,
    cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = None,
    max_tokens_per_batch: TokensOpt = None,
    max_length: MaxLenOpt = None,
    pooling: PoolingOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    seed: SeedOpt = None,
    recompute: RecomputeOpt = None,
    smoke: SmokeOpt = False,
    limit_queries: LimitQueriesOpt = None,
    limit_corpus: LimitCorpusOpt = None,
    latency_texts: LatencyTextsOpt = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="End with the run's figures and tables.")] = True,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    shard: ShardOpt = None,
    store_dtype: StoreDtypeOpt = None,
    baseline: BaselineOpt = None,
    prompt_name: PromptNameOpt = None,
    query_prompt: QueryPromptOpt = None,
    doc_prompt: DocPromptOpt = None,
    trust_remote_code: TrustOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The main job: every (layer, dim) cell on STS (STSb, STS12, SICK-R) and SciFact (dense grid + BM25)."""
    _run(_config(
        config, model=model, layers=layers, dims=dims, pairs=pairs, sts=sts, retrieval=retrieval, index=index,
        flat_backend=flat_backend, precisions=precisions, k=k, bm25=bm25, data_root=data_root, out=out_dir, cache_dir=cache_dir,
        batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, max_length=max_length,
        pooling=pooling, device=device, backend=backend, seed=seed, recompute=recompute,
        latency_texts=_latency_texts(smoke, latency_texts), **_limits(smoke, limit_queries, limit_corpus),
        **_scale(executor, ray_address, workers, shard, store_dtype),
        **_prompts(prompt_name, query_prompt, doc_prompt, trust_remote_code),
        baseline=baseline,
    ), report=report)


@eval_app.command("sts")
@friendly_errors
def eval_sts(
    model: ModelOpt = None,
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    datasets: Annotated[str | None, typer.Option(help="Comma list of STS datasets (folder names).")] = None,
    data_root: DataRootOpt = None,
    out_dir: OutOpt = None,
    cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = None,
    max_tokens_per_batch: TokensOpt = None,
    max_length: MaxLenOpt = None,
    pooling: PoolingOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    recompute: RecomputeOpt = None,
    latency_texts: LatencyTextsOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    prompt_name: PromptNameOpt = None,
    trust_remote_code: TrustOpt = None,
    config: ConfigOpt = None,
) -> None:
    """STS only: Spearman and Pearson of cosine for every cell (MTEB protocol)."""
    _run(_config(
        config, model=model, layers=layers, dims=dims, sts=datasets, retrieval=[], data_root=data_root,
        out=out_dir, cache_dir=cache_dir, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
        max_length=max_length, pooling=pooling, device=device, backend=backend, recompute=recompute,
        latency_texts=latency_texts,
        **_scale(executor, ray_address, workers), **_prompts(prompt_name, trust_remote_code=trust_remote_code),
    ))


@eval_app.command("retrieval")
@friendly_errors
def eval_retrieval(
    model: ModelOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "--datasets",
                                                   help="BEIR dataset(s), comma list (folder names).")] = None,
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    index: IndexOpt = None,
    flat_backend: FlatOpt = None,
    precisions: PrecisionsOpt = None,
    k: KOpt = None,
    bm25: Bm25Opt = None,
    prompt_name: PromptNameOpt = None,
    query_prompt: QueryPromptOpt = None,
    doc_prompt: DocPromptOpt = None,
    trust_remote_code: TrustOpt = None,
    data_root: DataRootOpt = None,
    out_dir: OutOpt = None,
    cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = None,
    max_tokens_per_batch: TokensOpt = None,
    max_length: MaxLenOpt = None,
    pooling: PoolingOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    recompute: RecomputeOpt = None,
    smoke: SmokeOpt = False,
    limit_queries: LimitQueriesOpt = None,
    limit_corpus: LimitCorpusOpt = None,
    latency_texts: LatencyTextsOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    shard: ShardOpt = None,
    store_dtype: StoreDtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Retrieval only: index every cell, search, evaluate with ir-measures (nDCG@10, RR@10, R@100, R@1000)."""
    _run(_config(
        config, model=model, layers=layers, dims=dims, sts=[], retrieval=dataset, index=index,
        flat_backend=flat_backend, precisions=precisions, k=k, bm25=bm25,
        **_prompts(prompt_name, query_prompt, doc_prompt, trust_remote_code), data_root=data_root, out=out_dir, cache_dir=cache_dir, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
        max_length=max_length, pooling=pooling, device=device, backend=backend, recompute=recompute,
        latency_texts=_latency_texts(smoke, latency_texts), **_limits(smoke, limit_queries, limit_corpus),
        **_scale(executor, ray_address, workers, shard, store_dtype),
    ))


@eval_app.command("funnel")
@friendly_errors
def eval_funnel(
    model: ModelOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "--datasets",
                                                   help="BEIR dataset(s), comma list (folder names).")] = None,
    funnel: Annotated[list[str] | None, typer.Option(
        "--funnel", help="L1:d1[:precision]/K/L2:d2, e.g. 2:64/100/6:384 or 2:64:binary/100/6:384 (repeatable). "
        "Default: every grid cell (at each --precisions) x K in 50,100,200,500,1000, stage 2 the full cell.")] = None,
    precisions: PrecisionsOpt = None,
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    k: KOpt = None,
    data_root: DataRootOpt = None,
    out_dir: OutOpt = None,
    cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    recompute: RecomputeOpt = None,
    smoke: SmokeOpt = False,
    limit_queries: LimitQueriesOpt = None,
    limit_corpus: LimitCorpusOpt = None,
    latency_texts: LatencyTextsOpt = None,
    prompt_name: PromptNameOpt = None,
    query_prompt: QueryPromptOpt = None,
    doc_prompt: DocPromptOpt = None,
    trust_remote_code: TrustOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Funnel retrieval: shortlist K per query with a small cell, rescore the shortlist with a larger one; every
    funnel against the full cell (quality, search work, latency, paired test), next to the grid's cells."""
    _run(_config(
        config, model=model, sts=[], retrieval=dataset, funnels=list(funnel) if funnel else ["auto"],
        precisions=precisions, layers=layers, dims=dims, k=k, bm25=False, data_root=data_root, out=out_dir,
        cache_dir=cache_dir, batch_size=batch_size, device=device, recompute=recompute,
        latency_texts=_latency_texts(smoke, latency_texts), **_limits(smoke, limit_queries, limit_corpus),
        **_prompts(prompt_name, query_prompt, doc_prompt, trust_remote_code),
    ))


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
    from elasticir.report.build import write_report
    from elasticir.results.store import RunFolder

    target = out_dir or RunFolder(run_dir).report
    if baseline:
        from elasticir.baselines import baseline_for_report

        baseline = baseline_for_report(baseline, run_dir)
    paths = write_report(run_dir, target, baseline_dir=baseline, cost=cost, extra_runs=(*(also or ()), *(compare or ())),
                         test=test, reference=reference)
    out.print(f"wrote {len(paths)} files; see {target / 'report.md'}")
    if mteb:
        from elasticir.report.mteb_export import export_mteb

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
    from elasticir.report.leaderboard import render_leaderboards, write_leaderboards

    if out_dir is None:
        typer.echo(render_leaderboards(files or None, page=False)[0], nl=False)  # not rich: it would wrap the table rows
        return
    md_path, html_path = write_leaderboards(files or None, out_dir)
    out.print(f"wrote {md_path} and {html_path}")


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
    from elasticir.reproduce import format_differences, reproduce

    differences = reproduce(file, tolerance=tolerance, out=out_dir, data_root=data_root, device=device, model=model)
    out.print(format_differences(differences, tolerance), markup=False, highlight=False)
    if differences:
        raise typer.Exit(1)


@app.command("datasets")
@friendly_errors
def datasets_command(data_root: DataRootOpt = None) -> None:
    """List catalogued and local datasets and whether each is available under the data root."""
    from elasticir.data.catalog import CATALOG, beir_path, sts_path
    from elasticir.data.catalog import data_root as resolve_root

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
    from elasticir.training.trainer import TrainConfig, train

    folder = train(_config(
        config, TrainConfig, preset=preset, method=method, base=base, data=data, out=out_dir, max_steps=max_steps,
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
    from elasticir.training.trainer import TrainConfig, train_separate

    folders = train_separate(_config(
        config, TrainConfig, method="plain", base=base, data=data, out=out_dir, max_steps=max_steps, batch_size=batch_size, lr=lr,
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
    from elasticir.pretraining.pretrain import PretrainConfig, pretrain

    folder = pretrain(load_config(
        PretrainConfig, config, method=method, base=base, data=data, out=out_dir, max_steps=max_steps, batch_size=batch_size, lr=lr,
        seed=seed, pairs=pairs, max_length=max_length, checkpoint_steps=checkpoint_steps, data_root=data_root,
        device=device, recompute=recompute))
    out.print(f"model: {folder}  (fine-tune it: elasticir train --base {folder}; "
              f"evaluate it: elasticir run --model {folder})")


if __name__ == "__main__":  # python -m elasticir.cli ...
    app()
