"""A run: one model, one grid, several datasets -> a run directory with per-cell tables and a leaderboard.

`run` is five steps, one function each: flags are checked and every dataset located (and its files hashed)
before any encoding starts, so a mistake fails in seconds; the grid is built from the model; each dataset part
is evaluated, or reused when a finished part was produced by the same content (see results.store); the summary
is rebuilt from every finished part in the run directory; the leaderboard is written last.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.markup import escape

from elasticir.cells import Cell, Grid, default_dims, default_pairs, layer_pairs, validate_cells
from elasticir.config import RunConfig, check
from elasticir.data.beir import beir_files, first_documents, load_beir
from elasticir.data.catalog import DatasetSpec, data_root, locate, spec_for
from elasticir.data.sts import load_sts
from elasticir.data.subset import subset_retrieval, subset_sts
from elasticir.encoders import ElasticEncoder
from elasticir.encoders.prompts import Prompt, dataset_prompts
from elasticir.errors import ElasticIRError
from elasticir.evaluation.funnel import check_funnel_flags, check_funnels_fit
from elasticir.evaluation.latency import layer_encode_latency
from elasticir.evaluation.retrieval import evaluate_retrieval
from elasticir.evaluation.sts import evaluate_sts
from elasticir.execution import Executor, executor_for
from elasticir.index.quantized import check_precisions
from elasticir.io import atomic_write, file_checksum
from elasticir.progress import stage
from elasticir.results.assemble import cell_results
from elasticir.results.assemble import write_leaderboard as write_summary
from elasticir.results.schema import Leaderboard
from elasticir.results.store import RunFolder, RunStore, part_key, run_id

if TYPE_CHECKING:
    from elasticir.results.store import PartFolder

console = Console(stderr=True)

MAIN_METRIC = {"sts": "spearman", "retrieval": "nDCG@10"}


@dataclass
class RunOutcome:
    dir: Path
    leaderboard: Leaderboard
    cells: pd.DataFrame
    skipped: list[str]
    baseline: Any = None  # baselines.Outcome when the config names a baseline (set by run_with_baseline)

    @property
    def folder(self) -> RunFolder:
        """The run directory's paths (leaderboard, cells table, report folder, parts)."""
        return RunFolder(self.dir)


@dataclass
class Part:
    """What one evaluator returns for one dataset."""

    cells: pd.DataFrame
    timings: dict[str, float]
    n_examples: int
    files: list[Path]
    baselines: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    funnels: list[dict] = field(default_factory=list)
    n_docs: int | None = None  # retrieval: documents searched (after a subset), recorded for the report's costs


Evaluator = Callable[[ElasticEncoder, DatasetSpec, Path, Grid, RunConfig, "PartFolder", dict[str, Prompt], Executor],
                     Part]


def _evaluate_sts(encoder, spec, path, grid, config, part_dir, prompts, executor) -> Part:
    pairs = subset_sts(load_sts(path), config.limit_queries, config.seed)
    cells, cosines, timings = evaluate_sts(encoder, pairs, grid, batch_size=config.batch_size, prompt=prompts["text"].text,
                                           show_progress=config.show_progress, desc=f"sts {spec.name}",
                                           executor=executor)
    buffer = io.BytesIO()  # per-pair cosines of every cell + gold scores: what a bootstrap test resamples
    np.savez_compressed(buffer, cosines=cosines.astype(np.float32), gold=pairs.scores,
                        cells=np.array(grid.cells, dtype=np.int64))
    atomic_write(part_dir.pair_scores, buffer.getvalue())
    return Part(cells, timings, len(pairs), [path])


def store_width(config: RunConfig, grid: Grid, encoder: ElasticEncoder) -> int:
    """Columns the embedding stores keep: the grid's widest dim, or the full width when funnels rescore with the
    full cell (one width for the grid, the funnels and `--shard`, so no layer is encoded twice)."""
    return encoder.hidden_size if config.funnels else max(grid.dims)


def asymmetric_pairs(config: RunConfig, grid: Grid, num_layers: int) -> list[tuple[int, int]]:
    """The (query layer, doc layer) pairs --query-layers / --doc-layers add to the grid (none without them)."""
    return layer_pairs(grid.layers, num_layers, config.query_layers, config.doc_layers)


