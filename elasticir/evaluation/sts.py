"""STS over a grid: Spearman (main) and Pearson of cosine similarity for every (layer, dim) cell.

MTEB's protocol (cosine = 1 - paired cosine distance, scipy's spearmanr/pearsonr on the raw gold scores).
Each distinct sentence is encoded once, at every requested layer in one pass; dims are prefix slices.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from elasticir.cells import Grid
from elasticir.data.sts import StsPairs
from elasticir.encoders import ElasticEncoder, truncate
from elasticir.encoders.prompts import choose
from elasticir.errors import ElasticIRError
from elasticir.evaluation.result import GridResult
from elasticir.execution import PointWork

if TYPE_CHECKING:
    from elasticir.execution import Executor

STS_METRICS = ("spearman", "pearson")


def score_cells(embeddings: dict[int, np.ndarray], left: np.ndarray, right: np.ndarray, gold: np.ndarray,
                grid: Grid) -> tuple[list[dict], np.ndarray]:
    """Metrics of every cell from per-layer embeddings of the sentences (rows `left[i]` vs `right[i]`), and the
    per-pair cosines [cells, pairs] in `grid.cells` order (kept for bootstrap significance tests)."""
    _check_gold(gold)
    data = _StsData(embeddings, left, right, gold)
    scored = [score_cell(cell, data) for cell in grid.cells]
    return [row for row, _ in scored], np.vstack([cosine for _, cosine in scored])


def _check_gold(gold: np.ndarray) -> None:
    if len(gold) < 2 or np.ptp(gold) == 0:  # load_sts refuses such files; a --limit-queries subset can be so too
        raise ElasticIRError(f"{len(gold)} pair(s) with {len(np.unique(gold))} distinct gold score(s): a correlation "
                             "needs at least 2 pairs whose scores differ; raise --limit-queries")


@dataclass(frozen=True)
class _StsData:
    """What every STS cell reads: the sentences' embeddings per layer, the pair rows and the gold scores."""

    embeddings: dict[int, np.ndarray]
    left: np.ndarray
    right: np.ndarray
    gold: np.ndarray


def _sts_context(data: _StsData, device: str) -> _StsData:
    """A worker's context for STS cells: the data itself (the cells are scored on the CPU)."""
    return data


def score_cell(cell: tuple[int, int], data: _StsData) -> tuple[dict, np.ndarray]:
    """One (layer, dim) cell: its row (layer, dim, spearman, pearson) and its per-pair cosines."""
    layer, dim = cell
    vectors = truncate(data.embeddings[layer], dim, normalize=True)
    cosine = np.einsum("ij,ij->i", vectors[data.left], vectors[data.right]).astype(np.float64)
    with warnings.catch_warnings():  # identical cosines (a degenerate cell): NaN, said by the value
        warnings.simplefilter("ignore")
        return {"layer": layer, "dim": dim, "spearman": float(spearmanr(cosine, data.gold).statistic),
                "pearson": float(pearsonr(cosine, data.gold).statistic)}, cosine


def evaluate_sts(encoder: ElasticEncoder, pairs: StsPairs, grid: Grid, *, executor: Executor, batch_size: int = 64,
                 show_progress: bool = True, desc: str = "sts", prompt: str | None = None) -> GridResult:
    """Per-cell metrics (layer, dim, spearman, pearson), per-pair cosines of every cell, stage timings.
    `executor` (elasticir.execution) encodes the distinct sentences, in this process or on its workers; the
    cells are scored here (prefix slices and two correlations each: cheaper than shipping them).
    `prompt`: prepended to every sentence; None: the model's prompt MTEB selects for an STS task of no known
    name (the runner passes the one selected for the dataset's MTEB name)."""
    encoder.check_cells(grid.cells)
    texts, index = [], {}
    for sentence in pairs.sentence1 + pairs.sentence2:
        if sentence not in index:
            index[sentence] = len(texts)
            texts.append(sentence)
    left = np.array([index[s] for s in pairs.sentence1])
    right = np.array([index[s] for s in pairs.sentence2])
    start = time.perf_counter()
    if prompt is None:
        info = encoder.info
        prompt = choose(encoder.prompt_table, info.default_prompt_name, task_name=None, task_type="STS", prompt_type=None).text
    embeddings = executor.encode_texts(texts, grid.layers, batch_size=batch_size, show_progress=show_progress,
                                       desc=desc, prompt=prompt)
    encoded = time.perf_counter()
    _check_gold(pairs.scores)
    work = PointWork(list(grid.cells), _StsData(embeddings, left, right, pairs.scores), prepare=_sts_context,
                     search=score_cell)
    scored = executor.run_points(work, show_progress=False, desc=f"{desc} cells", unit="cell").results
    rows, cosines = [row for row, _ in scored], np.vstack([cosine for _, cosine in scored])
    return GridResult(pd.DataFrame(rows), cosines, {"encode": encoded - start, "score": time.perf_counter() - encoded})
