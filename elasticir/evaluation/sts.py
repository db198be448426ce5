"""STS over a grid: Spearman (main) and Pearson of cosine similarity for every (layer, dim) cell.

MTEB's protocol (cosine = 1 - paired cosine distance, scipy's spearmanr/pearsonr on the raw gold scores).
Each distinct sentence is encoded once, at every requested layer in one pass; dims are prefix slices.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from elasticir.cells import Grid
from elasticir.data.sts import StsPairs
from elasticir.encoders import ElasticEncoder, truncate
from elasticir.encoders.prompts import choose
from elasticir.errors import ElasticIRError
from elasticir.evaluation.result import GridResult

STS_METRICS = ("spearman", "pearson")


def score_cells(embeddings: dict[int, np.ndarray], left: np.ndarray, right: np.ndarray, gold: np.ndarray,
                grid: Grid) -> tuple[list[dict], np.ndarray]:
    """Metrics of every cell from per-layer embeddings of the sentences (rows `left[i]` vs `right[i]`), and the
    per-pair cosines [cells, pairs] in `grid.cells` order (kept for bootstrap significance tests)."""
    if len(gold) < 2 or np.ptp(gold) == 0:  # load_sts refuses such files; a --limit-queries subset can be so too
        raise ElasticIRError(f"{len(gold)} pair(s) with {len(np.unique(gold))} distinct gold score(s): a correlation "
                             "needs at least 2 pairs whose scores differ; raise --limit-queries")
    rows, cosines = [], []
    for layer in grid.layers:
        for dim in grid.dims:
            vectors = truncate(embeddings[layer], dim, normalize=True)
            cosine = np.einsum("ij,ij->i", vectors[left], vectors[right]).astype(np.float64)
            cosines.append(cosine)
            with warnings.catch_warnings():  # identical cosines (a degenerate cell): NaN, said by the value
                warnings.simplefilter("ignore")
                rows.append({
                    "layer": layer, "dim": dim,
                    "spearman": float(spearmanr(cosine, gold).statistic),
                    "pearson": float(pearsonr(cosine, gold).statistic),
                })
    return rows, np.vstack(cosines)


def evaluate_sts(encoder: ElasticEncoder, pairs: StsPairs, grid: Grid, *, batch_size: int = 64,
                 show_progress: bool = True, desc: str = "sts", executor=None, prompt: str | None = None) -> GridResult:
    """Per-cell metrics (layer, dim, spearman, pearson), per-pair cosines of every cell, stage timings.
    `executor`: None (encode here) or an elasticir.distributed.RayExecutor (sentences encoded by its actors).
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
    encode = executor.encode if executor is not None else encoder.encode
    embeddings = encode(texts, grid.layers, batch_size=batch_size, show_progress=show_progress, desc=desc,
                        prompt=prompt)
    encoded = time.perf_counter()
    rows, cosines = score_cells(embeddings, left, right, pairs.scores, grid)
    return GridResult(pd.DataFrame(rows), cosines, {"encode": encoded - start, "score": time.perf_counter() - encoded})
