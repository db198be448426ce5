"""A run directory: per-dataset parts written atomically, so an interrupted run keeps what it finished.

This module is the one place that names the files of a run directory (`RunFolder`, `PartFolder`): the runner,
the evaluators, the baseline grid, the report and reproduce all take their paths from here, so the layout below
is written down once.

Layout of `results/<run id>/`:
  <task>/<dataset>.csv        per-cell metrics (dataset, layer, dim, one column per metric)
  <task>/<dataset>.json       that part's dataset record and timings; written last, it marks the part finished
  <task>/<dataset>/           the part's own files: per_query.csv.gz (retrieval) or pair_scores.npz (STS),
                              runs/<cell>.trec.gz, bm25_per_query.csv.gz, funnels.csv, funnel_per_query.csv.gz
  cells.csv                   every part in one table
  leaderboard.json            the validated summary (see schema.py)
  report/                     the default folder of the run's report
The run id hashes everything that changes the numbers (weights, pooling, length, dtype, grid, task options), so
re-running the same config finds its finished parts. A part is reused only when the `key` recorded in its
`.json` equals the key of what would produce it now (`part_key`: that numeric config plus the sha256 of every
data file read, never names or paths), its table still has the checksum recorded next to it, and every file of
its folder `<task>/<dataset>/` (per-query values, pair scores, run files) is there with the sha256 recorded in
the mark (`files_sha256`); anything else is recomputed (a mark without that record, from an older elasticir,
too). The mark also records what the command that produced the part ran (`settings`), so `reproduce` replays
each part as it ran. While a part is written its lock (`<task>/<dataset>.lock`) keeps a second run out, and its old
finished mark is removed first, so a crash never leaves a mark next to a half-replaced table. The summary
(`cells.csv`, `leaderboard.json`) is rebuilt from every finished part in the folder, so two commands sharing a
run directory (STS set A, then set B; STS, then retrieval) both stay in it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from elasticir.data.catalog import check_dataset_name
from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write, file_checksum
from elasticir.locking import exclusive
from elasticir.progress import stage

TASKS = ("sts", "retrieval")


def run_id(model_name: str, config: dict) -> str:
    """Readable model slug + a hash of the config that determines the numbers."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", model_name.rstrip("/").split("/")[-1]).strip("-") or "model"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def part_key(numeric: dict, task: str, dataset: str, split: str, data_sha256: list[str], options: dict) -> str:
    """What makes a part's numbers: the run's numeric config, the dataset's task/split/options and the content
    (sha256) of every data file it reads. The dataset name is included for readability of collisions only."""
    payload = {"numeric": numeric, "task": task, "dataset": dataset, "split": split, "data": data_sha256,
               "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


LEADERBOARD = "leaderboard.json"


def resolve_path(path: str | Path) -> Path:
    """A leaderboard.json, or a run directory holding one."""
    path = Path(path)
    return RunFolder(path).leaderboard if path.is_dir() else path


@dataclass(frozen=True)
class PartFolder:
    """The files of one dataset's part, `<run>/<task>/<dataset>/`: what significance tests, run files and
    funnels read back. Plain paths, picklable (a Ray worker is handed one); `os.fspath` gives the folder."""

    dir: Path

    def __fspath__(self) -> str:
        return str(self.dir)

    def __str__(self) -> str:
        return str(self.dir)

    @property
    def per_query(self) -> Path:
        """Retrieval: one row per (query, measure, cell[, precision])."""
        return self.dir / "per_query.csv.gz"

    @property
    def pair_scores(self) -> Path:
        """STS: every cell's per-pair cosines and the gold scores."""
        return self.dir / "pair_scores.npz"

    @property
    def bm25_per_query(self) -> Path:
        return self.dir / "bm25_per_query.csv.gz"

    @property
    def funnels(self) -> Path:
        return self.dir / "funnels.csv"

    @property
    def funnel_per_query(self) -> Path:
        return self.dir / "funnel_per_query.csv.gz"

    @property
    def runs(self) -> Path:
        return self.dir / "runs"

    def run_file(self, slug: str) -> Path:
        """The TREC run file of one ranking (`slug`: a cell and precision, a funnel, or bm25-flat)."""
        return self.runs / f"{slug}.trec.gz"

    @property
    def bm25_run(self) -> Path:
        return self.run_file("bm25-flat")

    def encoder_points(self, precision: str) -> PartFolder:
        """Where the grid at an encoder precision other than the reference writes its per-query values and run
        files: a part folder of its own inside this one (hashed and removed with it)."""
        return PartFolder(self.dir / f"encoder-{precision}")

    def name_of(self, path: Path) -> str:
        """A file's name as the finished mark records it (`files_sha256`): relative to the part folder."""
        return Path(path).relative_to(self.dir).as_posix()


class RunFolder:
    """The paths of one run directory (see the module docstring for the layout)."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)

    @property
    def leaderboard(self) -> Path:
        return self.dir / LEADERBOARD

    @property
    def cells(self) -> Path:
        return self.dir / "cells.csv"

    @property
    def report(self) -> Path:
        """Where the run's report goes unless --out says otherwise."""
        return self.dir / "report"

    def write_summary(self, table: pd.DataFrame, leaderboard_json: str) -> None:
        """cells.csv, then leaderboard.json (last: a run directory with a leaderboard has its table)."""
        atomic_write(self.cells, table.to_csv(index=False))
        atomic_write(self.leaderboard, leaderboard_json)

    def is_run(self) -> bool:
        """A finished run directory: its leaderboard is there."""
        return self.leaderboard.is_file()

    def part(self, task: str, dataset: str) -> PartFolder:
        check_dataset_name(dataset)  # a part's files stay inside the run directory
        return PartFolder(self.dir / task / dataset)

    def part_table(self, task: str, dataset: str) -> Path:
        check_dataset_name(dataset)
        return self.dir / task / f"{dataset}.csv"

    def part_mark(self, task: str, dataset: str) -> Path:
        """The part's finished mark (its meta JSON)."""
        check_dataset_name(dataset)
        return self.dir / task / f"{dataset}.json"

    def marked_datasets(self, task: str) -> list[str]:
        """Names of the datasets of `task` with a finished mark, sorted."""
        return [path.stem for path in sorted((self.dir / task).glob("*.json"))]

    def recorded_files(self, task: str, dataset: str) -> dict | None:
        """The part folder's file checksums its finished mark records (None: no mark, unreadable, or a mark
        from an older elasticir that records none)."""
        mark = self.part_mark(task, dataset)
        try:
            recorded = json.loads(mark.read_text()).get("files_sha256") if mark.is_file() else None
        except (OSError, ValueError):
            return None
        return recorded if isinstance(recorded, dict) else None


class RunStore(RunFolder):
    """A run directory being written: parts under their locks, checked for reuse, then the summary."""

    def __init__(self, root: Path, run_id: str) -> None:
        super().__init__(Path(root) / run_id)
        self.run_id = run_id

    def _paths(self, task: str, dataset: str) -> tuple[Path, Path]:
        return self.part_table(task, dataset), self.part_mark(task, dataset)

    def lock(self, task: str, dataset: str):
        """Context manager: the part's writer lock (waits for, or refuses, a second writer)."""
        check_dataset_name(dataset)
        return exclusive(self.dir / task / f"{dataset}.lock", f"the {task} part {dataset} of {self.dir}")

    def summary_lock(self):
        return exclusive(self.dir / "summary.lock", f"the summary of {self.dir}")

    def reusable(self, task: str, dataset: str, key: str) -> tuple[pd.DataFrame, dict] | None:
        """The finished part (cells, meta) if it was produced by exactly `key` and is whole, else None."""
        loaded = self._load(task, dataset)
        if loaded is None or loaded[1].get("key") != key:
            return None
        return loaded

    def stale_reason(self, task: str, dataset: str, key: str) -> str | None:
        """Why an existing finished mark is not reused (None: no mark, or it is reusable)."""
        if not self.has_part(task, dataset):
            return None
        try:
            meta = json.loads(self._paths(task, dataset)[1].read_text())
        except (OSError, ValueError):
            return "its finished mark is unreadable"
        if meta.get("key") != key:
            return "the finished part was computed from other data or settings"
        return self.damage(task, dataset, meta) or None

    def damage(self, task: str, dataset: str, meta: dict) -> str:
        """What is wrong with a finished part's files ("" when every one is there with its recorded sha256)."""
        csv_path = self._paths(task, dataset)[0]
        try:
            if meta.get("cells_sha256") != _sha(csv_path.read_text()):
                return f"{csv_path.name} changed since it was written"
        except OSError:
            return f"{csv_path.name} is missing"
        recorded = meta.get("files_sha256")
        if not isinstance(recorded, dict):
            return "its finished mark records no checksums of the part's files (an older elasticir)"
        folder = self.part(task, dataset).dir
        for name, sha in recorded.items():
            try:
                if file_checksum(folder / name)["sha256"] != sha:
                    return f"{folder / name} changed since it was written"
            except OSError:
                return f"{folder / name} is missing"
        return ""

    def _load(self, task: str, dataset: str) -> tuple[pd.DataFrame, dict] | None:
        csv_path, meta_path = self._paths(task, dataset)
        try:
            meta = json.loads(meta_path.read_text())
            text = csv_path.read_text()
        except (OSError, ValueError):
            return None
        if meta.get("cells_sha256") != _sha(text) or self.damage(task, dataset, meta):
            return None
        return pd.read_csv(io.StringIO(text)), meta

    def has_part(self, task: str, dataset: str) -> bool:
        """A finished mark exists (whatever produced it)."""
        return self._paths(task, dataset)[1].is_file()

    def invalidate(self, task: str, dataset: str) -> None:
        """Remove the finished mark before a part is rewritten, then the part's old files (a file the new
        settings do not write, e.g. BM25's after --no-bm25, must not be taken for theirs). Under the part's lock."""
        self._paths(task, dataset)[1].unlink(missing_ok=True)
        folder = self.part(task, dataset).dir
        if folder.is_dir():
            shutil.rmtree(folder)

    def save_part(self, task: str, dataset: str, cells: pd.DataFrame, meta: dict) -> None:
        """Table first, then the meta with the checksums of the table and of every file of the part's folder:
        the meta is the finished mark."""
        csv_path, meta_path = self._paths(task, dataset)
        text = cells.to_csv(index=False)
        atomic_write(csv_path, text)
        folder = self.part(task, dataset).dir
        files = {str(path.relative_to(folder)): file_checksum(path)["sha256"]
                 for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.endswith(".tmp")}
        atomic_write(meta_path, json.dumps({**meta, "cells_sha256": _sha(text), "files_sha256": files}, indent=2,
                                           default=str))

    def load_part(self, task: str, dataset: str) -> tuple[pd.DataFrame, dict]:
        loaded = self._load(task, dataset)
        if loaded is None:
            raise ElasticIRError(f"{self._paths(task, dataset)[0]}: not a finished part (missing, or changed since)")
        return loaded

    def finished_parts(self) -> list[tuple[str, str]]:
        """(task, dataset) of every whole finished part in the folder, tasks in TASKS order, names sorted. A
        mark whose part is not whole is left out of the summary with a note saying why (never silently)."""
        found = []
        for task in TASKS:
            for name in self.marked_datasets(task):
                if self._load(task, name) is not None:
                    found.append((task, name))
                    continue
                try:
                    reason = self.damage(task, name, json.loads(self.part_mark(task, name).read_text()))
                except (OSError, ValueError):
                    reason = "its finished mark is unreadable"
                stage(f"note: {task} {name} in {self.dir} is left out of the summary ({reason or 'not whole'}); "
                      "re-run its command to recompute it")
        return found

