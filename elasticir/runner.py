"""A run: one model, one grid, several datasets -> a run directory with per-cell tables and a leaderboard.

Every dataset is located before any encoding starts (a missing one fails in seconds), each finished dataset is
saved at once (an interrupted run keeps it), and a re-run of the same config skips finished datasets.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict
from rich.console import Console

from elasticir.cells import Cell, Grid, default_dims, default_pairs, validate_cells
from elasticir.data.beir import load_beir
from elasticir.data.catalog import DatasetSpec, data_root, locate, spec_for
from elasticir.data.sts import load_sts
from elasticir.data.subset import describe, subset_retrieval, subset_sts
from elasticir.encoders import DEFAULT_MODEL, ElasticEncoder
from elasticir.errors import ElasticIRError
from elasticir.evaluation.latency import layer_encode_latency
from elasticir.evaluation.retrieval import evaluate_retrieval
from elasticir.evaluation.sts import evaluate_sts
from elasticir.io import atomic_write, file_checksum, provenance
from elasticir.progress import stage
from elasticir.results.schema import Leaderboard
from elasticir.results.store import RunStore, run_id

console = Console(stderr=True)

DEFAULT_STS = ("stsbenchmark", "sts12", "sickr")
DEFAULT_RETRIEVAL = ("scifact",)
MAIN_METRIC = {"sts": "spearman", "retrieval": "nDCG@10"}
COST_COLUMNS = ("index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms")


class RunConfig(BaseModel):
    """Everything a run needs; the CLI flags and YAML configs map onto these fields."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    layers: list[int] | None = None
    dims: list[int] | None = None
    pairs: list[tuple[int, int]] | None = None
    sts: list[str] = list(DEFAULT_STS)
    retrieval: list[str] = list(DEFAULT_RETRIEVAL)
    index: str = "flat"  # flat | hnsw | sq8 | ivfpq | any FAISS factory string
    flat_backend: Literal["torch", "faiss"] = "torch"
    k: int = 1000
    bm25: bool = True
    normalize: bool | None = None  # re-normalise truncated vectors (default: as the model does)
    query_prompt: str | None = None
    doc_prompt: str | None = None
    latency_samples: int = 100
    latency_texts: int = 32  # real texts timed per layer for the measured encode cost (0 = skip); one batch
    limit_queries: int | None = None  # smoke test: queries (STS: pairs) kept per dataset, seeded
    limit_corpus: int | None = None  # smoke test: documents kept (every judged one of the kept queries first)
    data_root: str | None = None
    out: str = "results"
    cache_dir: str | None = None  # default <out>/_cache
    batch_size: int = 64  # texts per batch; with max_tokens_per_batch, the cap
    max_tokens_per_batch: int | None = None  # batches by a token budget instead of a fixed count
    max_length: int | None = None
    pooling: str | None = None
    device: str | None = None
    backend: Literal["torch", "onnx"] = "torch"  # onnx: onnxruntime on the CPU, same numbers to ~1e-6
    seed: int = 0
    recompute: bool = False
    show_progress: bool = True

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "_cache"


@dataclass
class RunOutcome:
    dir: Path
    leaderboard: Leaderboard
    cells: pd.DataFrame
    skipped: list[str]


@dataclass
class Part:
    """What one evaluator returns for one dataset."""

    cells: pd.DataFrame
    timings: dict[str, float]
    n_examples: int
    files: list[Path]
    baselines: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Evaluator = Callable[[ElasticEncoder, DatasetSpec, Path, Grid, RunConfig, Path], Part]


def _evaluate_sts(encoder, spec, path, grid, config, part_dir) -> Part:
    pairs = subset_sts(load_sts(path), config.limit_queries, config.seed)
    cells, cosines, timings = evaluate_sts(encoder, pairs, grid, batch_size=config.batch_size,
                                           show_progress=config.show_progress, desc=f"sts {spec.name}")
    buffer = io.BytesIO()  # per-pair cosines of every cell + gold scores: what a bootstrap test resamples
    np.savez_compressed(buffer, cosines=cosines.astype(np.float32), gold=pairs.scores,
                        cells=np.array(grid.cells, dtype=np.int64))
    atomic_write(part_dir / "pair_scores.npz", buffer.getvalue())
    return Part(cells, timings, len(pairs), [path])


