"""Write a run directory's summary: the validated leaderboard and cells.csv beside it.

One builder for every kind of run directory: a model's run (the runner) and a baseline grid assembled from
several models' runs (baselines) differ in what they record, not in how the leaderboard is stamped (creation
time, library versions, machine, command), validated and written, so both go through `write_leaderboard`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from elasticir.io import provenance
from elasticir.results.schema import Leaderboard
from elasticir.results.store import RunFolder

COST_COLUMNS = ("index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms")
_KEYS = ("task", "dataset", "layer", "dim")
POINT_COLUMNS = ("backend", "precision", "encoder_precision", "doc_layer")  # what names a point, not a metric


def cell_results(table: pd.DataFrame) -> list[dict]:
    """The leaderboard's `results` from a cells table: per row its metrics and its measured costs (a cost or
    metric the row lacks is left out, not recorded as NaN)."""
    return [
        {"dataset": row["dataset"], "layer": int(row["layer"]), "dim": int(row["dim"]),
         **({"precision": row["precision"]} if isinstance(row.get("precision"), str) else {}),
         **({"encoder_precision": row["encoder_precision"]} if isinstance(row.get("encoder_precision"), str)
            else {}),
         **({"doc_layer": int(row["doc_layer"])} if pd.notna(row.get("doc_layer", pd.NA)) else {}),
         "metrics": {m: float(row[m]) for m in table.columns
                     if m not in _KEYS and m not in COST_COLUMNS and m not in POINT_COLUMNS and pd.notna(row[m])},
         "costs": {c: float(row[c]) for c in COST_COLUMNS if c in row and pd.notna(row[c])}}
        for row in table.to_dict("records")
    ]


def write_leaderboard(folder: RunFolder, table: pd.DataFrame, annotate: Callable[[Leaderboard], None] | None = None,
                      **fields) -> Leaderboard:
    """Validate the leaderboard made of `fields` (every Leaderboard field but created_at and the provenance
    block, which are stamped here), let `annotate` add what is read from the validated board (the runner's
    anomaly flags), then write `table` as cells.csv and the leaderboard beside it."""
    board = Leaderboard(created_at=datetime.now(UTC), **fields, **provenance())
    if annotate is not None:
        annotate(board)
    folder.write_summary(table, board.model_dump_json(indent=2))
    return board
