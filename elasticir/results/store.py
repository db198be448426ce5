"""A run directory: per-dataset parts written atomically, so an interrupted run keeps what it finished.

Layout of `results/<run id>/`:
  <task>/<dataset>.csv        per-cell metrics (dataset, layer, dim, one column per metric)
  <task>/<dataset>.json       that part's dataset record and timings; written last, it marks the part finished
  cells.csv                   every part in one table
  leaderboard.json            the validated summary (see schema.py)
The run id hashes everything that changes the numbers (weights, pooling, length, dtype, grid, task options), so
re-running the same config finds its finished parts and skips them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd

from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write


def claim_output(out: Path, numeric: dict, *, started: str, finished: str, what: str, recompute: bool = False) -> bool:
    """Claim `out` for a long job (training, pre-training) described by `numeric`, the keys that change its
    result: True when it already holds this exact finished job (its `finished` file exists), so the caller
    reuses it; False after recording `numeric` in `started` (or finding it there: a resume). A folder holding a
    different job, or anything else, is refused rather than mixed; `recompute` deletes it first."""
    if recompute and out.exists():
        shutil.rmtree(out)
    if (out / started).is_file():
        previous = json.loads((out / started).read_text())
        if previous != numeric:
            changed = sorted(k for k in previous.keys() | numeric.keys() if previous.get(k) != numeric.get(k))
            raise ElasticIRError(
                f"{out} holds a {what} run with a different config (differs in: {', '.join(changed)}). "
                "Fix: choose another --out, or pass --recompute to delete it and start again"
            )
        return (out / finished).is_file()
    if out.exists() and any(out.iterdir()):
        raise ElasticIRError(f"{out} exists and is not an elasticir {what} folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / started, json.dumps(numeric, indent=2))
    return False



def run_id(model_name: str, config: dict) -> str:
    """Readable model slug + a hash of the config that determines the numbers."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", model_name.rstrip("/").split("/")[-1]).strip("-") or "model"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


class RunStore:
    def __init__(self, root: Path, run_id: str) -> None:
        self.dir = Path(root) / run_id
        self.run_id = run_id

    def _paths(self, task: str, dataset: str) -> tuple[Path, Path]:
        return self.dir / task / f"{dataset}.csv", self.dir / task / f"{dataset}.json"

    def finished(self, task: str, dataset: str) -> bool:
        return all(path.is_file() for path in self._paths(task, dataset))

    def save_part(self, task: str, dataset: str, cells: pd.DataFrame, meta: dict) -> None:
        csv_path, meta_path = self._paths(task, dataset)
        atomic_write(csv_path, cells.to_csv(index=False))
        atomic_write(meta_path, json.dumps(meta, indent=2, default=str))

    def load_part(self, task: str, dataset: str) -> tuple[pd.DataFrame, dict]:
        csv_path, meta_path = self._paths(task, dataset)
        return pd.read_csv(csv_path), json.loads(meta_path.read_text())

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        buffer = io.StringIO()
        table.to_csv(buffer, index=False)
        atomic_write(self.dir / name, buffer.getvalue())
        return self.dir / name