def _evaluate_retrieval(encoder, spec, path, grid, config, part_dir, prompts, executor) -> Part:
    data = load_beir(path, spec.split)
    if config.limit_queries or config.limit_corpus:
        data = subset_retrieval(data, config.limit_queries, config.limit_corpus, config.seed)
    cells, per_query, timings = evaluate_retrieval(
        encoder, data, grid, part_dir=part_dir, cache_dir=config.cache / "embeddings",
        remove_self_hits=spec.remove_self_hits, index=config.index, flat_backend=config.flat_backend, k=config.k,
        normalize=config.normalize, query_prompt=prompts["query"].text, doc_prompt=prompts["document"].text,
        batch_size=config.batch_size, latency_samples=config.latency_samples, show_progress=config.show_progress,
        name=spec.name, precisions=tuple(config.precisions), store_dtype=config.store_dtype,
        store_width=store_width(config, grid, encoder), executor=executor,
        layer_pairs=asymmetric_pairs(config, grid, encoder.num_layers),
    )
    atomic_write(part_dir.per_query, gzip.compress(per_query.to_csv(index=False).encode()))
    notes = data.notes + [f"{spec.name}: dense search backend {', '.join(sorted(set(cells.backend)))}"]
    funnels = []
    if config.funnels:
        from elasticir.evaluation.funnel import run_funnels

        funnels, funnel_notes = run_funnels(encoder, data, grid, config, part_dir, executor=executor,
                                            remove_self_hits=spec.remove_self_hits, name=spec.name,
                                            query_prompt=prompts["query"].text, doc_prompt=prompts["document"].text)
        notes += funnel_notes
    baselines = []
    if config.bm25:
        from elasticir.evaluation.bm25_baseline import run_bm25

        started = time.perf_counter()
        stage(f"{spec.name}: BM25 baseline (pyserini)")
        baselines.append(run_bm25(data, part_dir, config.cache / "bm25", spec, k=config.k))
        timings["bm25"] = time.perf_counter() - started
    return Part(cells, timings, len(data.query_ids), data.files, baselines, notes, funnels, len(data.doc_ids))


EVALUATORS: dict[str, Evaluator] = {"sts": _evaluate_sts, "retrieval": _evaluate_retrieval}


def _sources(spec: DatasetSpec, files: list[dict]) -> dict:
    """What was read (a digest of the local files' sha256s) and where the dataset is published."""
    digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()[:16]
    return {"source": f"local sha256:{digest}", "official_source": spec.source}


def check_shape_early(config: RunConfig) -> None:
    """Refuse a layer, dim or pair the model lacks from its config.json, before loading its weights. Dims are
    checked here only when the output width is the transformer's (no module after Pooling but Normalize and
    a single-mode Pooling); otherwise once the model is loaded."""
    from elasticir.encoders.cost import EncoderShape
    from elasticir.encoders.model import resolve_model_path
    from elasticir.encoders.stack import module_entries, transformer_folder

    folder = resolve_model_path(config.model)[0]
    shape = EncoderShape.from_folder(transformer_folder(folder))
    if shape is None:
        return  # the loader will say what is wrong with the folder
    entries = module_entries(folder)
    kinds = [entry["type"].rsplit(".", 1)[-1] for entry in entries[1:]]
    same_width = all(kind in ("Pooling", "Normalize") for kind in kinds) and _single_pooling(folder, entries)
    grid = Grid.for_model(shape.num_layers, shape.hidden_size, config.layers, config.dims if same_width else None)
    asymmetric_pairs(config, grid, shape.num_layers)
    if same_width:
        validate_cells([Cell(*p) for p in config.pairs or []], shape.num_layers, shape.hidden_size)