def _evaluate_retrieval(encoder, spec, path, grid, config, part_dir) -> Part:
    data = load_beir(path, spec.split)
    if config.limit_queries or config.limit_corpus:
        data = subset_retrieval(data, config.limit_queries, config.limit_corpus, config.seed)
    cells, per_query, timings = evaluate_retrieval(
        encoder, data, grid, part_dir=part_dir, cache_dir=config.cache / "embeddings",
        remove_self_hits=spec.remove_self_hits, index=config.index, flat_backend=config.flat_backend, k=config.k,
        normalize=config.normalize, query_prompt=config.query_prompt, doc_prompt=config.doc_prompt,
        batch_size=config.batch_size, latency_samples=config.latency_samples, show_progress=config.show_progress,
        name=spec.name,
    )
    atomic_write(part_dir / "per_query.csv.gz", gzip.compress(per_query.to_csv(index=False).encode()))
    notes = data.notes + [f"{spec.name}: dense search backend {', '.join(sorted(set(cells.backend)))}"]
    baselines = []
    if config.bm25:
        from elasticir.evaluation.bm25_baseline import run_bm25

        started = time.perf_counter()
        stage(f"{spec.name}: BM25 baseline (pyserini)")
        baselines.append(run_bm25(data, part_dir, config.cache / "bm25", spec, k=config.k))
        timings["bm25"] = time.perf_counter() - started
    return Part(cells, timings, len(data.query_ids), data.files, baselines, notes)


EVALUATORS: dict[str, Evaluator] = {"sts": _evaluate_sts, "retrieval": _evaluate_retrieval}


def _unchanged(meta: dict) -> bool:
    """True if every data file a finished part read still has the checksum recorded then."""
    try:
        return all(file_checksum(Path(f["path"]))["sha256"] == f["sha256"] for f in meta["dataset"]["files"])
    except OSError:
        return False


def _sources(spec: DatasetSpec, files: list[dict]) -> dict:
    """What was read (a digest of the local files' sha256s) and where the dataset is published."""
    digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()[:16]
    return {"source": f"local sha256:{digest}", "official_source": spec.source}


