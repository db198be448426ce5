"""What every grid evaluation returns: one named result, whatever the task."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


class GridResult(NamedTuple):
    """One dataset evaluated over a grid.

    cells: one row per (layer, dim) with the task's metrics (and, for retrieval, the index and search costs).
    per_example: what paired significance tests resample — STS: cosines [cells, pairs] in `grid.cells` order;
    retrieval: a long table (query_id, measure, value, layer, dim).
    timings: seconds per stage (encode, index, search, evaluate, ...).
    """

    cells: pd.DataFrame
    per_example: np.ndarray | pd.DataFrame
    timings: dict[str, float]