def _single_pooling(folder: Path, entries: list[dict]) -> bool:
    """The Pooling module (if any) uses one mode, so its output keeps the transformer's width."""
    import json

    for entry in entries:
        if entry["type"].endswith(".Pooling"):
            try:
                settings = json.loads((folder / entry.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                return False
            modes = [k for k, v in settings.items() if k.startswith("pooling_mode_") and v is True]
            listed = settings.get("pooling_mode")
            return len(modes) <= 1 and not (isinstance(listed, list) and len(listed) > 1)
    return True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Job:
    """One dataset of this command: where its files are and their sha256 (what its part's key hashes)."""

    task: str
    name: str
    spec: DatasetSpec
    path: Path
    files: list[Path]
    data_sha256: list[str]
    prompts: dict[str, Prompt] = field(default_factory=dict)  # per side, once the model is known (job_prompts)

    def options(self, config: RunConfig, encoder: ElasticEncoder) -> dict:
        """Per-dataset settings that change its part (self-hit removal; whether BM25 is part of it; the prompt
        texts, when any side has one; the store tags of encoder precisions whose vectors the dtype does not tell
        apart, int8's naming its quantization recipe and runtime). Each only when set: runs without them keep
        their keys."""
        options = {"remove_self_hits": self.spec.remove_self_hits, "bm25": config.bm25} if self.task == "retrieval" else {}
        if any(prompt.text for prompt in self.prompts.values()):
            options["prompts"] = {side: prompt.text for side, prompt in self.prompts.items()}
        variants = [encoder] + [precision_encoder(encoder, name, config) for name in (config.encoder_precisions or [])[1:]]
        if tags := {variant.precision.name: variant.precision.tag for variant in variants if variant.precision.tag}:
            options["encoder_recipes"] = tags
        return options


def job_prompts(jobs: list[Job], config: RunConfig, encoder: ElasticEncoder) -> None:
    """Each job's prompts, chosen from the model's by MTEB's rules for the dataset's MTEB task name and type,
    or as the prompt flags say (a --prompt-name the model lacks stops here, before any encoding)."""
    info = encoder.info
    for job in jobs:
        job.prompts = dataset_prompts(encoder.prompt_table, info.default_prompt_name, task=job.task,
                                      task_name=job.spec.mteb_name, task_type=job.spec.mteb_type,
                                      prompt_name=config.prompt_name, query_prompt=config.query_prompt,
                                      doc_prompt=config.doc_prompt)


def check_similarity(jobs: list[Job], encoder: ElasticEncoder) -> None:
    """Retrieval ranks by the model's own similarity: cosine (normalised vectors) or dot product; the distance
    similarities sentence-transformers also knows have no exact FAISS index here."""
    similarity = encoder.info.similarity
    if similarity not in ("cosine", "dot") and any(job.task == "retrieval" for job in jobs):
        raise ElasticIRError(f"the model's similarity_fn_name is {similarity!r}; elasticir's retrieval ranks by "
                             "cosine or dot product only. Evaluate its STS sets, or set similarity_fn_name in its "
                             "config_sentence_transformers.json if the model was trained for cosine or dot")


def locate_datasets(config: RunConfig) -> list[Job]:
    """Every dataset of the config, found (or downloaded) and its files hashed before the model is loaded."""
    root = data_root(config.data_root)
    jobs = []
    for task in EVALUATORS:
        for name in getattr(config, task):
            path = locate(name, root, override=config.data_root)
            spec = spec_for(name, root)
            if spec.task != task:
                raise ElasticIRError(f"dataset {name!r} is a {spec.task} dataset, not {task}")
            files = [path] if task == "sts" else beir_files(path, spec.split)
            jobs.append(Job(task, name, spec, path, files, [_sha256(f) for f in files]))
    return jobs


def check_index_fits(config: RunConfig, jobs: list[Job], grid: Grid) -> None:
    """The dense index can be built at every dim of the grid and trained on every corpus: checked once the
    grid is known and before any encoding (IVF lists or PQ centroids need at least that many documents)."""
    from elasticir.index.dense import check_index

    trainable = config.index not in ("flat", "Flat", "hnsw", "sq8")  # these need no minimum corpus size
    for job in (j for j in jobs if j.task == "retrieval"):
        size = _count_lines(job.files[0]) if trainable else None
        check_index(config.index, grid.dims, size, flat_backend=config.flat_backend)


def _sha256(path: Path) -> str:
    try:
        return file_checksum(path)["sha256"]
    except OSError as exc:
        raise ElasticIRError(f"cannot read {path}: {exc.strerror or exc}") from None


def _count_lines(path: Path) -> int:
    """Non-blank lines of a (gzipped) JSONL corpus: its document count, without parsing it."""
    from elasticir.data.jsonl import open_text

    with open_text(path) as handle:
        return sum(1 for line in handle if line.strip())


def build_grid(config: RunConfig, encoder: ElasticEncoder) -> tuple[Grid, list[Cell], dict]:
    """The grid, the report pairs and the numeric config (what changes the numbers) for this model."""
    trained = encoder.info.trained_pairs  # an elasticir-trained model: the diagonal it was trained on
    pairs = ([Cell(*p) for p in config.pairs] if config.pairs
             else trained or default_pairs(encoder.num_layers, encoder.hidden_size))
    dims = config.dims
    if dims is None and trained:  # its trained widths are evaluated even where the default dims lack them
        dims = sorted(set(default_dims(encoder.hidden_size)) | {cell.dim for cell in trained})
    grid = Grid.for_model(encoder.num_layers, encoder.hidden_size, config.layers, dims)
    validate_cells(pairs, encoder.num_layers, encoder.hidden_size)
    asymmetric_pairs(config, grid, encoder.num_layers)  # a layer it lacks: refused
    outside = [str(cell) for cell in pairs if cell.dim not in grid.dims or cell.layer not in grid.layers]
    if outside:
        console.print(f"note: pair(s) {', '.join(outside)} are outside the grid (layers {list(grid.layers)}, dims "
                      f"{list(grid.dims)}); the diagonal shows the other {len(pairs) - len(outside)}. Add the "
                      "dims with --dims to evaluate them.", soft_wrap=True, highlight=False, markup=False)
    info = encoder.info
    numeric = config.numeric({  # what the loaded model and the grid resolved; the config adds its parts' shares
        "weights_sha256": info.weights_sha256, "pooling": info.pooling, "normalize": info.normalize,
        "max_length": info.max_length, "dtype": str(encoder.dtype), "layers": list(grid.layers),
        "dims": list(grid.dims)})
    return grid, pairs, numeric


def evaluate_or_reuse(jobs: list[Job], encoder: ElasticEncoder, grid: Grid, numeric: dict, config: RunConfig,
                      store: RunStore, executor: Executor) -> list[str]:
    """Each job's part, under its lock: reused when a finished part has the same content key, else evaluated.
    Returns the names of the reused datasets. Under the Ray executor the datasets proceed concurrently (one
    driver thread each, sharing the actors), so one dataset's encoding overlaps another's grid."""
    if config.executor == "ray" and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(jobs)) as threads:
            done = list(threads.map(lambda job: _evaluate_or_reuse_one(job, encoder, grid, numeric, config, store,
                                                                        executor), jobs))
    else:
        done = [_evaluate_or_reuse_one(job, encoder, grid, numeric, config, store, executor) for job in jobs]
    return [job.name for job, reused in zip(jobs, done) if reused]


def _evaluate_or_reuse_one(job: Job, encoder: ElasticEncoder, grid: Grid, numeric: dict, config: RunConfig,
                           store: RunStore, executor: Executor) -> bool:
    """One job of evaluate_or_reuse; True if its finished part was reused."""
    key = part_key(numeric, job.task, job.name, job.spec.split, job.data_sha256, job.options(config, encoder))
    with store.lock(job.task, job.name):
        if not config.recompute and store.reusable(job.task, job.name, key) is not None:
            console.print(f"[dim]{job.task} {escape(job.name)}: finished earlier from the same data, model "
                          f"and settings; reusing {escape(str(store.part_table(job.task, job.name)))}[/dim]",
                          soft_wrap=True)
            return True
        if (reason := store.stale_reason(job.task, job.name, key)) and not config.recompute:
            console.print(f"{job.task} {job.name}: {reason}; recomputing it", markup=False, highlight=False,
                          soft_wrap=True)
        store.invalidate(job.task, job.name)
        subset = " on a subset" if numeric.get("subset") else ""
        paired = asymmetric_pairs(config, grid, encoder.num_layers) if job.task == "retrieval" else []
        asymmetric = f" + {len(paired) * len(grid.dims)} asymmetric (Lq, Ld, d) points" if paired else ""
        stage(f"{job.task} {job.name}: {len(grid.cells)} cells ({len(grid.layers)} layers x {len(grid.dims)} "
              f"dims){asymmetric}{subset}")
        _evaluate_part(job, encoder, grid, config, store, key, executor)
    return False


def precision_encoder(encoder: ElasticEncoder, name: str, config: RunConfig) -> ElasticEncoder:
    """The run's model at encoder precision `name`: the reference encoder itself, or a second encoder of the same
    model and settings made once per run (held by the reference encoder, which lives as long as the run)."""
    if name == encoder.precision.name:
        return encoder
    variants = encoder.__dict__.setdefault("precision_variants", {})
    if name not in variants:
        stage(f"loading model {config.model} at encoder precision {name}")
        variants[name] = ElasticEncoder(config.model, pooling=config.pooling, max_length=config.max_length,
                                        device=config.device, max_tokens_per_batch=config.max_tokens_per_batch,
                                        backend=config.backend, onnx_cache=config.cache / "onnx",
                                        trust_remote_code=config.trust_remote_code, precision=name)
    return variants[name]


def evaluate_encoder_points(job: Job, encoder: ElasticEncoder, grid: Grid, config: RunConfig, part_dir: PartFolder,
                            executor: Executor) -> Part:
    """The part at the reference encoder precision and, with --encoder-precisions, at every other one: the same
    grid (and index precisions) evaluated from that encoder's own store, its files in a folder of their own, its
    cells marked by an `encoder_precision` column. BM25 and funnels run once, at the reference."""
    evaluate = EVALUATORS[job.task]
    part = evaluate(encoder, job.spec, job.path, grid, config, part_dir, job.prompts, executor)
    extra = (config.encoder_precisions or [])[1:]
    if not extra:
        return part
    cells = [part.cells.assign(encoder_precision=config.encoder_precisions[0])]
    points_config = config.model_copy(update={"bm25": False, "funnels": None})
    for name in extra:
        variant = precision_encoder(encoder, name, config)
        folder = part_dir.encoder_points(name)
        folder.dir.mkdir(parents=True, exist_ok=True)
        stage(f"{job.task} {job.name}: the grid at encoder precision {name}")
        with executor_for(config, variant) as own:  # an executor encodes with its own encoder
            point = evaluate(variant, job.spec, job.path, grid, points_config, folder, job.prompts, own)
        cells.append(point.cells.assign(encoder_precision=name))
        part.timings.update({f"{stage_name} [{name}]": s for stage_name, s in point.timings.items()})
        part.notes.extend(note for note in point.notes if note not in part.notes)
    part.cells = pd.concat(cells, ignore_index=True)
    return part


def _evaluate_part(job: Job, encoder: ElasticEncoder, grid: Grid, config: RunConfig, store: RunStore,
                   key: str, executor: Executor) -> None:
    part = evaluate_encoder_points(job, encoder, grid, config, store.part(job.task, job.name), executor)
    cells = part.cells
    cells.insert(0, "dataset", job.name)
    files = [file_checksum(p) for p in part.files]
    prompts = ({"prompts": {side: p.as_dict() for side, p in job.prompts.items()}}
               if any(p.text for p in job.prompts.values()) else {})
    meta = {
        "key": key,
        "dataset": {"name": job.name, "task": job.task, "split": job.spec.split, "n_examples": part.n_examples,
                    **_sources(job.spec, files), "files": files, "settings": part_settings(config), **prompts,
                    **({"n_docs": part.n_docs} if part.n_docs is not None else {})},
        "timings": [{"dataset": job.name, "stage": stage, "seconds": s} for stage, s in part.timings.items()],
        "baselines": [{"dataset": job.name, **b} for b in part.baselines],
        "notes": part.notes,
        **({"funnels": [{"dataset": job.name, **f} for f in part.funnels]} if part.funnels else {}),
    }
    store.save_part(job.task, job.name, cells, meta)


# not what a part ran: where things go, how the run is shown, which datasets the command listed
UNRECORDED = ("out", "cache_dir", "recompute", "show_progress", "shard", "sts", "retrieval", "baseline")


def part_settings(config: RunConfig) -> dict:
    """What the command that produced a part ran (its flags, e.g. --no-bm25), recorded with the part so that
    `reproduce` replays each part as it ran even when several commands shared the run directory."""
    return {k: v for k, v in config.model_dump(mode="json").items() if k not in UNRECORDED}


@dataclass
class Summary:
    """Every finished part of a run directory, gathered into one table and the leaderboard's lists."""

    table: pd.DataFrame
    records: list[dict]
    timings: list[dict]
    baselines: list[dict]
    notes: list[str]
    tasks: list[str]
    names: dict[str, list[str]]
    funnels: list[dict] = field(default_factory=list)


def summarise(store: RunStore, jobs: list[Job]) -> Summary:
    """Gather every finished part in the folder, this command's first (in its order), then earlier ones."""
    order = {(job.task, job.name): i for i, job in enumerate(jobs)}
    found = sorted(store.finished_parts(), key=lambda part: (part not in order, order.get(part, 0)))
    missing = [f"{task} {name}" for task, name in order if (task, name) not in found]
    if missing:
        raise ElasticIRError(f"{store.dir}: part(s) {', '.join(missing)} changed while this run summarised; re-run")
    parts, records, timings, baselines, notes, funnels = [], [], [], [], [], []
    names: dict[str, list[str]] = {}
    for task, name in found:
        cells, meta = store.load_part(task, name)
        parts.append(cells.assign(task=task))
        records.append(meta["dataset"])
        timings.extend(meta["timings"])
        baselines.extend(meta["baselines"])
        notes.extend(meta["notes"])
        funnels.extend(meta.get("funnels", []))
        names.setdefault(task, []).append(name)
    table = pd.concat(parts, ignore_index=True)
    if "doc_layer" in table:  # read back as floats with gaps; whole numbers in cells.csv
        table["doc_layer"] = table.doc_layer.astype("Int64")
    keys = ["task", "dataset", "layer", "dim"]
    table = table[keys + [c for c in table.columns if c not in keys]]
    return Summary(table, records, timings, baselines, notes, [t for t in EVALUATORS if t in names], names, funnels)


def measure_encode_latency(config: RunConfig, jobs: list[Job], encoder: ElasticEncoder,
                           grid: Grid) -> tuple[list[dict], list[str], list[dict]]:
    """Measured encode cost per layer on the first dataset's texts, with its note and timing."""
    if not config.latency_texts or not jobs:
        return [], [], []
    started = time.perf_counter()
    job = jobs[0]
    stage(f"encode latency probe: {config.latency_texts} texts of {job.name} per layer (--latency-texts 0 skips it)")
    texts = (load_sts(job.path).sentence1[: config.latency_texts] if job.task == "sts"
             else first_documents(job.files[0], config.latency_texts))  # not the whole corpus: MS MARCO is 8.8M
    names = config.encoder_precisions or [encoder.precision.name]
    encoders = {name: precision_encoder(encoder, name, config) for name in names}
    latency = layer_encode_latency(encoders, texts, grid.layers)
    if len(names) == 1:
        latency = [{k: v for k, v in record.items() if k != "encoder_precision"} for record in latency]
    note = (f"encode latency per layer measured on the first {len(texts)} "
            f"texts of {job.name} ({latency[0]['device']})"
            + (f", encoder precisions {', '.join(names)} timed side by side" if len(names) > 1 else ""))
    timing = {"dataset": job.name, "stage": "encode_latency_probe", "seconds": time.perf_counter() - started}
    return latency, [note], [timing]


def write_leaderboard(store: RunStore, config: RunConfig, encoder: ElasticEncoder, grid: Grid, pairs: list[Cell],
                      numeric: dict, summary: Summary, encode_latency: list[dict]) -> Leaderboard:
    """The validated leaderboard of every part in the folder, and cells.csv beside it. The recorded config
    lists every summarised dataset, so `reproduce` re-runs all of them."""
    recorded = config.model_dump(mode="json") | {task: summary.names.get(task, []) for task in EVALUATORS}
    stage(f"writing {store.leaderboard}")
    return write_summary(
        store, summary.table, lambda board: flag_anomalies(store, board, summary.table),
        run_id=store.run_id,
        model={**encoder.info.as_dict(), "dtype": str(encoder.dtype).removeprefix("torch."),
               "device": str(encoder.device)},
        config=recorded | {"numeric": numeric},
        grid={"layers": list(grid.layers), "dims": list(grid.dims), "pairs": [tuple(p) for p in pairs]},
        datasets=summary.records,
        main_metric={task: MAIN_METRIC[task] for task in summary.tasks},
        results=cell_results(summary.table),
        baselines=summary.baselines,
        funnels=summary.funnels,
        encode_latency=encode_latency,
        notes=summary.notes,
        subset=numeric.get("subset"),
        seed=config.seed,
        timings=summary.timings,
    )


def flag_anomalies(store: RunStore, board: Leaderboard, table: pd.DataFrame) -> None:
    """The board's anomaly flags, read from the parts' per-query files already on disk; never a changed number."""
    from elasticir.report.anomalies import find_anomalies
    from elasticir.report.rundir import RunData
    from elasticir.results.schema import AnomalyRecord

    board.anomalies = [AnomalyRecord(**a.as_dict()) for a in find_anomalies(RunData(store.dir, board, table))]
    if board.anomalies:
        stage(f"{len(board.anomalies)} anomaly flag(s) in leaderboard.json (numbers unchanged; see report)")


def encode_shard(config: RunConfig, jobs: list[Job], encoder: ElasticEncoder, grid: Grid) -> None:
    """`--shard i/n`: encode rows i/n of every retrieval corpus and query set into the store, and stop; the
    plain command later finds the shards marked done and encodes only what no shard covered. STS sets are
    encoded in memory (small) by the plain command."""
    from elasticir.evaluation.retrieval import corpus_stores, store_layers

    sides = store_layers(grid, asymmetric_pairs(config, grid, encoder.num_layers))
    with executor_for(config, encoder) as executor:  # the shard executor (elasticir.execution.shard)
        for job in (j for j in jobs if j.task == "retrieval"):
            data = load_beir(job.path, job.spec.split)
            if config.limit_queries or config.limit_corpus:
                data = subset_retrieval(data, config.limit_queries, config.limit_corpus, config.seed)
            for store, what in zip(corpus_stores(encoder, data, config.cache / "embeddings",
                                                 store_width(config, grid, encoder),
                                                 query_prompt=job.prompts["query"].text,
                                                 doc_prompt=job.prompts["document"].text,
                                                 store_dtype=config.store_dtype), ("corpus", "queries")):
                executor.encode_store(store, sides[what], batch_size=config.batch_size,
                                      show_progress=config.show_progress, desc=f"{job.name} {what}")
    stage(f"shard {executor.index}/{executor.count} encoded; run the command without --shard once every shard "
          "is done")


Widen = Callable[[RunConfig, ElasticEncoder], RunConfig]


def run(config: RunConfig, encoder: ElasticEncoder | None = None, *, widen: Widen | None = None) -> RunOutcome | None:
    """Evaluate every cell of the grid on every dataset in the config and write the run directory (None for
    `--shard i/n`, which only encodes its shard).

    `widen` (given by baselines.run_with_baseline, which evaluates `config.baseline` after the run) adjusts the
    config once the model is loaded, before the grid is built: the elastic grid then covers the baseline's cells.
    The baseline itself is not this module's: the runner sits below the baselines that run it per member."""
    if config.baseline and widen is None:
        raise ElasticIRError(f"baseline {config.baseline}: runner.run does not evaluate a baseline; call "
                             "elasticir.baselines.run_with_baseline(config) (what `elasticir run --baseline` does)")
    started = time.perf_counter()
    seed_everything(config.seed)
    check(config)
    check_precisions(config.precisions)
    check_funnel_flags(config.funnels)
    jobs = locate_datasets(config)
    if encoder is None:
        check_shape_early(config)
        stage(f"loading model {config.model}")
    encoder = encoder or ElasticEncoder(config.model, pooling=config.pooling, max_length=config.max_length,
                                        device=config.device, max_tokens_per_batch=config.max_tokens_per_batch,
                                        backend=config.backend, onnx_cache=config.cache / "onnx",
                                        trust_remote_code=config.trust_remote_code,
                                        precision=(config.encoder_precisions or [None])[0])
    for name in (config.encoder_precisions or [])[1:]:  # each loads (and is checked) before any encoding
        precision_encoder(encoder, name, config)
    job_prompts(jobs, config, encoder)
    check_similarity(jobs, encoder)
    config = widen(config, encoder) if widen else config
    grid, pairs, numeric = build_grid(config, encoder)
    check_index_fits(config, jobs, grid)
    if config.funnels:  # cells the model has, K within every corpus: before any encoding
        check_funnels_fit(config.funnels, encoder.num_layers, encoder.hidden_size,
                          {job.name: min(_count_lines(job.files[0]), config.limit_corpus or 1 << 62)
                           for job in jobs if job.task == "retrieval"})
    if config.shard:
        return encode_shard(config, jobs, encoder, grid)
    store = RunStore(Path(config.out), run_id(encoder.info.name, numeric))
    with executor_for(config, encoder) as executor:  # this run's only executor: closed (pools, actors) here
        skipped = evaluate_or_reuse(jobs, encoder, grid, numeric, config, store, executor)
    encode_latency, notes, timings = measure_encode_latency(config, jobs, encoder, grid)
    with store.summary_lock():
        summary = summarise(store, jobs)
        summary.notes.extend(notes + [f"encoder attention: {encoder.attention_note}"])
        summary.timings.extend(timings)
        summary.timings.append({"dataset": "*", "stage": "total", "seconds": time.perf_counter() - started})
        leaderboard = write_leaderboard(store, config, encoder, grid, pairs, numeric, summary, encode_latency)
    return RunOutcome(store.dir, leaderboard, summary.table, skipped)