def check_shape_early(config: RunConfig) -> None:
    """Refuse a layer, dim or pair the model lacks from its config.json, before loading its weights."""
    from elasticir.encoders.model import read_sentence_transformers_config, resolve_model_path
    from elasticir.report.cost import EncoderShape

    folder, _ = resolve_model_path(config.model)
    shape = EncoderShape.from_folder(read_sentence_transformers_config(folder).get("transformer_path", folder))
    if shape is None:
        return  # the loader will say what is wrong with the folder
    Grid.for_model(shape.num_layers, shape.hidden_size, config.layers, config.dims)
    validate_cells([Cell(*p) for p in config.pairs or []], shape.num_layers, shape.hidden_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(config: RunConfig, encoder: ElasticEncoder | None = None) -> RunOutcome:
    """Evaluate every cell of the grid on every dataset in the config and write the run directory."""
    started = time.perf_counter()
    seed_everything(config.seed)
    root = data_root(config.data_root)
    jobs = [(task, name) for task in EVALUATORS for name in getattr(config, task)]
    located = {(task, name): locate(name, root, override=config.data_root) for task, name in jobs}
    for (task, name) in jobs:
        if spec_for(name, root).task != task:
            raise ElasticIRError(f"dataset {name!r} is a {spec_for(name, root).task} dataset, not {task}")

    subset = describe(config.limit_queries, config.limit_corpus, config.seed)
    if encoder is None:
        check_shape_early(config)
        stage(f"loading model {config.model}")
    encoder = encoder or ElasticEncoder(config.model, pooling=config.pooling, max_length=config.max_length,
                                        device=config.device, max_tokens_per_batch=config.max_tokens_per_batch,
                                        backend=config.backend, onnx_cache=config.cache / "onnx")
    trained = encoder.info.trained_pairs  # an elasticir-trained model: the diagonal it was trained on
    pairs = ([Cell(*p) for p in config.pairs] if config.pairs
             else trained or default_pairs(encoder.num_layers, encoder.hidden_size))
    dims = config.dims
    if dims is None and trained:  # its trained widths are evaluated even where the default dims lack them
        dims = sorted(set(default_dims(encoder.hidden_size)) | {cell.dim for cell in trained})
    grid = Grid.for_model(encoder.num_layers, encoder.hidden_size, config.layers, dims)
    validate_cells(pairs, encoder.num_layers, encoder.hidden_size)
    outside = [str(cell) for cell in pairs if cell.dim not in grid.dims or cell.layer not in grid.layers]
    if outside:
        console.print(f"note: pair(s) {', '.join(outside)} are outside the grid (layers {list(grid.layers)}, dims "
                      f"{list(grid.dims)}); the diagonal shows the other {len(pairs) - len(outside)}. Add the "
                      "dims with --dims to evaluate them.", soft_wrap=True, highlight=False)
    info = encoder.info
    numeric_config = {  # what changes the numbers; datasets and output paths do not
        "weights_sha256": info.weights_sha256, "pooling": info.pooling, "normalize": info.normalize,
        "max_length": info.max_length, "dtype": str(encoder.dtype), "layers": list(grid.layers),
        "dims": list(grid.dims), "retrieval": {key: getattr(config, key) for key in
                                               ("index", "flat_backend", "k", "normalize", "query_prompt", "doc_prompt")},
    }
    if subset:  # only then: full runs keep their run ids
        numeric_config["subset"] = subset
    store = RunStore(Path(config.out), run_id(info.name, numeric_config))

    parts, records, timings, skipped, baselines, notes = [], [], [], [], [], []
    for task, name in jobs:
        spec, path = spec_for(name, root), located[(task, name)]
        finished = store.finished(task, name) and not config.recompute
        if finished and _unchanged(meta := store.load_part(task, name)[1]):
            cells = store.load_part(task, name)[0]
            skipped.append(name)
            console.print(f"[dim]{task} {name}: finished in an earlier run, reusing {store.dir / task / name}.csv[/dim]")
        else:
            part_dir = store.dir / task / name
            stage(f"{task} {name}: {len(grid.cells)} cells ({len(grid.layers)} layers x {len(grid.dims)} dims)"
                  f"{' on a subset' if subset else ''}")
            part = EVALUATORS[task](encoder, spec, path, grid, config, part_dir)
            cells = part.cells
            cells.insert(0, "dataset", name)
            meta = {
                "dataset": {"name": name, "task": task, "split": spec.split, "n_examples": part.n_examples,
                            **_sources(spec, files := [file_checksum(p) for p in part.files]), "files": files},
                "timings": [{"dataset": name, "stage": stage, "seconds": s} for stage, s in part.timings.items()],
                "baselines": [{"dataset": name, **b} for b in part.baselines],
                "notes": part.notes,
            }
            store.save_part(task, name, cells, meta)
        parts.append(cells.assign(task=task))
        records.append(meta["dataset"])
        timings.extend(meta["timings"])
        baselines.extend(meta["baselines"])
        notes.extend(meta["notes"])

    table = pd.concat(parts, ignore_index=True)
    keys = ["task", "dataset", "layer", "dim"]
    table = table[keys + [c for c in table.columns if c not in keys]]
    results = [
        {"dataset": row["dataset"], "layer": int(row["layer"]), "dim": int(row["dim"]),
         "metrics": {m: float(row[m]) for m in table.columns
                     if m not in keys and m not in COST_COLUMNS and m != "backend" and pd.notna(row[m])},
         "costs": {c: float(row[c]) for c in COST_COLUMNS if c in row and pd.notna(row[c])}}
        for row in table.to_dict("records")
    ]
    encode_latency = []
    if config.latency_texts and jobs:
        started_probe = time.perf_counter()
        task, name = jobs[0]
        stage(f"encode latency probe: {config.latency_texts} texts of {name} per layer (--latency-texts 0 skips it)")
        path = located[(task, name)]
        texts = load_sts(path).sentence1 if task == "sts" else load_beir(path, spec_for(name, root).split).doc_texts
        encode_latency = layer_encode_latency(encoder, texts[: config.latency_texts], grid.layers)
        notes.append(f"encode latency per layer measured on the first {min(len(texts), config.latency_texts)} "
                     f"texts of {name} ({encode_latency[0]['device']})")
        timings.append({"dataset": name, "stage": "encode_latency_probe",
                        "seconds": time.perf_counter() - started_probe})
    timings.append({"dataset": "*", "stage": "total", "seconds": time.perf_counter() - started})
    notes.append(f"encoder attention: {getattr(encoder, 'attention_note', 'padded')}")
    leaderboard = Leaderboard(
        created_at=datetime.now(UTC),
        run_id=store.run_id,
        model={**info.as_dict(), "dtype": str(encoder.dtype).removeprefix("torch."), "device": str(encoder.device)},
        config=config.model_dump(mode="json") | {"numeric": numeric_config},
        grid={"layers": list(grid.layers), "dims": list(grid.dims), "pairs": [tuple(p) for p in pairs]},
        datasets=records,
        main_metric={task: MAIN_METRIC[task] for task in dict.fromkeys(task for task, _ in jobs)},
        results=results,
        baselines=baselines,
        encode_latency=encode_latency,
        notes=notes,
        subset=subset,
        seed=config.seed,
        timings=timings,
        **provenance(),
    )
    stage(f"writing {store.dir / 'leaderboard.json'} ({time.perf_counter() - started:.0f} s in all)")
    store.write_table("cells.csv", table)
    atomic_write(store.dir / "leaderboard.json", leaderboard.model_dump_json(indent=2))
    return RunOutcome(store.dir, leaderboard, table, skipped)
