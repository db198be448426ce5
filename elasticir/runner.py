"""A run: one model, one grid, several datasets -> a run directory with per-cell tables and a leaderboard.

Every dataset is located before any encoding starts (a missing one fails in seconds), each finished dataset is
saved at once (an interrupted run keeps it), and a re-run of the same config skips finished datasets.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict
from rich.console import Console

from elasticir.cells import Cell, Grid, default_pairs, validate_cells
from elasticir.data.catalog import DatasetSpec, data_root, file_checksum, locate, spec_for
from elasticir.data.sts import load_sts
from elasticir.encoders import DEFAULT_MODEL, ElasticEncoder
from elasticir.errors import ElasticIRError
from elasticir.evaluation.sts import evaluate_sts
from elasticir.results.provenance import library_versions, machine
from elasticir.results.schema import Leaderboard
from elasticir.results.store import RunStore, atomic_write, run_id

console = Console(stderr=True)

DEFAULT_STS = ("stsbenchmark", "sts12", "sickr")
MAIN_METRIC = {"sts": "spearman"}


class RunConfig(BaseModel):
    """Everything a run needs; the CLI flags and YAML configs map onto these fields."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    layers: list[int] | None = None
    dims: list[int] | None = None
    pairs: list[tuple[int, int]] | None = None
    sts: list[str] = list(DEFAULT_STS)
    data_root: str | None = None
    out: str = "results"
    batch_size: int = 64
    max_length: int | None = None
    pooling: str | None = None
    device: str | None = None
    seed: int = 0
    recompute: bool = False
    show_progress: bool = True


@dataclass
class RunOutcome:
    dir: Path
    leaderboard: Leaderboard
    cells: pd.DataFrame
    skipped: list[str]


# task -> evaluate(encoder, spec, path, grid, config) -> (cells, timings, n_examples)
Evaluator = Callable[[ElasticEncoder, DatasetSpec, Path, Grid, RunConfig], tuple[pd.DataFrame, dict, int]]


def _evaluate_sts(encoder, spec, path, grid, config):
    pairs = load_sts(path)
    cells, timings = evaluate_sts(encoder, pairs, grid, batch_size=config.batch_size,
                                  show_progress=config.show_progress, desc=f"sts {spec.name}")
    return cells, timings, len(pairs)


EVALUATORS: dict[str, Evaluator] = {"sts": _evaluate_sts}


def _data_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


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

    encoder = encoder or ElasticEncoder(config.model, pooling=config.pooling, max_length=config.max_length,
                                        device=config.device)
    grid = Grid.for_model(encoder.num_layers, encoder.hidden_size, config.layers, config.dims)
    pairs = [Cell(*p) for p in config.pairs] if config.pairs else default_pairs(encoder.num_layers, encoder.hidden_size)
    validate_cells(pairs, encoder.num_layers, encoder.hidden_size)
    info = encoder.info
    numeric_config = {  # what changes the numbers; datasets and output paths do not
        "weights_sha256": info.weights_sha256, "pooling": info.pooling, "normalize": info.normalize,
        "max_length": info.max_length, "dtype": str(encoder.dtype), "layers": list(grid.layers), "dims": list(grid.dims),
    }
    store = RunStore(Path(config.out), run_id(info.name, numeric_config))

    parts, records, timings, skipped = [], [], [], []
    for task, name in jobs:
        spec, path = spec_for(name, root), located[(task, name)]
        if store.finished(task, name) and not config.recompute:
            cells, meta = store.load_part(task, name)
            skipped.append(name)
            console.print(f"[dim]{task} {name}: finished in an earlier run, reusing {store.dir / task / name}.csv[/dim]")
        else:
            files = [file_checksum(p) for p in _data_files(path)]
            cells, stage_times, n_examples = EVALUATORS[task](encoder, spec, path, grid, config)
            cells.insert(0, "dataset", name)
            meta = {
                "dataset": {"name": name, "task": task, "split": spec.split, "n_examples": n_examples,
                            "source": spec.source, "files": files},
                "timings": [{"dataset": name, "stage": stage, "seconds": s} for stage, s in stage_times.items()],
            }
            store.save_part(task, name, cells, meta)
        cells = cells.assign(task=task)
        parts.append(cells)
        records.append(meta["dataset"])
        timings.extend(meta["timings"])

    table = pd.concat(parts, ignore_index=True)
    table = table[["task", "dataset", "layer", "dim"] + [c for c in table.columns if c not in
                                                          ("task", "dataset", "layer", "dim")]]
    metric_columns = [c for c in table.columns if c not in ("task", "dataset", "layer", "dim")]
    results = [
        {"dataset": row["dataset"], "layer": int(row["layer"]), "dim": int(row["dim"]),
         "metrics": {m: float(row[m]) for m in metric_columns if pd.notna(row[m])}}
        for row in table.to_dict("records")
    ]
    timings.append({"dataset": "*", "stage": "total", "seconds": time.perf_counter() - started})
    leaderboard = Leaderboard(
        created_at=datetime.now(timezone.utc),
        run_id=store.run_id,
        model={**info.as_dict(), "dtype": str(encoder.dtype).removeprefix("torch."), "device": str(encoder.device)},
        config=config.model_dump(mode="json") | {"numeric": numeric_config},
        grid={"layers": list(grid.layers), "dims": list(grid.dims), "pairs": [tuple(p) for p in pairs]},
        datasets=records,
        main_metric={task: MAIN_METRIC[task] for task, _ in jobs},
        results=results,
        library_versions=library_versions(),
        seed=config.seed,
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
        timings=timings,
        machine=machine(),
    )
    store.write_table("cells.csv", table)
    atomic_write(store.dir / "leaderboard.json", leaderboard.model_dump_json(indent=2))
    return RunOutcome(store.dir, leaderboard, table, skipped)
